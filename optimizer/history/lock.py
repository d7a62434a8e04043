"""Library lock files: which function versions a reviewer approved, pinned by hash.

`review lock RUN` writes one from a verified history: for each function of the run's best
library (library.json, what `eval` and a deployment use) whose version is approved (its latest
verdict) and passed vetting, the name, version, code hash, spec hash and approvals; every other
function of that library is listed as excluded, with why.
It carries the history's head (seq and hash), so the history it came from can be checked later.

`load_locked_library(lock, source)` is how `eval` and a user's own agents get functions: only
locked (approved) functions, each refused with an error naming it unless its code hash and spec
hash are exactly the lock's. The source is a FunctionLibrary, a saved library JSON, or a run
directory (then its history must verify and still contain the lock's head record).

A lock file's `digest` catches accidental edits, not a forger: keep lock files where changes are
reviewed (version control), like any other pin.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox import (
    FunctionLibrary,
    FunctionSpec,
    JsonLimits,
    SandboxError,
    VetReport,
    read_json_file,
)

from ..errors import HistoryBroken, LockError
from .canonical import canonical_json, sha256_hex
from .review import Review, build_review
from .store import HISTORY_FILE

__all__ = ["LOCK_FILE", "LOCK_FORMAT", "LockFile", "LockedFunction", "build_lock",
           "load_locked_library"]

LOCK_FORMAT = "fnforge-lock/1"
LOCK_FILE = "library.lock.json"
_MAX_LOCK_BYTES = 16 << 20
_LOCK_JSON_LIMITS = JsonLimits(max_depth=32, max_values=1_000_000, max_chars=_MAX_LOCK_BYTES,
                               max_string_chars=_MAX_LOCK_BYTES)


@dataclass(frozen=True)
class LockedFunction:
    name: str
    version: int
    code_hash: str
    spec_hash: str
    approvals: list[dict[str, Any]]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class LockFile:
    run_id: str
    created: str
    head_seq: int
    head_hash: str
    functions: list[LockedFunction]
    excluded: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "format": LOCK_FORMAT, "run_id": self.run_id, "created": self.created,
            "history": {"head_seq": self.head_seq, "head_hash": self.head_hash},
            "functions": [asdict(f) for f in self.functions], "excluded": self.excluded}
        return {**body, "digest": sha256_hex(canonical_json(body))}

    def save(self, path: str | Path) -> Path:
        """Atomically (a crash leaves the old file or the new one)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                   suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.to_dict(), fh, indent=1, ensure_ascii=True)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)  # mkstemp's 0600: a lock file is read by eval and users
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    @classmethod
    def from_dict(cls, data: Any, where: str = "lock file") -> LockFile:
        if not isinstance(data, dict) or data.get("format") != LOCK_FORMAT:
            raise LockError(f"{where} is not an fnforge lock file ({LOCK_FORMAT}); write one "
                            "with `python -m optimizer review lock RUN`")
        body = {k: v for k, v in data.items() if k != "digest"}
        if data.get("digest") != sha256_hex(canonical_json(body)):
            raise LockError(f"{where} was edited after it was written (its digest does not "
                            "match); write it again with `review lock`")
        try:
            functions = [LockedFunction(str(f["name"]), int(f["version"]),
                                        str(f["code_hash"]), str(f["spec_hash"]),
                                        [dict(a) for a in f["approvals"]])
                         for f in data["functions"]]
            history = data["history"]
            return cls(str(data["run_id"]), str(data["created"]), int(history["head_seq"]),
                       str(history["head_hash"]), functions,
                       [dict(x) for x in data.get("excluded", [])])
        except (KeyError, TypeError, ValueError) as exc:
            raise LockError(f"{where} is damaged: {type(exc).__name__}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> LockFile:
        data = read_json_file(path, "lock file", _MAX_LOCK_BYTES, _LOCK_JSON_LIMITS, LockError)
        return cls.from_dict(data, f"lock file {path}")


def build_lock(review: Review) -> LockFile:
    """The lock of a verified history's best library, the one `eval` and a deployment use
    (library.json); HistoryBroken if the history does not verify."""
    report = review.verify
    if not report.ok or report.head_seq is None or report.head_hash is None:
        raise HistoryBroken(f"no lock from a history that does not verify: {report.summary()}",
                            report)
    functions: list[LockedFunction] = []
    excluded: list[dict[str, Any]] = []
    for name, version in sorted(review.best.items()):
        if version is None:
            excluded.append({"name": name, "version": None,
                             "why": "not proposed in this run (its code is not in the history)"})
            continue
        entry = {"name": name, "version": version.version, "code_hash": version.code_hash}
        vet = version.passing_vet
        approval = version.approval
        if vet is None:
            excluded.append({**entry, "why": "it never passed vetting"})
        elif approval is None:
            excluded.append({**entry, "why": "not reviewed: approve it with `review approve "
                                             f"{version.ref}`"})
        elif approval.verdict != "approve":
            excluded.append({**entry, "why": f"denied by {approval.who}: {approval.why}"})
        else:
            functions.append(LockedFunction(
                name, version.version, version.code_hash, version.spec_hash,
                [{**a.to_dict(), "when": _iso(a.time)} for a in version.approvals]))
    return LockFile(report.run_id or "", _iso(None), report.head_seq, report.head_hash,
                    functions, excluded)


def load_locked_library(lock_path: str | Path,
                        library_or_run_dir: FunctionLibrary | str | Path) -> FunctionLibrary:
    """A FunctionLibrary of exactly the lock's approved functions, from `library_or_run_dir`.

    LockError (naming the function) if a locked function is missing, or its code or spec hash
    differs from the lock's; nothing is loaded then."""
    lock = LockFile.load(lock_path)
    if isinstance(library_or_run_dir, FunctionLibrary):
        candidates = _from_library(library_or_run_dir)
    else:
        source = Path(library_or_run_dir)
        if source.is_dir():
            candidates = _from_run(lock, source)
        else:
            try:
                candidates = _from_library(FunctionLibrary.load(source))
            except SandboxError as exc:
                raise LockError(f"cannot load the library {source}: {exc}") from None
    library = FunctionLibrary()
    for locked in lock.functions:
        if not locked.approvals or locked.approvals[-1].get("verdict") != "approve":
            raise LockError(f"{locked.ref}: the lock lists it without an approval; refusing it")
        found = candidates.get(locked.name)
        if found is None:
            raise LockError(f"{locked.ref} is locked but the library has no function "
                            f"{locked.name!r}; refusing to load a partial library")
        spec, report = found
        if spec.code_hash != locked.code_hash:
            raise LockError(f"{locked.ref}: the library's code of {locked.name!r} differs from "
                            f"the approved code (lock {locked.code_hash[:16]}, library "
                            f"{spec.code_hash[:16]}); refusing it")
        if spec.spec_hash != locked.spec_hash:
            raise LockError(f"{locked.ref}: the library's spec of {locked.name!r} (parameters, "
                            "description or tests) differs from the approved one; refusing it")
        try:
            library.add(spec, report)
        except SandboxError as exc:
            raise LockError(f"{locked.ref}: {exc}") from None
    return library


Candidates = dict[str, tuple[FunctionSpec, VetReport]]


def _from_library(library: FunctionLibrary) -> Candidates:
    return {spec.name: (spec, library.report(spec.name)) for spec in library.specs()}


def _from_run(lock: LockFile, run_dir: Path) -> Candidates:
    if not (run_dir / HISTORY_FILE).is_file():
        raise LockError(f"{run_dir} has no {HISTORY_FILE}: give a run directory or a library")
    review = build_review(run_dir)
    if not review.verify.ok:
        raise LockError(f"the history of {run_dir} does not verify: {review.verify.summary()}")
    if review.run_id != lock.run_id:
        raise LockError(f"the lock is for run {lock.run_id!r}, {run_dir} is run "
                        f"{review.run_id!r}")
    pinned = next((r for r in review.records if r.seq == lock.head_seq), None)
    if pinned is None or pinned.hash != lock.head_hash:
        raise LockError(f"the history of {run_dir} no longer holds the lock's head (record "
                        f"{lock.head_seq}): it was rewritten after the lock was made")
    out: Candidates = {}
    for locked in lock.functions:
        version = next((v for v in review.versions
                        if v.name == locked.name and v.version == locked.version), None)
        vet = version.passing_vet if version is not None else None
        spec_data = version.spec if version and vet and \
            version.spec_hash == locked.spec_hash else None
        if version is None or vet is None or spec_data is None:
            continue  # reported as missing by the caller
        try:
            out[locked.name] = (FunctionSpec.from_dict(spec_data),
                                VetReport.from_dict(vet.report))
        except (SandboxError, KeyError, TypeError, ValueError) as exc:
            raise LockError(f"{locked.ref}: its recorded spec or report is unusable: "
                            f"{exc}") from None
    return out


def _iso(t: float | None) -> str:
    moment = datetime.now(UTC) if t is None else datetime.fromtimestamp(t, UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
