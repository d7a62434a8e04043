"""The host-side vetting gate (shape, AST policy, RestrictedPython) as a specification.

Two corpora drive most of it:
- tests/corpus/malicious/*.py: one attack per file; the header says which rule must trip
  (`# expect: static.attribute`). A miss fails the suite.
- tests/corpus/benign/*.json: realistic math helpers (FunctionSpec JSON with tests). Every one must
  pass all host stages: a false positive fails the suite just like a miss.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest

from sandbox import Sandbox, policy
from sandbox.spec import FunctionSpec
from sandbox.static import (
    Finding,
    check_restricted,
    check_shape,
    check_static,
    static_report,
)

CORPUS = Path(__file__).parent / "corpus"
MALICIOUS = sorted((CORPUS / "malicious").glob("*.py"))
BENIGN = sorted((CORPUS / "benign").glob("*.json"))


def malicious_spec(path: Path) -> tuple[FunctionSpec, str]:
    """A spec around an attack file: function `f`, parameters derived from its signature."""
    text = path.read_text(encoding="utf-8")
    match = re.search(r"^# expect: (\S+)$", text, re.M)
    assert match, f"{path.name} lacks an '# expect: rule' header"
    props: dict[str, Any] = {"n": {"type": "integer"}}
    required = ["n"]
    try:
        tree = ast.parse(text)
        fn = next(s for s in tree.body if isinstance(s, ast.FunctionDef) and s.name == "f")
        args = fn.args.posonlyargs + fn.args.args
        props = {a.arg: {"type": "integer"} for a in args}
        required = [a.arg for a in args[: len(args) - len(fn.args.defaults)]]
    except (SyntaxError, StopIteration):
        pass
    spec = FunctionSpec.from_dict({
        "name": "f", "description": "attack", "code": text,
        "parameters": {"type": "object", "properties": props, "required": required},
    })
    return spec, match.group(1)


def all_findings(spec: FunctionSpec) -> list[Finding]:
    return [f for stage in static_report(spec).values() for f in stage]


def test_corpora_are_big_enough() -> None:
    assert len(MALICIOUS) >= 60
    assert len(BENIGN) >= 25


@pytest.mark.parametrize("path", MALICIOUS, ids=lambda p: p.stem)
def test_malicious_function_trips_its_rule(path: Path) -> None:
    spec, rule = malicious_spec(path)
    findings = all_findings(spec)
    rules = {f.rule for f in findings}
    assert rule in rules, f"{path.name}: expected {rule}, got {sorted(rules)}"


@pytest.mark.parametrize("path", BENIGN, ids=lambda p: p.stem)
def test_benign_helper_passes_every_host_stage(path: Path) -> None:
    spec = FunctionSpec.load(path)
    report = static_report(spec)
    assert report == {"shape": [], "static": [], "restricted": []}, json.dumps(
        {k: [f.to_dict() for f in v] for k, v in report.items()}, indent=1)
    assert spec.tests, f"{path.name}: benign helpers carry their own unit tests"


def spec_of(code: str, props: dict[str, Any] | None = None,
            required: list[str] | None = None, name: str = "f",
            **extra: Any) -> FunctionSpec:
    props = {"n": {"type": "integer"}} if props is None else props
    data = {"name": name, "description": "d", "code": code,
            "parameters": {"type": "object", "properties": props,
                           "required": list(props) if required is None else required}}
    data.update(extra)
    return FunctionSpec.from_dict(data)


def rules_of(code: str, **kw: Any) -> set[str]:
    return {f.rule for f in all_findings(spec_of(code, **kw))}


# ---------------------------------------------------------------- shape

def test_shape_accepts_a_plain_spec() -> None:
    assert check_shape(spec_of("def f(n):\n    return n\n", packages=["sympy"])) == []


@pytest.mark.parametrize("name", ["print", "class", "2x", "_hidden", "x-y"])
def test_shape_refuses_bad_names(name: str) -> None:
    spec = spec_of(f"def {name}(n):\n    return n\n", name=name)
    assert "shape.name" in {f.rule for f in check_shape(spec)}


def test_shape_requires_a_description() -> None:
    spec = FunctionSpec.from_dict({"name": "f", "description": " ", "code": "def f():\n  pass",
                                   "parameters": {"type": "object", "properties": {}}})
    assert [f.rule for f in check_shape(spec)] == ["shape.description"]


@pytest.mark.parametrize("params", [
    {"type": "array"},
    {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["m"]},
    {"type": "object", "properties": {"class": {"type": "integer"}}},
    {"type": "object", "properties": {"n": {"type": "nonsense"}}},
])
def test_shape_refuses_bad_parameter_schemas(params: dict[str, Any]) -> None:
    spec = FunctionSpec.from_dict({"name": "f", "description": "d", "code": "def f(n): pass",
                                   "parameters": params})
    assert "shape.parameters" in {f.rule for f in check_shape(spec)}


def test_shape_packages_must_be_in_the_image() -> None:
    ok = spec_of("def f(n):\n    return n\n", packages=["sympy", "python3-numpy", "mpmath"])
    assert check_shape(ok) == []
    bad = spec_of("def f(n):\n    return n\n", packages=["requests"])
    assert [f.rule for f in check_shape(bad)] == ["shape.packages"]


def test_shape_limits_code_size() -> None:
    code = "def f(n):\n" + "    n += 1\n" * (policy.SIZE_LIMITS.max_code_lines + 1)
    assert "shape.code-size" in {f.rule for f in check_shape(spec_of(code))}


def test_shape_checks_test_arguments_against_the_schema() -> None:
    spec = spec_of("def f(n):\n    return n\n", tests=[{"args": {"n": "x"}, "expect": 1}])
    assert [f.rule for f in check_shape(spec)] == ["shape.test-args"]


# ---------------------------------------------------------------- structure and signature

def test_function_with_the_spec_name_must_exist() -> None:
    assert "static.structure" in rules_of("def g(n):\n    return n\n")


def test_public_helpers_are_allowed_private_ones_are_not() -> None:
    ok = "def helper(k):\n    return k * 2\n\ndef f(n):\n    return helper(n)\n"
    assert rules_of(ok) == set()
    assert "static.private-name" in rules_of(ok.replace("helper", "_helper"))


def test_too_many_helpers() -> None:
    helpers = "".join(f"def h{i}(k):\n    return k\n" for i in range(12))
    assert "static.structure" in rules_of(helpers + "def f(n):\n    return n\n")


@pytest.mark.parametrize("code,props,required", [
    ("def f(n, m):\n    return n", {"n": {"type": "integer"}}, ["n"]),
    ("def f(n):\n    return n", {"n": {}, "m": {}}, ["n", "m"]),
    ("def f(n, m):\n    return n", {"n": {}, "m": {}}, ["n"]),
    ("def f(*args):\n    return 1", {}, []),
])
def test_signature_must_match_parameters(code: str, props: dict[str, Any],
                                         required: list[str]) -> None:
    assert "static.signature" in rules_of(code, props=props, required=required)


def test_signature_defaults_and_keyword_only_are_fine() -> None:
    code = "def f(n, m=2, *, k=3):\n    return n + m + k\n"
    props = {"n": {"type": "integer"}, "m": {"type": "integer"}, "k": {"type": "integer"}}
    assert rules_of(code, props=props, required=["n"]) == set()


# ---------------------------------------------------------------- definition-time code

def test_top_level_constants_are_allowed() -> None:
    code = ("import math\nMOD = 10**9 + 7\nPRIMES = (2, 3, 5, 7)\nTAU = 2 * math.pi\n"
            "NAMES = {'a': 1, 'b': [1, 2]}\n\ndef f(n):\n    return n % MOD\n")
    assert rules_of(code) == set()


def test_huge_constant_powers_are_refused() -> None:
    assert "static.toplevel" in rules_of("X = 9 ** 9 ** 9\ndef f(n):\n    return n\n")


def test_lru_cache_decorators_are_allowed() -> None:
    code = ("from functools import lru_cache, cache\nimport functools\n\n"
            "def f(n):\n    @lru_cache(maxsize=None)\n    def a(k):\n        return k\n"
            "    @cache\n    def b(k):\n        return k\n"
            "    @functools.lru_cache\n    def c(k):\n        return k\n"
            "    return a(n) + b(n) + c(n)\n")
    assert rules_of(code) == set()


def test_annotations_and_docstrings_are_allowed() -> None:
    code = ('"""Module doc."""\nfrom __future__ import annotations\n\n'
            "def f(n: int, xs: list[int] | None = None) -> tuple[int, ...]:\n"
            '    """Doc."""\n    return (n,)\n')
    assert rules_of(code, props={"n": {}, "xs": {}}, required=["n"]) == set()


# ---------------------------------------------------------------- names and attributes

def test_shadowing_a_forbidden_builtin_with_a_parameter_is_fine() -> None:
    code = "def f(input, vars=1):\n    return input + vars\n"
    assert rules_of(code, props={"input": {}, "vars": {}}, required=["input"]) == set()


def test_every_forbidden_builtin_is_refused_even_uncalled() -> None:
    for name in sorted(policy.FORBIDDEN_BUILTINS - {"__import__"}):
        assert "static.builtin" in rules_of(f"def f(n):\n    g = {name}\n    return n\n"), name


def test_literal_format_strings_with_plain_fields_are_allowed() -> None:
    code = ('def f(n):\n    a = "{} {:.3f} {0} {name!r:>10}".format(n, 1.5, name="x")\n'
            '    b = f"{n:.2f} {n!r} {n:{5}}"\n    return a + b + format(n, "08b")\n')
    assert rules_of(code) == set()


def test_re_match_string_attribute_is_not_a_module() -> None:
    code = ("import re\n\ndef f(n):\n    m = re.match(r'\\d+', str(n))\n"
            "    return m.string if m else ''\n")
    assert rules_of(code) == set()


def test_sympify_of_data_and_math_literals_is_allowed() -> None:
    code = ("import sympy as sp\nfrom sympy.parsing.sympy_parser import parse_expr\n\n"
            "def f(n, expr='x**2 - 1'):\n    x = sp.Symbol('x')\n"
            "    a = sp.sympify(expr)\n    b = parse_expr('sin(x)**2 + cos(x)**2')\n"
            "    c = sp.S('1/3')\n    g = sp.lambdify(x, a + b)\n"
            "    return str(sp.simplify(b)), g(n), str(c), str(sp.Lambda(x, x))\n")
    assert rules_of(code, props={"n": {}, "expr": {}}, required=["n"]) == set()


def test_nonascii_identifiers_in_normal_form_are_allowed() -> None:
    code = "def f(n):\n    θ = n * 2\n    return θ\n"
    assert rules_of(code) == set()


def test_all_static_findings_are_reported_at_once() -> None:
    code = ("import os\n\ndef f(n):\n    eval('1')\n    x = n.__class__\n"
            "    return getattr(n, 'real')\n")
    findings = check_static(spec_of(code))
    assert {f.rule for f in findings} == {"static.import", "static.builtin", "static.dunder"}
    assert len(findings) >= 4
    assert all(f.line > 0 for f in findings)


def test_syntax_errors_are_findings_with_positions() -> None:
    findings = check_static(spec_of("def f(n):\n    return n +\n"))
    assert [f.rule for f in findings] == ["static.syntax"]
    assert findings[0].line == 2


def test_restricted_python_errors_become_findings() -> None:
    findings = check_restricted("def f(n):\n    def g():\n        nonlocal n\n    return n\n")
    assert findings and findings[0].rule == "restricted.compile"
    assert findings[0].line == 3


def test_policy_hash_is_stable_and_covers_the_runner_policy() -> None:
    assert policy.policy_hash() == policy.policy_hash()
    runner = policy.policy_for_runner()
    json.dumps(runner)
    assert runner["policy_hash"] == policy.policy_hash()
    assert "os" not in runner["allowed_modules"] and "sympy" in runner["allowed_modules"]
    assert {"string", "operator", "importlib"} <= set(runner["forbidden_modules"])


def test_packages_file_parsing() -> None:
    pkgs = policy.parse_packages_file(
        "# c\npython3=3.11.2-1  -\npython3-sympy=1.11.1-1  sympy\n"
        "python3-foo=1  foo,bar  # trailing\n")
    assert pkgs.modules == {"sympy", "foo", "bar"}
    assert pkgs.accepts("python3-foo") and pkgs.accepts("foo") and pkgs.accepts("bar")
    assert not pkgs.accepts("python3") or "python3" in pkgs.packages


# ------------------------------------------------- runtime guards, in the container

def run_guarded(sandbox: Sandbox, cases: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Call each function `f` under runner/guards.py and the audit hook, in the sandbox:
    attack code is never run on the host, not even in a test."""
    out: dict[str, Any] = {}
    for name, (code, kwargs) in cases.items():
        spec = FunctionSpec(name="f", description=name, code=code, parameters={
            "type": "object", "properties": {k: {} for k in kwargs}, "required": list(kwargs)})
        r = sandbox.call(spec, kwargs, restricted=True, audit=True)
        out[name] = ({"ok": True, "value": r.value, "events": r.audit} if r.ok else
                     {"ok": False, "error": r.error.type if r.error else "", "events": r.audit,
                      "message": r.error.message if r.error else ""})
    return out


BENIGN_RUNTIME = """
import sympy as sp
import numpy as np
import itertools, math
from fractions import Fraction

def f(n):
    x = sp.Symbol("x")
    out = [sorted(int(r) for r in sp.solve(x**2 - n * n, x)),
           str(sp.simplify(sp.sin(x)**2 + sp.cos(x)**2)), str(sp.factorint(360)),
           str(sp.integrate(x**2, (x, 0, 3))), str(sp.limit(sp.sin(x) / x, x, 0)),
           str(sp.series(sp.exp(x), x, 0, 3)), str(sp.sympify("x**2 + 1")),
           sp.lambdify(x, x**2)(3), str(sp.Rational(1, 3)), int(sp.totient(10)),
           str(sp.Matrix([[1, 2], [3, 4]]).inv())]
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    a[0, 0] = 5
    out += [np.linalg.inv(a).round(3).tolist(), float(np.linalg.det(a))]
    out += [len(list(itertools.combinations(range(5), 2))), str(Fraction(1, 3) + Fraction(1, 6)),
            math.comb(10, 3)]
    d = {"a": 1}
    d["b"] = 2
    d.setdefault("c", 3)
    xs = [3, 1, 2]
    xs.sort()
    total = 0
    for i, v in enumerate(xs):
        total += i * v
    t = tuple(v for v in xs)
    assert isinstance(t, tuple) and isinstance(t, (list, tuple)) and type(t) == tuple
    print("total", total, sorted(d), list(zip(xs, xs)), list(reversed(xs)))
    out.append("{} {:.2f}".format(total, 2.5))
    return out
"""


def test_benign_sympy_numpy_code_runs_under_the_guards_without_audit_events(
        sandbox: Sandbox) -> None:
    result = run_guarded(sandbox, {"benign": (BENIGN_RUNTIME, {"n": 2})})["benign"]
    assert result["ok"], result
    assert result["events"] == []
    assert result["value"][0] == [-2, 2] and result["value"][1] == "1"
    assert result["value"][-1] == "8 2.50"


def test_benign_corpus_passes_its_own_tests_under_the_guards(sandbox: Sandbox) -> None:
    cases: dict[str, tuple[str, dict[str, Any]]] = {}
    expected: dict[str, Any] = {}
    for path in BENIGN:
        spec = json.loads(path.read_text())
        for i, t in enumerate(spec["tests"]):
            if "expect" in t:
                key = f"{spec['name']}[{i}]"
                code = spec["code"].replace(f"def {spec['name']}(", "def f(", 1)
                cases[key] = (code, t["args"])
                expected[key] = t["expect"]
    results = run_guarded(sandbox, cases)
    for key, want in expected.items():
        got = results[key]
        assert got["ok"] and got["events"] == [], (key, got)
        assert json.dumps(got["value"]) == json.dumps(want) or \
            abs(got["value"] - want) < 1e-6, (key, got["value"], want)


RUNTIME_ATTACKS = [
    ("module_via_variable", "import fractions\ndef f():\n    m = fractions\n    return m.sys\n",
     "AttributeError", None),
    ("import_os", "def f():\n    import os\n    return os\n", "ImportError", "import"),
    ("from_numpy_load", "def f():\n    from numpy import load\n    return load\n",
     "ImportError", "import"),
    ("computed_format", "def f():\n    s = '{0.real}'\n    return s.format(1)\n", "ValueError",
     None),
    ("type_three_args", "def f():\n    return type('X', (), {})\n", "TypeError", None),
    ("numpy_module_os", "import numpy\ndef f():\n    x = numpy.core\n    return x.os\n",
     "AttributeError", None),
    ("sympify_reads_file", "import sympy\ndef f():\n    s = 'op' + 'en'\n"
     "    return sympy.sympify(s + \"('/etc/passwd').read()\")\n", "PermissionError", "open"),
    ("sympify_runs_system", "import sympy\ndef f():\n    s = chr(95) * 2\n"
     "    return sympy.sympify(s + \"import__('os').system('true')\")\n",
     "PermissionError", "os.system"),
    ("setattr_on_module", "import math\ndef f():\n    math.pi = 3\n", "TypeError", None),
    ("print_to_file", "def f():\n    print('x', file=1)\n", "TypeError", None),
]


@pytest.fixture(scope="module")
def runtime_attack_results(sandbox: Sandbox) -> dict[str, Any]:
    return run_guarded(sandbox, {name: (code, {}) for name, code, _e, _v in RUNTIME_ATTACKS})


@pytest.mark.parametrize("name,code,error,event", RUNTIME_ATTACKS, ids=lambda x: str(x)[:20])
def test_runtime_guards_refuse_what_the_static_gate_cannot_see(
        runtime_attack_results: dict[str, Any], name: str, code: str, error: str,
        event: str | None) -> None:
    result = runtime_attack_results[name]
    assert not result["ok"] and result["error"] == error, result
    if event is not None:
        assert [e["event"] for e in result["events"]] == [event], result
