"""Second layer inside the container: RestrictedPython guards and the isolation audit hook.

Runs INSIDE the container next to untrusted code: standard library and RestrictedPython only
(plus runner/restricted_policy.py), never `sandbox.*`. All rules arrive as data (`policy`, from
sandbox/policy.py policy_for_runner()).

What this layer guarantees, honestly: nothing against code that reaches the interpreter's
internals. In CPython such code can always escape an in-process check (a numpy view over an
arbitrary address, an object pointer made from bytes, a C-level bug, a crafted object that
corrupts memory), and it can silence the audit hook. The container, the kernel filter (seccomp)
and a fresh process per call are the boundary and must hold without these files. What the layer
does: refuse the known classes of escape routes by value, where the static gate only sees names,
and record what code tried, as evidence for reviewers.

The layer is three modules, one per seam:
- value_checks.py: the one value check for whatever restricted code gets (refused, limited or
  handed out wrapped), and the policy prepared for it;
- guards.py (this one): the call guards and the guarded builtins that apply it, and compiling
  and loading a generated function;
- audit_hook.py: the audit hook (forbidden events, the string-evaluation chokepoint).

The call guard also checks the callee at the point of use (the real `type` becomes the guarded
one; a metaclass, refused builtin or refused value is refused however the code got it) and every
argument, and refuses `_` keyword names. The code's own undecorated defs whose name is bound
nowhere else are called directly (their parameters are checked on entry). The guards that call
library code run with the generated function's globals and read none of them, so library code
that looks at its caller's frame (`sympy.var`, namedtuple) sees the generated function.
Also: a `type` that never hands out a callable metaclass (`type(int)` is the guarded type again)
and refuses three arguments; `str.format` (bound, unbound, and through any str subclass such as
np.str_) refuses attribute fields.

What it does not see:
- the results of operators (`a + b`, `x += y`, comparisons; item access is checked): library
  objects could return anything from their dunders; none known in the image returns a refused
  value;
- values inside containers that library code builds at run time and that library code then
  iterates itself, without the generated code taking them out (`typing.get_type_hints(f)` of a
  library function is a dict that may hold the real `type`: checked when the code takes it out,
  not when `map` iterates the dict), and callables that library code finds by itself (in its
  own containers, as attributes) and calls; only the image's module-level containers are
  inventoried, two levels deep (tests/test_guards.py); classes are checked but not wrapped, so
  what a library class's constructor returns to the library code that called it is not seen;
- what string-compiled code does with public, unrefused names (it runs with the real builtins
  and objects, outside the guards): whatever is reachable from the namespace it is handed by
  public names is reachable there;
- attributes set by data inside library code other than update_wrapper/wraps (an
  `__array_interface__` set on an instance's own dict is not looked for);
- addresses leaked by `repr()`/`hash()` of plain objects; C-level memory bugs of CPython, numpy
  or sympy reachable with ordinary arguments; code that never raises an audit event; anything
  done after an escape (such code can remove or blind the audit hook).

Protocol with the runner:
- `compile_function(code, policy, restricted)` compiles only (compile_restricted with the policy
  class of restricted_policy.py when restricted), nothing runs.
- `load_function(code, name, policy, restricted, compiled=None)` execs the code (or its
  precompiled code object) in a fresh namespace whose builtins are the guarded set (the
  call guards bound to that namespace, which is recorded: its functions are the code's own);
  returns the callable `name`. Failures raise ordinary exceptions (SyntaxError, ImportError,
  NameError...).
- the audit hook's side (`install_audit_hook`, `audit_pause`, `audit_resume`, `audit_paused`)
  is in audit_hook.py.
"""

from __future__ import annotations

import builtins
import sys
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import CodeType
from typing import Any

__all__ = [
    "compile_function",
    "guarded_builtins",
    "load_function",
]


try:  # on the host: sandbox.runner.guards
    from . import audit_hook, restricted_policy, value_checks
    from .formats import format_field_problem
except ImportError:  # inside the container the runner dir is on sys.path: top-level modules
    import audit_hook  # type: ignore[no-redef]
    import restricted_policy  # type: ignore[no-redef]
    import value_checks  # type: ignore[no-redef]
    from formats import format_field_problem  # type: ignore[no-redef]

# the value check's names, as globals of this module (the guards' hot paths read globals)
_GUARD_NAMESPACES = value_checks._GUARD_NAMESPACES
_MAX_VERDICTS = value_checks._MAX_VERDICTS
_PURE_BUILTINS = value_checks._PURE_BUILTINS
_apply_library_limits = value_checks._apply_library_limits
_check_value = value_checks._check_value
_Checked = value_checks._Checked
_handed_out = value_checks._handed_out
_identity = value_checks._identity
_long_lived = value_checks._long_lived
_metaclass_proxy = value_checks._metaclass_proxy
_proxy_type = value_checks._proxy_type
_ProxyMeta = value_checks._ProxyMeta
_refuse = value_checks._refuse
_Rules = value_checks._Rules
_rules = value_checks._rules
_verdict = value_checks._verdict
_report = audit_hook._report
_state = audit_hook._state

_RAISE: Any = object()


_USER_MODULE = "fnforge_function"
"""`__name__` of the namespace generated functions run in."""


def _isolated(func: Callable[..., Any], import_: Callable[..., Any]) -> Callable[..., Any]:
    """`func` with globals of its own: `__name__` is the generated function's module and the
    only builtin is the guarded `__import__` (C code imports through its caller's builtins:
    `arr.sum()` loads numpy.core._methods). Library code that looks at its caller's frame
    (collections.namedtuple and typing name the new class's module after it; sympy.var binds
    names in its globals) sees the generated function's module, and can never rebind a name
    this module's guards use; the guard itself reads no global (everything it uses is a local
    of its factory), which test_guards checks on its bytecode."""
    namespace = {"__name__": _USER_MODULE, "__builtins__": {"__import__": import_}}
    _GUARD_NAMESPACES[_identity(namespace)] = namespace
    isolated = types.FunctionType(func.__code__, namespace, func.__name__, func.__defaults__,
                                  func.__closure__)
    isolated.__kwdefaults__ = func.__kwdefaults__
    isolated.__qualname__ = func.__qualname__
    return isolated


def _make_calls(rules: _Rules, guarded_type: type,
                import_: Callable[..., Any]) -> dict[str, Callable[..., Any]]:
    """The call guards: every call restricted code makes goes through one of them (`_call0_` to
    `_call3_` for calls with that many positional arguments and nothing else, `_call_` for
    calls with keywords, `_apply_` for calls with `*args`/`**kwargs`; one logic, specialised so
    that the common case costs about one Python call).

    - the callee is checked at the point of use, however the code got it: the real `type`
      becomes the guarded one (one argument only), metaclasses, refused builtins and values
      (RUNTIME_DENIED_VALUES, functions of refused modules, classes with array hooks) are
      refused, and limited ones (RUNTIME_CALL_LIMITS) are called in their safe form only;
    - each argument is checked like a value, and function-like arguments are wrapped
      (`_Checked`, except for the few builtins that never call their arguments, such as
      `isinstance` and `type`), so library code that calls them back calls them through this
      guard; keyword names starting with `_` are refused (`Function('f', **{computed: ...})`);
    - the result is checked like an attribute value (`basic_fns.get('op')` never hands out the
      real `type`)."""
    safe = rules.safe_types
    verdicts = rules.callees
    plain = rules.plain_callees
    check_value = _check_value
    verdict = _verdict
    checked = _Checked
    builtin_type = types.BuiltinFunctionType
    method_type = types.MethodType
    module_type = types.ModuleType
    leaves = rules.value_leaves
    real_isinstance = isinstance
    real_type = type
    real_tuple = tuple
    real_id = _identity
    real_len = len
    type_error = TypeError
    no_wrap = frozenset(_identity(f) for f in (guarded_type, *_PURE_BUILTINS))

    def argument(value: Any) -> Any:
        return check_value(value, rules, "an argument")

    def plain_argument(value: Any) -> Any:
        return verdict(value, rules, "an argument")

    def for_target(target: Any) -> Callable[[Any], Any]:
        return plain_argument if real_id(target) in no_wrap else argument

    def callee(func: Any) -> Any:
        """What calling `func` runs (the slow path: not a plain long-lived callable)."""
        cls = real_type(func)
        if cls is builtin_type:  # `items.append`: only the limits by name apply
            bound = func.__self__
            if bound is not None and not real_isinstance(bound, module_type) \
                    and func.__name__ not in leaves:
                return func
        elif cls is method_type:  # a bound Python method: the verdict of its function
            hit = verdicts.get(real_id(func.__func__))
            if hit is not None and hit[0] is func.__func__ and hit[1] is hit[0]:
                return func
        elif cls is checked:
            return func
        elif func is real_type:
            return guarded_type
        hit = verdicts.get(real_id(func))
        if hit is not None and hit[0] is func:
            return hit[1]
        target = verdict(func, rules, "calling this value")
        if target is func and _long_lived(func, cls) and real_len(plain) < _MAX_VERDICTS:
            plain[real_id(func)] = func
        return target

    def result_of(value: Any) -> Any:
        return check_value(value, rules, "a call's result")

    @_handed_out
    def call(func: Any, *args: Any, **kwargs: Any) -> Any:
        if real_type(func) is checked:
            func = func._func
        target = func if plain.get(real_id(func)) is func else callee(func)
        for value in args:
            if real_type(value) not in safe:
                process = for_target(target)
                args = real_tuple([process(v) for v in args])
                break
        if kwargs:
            for key in kwargs:
                if key[:1] == "_":
                    raise type_error(f"keyword argument {key!r}: names starting with '_' are "
                                     "not available in the fnforge sandbox")
            process = for_target(target)
            kwargs = {k: v if real_type(v) in safe else process(v) for k, v in kwargs.items()}
        result = target(*args, **kwargs)
        return result if real_type(result) in safe else result_of(result)

    @_handed_out
    def call0(func: Any) -> Any:
        if real_type(func) is checked:
            func = func._func
        target = func if plain.get(real_id(func)) is func else callee(func)
        result = target()
        return result if real_type(result) in safe else result_of(result)

    @_handed_out
    def call1(func: Any, a: Any) -> Any:
        if real_type(func) is checked:
            func = func._func
        target = func if plain.get(real_id(func)) is func else callee(func)
        if real_type(a) not in safe:
            a = for_target(target)(a)
        result = target(a)
        return result if real_type(result) in safe else result_of(result)

    @_handed_out
    def call2(func: Any, a: Any, b: Any) -> Any:
        if real_type(func) is checked:
            func = func._func
        target = func if plain.get(real_id(func)) is func else callee(func)
        if real_type(a) not in safe or real_type(b) not in safe:
            process = for_target(target)
            a, b = process(a), process(b)
        result = target(a, b)
        return result if real_type(result) in safe else result_of(result)

    @_handed_out
    def call3(func: Any, a: Any, b: Any, c: Any) -> Any:
        if real_type(func) is checked:
            func = func._func
        target = func if plain.get(real_id(func)) is func else callee(func)
        if real_type(a) not in safe or real_type(b) not in safe or real_type(c) not in safe:
            process = for_target(target)
            a, b, c = process(a), process(b), process(c)
        result = target(a, b, c)
        return result if real_type(result) in safe else result_of(result)

    guards = tuple(_isolated(f, import_) for f in (call, call0, call1, call2, call3))
    rules.call_guards = guards
    return {"_call_": guards[0], "_apply_": guards[0], "_call0_": guards[1],
            "_call1_": guards[2], "_call2_": guards[3], "_call3_": guards[4]}


def _make_checks(rules: _Rules) -> dict[str, Any]:
    """`_check_`, `_check_args_`, `_check_kwargs_` (and `_type_`, `_safe_types_` for the inline
    fast path `if _type_(a) not in _safe_types_: a = _check_(a)`): values that enter
    restricted code without passing another guard (parameters, `with ... as`, `yield`)."""
    safe = rules.safe_types

    @_handed_out
    def check(value: Any) -> Any:
        if type(value) in safe:
            return value
        return _check_value(value, rules, "a value passed in")

    @_handed_out
    def check_args(*values: Any) -> tuple[Any, ...]:
        return tuple([check(v) for v in values])

    @_handed_out
    def check_kwargs(values: dict[str, Any]) -> dict[str, Any]:
        return {k: check(v) for k, v in values.items()}

    return {"_check_": check, "_check_args_": check_args, "_check_kwargs_": check_kwargs,
            "_type_": type, "_safe_types_": safe}


_PLAIN_ITERABLES: frozenset[type] = frozenset({range, str, bytes})


def _make_getiter(rules: _Rules) -> Callable[[Any], Iterator[Any]]:
    """The iteration guard (`for`, comprehensions, unpacking): each item is checked like an
    attribute value as it comes out (`for f in basic_fns.values()` never binds the real
    `type`)."""
    safe = rules.safe_types

    def checked(it: Iterator[Any]) -> Iterator[Any]:
        for value in it:
            if type(value) in safe:
                yield value
            else:
                yield _check_value(value, rules, "an item of an iteration")

    @_handed_out
    def guarded_iter(ob: Any) -> Iterator[Any]:
        it: Iterator[Any] = iter(ob)
        if type(ob) in _PLAIN_ITERABLES:
            return it
        return checked(it)

    return guarded_iter


def _make_unpack(rules: _Rules, getiter: Callable[[Any], Iterator[Any]]
                 ) -> tuple[Callable[..., list[Any]], Callable[..., Iterator[Sequence[Any]]]]:
    """`_unpack_sequence_` and `_iter_unpack_sequence_` (RestrictedPython's protocol: `a, (b, c)
    = x` and `for a, b in x`), with every unpacked item checked."""
    safe = rules.safe_types

    @_handed_out
    def unpack(it: Any, spec: dict[str, Any], _getiter: Any = None) -> list[Any]:
        if type(it) in (tuple, list):
            ret = list(it)
            for i, value in enumerate(ret):
                if type(value) not in safe:
                    ret[i] = _check_value(value, rules, "an unpacked item")
        else:
            ret = list(getiter(it))
        if len(ret) < spec["min_len"]:
            return ret
        for idx, child in spec["childs"]:
            ret[idx] = unpack(ret[idx], child)
        return ret

    @_handed_out
    def iter_unpack(it: Any, spec: dict[str, Any], _getiter: Any = None
                    ) -> Iterator[Sequence[Any]]:
        # each item is unpacked at once and its parts are checked, so the item itself (never
        # bound) is not: `for k, v in d.items()` checks `k` and `v`
        flat = not spec["childs"]
        for ob in iter(it):
            if flat and type(ob) is tuple:
                for value in ob:
                    if type(value) not in safe:
                        break
                else:
                    yield ob
                    continue
            yield unpack(ob, spec)

    return unpack, iter_unpack


def _safe_format(fmt: str) -> Callable[..., str]:
    """str.format, refusing fields that access attributes (`{0.__class__}`)."""
    @_handed_out
    def fmt_call(*args: Any, **kwargs: Any) -> str:
        problem = format_field_problem(fmt)
        if problem is not None:
            raise ValueError(f"format field {problem!r} accesses attributes; "
                             "pass the values themselves")
        return fmt.format(*args, **kwargs)
    return fmt_call


@_handed_out
def _unbound_format(fmt: Any, *args: Any, **kwargs: Any) -> str:
    if not isinstance(fmt, str):
        raise TypeError("str.format needs a str")
    return _safe_format(str(fmt))(*args, **kwargs)


_WHERE = "\0"
"""Placeholder for the place of a refused value, filled in only when it is refused (an
f-string per attribute read would cost every read)."""


def _make_getattr(rules: _Rules) -> tuple[Callable[..., Any], Callable[[Any, Any], Any]]:
    """The guarded getattr (`_getattr_`), and `_getmethod_`, the same lookup for `obj.m(...)`:
    the bound method goes straight to the call guard, so it is checked but not wrapped (it is
    never a value the code holds)."""
    safe = rules.safe_types

    def lookup(obj: Any, name: Any, default: Any) -> Any:
        if type(name) is not str:
            raise TypeError("attribute name must be a str")
        if name.startswith("_"):
            if name not in rules.allowed_dunders:
                raise _refuse(f"attribute {name!r}")
            value = getattr(obj, name, None)
            if value is None or type(value) is str:
                return value
            raise _refuse(f"attribute {name!r} that is not a string")
        if name in rules.dangerous or name == "format_map":
            raise _refuse(f"attribute {name!r}")
        if name == "format":
            if isinstance(obj, str):
                return _safe_format(str(obj))
            if isinstance(obj, type) and issubclass(obj, str):  # str.format, np.str_.format
                return _unbound_format
        if isinstance(obj, types.ModuleType):
            modname = obj.__name__
            if name in rules.module_name_attrs or name in rules.module_attrs.get(modname, ()) \
                    or (name in rules.forbidden_modules and name not in rules.collisions):
                raise _refuse(f"{modname}.{name}")
        try:
            return getattr(obj, name)
        except AttributeError:
            if default is _RAISE:
                raise AttributeError(f"{type(obj).__name__!r} object has no attribute "
                                     f"{name!r}") from None  # no .obj handed out
            return default

    def refused(exc: AttributeError, name: str) -> AttributeError:
        return AttributeError(str(exc).replace(_WHERE, f"attribute {name!r}"))

    @_handed_out
    def guarded_getattr(obj: Any, name: Any, default: Any = _RAISE) -> Any:
        value = lookup(obj, name, default)
        if type(value) in safe:
            return value
        try:
            return _check_value(value, rules, _WHERE)
        except AttributeError as exc:
            raise refused(exc, name) from None

    @_handed_out
    def getmethod(obj: Any, name: Any) -> Any:
        value = lookup(obj, name, _RAISE)
        try:
            return _verdict(value, rules, _WHERE)
        except AttributeError as exc:
            raise refused(exc, name) from None

    return guarded_getattr, getmethod


def _make_getitem(rules: _Rules) -> Callable[[Any, Any], Any]:
    @_handed_out
    def guarded_getitem(obj: Any, key: Any) -> Any:
        return _check_value(obj[key], rules, "item")
    return guarded_getitem


def _guarded_iter(ob: Any) -> Iterator[Any]:
    """Plain iteration for the builtins that build a container or an iterator (`tuple`,
    `sorted`, `zip`, `bytes`, `reversed`): the items are checked when the code takes them out."""
    return iter(ob)


class _WriteProxy:
    """`_write_(ob)` target: item writes pass through; attribute writes only on plain instances."""

    __slots__ = ("_ob",)
    _ob: Any

    def __init__(self, ob: Any) -> None:
        object.__setattr__(self, "_ob", ob)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._ob[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._ob[key]

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target(name), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._target(name), name)

    def _target(self, name: str) -> Any:
        ob = self._ob
        if name.startswith("_") or isinstance(ob, types.ModuleType | type):
            raise TypeError(f"cannot set {name!r} on {type(ob).__name__} objects here")
        return ob


@_handed_out
def _write_guard(ob: Any) -> Any:
    if type(ob) in (dict, list):
        return ob
    return _WriteProxy(ob)


class _Printer:
    """RestrictedPython's print target: writes through to sys.stdout (the runner caps it) and
    keeps the text for `printed`."""

    def __init__(self, _getattr_: Any = None) -> None:
        self.txt: list[str] = []

    @_handed_out
    def write(self, text: str) -> None:
        self.txt.append(text)
        sys.stdout.write(text)

    @_handed_out
    def __call__(self) -> str:
        return "".join(self.txt)

    @_handed_out
    def _call_print(self, *objects: Any, **kwargs: Any) -> None:
        if kwargs.get("file") is not None:
            raise TypeError("print(file=...) is not available; print to standard output")
        kwargs["file"] = self
        print(*objects, **kwargs)


# ------------------------------------------------------------------ builtins


@_handed_out
def _g_tuple(it: Iterable[Any] = ()) -> tuple[Any, ...]:
    return tuple(_guarded_iter(it))


@_handed_out
def _g_sorted(it: Iterable[Any], *, key: Any = None, reverse: bool = False) -> list[Any]:
    return sorted(_guarded_iter(it), key=key, reverse=reverse)


@_handed_out
def _g_zip(*its: Iterable[Any], strict: bool = False) -> Iterator[tuple[Any, ...]]:
    return zip(*(_guarded_iter(i) for i in its), strict=strict)


@_handed_out
def _g_bytes(source: Any = b"", *args: Any) -> bytes:
    if isinstance(source, int | str | bytes | bytearray) or args:
        return bytes(source, *args)
    return bytes(_guarded_iter(source))


@_handed_out
def _g_reversed(seq: Any) -> Iterator[Any]:
    _guarded_iter(seq)  # same check as any iteration; reversed needs the sequence itself
    return reversed(seq)


def _make_type(rules: _Rules) -> type:
    """The guarded `type`: one argument only, and what it returns is checked like an attribute
    value, so it never hands out a callable metaclass (`type(int)` is this guarded type again,
    `type(f)` for a sympy function class a metaclass that refuses calls) nor an unlimited
    ndarray constructor."""
    guarded: list[type] = []

    @_handed_out
    def g_type(obj: Any, *rest: Any) -> Any:
        if rest:
            raise TypeError("type() with more than one argument is not available")
        if isinstance(obj, _ProxyMeta):
            return guarded[0]
        if type(obj) is _Checked:
            obj = obj._func
        result = type(obj)
        if result is type:
            return guarded[0]
        if issubclass(result, type):
            return _metaclass_proxy(result)
        return _check_value(result, rules, "type()")

    guarded.append(_proxy_type(type, g_type))
    return guarded[0]


def _make_hasattr(getattr_: Callable[..., Any]) -> Callable[[Any, Any], bool]:
    @_handed_out
    def guarded_hasattr(obj: Any, name: Any) -> bool:
        try:
            getattr_(obj, name)
        except AttributeError:
            return False
        return True
    return guarded_hasattr


def _make_import(rules: _Rules, getattr_: Callable[..., Any]) -> Callable[..., Any]:
    @_handed_out
    def guarded_import(name: str, globals: Any = None, locals: Any = None,
                       fromlist: Any = (), level: int = 0) -> Any:
        if name == "__future__" and all(f in rules.future for f in fromlist or ()):
            return __import__(name, None, None, fromlist, 0)
        if type(fromlist) is list and not fromlist and level == 0 and isinstance(name, str) \
                and name.split(".")[0] in rules.allowed_modules \
                and not rules.in_forbidden_submodule(name):
            # C code importing for itself (PyImport_Import passes an empty list; import
            # statements pass None or a tuple): `arr.sum()` loads numpy.core._methods
            return __import__(name, None, None, (), 0)
        refused = None
        if level != 0:
            refused = "relative import"
        elif not isinstance(name, str) or not rules.module_allowed(name):
            refused = f"import of {name!r}"
        else:
            for item in fromlist or ():
                if not isinstance(item, str) or item == "*" or item.startswith("_") \
                        or item in rules.dangerous or item in rules.module_name_attrs \
                        or (item in rules.forbidden_modules and item not in rules.collisions) \
                        or item in rules.module_attrs.get(name, ()) \
                        or rules.in_forbidden_submodule(f"{name}.{item}"):
                    refused = f"from {name} import {item}"
                    break
        if refused is not None:
            _report({"event": "import", "detail": f"{refused} refused by the guard"})
            raise ImportError(f"{refused} is not allowed in the fnforge sandbox")
        module = __import__(name, None, None, fromlist or (), 0)
        _apply_library_limits(rules)  # the import may have loaded a library they apply to
        if not fromlist:
            return module
        checked: dict[str, Any] = {}
        for item in fromlist:  # submodules named in fromlist were imported just now
            try:
                checked[item] = getattr_(module, item)
            except AttributeError as exc:
                raise ImportError(str(exc)) from None
        return types.SimpleNamespace(**checked)  # `from m import x` binds the checked value
    return guarded_import


def guarded_builtins(policy: dict[str, Any]) -> dict[str, Any]:
    """The builtins dict of restricted code: the allowed builtins, wrappers and guards."""
    rules = _rules(policy)
    getattr_, getmethod = _make_getattr(rules)
    guarded_type = _make_type(rules)
    import_ = _make_import(rules, getattr_)
    getiter = _make_getiter(rules)
    unpack, iter_unpack = _make_unpack(rules, getiter)
    out: dict[str, Any] = {n: getattr(builtins, n) for n in rules.allowed_builtins
                           if hasattr(builtins, n) and n not in rules.forbidden_builtins}
    out.update({
        "tuple": _proxy_type(tuple, _g_tuple),
        "type": guarded_type,
        "bytes": _proxy_type(bytes, _g_bytes),
        "sorted": _g_sorted, "zip": _g_zip, "reversed": _g_reversed,
        "hasattr": _make_hasattr(getattr_),
        "StatisticsError": _statistics_error(),
        "__import__": import_,
        "_getattr_": getattr_,
        "_getmethod_": getmethod,
        "_getitem_": _make_getitem(rules),
        "_getiter_": getiter,
        "_iter_unpack_sequence_": iter_unpack,
        "_unpack_sequence_": unpack,
        "_write_": _write_guard,
        "_print_": _Printer,
        **_make_calls(rules, guarded_type, import_),
        **_make_checks(rules),
    })
    return out


def _statistics_error() -> type:
    import statistics

    return statistics.StatisticsError


def compile_function(code: str, policy: dict[str, Any], restricted: bool) -> CodeType:
    """Compile only, nothing runs: each call process compiles its own function (under its own
    deadline and memory; the runner keeps no code) and then execs the code object."""
    rules = _rules(policy)
    _state["compiling"] += 1  # the audit hook's string-code check skips the runner's compile
    try:
        if not restricted:
            return compile(code, rules.filename, "exec")
        from RestrictedPython.compile import compile_restricted_exec

        result = compile_restricted_exec(
            code, filename=rules.filename,
            policy=restricted_policy.policy_class(rules.allowed_dunders))
    finally:
        _state["compiling"] -= 1
    if result.errors or result.code is None:
        raise SyntaxError("; ".join(result.errors) or "RestrictedPython refused the code")
    return result.code


_builtins_cache: dict[tuple[int, bool], dict[str, Any]] = {}


def _builtins_for(policy: dict[str, Any], restricted: bool) -> dict[str, Any]:
    """A fresh copy of the (cached) builtins of restricted or plain function code."""
    key = (_identity(policy), restricted)
    template = _builtins_cache.get(key)
    if template is None:
        if restricted:
            template = guarded_builtins(policy)
        else:
            rules = _rules(policy)
            template = dict(vars(builtins))
            template["__import__"] = _make_import(rules, _make_getattr(rules)[0])
        _builtins_cache[key] = template
    return dict(template)


def load_function(code: str, name: str, policy: dict[str, Any], restricted: bool,
                  compiled: CodeType | None = None) -> Callable[..., Any]:
    """Exec `code` (or its precompiled code object) in a fresh guarded namespace; return the
    function `name`."""
    if compiled is None:
        compiled = compile_function(code, policy, restricted)
    _apply_library_limits(_rules(policy))
    guarded = _builtins_for(policy, restricted)
    namespace: dict[str, Any] = {"__builtins__": guarded, "__name__": _USER_MODULE}
    _rules(policy).user_namespaces[_identity(namespace)] = namespace
    paused, _state["paused"] = _state["paused"], True  # making functions is the runner's own
    try:
        for guard in restricted_policy.CALL_GUARDS & guarded.keys():
            # the call guards run in the function's own globals (they read none): library code
            # that looks at its caller's frame (sympy.var binds names there) sees the function's
            template = guarded[guard]
            guarded[guard] = types.FunctionType(template.__code__, namespace, template.__name__,
                                                template.__defaults__, template.__closure__)
    finally:
        _state["paused"] = paused
    exec(compiled, namespace)
    func = namespace.get(name)
    if not callable(func):
        raise NameError(f"the code does not define a function named {name!r}")
    return func  # type: ignore[no-any-return]


_GUARD_NAMESPACES[_identity(globals())] = globals()
