"""The isolation audit hook inside the container: what code tried, reported and refused.

Part of the Python-level filter that runner/guards.py describes (nothing against code that
reaches the interpreter's internals: such code can remove or blind this hook). Standard library
only, never `sandbox.*`; the rules arrive as data (`policy["audit"]`).

Forbidden events (processes, sockets, FFI, writes, reads outside the Python installation,
tracing hooks, off-list imports) and the string-evaluation chokepoint: every
`compile` and `exec` of code that was not loaded from a file of the installation and not
compiled by the runner itself is refused when its names include a dunder, a `_` name, a
forbidden builtin, module or attribute, an attribute lookup by data (`format`, `format_map`,
`update_wrapper`, ...: STRING_CODE_DATA_LOOKUPS) or a refused container's name (sympify,
lambdify, typing forward references, mpmath.identify, namedtuple: one check for the whole
family, whatever the alias). Parsing alone (ast.parse: traceback carets) is not checked: its
tree runs only after a compile and an exec, which are.

Protocol with the runner:
- `install_audit_hook(policy, emit)` adds one sys.addaudithook hook per process (a second call
  only replaces the rules and `emit`). `prepare_rules(policy)` builds a policy's rules ahead
  (the zygotes do, before they fork: their patterns cost a call process about 0.8 ms to
  compile). `emit({"event", "detail"})` is called synchronously BEFORE the forbidden operation
  proceeds; with policy.audit.block the hook then raises PermissionError, so the operation does
  not happen at all.
- `audit_pause()` / `audit_resume()` (or `with audit_paused():`): the runner wraps its own I/O
  (writing the result, forking) in them so its events are never reported. Paused is a plain
  module flag: generated code cannot reach it (no `_` names, no module access to `audit_hook`).
  `compile` and `exec` raised directly by the runner's own files are the runner's, not reported.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import sys
import threading
import tokenize
import unicodedata
from collections.abc import Callable, Iterator
from types import CodeType
from typing import Any

__all__ = ["audit_pause", "audit_paused", "audit_resume", "install_audit_hook", "prepare_rules"]

try:  # on the host: sandbox.runner.audit_hook
    from .formats import format_field_problem
except ImportError:  # inside the container the runner dir is on sys.path: top-level modules
    from formats import format_field_problem  # type: ignore[no-redef]

_RUNNER_DIR = os.path.dirname(os.path.abspath(__file__))

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


_prepared: dict[int, tuple[dict[str, Any], _AuditRules]] = {}


def prepare_rules(policy: dict[str, Any]) -> None:
    """Build the rules of `policy` now, for install_audit_hook to use as they are. They are
    policy data alone (and the interpreter's sys.path, the same in every process forked after)."""
    _prepared[id(policy)] = (policy, _AuditRules(policy))


def install_audit_hook(policy: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> None:
    """Record (and block) forbidden events from now on in this process; see the module doc."""
    prepared, rules = _prepared.get(id(policy), (None, None))
    _state["rules"] = rules if prepared is policy and rules is not None else _AuditRules(policy)
    _state["emit"] = emit
    _state["count"] = 0
    _state["paused"] = False
    if not _state["installed"]:
        sys.addaudithook(_hook)
        _state["installed"] = True
