"""The value check inside the container: what restricted code may hold, decided by value.

Part of the Python-level filter that runner/guards.py describes (what it guarantees, which is
nothing against code that reaches the interpreter's internals, and what it does not see); the
call guards and builtins there use it. Standard library only, never `sandbox.*`; the rules arrive
as data (`policy`).

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
"""

from __future__ import annotations

import builtins
import functools
import os
import sys
import types
import typing
from collections.abc import Callable
from types import CodeType
from typing import Any, TypeVar

_identity: Callable[[object], int] = object.__hash__
"""An identity key of a live object, like `id()` but without its audit event (`builtins.id`
calls every audit hook, which the guards' hot paths cannot afford): the default hash is the
object's address, rotated, whatever `__hash__` the object's class defines. Every cache keyed by
it also compares the object itself with `is`."""
_HANDED_OUT_CODE: set[CodeType] = set()
"""Code of the wrappers the guards hand to restricted code (the guarded `str.format`, the
limited constructors, `_call_`, ...): functions of the guards' modules pass the value check
only if they are one of these."""

_F = TypeVar("_F", bound=Callable[..., Any])


def _handed_out(func: _F) -> _F:
    _HANDED_OUT_CODE.add(func.__code__)
    return func


_GUARD_NAMESPACES: dict[int, dict[str, Any]] = {}
"""identity -> globals of the modules whose functions restricted code is handed (this one,
guards.py) and of the isolated guards (`_isolated`): a function whose globals are one of these
is the guards' own."""


def _guard_function(value: Any, cls: type) -> bool:
    """One of the wrappers the guards hand out (reading `__code__` raises an audit event, so
    it is read only for functions of the guards' modules)."""
    func = value.__func__ if cls is types.MethodType else value
    if type(func) is not types.FunctionType:
        return False
    namespace = func.__globals__
    if _GUARD_NAMESPACES.get(_identity(namespace)) is not namespace:
        return False
    return func.__code__ in _HANDED_OUT_CODE


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


_GUARD_NAMESPACES[_identity(globals())] = globals()
