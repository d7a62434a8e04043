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
and record what code tried, as evidence for reviewers.

One value check (`_check_value`) for every value restricted code gets, however it gets it:
- from an attribute or an item (`_getattr_`, `_getitem_`, `from m import x`), from a call
  (every call is compiled to a call guard, `_call0_`..`_call3_`, `_call_`, `_apply_`: its result
  is checked, so `basic_fns.get('op')` or `typing.get_origin(typing.Type)` never hands out the
  real `type`), from an iteration (`_getiter_`: `for`, comprehensions, generator expressions),
  from an unpacking (`a, *b = x`), as a parameter (every `def` and `lambda` checks its
  parameters on entry: `functools.reduce`, `map`, `filter`, `sorted(key=...)` call them back
  with values of their own), as the target of `with ... as` and as the value of `yield`;
- refused: a module unless it is the genuine, importable module of that name; the real `type`
  and every other metaclass; the refused builtins (by identity); anything defined in a forbidden
  module or submodule; RUNTIME_DENIED_VALUES (as_strided, DummyArray, scalar, update_wrapper,
  ...); RUNTIME_DENIED_CONTAINERS (library containers that hold such values, by identity); a
  class, or an instance of one, that defines an array hook (RUNTIME_ARRAY_HOOKS:
  `__array_interface__`, ...) as data or as code that is not a library's (a class made at run
  time); a `functools.partial` or lru_cache wrapper of any of these;
- limited: callables in RUNTIME_CALL_LIMITS (ndarray(buffer=), sympy.Function(name, bases, ns),
  resize(refcheck=)) come wrapped, and LIBRARY_CALL_LIMITS are enforced inside the library
  itself (sympy's UndefinedFunction), for code that reaches the real object without the guards;
- wrapped: a function-like callable (function, builtin, method, partial, lru_cache wrapper) that
  is not the code's own nor a builtin that never calls anything is handed out as `_Checked`:
  whoever calls it later (the code, library code, C code such as `map(map, [f], ...)`) calls it
  through the call guard, so its result is checked before anything else sees it.
The call guard also checks the callee at the point of use (the real `type` becomes the guarded
one; a metaclass, refused builtin or refused value is refused however the code got it) and every
argument, and refuses `_` keyword names. The code's own undecorated defs whose name is bound
nowhere else are called directly (their parameters are checked on entry). The guards that call
library code run with the generated function's globals and read none of them, so library code
that looks at its caller's frame (`sympy.var`, namedtuple) sees the generated function.
Also: a `type` that never hands out a callable metaclass (`type(int)` is the guarded type again)
and refuses three arguments; `str.format` (bound, unbound, and through any str subclass such as
np.str_) refuses attribute fields.

The audit hook: forbidden events (processes, sockets, FFI, writes, reads outside the Python
installation, tracing hooks, off-list imports) and the string-evaluation chokepoint: every
`compile` and `exec` of code that was not loaded from a file of the installation and not
compiled by the runner itself is refused when its names include a dunder, a `_` name, a
forbidden builtin, module or attribute, an attribute lookup by data (`format`, `format_map`,
`update_wrapper`, ...: STRING_CODE_DATA_LOOKUPS) or a refused container's name (sympify,
lambdify, typing forward references, mpmath.identify, namedtuple: one check for the whole
family, whatever the alias). Parsing alone (ast.parse: traceback carets) is not checked: its
tree runs only after a compile and an exec, which are.

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
  done after an escape (such code can remove or blind this hook).

Protocol with the runner:
- `compile_function(code, policy, restricted)` compiles only (compile_restricted with the policy
  class of restricted_policy.py when restricted), nothing runs.
- `load_function(code, name, policy, restricted, compiled=None)` execs the code (or its
  precompiled code object) in a fresh namespace whose builtins are the guarded set below (the
  call guards bound to that namespace, which is recorded: its functions are the code's own);
  returns the callable `name`. Failures raise ordinary exceptions (SyntaxError, ImportError,
  NameError...).
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
import functools
import io
import os
import re
import sys
import threading
import tokenize
import types
import typing
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import CodeType
from typing import Any, TypeVar

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
_identity: Callable[[object], int] = object.__hash__
"""An identity key of a live object, like `id()` but without its audit event (`builtins.id`
calls every audit hook, which the guards' hot paths cannot afford): the default hash is the
object's address, rotated, whatever `__hash__` the object's class defines. Every cache keyed by
it also compares the object itself with `is`."""
_HANDED_OUT_CODE: set[CodeType] = set()
"""Code of the wrappers this module hands to restricted code (the guarded `str.format`, the
limited constructors, `_call_`, ...): functions of this module pass the value check only if
they are one of these."""

_F = TypeVar("_F", bound=Callable[..., Any])


def _handed_out(func: _F) -> _F:
    _HANDED_OUT_CODE.add(func.__code__)
    return func


_GUARD_NAMESPACES: dict[int, dict[str, Any]] = {}
"""identity -> globals of this module and of the isolated guards (`_isolated`): a function
whose globals are one of these is this module's own."""


def _guard_function(value: Any, cls: type) -> bool:
    """One of the wrappers this module hands out (reading `__code__` raises an audit event, so
    it is read only for functions of this module)."""
    func = value.__func__ if cls is types.MethodType else value
    if type(func) is not types.FunctionType:
        return False
    namespace = func.__globals__
    if _GUARD_NAMESPACES.get(_identity(namespace)) is not namespace:
        return False
    return func.__code__ in _HANDED_OUT_CODE


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
        self.denied_ids = frozenset(_identity(getattr(builtins, n))
                                    for n in self.forbidden_builtins if hasattr(builtins, n))
        self.denied_containers = tuple(policy.get("runtime_denied_containers", ()))
        self.array_hooks = frozenset(policy.get("runtime_array_hooks", ()))
        self.raw_memory_hooks = frozenset(policy.get("runtime_raw_memory_hooks", ()))
        # run-time state of this process (each call process starts from a zygote's copy)
        self.safe_types: set[type] = {*_FAST_TYPES, _Checked}
        """Classes whose instances pass the value check by their class alone: plain data from
        the start, then every class whose instances passed it once."""
        self.callees: dict[int, tuple[Any, Any]] = {}
        """identity -> (value, what the code gets instead): verdicts of the value check for
        long-lived callables and classes (functions, classes, module-level builtins)."""
        self.user_namespaces: dict[int, dict[str, Any]] = {}
        """identity -> the namespace of each generated function loaded in this process: its
        functions (and lambdas) are the generated code's own."""
        self.wrapped: dict[int, tuple[Any, Any]] = {}
        """identity -> (long-lived function-like, the `_Checked` handed out for it)."""
        self.call_guards: tuple[Callable[..., Any], ...] = ()
        """The call guards (`_make_calls`): the generic one, then those for 0 to 3 arguments."""
        self.pure_ids = frozenset(_identity(f) for f in _PURE_BUILTINS)
        self.plain_callees: dict[int, Any] = {}
        """identity -> callable, for the long-lived callables the call guard calls as they
        are (the common case: one dict lookup per call)."""
        self.container_ids: dict[int, Any] = {}
        self.container_modules = -1  # len(sys.modules) when container_ids was resolved

    def denied_container(self, value: Any) -> bool:
        """True when `value` is one of RUNTIME_DENIED_CONTAINERS (resolved again whenever a
        module was imported since the last resolution)."""
        if self.container_modules != len(sys.modules):
            self._resolve_containers()
        return _identity(value) in self.container_ids

    def _resolve_containers(self) -> None:
        self.container_modules = len(sys.modules)
        for path in self.denied_containers:
            parts = path.split(".")
            for cut in range(len(parts) - 1, 0, -1):
                owner = sys.modules.get(".".join(parts[:cut]))
                if owner is not None:
                    break
            else:
                continue
            try:
                for attr in parts[cut:]:
                    owner = getattr(owner, attr)
            except Exception:
                continue
            self.container_ids[_identity(owner)] = owner

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
    key = _identity(policy)
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
        """`tuple[int, ...]`, `type[int]`: an alias of the wrapped class, never of the real one
        (calling `type[int]('V', bases, ns)` calls its origin)."""
        return types.GenericAlias(cls, item)

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
    hit = _class_proxies.get((_identity(real), kind))
    if hit is None or hit[0] is not real:
        hit = _class_proxies[(_identity(real), kind)] = (real, _proxy_type(real, call))
    return hit[1]


def _refusing_call(what: str) -> Callable[..., Any]:
    @_handed_out
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

    @_handed_out
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


_FAST_TYPES: frozenset[type] = frozenset({
    int, float, complex, bool, str, bytes, type(None), range, slice, type(Ellipsis),
    type(NotImplemented)})
"""Values of these exact classes are never refused: the check costs one set lookup."""

_CONTAINER_TYPES: frozenset[type] = frozenset({dict, list, tuple, set, frozenset})
"""Containers pass by identity (RUNTIME_DENIED_CONTAINERS aside): their items are checked when
the code takes them out (item access, iteration, unpacking, a call's result)."""

_LRU_WRAPPER = type(functools.lru_cache(maxsize=None)(len))
_ALIAS_TYPES: tuple[type, ...] = (types.GenericAlias,
                                  getattr(typing, "_BaseGenericAlias", types.GenericAlias))
"""Generic aliases (`list[int]`, `typing.List[int]`): calling one calls its origin, so an alias
is checked through its origin, every time (never learned by its class)."""

_WRAP_TYPES: frozenset[type] = frozenset({
    types.FunctionType, types.BuiltinFunctionType, types.MethodType,
    types.MethodDescriptorType, types.WrapperDescriptorType, types.MethodWrapperType,
    types.ClassMethodDescriptorType, functools.partial, _LRU_WRAPPER})
"""Function-like callables are handed to restricted code wrapped (`_Checked`, `_hand_out`):
whoever calls them later (the code, `map`, `functools.reduce`, a sort key, numpy), the call
goes through the call guard, so what they return is checked before any other code sees it.
Classes are not wrapped (`isinstance(x, int)` needs the class); they are checked as values."""

_PURE_BUILTINS = (abs, all, any, bin, callable, chr, divmod, format, hash, hex, isinstance,
                  issubclass, len, max, min, oct, ord, pow, repr, round, sum)
"""Builtins that never call what they are given and return it or plain values: their
arguments are not wrapped, and they are not wrapped as arguments (`functools.reduce(max, xs)`
stays a C loop)."""

_HARMLESS_HOOK_TYPES = (types.GetSetDescriptorType, types.MemberDescriptorType,
                        types.MethodDescriptorType, types.WrapperDescriptorType,
                        types.ClassMethodDescriptorType, types.BuiltinFunctionType,
                        type(None))
_TYPE_MRO: Callable[[type], tuple[type, ...]] = vars(type)["__mro__"].__get__
"""The real MRO and namespace of a class, whatever its metaclass claims."""
_TYPE_DICT: Callable[[type], Any] = vars(type)["__dict__"].__get__
_MAX_VERDICTS = 8192


def _library_code(value: Any) -> bool:
    """A function (or property, classmethod, staticmethod of one) whose code was loaded from a
    file: a library's, never code the generated function or a string evaluation made."""
    if isinstance(value, property):
        return all(_library_code(f) for f in (value.fget, value.fset, value.fdel)
                   if f is not None)
    if isinstance(value, classmethod | staticmethod):
        value = value.__func__
    return type(value) is types.FunctionType and os.path.isabs(value.__code__.co_filename)


def _hook_problem(klass: type, rules: _Rules) -> str | None:
    """The first array hook (RUNTIME_ARRAY_HOOKS: `__array_interface__`, ...) defined by a
    class of `klass`'s MRO as anything but C code, library code, None or (for hooks that do not
    describe memory) a number: such a class was made at run time, and numpy would read its
    hook (`{'data': (address, False), ...}`) as a description of raw memory."""
    for base in _TYPE_MRO(klass):
        namespace = _TYPE_DICT(base)
        for name in rules.array_hooks.intersection(namespace):
            value = namespace[name]
            if isinstance(value, _HARMLESS_HOOK_TYPES) or _library_code(value):
                continue
            if type(value) in (int, float) and name not in rules.raw_memory_hooks:
                continue
            return f"{getattr(base, '__qualname__', '?')}.{name}"
    return None


def _remember(value: Any, result: Any, rules: _Rules) -> Any:
    if len(rules.callees) < _MAX_VERDICTS:
        rules.callees[_identity(value)] = (value, result)
    return result


def _check_value(value: Any, rules: _Rules, where: str) -> Any:
    """What restricted code gets for a value it reached (an attribute, an item, a call's
    result, an iteration's item, a parameter): the value, refused when it reaches a forbidden
    module, a metaclass, raw memory or an evaluator (`_verdict`), and handed out wrapped when
    it is a function-like callable (`_hand_out`). Plain data, containers and instances of
    classes already seen cost a set lookup."""
    if type(value) in rules.safe_types:
        return value
    return _hand_out(_verdict(value, rules, where), rules)


def _own_function(value: Any, cls: type, rules: _Rules) -> bool:
    """A function (or lru_cache wrapper of one) of the generated code: its calls are guarded
    and its parameters checked on entry."""
    if cls is _LRU_WRAPPER:
        value = getattr(value, "__wrapped__", None)
    if type(value) is not types.FunctionType:
        return False
    namespace = value.__globals__
    return rules.user_namespaces.get(_identity(namespace)) is namespace


def _hand_out(value: Any, rules: _Rules) -> Any:
    """A function-like callable (`_WRAP_TYPES`) as restricted code may hold it: wrapped
    (`_Checked`), unless it is the code's own, one of this module's guards or a builtin that
    never calls anything (`_PURE_BUILTINS`). Restricted code then never holds a raw library
    function, so every call of one, by whoever makes it (library code, C code, `map(map,
    [f], ...)`), goes through the call guard and has its result checked."""
    cls = type(value)
    if cls not in _WRAP_TYPES or not rules.call_guards:
        return value
    key = _identity(value)
    hit = rules.wrapped.get(key)
    if hit is not None and hit[0] is value:
        return hit[1]
    if key in rules.pure_ids or _own_function(value, cls, rules) or (
            (cls is types.FunctionType or cls is types.MethodType)
            and _guard_function(value, cls)):
        return value
    wrapped = _Checked(value, rules.call_guards)
    if _long_lived(value, cls) and len(rules.wrapped) < _MAX_VERDICTS:
        rules.wrapped[key] = (value, wrapped)
    return wrapped


def _verdict(value: Any, rules: _Rules, where: str) -> Any:
    """The value check without the wrapping of function-likes: the value itself, its limited
    form (RUNTIME_CALL_LIMITS), or a refusal. Long-lived callables and classes cost a dict
    lookup (their verdicts are kept)."""
    cls = type(value)
    if cls in rules.safe_types:
        return value
    if cls in _CONTAINER_TYPES:
        if rules.denied_container(value):
            raise _refuse(f"{where} (a container of values the sandbox refuses)")
        return value
    if cls is types.BuiltinFunctionType:  # `items.append`: only the limits by name apply
        bound = value.__self__
        if bound is not None and not isinstance(bound, types.ModuleType) \
                and value.__name__ not in rules.value_leaves:
            return value
    elif cls is types.MethodType:  # a bound Python method: the verdict of its function
        func = value.__func__
        hit = rules.callees.get(_identity(func))
        if hit is not None and hit[0] is func and hit[1] is func:
            return value
    hit = rules.callees.get(_identity(value))
    if hit is not None and hit[0] is value:
        return hit[1]
    return _check_new_value(value, cls, rules, where)


def _check_new_value(value: Any, cls: type, rules: _Rules, where: str) -> Any:
    """_check_value for a value that is not plain data nor of a class seen before. Decided by
    the value's real class (`type(v)`), never by its `__class__`, which an object can fake."""
    if issubclass(cls, types.ModuleType):
        name = getattr(value, "__name__", None)
        if not isinstance(name, str) or sys.modules.get(name) is not value \
                or not rules.module_allowed(name):
            raise _refuse(f"module {name!r} (via {where})")
        return _remember(value, value, rules)
    if _identity(value) in rules.denied_ids:
        raise _refuse(where)
    if issubclass(cls, _ProxyMeta) or cls is _Checked:
        return value
    if (cls is types.FunctionType or cls is types.MethodType) and _guard_function(value, cls):
        return value
    if rules.denied_container(value):
        raise _refuse(f"{where} (a container of values the sandbox refuses)")
    if issubclass(cls, type):
        if issubclass(value, type):
            raise _refuse(f"{where} (a metaclass: calling it creates classes)")
        hook = _hook_problem(value, rules)
        if hook is not None:
            raise _refuse(f"{where} (a class made at run time with the array hook {hook})")
    elif issubclass(cls, functools.partial):
        _verdict(value.func, rules, where)
        for item in (*value.args, *value.keywords.values()):
            _verdict(item, rules, where)
        return value
    elif cls is _LRU_WRAPPER:
        _verdict(getattr(value, "__wrapped__", None), rules, where)
        return value
    elif issubclass(cls, _ALIAS_TYPES):  # `type[Basic](name, bases, ns)` calls `type`
        if getattr(value, "_inst", True):
            _verdict(value.__origin__, rules, where)
        return value
    if issubclass(cls, _CALLABLE_TYPES):
        mod = getattr(value, "__module__", None)
        if isinstance(mod, str) and (mod.split(".")[0] in rules.denied_value_modules
                                     or rules.in_forbidden_submodule(mod)):
            raise _refuse(f"{where} (defined in {mod})")
        result = value
        if getattr(value, "__name__", None) in rules.value_leaves:
            key = _value_key(value)
            if key in rules.denied_values:
                raise _refuse(f"{where} ({key}: raw memory)")
            limits = rules.call_limits.get(key or "")
            if limits is not None and key is not None:
                result = _limited(value, key, limits)
        if _long_lived(value, cls):
            return _remember(value, result, rules)
        return result
    hook = _hook_problem(cls, rules)
    if hook is not None:
        raise _refuse(f"{where} (an instance of a class made at run time with the array hook "
                      f"{hook})")
    rules.safe_types.add(cls)
    return value


def _long_lived(value: Any, cls: type) -> bool:
    """Callables whose identity is stable (functions, classes, module-level builtins): their
    verdict can be kept. Bound methods are made anew at each attribute read."""
    if cls is types.BuiltinFunctionType:
        bound = getattr(value, "__self__", None)
        return bound is None or isinstance(bound, types.ModuleType)
    return cls is types.FunctionType or issubclass(cls, type)


class _Checked:
    # A function-like callable that restricted code handed to library code: every call of it,
    # whoever makes it (`map`, `functools.reduce`, a sort key, numpy's vectorize), goes through
    # the call guard, so its callee, arguments and result are checked. Otherwise it behaves
    # like the callable it wraps (equality, hash, repr, `__name__`, `__doc__`, public
    # attributes, read through `__getattr__`).

    __slots__ = ("_func", "_guards")

    def __init__(self, func: Any, guards: tuple[Callable[..., Any], ...]) -> None:
        self._func = func
        self._guards = guards  # the generic call guard, then the ones for 0 to 3 arguments

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs or len(args) > 3:
            return self._guards[0](self._func, *args, **kwargs)
        return self._guards[len(args) + 1](self._func, *args)

    def __getattr__(self, name: str) -> Any:
        if name in _Checked.__slots__:  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self._func, name)

    @property
    def __doc__(self) -> Any:  # type: ignore[override]
        return getattr(self._func, "__doc__", None)

    def __eq__(self, other: object) -> bool:
        return bool(self._func == (other._func if isinstance(other, _Checked) else other))

    def __hash__(self) -> int:
        return hash(self._func)

    def __repr__(self) -> str:
        return repr(self._func)


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


_GUARD_NAMESPACES[_identity(globals())] = globals()
