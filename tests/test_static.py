"""The host-side vetting gate (shape, AST policy, RestrictedPython) as a specification.

Two corpora drive most of it:
- tests/corpus/malicious/*.py: one attack per file; the header says which rule must trip
  (`# expect: static.attribute`). A miss fails the suite.
- tests/corpus/benign/*.json: realistic math helpers (FunctionSpec JSON with tests). Every one must
  pass all host stages: a false positive fails the suite just like a miss.

Nothing here runs generated code: the host stages only parse and compile. What the same code does
at run time under the guards is tests/test_guards.py, in containers.
"""

from __future__ import annotations

import ast
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from sandbox import policy
from sandbox.errors import InvalidSpec
from sandbox.spec import FunctionSpec
from sandbox.vetting import vet
from sandbox.vetting.report import Finding
from sandbox.vetting.restricted import check_restricted
from sandbox.vetting.shape import check_shape
from sandbox.vetting.static import check_static

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


def static_report(spec: FunctionSpec) -> dict[str, list[Finding]]:
    """The three host stages, each run on its own (as vetting/__init__.py does)."""
    return {"shape": check_shape(spec), "static": check_static(spec),
            "restricted": check_restricted(spec.code)}


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


def spec_matching(code: str) -> FunctionSpec:
    """A spec for `code` whose parameters match the signature of its `def f` (the signature
    rules are tested on their own)."""
    fn = next(s for s in ast.parse(code).body if isinstance(s, ast.FunctionDef) and s.name == "f")
    args = [a.arg for a in fn.args.args]
    return spec_of(code, props={a: {} for a in args},
                   required=args[: len(args) - len(fn.args.defaults)])


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
    """Refused when the spec is built (InvalidSpec) or, at the latest, by the shape stage."""
    try:
        spec = FunctionSpec.from_dict({"name": "f", "description": "d",
                                       "code": "def f(n): pass", "parameters": params})
    except InvalidSpec:
        return
    assert "shape.parameters" in {f.rule for f in check_shape(spec)}


def test_shape_packages_must_be_in_the_image() -> None:
    ok = spec_of("def f(n):\n    return n\n", packages=["sympy", "python3-numpy", "mpmath"])
    assert check_shape(ok) == []
    stdlib = spec_of("def f(n):\n    return n\n", packages=["math", "fractions", "itertools"])
    assert check_shape(stdlib) == []  # they come with the interpreter
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
    findings = check_restricted("def f(n):\n    x = n\n    _y = x\n    return n\n")
    assert findings and findings[0].rule == "restricted.compile"
    assert findings[0].line == 3


NONLOCAL_HELPERS = [
    "def f(n):\n    count = 0\n    def bump(k):\n        nonlocal count\n        count += k\n"
    "    for i in range(n):\n        bump(i)\n    return count\n",
    "def f(n):\n    best = [0]\n    seen = 0\n    def walk(i, total):\n        nonlocal seen\n"
    "        seen += 1\n        if i == n:\n            best[0] = max(best[0], total)\n"
    "            return\n        walk(i + 1, total + i)\n        walk(i + 1, total)\n"
    "    walk(0, 0)\n    return [best[0], seen]\n",
    "def f(n):\n    a = b = 0\n    def step():\n        nonlocal a, b\n        a, b = b, a + n\n"
    "    step()\n    return a + b\n",
]


@pytest.mark.parametrize("code", NONLOCAL_HELPERS)
def test_nonlocal_closures_pass_every_host_stage(code: str) -> None:
    """`nonlocal` rebinds a name of the enclosing function (counters, backtracking): the
    static gate and the RestrictedPython policy both accept it."""
    assert all_findings(spec_of(code)) == []


def test_nonlocal_names_are_still_checked() -> None:
    code = "def f(n):\n    def g():\n        nonlocal _hidden\n    return n\n"
    assert {f.rule for f in all_findings(spec_of(code))} >= {"static.private-name",
                                                              "restricted.compile"}


def test_policy_hash_is_stable_and_covers_the_runner_policy() -> None:
    assert policy.policy_hash() == policy.policy_hash()
    runner = policy.policy_for_runner()
    json.dumps(runner)
    assert runner["policy_hash"] == policy.policy_hash()
    assert "os" not in runner["allowed_modules"] and "sympy" in runner["allowed_modules"]
    assert {"string", "operator", "importlib"} <= set(runner["forbidden_modules"])


# ---------------------------------------------------------------- false positives of the old gate

@pytest.mark.parametrize("code", [
    "INF = float('inf')\ndef f(n):\n    return min(n, INF)\n",
    "LIMIT = int(1e6)\ndef f(n):\n    return n < LIMIT\n",
    "import sympy\nX = sympy.Symbol('x')\ndef f(n):\n    return str(X + n)\n",
    "import sympy as sp\nA, B = sp.symbols('a b')\nF = sp.Function('g')\n"
    "def f(n):\n    return str(F(A) + B * n)\n",
    "PRIMES = (2, 3, 5)\ndef f(n):\n    return [p for p in PRIMES if n % p == 0]\n",
    "PRIMES: tuple[int, ...] = (2, 3, 5)\ndef f(n):\n    return n in PRIMES\n",
    "from fractions import Fraction\nHALF = Fraction(1, 2)\nROW = (0,) * 64\n"
    "def f(n, eps=float('1e-9')):\n    return n * HALF + eps + len(ROW)\n",
    "def f(n):\n    pair = (n, n + 1)\n"
    "    return '{0[0]}-{0[1]}'.format(pair) + '{p[0]}'.format(p=[n])\n",
    "def f(n):\n    '''Like __add__, but for one number; see also __radd__.'''\n    return n + 1\n",
    "def f(n):\n    if not isinstance(n, int):\n"
    "        raise TypeError('need an int, got ' + type(n).__name__)\n    return n\n",
    "def f(n):\n    return f.__name__ + f.__qualname__ + (f.__doc__ or '')\n",
    "import numpy as np\nfrom numpy.lib.stride_tricks import sliding_window_view\n"
    "def f(n):\n    return sliding_window_view(np.arange(n), 2).sum(axis=1).tolist()\n",
    "import numpy as np\ndef f(n):\n    x = np.arange(n)\n"
    "    return np.select([x > 1], [x]).tolist(), float(np.trace(np.eye(n)))\n",
    "import numpy as np\ndef f(n):\n    return np.ndarray((n, 2), float).shape\n",
    "import sympy as sp\ndef f(n):\n    lam = sp.Symbol('lambda')\n    x = sp.symbols('x')\n"
    "    return str(sp.expand('(x + 1)**2')), str(sp.solve(lam**2 - n, lam)), str(x)\n",
    "def f(n: 'int', xs: 'list[int] | None' = None) -> 'int':\n    return n\n",
])
def test_code_the_old_gate_refused_passes_every_host_stage(code: str) -> None:
    assert static_report(spec_matching(code)) == {"shape": [], "static": [], "restricted": []}


# ---------------------------------------------------------------- the classes the gate closes

@pytest.mark.parametrize("code,rule", [
    # constants: only CONSTANT_CALLS on constants, bounded repeats
    ("import sympy\nX = sympy.sympify('x')\ndef f(n):\n    return n\n", "static.toplevel"),
    ("X = list(range(10))\ndef f(n):\n    return n\n", "static.toplevel"),
    ("T = 'x' * 10 ** 9\ndef f(n):\n    return n\n", "static.toplevel"),
    ("X = float(1) + len('a')\ndef f(n):\n    return n\n", "static.toplevel"),
    ("float = int\nX = float(1)\ndef f(n):\n    return n\n", "static.toplevel"),
    ("def f(n, d=sum([1])):\n    return n\n", "static.default"),
    # dunders: only reads of the allowlist
    ("def f(n):\n    f.__name__ = 'g'\n    return n\n", "static.dunder"),
    ("def f(n):\n    return n.__class__.__name__\n", "static.dunder"),
    ("def f(n):\n    return hasattr(n, '__name__')\n", "static.hasattr"),
    ("def f(n):\n    return '__class__'\n", "static.dunder-string"),
    # string evaluation
    ("import sympy\ndef f(n):\n    return sympy.expand('ev' + 'al(1)')\n", "static.eval-sink"),
    ("import sympy as sp\ndef f(n):\n    return sp.Poly('__import__(\"os\")')\n",
     "static.eval-sink"),
    ("import typing\ndef f(n):\n    return typing.ForwardRef('open(\"x\")')\n",
     "static.eval-sink"),
    ("import mpmath\ndef f(n):\n    return mpmath.identify(n, ['open(\"x\")'])\n",
     "static.eval-sink"),
    ("def f(n: 'open(\"x\").read()'):\n    return n\n", "static.annotation"),
    ("def f(n: 'int' if True else 'str'):\n    return n\n", "static.annotation"),
    # raw memory
    ("def f(n):\n    return id(n)\n", "static.builtin"),
    ("from numpy.lib.stride_tricks import as_strided\ndef f(n):\n    return n\n",
     "static.attribute"),
    ("import numpy as np\ndef f(n):\n    return np.lib.stride_tricks.DummyArray\n",
     "static.attribute"),
    ("import numpy as np\ndef f(n):\n    return np.core.multiarray.scalar\n", "static.module-attr"),
    ("import numpy as np\ndef f(n):\n    return np.ndarray((1,), object, b'12345678')\n",
     "static.call-limit"),
    ("import numpy as np\ndef f(n):\n    return np.ndarray((1,), buffer=b'12345678')\n",
     "static.call-limit"),
    ("import numpy as np\ndef f(n):\n    return np.rec.fromstring(b'1')\n", "static.module-attr"),
    ("def f(n, a=None):\n    a.resize(9, refcheck=False)\n    return n\n", "static.raw-memory"),
    ("import array\ndef f(n):\n    return array.array('b').buffer_info()\n", "static.attribute"),
    # modules through attributes
    ("import json\ndef f(n):\n    return json.codecs\n", "static.module-attr"),
    ("import sympy\ndef f(n):\n    return sympy.parsing.sympy_parser.ast\n", "static.module-attr"),
    ("import numpy\ndef f(n):\n    return numpy.lib.format\n", "static.import"),
    ("import sympy\ndef f(n):\n    return sympy.core.numbers.mlib\n", "static.module-attr"),
    # class creation
    ("def f(n):\n    return type(int)('X', (), {})\n", "static.type-call"),
    ("import numbers\ndef f(n):\n    return numbers.ABCMeta('X', (), {})\n", "static.metaclass"),
    ("from typing import NamedTupleMeta\ndef f(n):\n    return n\n", "static.metaclass"),
    ("import sympy\ndef f(n):\n    return sympy.Function('g', (sympy.Basic,), {})\n",
     "static.call-limit"),
    ("import sympy\ndef f(n):\n    return sympy.Function('g', bases=(sympy.Basic,))\n",
     "static.call-limit"),
    # str.format
    ("import numpy as np\ndef f(n):\n    return np.str_.format('{0.real}', n)\n", "static.format"),
    ("def f(n):\n    return '{0[0].real}'.format([n])\n", "static.format"),
    ("def f(n):\n    return str.format('{0.imag}', n)\n", "static.format"),
])
def test_each_class_is_refused_by_its_rule(code: str, rule: str) -> None:
    assert rule in {f.rule for f in all_findings(spec_matching(code))}


# ---------------------------------------------------------------- bounded work on hostile code

@pytest.mark.parametrize("expr,rule", [
    ("-" * 600 + "n", "static.nesting"),
    ("~" * 620 + "n", "static.nesting"),
    ("not " * 300 + "n", "static.nesting"),
    ("n" + " + n" * 300, "static.nesting"),
    ("n" + ".real" * 300, "static.nesting"),
    ("(" * 300 + "n" + ")" * 300, "static.syntax"),
    ("[" * 300 + "n" + "]" * 300, "static.syntax"),
])
def test_deep_nesting_is_a_finding_never_a_crash(expr: str, rule: str) -> None:
    spec = spec_of(f"def f(n):\n    return {expr}\n")
    started = time.perf_counter()
    static = check_static(spec)
    restricted = check_restricted(spec.code)
    assert rule in {f.rule for f in static}
    assert restricted and restricted[0].rule in ("restricted.nesting", "restricted.compile")
    report = vet(None, spec)  # the host stages as vetting runs them: no "unanalysable"
    assert not report.passed
    assert not any(f.rule.endswith(".unanalysable") for f in report.findings)
    assert time.perf_counter() - started < 5


def test_nesting_inside_an_if_elif_chain_is_measured_too() -> None:
    chain = "".join(f"    {'if' if i == 0 else 'elif'} n == {i}:\n        return {i}\n"
                    for i in range(150))
    assert "static.nesting" in rules_of("def f(n):\n" + chain + "    return -1\n")


def test_ordinary_depth_is_far_below_the_limit() -> None:
    deepest = 0
    for path in BENIGN:
        stack: list[tuple[ast.AST, int]] = [(ast.parse(FunctionSpec.load(path).code), 1)]
        while stack:
            node, depth = stack.pop()
            deepest = max(deepest, depth)
            stack += [(c, depth + 1) for c in ast.iter_child_nodes(node)]
    assert deepest * 3 < policy.SIZE_LIMITS.max_ast_depth


# ---------------------------------------------------------------- the policy as data

def test_the_runner_policy_carries_every_runtime_rule() -> None:
    runner = policy.policy_for_runner()
    for key in ("allowed_dunder_attributes", "runtime_denied_values", "runtime_call_limits",
                "library_call_limits", "module_name_attributes", "module_name_collisions",
                "string_code_denied_names", "string_code_denied_keywords",
                "string_code_private_names", "dunder_string_pattern"):
        assert runner[key], key
    assert runner["audit"]["string_code_events"] == ["compile", "exec"]
    assert "id" in runner["forbidden_builtins"] and "id" not in runner["allowed_builtins"]
    assert "numpy.lib.stride_tricks" not in runner["forbidden_submodules"]
    assert set(runner["module_name_collisions"]).isdisjoint(runner["module_name_attributes"])


def test_the_restricted_policy_code_is_part_of_the_policy_hash() -> None:
    assert any(p.name == "restricted_policy.py" and p.exists() for p in policy._MECHANISM)
