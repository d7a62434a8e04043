"""FunctionLibrary: the versioned set of vetted functions an agent may use.

Why: upstream AgentOptimizer binds every executor name to the last function (late binding) and
never propagates removals. Here every executor callable closes over ITS OWN spec, works only
while that spec is the library's current version of its name, and removal or roll-back takes a
function out of the executor map at once.

Only specs whose VetReport passed (for exactly that spec) are admitted. How the current set is
advertised to an LLM (OpenAI tools, AutoGen's func_sig list) is the optimizer's business
(optimizer/registration.py); `signatures()` is the data it is made from.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .errors import (
    AlreadyInLibrary,
    FunctionCallError,
    InvalidSpec,
    NotInLibrary,
    NotVetted,
)
from .files import write_json_atomic
from .results import CallResult
from .schema import JsonLimits, read_json_file
from .spec import MAX_SPEC_BYTES, FunctionSpec
from .vetting import VetReport

__all__ = ["LIBRARY_JSON_LIMITS", "MAX_LIBRARY_BYTES", "FunctionLibrary", "LibraryVersion"]

MAX_LIBRARY_BYTES = 64 << 20
"""A saved library keeps every version of every function with its report: tens of MiB at most."""
LIBRARY_JSON_LIMITS = JsonLimits(max_depth=64, max_values=10_000_000, max_chars=MAX_LIBRARY_BYTES,
                           max_string_chars=MAX_SPEC_BYTES)


class _Caller(Protocol):
    def call(self, spec: FunctionSpec, args: dict[str, Any] | None = None, *,
             timeout: float | None = None) -> CallResult: ...


@dataclass(frozen=True)
class LibraryVersion:
    """One state of the library: every edit makes a new one, and all are kept."""

    number: int
    specs: dict[str, FunctionSpec]
    reports: dict[str, VetReport]
    note: str


class FunctionLibrary:
    """A versioned set of vetted FunctionSpecs; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._specs: dict[str, FunctionSpec] = {}
        self._reports: dict[str, VetReport] = {}
        self._executor: dict[str, Callable[..., Any]] = {}
        self._history: list[LibraryVersion] = [LibraryVersion(0, {}, {}, "empty")]

    # ---- state
    @property
    def version(self) -> int:
        return self._history[-1].number

    @property
    def history(self) -> list[LibraryVersion]:
        with self._lock:
            return list(self._history)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._specs)

    def get(self, name: str) -> FunctionSpec:
        with self._lock:
            try:
                return self._specs[name]
            except KeyError:
                raise NotInLibrary(f"{name!r} is not in the library; it has: "
                                   f"{', '.join(sorted(self._specs)) or 'nothing'}") from None

    def report(self, name: str) -> VetReport:
        with self._lock:
            self.get(name)
            return self._reports[name]

    def specs(self) -> list[FunctionSpec]:
        with self._lock:
            return [self._specs[n] for n in sorted(self._specs)]

    def signatures(self) -> list[dict[str, Any]]:
        """name, description and parameters of each current function, sorted by name."""
        return [{"name": s.name, "description": s.description, "parameters": s.parameters}
                for s in self.specs()]

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def _commit(self, note: str) -> int:
        self._history.append(LibraryVersion(self.version + 1, dict(self._specs),
                                            dict(self._reports), note))
        for name, fn in list(self._executor.items()):
            if getattr(fn, "spec", None) is not self._specs.get(name):
                del self._executor[name]
        return self.version

    @staticmethod
    def _admit(spec: FunctionSpec, report: VetReport | None) -> None:
        if not isinstance(report, VetReport) or not report.passed:
            raise NotVetted(f"{spec.name}: only functions whose vetting passed can be added")
        if report.spec_hash != spec.spec_hash or report.function != spec.name:
            raise NotVetted(f"{spec.name}: the vet report is for a different spec or version")

    # ---- edits
    def add(self, spec: FunctionSpec, report: VetReport) -> int:
        """Add a new function; returns the new version."""
        with self._lock:
            self._admit(spec, report)
            if spec.name in self._specs:
                raise AlreadyInLibrary(f"{spec.name} already exists; use revise()")
            self._specs[spec.name] = spec
            self._reports[spec.name] = report
            return self._commit(f"add {spec.name}")

    def revise(self, spec: FunctionSpec, report: VetReport) -> int:
        """Replace an existing function with a new vetted version."""
        with self._lock:
            self._admit(spec, report)
            self.get(spec.name)
            self._specs[spec.name] = spec
            self._reports[spec.name] = report
            return self._commit(f"revise {spec.name}")

    def remove(self, name: str) -> int:
        with self._lock:
            self.get(name)
            del self._specs[name]
            del self._reports[name]
            return self._commit(f"remove {name}")

    def restore(self, version: int) -> int:
        """Roll back to the function set of `version` (recorded as a new version)."""
        with self._lock:
            target = next((v for v in self._history if v.number == version), None)
            if target is None:
                raise NotInLibrary(f"no version {version}; known: "
                                   f"{[v.number for v in self._history]}")
            self._specs = dict(target.specs)
            self._reports = dict(target.reports)
            return self._commit(f"restore {version}")

    # ---- execution
    def register_for_executor(self, sandbox: _Caller,
                              timeout: float | None = None) -> dict[str, Callable[..., Any]]:
        """`{name: callable(**kwargs)}`; each runs its own spec in the sandbox, its arguments
        checked against its schema first. The returned dict is the library's live map: removals
        and roll-backs delete entries from it, and a callable kept elsewhere stops working."""
        with self._lock:
            for name, spec in self._specs.items():
                fn = self._executor.get(name)
                if fn is None or getattr(fn, "spec", None) is not spec:
                    self._executor[name] = self._make_caller(spec, sandbox, timeout)
            return self._executor

    def _make_caller(self, spec: FunctionSpec, sandbox: _Caller,
                     timeout: float | None) -> Callable[..., Any]:
        library = self

        def call(**kwargs: Any) -> Any:
            if library._specs.get(spec.name) is not spec:
                raise NotInLibrary(f"{spec.name} is no longer in the function library")
            result = sandbox.call(spec, kwargs, timeout=timeout)
            if not result.ok:
                err = result.error
                if err is None:
                    raise FunctionCallError(spec.name, "crashed", "Error", "failed")
                raise FunctionCallError(spec.name, err.kind.value, err.type, err.message)
            return result.value

        call.__name__ = spec.name
        call.__doc__ = spec.description
        call.spec = spec  # type: ignore[attr-defined]
        return call

    # ---- persistence
    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "version": self.version,
                "functions": [self._specs[n].to_dict() for n in sorted(self._specs)],
                "reports": {n: r.to_dict() for n, r in sorted(self._reports.items())},
                "history": [{"version": v.number, "note": v.note,
                             "functions": [s.to_dict() for s in v.specs.values()],
                             "reports": {n: r.to_dict() for n, r in v.reports.items()}}
                            for v in self._history],
            }

    def save(self, path: str | Path) -> None:
        """Atomically: a crash leaves the previous file or the new one, never half of one."""
        write_json_atomic(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> FunctionLibrary:
        """A saved library; every function must carry a passing report for exactly its spec."""
        if not isinstance(data, dict) or not isinstance(data.get("functions"), list):
            raise InvalidSpec("a saved library is a JSON object with a 'functions' list")
        try:
            history = [LibraryVersion(int(v["version"]), _specs(v.get("functions", [])),
                                      _reports(v.get("reports", {})), str(v.get("note", "")))
                       for v in data.get("history", [])]
            specs = _specs(data["functions"])
            reports = _reports(data.get("reports", {}))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidSpec(f"the saved library is damaged: {type(exc).__name__}: "
                              f"{exc}") from None
        for name, spec in specs.items():
            cls._admit(spec, reports.get(name))
        lib = cls()
        lib._specs, lib._reports = specs, {n: reports[n] for n in specs}
        lib._history = history or [LibraryVersion(int(data.get("version", 0)), dict(specs),
                                                  dict(lib._reports), "loaded")]
        if lib._history[-1].specs.keys() != specs.keys():
            lib._commit("loaded")
        return lib

    @classmethod
    def load(cls, path: str | Path) -> FunctionLibrary:
        return cls.from_dict(read_json_file(path, "library", MAX_LIBRARY_BYTES,
                                            LIBRARY_JSON_LIMITS))


def _specs(raw: Any) -> dict[str, FunctionSpec]:
    specs = [FunctionSpec.from_dict(s) for s in raw]
    return {s.name: s for s in specs}


def _reports(raw: Any) -> dict[str, VetReport]:
    return {str(n): VetReport.from_dict(r) for n, r in dict(raw).items()}
