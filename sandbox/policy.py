"""The vetting policy as plain data: what generated functions may import, name and touch.

Code elsewhere is mechanism (static.py on the host, runner/guards.py in the container); every rule
lives here, so a reviewer reads one file and `policy_hash()` changes whenever any rule does, which
invalidates every cached verdict.

Design (see also the docstring of static.py):
- Imports: math-like standard modules plus the third-party modules of the image
  (images/packages.txt). Never os, sys, string, operator, importlib, ... nor the image's own
  infrastructure (RestrictedPython).
- Names: no dunder or `_`-private names anywhere (this also stops shadowing RestrictedPython's
  guard names such as `_getattr_`), no builtins that evaluate, introspect or reach I/O.
- Attributes: no `_`-prefixed attributes, no frame/generator/traceback/code internals, no
  attributes that reach a forbidden module through an allowed one (`fractions.sys`,
  `typing.operator`), no file I/O or FFI entry points of numpy/sympy.
- Audit: events that mean an escape attempt (processes, sockets, FFI, writes, reads outside the
  Python installation, tracing hooks, off-list imports) fail vetting; sympy's and numpy's own lazy
  imports and reads of their own files are allowed.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

POLICY_VERSION = 1

PACKAGES_FILE = Path(__file__).resolve().parent.parent / "images" / "packages.txt"

# Used when images/packages.txt is not available (an installed wheel without the images dir).
DEFAULT_IMAGE_PACKAGES: dict[str, tuple[str, ...]] = {
    "python3-sympy": ("sympy",),
    "python3-mpmath": ("mpmath",),
    "python3-numpy": ("numpy",),
}

ALLOWED_STDLIB_MODULES: frozenset[str] = frozenset({
    "math", "cmath", "fractions", "decimal", "numbers", "statistics", "random",
    "itertools", "functools", "collections", "heapq", "bisect", "array", "copy",
    "re", "typing", "json",
})
"""Pure-computation standard modules. functools is allowed: partial/reduce can only wrap callables
the gate already lets the code name, and lru_cache is the idiomatic memoisation of number theory
helpers. Not allowed: dataclasses/enum (class bodies are forbidden anyway; dataclasses execs code
and re-exports builtins), string (Formatter), operator (attrgetter/methodcaller)."""

FORBIDDEN_MODULES: frozenset[str] = frozenset({
    "os", "posix", "nt", "sys", "subprocess", "socket", "ssl", "select", "selectors", "ctypes",
    "cffi", "importlib", "imp", "builtins", "io", "_io", "pathlib", "shutil", "tempfile", "glob",
    "fnmatch", "pickle", "cPickle", "copyreg", "shelve", "marshal", "dill", "threading", "_thread",
    "multiprocessing", "concurrent", "asyncio", "signal", "operator", "string", "gc", "inspect",
    "types", "code", "codeop", "dis", "traceback", "linecache", "pty", "tty", "fcntl", "resource",
    "mmap", "sysconfig", "site", "platform", "pdb", "bdb", "faulthandler", "tracemalloc",
    "urllib", "http", "ftplib", "smtplib", "telnetlib", "webbrowser", "runpy", "zipimport",
    "pkgutil", "atexit", "weakref", "warnings", "logging", "RestrictedPython", "dataclasses",
    "enum", "abc", "contextlib", "unittest", "doctest", "pydoc", "zipfile", "tarfile",
})
"""Never importable, and never reachable as an attribute of an allowed module."""

NEVER_ALLOWED_THIRD_PARTY: frozenset[str] = frozenset({"RestrictedPython", "docker"})
"""Modules an image package may ship that are infrastructure, not tools for generated code."""

FORBIDDEN_SUBMODULES: frozenset[str] = frozenset({
    "numpy.ctypeslib", "numpy.distutils", "numpy.f2py", "numpy.testing", "numpy.lib.npyio",
    "numpy.lib.format", "numpy.lib.utils", "numpy.lib.stride_tricks", "numpy.compat",
    "numpy.core._internal", "sympy.testing", "sympy.utilities.runtests",
    "sympy.utilities.benchmarking", "sympy.utilities.pytest", "sympy.utilities.source",
    "sympy.utilities.codegen", "sympy.utilities.autowrap", "sympy.printing.preview",
    "sympy.interactive", "sympy.external", "mpmath.tests",
})
"""Submodules of allowed packages that reach files, the compiler, subprocesses or raw memory."""

FORBIDDEN_BUILTINS: frozenset[str] = frozenset({
    "eval", "exec", "compile", "open", "__import__", "globals", "locals", "vars", "dir",
    "getattr", "setattr", "delattr", "breakpoint", "input", "help", "memoryview", "super",
    "classmethod", "staticmethod", "property", "exit", "quit", "copyright", "credits", "license",
    "reload", "execfile", "file", "raw_input", "aiter", "anext", "bytearray",
})
"""Builtins that evaluate code, look names up by string, introspect namespaces or do I/O.
Referencing one at all (not only calling it) is a finding: `map(getattr, ...)` is an escape."""

ALLOWED_BUILTINS: frozenset[str] = frozenset({
    "abs", "all", "any", "bin", "bool", "bytes", "callable", "chr", "complex", "dict", "divmod",
    "enumerate", "filter", "float", "format", "frozenset", "hasattr", "hash", "hex", "id", "int",
    "isinstance", "issubclass", "iter", "len", "list", "map", "max", "min", "next", "object",
    "oct", "ord", "pow", "print", "range", "repr", "reversed", "round", "set", "slice", "sorted",
    "str", "sum", "tuple", "type", "zip", "None", "True", "False", "Ellipsis", "NotImplemented",
    "ArithmeticError", "AssertionError", "AttributeError", "BaseException", "Exception",
    "FloatingPointError", "IndexError", "KeyError", "LookupError", "MemoryError", "NameError",
    "NotImplementedError", "OverflowError", "RecursionError", "RuntimeError", "StopIteration",
    "TypeError", "UnboundLocalError", "ValueError", "ZeroDivisionError", "UnicodeError",
    "UnicodeDecodeError", "UnicodeEncodeError",
    "OSError", "TimeoutError", "Warning", "RuntimeWarning", "UserWarning", "DeprecationWarning",
})
"""What the guarded runtime provides as builtins (runner/guards.py): math needs, nothing else.
`type` is the one-argument form only; `hasattr` refuses `_` names; `tuple`, `sorted`, `zip`,
`bytes`, `reversed` go through the iteration guard (RestrictedPython 9.0 dropped them)."""

DANGEROUS_ATTRIBUTES: frozenset[str] = frozenset({
    # frames, generators, coroutines, tracebacks, code objects (RestrictedPython's
    # INSPECT_ATTRIBUTES plus the int-valued ones that still identify a frame walk)
    "gi_frame", "gi_code", "gi_yieldfrom", "gi_running", "cr_frame", "cr_code", "cr_await",
    "cr_origin", "ag_frame", "ag_code", "ag_await", "f_back", "f_builtins", "f_globals",
    "f_locals", "f_code", "f_trace", "f_generator", "tb_frame", "tb_next", "co_code", "co_consts",
    "co_names", "func_globals", "func_code", "im_func", "im_self",
    # class-graph walks and namespace access without dunders
    "mro", "modules", "format_map", "with_traceback",
    # FFI and file I/O entry points of allowed packages
    "ctypes", "ctypeslib", "f2py", "distutils", "npyio", "memmap", "fromfile", "tofile",
    "loadtxt", "savetxt", "genfromtxt", "save", "savez", "savez_compressed", "DataSource",
    "open_memmap", "fromregex", "preview", "runtests", "doctest", "system", "popen",
})
"""Attribute names refused everywhere (static gate and guarded getattr), whatever the object."""

FORBIDDEN_MODULE_ATTRIBUTES: dict[str, frozenset[str]] = {
    "numpy": frozenset({"load", "test", "show_config", "show_runtime", "get_include",
                        "testing", "dump", "dumps"}),
    "sympy": frozenset({"test", "doctest", "init_session", "init_printing", "preview",
                        "external", "testing"}),
    "mpmath": frozenset({"runtests", "doctests", "libmp"}),
    "random": frozenset({"SystemRandom"}),
    "decimal": frozenset({"DecimalTuple"}),
}
"""Per-module attributes refused when the object is that module (or `from module import name`)."""

EVAL_SINKS: frozenset[str] = frozenset({
    "sympify", "parse_expr", "S", "lambdify", "parse_latex", "parse_mathematica", "eval_expr",
    "stringify_expr",
})
"""Library callables that evaluate a string as Python. They are allowed on data (an expression
passed in by the agent; the container is the boundary and the audit hook watches the effects), but
a string literal assembled in the code that names a forbidden builtin, module or a dunder is a
finding."""

EVAL_SINK_PATTERNS: tuple[str, ...] = (
    r"__", r"\bimport\b", r"\beval\b", r"\bexec\b", r"\bcompile\b", r"\bopen\b", r"\bgetattr\b",
    r"\bsetattr\b", r"\bglobals\b", r"\blocals\b", r"\bvars\b", r"\blambda\b", r"\bos\b",
    r"\bsys\b", r"\bsubprocess\b", r"\bsystem\b", r"\bbuiltins\b", r"\bbreakpoint\b", r"\binput\b",
    r"\bchr\b", r"\bgetframe\b", r"\bmodules\b",
)
"""Regexes searched (case-sensitively: sympy's `Lambda` is fine) in the concatenation of all
string literals of an eval sink's arguments, so `"ev" + "al(...)"` is caught too."""

DUNDER_STRING_PATTERN = r"__[A-Za-z0-9_]+__"
"""A string literal naming a dunder is the raw material of every getattr-by-string escape."""

FUTURE_IMPORTS: frozenset[str] = frozenset({"annotations", "division", "generator_stop"})

MODULE_NAME_ATTRIBUTES: frozenset[str] = frozenset({
    "os", "sys", "subprocess", "socket", "ctypes", "importlib", "builtins", "pickle", "marshal",
    "shutil", "pathlib", "gc", "inspect", "operator", "posix", "multiprocessing", "threading",
    "pty", "tempfile", "runpy", "cffi", "dill", "shelve", "mmap", "pdb", "linecache",
    "traceback", "sysconfig", "copyreg", "zipimport", "pkgutil",
})
"""Attribute names refused on any object: a public alias of a dangerous module inside an allowed
one (`fractions.sys`, `typing.operator`, `mpmath.libmp.backend.os`). Names that are also common
benign attributes (`re.Match.string`) are only refused on import-rooted chains
(FORBIDDEN_MODULES)."""

SAFE_DECORATORS: frozenset[str] = frozenset({"functools.lru_cache", "functools.cache"})
"""The only decorators allowed (written as `@lru_cache`, `@lru_cache(maxsize=None)`,
`@functools.cache`...): pure memoisation, common in recursive counting helpers."""

RUNTIME_DENIED_VALUE_MODULES: frozenset[str] = frozenset({
    "os", "posix", "nt", "sys", "subprocess", "_posixsubprocess", "socket", "_socket", "ssl",
    "select", "ctypes", "_ctypes", "importlib", "_imp", "imp", "io", "_io", "pathlib", "shutil",
    "tempfile", "glob", "pickle", "_pickle", "marshal", "shelve", "threading", "_thread",
    "multiprocessing", "_multiprocessing", "concurrent", "asyncio", "signal", "_signal",
    "operator", "_operator", "string", "_string", "gc", "inspect", "types", "code", "codeop",
    "dis", "traceback", "linecache", "pty", "fcntl", "resource", "mmap", "sysconfig", "site",
    "pdb", "bdb", "faulthandler", "runpy", "zipimport", "pkgutil", "atexit", "RestrictedPython",
    "guards", "server", "probes",
})
"""Inside the container, a value reached by attribute or item access whose defining module (its
`__module__`) is one of these is refused by the guard, whatever path led to it (`np.core.x.os`,
a library's `from subprocess import Popen`). builtins is absent on purpose: `len` is fine; the
dangerous builtins are refused by identity."""

USER_FILENAME = "<fnforge-function>"


@dataclass(frozen=True)
class SizeLimits:
    """Bounds on a spec: generated code is small; anything huge is a mistake or an attack."""

    max_code_chars: int = 20_000
    max_code_lines: int = 500
    max_ast_nodes: int = 6_000
    max_helpers: int = 8  # top-level defs besides the main function
    max_name_chars: int = 64
    max_description_chars: int = 4_000
    max_parameters: int = 24
    max_tests: int = 32
    max_string_constant: int = 8_192
    max_const_pow_exponent: int = 128  # `10**9 + 7` in a constant; `9**9**9` is not
    max_smoke_cases: int = 8


SIZE_LIMITS = SizeLimits()


@dataclass(frozen=True)
class AuditRules:
    """What the in-container audit hook treats as an escape attempt."""

    forbidden_events: frozenset[str] = frozenset({
        "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
        "os.forkpty", "os.kill", "os.killpg", "os.putenv", "os.unsetenv", "os.remove",
        "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.chdir", "os.chroot",
        "os.symlink", "os.link", "os.truncate", "os.utime", "os.setxattr", "os.removexattr",
        "os.startfile", "pty.spawn", "sys.settrace", "sys.setprofile", "sys.addaudithook",
        "sys._current_frames", "sys.remote_exec",
        "code.__new__", "function.__new__", "mmap.__new__", "pickle.find_class",
        "shutil.copyfile", "shutil.copytree", "shutil.rmtree", "shutil.move", "shutil.chown",
        "shutil.make_archive", "shutil.unpack_archive", "tempfile.mkstemp", "tempfile.mkdtemp",
        "webbrowser.open", "urllib.Request", "http.client.connect", "ftplib.connect",
        "smtplib.connect", "imaplib.open", "poplib.connect", "telnetlib.Telnet.open",
        "resource.setrlimit", "resource.prlimit", "signal.pthread_kill", "_thread.start_new_thread",
        "cpython.run_command", "cpython.run_file",
        "gc.get_referrers", "gc.get_referents", "gc.get_objects",
    })
    forbidden_prefixes: tuple[str, ...] = ("socket.", "ctypes.", "winreg.", "msvcrt.", "_winapi.")
    user_frame_events: frozenset[str] = frozenset({"object.__getattr__", "sys._getframe"})
    """Flagged only when raised directly by the generated code's own frame: sympy reads
    `__code__` and calls sys._getframe internally, the generated code never may."""
    read_only_prefixes: tuple[str, ...] = (
        "/usr/lib/python3", "/usr/local/lib/python3", "/usr/share/python3", "/opt/fnforge/lib",
    )
    allow_sys_path_reads: bool = True  # also the absolute sys.path dirs inside the container
    listing_events: frozenset[str] = frozenset({"os.listdir", "os.scandir", "glob.glob"})
    import_deny: frozenset[str] = frozenset({
        "socket", "subprocess", "_posixsubprocess", "multiprocessing", "pty", "ssl",
        "urllib", "http", "ftplib", "smtplib", "telnetlib", "webbrowser", "asyncio", "mmap",
        "pdb", "bdb", "cffi", "_socket",
    })
    block: bool = True  # raise PermissionError after recording (a second layer inside the box)
    code_block_blocked_events: frozenset[str] = frozenset({
        "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
        "os.forkpty", "pty.spawn", "os.kill", "os.killpg", "sys.addaudithook",
        "sys.settrace", "sys.setprofile",
    })
    code_block_blocked_prefixes: tuple[str, ...] = ("socket.", "ctypes.")
    """An agent's code block (`Sandbox.run`) is ordinary Python: every forbidden event is recorded
    but only these are refused (no processes, sockets, FFI or tracing); it may read files and
    write /tmp, which the runner empties after each call."""


AUDIT_RULES = AuditRules()


@dataclass(frozen=True)
class ImagePackages:
    """The image's packages: Debian package name -> importable modules."""

    packages: dict[str, tuple[str, ...]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def modules(self) -> frozenset[str]:
        mods = {m for ms in self.packages.values() for m in ms}
        return frozenset(mods - NEVER_ALLOWED_THIRD_PARTY)

    def accepts(self, name: str) -> bool:
        """A spec may name a package as `python3-sympy`, `sympy` or the module `sympy`."""
        key = name.strip().lower().replace("_", "-")
        key = re.split(r"[<>=!~\[ ]", key, maxsplit=1)[0]
        names = {p.lower() for p in self.packages}
        names |= {p.removeprefix("python3-") for p in names}
        names |= {m.lower() for m in self.modules}
        return key in names or key.replace("-", "_") in names


def parse_packages_file(text: str) -> ImagePackages:
    """Parse `debian-package=version  module[,module]` lines (`-`: no module, `#` comments)."""
    packages: dict[str, tuple[str, ...]] = {}
    versions: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        pkg, _, version = parts[0].partition("=")
        mods: tuple[str, ...] = ()
        if len(parts) > 1 and parts[1] != "-":
            mods = tuple(m.strip() for m in parts[1].split(",") if m.strip())
        packages[pkg] = mods
        versions[pkg] = version
    return ImagePackages(packages=packages, versions=versions)


@lru_cache(maxsize=1)
def image_packages() -> ImagePackages:
    """The image's package list, or the documented default when the file is absent."""
    try:
        return parse_packages_file(PACKAGES_FILE.read_text(encoding="utf-8"))
    except OSError:
        return ImagePackages(packages=dict(DEFAULT_IMAGE_PACKAGES))


def allowed_modules() -> frozenset[str]:
    """Top-level module names generated code may import."""
    return (ALLOWED_STDLIB_MODULES | image_packages().modules) - FORBIDDEN_MODULES


def module_allowed(dotted: str) -> bool:
    """True when `import dotted` is allowed: allowed root, no private part, not a forbidden sub."""
    parts = dotted.split(".")
    if not all(parts) or any(p.startswith("_") for p in parts):
        return False
    if parts[0] not in allowed_modules():
        return False
    return not any(".".join(parts[: i + 1]) in FORBIDDEN_SUBMODULES for i in range(len(parts)))


def policy_data() -> dict[str, Any]:
    """Every rule as JSON-ready data: what policy_hash() covers."""
    return {
        "version": POLICY_VERSION,
        "allowed_modules": sorted(allowed_modules()),
        "forbidden_modules": sorted(FORBIDDEN_MODULES),
        "forbidden_submodules": sorted(FORBIDDEN_SUBMODULES),
        "forbidden_builtins": sorted(FORBIDDEN_BUILTINS),
        "allowed_builtins": sorted(ALLOWED_BUILTINS),
        "dangerous_attributes": sorted(DANGEROUS_ATTRIBUTES),
        "forbidden_module_attributes": {k: sorted(v)
                                        for k, v in sorted(FORBIDDEN_MODULE_ATTRIBUTES.items())},
        "eval_sinks": sorted(EVAL_SINKS),
        "eval_sink_patterns": list(EVAL_SINK_PATTERNS),
        "dunder_string_pattern": DUNDER_STRING_PATTERN,
        "future_imports": sorted(FUTURE_IMPORTS),
        "module_name_attributes": sorted(MODULE_NAME_ATTRIBUTES),
        "runtime_denied_value_modules": sorted(RUNTIME_DENIED_VALUE_MODULES),
        "safe_decorators": sorted(SAFE_DECORATORS),
        "user_filename": USER_FILENAME,
        "size_limits": SIZE_LIMITS.__dict__.copy(),
        "audit": _audit_data(),
        "image_packages": {k: list(v) for k, v in sorted(image_packages().packages.items())},
    }


def _audit_data() -> dict[str, Any]:
    a = AUDIT_RULES
    return {
        "forbidden_events": sorted(a.forbidden_events),
        "forbidden_prefixes": list(a.forbidden_prefixes),
        "user_frame_events": sorted(a.user_frame_events),
        "read_only_prefixes": list(a.read_only_prefixes),
        "allow_sys_path_reads": a.allow_sys_path_reads,
        "listing_events": sorted(a.listing_events),
        "import_deny": sorted(a.import_deny),
        "block": a.block,
        "code_block_blocked_events": sorted(a.code_block_blocked_events),
        "code_block_blocked_prefixes": list(a.code_block_blocked_prefixes),
    }


def policy_hash() -> str:
    """sha256 of the canonical policy JSON: part of every verdict-cache key."""
    canonical = json.dumps(policy_data(), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def policy_for_runner() -> dict[str, Any]:
    """What runner/guards.py needs inside the container (sent with the `configure` request)."""
    data = policy_data()
    keep = ("version", "allowed_modules", "forbidden_modules", "forbidden_submodules",
            "forbidden_builtins", "allowed_builtins", "dangerous_attributes",
            "forbidden_module_attributes", "module_name_attributes", "future_imports",
            "runtime_denied_value_modules",
            "user_filename", "audit")
    out = {k: data[k] for k in keep}
    out["policy_hash"] = policy_hash()
    return out
