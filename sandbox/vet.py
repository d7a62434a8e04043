"""Vetting: the only way a generated function gets into a FunctionLibrary.

`vet(sandbox, spec)` runs six stages in order and returns a VetReport:
  shape, static, restricted  on the host; all their findings are reported at once;
  tests, smoke, isolation    in the container; stop at the first hard failure.
Verdicts are cached by (code hash, spec hash, image id, policy hash): re-vetting an unchanged
function is a dict lookup; any change to the spec, the image or the policy re-vets.

Decisions:
- `expect` compares as JSON: numbers with rel 1e-6 / abs 1e-9 (int 7 equals float 7.0), lists and
  dicts recursively, booleans only equal booleans.
- `expect_error` names an exception class. The error's type must be that class or a subclass of
  it, where the hierarchy is known on the host (builtins, statistics, decimal, sympy, numpy):
  `ArithmeticError` accepts ZeroDivisionError, `ValueError` accepts StatisticsError. Sandbox
  conditions (Timeout, MemoryLimit, OutputLimit, ProtocolError, ResultNotJSON) never satisfy it.
- Smoke cases pass when the call returns a JSON value or raises an ordinary Python exception;
  a timeout, OOM kill, truncated output or protocol failure rejects the function.
- Isolation: any audit event recorded during tests or smoke rejects the function, and the events
  are listed in the report.
"""

from __future__ import annotations

import argparse
import builtins
import hashlib
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.table import Table

from . import policy as P
from .errors import InvalidArguments, InvalidSpec, SandboxError
from .results import CallResult
from .smoke import smoke_cases
from .spec import FunctionSpec, FunctionTest
from .static import Finding, check_restricted, check_shape, check_static

__all__ = ["Finding", "StageResult", "VerdictCache", "VetReport", "json_equal", "vet",
           "vet_command"]

STAGES = ("shape", "static", "restricted", "tests", "smoke", "isolation")
HARD_ERRORS = frozenset({"Timeout", "MemoryLimit", "OutputLimit", "ProtocolError",
                         "ResultNotJSON", "ResultTooLarge"})
REL_TOL = 1e-6
ABS_TOL = 1e-9


class CallsFunctions(Protocol):
    """What vet needs from a Sandbox (the real one, or a fake in unit tests)."""

    image_id: str
    pool_size: int

    def call(self, spec: FunctionSpec, args: dict[str, Any] | None = None, *,
             timeout: float | None = None) -> CallResult: ...


@dataclass(frozen=True)
class StageResult:
    name: str
    passed: bool
    findings: list[Finding] = field(default_factory=list)
    duration_ms: float = 0.0
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "skipped": self.skipped,
                "duration_ms": round(self.duration_ms, 3),
                "findings": [f.to_dict() for f in self.findings]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageResult:
        return cls(name=d["name"], passed=bool(d["passed"]), skipped=bool(d.get("skipped")),
                   duration_ms=float(d.get("duration_ms", 0.0)),
                   findings=[Finding(**f) for f in d.get("findings", [])])


@dataclass(frozen=True)
class VetReport:
    passed: bool
    function: str
    code_hash: str
    spec_hash: str
    image_id: str
    policy_hash: str
    stages: list[StageResult]
    untested: bool = False
    audit: list[dict[str, Any]] = field(default_factory=list)
    cached: bool = False

    @property
    def findings(self) -> list[Finding]:
        return [f for s in self.stages for f in s.findings]

    @property
    def cache_key(self) -> str:
        return cache_key(self.code_hash, self.spec_hash, self.image_id, self.policy_hash)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "function": self.function, "untested": self.untested,
                "code_hash": self.code_hash, "spec_hash": self.spec_hash,
                "image_id": self.image_id, "policy_hash": self.policy_hash,
                "cached": self.cached, "stages": [s.to_dict() for s in self.stages],
                "audit": self.audit}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VetReport:
        return cls(passed=bool(d["passed"]), function=d["function"], code_hash=d["code_hash"],
                   spec_hash=d["spec_hash"], image_id=d["image_id"],
                   policy_hash=d["policy_hash"], untested=bool(d.get("untested")),
                   stages=[StageResult.from_dict(s) for s in d["stages"]],
                   audit=list(d.get("audit", [])), cached=bool(d.get("cached")))


def cache_key(code_hash: str, spec_hash: str, image_id: str, policy_hash: str) -> str:
    raw = "\n".join([code_hash, spec_hash, image_id, policy_hash])
    return hashlib.sha256(raw.encode()).hexdigest()


class VerdictCache:
    """Verdicts in memory, and optionally as one JSON file per key in a directory."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory else None
        self._mem: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> VetReport | None:
        with self._lock:
            data = self._mem.get(key)
        if data is None and self.directory is not None:
            try:
                data = json.loads((self.directory / f"{key}.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = None
        if data is None:
            return None
        try:
            report = VetReport.from_dict(data)
        except (KeyError, TypeError, ValueError):
            return None
        with self._lock:
            self._mem[key] = data
        return VetReport(**{**report.__dict__, "cached": True})

    def put(self, report: VetReport) -> None:
        data = {**report.to_dict(), "cached": False}
        with self._lock:
            self._mem[report.cache_key] = data
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self.directory / f".{report.cache_key}.tmp"
            tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
            tmp.replace(self.directory / f"{report.cache_key}.json")

    def clear(self) -> None:
        with self._lock:
            self._mem.clear()


DEFAULT_CACHE = VerdictCache()


# ---------------------------------------------------------------- comparison


def json_equal(got: Any, want: Any) -> bool:
    """JSON equality with a float tolerance (see the module doc)."""
    if isinstance(got, bool) or isinstance(want, bool):
        return isinstance(got, bool) and isinstance(want, bool) and got == want
    if isinstance(got, int | float) and isinstance(want, int | float):
        if isinstance(got, int) and isinstance(want, int):
            return got == want
        g, w = float(got), float(want)
        if math.isnan(g) or math.isnan(w):
            return math.isnan(g) and math.isnan(w)
        return math.isclose(g, w, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    if isinstance(got, list | tuple) and isinstance(want, list | tuple):
        return len(got) == len(want) and all(json_equal(a, b) for a, b in zip(got, want,
                                                                              strict=True))
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(json_equal(got[k], want[k]) for k in got)
    return bool(type(got) is type(want) and got == want)


def _exception_class(name: str) -> type[BaseException] | None:
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        return cls
    for modname, attr in (("statistics", name), ("decimal", name), ("json", name),
                          ("sympy", name), ("sympy.core.sympify", name),
                          ("sympy.polys.polyerrors", name), ("numpy.linalg", name),
                          ("numpy.exceptions", name)):
        mod = sys.modules.get(modname)
        if mod is None and modname in ("statistics", "decimal", "json"):
            mod = __import__(modname)
        found = getattr(mod, attr, None) if mod is not None else None
        if isinstance(found, type) and issubclass(found, BaseException):
            return found
    return None


def error_matches(actual: str, expected: str) -> bool:
    """True when the raised type `actual` is `expected` or a known subclass of it."""
    if actual in HARD_ERRORS:
        return False
    if actual == expected:
        return True
    a, e = _exception_class(actual), _exception_class(expected)
    return a is not None and e is not None and issubclass(a, e)


# ---------------------------------------------------------------- stages


def _shorten(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "..."


def _hard_failure(stage: str, r: CallResult, args: dict[str, Any]) -> Finding | None:
    """A crash-class outcome: never acceptable, whatever the test expected."""
    etype = r.error.type if r.error else ""
    where = f"args {_shorten(args, 200)}"
    if r.timed_out or etype == "Timeout":
        return Finding(f"{stage}.timeout", 0, 0, f"call did not finish in time ({where})")
    if r.oom_killed or etype == "MemoryLimit":
        return Finding(f"{stage}.memory", 0, 0, f"call was killed for memory ({where})")
    if r.stdout_truncated or r.stderr_truncated or etype == "OutputLimit":
        return Finding(f"{stage}.output-flood", 0, 0, f"output exceeded the cap ({where})")
    if etype in HARD_ERRORS:
        msg = r.error.message if r.error else ""
        return Finding(f"{stage}.crash", 0, 0, f"{etype}: {msg[:300]} ({where})")
    return None


def _judge_test(i: int, test: FunctionTest, r: CallResult) -> Finding | None:
    hard = _hard_failure("tests", r, test.args)
    if hard is not None:
        return hard
    args = _shorten(test.args, 200)
    if test.expect_error is not None:
        if r.ok:
            return Finding("tests.failed", 0, 0, f"tests[{i}] {args}: expected "
                           f"{test.expect_error}, returned {_shorten(r.value)}")
        etype = r.error.type if r.error else "?"
        if not error_matches(etype, test.expect_error):
            msg = r.error.message if r.error else ""
            return Finding("tests.failed", 0, 0, f"tests[{i}] {args}: expected "
                           f"{test.expect_error}, raised {etype}: {msg[:200]}")
        return None
    if not r.ok:
        etype, msg = (r.error.type, r.error.message) if r.error else ("?", "")
        return Finding("tests.failed", 0, 0, f"tests[{i}] {args}: raised {etype}: {msg[:300]}")
    if not json_equal(r.value, test.expect):
        return Finding("tests.failed", 0, 0, f"tests[{i}] {args}: expected "
                       f"{_shorten(test.expect)}, got {_shorten(r.value)}")
    return None


def _run_calls(sandbox: CallsFunctions, spec: FunctionSpec, arg_list: Sequence[dict[str, Any]],
               timeout: float | None) -> list[CallResult | Exception]:
    """Call the function once per argument dict, concurrently over the sandbox's pool."""
    def one(args: dict[str, Any]) -> CallResult | Exception:
        try:
            return sandbox.call(spec, args, timeout=timeout)
        except InvalidArguments as exc:
            return exc
    workers = max(1, min(int(getattr(sandbox, "pool_size", 1)), len(arg_list)))
    if workers == 1:
        return [one(a) for a in arg_list]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fnforge-vet") as pool:
        return list(pool.map(one, arg_list))


def _timed(name: str, fn: Callable[[], list[Finding]]) -> StageResult:
    t0 = time.perf_counter()
    findings = fn()
    return StageResult(name, not findings, findings, (time.perf_counter() - t0) * 1000)


def vet(sandbox: CallsFunctions, spec: FunctionSpec, *, cache: VerdictCache | None = DEFAULT_CACHE,
        timeout: float | None = None, host_only: bool = False) -> VetReport:
    """Vet `spec`; see the module doc. SandboxError (infrastructure) propagates to the caller.

    host_only runs the three host stages and marks the container stages skipped (the verdict
    then only says the code may be sent to a container; it is never cached)."""
    image_id = str(getattr(sandbox, "image_id", "") or "") if sandbox is not None else ""
    phash = P.policy_hash()
    key = cache_key(spec.code_hash, spec.spec_hash, image_id, phash)
    if cache is not None and not host_only:
        hit = cache.get(key)
        if hit is not None:
            return hit
    stages = [_timed("shape", lambda: check_shape(spec)),
              _timed("static", lambda: check_static(spec)),
              _timed("restricted", lambda: check_restricted(spec.code))]
    audit: list[dict[str, Any]] = []
    host_ok = all(s.passed for s in stages)
    if host_ok and not host_only:
        stages += _container_stages(sandbox, spec, timeout, audit)
    else:
        stages += [StageResult(n, False, [], 0.0, skipped=True) for n in STAGES[3:]]
    passed = all(s.passed for s in stages) and not any(s.skipped for s in stages)
    if host_only:
        passed = host_ok
    report = VetReport(passed=passed, function=spec.name, code_hash=spec.code_hash,
                       spec_hash=spec.spec_hash, image_id=image_id, policy_hash=phash,
                       stages=stages, untested=not spec.tests, audit=audit)
    if cache is not None and not host_only:
        cache.put(report)
    return report


_SMOKE_HARNESS = """
import json as _j
_cases = _j.loads({cases!r})
for _i, _a in enumerate(_cases):
    print({marker!r}, _i, flush=True)
    try:
        _j.dumps({name}(**_a), default=str)
    except Exception:
        pass
print({marker!r}, "done", flush=True)
"""
SMOKE_BATCH_MAX_S = 30.0


def _smoke(sandbox: CallsFunctions, spec: FunctionSpec, cases: list[dict[str, Any]],
           timeout: float | None, audit: list[dict[str, Any]]) -> list[Finding]:
    """Run the smoke cases; in one container process when the sandbox offers `run` (one round
    trip instead of one per case: the hot path of vetting), else one call per case.

    Any Python exception is a clean outcome; a timeout, memory kill, output flood or crash of the
    batch rejects the function, naming the case that was running (from the progress markers)."""
    run = getattr(sandbox, "run", None)
    if run is None or not cases:
        found = []
        for args, r in zip(cases, _run_calls(sandbox, spec, cases, timeout), strict=True):
            if isinstance(r, Exception):
                continue  # the generator produced something the runtime refuses
            audit.extend(r.audit)
            hard = _hard_failure("smoke", r, args)
            if hard is not None:
                found.append(hard)
        return found
    marker = "fnforge-smoke-" + hashlib.sha256(spec.spec_hash.encode()).hexdigest()[:16]
    code = _SMOKE_HARNESS.format(cases=json.dumps(cases), marker=marker, name=spec.name)
    per_case = float(timeout if timeout is not None else
                     getattr(getattr(sandbox, "limits", None), "timeout_s", 10.0))
    batch_timeout = min(per_case * len(cases), max(per_case, SMOKE_BATCH_MAX_S))
    r = run(code, functions=[spec], timeout=batch_timeout)
    audit.extend(r.audit)
    running = [ln.split()[-1] for ln in str(r.stdout).splitlines() if ln.startswith(marker)]
    last = running[-1] if running else "0"
    args = cases[int(last)] if last.isdigit() and int(last) < len(cases) else {}
    hard = _hard_failure("smoke", r, args)
    if hard is not None:
        return [hard]
    if not r.ok or last != "done":
        etype = r.error.type if r.error else "?"
        msg = r.error.message if r.error else "smoke batch did not finish"
        return [Finding("smoke.crash", 0, 0, f"{etype}: {msg[:300]} (args {_shorten(args)})")]
    return []


def _container_stages(sandbox: CallsFunctions, spec: FunctionSpec, timeout: float | None,
                      audit: list[dict[str, Any]]) -> list[StageResult]:
    out: list[StageResult] = []
    # tests and smoke are submitted together (the pool stays busy); smoke's outcome is only
    # reported when every test passed: the container stages stop at the first hard failure
    t0 = time.perf_counter()
    cases = smoke_cases(spec.parameters)
    smoke_audit: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fnforge-smoke") as bg:
        smoke_future = bg.submit(_smoke, sandbox, spec, cases, timeout, smoke_audit)
        findings: list[Finding] = []
        results = _run_calls(sandbox, spec, [t.args for t in spec.tests], timeout)
        for i, (test, r) in enumerate(zip(spec.tests, results, strict=True)):
            if isinstance(r, Exception):
                findings.append(Finding("tests.invalid-args", 0, 0, f"tests[{i}]: {r}"))
                continue
            audit.extend(r.audit)
            f = _judge_test(i, test, r)
            if f is not None:
                findings.append(f)
        t_tests = (time.perf_counter() - t0) * 1000
        out.append(StageResult("tests", not findings, findings, t_tests))
        sfind = smoke_future.result()
    if not findings:
        audit.extend(smoke_audit)
        out.append(StageResult("smoke", not sfind, sfind, (time.perf_counter() - t0) * 1000))
    else:
        out.append(StageResult("smoke", False, [], 0.0, skipped=True))
    # isolation: every audit event seen so far (also from failing tests, for reviewers)
    ifind = [Finding(f"isolation.{e.get('event', '?')}", 0, 0,
                     f"forbidden event {e.get('event')}: {str(e.get('detail', ''))[:300]}")
             for e in audit]
    skipped = bool(findings) and not ifind
    out.append(StageResult("isolation", not ifind and not skipped, ifind, 0.0, skipped=skipped))
    return out


# ---------------------------------------------------------------- CLI


def _human(report: VetReport) -> Table:
    table = Table(title=f"{report.function}: {'PASSED' if report.passed else 'REJECTED'}"
                  + (" (untested: smoke only)" if report.untested else "")
                  + (" [cached]" if report.cached else ""))
    for col in ("stage", "result", "ms", "findings"):
        table.add_column(col)
    for s in report.stages:
        state = "skipped" if s.skipped else ("ok" if s.passed else "FAIL")
        text = "\n".join(f"{f.rule} {f.line}:{f.col} {f.message}" for f in s.findings)
        table.add_row(s.name, state, f"{s.duration_ms:.1f}", text)
    return table


def vet_command(argv: Sequence[str] | None = None) -> int:
    """`python -m sandbox vet SPEC.json...`: report JSON on stdout; 0 pass, 1 rejected, 2 error."""
    parser = argparse.ArgumentParser(prog="python -m sandbox vet",
                                     description="Vet generated functions (FunctionSpec JSON).")
    parser.add_argument("specs", nargs="+", metavar="SPEC.json")
    parser.add_argument("--human", action="store_true", help="print a readable table")
    parser.add_argument("--host-only", action="store_true",
                        help="only the host stages (shape, static, restricted); no Docker")
    parser.add_argument("--cache-dir", default=None, help="keep verdicts in this directory")
    parser.add_argument("--pool-size", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=None, help="seconds per call")
    try:
        ns = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    try:
        specs = [FunctionSpec.load(p) for p in ns.specs]
    except InvalidSpec as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cache = VerdictCache(ns.cache_dir)
    try:
        if ns.host_only:
            reports = [vet(_NoSandbox(), s, cache=None, host_only=True) for s in specs]
        else:
            from .runtime import Sandbox

            with Sandbox(pool_size=ns.pool_size) as sb:
                reports = [vet(sb, s, cache=cache, timeout=ns.timeout) for s in specs]
    except (SandboxError, InvalidArguments) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if ns.human:
        console = Console(width=120)
        for report in reports:
            console.print(_human(report))
    else:
        out: Any = [r.to_dict() for r in reports]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
    return 0 if all(r.passed for r in reports) else 1


class _NoSandbox:
    image_id = ""
    pool_size = 1

    def call(self, spec: FunctionSpec, args: dict[str, Any] | None = None, *,
             timeout: float | None = None) -> CallResult:
        raise SandboxError("no sandbox in --host-only mode")


if __name__ == "__main__":
    sys.exit(vet_command())
