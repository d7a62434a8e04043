"""One call process: confine itself, read its single request, run it, report, exit.

A zygote forks it ahead of time (zygote.py). It starts with nothing of any call: its parent has
never held a request. It closes every descriptor it inherited but its own four pipe ends, leaves
the zygote's session, reseeds every random generator it inherited from the kernel (a fork copies
their state, so every call would draw the zygote's numbers), installs the kernel filter
(seccomp.py), walks the call path once so its copy-on-write faults are paid before the request
comes, says it is ready (SPARE_READY), then blocks on its request pipe. It compiles its call's
code itself: the runner never compiles or keeps any call's code.

After SPARE_READY, what it writes on its result pipe is its own report: audit lines
`{"audit": {...}}` while it runs, then one line `{"result": {"ok", "value", "error"}}`. The
runner treats that report as a claim (the code under test runs in this process and can write
anything there); the exit status, the time taken, the output volume and the memory kill are
measured by the runner from outside.
"""

from __future__ import annotations

import ast
import contextlib
import gc
import hashlib
import json
import linecache
import marshal
import math
import os
import pickle
import random
import resource
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

import audit_hook
import guards
import seccomp
from protocol import MAX_CALLED

__all__ = ["COMPILE_WARM_UP", "SPARE_READY", "WARM_UP", "ZYGOTE_GENERATORS", "child_main",
           "find_generators", "prefault", "reseed_generators", "state_digest", "to_json_value"]

RESET_SIGNALS = (signal.SIGIO, signal.SIGURG, signal.SIGHUP, signal.SIGINT, signal.SIGPIPE,
                 signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGTSTP, signal.SIGTTIN,
                 signal.SIGTTOU, signal.SIGXFSZ, signal.SIGVTALRM, signal.SIGPROF, signal.SIGCHLD,
                 signal.SIGTERM)
WARM_UP = "def fnforge_warm_up(n):\n    return [n * k for k in range(3)]\n"
COMPILE_WARM_UP = (
    "import math\nfrom fractions import Fraction\n\n"
    "def fnforge_compile_warm_up(n: int, k: int = 2, *args, **kwargs) -> dict:\n"
    "    \"\"\"Compiled, never run.\"\"\"\n"
    "    total, seen = 0, {}\n"
    "    for i in range(n):\n"
    "        if i % k == 0 and not seen.get(i):\n"
    "            total += math.comb(n, i) ** 2\n"
    "        elif i > 3:\n"
    "            seen[i] = [j * j for j in range(i) if j]\n"
    "    try:\n"
    "        x = Fraction(total, n or 1).limit_denominator(k)\n"
    "    except (ValueError, ZeroDivisionError) as exc:\n"
    "        return {'error': str(exc)}\n"
    "    while n > 0:\n"
    "        n -= 1\n"
    "    return {'x': x, 'pairs': sorted((a, b) for a, b in seen.items()), 'f': f'{total:d}',\n"
    "            'l': (lambda y: y + 1)(k), 's': args[1:], 'k': kwargs}\n")
"""Compiled (never run) once by each zygote, before it forks: the compiler's first-use state (lazy
imports, caches) is set up there and shared by every call process. A spare compiles only the
small WARM_UP: measured, that pays almost all of the copy-on-write faults of a call's own
compile (45 left, against 250 without it) at 40% of the CPU of compiling this one per spare."""
SPARE_READY = b"R"
"""Written once on the result channel when the warm-up is done, before the request is read: the
runner says it is ready for the next call only after this, so no call waits for a warm-up."""
MESSAGE_CHARS = 4000
TRACEBACK_CHARS = 16000
RESEED_BYTES = 32  # kernel entropy per generator and call process (os.urandom)

ZYGOTE_GENERATORS: list[tuple[Any, str]] = []
"""Every random generator the zygote holds, with a digest of its state at fork time: filled by
the zygote (find_generators), reseeded in each call process, checked by the self-test."""


def child_main(fds: tuple[int, int, int, int], policy: dict[str, Any],
               limits: dict[str, Any]) -> NoReturn:
    """Never returns: the process ends with os._exit(status) after its report."""
    req_r, res_w, out_w, err_w = fds
    status = 70
    try:
        devnull_w = _own_descriptors(req_r, res_w, out_w, err_w)
        reseed_generators()
        seccomp.install()
        prefault(policy)
        os.write(res_w, SPARE_READY)
        request = _read_request(req_r)
        if request is None:
            os._exit(0)  # the runner is shutting down
        cpu = math.ceil(float(request["timeout"])) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        out = os.fdopen(res_w, "w", encoding="utf-8", buffering=1)

        def emit(event: dict[str, Any]) -> None:
            out.write(json.dumps({"audit": event}) + "\n")
            out.flush()

        sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False,
                          buffering=1 << 16)
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False,
                          buffering=1 << 16)
        result, status = _execute(request, policy, limits, emit)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # user code may have closed or replaced them
                stream.flush()
        for fd in (1, 2):  # all output is in the pipes before the result: the runner answers
            with contextlib.suppress(OSError):
                os.dup2(devnull_w, fd)
        audit_hook.audit_pause()
        out.write(json.dumps({"result": result}, allow_nan=False) + "\n")
        out.flush()
    except BaseException:
        with contextlib.suppress(BaseException):  # fd 2: the call's stderr, or the runner's
            os.write(2, traceback.format_exc().encode()[-8000:])
    os._exit(status)


def _own_descriptors(req_r: int, res_w: int, out_w: int, err_w: int) -> int:
    """stdin /dev/null, stdout and stderr the call's pipes, nothing else inherited."""
    signal.set_wakeup_fd(-1)
    for signum in RESET_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDONLY)
    devnull_w = os.open(os.devnull, os.O_WRONLY)  # replaces stdout/stderr after the call
    os.dup2(devnull, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    keep = {0, 1, 2, req_r, res_w, devnull_w}
    for name in os.listdir("/proc/self/fd"):
        if int(name) not in keep:
            with contextlib.suppress(OSError):
                os.close(int(name))
    os.setsid()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return devnull_w


def _read_request(req_r: int) -> dict[str, Any] | None:
    """The runner's marshal of the request (JSON data plus the code objects it compiled)."""
    chunks = []
    while chunk := os.read(req_r, 1 << 16):
        chunks.append(chunk)
    os.close(req_r)
    if not chunks:
        return None
    request: dict[str, Any] = marshal.loads(b"".join(chunks))
    return request


def prefault(policy: dict[str, Any]) -> None:
    """Walk the call path once while waiting, so its copy-on-write faults are paid off it (the
    compiler's too: the call compiles its own code)."""
    func = guards.load_function(WARM_UP, "fnforge_warm_up", policy, True)
    json.loads(json.dumps({"result": {"ok": True, "value": to_json_value(func(3))}}))


def _numpy_kinds() -> tuple[type, ...]:
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is None:
        return ()
    return (numpy_random.RandomState, numpy_random.Generator, numpy_random.BitGenerator)


def find_generators() -> list[Any]:
    """Every random generator object in this process, found by type (so a library's own, such
    as sympy's `rng`, is found without being named): `random.Random` and its subclasses (not
    SystemRandom, which has no state), numpy's RandomState, Generator and bit generators."""
    kinds = (random.Random, *_numpy_kinds())
    return [obj for obj in gc.get_objects()
            if isinstance(obj, kinds) and not isinstance(obj, random.SystemRandom)]


def state_digest(gen: Any) -> str:
    """A digest of a generator's state: equal digests draw equal numbers."""
    if isinstance(gen, random.Random):
        state: Any = gen.getstate()
    elif hasattr(gen, "get_state"):  # numpy RandomState
        state = gen.get_state(legacy=False)
    elif hasattr(gen, "bit_generator"):  # numpy Generator
        state = gen.bit_generator.state
    else:  # numpy bit generator
        state = gen.state
    return hashlib.sha256(pickle.dumps(state)).hexdigest()


def reseed_generators() -> None:
    """Each of the zygote's generators gets fresh kernel entropy, in this process only. One
    that refuses keeps the zygote's state, and the self-test's probe refuses the sandbox."""
    for gen, _ in ZYGOTE_GENERATORS:
        with contextlib.suppress(Exception):
            _reseed(gen, int.from_bytes(os.urandom(RESEED_BYTES), "big"))


def _reseed(gen: Any, seed: int) -> None:
    if isinstance(gen, random.Random):
        gen.seed(seed)
    elif hasattr(gen, "get_state"):  # numpy RandomState: a legacy seed is 32-bit words
        gen.seed([(seed >> (32 * i)) & 0xFFFFFFFF for i in range(RESEED_BYTES // 4)])
    elif hasattr(gen, "bit_generator"):  # numpy Generator: its bit generator
        _reseed(gen.bit_generator, seed)
    else:  # numpy bit generator: the state of a new one of its kind
        gen.state = type(gen)(seed).state


def _execute(request: dict[str, Any], policy: dict[str, Any], limits: dict[str, Any],
             emit: Callable[[dict[str, Any]], None]) -> tuple[dict[str, Any], int]:
    """(the report, the exit status) of one request."""
    op = request["op"]
    if op == "probe":
        import probes  # runner/probes/

        return {"ok": True, "value": probes.run_probes(), "error": None}, 0
    fns = [request["function"]] if op == "call" else request["functions"]
    compiled: list[Any] = []
    failed: BaseException | None = None
    try:  # before the audit hook, as the runner once did: compiling is not the code's doing
        for fn in fns:
            compiled.append(guards.compile_function(fn["code"], policy,
                                                    fn.get("restricted", True)))
    except BaseException as exc:  # a SyntaxError, say: the call's own, reported below
        failed = exc
    if request.get("audit", True):
        if op == "run":  # an agent's code block: record every event, refuse only some
            rules = policy.get("audit", {})
            policy = {**policy, "audit": {
                **rules, "block": False,
                "block_events": rules.get("code_block_blocked_events", []),
                "block_prefixes": rules.get("code_block_blocked_prefixes", [])}}
        audit_hook.install_audit_hook(policy, emit)
    value: Any = None
    calls: dict[str, int] = {}  # a code block's calls of each library function
    try:
        if failed is not None:
            raise failed
        if op == "call":
            fn = request["function"]
            func = guards.load_function(fn["code"], fn["name"], policy, fn["restricted"],
                                        compiled[0])
            value = func(**request["args"])
        else:  # run
            library = {fn["name"]: _counted(fn["name"], guards.load_function(
                fn["code"], fn["name"], policy, True, code), calls)
                for fn, code in zip(fns, compiled, strict=True)}
            namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__,
                                         **library, LIBRARY: library}
            # the block's lines for its traceback (this process ends with the call)
            linecache.cache["<code>"] = (len(request["code"]), None,
                                         request["code"].splitlines(True), "<code>")
            exec(_compiled_block(request["code"], fns), namespace)
    except SystemExit as exc:
        status = _exit_status(exc.code)
        error = None if status == 0 else _error("SystemExit", str(exc.code))
        return _with_calls(op, calls, {"ok": status == 0, "value": None, "error": error}), status
    except BaseException as exc:
        tb = _traceback(exc, op == "run")
        if op == "run":
            with contextlib.suppress(Exception):
                sys.stderr.write(tb)
        return _with_calls(op, calls, {"ok": False, "value": None,
                                       "error": _error(type(exc).__name__, _safe_str(exc), tb)}), 1
    if op == "run":
        return _with_calls(op, calls, {"ok": True, "value": None, "error": None}), 0
    try:
        converted = to_json_value(value)
        size = len(json.dumps(converted, allow_nan=False))
    except BaseException as exc:
        return {"ok": False, "value": None, "error": _error(
            "ResultNotJSON", f"cannot convert the return value: {type(exc).__name__}: "
            f"{_safe_str(exc)}")}, 1
    if size > limits["max_value"]:
        return {"ok": False, "value": None, "error": _error(
            "ResultTooLarge", f"return value is {size} bytes as JSON, over the limit of "
            f"{limits['max_value']}")}, 1
    return {"ok": True, "value": converted, "error": None}, 0


def _compiled_block(source: str, functions: list[dict[str, Any]]) -> Any:
    """A code block compiled as the model means it: the library kept, the last value shown."""
    tree = ast.parse(source, "<code>")
    _keep_library(tree, functions)
    _show_last_value(tree)
    return compile(tree, "<code>", "exec")


def _keep_library(tree: ast.Module, functions: list[dict[str, Any]]) -> None:
    """The block changed only where it would lose the library the model was told it has.
    Small models re-define a function they were given (sometimes wrongly): a top-level `def`
    with the library's own parameters is left out, and the block is told so on its stdout (a
    def with other parameters is the model's own helper that shares a name, and is kept).
    They also import it from where they guess it lives (`from sympy import count_divisors`):
    an import of a library name is kept when it works (`from sympy import gcd` means sympy's
    gcd, whatever the library's `gcd` is) and falls back to the library's function when it
    fails; a star import does not replace the library's names."""
    library = {fn["name"]: _parameters(fn["code"], fn["name"]) for fn in functions}

    def redefined(node: ast.stmt) -> str | None:  # the library name a def re-defines as is
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and \
                node.name in library and _arg_names(node) == library[node.name]:
            return node.name
        return None

    skipped = [name for node in tree.body if (name := redefined(node))]
    tree.body = [node for node in tree.body if redefined(node) is None]
    _LibraryImports(set(library)).visit(tree)
    ast.fix_missing_locations(tree)
    if skipped:
        print(f"note: {', '.join(dict.fromkeys(skipped))} already defined by the library; your "
              "definition of it was not used")


LIBRARY = "_fnforge_library"
"""The block's name for the library's functions (name -> function), where a failed import of a
library name and a star import take them back from."""


class _LibraryImports(ast.NodeTransformer):
    """`from m import NAME` of a library name, anywhere: `try: from m import NAME` with the
    library's NAME on ImportError; `from m import *`: followed by the library's names again."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def visit_ImportFrom(self, node: ast.ImportFrom) -> Any:
        if any(a.name == "*" for a in node.names):
            return [node, *(ast.copy_location(_from_library(n), node) for n in sorted(self.names))]
        guessed = [a for a in node.names if a.asname is None and a.name in self.names]
        if not guessed:
            return node
        rest = [a for a in node.names if a not in guessed]
        out: list[ast.stmt] = [ast.ImportFrom(node.module, rest, node.level)] if rest else []
        for alias in guessed:
            out.append(ast.Try(
                body=[ast.ImportFrom(node.module, [ast.alias(alias.name)], node.level)],
                handlers=[ast.ExceptHandler(ast.Name("ImportError", ast.Load()), None,
                                            [_from_library(alias.name)])],
                orelse=[], finalbody=[]))
        return [ast.copy_location(n, node) for n in out]


def _from_library(name: str) -> ast.stmt:
    """`NAME = _fnforge_library["NAME"]`"""
    return ast.Assign([ast.Name(name, ast.Store())],
                      ast.Subscript(ast.Name(LIBRARY, ast.Load()), ast.Constant(name),
                                    ast.Load()))


def _counted(name: str, func: Callable[..., Any], calls: dict[str, int]) -> Callable[..., Any]:
    """The library function as the block sees it: each call is counted (what the block used
    of its library, reported with its result)."""
    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[name] = calls.get(name, 0) + 1
        return func(*args, **kwargs)

    counted.__name__ = counted.__qualname__ = name
    counted.__doc__ = func.__doc__
    counted.__wrapped__ = func  # type: ignore[attr-defined]  # inspect.signature follows it
    return counted


def _with_calls(op: str, calls: dict[str, int], report: dict[str, Any]) -> dict[str, Any]:
    """A code block's report carries its library calls (a claim of the block's own process,
    checked by the host like everything else in it)."""
    if op != "run":
        return report
    try:
        return {**report, "calls": {str(k): int(v) for k, v in list(calls.items())[:MAX_CALLED]}}
    except Exception:  # the block was free to tamper with the dict
        return {**report, "calls": {}}



_PRINTERS = frozenset({"print", "pprint", "write", "display"})


def _show_last_value(tree: ast.Module) -> None:
    """A block that prints nothing and ends in a bare expression prints that value, as a
    notebook cell shows it: the model often ends with `f(997, 1000)` and no print, then
    guesses the number it never saw. A block that prints for itself is left alone (its
    `main()` that returns 0 would add a last line "0" the model takes for the answer), and a
    value of None prints nothing."""
    last = tree.body[-1] if tree.body else None
    if not isinstance(last, ast.Expr) or any(
            isinstance(n, ast.Call) and (getattr(n.func, "id", None) in _PRINTERS
                                         or getattr(n.func, "attr", None) in _PRINTERS)
            for n in ast.walk(tree)):
        return
    name = "_fnforge_last_value"
    shown = ast.If(
        test=ast.Compare(left=ast.NamedExpr(target=ast.Name(name, ast.Store()), value=last.value),
                         ops=[ast.IsNot()], comparators=[ast.Constant(None)]),
        body=[ast.Expr(ast.Call(ast.Name("print", ast.Load()), [ast.Name(name, ast.Load())], []))],
        orelse=[])
    tree.body[-1] = ast.copy_location(shown, last)
    ast.fix_missing_locations(tree)


def _traceback(exc: BaseException, block: bool) -> str:
    """The traceback to report (a code block's from its own frames on). Formatting reads
    linecache, which the code was free to change: if that breaks it, the exception's own lines
    are reported rather than none."""
    try:
        return _code_traceback(exc) if block else traceback.format_exc()
    except Exception:
        return "".join(traceback.format_exception_only(type(exc), exc))


def _code_traceback(exc: BaseException) -> str:
    """The traceback from the code block's first frame on: the runner's own frames above it
    tell the model nothing and cost it tokens (a SyntaxError keeps just its message)."""
    frames = traceback.extract_tb(exc.__traceback__)
    first = next((i for i, f in enumerate(frames) if f.filename == "<code>"), len(frames))
    kept = traceback.StackSummary.from_list(  # not the runner's call counting between them
        [f for f in frames[first:] if f.filename != __file__])
    head = ["Traceback (most recent call last):\n", *kept.format()] if kept else []
    return "".join(head + list(traceback.format_exception_only(type(exc), exc)))


def _parameters(code: str, name: str) -> list[str] | None:
    for node in ast.parse(code).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return _arg_names(node)
    return None


def _arg_names(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    args = node.args
    return [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]


def _exit_status(code: Any) -> int:
    """What the interpreter would exit with for SystemExit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    with contextlib.suppress(Exception):
        print(code, file=sys.stderr)
    return 1


def _error(kind: str, message: str, tb: str = "") -> dict[str, str]:
    return {"type": kind, "message": message[:MESSAGE_CHARS], "traceback": tb[-TRACEBACK_CHARS:]}


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except BaseException:
        return repr(type(exc))


def to_json_value(value: Any, depth: int = 0) -> Any:
    """The documented conversion of a return value to JSON (README, "Return values").

    None, bool, int, str pass; finite floats pass, NaN and infinities become "nan", "inf", "-inf";
    lists, tuples, sets (sorted when possible) and numpy arrays become lists; dicts keep their
    keys as strings; integral numbers (numpy, sympy Integer) become int; other real floating
    numbers (numpy floats, sympy Float) become float; anything else (sympy expressions, Rational,
    Fraction, Decimal, complex, arbitrary objects) becomes str(value).
    """
    if depth > 48:
        raise ValueError("return value nested deeper than 48 levels")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [to_json_value(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        items = list(value)
        try:
            items.sort()
        except TypeError:
            items.sort(key=repr)
        return [to_json_value(v, depth + 1) for v in items]
    if isinstance(value, dict):
        return {str(k): to_json_value(v, depth + 1) for k, v in value.items()}
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if isinstance(value, numpy.ndarray):
            return to_json_value(value.tolist(), depth + 1)
        if isinstance(value, numpy.generic):
            return to_json_value(value.item(), depth + 1)
    sympy = sys.modules.get("sympy")
    if sympy is not None and isinstance(value, sympy.Basic):
        if getattr(value, "is_Integer", False):
            return int(value)
        if getattr(value, "is_Float", False):
            return to_json_value(float(value), depth + 1)
        return str(value)
    return str(value)
