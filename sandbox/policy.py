"""The vetting policy as plain data: what generated functions may import, name and touch.

Code elsewhere is mechanism (vetting/static.py and vetting/restricted.py on the host,
runner/guards.py and runner/restricted_policy.py in the container); every rule lives here, so a
reviewer reads one file and `policy_hash()` changes whenever any rule does, which invalidates every
cached verdict.

What these rules are for: a cheap first filter and evidence for reviewers. In CPython no
in-process check can stop code that reaches the interpreter's internals (a raw pointer, a
corrupted object, a C-level bug); the container, the kernel filter and a fresh process per call
are the boundary. The rules close *classes* of known routes so that such code is rejected early and
visibly, never so that a passing verdict means "safe".

Design (see also the docstrings of vetting/static.py and runner/guards.py):
- Imports: math-like standard modules plus the third-party modules of the image
  (images/packages.txt). Never os, sys, string, operator, importlib, ... nor the image's own
  infrastructure (RestrictedPython, the runner).
- Names: no dunder or `_`-private names anywhere (this also stops shadowing RestrictedPython's
  guard names such as `_getattr_`), no builtins that evaluate, introspect, do I/O or hand out
  addresses (`id`).
- Attributes: no `_`-prefixed attributes except a few read-only, string-valued dunders
  (`type(n).__name__`); no frame/generator/traceback/code internals; no attribute that reaches a
  module the code could not import (by name statically, by value at run time); no metaclass; no
  raw-memory, file I/O or FFI entry points of numpy/sympy.
- Values: inside the container one value check applies to every value the code gets, however
  it gets it (attribute, item, import, a call's result, an iteration's item, an unpacked item,
  a parameter a library calls back with): RUNTIME_DENIED_VALUES, RUNTIME_DENIED_CONTAINERS,
  metaclasses, the real `type`, the refused builtins, classes with RUNTIME_ARRAY_HOOKS and
  functions of RUNTIME_DENIED_VALUE_MODULES are refused; RUNTIME_CALL_LIMITS are enforced; and
  the callee of every call is checked again where it is called.
- String evaluation: every route that turns a string into code (sympify and the sympy functions
  that call it, lambdify, typing's forward references, mpmath.identify, namedtuple, ...) raises the
  audit events `compile` and `exec`; the audit hook refuses string-compiled code whose names
  include anything these rules refuse, attribute lookups by data (`format`, `format_map`, ...) and
  the names of refused containers (STRING_CODE_*).
- Audit: events that mean an escape attempt (processes, sockets, FFI, writes, reads outside the
  Python installation, tracing hooks, off-list imports, hostile string-compiled code) fail
  vetting; sympy's and numpy's own lazy imports and reads of their own files are allowed.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, fields, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .packages import image_packages

__all__ = [
    "ALLOWED_BUILTINS",
    "ALLOWED_DUNDER_ATTRIBUTES",
    "ALLOWED_STDLIB_MODULES",
    "AUDIT_RULES",
    "CONSTANT_CALLS",
    "DANGEROUS_ATTRIBUTES",
    "DENIED_KEYWORDS",
    "DUNDER_STRING_PATTERN",
    "EVAL_SINKS",
    "EVAL_SINK_PATTERNS",
    "FORBIDDEN_BUILTINS",
    "FORBIDDEN_MODULES",
    "FORBIDDEN_MODULE_ATTRIBUTES",
    "FORBIDDEN_SUBMODULES",
    "FUTURE_IMPORTS",
    "LIBRARY_CALL_LIMITS",
    "METACLASS_NAMES",
    "MODULE_NAME_ATTRIBUTES",
    "MODULE_NAME_COLLISIONS",
    "RUNTIME_ARRAY_HOOKS",
    "RUNTIME_CALL_LIMITS",
    "RUNTIME_DENIED_CONTAINERS",
    "RUNTIME_DENIED_VALUES",
    "RUNTIME_DENIED_VALUE_MODULES",
    "RUNTIME_RAW_MEMORY_HOOKS",
    "SAFE_DECORATORS",
    "SIZE_LIMITS",
    "STRING_CODE_DATA_LOOKUPS",
    "STRING_CODE_EXTRA_NAMES",
    "STRING_CODE_PRIVATE_NAMES",
    "STRING_EVALUATING_PACKAGES",
    "STRING_SAFE_CALLS",
    "USER_FILENAME",
    "AuditRules",
    "SizeLimits",
    "allowed_modules",
    "denied_container_names",
    "module_allowed",
    "module_name_attributes",
    "policy_data",
    "policy_for_runner",
    "policy_hash",
    "string_code_denied_keywords",
    "string_code_denied_names",
]


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
    "enum", "abc", "contextlib", "unittest", "doctest", "pydoc", "zipfile", "tarfile", "ast",
    "timeit", "keyword",
})
"""Never importable, and never reachable as an attribute of an allowed module."""

FORBIDDEN_SUBMODULES: frozenset[str] = frozenset({
    "numpy.ctypeslib", "numpy.distutils", "numpy.f2py", "numpy.testing", "numpy.lib.npyio",
    "numpy.lib.format", "numpy.lib.utils", "numpy.compat", "numpy.core._internal",
    "numpy.core.records", "numpy.rec", "sympy.testing", "sympy.utilities.runtests",
    "sympy.utilities.benchmarking", "sympy.utilities.pytest", "sympy.utilities.source",
    "sympy.utilities.codegen", "sympy.utilities.autowrap", "sympy.printing.preview",
    "sympy.interactive", "sympy.external", "mpmath.tests",
})
"""Submodules of allowed packages that reach files, the compiler, subprocesses or raw memory.
Refused as imports, and at run time as module values and as the home (`__module__`) of any
function or class reached by attribute, whatever path led there (`np.rec.fromstring` builds an
object array over caller-supplied bytes: pointers from data). numpy.lib.stride_tricks is allowed
(`sliding_window_view`); its raw-memory members are refused by value (RUNTIME_DENIED_VALUES)."""

FORBIDDEN_BUILTINS: frozenset[str] = frozenset({
    "eval", "exec", "compile", "open", "__import__", "globals", "locals", "vars", "dir",
    "getattr", "setattr", "delattr", "breakpoint", "input", "help", "memoryview", "super",
    "classmethod", "staticmethod", "property", "exit", "quit", "copyright", "credits", "license",
    "reload", "execfile", "file", "raw_input", "aiter", "anext", "bytearray", "id",
})
"""Builtins that evaluate code, look names up by string, introspect namespaces, do I/O or hand
out addresses (`id`: the raw material of every raw-memory route; `repr()` and `hash()` of plain
objects leak addresses too, which is why the consumers of addresses are refused as well).
Referencing one at all (not only calling it) is a finding: `map(getattr, ...)` is an escape."""

ALLOWED_BUILTINS: frozenset[str] = frozenset({
    "abs", "all", "any", "bin", "bool", "bytes", "callable", "chr", "complex", "dict", "divmod",
    "enumerate", "filter", "float", "format", "frozenset", "hasattr", "hash", "hex", "int",
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
`type` is the one-argument form only and never hands out a callable metaclass; `hasattr` refuses
`_` names; `tuple`, `sorted`, `zip`, `bytes`, `reversed` are wrappers (RestrictedPython 9.0
dropped them) that build their container or iterator plainly: the items are checked when the
code takes them out."""

ALLOWED_DUNDER_ATTRIBUTES: frozenset[str] = frozenset({"__name__", "__qualname__", "__doc__"})
"""Read-only dunders generated code may read (`type(n).__name__` in an error message). The
static gate allows them in load context only; RestrictedPython is given a policy
(runner/restricted_policy.py) that turns them into guarded `_getattr_` calls; the guarded getattr
allows exactly these names and only hands out str (or None) values."""

DANGEROUS_ATTRIBUTES: frozenset[str] = frozenset({
    # frames, generators, coroutines, tracebacks, code objects (RestrictedPython's
    # INSPECT_ATTRIBUTES plus the int-valued ones that still identify a frame walk)
    "gi_frame", "gi_code", "gi_yieldfrom", "gi_running", "cr_frame", "cr_code", "cr_await",
    "cr_origin", "ag_frame", "ag_code", "ag_await", "f_back", "f_builtins", "f_globals",
    "f_locals", "f_code", "f_trace", "f_generator", "tb_frame", "tb_next", "co_code", "co_consts",
    "co_names", "func_globals", "func_code", "im_func", "im_self",
    # class-graph walks, namespace access and attribute access by string without dunders
    "mro", "modules", "format_map", "with_traceback", "getmro", "attrgetter", "methodcaller",
    # raw memory: views over arbitrary addresses, pointers from data, addresses
    "as_strided", "DummyArray", "buffer_info",
    # FFI, processes and file I/O entry points of allowed packages
    "ctypes", "ctypeslib", "f2py", "distutils", "npyio", "memmap", "fromfile", "tofile",
    "loadtxt", "savetxt", "genfromtxt", "save", "savez", "savez_compressed", "DataSource",
    "open_memmap", "fromregex", "preview", "runtests", "doctest", "system", "popen",
    "check_output", "cffi",
})
"""Attribute names refused everywhere (static gate and guarded getattr), whatever the object."""

FORBIDDEN_MODULE_ATTRIBUTES: dict[str, frozenset[str]] = {
    "numpy": frozenset({"load", "test", "show_config", "show_runtime", "get_include",
                        "testing", "dump", "dumps", "rec", "recarray", "ScalarType",
                        "add_newdoc"}),
    "numpy.core.numerictypes": frozenset({"ScalarType"}),
    "functools": frozenset({"update_wrapper", "wraps"}),
    "typing": frozenset({"get_type_hints", "get_origin", "get_args"}),
    "copy": frozenset({"dispatch_table"}),
    "sympy.strategies.util": frozenset({"basic_fns", "expr_fns"}),
    "sympy.sets.handlers.functions": frozenset({"FunctionUnion"}),
    "sympy.parsing.sympy_parser": frozenset({"EvaluateFalseTransformer"}),
    "numpy.core": frozenset({"records", "rec", "recarray"}),
    "numpy.core.multiarray": frozenset({"scalar"}),
    "numpy.lib.stride_tricks": frozenset({"as_strided", "DummyArray"}),
    "sympy": frozenset({"test", "doctest", "init_session", "init_printing", "preview",
                        "external", "testing"}),
    "mpmath": frozenset({"runtests", "doctests", "libmp"}),
    "random": frozenset({"SystemRandom"}),
    "decimal": frozenset({"DecimalTuple"}),
}
"""Per-module attributes refused when the object is that module (or `from module import name`).
Examples of the classes that RUNTIME_DENIED_VALUES and FORBIDDEN_SUBMODULES refuse by value;
listed here so the static gate names them early."""

RUNTIME_DENIED_VALUES: frozenset[str] = frozenset({
    "numpy.lib.stride_tricks.as_strided", "numpy.lib.stride_tricks.DummyArray",
    "numpy.core.multiarray.scalar", "numpy.core.multiarray._reconstruct", "numpy.recarray",
    "functools.update_wrapper", "functools.wraps",
    "typing.get_type_hints", "typing.get_origin", "typing.get_args",
})
"""Callables refused by value inside the container (`__module__` + `.` + `__qualname__`), however
they were reached (`np.lib.index_tricks.as_strided` is the same function) and wherever they are
used (as an attribute, an item, a call's result, an iteration's item, a callee, an argument):
each gives a view over an arbitrary address or turns bytes into object pointers
(`scalar(dtype('O'), b'...')`, `recarray(buf=...)` with an object field,
`DummyArray({'data': (address, False), ...})`), or reads and sets attributes named by data
(`update_wrapper(f, g, assigned=(name,))` copies any dunder of `g` onto `f`: an
`__array_interface__` onto a function numpy then reads as raw memory), or hand out what library
annotations and aliases name (`typing.get_origin(typing.Type)` is the real `type`;
`typing.get_type_hints(cls)` of some sympy classes holds `type[Basic]`, which calls `type`: a
dict that library code can iterate without the guards seeing its items)."""

RUNTIME_DENIED_CONTAINERS: frozenset[str] = frozenset({
    "sympy.strategies.util.basic_fns", "sympy.strategies.util.expr_fns",
    "copy.dispatch_table", "numpy.core.numerictypes.ScalarType",
    "sympy.sets.handlers.functions.FunctionUnion",
    "sympy.parsing.sympy_parser.EvaluateFalseTransformer.operators",
})
"""Public containers of the allowed modules that hold refused values (the real `type`, a
metaclass, a refused builtin such as `memoryview`, classes of a refused module), refused as a
whole, by identity, inside the container (`basic_fns` is `{'op': type, ...}`). Code that
takes an item out of any container has it checked anyway (item access, iteration, unpacking and
call results are guarded); this list is for library code that iterates a container it was
handed (`dict(zip(names, basic_fns.values()))` would build a namespace for sympify, whose
string-compiled code runs unguarded). The leaf names are refused by the static gate and in
string-compiled code. tests/test_guards.py's inventory scans the image's allowed modules (their
public containers and those of their classes and instances, two levels deep) and fails on any
container with a refused value that is not listed here."""

RUNTIME_ARRAY_HOOKS: frozenset[str] = frozenset({
    "__array_interface__", "__array_struct__", "__array__", "__array_priority__",
    "__array_ufunc__", "__array_function__", "__array_wrap__", "__array_prepare__",
    "__array_finalize__", "__dlpack__", "__buffer__", "__release_buffer__",
})
"""Hooks numpy (or the buffer protocol) reads from a class. A class (or an instance of one)
defining any of these as anything but C code, a function of a library file, None or (except
for RUNTIME_RAW_MEMORY_HOOKS) a number was made at run time, and is refused by the guards as a
value, an argument and a result: `type('V', (), {'__array_interface__': {'data': (address,
False), ...}})` is a view over any address."""

RUNTIME_RAW_MEMORY_HOOKS: frozenset[str] = frozenset({
    "__array_interface__", "__array_struct__", "__buffer__",
})
"""The hooks among RUNTIME_ARRAY_HOOKS that describe memory: never a plain value."""

RUNTIME_CALL_LIMITS: dict[str, dict[str, Any]] = {
    "numpy.ndarray": {"max_positional": 2, "denied_keywords": ["buffer", "offset", "strides"],
                      "why": "an ndarray over a caller-supplied buffer with an object dtype "
                             "turns bytes into object pointers"},
    "numpy.ndarray.resize": {"max_positional": -1, "denied_keywords": ["refcheck"],
                             "why": "resize without the reference check frees memory that views "
                                    "still use"},
    "sympy.core.function.Function": {"max_positional": 1, "denied_keywords": ["bases"],
                                     "why": "Function(name, bases, namespace) is type() with three "
                                            "arguments (a class with any __array_interface__)"},
}
"""Callables that stay usable inside the container, but only in their safe form: reached by
attribute, import or `type(x)`, they are handed out wrapped so that more positional arguments than
`max_positional` (-1: any), the `denied_keywords` and any keyword starting with `_` are refused.
`isinstance` with the wrapped classes keeps working. The static gate applies the same limits to
calls whose import-rooted path has the same package and the same last name
(`sp.Function('f', bases, ns)`)."""

LIBRARY_CALL_LIMITS: dict[str, dict[str, Any]] = {
    "sympy.core.function.UndefinedFunction.__new__": {
        "max_positional": 2, "denied_keywords": ["bases", "__dict__"],
        "why": "an undefined function class with caller-chosen bases or namespace is type() "
               "with three arguments (a class with any __array_interface__ views raw memory)"},
}
"""RUNTIME_CALL_LIMITS enforced inside the library itself, for code that reaches the real object
without passing the guards: string-compiled code (`sympify("Function('f', (Basic,), ns)",
locals=...)`) and library internals handed user data (`symbols('f', cls=Function, ...)`). The
guards replace the method (`module.Class.method`, positional arguments counted as the method
receives them, the class first; keywords starting with `_` are refused too: they would become
dunders of the new class) in the call's process once its module is imported; sympy itself never
passes these arguments."""

DENIED_KEYWORDS: dict[str, tuple[str, str]] = {
    "allow_pickle": ("static.pickle", "unpickling is not allowed"),
    "refcheck": ("static.raw-memory", "resizing an array without the reference check frees "
                 "memory that views still use"),
}
"""Keyword arguments refused by the static gate in any call, whatever the callee: (rule, why)."""

METACLASS_NAMES: frozenset[str] = frozenset({
    "ABCMeta", "AssumptionsWrapperMeta", "BasicMeta", "ExpMeta", "FunctionClass", "KindMeta",
    "ManagedProperties", "NamedTupleMeta", "OptionType", "PredicateMeta", "Singleton",
    "UndefinedFunction",
    "EnumMeta", "EnumType",
})
"""Public names under which the image's allowed modules expose metaclasses (checked against the
image by tests/test_guards.py). Calling a metaclass is type() with three arguments; the static gate
refuses these names as attributes and imports, the guards refuse every metaclass by value."""

EVAL_SINKS: frozenset[str] = frozenset({
    "sympify", "parse_expr", "S", "lambdify", "parse_latex", "parse_mathematica", "eval_expr",
    "stringify_expr", "get_type_hints", "ForwardRef", "identify", "nsimplify", "namedtuple",
    "NamedTuple",
})
"""Library callables that evaluate a string as Python. They are allowed on data (an expression
passed in by the agent; the container is the boundary and the audit hook checks the code they
compile), but a string literal assembled in the code that names a forbidden builtin, module or a
dunder is a finding."""

STRING_EVALUATING_PACKAGES: tuple[str, ...] = ("sympy", "mpmath", "typing")
"""Almost every public function of these packages sympifies or evaluates string arguments
(`sympy.expand("...")`): the static gate applies the eval-sink check to the string literals passed
directly to any of them, except STRING_SAFE_CALLS."""

STRING_SAFE_CALLS: frozenset[str] = frozenset({
    "Symbol", "symbols", "Dummy", "Wild", "Function", "Rational", "Integer", "Float", "mpf",
    "mpc", "mpmathify", "Matrix", "latex", "pretty", "sstr", "srepr", "var", "Str",
})
"""Callables of those packages that never evaluate a string (names, numbers, printing)."""

EVAL_SINK_PATTERNS: tuple[str, ...] = (
    r"__", r"\bimport\b", r"\beval\b", r"\bexec\b", r"\bcompile\b", r"\bopen\b", r"\bgetattr\b",
    r"\bsetattr\b", r"\bglobals\b", r"\blocals\b", r"\bvars\b", r"\blambda\b", r"\bos\b",
    r"\bsys\b", r"\bsubprocess\b", r"\bsystem\b", r"\bbuiltins\b", r"\bbreakpoint\b", r"\binput\b",
    r"\bchr\b", r"\bgetframe\b", r"\bmodules\b", r"\bformat\b", r"\bformat_map\b",
    r"\bvformat\b", r"\bupdate_wrapper\b", r"\bwraps\b", r"\battrgetter\b",
    r"\bmethodcaller\b",
)
"""Regexes searched (case-sensitively: sympy's `Lambda` is fine) in the concatenation of all
string literals of an eval sink's arguments, so `"ev" + "al(...)"` is caught too."""

DUNDER_STRING_PATTERN = r"__[A-Za-z0-9_]+__"
"""A string literal naming a dunder is the raw material of every getattr-by-string escape
(docstrings excepted: they are only reachable through `__doc__`)."""

FUTURE_IMPORTS: frozenset[str] = frozenset({"annotations", "division", "generator_stop"})

MODULE_NAME_ATTRIBUTES: frozenset[str] = frozenset({
    "os", "sys", "subprocess", "socket", "ctypes", "importlib", "builtins", "pickle", "marshal",
    "shutil", "pathlib", "gc", "inspect", "operator", "posix", "multiprocessing", "threading",
    "pty", "tempfile", "runpy", "cffi", "dill", "shelve", "mmap", "pdb", "linecache",
    "traceback", "sysconfig", "copyreg", "zipimport", "pkgutil", "libmp", "mlib", "pdoctest",
    "importtools", "gmpy", "kw",
})
"""Attribute names refused on any object: a public alias of a dangerous module inside an allowed
one (`fractions.sys`, `typing.operator`, `sympy.core.numbers.mlib` = mpmath.libmp). The full set
the rules use is module_name_attributes(): these, every standard-library module name the code may
not import and the last part of every forbidden submodule, minus MODULE_NAME_COLLISIONS."""

MODULE_NAME_COLLISIONS: frozenset[str] = frozenset({
    "abc", "code", "select", "string", "time", "token", "trace", "types", "format", "utils",
    "source", "array", "copy", "random",
})
"""Names of forbidden modules that are also ordinary attributes of allowed objects (`np.select`,
`np.trace`, `re.Match.string`, `ufunc.types`, `str.format`, `sympy.abc`): never refused by name
(the static gate cannot tell a function from a module); the run-time value check decides (a
module value must be the genuine, importable module of its name)."""

SAFE_DECORATORS: frozenset[str] = frozenset({"functools.lru_cache", "functools.cache"})
"""The only decorators allowed (written as `@lru_cache`, `@lru_cache(maxsize=None)`,
`@functools.cache`...): pure memoisation, common in recursive counting helpers."""

CONSTANT_CALLS: frozenset[str] = frozenset({
    "int", "float", "complex", "bool", "str", "frozenset", "tuple", "abs", "round",
    "fractions.Fraction", "decimal.Decimal", "math.sqrt", "math.log", "math.log2", "math.log10",
    "math.exp", "math.radians", "math.degrees", "math.isqrt", "cmath.sqrt", "cmath.exp",
    "sympy.Symbol", "sympy.symbols", "sympy.Rational", "sympy.Integer", "sympy.Float",
    "sympy.sqrt", "sympy.Function", "sympy.Matrix", "sympy.Dummy",
    "numpy.array", "numpy.float64", "numpy.int64", "mpmath.mpf", "mpmath.mpc",
})
"""Calls allowed in module-level constants and default values when every argument is itself a
constant expression (`INF = float('inf')`, `X = sympy.Symbol('x')`): deterministic, cheap
constructors, no user code, nothing that iterates (`list(range(10**7))` stays refused)."""

RUNTIME_DENIED_VALUE_MODULES: frozenset[str] = frozenset({
    "os", "posix", "nt", "sys", "subprocess", "_posixsubprocess", "socket", "_socket", "ssl",
    "select", "ctypes", "_ctypes", "importlib", "_imp", "imp", "io", "_io", "pathlib", "shutil",
    "tempfile", "glob", "pickle", "_pickle", "marshal", "shelve", "threading", "_thread",
    "multiprocessing", "_multiprocessing", "concurrent", "asyncio", "signal", "_signal",
    "operator", "_operator", "string", "_string", "gc", "inspect", "types", "code", "codeop",
    "dis", "traceback", "linecache", "pty", "fcntl", "resource", "mmap", "sysconfig", "site",
    "pdb", "bdb", "faulthandler", "runpy", "zipimport", "pkgutil", "atexit", "RestrictedPython",
    "guards", "value_checks", "audit_hook", "server", "probes", "child", "zygote", "seccomp",
    "protocol", "restricted_policy",
    "abc", "ast", "timeit",
})
"""Inside the container, a value whose defining module (its `__module__`) is one of these is
refused by the guard, whatever path led to it and however the code got it (`np.core.x.os`, a
library's `from subprocess import Popen`, a call's result, an iteration's item). builtins is
absent on purpose: `len` is fine; the dangerous builtins are refused by identity."""

STRING_CODE_EXTRA_NAMES: frozenset[str] = frozenset({
    "type", "object", "id", "hash", "hasattr", "ndarray",
})
"""Names string-compiled code may not use besides every name the other rules refuse
(string_code_denied_names()). Code compiled from a string runs with the real builtins, outside
the guards: `type('A', (), ns)`, `id()` and introspection are refused there by name. sympify's and
lambdify's generated code names only sympy/numpy/math functions, Symbol, Integer, Float, ..."""

STRING_CODE_DATA_LOOKUPS: frozenset[str] = frozenset({
    "format", "format_map", "vformat", "get_field", "update_wrapper", "wraps", "attrgetter",
    "methodcaller", "getattr", "rs_fun", "register_handler", "remove_handler", "add_newdoc",
    "import_module",
})
"""Callables that read (or set) attributes named by data, refused by name in string-compiled
code even where the name is also an ordinary attribute (`str.format`): there the template of
`f.format(o)` can come from a namespace the code was handed (`sympify('f.format(o)',
locals={'f': '{0.__class__}', ...})`) and the lookup runs unguarded. Restricted code reaches
`format` only through the guarded getattr (fields checked at call time) and the others not at
all (RUNTIME_DENIED_VALUES, DANGEROUS_ATTRIBUTES, FORBIDDEN_MODULE_ATTRIBUTES)."""

STRING_CODE_PRIVATE_NAMES: tuple[str, ...] = (
    r"_lambdifygenerated", r"_Dummy_\d+", r"_tuple_new", r"_getattr_", r"_getitem_", r"_getiter_",
)
"""`_` names that the library code generators of the image emit (lambdify's function and dummy
arguments, collections.namedtuple's constructor) and RestrictedPython's guard calls (annotations
of generated functions are stored as the source of the transformed code, which
typing.get_type_hints evaluates with the function's own, guarded builtins), matched in full;
every other `_` name in string-compiled code is refused."""

USER_FILENAME = "<fnforge-function>"


@dataclass(frozen=True)
class SizeLimits:
    """Bounds on a spec: generated code is small; anything huge is a mistake or an attack."""

    max_code_chars: int = 20_000
    max_code_lines: int = 500
    max_ast_nodes: int = 6_000
    max_ast_depth: int = 100  # checked iteratively before any recursive visitor runs
    max_helpers: int = 8  # top-level defs besides the main function
    max_name_chars: int = 64
    max_description_chars: int = 400  # one line in prompts (vetting/shape.py)
    max_parameters: int = 24
    max_tests: int = 32
    max_string_constant: int = 8_192
    max_const_pow_exponent: int = 128  # `10**9 + 7` in a constant; `9**9**9` is not
    max_const_repeat: int = 4_096  # `(0,) * 64` in a constant; `"x" * 10**9` is not
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
    string_code_events: frozenset[str] = frozenset({"compile", "exec"})
    """The string-evaluation chokepoint: every route from a string to code raises `compile`
    (source text) and `exec` (code object). Code not loaded from a file under read_only_prefixes
    (or frozen into the interpreter), and not compiled by the runner itself, is refused and
    recorded when its names (co_names, recursively through nested code objects, or the NAME
    tokens of the source) include a dunder, a `_` name outside STRING_CODE_PRIVATE_NAMES or
    anything in string_code_denied_names(), or when a string constant in it names a dunder or is
    a format string with attribute fields."""
    module_code_filename_prefixes: tuple[str, ...] = ("<frozen ",)
    max_scanned_source_chars: int = 262_144  # longer sources are left to the `exec` check
    max_recorded_source_chars: int = 240
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


def module_name_attributes() -> frozenset[str]:
    """Every attribute name refused because it names a module the code may not import: the
    hand list, every standard-library module outside the allowlist and the last part of every
    forbidden submodule, minus the names that are also ordinary attributes (collisions)."""
    stdlib = {n for n in sys.stdlib_module_names if not n.startswith("_")}
    leaves = {s.rsplit(".", 1)[-1] for s in FORBIDDEN_SUBMODULES}
    names = MODULE_NAME_ATTRIBUTES | stdlib | {n for n in leaves if not n.startswith("_")}
    return frozenset(names - allowed_modules() - MODULE_NAME_COLLISIONS)


def denied_container_names() -> frozenset[str]:
    """The last names of RUNTIME_DENIED_CONTAINERS (`basic_fns`): refused on import-rooted
    chains by the static gate (the same dict is `sympy.strategies.branch.traverse.basic_fns`
    too) and anywhere in string-compiled code; the guards refuse the containers by identity."""
    return frozenset(v.rsplit(".", 1)[-1] for v in RUNTIME_DENIED_CONTAINERS)


def string_code_denied_names() -> frozenset[str]:
    """Names that string-compiled code (sympify, lambdify, forward references, ...) may not use:
    everything the other rules refuse by name, plus STRING_CODE_EXTRA_NAMES, because that code
    runs with the real builtins and without the guards."""
    module_attrs = {n for names in FORBIDDEN_MODULE_ATTRIBUTES.values() for n in names}
    denied_values = {v.rsplit(".", 1)[-1] for v in RUNTIME_DENIED_VALUES}
    containers = denied_container_names()
    names = (FORBIDDEN_BUILTINS | STRING_CODE_EXTRA_NAMES | FORBIDDEN_MODULES
             | RUNTIME_DENIED_VALUE_MODULES | DANGEROUS_ATTRIBUTES | module_name_attributes()
             | METACLASS_NAMES | AUDIT_RULES.import_deny | module_attrs | denied_values
             | containers)
    return frozenset(n for n in (names - MODULE_NAME_COLLISIONS) | STRING_CODE_DATA_LOOKUPS
                     if not n.startswith("_"))


def string_code_denied_keywords() -> frozenset[str]:
    """Keyword names string-compiled code may not pass (its keyword-name tuples are constants):
    DENIED_KEYWORDS and every keyword a call limit refuses."""
    limited = {k for rules in (*RUNTIME_CALL_LIMITS.values(), *LIBRARY_CALL_LIMITS.values())
               for k in rules.get("denied_keywords", ())}
    return frozenset(DENIED_KEYWORDS) | frozenset(limited)


def policy_data() -> dict[str, Any]:
    """Every rule as JSON-ready data, derived from this module's UPPERCASE constants, so a rule
    added here is covered by policy_hash() without anyone remembering to list it."""
    rules: dict[str, Any] = {name: _plain(value) for name, value in sorted(globals().items())
                             if name.isupper() and not name.startswith("_")}
    rules["ALLOWED_MODULES"] = sorted(allowed_modules())
    rules["IMAGE_PACKAGES"] = {p.name: list(p.modules) for p in image_packages().packages}
    rules["ALL_MODULE_NAME_ATTRIBUTES"] = sorted(module_name_attributes())
    rules["STRING_CODE_DENIED_NAMES"] = sorted(string_code_denied_names())
    rules["STRING_CODE_DENIED_KEYWORDS"] = sorted(string_code_denied_keywords())
    return rules


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, frozenset | set):
        return sorted(_plain(v) for v in value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    return value


_MECHANISM = [Path(__file__), *sorted((Path(__file__).parent / "vetting").glob("*.py")),
              Path(__file__).parent / "schema.py",
              Path(__file__).parent / "runner" / "restricted_policy.py",
              Path(__file__).parent / "runner" / "formats.py"]
"""The code that applies the rules on the host: a change to it can change a verdict too
(runner/restricted_policy.py is the RestrictedPython policy vetting/restricted.py compiles with)."""


@lru_cache(maxsize=1)
def policy_hash() -> str:
    """sha256 of the canonical policy data and of the vetting code: part of every verdict key,
    so no cached verdict survives a change of rule or of the code that applies it."""
    digest = hashlib.sha256(json.dumps(policy_data(), sort_keys=True,
                                       separators=(",", ":")).encode())
    for path in _MECHANISM:
        if path.exists():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return "sha256:" + digest.hexdigest()


def policy_for_runner() -> dict[str, Any]:
    """What runner/guards.py needs inside the container (sent with the `configure` request)."""
    data = policy_data()
    keep = ("ALLOWED_MODULES", "FORBIDDEN_MODULES", "FORBIDDEN_SUBMODULES",
            "FORBIDDEN_BUILTINS", "ALLOWED_BUILTINS", "DANGEROUS_ATTRIBUTES",
            "FORBIDDEN_MODULE_ATTRIBUTES", "FUTURE_IMPORTS", "RUNTIME_DENIED_VALUE_MODULES",
            "USER_FILENAME", "ALLOWED_DUNDER_ATTRIBUTES", "RUNTIME_DENIED_VALUES",
            "RUNTIME_CALL_LIMITS", "MODULE_NAME_COLLISIONS", "STRING_CODE_PRIVATE_NAMES",
            "DUNDER_STRING_PATTERN", "STRING_CODE_DENIED_NAMES", "STRING_CODE_DENIED_KEYWORDS",
            "LIBRARY_CALL_LIMITS", "RUNTIME_DENIED_CONTAINERS", "RUNTIME_ARRAY_HOOKS",
            "RUNTIME_RAW_MEMORY_HOOKS")
    out = {k.lower(): data[k] for k in keep}
    out["module_name_attributes"] = data["ALL_MODULE_NAME_ATTRIBUTES"]
    out["audit"] = data["AUDIT_RULES"]
    out["policy_hash"] = policy_hash()
    return out
