"""Vetting stages 4-6, in containers: the spec's own tests, smoke cases, the isolation audit.

Decisions:
- `expect` compares as JSON: numbers with rel 1e-6 / abs 1e-9 (int 7 equals float 7.0), lists and
  dicts recursively, booleans only equal booleans.
- `expect_error` names an exception class. Only an exception the function raised can satisfy it
  (kind EXCEPTION); its type must be that class or a subclass of it, where the hierarchy is known
  on the host (builtins, statistics, decimal, sympy, numpy). A timeout, a memory kill or any other
  condition measured by the runner never does.
- A test that ends in any condition but an exception fails: the spec's own tests must finish.
- Smoke cases are generated from the schema's edges (`to_base(n, base=1)`, a loop over
  `radius=100000`) and run with a short timeout. On such an input, a timeout, a memory kill, an
  output flood or an oversized value is a recorded warning, not a rejection: the sandbox did its
  job, and the optimizer is told. A crash of the process, a protocol violation or an audit
  event rejects (smoke_outcome below).
- Isolation: every audit event the function's process reported during tests and smoke is an
  error finding, and so is every runtime-guard refusal (an exception the guards of
  sandbox/runner/guards.py raised: a lookup, call, import or format the sandbox does not allow)
  that ended one of those calls, whatever the test expected: tripping a guard is intent, not an
  edge case. The events are evidence, reported by the process under test: the guarantee is the
  container and the kernel filter, not this stage. A refusal the code catches and hides is not
  seen here.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from ..errors import InvalidArguments, SandboxBroken
from ..results import AuditEvent, CallResult, ErrorKind
from ..spec import FunctionSpec, FunctionTest
from .report import Finding, Severity, StageResult
from .smoke_cases import smoke_cases

__all__ = ["CallsFunctions", "container_stages", "error_matches", "guard_refusal", "json_equal",
           "smoke_outcome"]

REL_TOL = 1e-6
ABS_TOL = 1e-9
_LOST_CALL_RETRIES = 2
SMOKE_TIMEOUT_S = 2.0
"""Per smoke case: an edge input that needs longer is a warning, so vetting never crawls."""

_SMOKE_SEVERITY: dict[ErrorKind, Severity | None] = {
    ErrorKind.EXCEPTION: None,  # a clean Python exception on an edge input is fine
    ErrorKind.TIMEOUT: "warning",
    ErrorKind.MEMORY_LIMIT: "warning",
    ErrorKind.OUTPUT_LIMIT: "warning",
    ErrorKind.RESULT_INVALID: "warning",
    ErrorKind.CRASHED: "error",
    ErrorKind.PROTOCOL: "error",
    ErrorKind.RESOURCE_LIMIT: "error",
}


_GUARD_REFUSAL = re.compile(
    r"[^\n]{0,300}?(?:is not (?:available|allowed) in the fnforge sandbox"
    r"|format field [^\n]{0,200}? accesses attributes; pass the values themselves)")
"""How the runtime guards word a refusal (sandbox/runner/guards.py: `_refuse`, the refusing
calls, the import guard, the audit hook's block, the guarded `str.format`)."""


def guard_refusal(r: CallResult) -> str | None:
    """The guard refusal that ended this call, if any: in the exception's message, or in its
    traceback when the code re-raised it as another exception."""
    err = r.error
    if err is None or err.kind is not ErrorKind.EXCEPTION:
        return None
    for text in (err.message, err.traceback):
        found = _GUARD_REFUSAL.search(text)
        if found is not None:
            return found.group().strip()[:400]
    return None


class CallsFunctions(Protocol):
    """What the container stages need from a Sandbox."""

    pool_size: int

    def call(self, spec: FunctionSpec, args: dict[str, Any] | None = None, *,
             timeout: float | None = None) -> CallResult: ...


# ---------------------------------------------------------------- comparison


def json_equal(got: Any, want: Any) -> bool:
    """JSON equality with a float tolerance (see the module doc)."""
    if isinstance(got, bool) or isinstance(want, bool):
        return isinstance(got, bool) and isinstance(want, bool) and got == want
    if isinstance(got, int | float) and isinstance(want, int | float):
        if isinstance(got, int) and isinstance(want, int):
            return got == want
        try:
            g, w = float(got), float(want)
        except OverflowError:  # an int past float's range is near no float
            return False
        if math.isnan(g) or math.isnan(w):
            return math.isnan(g) and math.isnan(w)
        return math.isclose(g, w, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    if isinstance(got, list | tuple) and isinstance(want, list | tuple):
        return len(got) == len(want) and all(
            json_equal(a, b) for a, b in zip(got, want, strict=True))
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(json_equal(got[k], want[k]) for k in got)
    return bool(type(got) is type(want) and got == want)


_ERROR_MODULES = ("builtins", "statistics", "decimal", "json", "sympy", "sympy.core.sympify",
                  "sympy.polys.polyerrors", "numpy.linalg", "numpy.exceptions")
"""Where the exception types of the image's modules live (imported on the first lookup that
needs them: sympy takes a second to import)."""


def _exception_class(name: str) -> type[BaseException] | None:
    """The host's class of that name, looked up only where exception types live."""
    if not name.isidentifier() or name.startswith("_"):
        return None
    for module_name in _ERROR_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found = getattr(module, name, None)
        if isinstance(found, type) and issubclass(found, BaseException):
            return found
    return None


def error_matches(kind: ErrorKind, actual: str, expected: str) -> bool:
    """True when the function raised `expected` or a known subclass of it."""
    if kind is not ErrorKind.EXCEPTION:
        return False
    if actual == expected:
        return True
    a, e = _exception_class(actual), _exception_class(expected)
    return a is not None and e is not None and issubclass(a, e)


# ---------------------------------------------------------------- stages


def _shorten(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "..."


def _condition(r: CallResult) -> str:
    err = r.error
    return f"{err.kind.value}: {err.message[:300]}" if err else "no result"


def _judge_test(i: int, test: FunctionTest, r: CallResult) -> Finding | None:
    args = _shorten(test.args, 200)
    err = r.error
    if err is not None and err.kind is not ErrorKind.EXCEPTION:
        return Finding(f"tests.{err.kind.value}", 0, 0, f"tests[{i}] {args}: {_condition(r)}")
    if test.expect_error is not None:
        if r.ok or err is None:
            return Finding("tests.failed", 0, 0, f"tests[{i}] {args}: expected "
                           f"{test.expect_error}, returned {_shorten(r.value)}")
        if not error_matches(err.kind, err.type, test.expect_error):
            return Finding("tests.failed", 0, 0, f"tests[{i}] {args}: expected "
                           f"{test.expect_error}, raised {err.type}: {err.message[:200]}")
        return None
    if not r.ok or err is not None:
        what = f"{err.type}: {err.message[:300]}" if err else "failed"
        return Finding("tests.failed", 0, 0, f"tests[{i}] {args}: raised {what}")
    if not json_equal(r.value, test.expect):
        return Finding("tests.failed", 0, 0, f"tests[{i}] {args}: expected "
                       f"{_shorten(test.expect)}, got {_shorten(r.value)}")
    return None


def smoke_outcome(args: dict[str, Any], r: CallResult) -> Finding | None:
    """The finding for one smoke case, if any (severity from the table above)."""
    if r.error is None:
        return None
    severity = _SMOKE_SEVERITY[r.error.kind]
    if severity is None:
        return None
    note = " (a generated edge input: recorded, not rejected)" if severity == "warning" else ""
    return Finding(f"smoke.{r.error.kind.value}", 0, 0,
                   f"args {_shorten(args, 200)}: {_condition(r)}{note}", severity)


def container_stages(sandbox: CallsFunctions, spec: FunctionSpec, timeout: float | None,
                     audit: list[dict[str, Any]]) -> list[StageResult]:
    """Stages 4-6. Tests and smoke cases go to the pool together; smoke's outcome only counts
    when every test passed (the container stages stop at the first failing stage)."""
    t0 = time.perf_counter()
    cases = smoke_cases(spec.parameters)
    smoke_timeout = SMOKE_TIMEOUT_S if timeout is None else min(timeout, SMOKE_TIMEOUT_S)
    all_args = [t.args for t in spec.tests] + cases
    timeouts = [timeout] * len(spec.tests) + [smoke_timeout] * len(cases)
    results = _run_mixed(sandbox, spec, all_args, timeouts)
    for attempt in range(_LOST_CALL_RETRIES + 1):  # a lost call says nothing of the function
        lost = [i for i, r in enumerate(results) if isinstance(r, CallResult)
                and r.error is not None and r.error.lost_to_engine]
        if not lost:
            break
        if attempt == _LOST_CALL_RETRIES:  # no verdict, and so none cached
            raise SandboxBroken(f"vetting {spec.name} was cut short: the engine kept losing "
                                "its containers")
        again = _run_mixed(sandbox, spec, [all_args[i] for i in lost], [timeouts[i] for i in lost])
        for i, r in zip(lost, again, strict=True):
            results[i] = r
    test_results, smoke_results = results[:len(spec.tests)], results[len(spec.tests):]
    events: list[AuditEvent] = []
    refusals: list[str] = []
    findings: list[Finding] = []
    for i, (test, r) in enumerate(zip(spec.tests, test_results, strict=True)):
        if isinstance(r, InvalidArguments):
            findings.append(Finding("tests.invalid-args", 0, 0, f"tests[{i}]: {r}"))
            continue
        events.extend(r.audit)
        _note_refusal(refusals, f"tests[{i}]", r)
        try:
            f = _judge_test(i, test, r)
        except (ArithmeticError, ValueError, TypeError, RecursionError) as exc:
            f = Finding("tests.unjudgeable", 0, 0, f"tests[{i}]: the result cannot be compared "
                        f"with the expected value ({type(exc).__name__})")
        if f is not None:
            findings.append(f)
    elapsed = (time.perf_counter() - t0) * 1000
    out = [StageResult.of("tests", findings, elapsed)]
    if out[0].passed:
        smoke: list[Finding] = []
        for args, r in zip(cases, smoke_results, strict=True):
            if isinstance(r, InvalidArguments):
                continue  # the generator made a case the runtime refuses: nothing ran
            events.extend(r.audit)
            _note_refusal(refusals, f"smoke args {_shorten(args, 120)}", r)
            f = smoke_outcome(args, r)
            if f is not None:
                smoke.append(f)
        out.append(StageResult.of("smoke", smoke, elapsed))
    else:
        out.append(StageResult("smoke", False, [], 0.0, skipped=True))
    audit.extend(e.to_dict() for e in events)
    isolation = [Finding(f"isolation.{e.event}", 0, 0,
                         f"the function's process reported a forbidden event {e.event}: "
                         f"{e.detail[:300]}") for e in events]
    isolation += [Finding("isolation.guard", 0, 0, text) for text in refusals]
    skipped = not out[0].passed and not isolation
    out.append(StageResult("isolation", not isolation and not skipped, isolation, 0.0,
                           skipped=skipped))
    return out


def _note_refusal(refusals: list[str], where: str, r: CallResult) -> None:
    """Keep one finding text per distinct refusal (at most 8)."""
    refusal = guard_refusal(r)
    if refusal is None or len(refusals) >= 8:
        return
    text = (f"{where}: a runtime guard refused what the function tried ({refusal}); the "
            "sandbox does not allow it, write the function without it")
    if not any(refusal in seen for seen in refusals):
        refusals.append(text)


def _run_mixed(sandbox: CallsFunctions, spec: FunctionSpec, arg_list: list[dict[str, Any]],
               timeouts: list[float | None]) -> list[CallResult | InvalidArguments]:
    def one(item: tuple[dict[str, Any], float | None]) -> CallResult | InvalidArguments:
        try:
            return sandbox.call(spec, item[0], timeout=item[1])
        except InvalidArguments as exc:
            return exc
    items = list(zip(arg_list, timeouts, strict=True))
    workers = max(1, min(sandbox.pool_size, len(items)))
    if workers == 1:
        return [one(i) for i in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fnforge-vet") as pool:
        return list(pool.map(one, items))
