"""The in-container second layer (runner/guards.py, value_checks.py, audit_hook.py,
restricted_policy.py) as a specification.

Attack code only ever runs inside containers: `Sandbox.call(spec, args, restricted=True,
audit=True)` runs it under the guards and the audit hook in a fresh child. On the host these tests
only compile code (never execute it) and feed benign data to the guards' pure helpers.

What is specified: each class of escape route named in the policy (string evaluation, raw memory,
modules reached through attributes, class creation, unguarded str.format, attribute lookups by
data, refused values reached without an attribute or item access) is refused by value at run
time, whatever name or path the code uses, and the false positives of the static gate run
cleanly (no audit event) under the guards. The value check is specified route by route: a
call's result, an iteration's item, an unpacked item, a parameter a library calls back with, a
function handed to library code (in a sandbox without the container list, so that those guards
alone are tested), plus the adversarial review's reproductions (tests/corpus/reproductions) and
an inventory of the image's library containers. What is not claimed: that the guards stop code
that has reached the interpreter's internals; the container is the boundary (README, trust
model).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from RestrictedPython.compile import compile_restricted_exec

from sandbox import Sandbox, policy
from sandbox.runner import audit_hook, guards, value_checks
from sandbox.runner.formats import format_field_problem
from sandbox.runner.restricted_policy import CALL_GUARDS, policy_class
from sandbox.spec import FunctionSpec
from sandbox.vetting.restricted import check_restricted

CORPUS = Path(__file__).parent / "corpus"
BENIGN = sorted((CORPUS / "benign").glob("*.json"))
RUNNER_POLICY = policy.policy_for_runner()


def nested_code(code: Any) -> list[Any]:
    """A code object and every code object nested in it."""
    out, todo = [], [code]
    while todo:
        co = todo.pop()
        out.append(co)
        todo += [c for c in co.co_consts if hasattr(c, "co_names")]
    return out


def names_of(code: Any) -> set[str]:
    return {n for co in nested_code(code) for n in co.co_names}


# ---------------------------------------------------------------- host: compile only

def test_allowed_dunders_compile_to_guarded_getattr() -> None:
    result = compile_restricted_exec(
        "def f(n):\n    return type(n).__name__ + f.__qualname__\n",
        policy=policy_class(policy.ALLOWED_DUNDER_ATTRIBUTES))
    assert result.errors == ()
    assert "_getattr_" in names_of(result.code)
    assert "__name__" not in names_of(result.code)  # read through the guard, not LOAD_ATTR


@pytest.mark.parametrize("code", [
    "def f(n):\n    return n.__class__\n",
    "def f(n):\n    n.__name__ = 'x'\n",
    "def f(n):\n    del n.__doc__\n",
    "def f(n):\n    return n._private\n",
])
def test_other_dunders_and_writes_stay_refused_by_restricted_python(code: str) -> None:
    result = compile_restricted_exec(code, policy=policy_class(policy.ALLOWED_DUNDER_ATTRIBUTES))
    assert result.errors and result.code is None


def test_policy_class_never_opens_private_names() -> None:
    result = compile_restricted_exec("def f(n):\n    return n._os\n",
                                     policy=policy_class(frozenset({"_os", "__name__"})))
    assert result.errors


def test_annotated_constants_compile_without_their_annotation() -> None:
    code = "PRIMES: tuple[int, ...] = (2, 3)\nX: int\n\ndef f(n: int) -> int:\n    return n\n"
    result = compile_restricted_exec(code, policy=policy_class(frozenset()))
    assert result.errors == () and result.code is not None
    assert "tuple" not in result.code.co_names  # the module-level annotation is never evaluated


def test_compile_function_uses_the_policy_and_runs_nothing() -> None:
    code = guards.compile_function("def f(n):\n    return type(n).__name__\n", RUNNER_POLICY,
                                   True)
    assert "_getattr_" in names_of(code)
    with pytest.raises(SyntaxError):
        guards.compile_function("def f(n):\n    return n.__class__\n", RUNNER_POLICY, True)


# ---------------------------------------------------------------- host: pure helpers, benign

@pytest.mark.parametrize("fmt,problem", [
    ("{0[0]}-{0[1]}", None), ("{p[0]} {p[key]}", None), ("{} {:.3f} {x!r:>10}", None),
    ("{0.real}", "0.real"), ("{0[0].imag}", "0[0].imag"), ("{0:{1.real}}", "1.real"),
])
def test_format_fields_index_is_fine_attribute_is_not(fmt: str, problem: str | None) -> None:
    assert format_field_problem(fmt) == problem


def audit_rules() -> Any:
    return audit_hook._AuditRules(RUNNER_POLICY)


@pytest.mark.parametrize("source", [
    "Symbol ('x' )**Integer (2 )+Integer (1 )",                        # sympify("x**2 + 1")
    "sin (Symbol ('x' ))/Symbol ('x' )+Float ('1.5' )+Rational (1, 3)",
    "Function ('f' )(Symbol ('x' ))",                                   # sympify("f(x)")
    "def _lambdifygenerated(_Dummy_22):\n    return select([greater(_Dummy_22, 0)], [1])\n",
    "lambda _cls, a, b: _tuple_new(_cls, (a, b))",                      # collections.namedtuple
    "import numpy; from numpy import *; from numpy.linalg import *",    # lambdify's namespace
    "list[int]",                                                        # a forward reference
])
def test_string_code_the_libraries_generate_passes_the_chokepoint(source: str) -> None:
    code = compile(source, "<string>", "exec")  # compiled to inspect, never executed
    assert audit_hook._bad_code(code, audit_rules()) == []
    assert audit_hook._bad_source(source, audit_rules()) == []


@pytest.mark.parametrize("source,bad", [
    ("open('/etc/passwd').read()", "open"),
    ("getattr(Symbol, 'func')", "getattr"),
    ("Symbol('x').func.mro()", "mro"),
    ("type('A', (), {})", "type"),
    ("load(x)", "load"),
    ("ndarray(a, b, c)", "ndarray"),
    ("as_strided(a)", "as_strided"),
    ("x._os", "_os"),
    ("'{0.gi_frame}'.format(g)", "'{0.gi_frame}'"),
    ("a.resize(9, refcheck=False)", "'refcheck'"),
    ("Function('f', __dict__=ns)", "'__dict__'"),
])
def test_string_code_naming_refused_things_is_caught_by_the_exec_check(source: str,
                                                                        bad: str) -> None:
    code = compile(source, "<string>", "eval")  # compiled to inspect, never executed
    assert bad in audit_hook._bad_code(code, audit_rules())


def test_compile_check_refuses_only_what_source_text_makes_unambiguous() -> None:
    r = audit_rules()
    assert audit_hook._bad_source("Symbol ('x' ).__class__", r) == ["__class__"]
    assert audit_hook._bad_source("x .gi_frame .f_back", r) == ["f_back", "gi_frame"]
    # parameters may be called anything: left to the exec check, which sees co_names only
    assert audit_hook._bad_source("def _lambdifygenerated(id, type):\n    return id + type\n",
                              r) == []
    assert audit_hook._bad_source("x" * (r.max_scanned + 1), r) == []  # left to the exec check


def test_module_code_is_recognised_by_its_file_not_its_name() -> None:
    r = audit_rules()
    assert r.module_code("<frozen importlib._bootstrap>")
    assert not r.module_code("<string>") and not r.module_code("<lambdifygenerated-1>")
    assert not r.module_code("/tmp/x.py")


def test_value_keys_name_the_defining_module() -> None:
    assert value_checks._value_key(json.dumps) == "json.dumps"
    assert value_checks._value_key(dict.fromkeys) == "builtins.dict.fromkeys"
    assert value_checks._value_key([].append) == "builtins.list.append"


def test_string_code_denied_names_spare_what_sympy_generates() -> None:
    denied = policy.string_code_denied_names()
    generated = {"Symbol", "Integer", "Float", "Rational", "Function", "Matrix", "sin", "cos",
                 "exp", "log", "sqrt", "pi", "E", "I", "oo", "select", "greater", "numpy",
                 "math", "mpmath", "scipy", "sympy", "Integral", "Abs", "int", "list"}
    assert not denied & generated
    assert {"open", "eval", "getattr", "type", "id", "os", "sys", "as_strided", "load",
            "ndarray", "mro", "gi_frame", "ABCMeta", "FunctionClass"} <= denied


def transformed(code: str) -> ast.Module:
    """The tree RestrictedPython compiles, after fnforge's policy class (nothing runs)."""
    policy_cls = policy_class(policy.ALLOWED_DUNDER_ATTRIBUTES)
    errors: list[str] = []
    tree = policy_cls(errors, [], {}).visit(ast.parse(code))
    assert errors == [], errors
    assert isinstance(tree, ast.Module)
    return tree


_GENERATED_CALLS = CALL_GUARDS | {"_getattr_", "_getmethod_", "_getitem_", "_getiter_", "_write_",
                                  "_unpack_sequence_", "_iter_unpack_sequence_", "_print_",
                                  "_print", "_check_", "_check_args_", "_check_kwargs_",
                                  "_type_"}

EVERY_KIND_OF_CALL = """
import math
import sympy
from functools import reduce


def helper(x):
    return x + 1


def f(n, *rest, scale=2, **options):
    g = helper
    values = [abs(n), math.sqrt(4), sympy.Symbol('x').diff(sympy.Symbol('x'))]
    values.append(max(n, 1, key=abs))
    values.append(pow(n, 2))
    values.append(g(n))
    values.append(helper(n))
    values.append(reduce(lambda a, b: a + b, [1, 2], 0))
    values.append((lambda: 0)())
    values.append(f.__name__)
    values.append(dict(**options))
    values.append(print(*rest))
    values.append(type(n)(3))
    values.append([k(1) for k in (abs, helper)])
    return values
"""


def test_every_call_goes_through_a_call_guard() -> None:
    """Whatever is called (a builtin, a method, a local alias, a call's result, a lambda), the
    call is compiled to a guard; only the code's own undecorated, never-rebound defs and the
    guards RestrictedPython generates are called directly."""
    tree = transformed(EVERY_KIND_OF_CALL)
    direct = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else None
            if name not in _GENERATED_CALLS and name != "helper":
                direct.append(ast.unparse(node))
    assert direct == []
    guards_used = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call)
                   and isinstance(n.func, ast.Name) and n.func.id in CALL_GUARDS}
    assert {"_call0_", "_call1_", "_call2_", "_call3_", "_call_", "_apply_"} <= guards_used


@pytest.mark.parametrize("code", [
    "def helper(x):\n    return x\nhelper = max\ndef f(n):\n    return helper(n)\n",
    "def helper(x):\n    return x\ndef f(helper):\n    return helper(1)\n",
    "def helper(x):\n    return x\ndef f(n):\n    global helper\n    return helper(n)\n",
    "from functools import lru_cache\n@lru_cache\ndef helper(x):\n    return x\n"
    "def f(n):\n    return helper(n)\n",
    "def helper(x):\n    return x\ndef f(n):\n    for helper in [max]:\n        pass\n"
    "    return helper(n)\n",
    "def sorted(x):\n    return x\ndef f(n):\n    return sorted(n)\n",
    "def helper(x):\n    return x\ndef f(n):\n    def helper(y):\n        return y\n"
    "    return helper(n)\n",
])
def test_a_name_bound_more_than_once_is_called_through_the_guard(code: str) -> None:
    tree = transformed(code)
    f = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "f")
    calls = [n for n in ast.walk(f) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
             and n.func.id in ("helper", "sorted")]
    assert calls == []


def test_parameters_of_defs_and_lambdas_are_checked_on_entry() -> None:
    tree = transformed('def f(a, b=1, *rest, k=2, **kw):\n    """Doc."""\n'
                       "    return lambda x, *y, **z: x\n")
    f = tree.body[0]
    assert isinstance(f, ast.FunctionDef)
    assert isinstance(f.body[0], ast.Expr)  # the docstring stays first
    text = ast.unparse(f)
    for name in ("a", "b", "k"):
        assert f"if _type_({name}) not in _safe_types_:\n        {name} = _check_({name})" in text
    assert "rest = _check_args_(*rest)" in text and "kw = _check_kwargs_(kw)" in text
    assert "(x := _check_(x)) is _check_" in text and "(y := _check_args_(*y))" in text
    assert "(z := _check_kwargs_(z))" in text


def test_with_targets_and_yield_values_are_checked() -> None:
    text = ast.unparse(transformed("import decimal\ndef f(n):\n    with decimal.localcontext()"
                                   " as ctx:\n        got = yield ctx\n    yield from g()\n"))
    assert "ctx = _check_(ctx)" in text
    assert "got = _check_((yield ctx))" in text and "_check_((yield from _call0_(g)))" in text


def test_nonlocal_compiles_and_every_other_refusal_stays() -> None:
    code = ("def f(n):\n    count = 0\n    def bump(k):\n        nonlocal count\n"
            "        count += k\n    for i in range(n):\n        bump(i)\n    return count\n")
    assert check_restricted(code) == []
    for refused in ("def f(n):\n    def g():\n        nonlocal _x\n    return n\n",
                    "def f(n):\n    _y = n\n    return n\n",
                    "def f(n):\n    exec('1')\n",
                    "def f(n):\n    return n.__class__\n",
                    "def f(n):\n    n.x += 1\n",
                    "def f(n):\n    match n:\n        case _:\n            return 1\n"):
        assert check_restricted(refused), refused


def test_augmented_assignment_to_a_name_compiles_natively() -> None:
    text = ast.unparse(transformed("def f(n):\n    total = 0\n    total += n\n    return total\n"))
    assert "total += n" in text and "_inplacevar_" not in text


def test_the_call_guards_read_no_global_and_name_the_generated_module() -> None:
    """The call guards run with globals of their own (`sympy.var` binds names in its caller's
    globals; namedtuple names a class's module after them) and read none of them."""
    import dis

    built = guards.guarded_builtins(RUNNER_POLICY)
    for name in sorted(CALL_GUARDS):
        guard = built[name]
        assert guard.__globals__["__name__"] == "fnforge_function"
        assert set(guard.__globals__["__builtins__"]) == {"__import__"}
        for code in nested_code(guard.__code__):
            loads = [i.argval for i in dis.get_instructions(code)
                     if i.opname in ("LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL")]
            assert loads == [], (name, code.co_name, loads)


@pytest.mark.parametrize("source,bad", [
    ("f.format(o, g)", "format"),
    ("t.format_map(m)", "format_map"),
    ("update_wrapper(a, b, assigned=names)", "update_wrapper"),
    ("wraps(b, assigned=names)(a)", "wraps"),
    ("u.basic_fns.get('op')", "basic_fns"),
    ("copy.dispatch_table", "dispatch_table"),
    ("np.ScalarType[6]", "ScalarType"),
])
def test_string_code_refuses_attribute_lookups_by_data_and_refused_containers(
        source: str, bad: str) -> None:
    code = compile(source, "<string>", "eval")  # compiled to inspect, never executed
    assert bad in audit_hook._bad_code(code, audit_rules())


def test_the_runner_receives_the_container_and_hook_rules() -> None:
    assert set(RUNNER_POLICY["runtime_denied_containers"]) == policy.RUNTIME_DENIED_CONTAINERS
    assert "__array_interface__" in RUNNER_POLICY["runtime_raw_memory_hooks"]
    assert set(RUNNER_POLICY["runtime_raw_memory_hooks"]) <= set(
        RUNNER_POLICY["runtime_array_hooks"])
    assert {"functools.update_wrapper", "functools.wraps"} <= set(
        RUNNER_POLICY["runtime_denied_values"])


# ---------------------------------------------------------------- containers

def call_guarded(sandbox: Sandbox,
                 cases: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Call each function `f` under the guards and the audit hook, in the sandbox."""
    out: dict[str, dict[str, Any]] = {}
    for name, (code, kwargs) in cases.items():
        spec = FunctionSpec.from_dict({
            "name": "f", "description": name, "code": code,
            "parameters": {"type": "object", "properties": {k: {} for k in kwargs},
                           "required": list(kwargs)}})
        r = sandbox.call(spec, kwargs, restricted=True, audit=True, timeout=30)
        out[name] = {"ok": r.ok, "value": r.value,
                     "error": r.error.type if r.error else None,
                     "message": r.error.message if r.error else "",
                     "events": [e.event for e in r.audit],
                     "details": [e.detail for e in r.audit]}
    return out


# name -> (code, the exception the guards raise, the audit events recorded)
RUNTIME_ATTACKS: dict[str, tuple[str, str, list[str]]] = {
    # string evaluation: one chokepoint, whatever the entry point
    "sympify_open": ("import sympy\ndef f():\n    return sympy.sympify('op' + \"en('/etc/pass"
                     "wd').read()\")\n", "PermissionError", ["exec"]),
    "sympify_dunder_import": ("import sympy\ndef f():\n    s = chr(95) * 2\n    return sympy."
                              "sympify(s + \"import__('os').system('true')\")\n",
                              "PermissionError", ["compile"]),
    "expand_string_dunder": ("import sympy\ndef f():\n    return sympy.expand(\"Symbol('x').\" + "
                             "chr(95) * 2 + 'class' + chr(95) * 2)\n", "PermissionError",
                             ["compile"]),
    "simplify_string_mro": ("import sympy\ndef f():\n    return sympy.simplify(\"Symbol('x')."
                            "func.mro()\")\n", "PermissionError", ["compile"]),
    "S_string_getattr": ("import sympy\ndef f():\n    return sympy.S(\"getattr(Symbol, 'func')\")"
                         "\n", "PermissionError", ["exec"]),
    "sympify_format_attribute": ("import sympy\ndef f():\n    return sympy.sympify(\"'{0.func}'."
                                 "format(Symbol)\")\n", "PermissionError", ["compile"]),
    "lambdify_string_open": ("import sympy\ndef f():\n    x = sympy.Symbol('x')\n    return sympy"
                             ".lambdify(x, \"open('/etc/passwd').read()\")(1)\n",
                             "PermissionError", ["exec"]),
    "lambdify_numpy_load": ("import sympy\ndef f():\n    x = sympy.Symbol('x')\n    g = sympy."
                            "Function('load')\n    return sympy.lambdify(x, g(x))('/etc/passwd')"
                            "\n", "PermissionError", ["exec"]),
    "lambdify_ndarray_buffer": ("import sympy\ndef f():\n    a, b, c = sympy.symbols('a b c')\n"
                                "    g = sympy.lambdify([a, b, c], sympy.Function('ndarray')(a, "
                                "b, c))\n    return g((1,), object, bytes(8))\n",
                                "PermissionError", ["exec"]),
    "string_annotation_open": ("import functools\ndef f():\n    def g(a: \"open('/etc/passwd')"
                               ".read()\"):\n        return a\n    return functools."
                               "singledispatch(g).register(g)\n", "PermissionError", ["exec"]),
    "forward_ref_open": ("import functools, typing\ndef f():\n    def g(a: typing.ForwardRef("
                         "\"open('/etc/passwd').read()\")):\n        return a\n    return "
                         "functools.singledispatch(g).register(g)\n", "PermissionError",
                         ["exec"]),
    "get_type_hints": ("import typing\ndef f():\n    return typing.get_type_hints\n",
                       "AttributeError", []),
    "mpmath_identify_open": ("import mpmath\ndef f():\n    return mpmath.identify(1.5, [\"open("
                             "'/etc/passwd').read()\"])\n", "PermissionError", ["exec"]),
    "sympify_function_namespace": ("import sympy\ndef f():\n    return sympy.sympify(\"Function("
                                   "'f', (Basic,), ns)\", locals={'ns': {'a': 1}})\n",
                                   "TypeError", []),
    # raw memory
    "as_strided_from_import": ("def f():\n    from numpy.lib.stride_tricks import as_strided\n"
                               "    return 1\n", "ImportError", ["import"]),
    "as_strided_attribute": ("import numpy as np\ndef f():\n    return np.lib.stride_tricks."
                             "as_strided\n", "AttributeError", []),
    "as_strided_reexported": ("import numpy as np\ndef f():\n    return np.lib.index_tricks."
                              "as_strided\n", "AttributeError", []),
    "dummy_array": ("import numpy as np\ndef f():\n    return np.lib.stride_tricks.DummyArray\n",
                    "AttributeError", []),
    "scalar_object_pointer": ("import numpy as np\ndef f():\n    return np.core.multiarray."
                              "scalar\n", "AttributeError", []),
    "scalar_through_alias": ("import numpy as np\ndef f():\n    return np.core.fromnumeric.mu."
                             "scalar\n", "AttributeError", []),
    "ndarray_buffer": ("import numpy as np\ndef f():\n    return np.ndarray((1,), object, "
                       "bytes(8))\n", "TypeError", []),
    "ndarray_buffer_keyword": ("import numpy as np\ndef f():\n    return np.ndarray((1,), dtype="
                               "object, buffer=bytes(8))\n", "TypeError", []),
    "ndarray_through_type": ("import numpy as np\ndef f():\n    return type(np.zeros(1))((1,), "
                             "object, bytes(8))\n", "TypeError", []),
    "ndarray_from_import": ("from numpy import ndarray\ndef f():\n    return ndarray((1,), "
                            "object, bytes(8))\n", "TypeError", []),
    "rec_fromstring": ("import numpy as np\ndef f():\n    return np.rec.fromstring(bytes(8), "
                       "dtype=[('a', 'O')])\n", "AttributeError", []),
    "recarray_buffer": ("import numpy as np\ndef f():\n    return np.recarray((1,), dtype=[('a', "
                        "'O')], buf=bytes(8))\n", "AttributeError", []),
    "core_records": ("import numpy as np\ndef f():\n    return np.core.records.fromstring\n",
                     "AttributeError", []),
    "resize_without_refcheck": ("import numpy as np\ndef f():\n    a = np.zeros(3)\n    a.resize"
                                "(10, refcheck=False)\n    return 1\n", "TypeError", []),
    "id_builtin": ("def f():\n    return id(f)\n", "NameError", []),
    "ctypes_attribute": ("import numpy as np\ndef f():\n    return np.zeros(3).ctypes\n",
                         "AttributeError", []),
    # modules reached through attributes
    "module_through_variable": ("import fractions\ndef f():\n    m = fractions\n    return m.sys"
                                "\n", "AttributeError", []),
    "module_numpy_core_sys": ("import numpy\ndef f():\n    x = numpy.core\n    return x.numeric."
                              "sys\n", "AttributeError", []),
    "module_alias_ast": ("import sympy\ndef f():\n    return sympy.parsing.sympy_parser.ast\n",
                         "AttributeError", []),
    "module_alias_libmp": ("import mpmath\ndef f():\n    return mpmath.ctx_base.libmp.backend\n",
                           "AttributeError", []),
    "import_os": ("def f():\n    import os\n    return os\n", "ImportError", ["import"]),
    # class creation
    "type_three_args": ("def f():\n    return type('X', (), {})\n", "TypeError", []),
    "type_of_int_three_args": ("def f():\n    return type(int)('X', (), {})\n", "TypeError", []),
    "type_of_type_of_type": ("def f():\n    t = type(type(type(1)))\n    return t('X', (), {})\n",
                             "TypeError", []),
    "metaclass_abcmeta": ("import numbers\ndef f():\n    return numbers.ABCMeta\n",
                          "AttributeError", []),
    "metaclass_named_tuple_meta": ("import typing\ndef f():\n    return typing.NamedTupleMeta\n",
                                   "AttributeError", []),
    "metaclass_sympy_attribute": ("import sympy\ndef f():\n    return sympy.core.function."
                                  "FunctionClass\n", "AttributeError", []),
    "metaclass_through_type": ("import sympy\ndef f():\n    return type(sympy.Symbol)('X', (), "
                               "{})\n", "TypeError", []),
    "metaclass_of_a_function_class": ("import sympy\ndef f():\n    return type(sympy.Function('g'"
                                      "))('X', (), {})\n", "TypeError", []),
    "function_three_args": ("import sympy\ndef f():\n    return sympy.Function('f', (sympy.Basic"
                            ",), {})\n", "TypeError", []),
    "function_bases_keyword": ("import sympy\ndef f():\n    return sympy.symbols('f', cls=sympy."
                               "Function, bases=(sympy.Basic,))\n", "TypeError", []),
    "function_from_import": ("from sympy import Function, Basic\ndef f():\n    return Function("
                             "'f', (Basic,), {})\n", "TypeError", []),
    "kwargs_computed_dunder": ("def f():\n    return dict(**{chr(95) * 2 + 'x': 1})\n",
                               "TypeError", []),
    # str.format
    "np_str_unbound_format": ("import numpy as np\ndef f():\n    return np.str_.format('{0.real}'"
                              ", 1)\n", "ValueError", []),
    "np_str_type_format": ("import numpy as np\ndef f():\n    return type(np.str_('a')).format("
                           "'{0.real}', 1)\n", "ValueError", []),
    "computed_format": ("def f():\n    s = '{0.real}'\n    return s.format(1)\n", "ValueError",
                        []),
    "setattr_on_module": ("import math\ndef f():\n    math.pi = 3\n", "TypeError", []),
    "print_to_file": ("def f():\n    print('x', file=1)\n", "TypeError", []),
}

RUNTIME_BENIGN: dict[str, tuple[str, dict[str, Any], Any]] = {
    "type_name": ("def f(n):\n    return type(n).__name__ + ' ' + (lambda: 0).__name__ + ' ' + str("
                  "type(int) == type) + str(isinstance(int, type))\n", {"n": 3},
                  "int <lambda> TrueTrue"),
    "index_format": ("def f():\n    pair = (1, 2)\n    return '{0[0]}-{0[1]}'.format(pair) + '{}'"
                     ".format(3) + str.format('{0[1]}', 'ab')\n", {}, "1-23b"),
    "module_constants": ("import sympy\nINF = float('inf')\nLIMIT = int(1e6)\nX = sympy.Symbol("
                         "'x')\nPRIMES: tuple[int, ...] = (2, 3, 5)\nA, B = sympy.symbols('a b')\n"
                         "def f(n):\n    '''Like __add__ but slower.'''\n    return [min(n, INF)"
                         ", n < LIMIT, str(X + n + A * B), [p for p in PRIMES if n % p == 0]]\n",
                         {"n": 10}, [10, True, "a*b + x + 10", [2, 5]]),
    "sliding_window_view": ("import numpy as np\nfrom numpy.lib.stride_tricks import sliding_"
                            "window_view\ndef f(n):\n    return sliding_window_view(np.arange(n), "
                            "2).sum(axis=1).tolist()\n", {"n": 5}, [1, 3, 5, 7]),
    "numpy_names_that_are_module_names": (
        "import numpy as np\ndef f():\n    x = np.arange(4)\n    return [np.select([x > 1], [x])."
        "tolist(), float(np.trace(np.eye(3))), isinstance(x, np.ndarray), type(x) == np.ndarray, "
        "type(x) is np.ndarray, np.ndarray((2,)).shape, x.copy().tolist()]\n", {},
        [[0, 0, 2, 3], 3.0, True, True, True, [2], [0, 1, 2, 3]]),
    "sympy_function": (
        "import sympy as sp\nfrom sympy import Function\ndef f():\n    x = sp.Symbol('x')\n"
        "    g = sp.Function('g')\n    h = Function('h', real=True)\n    e = g(x).diff(x) + h(x)\n"
        "    sol = sp.dsolve(sp.Eq(g(x).diff(x), g(x)), g(x))\n    fs = sp.symbols('u v', cls=sp."
        "Function)\n    return [str(e), e.has(sp.Function), len(e.atoms(sp.Function)), "
        "isinstance(g(x), sp.Function), str(sol), str(fs), str(sp.sympify('q(x) + r(x, y)'))]\n",
        {}, ["h(x) + Derivative(g(x), x)", True, 2, True, "Eq(g(x), C1*exp(x))", "(u, v)",
             "q(x) + r(x, y)"]),
    "string_evaluation_on_data": (
        "import sympy as sp, mpmath, collections, typing\ndef f():\n    x = sp.Symbol('x')\n"
        "    e = sp.sympify('x**2 + sin(x) + 1/3')\n    h = sp.lambdify(sp.Function('q')(x), "
        "sp.Function('q')(x) ** 2)\n    p = sp.lambdify(x, sp.Piecewise((x, x > 0), (-x, True)))\n"
        "    P = collections.namedtuple('P', 'a b')\n    def g(a: int, b: 'list[int]') -> 'int':\n"
        "        return a\n    return [str(e), h(3), float(p(-2.0)), str(sp.expand('(x+1)**2')), "
        "str(sp.simplify('sin(x)**2+cos(x)**2')), str(mpmath.identify(0.5)), str(sp.nsimplify("
        "'0.333333333333')), P(1, 2).b, g(1, [2]), dispatch()]\n"
        "def dispatch():\n    import functools\n    d = functools.singledispatch(lambda v: 'any')"
        "\n    def h(v: 'int') -> 'str':\n        return 'int'\n    d.register(h)\n"
        "    return [d(3), d('s')]\n", {},
        ["x**2 + sin(x) + 1/3", 9, 2.0, "x**2 + 2*x + 1", "1", "(1/2)", "1/3", 2, 1,
         ["int", "any"]]),
    "resize_and_reshape": ("import numpy as np\ndef f():\n    a = np.zeros(4)\n    a.resize(2, 2)"
                           "\n    return [a.shape, np.resize(np.arange(3), 5).tolist()]\n", {},
                           [[2, 2], [0, 1, 2, 0, 1]]),
    "dunder_reads_are_strings": ("import math\ndef f():\n    return [type(math.sqrt).__qualname__"
                                 ", len(math.sqrt.__doc__ or '') > 0, math.__name__]\n", {},
                                 ["builtin_function_or_method", True, "math"]),
}


@pytest.fixture(scope="module")
def attack_results(sandbox: Sandbox) -> dict[str, dict[str, Any]]:
    return call_guarded(sandbox, {name: (code, {})
                                  for name, (code, _e, _v) in RUNTIME_ATTACKS.items()})


@pytest.fixture(scope="module")
def benign_results(sandbox: Sandbox) -> dict[str, dict[str, Any]]:
    return call_guarded(sandbox, {name: (code, args)
                                  for name, (code, args, _v) in RUNTIME_BENIGN.items()})


@pytest.mark.parametrize("name", sorted(RUNTIME_ATTACKS))
def test_runtime_guards_refuse_each_class_by_value(attack_results: dict[str, dict[str, Any]],
                                                   name: str) -> None:
    _code, error, events = RUNTIME_ATTACKS[name]
    result = attack_results[name]
    assert not result["ok"] and result["error"] == error, result
    assert result["events"] == events, result


def test_refused_string_code_is_recorded_with_its_source(
        attack_results: dict[str, dict[str, Any]]) -> None:
    details = attack_results["sympify_open"]["details"]
    assert "open" in details[0] and "/etc/passwd" in details[0]
    assert len(details[0]) < 600  # bounded


@pytest.mark.parametrize("name", sorted(RUNTIME_BENIGN))
def test_static_false_positives_run_cleanly_under_the_guards(
        benign_results: dict[str, dict[str, Any]], name: str) -> None:
    result = benign_results[name]
    assert result["ok"] and result["events"] == [], result
    assert result["value"] == RUNTIME_BENIGN[name][2]


def test_benign_corpus_passes_its_own_tests_under_the_guards(sandbox: Sandbox) -> None:
    cases: dict[str, tuple[str, dict[str, Any]]] = {}
    expected: dict[str, Any] = {}
    for path in BENIGN:
        spec = json.loads(path.read_text())
        for i, t in enumerate(spec["tests"]):
            if "expect" in t:
                key = f"{spec['name']}[{i}]"
                cases[key] = (spec["code"].replace(f"def {spec['name']}(", "def f(", 1),
                              t["args"])
                expected[key] = t["expect"]
    results = call_guarded(sandbox, cases)
    for key, want in expected.items():
        got = results[key]
        assert got["ok"] and got["events"] == [], (key, got)
        assert json.dumps(got["value"]) == json.dumps(want) or \
            abs(got["value"] - want) < 1e-6, (key, got["value"], want)


# ---------------------------------------------------------------- containers: values obtained
# without an attribute, item or import (call results, iteration, unpacking, callbacks)

REPRODUCTIONS = sorted((CORPUS / "reproductions").glob("*.json"))
"""The adversarial review's specs (/work/scratch-attack): the real `type` out of
`sympy.strategies.util.basic_fns`, a class with an `__array_interface__` over any address, the
real builtins through a sympy function's globals; and `str.format` through sympify's locals."""


@pytest.mark.parametrize("path", REPRODUCTIONS, ids=lambda p: p.stem)
def test_vetting_rejects_each_reproduction(sandbox: Sandbox, path: Path) -> None:
    report = sandbox.vet(FunctionSpec.load(path), use_cache=False)
    assert not report.passed


_CONTAINER_LEAVES = {p.rsplit(".", 1)[-1] for p in policy.RUNTIME_DENIED_CONTAINERS}


@pytest.fixture(scope="module")
def bare_sandbox() -> Iterator[Sandbox]:
    """A sandbox whose runner policy leaves out the container list (RUNTIME_DENIED_CONTAINERS
    and their names): there the call, iteration, unpacking and parameter guards alone must keep
    the real `type` (and the other refused values in library containers) out of the code."""
    original = policy.policy_for_runner

    def bare() -> dict[str, Any]:
        data = original()
        attrs = {module: [n for n in names if n not in _CONTAINER_LEAVES]
                 for module, names in data["forbidden_module_attributes"].items()}
        return {**data, "runtime_denied_containers": [],
                "forbidden_module_attributes": attrs}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sandbox.runtime.policy_for_runner", bare)
        with Sandbox(pool_size=1) as sb:
            yield sb


_FNS = "import functools\nimport sympy\nfrom sympy.strategies.util import basic_fns\n\n"
_D = "    d = chr(95) * 2\n"

BARE_ATTACKS: dict[str, str] = {
    # call results
    "dict_get": "def f():\n    return basic_fns.get('op')\n",
    "dict_get_bound_method": "def f():\n    getter = basic_fns.get\n    return getter('op')\n",
    "dict_pop": "def f():\n    return basic_fns.pop('op')\n",
    "dict_setdefault": "def f():\n    return basic_fns.setdefault('op')\n",
    "list_pop": "def f():\n    return list(basic_fns.values()).pop(0)\n",
    "next_iter_values": "def f():\n    return next(iter(basic_fns.values()))\n",
    "min_of_values": "def f():\n    return min(basic_fns.values(), key=str)\n",
    "dict_built_by_zip": "def f():\n    return dict(zip(['t'], basic_fns.values()))['t']\n",
    "filter_none_item": "def f():\n    return list(filter(None, basic_fns.values()))[0]\n",
    # iteration, comprehensions, unpacking
    "for_values": "def f():\n    for v in basic_fns.values():\n        return v\n",
    "for_items_unpacked": "def f():\n    for k, v in basic_fns.items():\n        return v\n",
    "list_comprehension": "def f():\n    return [v for v in basic_fns.values()]\n",
    "dict_comprehension": "def f():\n    return {k: v for k, v in basic_fns.items()}\n",
    "generator_expression": "def f():\n    return list(v for v in basic_fns.values())[0]\n",
    "star_unpacking": "def f():\n    first, *rest = basic_fns.values()\n    return first\n",
    "popitem_unpacked": "def f():\n    k, v = dict(reversed(list(basic_fns.items()))).popitem()\n"
                        "    return v\n",
    "dict_keys_metaclass": "import copy\ndef f():\n    return [k for k in copy.dispatch_table]"
                           "\n",
    # values library code hands to callbacks
    "reduce_lambda": "def f():\n    return functools.reduce(lambda acc, v: v, basic_fns.values(),"
                     " 0)\n",
    "map_lambda": "def f():\n    return list(map(lambda v: v, basic_fns.values()))\n",
    "map_star_lambda": "def f():\n    return list(map(lambda *a: a, basic_fns.values()))\n",
    "sorted_key": "def f():\n    return sorted(basic_fns.values(), key=lambda v: 0)\n",
    "filter_lambda": "def f():\n    return list(filter(lambda v: True, basic_fns.values()))\n",
    # function-likes the code hands to library code are called through the guard
    "map_bound_method": "def f():\n    return list(map(basic_fns.get, ['op']))\n",
    "nested_maps": "def f():\n    return [list(m) for m in map(map, [basic_fns.get], [['op']])]\n",
    "reduce_method_descriptor": "def f():\n    return functools.reduce(dict.get, ['op'], "
                                "basic_fns)\n",
    "partial_of_bound_method": "def f():\n    return functools.partial(basic_fns.get, 'op')()\n",
    "def_callback": "def keep(v):\n    return v\n\ndef f():\n    return list(map(keep, "
                    "basic_fns.values()))\n",
    "memoryview_through_scalar_type": "import numpy as np\ndef f():\n    return [t for t in "
                                      "np.ScalarType if t.__name__ == 'memoryview']\n",
    # a class made by string-compiled code with the real type: refused as a result
    "hook_class_from_sympify": "def f():\n" + _D + "    ns = {d + 'array_interface' + d: {"
                               "'data': (0, False), 'shape': (1,), 'typestr': '|u1', "
                               "'version': 3}}\n    names = dict(zip(['maker'], basic_fns."
                               "values()))\n    names['ns'] = ns\n    return sympy.sympify("
                               "\"maker('V', (Basic,), ns)\", locals=names)\n",
}


@pytest.fixture(scope="module")
def bare_results(bare_sandbox: Sandbox) -> dict[str, dict[str, Any]]:
    cases: dict[str, tuple[str, dict[str, Any]]] = {
        name: (_FNS + code, {}) for name, code in BARE_ATTACKS.items()}
    for path in REPRODUCTIONS:
        spec = json.loads(path.read_text())
        if "basic_fns" in spec["code"]:
            code = spec["code"].replace(f"def {spec['name']}(", "def f(", 1)
            cases[f"reproduction_{path.stem}"] = (code, {"n": 1})
    return call_guarded(bare_sandbox, cases)


@pytest.mark.parametrize("name", [*sorted(BARE_ATTACKS), *sorted(
    f"reproduction_{p.stem}" for p in REPRODUCTIONS if "basic_fns" in p.read_text())])
def test_values_never_pass_unchecked_without_the_container_list(
        bare_results: dict[str, dict[str, Any]], name: str) -> None:
    """However the code gets a value out of a library container (a call's result, an
    iteration, an unpacking, a callback's parameter), the value check refuses the real
    `type`, a metaclass, a refused builtin and a class with an array hook."""
    result = bare_results[name]
    assert not result["ok"] and result["error"] == "AttributeError", result
    assert "not available in the fnforge sandbox" in result["message"], result


GUARDED_CALL_ATTACKS: dict[str, tuple[str, str | None, list[str]]] = {
    "type_as_a_call_result": ("import typing\ndef f():\n    return typing.get_origin(typing."
                              "Type)\n", "AttributeError", []),
    "type_alias_calls_its_origin": ("def f():\n    return type[int]('V', (object,), {})\n",
                                    "TypeError", []),
    "tuple_alias_calls_the_guarded_tuple": ("def f():\n    return str(tuple[int, ...]([1, 2]))"
                                            "\n", None, []),
    "type_through_a_wrapped_callback": ("import typing\ndef f():\n    return list(map(typing."
                                        "get_origin, [typing.Type]))\n", "AttributeError", []),
    "type_through_a_partial": ("import functools, typing\ndef f():\n    return functools."
                               "partial(typing.get_origin, typing.Type)()\n",
                               "AttributeError", []),
    "type_through_nested_maps": ("import typing\ndef f():\n    inner = map(map, [typing."
                                 "get_origin], [[typing.Type]])\n    return [list(m) for m in "
                                 "inner]\n", "AttributeError", []),
    "function_class_through_iteration": ("import sympy\nfrom sympy.core.core import all_classes"
                                         "\ndef f():\n    for c in all_classes:\n        if c."
                                         "__name__ == 'Function':\n            return c('g', "
                                         "(sympy.Basic,), {})\n", "TypeError", []),
    "update_wrapper": ("import functools\ndef f():\n    return functools.update_wrapper\n",
                       "AttributeError", []),
    "wraps_import": ("from functools import wraps\ndef f():\n    return wraps\n",
                     "ImportError", ["import"]),
    "basic_fns_import": ("from sympy.strategies.util import basic_fns\ndef f():\n    return 1\n",
                         "ImportError", ["import"]),
    "expr_fns_attribute": ("import sympy.strategies.util\ndef f():\n    m = [sympy.strategies]"
                           "[0]\n    return m.util.expr_fns\n", "AttributeError", []),
    "scalar_type": ("import numpy as np\ndef f():\n    return np.ScalarType\n",
                    "AttributeError", []),
    "dispatch_table": ("import copy\ndef f():\n    return copy.dispatch_table\n",
                       "AttributeError", []),
    "format_through_sympify_locals": ("import sympy\ndef f():\n    d = chr(95) * 2\n    return "
                                      "str(sympy.sympify('t.format(o)', locals={'t': '{0.' + d "
                                      "+ 'class' + d + '}', 'o': sympy.Symbol('x')}))\n",
                                      "PermissionError", ["compile"]),
    "format_map_through_sympify_locals": ("import sympy\ndef f():\n    return str(sympy.sympify"
                                          "('t.format_map(m)', locals={'t': '{o.real}', 'm': "
                                          "{'o': 1}}))\n", "PermissionError", ["compile"]),
    "get_origin_in_string_code": ("import sympy, typing\ndef f():\n    return sympy.sympify("
                                  "'t.get_origin(t.Type)', locals={'t': typing})\n",
                                  "PermissionError", ["compile"]),
    "format_through_lambdify": ("import sympy\ndef f():\n    x = sympy.Symbol('x')\n    g = "
                                "sympy.Function('format')\n    return sympy.lambdify(x, g(x))"
                                "('{0.real}')\n", "PermissionError", ["exec"]),
}


@pytest.fixture(scope="module")
def guarded_call_results(sandbox: Sandbox) -> dict[str, dict[str, Any]]:
    cases: dict[str, tuple[str, dict[str, Any]]] = {
        name: (code, {}) for name, (code, _e, _v) in GUARDED_CALL_ATTACKS.items()}
    for path in REPRODUCTIONS:
        spec = json.loads(path.read_text())
        cases[f"reproduction_{path.stem}"] = (
            spec["code"].replace(f"def {spec['name']}(", "def f(", 1), {"n": 1})
    return call_guarded(sandbox, cases)


@pytest.mark.parametrize("name", sorted(GUARDED_CALL_ATTACKS))
def test_the_call_guard_and_the_container_list_refuse_each_route(
        guarded_call_results: dict[str, dict[str, Any]], name: str) -> None:
    _code, error, events = GUARDED_CALL_ATTACKS[name]
    result = guarded_call_results[name]
    assert result["ok"] is (error is None) and result["error"] == error, result
    assert result["events"] == events, result


@pytest.mark.parametrize("path", REPRODUCTIONS, ids=lambda p: p.stem)
def test_each_reproduction_fails_with_the_guards_refusal(
        guarded_call_results: dict[str, dict[str, Any]], path: Path) -> None:
    result = guarded_call_results[f"reproduction_{path.stem}"]
    assert not result["ok"], result
    assert result["error"] in ("ImportError", "PermissionError"), result
    assert result["events"] in (["import"], ["compile"]), result


CALLBACKS_BENIGN: dict[str, tuple[str, Any]] = {
    "reduce_and_map": ("import functools, math\ndef f():\n    xs = [12, 18, 30]\n    return ["
                       "functools.reduce(math.gcd, xs), functools.reduce(lambda a, b: a + b, xs),"
                       " list(map(abs, [-1, 2])), sorted(xs, key=lambda v: -v), list(filter("
                       "None, [0, 1, 2])), max(xs, key=abs), functools.reduce(max, xs)]\n",
                       [6, 60, [1, 2], [30, 18, 12], [1, 2], 30, 30]),
    "functions_as_values": ("import functools, math\ndef f():\n    ops = {'gcd': math.gcd}\n"
                            "    pick = ops.get('lcm', math.lcm)\n    comb = functools.partial("
                            "math.comb, 5)\n    return [pick(4, 6), comb(2), comb.func(4, 2), "
                            "pick.__name__, type(pick).__name__, pick == math.lcm, [g.__name__ "
                            "for g in sorted([math.gcd, math.lcm], key=lambda g: g(4, 6))]]\n",
                            [12, 10, 6, "lcm", "builtin_function_or_method", True,
                             ["gcd", "lcm"]]),
    "numpy_and_mpmath_callbacks": ("import math\nimport mpmath\nimport numpy as np\ndef f():\n"
                                   "    v = np.vectorize(math.gcd)(np.array([4, 6, 9]), 6)\n"
                                   "    q = mpmath.quad(mpmath.sin, [0, mpmath.pi])\n    r = "
                                   "np.apply_along_axis(np.sum, 1, np.ones((2, 3)))\n    return "
                                   "[v.tolist(), round(float(q), 6), r.tolist(), float(mpmath."
                                   "findroot(mpmath.cos, 1.5))]\n",
                                   [[2, 6, 3], 2.0, [3.0, 3.0], 1.5707963267948966]),
    "module_named_after_the_generated_code": (
        "import collections, typing, sympy\ndef f():\n    P = collections.namedtuple('P', 'a b')"
        "\n    T = typing.NamedTuple('T', [('x', int)])\n    z = sympy.var('zz')\n    return "
        "[repr(P(1, 2)), T(3).x, str(z), str(zz + 1)]\n", {},
    ),
    "generators_with_and_closures": (
        "import decimal\ndef f():\n    def gen():\n        got = yield 1\n        yield got * 2"
        "\n    g = gen()\n    first = next(g)\n    second = g.send(5)\n    with decimal."
        "localcontext() as ctx:\n        ctx.prec = 5\n        third = str(decimal.Decimal(1) / "
        "3)\n    total = 0\n    def add(k):\n        nonlocal total\n        total += k\n"
        "    for i in range(4):\n        add(i)\n    args = (1, 2)\n    kw = {'sep': '-'}\n"
        "    return [first, second, third, total, max(*args), '{}{sep}{}'.format(*args, **kw)]\n",
        [1, 10, "0.33333", 6, 2, "1-2"]),
}
CALLBACKS_BENIGN["module_named_after_the_generated_code"] = (
    CALLBACKS_BENIGN["module_named_after_the_generated_code"][0],
    ["P(a=1, b=2)", 3, "zz", "zz + 1"])


@pytest.fixture(scope="module")
def callback_results(sandbox: Sandbox) -> dict[str, dict[str, Any]]:
    return call_guarded(sandbox, {name: (code, {})
                                  for name, (code, _v) in CALLBACKS_BENIGN.items()})


@pytest.mark.parametrize("name", sorted(CALLBACKS_BENIGN))
def test_callbacks_and_functions_as_values_still_work(
        callback_results: dict[str, dict[str, Any]], name: str) -> None:
    result = callback_results[name]
    assert result["ok"] and result["events"] == [], result
    assert result["value"] == CALLBACKS_BENIGN[name][1]


_INVENTORY = """
import json, sys, types
import sympy, numpy, mpmath
import math, cmath, fractions, decimal, numbers, statistics, random, itertools, functools
import collections, collections.abc, heapq, bisect, array, copy, re, typing
import numpy.lib.stride_tricks
allowed = set(ALLOWED)
def ok(name):
    parts = name.split('.')
    return parts[0] in allowed and not any(p.startswith('_') for p in parts) and not any(
        name == s or name.startswith(s + '.') for s in FORBIDDEN_SUBMODULES)
metas, aliases = set(), []
for modname, mod in sorted(sys.modules.items()):
    if not isinstance(mod, types.ModuleType) or not ok(modname):
        continue
    for attr, value in list(vars(mod).items()):
        if attr.startswith('_'):
            continue
        if isinstance(value, type) and issubclass(value, type):
            metas.add(attr)
        elif isinstance(value, types.ModuleType) and not ok(value.__name__):
            aliases.append([modname, attr, value.__name__])
print(json.dumps({"metaclasses": sorted(metas), "aliases": aliases}))
"""


def test_inventory_of_the_image_metaclasses_and_module_aliases(sandbox: Sandbox) -> None:
    """Every public metaclass of the image's allowed modules is named in METACLASS_NAMES (the
    static gate refuses the name; the guards refuse every metaclass by value anyway), and every
    public attribute that is a module the code may not import is refused by name statically,
    unless its name is an ordinary attribute elsewhere (MODULE_NAME_COLLISIONS: left to the
    run-time value check)."""
    head = (f"ALLOWED = {sorted(policy.allowed_modules())!r}\n"
            f"FORBIDDEN_SUBMODULES = {sorted(policy.FORBIDDEN_SUBMODULES)!r}\n")
    result = sandbox.run(head + _INVENTORY, timeout=60)
    assert result.ok, result.stderr[-2000:]
    inventory = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(inventory["metaclasses"]) <= policy.METACLASS_NAMES | {"type"}
    refused = policy.module_name_attributes() | policy.DANGEROUS_ATTRIBUTES | \
        policy.MODULE_NAME_COLLISIONS
    missed = [a for a in inventory["aliases"]
              if a[1] not in refused and a[1] not in policy.FORBIDDEN_MODULE_ATTRIBUTES.get(
                  a[0], frozenset())]
    assert missed == []


def test_lambdas_in_a_comprehension_iterable_check_their_parameters_without_walrus() -> None:
    """Python refuses `:=` anywhere in a comprehension's iterable, nested lambdas included:
    there a lambda's parameters are checked by an inner lambda instead."""
    code = ("def f(xs):\n    return [g for g in sorted(xs, key=lambda g, *a, k=1, **kw: g)]\n")
    tree = transformed(code)
    compile(tree, "<test>", "exec")  # compiles, nothing runs
    text = ast.unparse(tree)
    assert ":=" not in text
    assert "(lambda g, *a, k, **kw: g)(_check_(g), *_check_args_(*a), k=_check_(k), " \
           "**_check_kwargs_(kw))" in text


_CONTAINER_INVENTORY = """
import builtins, contextlib, importlib, io, json, pkgutil, sys, types, warnings
import sympy, numpy, mpmath
import math, cmath, fractions, decimal, numbers, statistics, random, itertools, functools
import collections, collections.abc, heapq, bisect, array, copy, re, typing
warnings.simplefilter('ignore')
allowed = set(ALLOWED)
def ok(name):
    parts = name.split('.')
    return parts[0] in allowed and not any(p.startswith('_') for p in parts) and not any(
        name == s or name.startswith(s + '.') for s in FORBIDDEN_SUBMODULES)
for package in (sympy, numpy, mpmath):  # every allowed submodule the code could import
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):
        if ok(info.name) and 'tests' not in info.name.split('.'):
            with contextlib.suppress(BaseException), contextlib.redirect_stdout(io.StringIO()), \\
                    contextlib.redirect_stderr(io.StringIO()):
                importlib.import_module(info.name)
denied_builtins = {id(getattr(builtins, n)): n for n in FORBIDDEN_BUILTINS if hasattr(builtins, n)}
def key(v):
    q = getattr(v, '__qualname__', None)
    owner = getattr(v, '__objclass__', None)
    m = getattr(owner if owner is not None else v, '__module__', None)
    return f'{m}.{q}' if isinstance(m, str) and isinstance(q, str) else None
def refused(v):
    if v is type:
        return 'type'
    if isinstance(v, type) and issubclass(v, type):
        return 'metaclass ' + str(key(v))
    if id(v) in denied_builtins:
        return 'builtin ' + denied_builtins[id(v)]
    if isinstance(v, types.ModuleType) and not ok(getattr(v, '__name__', '?')):
        return 'module ' + str(v.__name__)
    if callable(v):
        k = key(v)
        if k in DENIED_VALUES or k in LIMITED:
            return 'value ' + k
        m = getattr(v, '__module__', None)
        if isinstance(m, str) and m.split('.')[0] in DENIED_MODULES:
            return 'defined in ' + m
    return None
CONTAINERS = (dict, list, tuple, set, frozenset, types.MappingProxyType)
def items(c):
    try:
        if isinstance(c, (dict, types.MappingProxyType)):
            return [x for kv in list(c.items())[:20000] for x in kv]
        return list(c)[:20000]
    except Exception:
        return []
found, seen = {}, set()
def scan(c, path, depth):
    for x in items(c):
        try:
            why = refused(x)
        except Exception:
            why = None
        if why:
            found.setdefault(id(c), [path, set(), c])[1].add(why)
        elif depth < 2 and isinstance(x, CONTAINERS) and id(x) not in seen:
            seen.add(id(x))
            scan(x, path + '[...]', depth + 1)
def public(obj):
    for name in dir(obj):
        if not name.startswith('_'):
            try:
                yield name, getattr(obj, name)
            except Exception:
                pass
for modname, mod in sorted(sys.modules.items()):
    if not isinstance(mod, types.ModuleType) or not ok(modname):
        continue
    for attr, value in list(vars(mod).items()):
        if attr.startswith('_'):
            continue
        owners = [(f'{modname}.{attr}', value)]
        if not isinstance(value, CONTAINERS + (types.ModuleType, types.FunctionType,
                                               types.BuiltinFunctionType)):
            owners += [(f'{modname}.{attr}.{a}', v) for a, v in public(value)]
        for path, v in owners:
            if isinstance(v, CONTAINERS) and id(v) not in seen:
                seen.add(id(v))
                scan(v, path, 1)
def resolve(path):
    parts = path.split('.')
    for cut in range(len(parts) - 1, 0, -1):
        owner = sys.modules.get('.'.join(parts[:cut]))
        if owner is not None:
            for attr in parts[cut:]:
                owner = getattr(owner, attr)
            return owner
listed = {id(resolve(p)) for p in DENIED_CONTAINERS}
value_checks = sys.modules['value_checks']
rules = value_checks._rules(json.loads(POLICY))
hooks = {}
for modname, mod in list(sys.modules.items()):
    if isinstance(mod, types.ModuleType) and ok(modname):
        for attr, value in list(vars(mod).items()):
            if isinstance(value, type) and not attr.startswith('_'):
                problem = value_checks._hook_problem(value, rules)
                if problem:
                    hooks[f'{modname}.{attr}'] = problem
print(json.dumps({"found": {p: sorted(why) for p, why, _c in found.values()},
                  "uncovered": {p: sorted(why) for i, (p, why, _c) in found.items()
                                if i not in listed},
                  "library_classes_refused_for_hooks": hooks}))
"""

_LIBRARY_LIMITED = {"value sympy.core.function.Function":
                    "sympy.core.function.UndefinedFunction.__new__"}
"""Refused values whose constructor is limited inside the library itself (LIBRARY_CALL_LIMITS):
library code that takes them out of a container and calls them meets the limit anyway."""


def test_inventory_of_library_containers_holding_refused_values(sandbox: Sandbox) -> None:
    """Every public container of the image's allowed modules (their attributes, their classes'
    and their instances' attributes, and containers in those, two levels deep) that holds a
    refused value (the real `type`, a metaclass, a refused builtin, a module or a class of a
    refused module, a refused or limited value) is refused as a whole (RUNTIME_DENIED_CONTAINERS),
    unless its only refused values are limited inside the library itself; and no class of those
    modules is refused for its array hooks (they are C or library code). Runs in a container,
    after importing every allowed submodule of sympy, numpy and mpmath."""
    head = (f"ALLOWED = {sorted(policy.allowed_modules())!r}\n"
            f"FORBIDDEN_SUBMODULES = {sorted(policy.FORBIDDEN_SUBMODULES)!r}\n"
            f"FORBIDDEN_BUILTINS = {sorted(policy.FORBIDDEN_BUILTINS)!r}\n"
            f"DENIED_VALUES = {sorted(policy.RUNTIME_DENIED_VALUES)!r}\n"
            f"LIMITED = {sorted(policy.RUNTIME_CALL_LIMITS)!r}\n"
            f"DENIED_MODULES = {sorted(policy.RUNTIME_DENIED_VALUE_MODULES)!r}\n"
            f"DENIED_CONTAINERS = {sorted(policy.RUNTIME_DENIED_CONTAINERS)!r}\n"
            f"POLICY = {json.dumps(RUNNER_POLICY)!r}\n")
    result = sandbox.run(head + _CONTAINER_INVENTORY, timeout=300)
    assert result.ok, result.stderr[-3000:]
    inventory = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(_LIBRARY_LIMITED.values()) <= set(policy.LIBRARY_CALL_LIMITS)
    uncovered = {path: why for path, why in inventory["uncovered"].items()
                 if not set(why) <= set(_LIBRARY_LIMITED)}
    assert uncovered == {}
    assert inventory["library_classes_refused_for_hooks"] == {}  # no false positive
    found = {path.rsplit(".", 1)[-1] for path in inventory["found"]}
    assert {"basic_fns", "expr_fns", "dispatch_table", "ScalarType"} <= found  # it finds them
