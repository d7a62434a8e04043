"""Second layer inside the container: RestrictedPython guards and the isolation audit hook.

Runs INSIDE the container next to untrusted code: standard library and RestrictedPython only,
never `sandbox.*`. All rules arrive as data (`policy`, from sandbox/policy.py policy_for_runner()).
The container is the boundary; these guards make escapes harder and make attempts visible.

Protocol with runner/server.py:
- `load_function(code, name, policy, restricted)` compiles (compile_restricted when restricted)
  and execs the code in a fresh namespace whose builtins are the guarded set below; returns the
  callable `name`. Failures raise ordinary exceptions (SyntaxError, ImportError, NameError...).
- `install_audit_hook(policy, emit)` adds one sys.addaudithook hook per process (a second call
  only replaces the rules and `emit`). `emit({"event", "detail"})` is called synchronously BEFORE
  the forbidden operation proceeds; with policy.audit.block the hook then raises PermissionError,
  so the operation does not happen at all.
- `audit_pause()` / `audit_resume()` (or `with audit_paused():`): the runner wraps its own I/O
  (writing the result, forking) in them so its events are never reported. Paused is a plain
  module flag: generated code cannot reach it (no `_` names, no module access to `guards`).
"""

from __future__ import annotations

import builtins
import contextlib
import operator
import os
import string
import sys
import threading
import types
from collections.abc import Callable, Iterable, Iterator
from types import CodeType
from typing import Any

_RAISE: Any = object()

# ------------------------------------------------------------------ policy, prepared once


class _Rules:
    """The runner policy turned into sets for O(1) checks."""

    def __init__(self, policy: dict[str, Any]) -> None:
        self.allowed_modules = frozenset(policy.get("allowed_modules", ()))
        self.forbidden_modules = frozenset(policy.get("forbidden_modules", ()))
        self.forbidden_submodules = tuple(policy.get("forbidden_submodules", ()))
        self.dangerous = frozenset(policy.get("dangerous_attributes", ()))
        self.module_name_attrs = frozenset(policy.get("module_name_attributes", ()))
        self.module_attrs = {k: frozenset(v) for k, v in
                             policy.get("forbidden_module_attributes", {}).items()}
        self.future = frozenset(policy.get("future_imports", ("annotations",)))
        self.denied_value_modules = frozenset(policy.get("runtime_denied_value_modules", ()))
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
        return not any(dotted == s or dotted.startswith(s + ".") for s in
                       self.forbidden_submodules)


_rules_cache: dict[int, _Rules] = {}


def _rules(policy: dict[str, Any]) -> _Rules:
    key = id(policy)
    rules = _rules_cache.get(key)
    if rules is None:
        rules = _rules_cache[key] = _Rules(policy)
    return rules


# ------------------------------------------------------------------ guarded access


def _refuse(what: str) -> AttributeError:
    return AttributeError(f"{what} is not available in the fnforge sandbox")


def _check_value(value: Any, rules: _Rules, where: str) -> Any:
    """Refuse values that reach a forbidden module or an evaluator, however they were reached."""
    if isinstance(value, types.ModuleType):
        if not rules.module_allowed(value.__name__):
            raise _refuse(f"module {value.__name__!r} (via {where})")
        return value
    if id(value) in rules.denied_ids:
        raise _refuse(where)
    if isinstance(value, types.FunctionType | types.BuiltinFunctionType | type
                  | types.MethodType):
        mod = getattr(value, "__module__", None)
        if isinstance(mod, str) and mod.split(".")[0] in rules.denied_value_modules:
            raise _refuse(f"{where} (defined in {mod})")
    return value


def _format_field_problem(fmt: str) -> str | None:
    try:
        parsed = list(string.Formatter().parse(fmt))
    except (ValueError, IndexError):
        return fmt[:40]
    for _lit, field, spec, _conv in parsed:
        if field and ("." in field or "[" in field):
            return field
        if spec:
            inner = _format_field_problem(spec)
            if inner:
                return inner
    return None


def _safe_format(fmt: str) -> Callable[..., str]:
    """str.format, refusing fields that access attributes or items (`{0.__class__}`)."""
    def fmt_call(*args: Any, **kwargs: Any) -> str:
        problem = _format_field_problem(fmt)
        if problem is not None:
            raise ValueError(f"format field {problem!r} accesses attributes or items; "
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
        if name.startswith("_") or name in rules.dangerous or name == "format_map":
            raise _refuse(f"attribute {name!r}")
        if name == "format":
            if isinstance(obj, str):
                return _safe_format(str(obj))
            if obj is str:
                return _unbound_format
        if isinstance(obj, types.ModuleType):
            modname = obj.__name__
            if name in rules.module_name_attrs or name in rules.forbidden_modules \
                    or name in rules.module_attrs.get(modname, ()):
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


class _ProxyMeta(type):
    """Metaclass of a wrapped builtin type: calls go through a guard function, while isinstance,
    issubclass, `tuple[int]` and `==` behave like the real type."""

    _real: type
    _call: Callable[..., Any]

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._call(*args, **kwargs)

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, cls._real)

    def __subclasscheck__(cls, sub: Any) -> bool:
        return issubclass(sub, cls._real)

    def __getitem__(cls, item: Any) -> Any:
        return cls._real[item]  # type: ignore[index]

    def __eq__(cls, other: object) -> bool:
        return other is cls or other is cls._real

    def __hash__(cls) -> int:
        return hash(cls._real)

    def __repr__(cls) -> str:
        return repr(cls._real)

    def __getattr__(cls, name: str) -> Any:
        return getattr(cls._real, name)


def _proxy_type(real: type, call: Callable[..., Any]) -> type:
    return _ProxyMeta(real.__name__, (), {"_real": real, "_call": staticmethod(call)})


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


def _g_type(obj: Any, *rest: Any) -> type:
    if rest:
        raise TypeError("type() with more than one argument is not available")
    return type(obj)


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
        refused = None
        if level != 0:
            refused = "relative import"
        elif not isinstance(name, str) or not rules.module_allowed(name):
            refused = f"import of {name!r}"
        else:
            for item in fromlist or ():
                if not isinstance(item, str) or item == "*" or item.startswith("_") \
                        or item in rules.dangerous or item in rules.module_name_attrs \
                        or item in rules.forbidden_modules \
                        or item in rules.module_attrs.get(name, ()) \
                        or any(f"{name}.{item}" == s for s in rules.forbidden_submodules):
                    refused = f"from {name} import {item}"
                    break
        if refused is not None:
            _report({"event": "import", "detail": f"{refused} refused by the guard"})
            raise ImportError(f"{refused} is not allowed in the fnforge sandbox")
        module = __import__(name, None, None, fromlist or (), 0)
        for item in fromlist or ():  # submodules named in fromlist were imported just now
            try:
                getattr_(module, item)
            except AttributeError as exc:
                raise ImportError(str(exc)) from None
        return module
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
        "type": _proxy_type(type, _g_type),
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
    """Compile only, nothing runs: the server compiles each function once and its children
    exec the code object (fork shares it), so no call pays for RestrictedPython's compiler."""
    rules = _rules(policy)
    if not restricted:
        return compile(code, rules.filename, "exec")
    from RestrictedPython.compile import compile_restricted_exec

    result = compile_restricted_exec(code, filename=rules.filename)
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
    namespace: dict[str, Any] = {"__builtins__": _builtins_for(policy, restricted),
                                 "__name__": "fnforge_function"}
    exec(compiled, namespace)
    func = namespace.get(name)
    if not callable(func):
        raise NameError(f"the code does not define a function named {name!r}")
    return func  # type: ignore[no-any-return]


# ------------------------------------------------------------------ audit hook

_state: dict[str, Any] = {"paused": False, "emit": None, "rules": None, "installed": False,
                          "count": 0}
_local = threading.local()
_MAX_EVENTS = 100
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
