"""Vetting end to end in real containers (fixture `sandbox` from tests/conftest.py).

Specification: every benign helper passes all six stages; functions that pass the static gate but
misbehave on their own tests are rejected; a generated edge input that runs long is a warning,
not a rejection; a crash or an audit event rejects; verdicts are cached and any change re-vets.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sandbox import ErrorKind, FunctionSpec, Sandbox, StageResult, VerdictCache, VetReport, vet
from sandbox.vetting import error_matches, json_equal

CORPUS = Path(__file__).parent / "corpus"
BENIGN = sorted((CORPUS / "benign").glob("*.json"))


def make(code: str, props: dict[str, Any] | None = None, tests: list[dict[str, Any]] | None = None,
         name: str = "f", description: str = "test function") -> FunctionSpec:
    props = {"n": {"type": "integer", "minimum": 0, "maximum": 50}} if props is None else props
    return FunctionSpec.from_dict({
        "name": name, "description": description, "code": code,
        "parameters": {"type": "object", "properties": props, "required": sorted(props)},
        "tests": tests or []})


def stage(report: VetReport, name: str) -> StageResult:
    return next(s for s in report.stages if s.name == name)


def rules(report: VetReport, name: str) -> set[str]:
    return {f.rule for f in stage(report, name).findings}


# ---------------------------------------------------------------- host-only pieces

@pytest.mark.parametrize("got,want,equal", [
    (7, 7.0, True), (0.1 + 0.2, 0.3, True), (1e-12, 0, True), (1.0, 1.001, False),
    ([1, [2.0000000001]], [1, [2]], True), ({"a": 1}, {"a": 1, "b": 2}, False),
    (True, 1, False), (None, None, True), ("7", 7, False), ([1, 2], [2, 1], False),
    (10**400, 1.5, False), (0.5, 10**400, False), (10**400, 10**400, True),
])
def test_expect_compares_as_json_with_float_tolerance(got: Any, want: Any, equal: bool) -> None:
    assert json_equal(got, want) is equal


@pytest.mark.parametrize("kind,actual,expected,ok", [
    (ErrorKind.EXCEPTION, "ValueError", "ValueError", True),
    (ErrorKind.EXCEPTION, "ZeroDivisionError", "ArithmeticError", True),
    (ErrorKind.EXCEPTION, "StatisticsError", "ValueError", True),
    (ErrorKind.EXCEPTION, "KeyError", "LookupError", True),
    (ErrorKind.EXCEPTION, "ValueError", "TypeError", False),
    (ErrorKind.EXCEPTION, "ZeroDivisionError", "Exception", True),
    (ErrorKind.TIMEOUT, "Timeout", "Timeout", False),
    (ErrorKind.MEMORY_LIMIT, "MemoryLimit", "MemoryLimit", False),
    (ErrorKind.CRASHED, "Crashed", "Crashed", False),
    (ErrorKind.PROTOCOL, "ProtocolError", "Exception", False),
])
def test_only_an_exception_the_function_raised_satisfies_expect_error(
        kind: ErrorKind, actual: str, expected: str, ok: bool) -> None:
    assert error_matches(kind, actual, expected) is ok


def test_every_error_kind_but_an_exception_fails_a_test() -> None:
    """One enumeration for the runner, the pool and vetting: no kind is forgotten."""
    from sandbox.results import CallResult, ErrorInfo
    from sandbox.spec import FunctionTest
    from sandbox.vetting.dynamic import _SMOKE_SEVERITY, _judge_test

    assert set(_SMOKE_SEVERITY) == set(ErrorKind)
    test = FunctionTest(args={"n": 1}, expect_error=None, expect=1)
    for kind in ErrorKind:
        r = CallResult(ok=False, error=ErrorInfo(kind, kind.value, "x"))
        finding = _judge_test(0, test, r)
        assert finding is not None and finding.severity == "error", kind


def test_cli_host_only(tmp_path: Path) -> None:
    def vet_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sandbox", "vet", *args],
                              capture_output=True, text=True, timeout=120)

    ok = vet_cli("--host-only", str(BENIGN[0]))
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["passed"] and [s["name"] for s in report["stages"]] == [
        "shape", "static", "restricted", "tests", "smoke", "isolation"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(make("import os\ndef f(n):\n    return os.getcwd()\n").to_dict()))
    rejected = vet_cli("--host-only", str(bad))
    assert rejected.returncode == 1
    assert json.loads(rejected.stdout)["stages"][1]["findings"][0]["rule"] == "static.import"
    missing = vet_cli("--host-only", str(tmp_path / "missing.json"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert vet_cli().returncode == 2


def test_human_table_shows_hostile_names_as_text(tmp_path: Path) -> None:
    """Rich markup and terminal escapes in a spec cannot forge a PASSED line."""
    spec = make("def f(n):\n    return n\n", description="x")
    data = spec.to_dict()
    data["code"] = "import os\ndef f(n):\n    return n  # [bold green]PASSED[/] \x1b[2J\n"
    path = tmp_path / "s.json"
    path.write_text(json.dumps(data))
    out = subprocess.run([sys.executable, "-m", "sandbox", "vet", "--host-only", "--human",
                          str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "REJECTED" in out.stdout and "PASSED" not in out.stdout.replace(
        "[bold green]PASSED[/]", "")
    assert "\x1b[2J" not in out.stdout


# ---------------------------------------------------------------- in containers

@pytest.mark.parametrize("path", BENIGN, ids=lambda p: p.stem)
def test_benign_helper_passes_full_vetting(sandbox: Sandbox, path: Path) -> None:
    report = sandbox.vet(FunctionSpec.load(path))
    assert report.passed, json.dumps(report.to_dict(), indent=1)[:3000]
    assert not report.untested and report.audit == []


def test_static_findings_skip_the_container(sandbox: Sandbox) -> None:
    report = sandbox.vet(make("import os\ndef f(n):\n    return eval('1')\n"), use_cache=False)
    assert not report.passed
    assert rules(report, "static") == {"static.import", "static.builtin"}
    assert all(s.skipped for s in report.stages[3:])


def test_failing_unit_test_rejects(sandbox: Sandbox) -> None:
    spec = make("def f(n):\n    return n + 1\n", tests=[{"args": {"n": 1}, "expect": 3}])
    report = sandbox.vet(spec, use_cache=False)
    assert not report.passed
    assert [f.rule for f in stage(report, "tests").findings] == ["tests.failed"]
    assert stage(report, "smoke").skipped


def test_expect_error_and_tolerance(sandbox: Sandbox) -> None:
    spec = make("def f(n):\n    if n == 0:\n        raise ZeroDivisionError('zero')\n"
                "    return 1 / 3 * n\n",
                tests=[{"args": {"n": 0}, "expect_error": "ArithmeticError"},
                       {"args": {"n": 3}, "expect": 1}])
    assert sandbox.vet(spec, use_cache=False).passed


def test_untested_spec_gets_smoke_only(sandbox: Sandbox) -> None:
    report = sandbox.vet(make("def f(n):\n    return n * 2\n"), use_cache=False)
    assert report.passed and report.untested


def test_a_test_that_hangs_rejects(sandbox: Sandbox) -> None:
    spec = make("def f(n):\n    while True:\n        n += 1\n",
                tests=[{"args": {"n": 1}, "expect": 1}])
    report = sandbox.vet(spec, use_cache=False, timeout=1.0)
    assert not report.passed and rules(report, "tests") == {"tests.timeout"}


def test_an_edge_input_that_runs_long_is_a_warning_not_a_rejection(sandbox: Sandbox) -> None:
    """`to_base(n, base=1)` loops forever on the schema's edge; its own tests pass."""
    spec = make("def to_base(n, base):\n    digits = []\n    while n > 0:\n"
                "        digits.append(n % base)\n        n = n // base\n"
                "    return digits[::-1] or [0]\n",
                props={"n": {"type": "integer", "minimum": 0},
                       "base": {"type": "integer", "minimum": 1, "maximum": 36}},
                tests=[{"args": {"n": 5, "base": 2}, "expect": [1, 0, 1]}], name="to_base")
    t0 = time.monotonic()
    report = sandbox.vet(spec, use_cache=False)
    assert report.passed, report.to_dict()
    assert "smoke.timeout" in {f.rule for f in report.warnings}
    assert time.monotonic() - t0 < 15  # smoke cases have a short timeout of their own


def test_an_output_flood_on_an_edge_input_is_a_warning(sandbox: Sandbox) -> None:
    spec = make("def f(n):\n    for i in range(200000):\n        print('x' * 100)\n    return n\n",
                tests=[])
    report = sandbox.vet(spec, use_cache=False, timeout=5.0)
    assert report.passed and "smoke.output_limit" in {f.rule for f in report.warnings}


def test_a_crash_on_an_edge_input_rejects(sandbox: Sandbox) -> None:
    spec = make("def f(n):\n    if n == 50:\n        import sys\n    return n\n",
                tests=[{"args": {"n": 1}, "expect": 1}])
    report = sandbox.vet(spec, use_cache=False)
    assert not report.passed  # `import sys` is refused statically


def test_sympify_escape_is_caught_by_the_isolation_audit(sandbox: Sandbox) -> None:
    """The code is benign-looking; the test data makes sympify evaluate code."""
    spec = make("import sympy\n\ndef f(expr):\n    return str(sympy.sympify(expr))\n",
                props={"expr": {"type": "string"}},
                tests=[{"args": {"expr": "open('/etc/passwd').read()"},
                        "expect_error": "Exception"}])
    report = sandbox.vet(spec, use_cache=False)
    assert not report.passed
    assert any(r.startswith("isolation.") for r in rules(report, "isolation"))
    assert all(e["reported_by"] == "child" for e in report.audit)


def test_runtime_guard_refusal_fails_tests(sandbox: Sandbox) -> None:
    """A chain the static gate cannot see (a module bound to a variable) is refused at run time."""
    spec = make("import fractions\n\ndef f(n):\n    m = [fractions][0]\n"
                "    return str(m.Fraction(n))\n", tests=[{"args": {"n": 2}, "expect": "2"}])
    assert sandbox.vet(spec, use_cache=False).passed
    r = sandbox.call(make("import sympy\n\ndef f(n):\n    m = [sympy][0]\n"
                          "    return str(m.test)\n"), {"n": 1})
    assert r.error is not None and r.error.type == "AttributeError"


def test_verdicts_make_revetting_free_and_any_change_revets(tmp_path: Path) -> None:
    spec = make("def f(n):\n    return n\n", tests=[{"args": {"n": 2}, "expect": 2}])
    with Sandbox(pool_size=1, verdicts=VerdictCache(tmp_path)) as sb:
        first = sb.vet(spec)
        assert first.passed and not first.cached
        t0 = time.perf_counter()
        again = sb.vet(spec)
        assert again.cached and again.passed
        assert time.perf_counter() - t0 < 0.05
        changed = make("def f(n):\n    return n\n", tests=[{"args": {"n": 2}, "expect": 2}],
                       description="changed")
        assert not sb.vet(changed).cached
        assert vet(sb, spec, use_cache=False).cached is False
    with Sandbox(pool_size=1, verdicts=VerdictCache(tmp_path)) as other:
        assert other.vet(spec).cached  # from the JSON directory
