"""Vetting end to end in real containers (fixture `sandbox` from tests/conftest.py).

Specification: every benign helper passes all six stages; functions that pass the static gate but
misbehave at run time (hang, flood output, fail their own tests, touch files through sympify) are
rejected by the container stages; verdicts are cached and any change re-vets.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from sandbox import Sandbox
from sandbox.spec import FunctionSpec
from sandbox.vet import VerdictCache, error_matches, json_equal, vet, vet_command

CORPUS = Path(__file__).parent / "corpus"
BENIGN = sorted((CORPUS / "benign").glob("*.json"))
CACHE = VerdictCache()


def make(code: str, props: dict[str, Any] | None = None, tests: list[dict[str, Any]] | None = None,
         name: str = "f", description: str = "test function") -> FunctionSpec:
    props = {"n": {"type": "integer", "minimum": 0, "maximum": 50}} if props is None else props
    return FunctionSpec.from_dict({
        "name": name, "description": description, "code": code,
        "parameters": {"type": "object", "properties": props, "required": sorted(props)},
        "tests": tests or []})


def stage(report: Any, name: str) -> Any:
    return next(s for s in report.stages if s.name == name)


# ---------------------------------------------------------------- host-only pieces

@pytest.mark.parametrize("got,want,equal", [
    (7, 7.0, True), (0.1 + 0.2, 0.3, True), (1e-12, 0, True), (1.0, 1.001, False),
    ([1, [2.0000000001]], [1, [2]], True), ({"a": 1}, {"a": 1, "b": 2}, False),
    (True, 1, False), (None, None, True), ("7", 7, False), ([1, 2], [2, 1], False),
])
def test_expect_compares_as_json_with_float_tolerance(got: Any, want: Any, equal: bool) -> None:
    assert json_equal(got, want) is equal


@pytest.mark.parametrize("actual,expected,ok", [
    ("ValueError", "ValueError", True), ("ZeroDivisionError", "ArithmeticError", True),
    ("StatisticsError", "ValueError", True), ("KeyError", "LookupError", True),
    ("ValueError", "TypeError", False), ("Timeout", "Exception", False),
    ("ZeroDivisionError", "Exception", True), ("MemoryLimit", "MemoryLimit", False),
])
def test_expect_error_accepts_subclasses_never_sandbox_conditions(actual: str, expected: str,
                                                                  ok: bool) -> None:
    assert error_matches(actual, expected) is ok


def test_cli_host_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert vet_command(["--host-only", str(BENIGN[0])]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and [s["name"] for s in report["stages"]] == [
        "shape", "static", "restricted", "tests", "smoke", "isolation"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(make("import os\ndef f(n):\n    return os.getcwd()\n").to_dict()))
    assert vet_command(["--host-only", str(bad)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["stages"][1]["findings"][0]["rule"] == "static.import"
    assert vet_command(["--host-only", str(tmp_path / "missing.json")]) == 2
    assert vet_command([]) == 2


# ---------------------------------------------------------------- in containers

@pytest.mark.parametrize("path", BENIGN, ids=lambda p: p.stem)
def test_benign_helper_passes_full_vetting(sandbox: Sandbox, path: Path) -> None:
    report = vet(sandbox, FunctionSpec.load(path), cache=CACHE)
    assert report.passed, json.dumps(report.to_dict(), indent=1)[:3000]
    assert not report.untested and report.audit == []


def test_static_findings_skip_the_container(sandbox: Sandbox) -> None:
    report = vet(sandbox, make("import os\ndef f(n):\n    return eval('1')\n"), cache=None)
    assert not report.passed
    assert {f.rule for f in stage(report, "static").findings} == {"static.import",
                                                                  "static.builtin"}
    assert all(s.skipped for s in report.stages[3:])


def test_failing_unit_test_rejects(sandbox: Sandbox) -> None:
    spec = make("def f(n):\n    return n + 1\n", tests=[{"args": {"n": 1}, "expect": 3}])
    report = vet(sandbox, spec, cache=None)
    assert not report.passed
    assert [f.rule for f in stage(report, "tests").findings] == ["tests.failed"]
    assert stage(report, "smoke").skipped


def test_expect_error_and_tolerance(sandbox: Sandbox) -> None:
    spec = make("def f(n):\n    if n == 0:\n        raise ZeroDivisionError('zero')\n"
                "    return 1 / 3 * n\n",
                tests=[{"args": {"n": 0}, "expect_error": "ArithmeticError"},
                       {"args": {"n": 3}, "expect": 1}])
    assert vet(sandbox, spec, cache=None).passed


def test_untested_spec_gets_smoke_only(sandbox: Sandbox) -> None:
    report = vet(sandbox, make("def f(n):\n    return n * 2\n"), cache=None)
    assert report.passed and report.untested


def test_hanging_function_fails_smoke(sandbox: Sandbox) -> None:
    spec = make("def f(n):\n    while n >= 0:\n        n = n + 1 - 1\n    return n\n")
    report = vet(sandbox, spec, cache=None, timeout=1.0)
    assert not report.passed
    assert "smoke.timeout" in {f.rule for f in stage(report, "smoke").findings}


def test_output_flood_fails_smoke(sandbox: Sandbox) -> None:
    spec = make("def f(n):\n    for i in range(200000):\n        print('x' * 100)\n    return n\n")
    report = vet(sandbox, spec, cache=None, timeout=5.0)
    assert not report.passed
    assert "smoke.output-flood" in {f.rule for f in stage(report, "smoke").findings}


def test_sympify_escape_is_caught_by_the_isolation_audit(sandbox: Sandbox) -> None:
    """The code is benign-looking; the test data makes sympify read a host file."""
    spec = make("import sympy\n\ndef f(expr):\n    return str(sympy.sympify(expr))\n",
                props={"expr": {"type": "string"}},
                tests=[{"args": {"expr": "open('/etc/passwd').read()"},
                        "expect_error": "Exception"}])
    report = vet(sandbox, spec, cache=None)
    assert not report.passed
    assert "isolation.open" in {f.rule for f in stage(report, "isolation").findings}
    assert any("/etc/passwd" in e["detail"] for e in report.audit)


def test_runtime_guard_refusal_fails_tests(sandbox: Sandbox) -> None:
    """A chain the static gate cannot see (a module bound to a variable) is refused at run time."""
    spec = make("import fractions\n\ndef f(n):\n    m = [fractions][0]\n"
                "    return str(m.Fraction(n))\n", tests=[{"args": {"n": 2}, "expect": "2"}])
    assert vet(sandbox, spec, cache=None).passed
    assert sandbox.call(make("import sympy\n\ndef f(n):\n    m = [sympy][0]\n"
                             "    return str(m.test)\n"), {"n": 1}).error.type == "AttributeError"  # type: ignore[union-attr]


def test_verdict_cache_makes_revetting_free_and_any_change_revets(sandbox: Sandbox,
                                                                  tmp_path: Path) -> None:
    cache = VerdictCache(tmp_path)
    spec = make("def f(n):\n    return n\n", tests=[{"args": {"n": 2}, "expect": 2}])
    first = vet(sandbox, spec, cache=cache)
    assert first.passed and not first.cached
    t0 = time.perf_counter()
    again = vet(sandbox, spec, cache=cache)
    assert again.cached and again.passed
    assert time.perf_counter() - t0 < 0.05
    assert vet(sandbox, spec, cache=VerdictCache(tmp_path)).cached  # from the JSON directory
    changed = make("def f(n):\n    return n\n", tests=[{"args": {"n": 2}, "expect": 2}],
                   description="changed")
    assert not vet(sandbox, changed, cache=cache).cached
