"""FunctionLibrary: the versioned set of vetted functions an agent may use.

Why: upstream AgentOptimizer binds every executor name to the last function (late binding) and
never propagates removals. Here every executor callable closes over ITS OWN spec, works only while
that spec is the library's current, vetted version of its name, and removal or roll-back takes a
function out of both the LLM registration and the executor map.

Only specs whose VetReport passed (for exactly that spec) are admitted.

AutoGen form: `register_for_llm().autogen` is a list of `{"func_sig": ..., "is_remove": bool}`
for `assistant.update_function_signature(**item)`. Current functions carry the full signature
dict; removals since the last registration carry the function NAME as `func_sig`, because that is
what AutoGen's update_function_signature compares against when removing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SandboxError
from .spec import FunctionSpec
from .vet import CallsFunctions, VerdictCache, VetReport, vet


class NotVetted(SandboxError):
    """A spec was offered to the library without a passing vet report for exactly that spec."""


class FunctionCallError(RuntimeError):
    """A library function failed inside the sandbox; carries the sandbox's error type."""

    def __init__(self, name: str, error_type: str, message: str) -> None:
        self.error_type = error_type
        super().__init__(f"{name} failed: {error_type}: {message}")


@dataclass(frozen=True)
class LLMRegistration:
    tools: list[dict[str, Any]]  # OpenAI tools list
    autogen: list[dict[str, Any]]  # [{"func_sig": ..., "is_remove": bool}]


@dataclass(frozen=True)
class _Version:
    number: int
    specs: dict[str, FunctionSpec]
    reports: dict[str, VetReport]
    note: str


class FunctionLibrary:
    """A versioned set of vetted FunctionSpecs; every change bumps `version` and is kept."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._specs: dict[str, FunctionSpec] = {}
        self._reports: dict[str, VetReport] = {}
        self._advertised: set[str] = set()
        self._executor: dict[str, Callable[..., Any]] = {}
        self._history: list[_Version] = [_Version(0, {}, {}, "empty")]

    # ---- state
    @property
    def version(self) -> int:
        return self._history[-1].number

    @property
    def history(self) -> list[dict[str, Any]]:
        return [{"version": v.number, "functions": sorted(v.specs), "note": v.note}
                for v in self._history]

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._specs)

    def get(self, name: str) -> FunctionSpec:
        return self._specs[name]

    def report(self, name: str) -> VetReport:
        return self._reports[name]

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def _commit(self, note: str) -> int:
        self._history.append(_Version(self.version + 1, dict(self._specs), dict(self._reports),
                                      note))
        for name in list(self._executor):
            if name not in self._specs:
                del self._executor[name]
        return self.version

    @staticmethod
    def _admit(spec: FunctionSpec, report: VetReport) -> None:
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
                raise ValueError(f"{spec.name} already exists; use revise()")
            self._specs[spec.name] = spec
            self._reports[spec.name] = report
            return self._commit(f"add {spec.name}")

    def revise(self, spec: FunctionSpec, report: VetReport) -> int:
        """Replace an existing function with a new vetted version."""
        with self._lock:
            self._admit(spec, report)
            if spec.name not in self._specs:
                raise KeyError(f"{spec.name} is not in the library; use add()")
            self._specs[spec.name] = spec
            self._reports[spec.name] = report
            self._executor.pop(spec.name, None)
            return self._commit(f"revise {spec.name}")

    def remove(self, name: str) -> int:
        with self._lock:
            if name not in self._specs:
                raise KeyError(f"{name} is not in the library")
            del self._specs[name]
            del self._reports[name]
            return self._commit(f"remove {name}")

    def snapshot(self) -> int:
        """The current version number: pass it to restore() to roll back to this state."""
        return self.version

    def restore(self, version: int) -> int:
        """Roll back to the function set of `version` (recorded as a new version)."""
        with self._lock:
            target = next((v for v in self._history if v.number == version), None)
            if target is None:
                raise KeyError(f"no version {version}; known: {[v.number for v in self._history]}")
            self._specs = dict(target.specs)
            self._reports = dict(target.reports)
            for name, fn in list(self._executor.items()):
                if getattr(fn, "spec", None) is not self._specs.get(name):
                    del self._executor[name]
            return self._commit(f"restore {version}")

    def revet(self, sandbox: CallsFunctions,
              cache: VerdictCache | None = None) -> dict[str, VetReport]:
        """Re-vet every function (cheap when cached); drops those that no longer pass."""
        reports = {}
        for name in self.names():
            spec = self._specs[name]
            rep = vet(sandbox, spec, cache=cache) if cache is not None else vet(sandbox, spec)
            reports[name] = rep
            with self._lock:
                if not rep.passed and self._specs.get(name) is spec:
                    del self._specs[name]
                    del self._reports[name]
                    self._commit(f"drop {name}: re-vet failed")
                elif rep.passed and self._specs.get(name) is spec:
                    self._reports[name] = rep
        return reports

    # ---- registration
    def register_for_llm(self) -> LLMRegistration:
        """OpenAI tools for the current set, and AutoGen updates incl. removals since last time."""
        with self._lock:
            sigs = [{"name": s.name, "description": s.description, "parameters": s.parameters}
                    for s in (self._specs[n] for n in sorted(self._specs))]
            removed = sorted(self._advertised - set(self._specs))
            self._advertised = set(self._specs)
        tools = [{"type": "function", "function": sig} for sig in sigs]
        autogen: list[dict[str, Any]] = [{"func_sig": sig, "is_remove": False} for sig in sigs]
        autogen += [{"func_sig": name, "is_remove": True} for name in removed]
        return LLMRegistration(tools=tools, autogen=autogen)

    def register_for_executor(self, sandbox: CallsFunctions,
                              timeout: float | None = None) -> dict[str, Callable[..., Any]]:
        """`{name: callable(**kwargs)}`; each runs its own spec in the sandbox. The returned dict
        is the library's live map: removals and roll-backs delete entries from it."""
        with self._lock:
            for name, spec in self._specs.items():
                fn = self._executor.get(name)
                if fn is None or getattr(fn, "spec", None) is not spec:
                    self._executor[name] = self._make_caller(spec, sandbox, timeout)
            return self._executor

    def _make_caller(self, spec: FunctionSpec, sandbox: CallsFunctions,
                     timeout: float | None) -> Callable[..., Any]:
        library = self

        def call(**kwargs: Any) -> Any:
            current = library._specs.get(spec.name)
            if current is not spec or not library._reports[spec.name].passed:
                raise LookupError(f"{spec.name} is no longer in the function library")
            result = sandbox.call(spec, kwargs, timeout=timeout)
            if not result.ok:
                err = result.error
                raise FunctionCallError(spec.name, err.type if err else "Error",
                                        err.message if err else "failed")
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
                "advertised": sorted(self._advertised),
                "history": [{"version": v.number, "note": v.note,
                             "functions": [s.to_dict() for s in v.specs.values()],
                             "reports": {n: r.to_dict() for n, r in v.reports.items()}}
                            for v in self._history],
            }

    def save(self, path: str | Path) -> None:
        p = Path(path)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        tmp.replace(p)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FunctionLibrary:
        lib = cls()
        history = []
        for v in data.get("history", []):
            specs = {s["name"]: FunctionSpec.from_dict(s) for s in v.get("functions", [])}
            reports = {n: VetReport.from_dict(r) for n, r in v.get("reports", {}).items()}
            history.append(_Version(int(v["version"]), specs, reports, str(v.get("note", ""))))
        specs = {s["name"]: FunctionSpec.from_dict(s) for s in data.get("functions", [])}
        reports = {n: VetReport.from_dict(r) for n, r in data.get("reports", {}).items()}
        for name, spec in specs.items():
            cls._admit(spec, reports.get(name))  # type: ignore[arg-type]
        lib._specs, lib._reports = specs, reports
        lib._advertised = set(data.get("advertised", []))
        lib._history = history or [_Version(int(data.get("version", 0)), specs, reports,
                                            "loaded")]
        if history and history[-1].specs.keys() != specs.keys():
            lib._commit("loaded")
        return lib

    @classmethod
    def load(cls, path: str | Path) -> FunctionLibrary:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
