"""Second layer inside the container: RestrictedPython guards and the isolation audit hook.

Runs INSIDE the container next to untrusted code: standard library and RestrictedPython only
(plus runner/restricted_policy.py), never `sandbox.*`. All rules arrive as data (`policy`, from
sandbox/policy.py policy_for_runner()).

What this layer guarantees, honestly: nothing against code that reaches the interpreter's
internals. In CPython such code can always escape an in-process check (a numpy view over an
arbitrary address, an object pointer made from bytes, a C-level bug, a crafted object that
corrupts memory), and it can silence this module's audit hook. The container, the kernel filter
(seccomp) and a fresh process per call are the boundary and must hold without this file. What it
does: refuse the known classes of escape routes by value, where the static gate only sees names,
and record what code tried, as evidence for reviewers:
- guarded attribute and item access (`_getattr_`, `_getitem_`): no `_` names except a few
  read-only dunders that yield strings; no module unless it is the genuine, importable module of
  that name; no metaclass; nothing defined in a forbidden module or submodule; no value in
  RUNTIME_DENIED_VALUES (as_strided, DummyArray, scalar, ...); callables in RUNTIME_CALL_LIMITS
  (ndarray(buffer=), sympy.Function(name, bases, ns), resize(refcheck=)) come wrapped, and
  LIBRARY_CALL_LIMITS are enforced inside the library itself (sympy's UndefinedFunction), for
  code that reaches the real object without the guards (string-compiled code);
- a `type` that never hands out a callable metaclass (`type(int)` is the guarded type again) and
  refuses three arguments; `str.format` (bound, unbound, and through any str subclass such as
  np.str_) refuses attribute fields; `**kwargs` calls refuse `_` keyword names; `from m import x`
  binds the checked value;
- the audit hook: forbidden events (processes, sockets, FFI, writes, reads outside the Python
  installation, tracing hooks, off-list imports) and the string-evaluation chokepoint: every
  `compile` and `exec` of code that was not loaded from a file of the installation and not
  compiled by the runner itself is refused when its names include a dunder, a `_` name, a
  forbidden builtin, module or attribute (sympify, lambdify, typing forward references,
  mpmath.identify, namedtuple: one check for the whole family, whatever the alias). Parsing
  alone (ast.parse: traceback carets) is not checked: its tree runs only after a compile and an
  exec, which are.
What it does not see: values returned by calls or produced by iteration (only attribute, item and
import results are checked); what string-compiled code does with public, unrefused names (it runs
with the real builtins and objects, outside the guards); addresses leaked by `repr()`/`hash()` of
plain objects; C-level memory bugs of CPython, numpy or sympy reachable with ordinary arguments;
code that never raises an audit event; and anything done after an escape (such code can remove or
blind this hook).

Protocol with the runner:
- `compile_function(code, policy, restricted)` compiles only (compile_restricted with the policy
  class of restricted_policy.py when restricted), nothing runs.
- `load_function(code, name, policy, restricted, compiled=None)` execs the code (or its
  precompiled code object) in a fresh namespace whose builtins are the guarded set below; returns
  the callable `name`. Failures raise ordinary exceptions (SyntaxError, ImportError, NameError...).
- `install_audit_hook(policy, emit)` adds one sys.addaudithook hook per process (a second call
  only replaces the rules and `emit`). `emit({"event", "detail"})` is called synchronously BEFORE
  the forbidden operation proceeds; with policy.audit.block the hook then raises PermissionError,
  so the operation does not happen at all.
- `audit_pause()` / `audit_resume()` (or `with audit_paused():`): the runner wraps its own I/O
  (writing the result, forking) in them so its events are never reported. Paused is a plain
  module flag: generated code cannot reach it (no `_` names, no module access to `guards`).
  `compile` and `exec` raised directly by the runner's own files are the runner's, not reported.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import operator
import os
import re
import sys
import threading
import tokenize
import types
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from types import CodeType
from typing import Any

__all__ = [
    "audit_pause",
    "audit_paused",
    "audit_resume",
    "compile_function",
    "guarded_builtins",
    "install_audit_hook",
    "load_function",
]


try:  # inside the container the runner dir is on sys.path and this is the top-level `guards`
    import restricted_policy
    from formats import format_field_problem
except ImportError:  # on the host: sandbox.runner.guards
    from . import restricted_policy
    from .formats import format_field_problem

_RAISE: Any = object()
_RUNNER_DIR = os.path.dirname(os.path.abspath(__file__))

# ------------------------------------------------------------------ policy, prepared once


class _Rules:
    """The runner policy turned into sets for O(1) checks."""

    def __init__(self, policy: dict[str, Any]) -> None:
        self.allowed_modules = frozenset(policy.get("allowed_modules", ()))
        self.forbidden_modules = frozenset(policy.get("forbidden_modules", ()))
        self.forbidden_submodules = tuple(policy.get("forbidden_submodules", ()))
        self.submodule_prefixes = tuple(s + "." for s in self.forbidden_submodules)
        self.dangerous = frozenset(policy.get("dangerous_attributes", ()))
        self.module_name_attrs = frozenset(policy.get("module_name_attributes", ()))
        self.collisions = frozenset(policy.get("module_name_collisions", ()))
        self.module_attrs = {k: frozenset(v) for k, v in
                             policy.get("forbidden_module_attributes", {}).items()}
        self.future = frozenset(policy.get("future_imports", ("annotations",)))
        self.denied_value_modules = frozenset(policy.get("runtime_denied_value_modules", ()))
        self.denied_values = frozenset(policy.get("runtime_denied_values", ()))
        self.call_limits: dict[str, dict[str, Any]] = dict(
            policy.get("runtime_call_limits", {}))
        self.value_leaves = frozenset(k.rsplit(".", 1)[-1] for k in
                                      self.denied_values | self.call_limits.keys())
        self.library_limits: dict[str, dict[str, Any]] = dict(
            policy.get("library_call_limits", {}))
        self.allowed_dunders = frozenset(policy.get("allowed_dunder_attributes", ()))
        self.filename = str(policy.get("user_filename", "<fnforge-function>"))
        self.allowed_builtins = frozenset(policy.get("allowed_builtins", ()))
        self.forbidden_builtins = frozenset(policy.get("forbidden_builtins", ()))
        self.denied_ids = frozenset(id(getattr(builtins, n)) for n in self.forbidden_builtins
                                    if hasattr(builtins, n))

    def module_allowed(self, dotted: str) -> bool:
        parts = dotted.split(".")
        if not all(parts) or any(p.startswith("_") for p in parts):
            return False
        if parts[0] not in self.allowed_modules:
            return False
        return not self.in_forbidden_submodule(dotted)

    def in_forbidden_submodule(self, dotted: str) -> bool:
        return dotted in self.forbidden_submodules or dotted.startswith(self.submodule_prefixes)


_rules_cache: dict[int, _Rules] = {}


def _rules(policy: dict[str, Any]) -> _Rules:
    key = id(policy)
    rules = _rules_cache.get(key)
    if rules is None:
        rules = _rules_cache[key] = _Rules(policy)
    return rules


# ------------------------------------------------------------------ wrapped classes


class _ProxyMeta(type):
    """Metaclass of a wrapped class: calls go through a guard function, while isinstance,
    issubclass, `tuple[int]`, `==`, attribute reads and `isinstance(wrapped, RealMeta)` inside
    libraries behave like the real class."""

    _real: type
    _call: Callable[..., Any]

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._call(*args, **kwargs)

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, cls._real)

    def __subclasscheck__(cls, sub: Any) -> bool:
        return issubclass(_unwrap(sub), cls._real)

    def __getitem__(cls, item: Any) -> Any:
        return cls._real[item]  # type: ignore[index]

    def __eq__(cls, other: object) -> bool:
        return _unwrap(other) is cls._real

    def __hash__(cls) -> int:
        return hash(cls._real)

    def __repr__(cls) -> str:
        return repr(cls._real)

    def __getattr__(cls, name: str) -> Any:
        return getattr(cls._real, name)

    @property  # type: ignore[misc]
    def __class__(cls) -> type:
        """What libraries see as the wrapped class's class: sympy tests
        `isinstance(cls, BasicMeta)` before it treats a pattern as a class."""
        return type(cls._real)


def _unwrap(obj: Any) -> Any:
    return obj._real if isinstance(obj, _ProxyMeta) else obj


def _proxy_type(real: type, call: Callable[..., Any]) -> type:
    return _ProxyMeta(real.__name__, (), {
        "_real": real, "_call": staticmethod(call), "__doc__": real.__doc__,
        "__module__": real.__module__, "__qualname__": real.__qualname__})


_class_proxies: dict[tuple[int, str], tuple[type, type]] = {}
"""(id of the real class, kind) -> (real class, its proxy): one proxy per class, so
`type(a) is np.ndarray` holds between two wrapped reads."""


def _cached_proxy(real: type, kind: str, call: Callable[..., Any]) -> type:
    hit = _class_proxies.get((id(real), kind))
    if hit is None or hit[0] is not real:
        hit = _class_proxies[(id(real), kind)] = (real, _proxy_type(real, call))
    return hit[1]


def _refusing_call(what: str) -> Callable[..., Any]:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise TypeError(f"{what} is not available in the fnforge sandbox")
    return refuse


def _metaclass_proxy(meta: type) -> type:
    """A metaclass handed out by `type(cls)`: isinstance works, calling it (creating a class)
    does not."""
    return _cached_proxy(meta, "metaclass", _refusing_call(
        f"calling the metaclass {meta.__name__!r} (it creates classes)"))


def _limited(value: Any, key: str, limits: dict[str, Any]) -> Any:
    """`value`, usable only in its safe form (policy RUNTIME_CALL_LIMITS)."""
    most = int(limits.get("max_positional", -1))
    denied = frozenset(limits.get("denied_keywords", ()))
    why = str(limits.get("why", "unsafe form"))

    def call(*args: Any, **kwargs: Any) -> Any:
        bad = sorted(k for k in kwargs if k in denied or k.startswith("_"))
        if bad or (most >= 0 and len(args) > most):
            what = f"keyword {bad[0]!r}" if bad else f"more than {most} positional arguments"
            raise TypeError(f"{key}() with {what} is not available in the fnforge sandbox: "
                            f"{why}")
        return value(*args, **kwargs)

    if isinstance(value, type):
        return _cached_proxy(value, "limited", call)
    return call


_patched: dict[str, Any] = {}
"""LIBRARY_CALL_LIMITS applied in this process: key -> the original callable."""


def _apply_library_limits(rules: _Rules) -> None:
    """Enforce LIBRARY_CALL_LIMITS inside the library: replace `module.Class.method` with a
    limited wrapper, once per process, for modules already imported (never imports one)."""
    for key, limits in rules.library_limits.items():
        if key in _patched:
            continue
        owner_path, _, method = key.rpartition(".")
        module_path, _, class_name = owner_path.rpartition(".")
        owner = getattr(sys.modules.get(module_path), class_name, None)
        original = owner.__dict__.get(method) if isinstance(owner, type) else None
        if original is None:
            continue
        most = int(limits.get("max_positional", -1))
        denied = frozenset(limits.get("denied_keywords", ()))
        why = str(limits.get("why", "unsafe form"))

        def limited(*args: Any, _original: Any = original, _key: str = key, _most: int = most,
                    _denied: frozenset[str] = denied, _why: str = why, **kwargs: Any) -> Any:
            bad = sorted(k for k in kwargs if k in _denied or k.startswith("_"))
            if bad or (_most >= 0 and len(args) > _most):
                raise TypeError(f"{_key} with {bad[0] if bad else 'these arguments'} is not "
                                f"available in the fnforge sandbox: {_why}")
            return _original(*args, **kwargs)

        setattr(owner, method, limited)
        _patched[key] = original


# ------------------------------------------------------------------ guarded access


def _refuse(what: str) -> AttributeError:
    return AttributeError(f"{what} is not available in the fnforge sandbox")


_CALLABLE_TYPES = (types.FunctionType, types.BuiltinFunctionType, type, types.MethodType,
                   types.MethodDescriptorType, types.WrapperDescriptorType,
                   types.MethodWrapperType, types.ClassMethodDescriptorType)


def _value_key(value: Any) -> str | None:
    """`module.qualname` of a function, class or method (bound builtin methods and method
    descriptors by the module of the class they belong to: `numpy.ndarray.resize`)."""
    qualname = getattr(value, "__qualname__", None)
    if not isinstance(qualname, str):
        return None
    owner = getattr(value, "__objclass__", None)
    if owner is None and isinstance(value, types.BuiltinFunctionType | types.MethodWrapperType):
        bound = getattr(value, "__self__", None)
        if bound is not None and not isinstance(bound, types.ModuleType):
            owner = bound if isinstance(bound, type) else type(bound)
    module = getattr(owner if owner is not None else value, "__module__", None)
    return f"{module}.{qualname}" if isinstance(module, str) else None


def _check_value(value: Any, rules: _Rules, where: str) -> Any:
    """Refuse values that reach a forbidden module, a metaclass, raw memory or an evaluator,
    however they were reached; wrap the callables that are only safe in some forms."""
    if isinstance(value, types.ModuleType):
        name = getattr(value, "__name__", None)
        if not isinstance(name, str) or sys.modules.get(name) is not value \
                or not rules.module_allowed(name):
            raise _refuse(f"module {name!r} (via {where})")
        return value
    if id(value) in rules.denied_ids:
        raise _refuse(where)
    if isinstance(value, _ProxyMeta):
        return value
    if isinstance(value, type) and issubclass(value, type):
        raise _refuse(f"{where} (a metaclass: calling it creates classes)")
    if isinstance(value, _CALLABLE_TYPES):
        mod = getattr(value, "__module__", None)
        if isinstance(mod, str) and (mod.split(".")[0] in rules.denied_value_modules
                                     or rules.in_forbidden_submodule(mod)):
            raise _refuse(f"{where} (defined in {mod})")
        if getattr(value, "__name__", None) in rules.value_leaves:
            key = _value_key(value)
            if key in rules.denied_values:
                raise _refuse(f"{where} ({key}: raw memory)")
            limits = rules.call_limits.get(key or "")
            if limits is not None and key is not None:
                return _limited(value, key, limits)
    return value


def _safe_format(fmt: str) -> Callable[..., str]:
    """str.format, refusing fields that access attributes (`{0.__class__}`)."""
    def fmt_call(*args: Any, **kwargs: Any) -> str:
        problem = format_field_problem(fmt)
        if problem is not None:
            raise ValueError(f"format field {problem!r} accesses attributes; "
                             "pass the values themselves")
        return fmt.format(*args, **kwargs)
    return fmt_call


def _unbound_format(fmt: Any, *args: Any, **kwargs: Any) -> str:
    if not isinstance(fmt, str):
        raise TypeError("str.format needs a str")
    return _safe_format(str(fmt))(*args, **kwargs)


def _make_getattr(rules: _Rules) -> Callable[..., Any]:
    def guarded_getattr(obj: Any, name: Any, default: Any = _RAISE) -> Any:
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
            value = getattr(obj, name)
        except AttributeError:
            if default is _RAISE:
                raise AttributeError(f"{type(obj).__name__!r} object has no attribute "
                                     f"{name!r}") from None  # no .obj handed out
            return default
        return _check_value(value, rules, f"attribute {name!r}")
    return guarded_getattr


def _make_getitem(rules: _Rules) -> Callable[[Any, Any], Any]:
    def guarded_getitem(obj: Any, key: Any) -> Any:
        return _check_value(obj[key], rules, "item")
    return guarded_getitem


def _guarded_iter(ob: Any) -> Iterator[Any]:
    """The iteration guard: plain iteration (no per-item policy in this design), in one place."""
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


def _write_guard(ob: Any) -> Any:
    if type(ob) in (dict, list):
        return ob
    return _WriteProxy(ob)


_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow,
    "<<=": operator.ilshift, ">>=": operator.irshift, "&=": operator.iand,
    "|=": operator.ior, "^=": operator.ixor, "@=": operator.imatmul,
}


def _inplacevar(op: str, x: Any, y: Any) -> Any:
    fn = _INPLACE.get(op)
    if fn is None:
        raise SyntaxError(f"unsupported augmented assignment {op!r}")
    return fn(x, y)


def _apply(func: Any, *args: Any, **kwargs: Any) -> Any:
    """`f(*args, **kwargs)` calls: keyword names are data here, so `_` names are refused
    (`Function('f', **{computed: ...})` would set dunders on a new class)."""
    for key in kwargs:
        if key.startswith("_"):
            raise TypeError(f"keyword argument {key!r}: names starting with '_' are not "
                            "available in the fnforge sandbox")
    return func(*args, **kwargs)


class _Printer:
    """RestrictedPython's print target: writes through to sys.stdout (the runner caps it) and
    keeps the text for `printed`."""

    def __init__(self, _getattr_: Any = None) -> None:
        self.txt: list[str] = []

    def write(self, text: str) -> None:
        self.txt.append(text)
        sys.stdout.write(text)

    def __call__(self) -> str:
        return "".join(self.txt)

    def _call_print(self, *objects: Any, **kwargs: Any) -> None:
        if kwargs.get("file") is not None:
            raise TypeError("print(file=...) is not available; print to standard output")
        kwargs["file"] = self
        print(*objects, **kwargs)


# ------------------------------------------------------------------ builtins


def _g_tuple(it: Iterable[Any] = ()) -> tuple[Any, ...]:
    return tuple(_guarded_iter(it))


def _g_sorted(it: Iterable[Any], *, key: Any = None, reverse: bool = False) -> list[Any]:
    return sorted(_guarded_iter(it), key=key, reverse=reverse)


def _g_zip(*its: Iterable[Any], strict: bool = False) -> Iterator[tuple[Any, ...]]:
    return zip(*(_guarded_iter(i) for i in its), strict=strict)


def _g_bytes(source: Any = b"", *args: Any) -> bytes:
    if isinstance(source, int | str | bytes | bytearray) or args:
        return bytes(source, *args)
    return bytes(_guarded_iter(source))


def _g_reversed(seq: Any) -> Iterator[Any]:
    _guarded_iter(seq)  # same check as any iteration; reversed needs the sequence itself
    return reversed(seq)


def _make_type(rules: _Rules) -> type:
    """The guarded `type`: one argument only, and what it returns is checked like an attribute
    value, so it never hands out a callable metaclass (`type(int)` is this guarded type again,
    `type(f)` for a sympy function class a metaclass that refuses calls) nor an unlimited
    ndarray constructor."""
    guarded: list[type] = []

    def g_type(obj: Any, *rest: Any) -> Any:
        if rest:
            raise TypeError("type() with more than one argument is not available")
        if isinstance(obj, _ProxyMeta):
            return guarded[0]
        result = type(obj)
        if result is type:
            return guarded[0]
        if issubclass(result, type):
            return _metaclass_proxy(result)
        return _check_value(result, rules, "type()")

    guarded.append(_proxy_type(type, g_type))
    return guarded[0]


def _make_hasattr(getattr_: Callable[..., Any]) -> Callable[[Any, Any], bool]:
    def guarded_hasattr(obj: Any, name: Any) -> bool:
        try:
            getattr_(obj, name)
        except AttributeError:
            return False
        return True
    return guarded_hasattr


def _make_import(rules: _Rules, getattr_: Callable[..., Any]) -> Callable[..., Any]:
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
    from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence

    rules = _rules(policy)
    getattr_ = _make_getattr(rules)
    out: dict[str, Any] = {n: getattr(builtins, n) for n in rules.allowed_builtins
                           if hasattr(builtins, n) and n not in rules.forbidden_builtins}
    out.update({
        "tuple": _proxy_type(tuple, _g_tuple),
        "type": _make_type(rules),
        "bytes": _proxy_type(bytes, _g_bytes),
        "sorted": _g_sorted, "zip": _g_zip, "reversed": _g_reversed,
        "hasattr": _make_hasattr(getattr_),
        "StatisticsError": _statistics_error(),
        "__import__": _make_import(rules, getattr_),
        "_getattr_": getattr_,
        "_getitem_": _make_getitem(rules),
        "_getiter_": _guarded_iter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_write_": _write_guard,
        "_inplacevar_": _inplacevar,
        "_apply_": _apply,
        "_print_": _Printer,
    })
    return out


def _statistics_error() -> type:
    import statistics

    return statistics.StatisticsError


def compile_function(code: str, policy: dict[str, Any], restricted: bool) -> CodeType:
    """Compile only, nothing runs: the runner compiles each function once and its children
    exec the code object, so no call pays for RestrictedPython's compiler."""
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
    key = (id(policy), restricted)
    template = _builtins_cache.get(key)
    if template is None:
        if restricted:
            template = guarded_builtins(policy)
        else:
            rules = _rules(policy)
            template = dict(vars(builtins))
            template["__import__"] = _make_import(rules, _make_getattr(rules))
        _builtins_cache[key] = template
    return dict(template)


def load_function(code: str, name: str, policy: dict[str, Any], restricted: bool,
                  compiled: CodeType | None = None) -> Callable[..., Any]:
    """Exec `code` (or its precompiled code object) in a fresh guarded namespace; return the
    function `name`."""
    if compiled is None:
        compiled = compile_function(code, policy, restricted)
    _apply_library_limits(_rules(policy))
    namespace: dict[str, Any] = {"__builtins__": _builtins_for(policy, restricted),
                                 "__name__": "fnforge_function"}
    exec(compiled, namespace)
    func = namespace.get(name)
    if not callable(func):
        raise NameError(f"the code does not define a function named {name!r}")
    return func  # type: ignore[no-any-return]


# ------------------------------------------------------------------ audit hook

_state: dict[str, Any] = {"paused": False, "emit": None, "rules": None, "installed": False,
                          "count": 0, "compiling": 0}
_local = threading.local()
_MAX_EVENTS = 100
_MAX_CODE_OBJECTS = 10_000
_AST_PARSE = ast.parse.__code__
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def audit_pause() -> None:
    """Stop reporting (the runner's own I/O follows)."""
    _state["paused"] = True


def audit_resume() -> None:
    _state["paused"] = False


@contextlib.contextmanager
def audit_paused() -> Iterator[None]:
    audit_pause()
    try:
        yield
    finally:
        audit_resume()


def _report(event: dict[str, str]) -> None:
    emit = _state["emit"]
    if emit is None or _state["paused"] or _state["count"] >= _MAX_EVENTS:
        return
    _state["count"] += 1
    with contextlib.suppress(BaseException):
        emit(event)


class _AuditRules:
    def __init__(self, policy: dict[str, Any]) -> None:
        a = policy.get("audit", {})
        self.forbidden = frozenset(a.get("forbidden_events", ()))
        self.prefixes = tuple(a.get("forbidden_prefixes", ()))
        self.user_frame = frozenset(a.get("user_frame_events", ()))
        self.listing = frozenset(a.get("listing_events", ()))
        self.import_deny = frozenset(a.get("import_deny", ()))
        self.block = bool(a.get("block", True))
        self.block_events = frozenset(a.get("block_events", ()))
        self.block_prefixes = tuple(a.get("block_prefixes", ()))
        self.filename = str(policy.get("user_filename", "<fnforge-function>"))
        self.string_events = frozenset(a.get("string_code_events", ()))
        self.module_code_prefixes = tuple(a.get("module_code_filename_prefixes", ("<frozen ",)))
        self.max_scanned = int(a.get("max_scanned_source_chars", 262_144))
        self.max_recorded = int(a.get("max_recorded_source_chars", 240))
        self.string_denied = frozenset(policy.get("string_code_denied_names", ()))
        self.string_denied_keywords = frozenset(policy.get("string_code_denied_keywords", ()))
        self.string_private = [re.compile(p) for p in policy.get("string_code_private_names", ())]
        self.dunder_re = re.compile(policy.get("dunder_string_pattern", r"__[A-Za-z0-9_]+__"))
        prefixes = [p.rstrip("/") for p in a.get("read_only_prefixes", ())]
        if a.get("allow_sys_path_reads", True):
            for p in sys.path:
                if p and os.path.isabs(p):
                    p = os.path.normpath(p)
                    if p not in ("/", "/tmp", "/proc", "/dev") and \
                            not p.startswith(("/tmp/", "/proc/", "/dev/", "/sys/")):
                        prefixes.append(p)
        self.read_prefixes = tuple(sorted(set(prefixes)))

    def readable(self, path: str) -> bool:
        # "/usr/lib/python3" also covers "/usr/lib/python3.11": prefixes are plain string prefixes
        path = os.path.normpath(os.path.join(os.getcwd(), path))
        if not path.startswith(self.read_prefixes):
            return False
        real = os.path.realpath(path)
        return real == path or real.startswith(self.read_prefixes)

    def module_code(self, filename: str) -> bool:
        """Code loaded from a file of the installation (or frozen into the interpreter): a
        module being imported, not code compiled from a string."""
        if filename.startswith(self.module_code_prefixes):
            return True
        return os.path.isabs(filename) and \
            os.path.normpath(filename).startswith(self.read_prefixes)

    def bad_name(self, name: str) -> bool:
        """A name string-compiled code may not use (each part of a dotted import name)."""
        for part in name.split("."):
            if part.startswith("_"):
                if not any(r.fullmatch(part) for r in self.string_private):
                    return True
            elif part in self.string_denied:
                return True
        return False

    def bad_constant(self, value: str) -> bool:
        """A string constant of string-compiled code that names a dunder or is a format string
        with attribute fields (`'{0.gi_frame}'.format(g)` runs unguarded there)."""
        if self.dunder_re.search(value):
            return True
        return "{" in value and format_field_problem(value) is not None


def _path_of(arg: Any) -> str | None:
    if isinstance(arg, bytes):
        return arg.decode("utf-8", "surrogateescape")
    if isinstance(arg, str):
        return arg
    if isinstance(arg, os.PathLike):
        p = os.fspath(arg)
        return p.decode("utf-8", "surrogateescape") if isinstance(p, bytes) else p
    return None


def _violation(event: str, args: tuple[Any, ...], r: _AuditRules) -> str | None:
    """The detail of a forbidden event, or None when the event is allowed."""
    if event in r.forbidden or event.startswith(r.prefixes):
        return _brief(args)
    if event == "open":
        path, mode, flags = [*args, None, None, None][:3]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and bool(flags & _WRITE_FLAGS))
        if isinstance(path, int):
            return f"fd {path} mode {mode!r}" if writing else None
        p = _path_of(path)
        if p is None:
            return None
        if writing:
            return f"{p} for writing (mode {mode!r}, flags {flags!r})"
        return None if r.readable(p) else f"{p} (outside the allowed read-only paths)"
    if event in r.listing:
        p = _path_of(args[0]) if args else None
        if p is None:
            p = "." if not args or args[0] is None else None
        if p is None:
            return None
        return None if r.readable(p) else f"{p} (listing outside the allowed paths)"
    if event == "import":
        name = args[0] if args and isinstance(args[0], str) else ""
        return f"{name} (a forbidden module)" if name.split(".")[0] in r.import_deny else None
    if event in r.user_frame:
        return _from_user_frame(event, args, r)
    return None


def _from_user_frame(event: str, args: tuple[Any, ...], r: _AuditRules) -> str | None:
    try:
        frame = sys._getframe(3)  # 0 this, 1 _violation, 2 _hook, 3 the code raising the event
    except ValueError:
        return None
    if frame.f_code.co_filename != r.filename:
        return None
    return f"{_brief(args)} from the generated code"


def _string_code_violation(event: str, args: tuple[Any, ...], r: _AuditRules,
                           caller: CodeType) -> str | None:
    """The string-evaluation chokepoint (policy AUDIT_RULES.string_code_events): `exec` of a code
    object and `compile` of a source that did not come from a file of the installation, nor
    from the runner itself, must not name anything the policy refuses. The `exec` check is the
    precise one (the names a code object really looks up); the `compile` check only refuses what
    is unambiguous in source text (dunders, refused attributes) and remembers the text, bounded,
    so that a refused `exec` can show reviewers the source it came from."""
    if os.path.dirname(caller.co_filename) == _RUNNER_DIR:
        return None  # the runner's own compile/exec (load_function, an agent's code block)
    if caller is _AST_PARSE:
        return None  # parsing only (traceback carets, sympy's evaluate=False): no code results;
        # running the tree needs a compile of the AST and an exec, both checked
    if event == "exec":
        code = args[0] if args else None
        if not isinstance(code, CodeType) or r.module_code(code.co_filename):
            return None
        bad = _bad_code(code, r)
        if not bad:
            return None
        last = getattr(_local, "last_source", None)
        source = f": {last[1]!r}" if last and last[0] == code.co_filename else ""
        return (f"code compiled from a string ({code.co_filename}) uses "
                f"{', '.join(bad[:6])}{source}")
    if _state["compiling"]:
        return None  # compile_function: RestrictedPython compiling the generated function
    source, filename = (*args, None, None)[:2]
    fname = _path_of(filename) or "<string>"
    if r.module_code(fname):
        return None
    text = source.decode("utf-8", "replace") if isinstance(source, bytes) else \
        source if isinstance(source, str) else f"<{type(source).__name__} tree>"
    _local.last_source = (fname, text[:r.max_recorded])
    bad = _bad_source(source, r)
    if not bad:
        return None
    return f"compiling {fname} refused, it uses {', '.join(bad[:6])}: {text[:r.max_recorded]!r}"


def _bad_code(code: CodeType, r: _AuditRules) -> list[str]:
    """Refused names and constants of a code object and every code object nested in it."""
    bad: list[str] = []
    stack, seen = [code], 0
    while stack and seen < _MAX_CODE_OBJECTS:
        co = stack.pop()
        seen += 1
        bad += [n for n in co.co_names if r.bad_name(n)]
        for const in co.co_consts:
            if isinstance(const, CodeType):
                stack.append(const)
            elif isinstance(const, str) and r.bad_constant(const):
                bad.append(repr(const[:40]))
            elif isinstance(const, tuple | frozenset):  # keyword names of calls, literals
                bad += [repr(c[:40]) for c in const if isinstance(c, str)
                        and (r.bad_constant(c) or c in r.string_denied_keywords
                             or (c.startswith("_") and r.bad_name(c)))]
    if stack:
        bad.append("more nested code than can be checked")
    return sorted(set(bad))


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__") and len(name) > 4


def _bad_source(source: Any, r: _AuditRules) -> list[str]:
    """What a source about to be compiled unambiguously uses: dunder names and strings, and
    refused attribute names (`x.gi_frame`, `m._os`). Other names may be parameters (lambdify
    arguments, namedtuple fields) and are left to the `exec` check of the code object. Sources
    too long to scan cheaply, or that do not tokenize, are left to it too."""
    bad: set[str] = set()
    if isinstance(source, ast.AST):
        for node in ast.walk(source):
            if isinstance(node, ast.Name) and _is_dunder(node.id):
                bad.add(node.id)
            elif isinstance(node, ast.Attribute) and r.bad_name(node.attr):
                bad.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and r.dunder_re.search(node.value):
                bad.add(repr(node.value[:40]))
        return sorted(bad)
    if isinstance(source, bytes):
        source = source.decode("utf-8", "replace")
    if not isinstance(source, str) or len(source) > r.max_scanned:
        return []
    after_dot = False
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.NAME:
                name = tok.string if tok.string.isascii() else \
                    unicodedata.normalize("NFKC", tok.string)
                if _is_dunder(name) or (after_dot and r.bad_name(name)):
                    bad.add(name)
            elif tok.type == tokenize.STRING and r.dunder_re.search(tok.string):
                bad.add(tok.string[:40])
            if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
                after_dot = tok.type == tokenize.OP and tok.string == "."
    except (tokenize.TokenError, SyntaxError, ValueError):
        pass
    return sorted(bad)


def _brief(args: tuple[Any, ...]) -> str:
    parts = []
    for a in args[:3]:
        if isinstance(a, str | bytes | int | float | bool) or a is None:
            parts.append(repr(a)[:120])
        else:
            parts.append(type(a).__name__)
    return ", ".join(parts)


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if _state["paused"] or getattr(_local, "busy", False):
        return
    r: _AuditRules | None = _state["rules"]
    if r is None:
        return
    _local.busy = True
    try:
        try:
            detail = _violation(event, args, r)
        except Exception:
            detail = None
        if detail is None and event in r.string_events:
            try:
                detail = _string_code_violation(event, args, r, sys._getframe(1).f_code)
            except Exception as exc:  # fail closed: string code that cannot be checked
                detail = f"string-compiled code could not be checked ({type(exc).__name__})"
        if detail is None:
            return
        _report({"event": event, "detail": detail})
    finally:
        _local.busy = False
    if event == "sys.addaudithook":
        raise RuntimeError("no further audit hooks")  # the new hook is silently not added
    if r.block or event in r.block_events or event.startswith(r.block_prefixes):
        raise PermissionError(f"{event} is not allowed in the fnforge sandbox")


def install_audit_hook(policy: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> None:
    """Record (and block) forbidden events from now on in this process; see the module doc."""
    _state["rules"] = _AuditRules(policy)
    _state["emit"] = emit
    _state["count"] = 0
    _state["paused"] = False
    if not _state["installed"]:
        sys.addaudithook(_hook)
        _state["installed"] = True
