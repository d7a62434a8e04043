"""Answer checking: the one place in fnforge that decides whether a response is right.

Extraction (the last ``\\boxed{}``, else a marked final answer) runs in the caller's process: it is
linear-time string work over at most the last ``MAX_SCAN_CHARS`` characters. Equivalence runs in
worker processes: a small normalisation (only where math-verify was measured to miss) and then
math-verify's ``parse``/``verify``, whose sympy work can be made to hang or eat all memory by a
hostile answer (``9^{9^{9^{9}}}``), so each worker has a memory rlimit and a wall-clock deadline
enforced from outside; a worker that misses it is killed and replaced.

Workers are plain ``python -c`` subprocesses speaking JSON lines over pipes rather than
multiprocessing ones: nothing is pickled, the parent's ``__main__`` is never re-imported (spawn and
forkserver re-run it in every worker) and no process-global multiprocessing state is touched, so a
``Grader`` works the same from any thread and any entry point. ``subprocess`` forks and execs in C
without running Python code in the child, which is safe from a threaded parent; the price is about
half a second to start a replacement after a kill, paid by the next grade, never by its deadline.

Decisions (each pinned by a test):

- Percentages: ``50\\%`` matches ``50`` and ``0.5`` (math-verify's rule); ``50`` never matches
  ``0.5``. MATH writes the percent sign inconsistently.
- Units and degrees are dropped: ``5 \\text{ cm}`` matches ``5``, ``30^\\circ`` matches ``30``, but
  not ``\\frac{\\pi}{6}``.
- A bare comma list (``1, 2``) is a set of solutions, order-free; a parenthesised one (``(1,2)``)
  is a tuple or interval, ordered, with open/closed ends compared.
- Thousands separators: ``2,000`` matches ``2000`` unless the reference is itself a list, in which
  case every comma of the response separates items (``100,200`` is then two numbers).
- Text is compared case-insensitively after unwrapping ``\\text{}``, ``\\textbf{}``, ``\\mbox{}``.
- A response with no answer is wrong (``no-answer``), never an error; an answer longer than
  ``MAX_ANSWER_CHARS`` is compared as a string only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import selectors
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

from ..errors import DatasetError, GraderError

__all__ = [
    "DEFAULT_MEMORY_BYTES",
    "DEFAULT_TIMEOUT",
    "DEFAULT_WORKERS",
    "GRADE_HELP",
    "MAX_ANSWER_CHARS",
    "MAX_SCAN_CHARS",
    "Grade",
    "Grader",
    "Reason",
    "add_grade_arguments",
    "extract_answer",
    "grade",
    "grade_command",
    "reference_answer",
    "run_grade",
]

logger = logging.getLogger(__name__)

Reason = Literal["match", "no-answer", "mismatch", "timeout", "error"]

#: Only this many trailing characters of a response are searched for an answer.
MAX_SCAN_CHARS = 20_000
#: Longer answers (MATH's longest is about 300 characters) are compared as strings only.
MAX_ANSWER_CHARS = 1_000
#: Wall-clock limit for one comparison in a worker, in seconds.
DEFAULT_TIMEOUT = 5.0
#: Address-space limit (RLIMIT_AS) of each worker: sympy towers die with MemoryError, not the host.
DEFAULT_MEMORY_BYTES = 1 << 30
DEFAULT_WORKERS = max(1, min(4, os.cpu_count() or 1))
#: A worker is replaced after this many comparisons, to bound the growth of sympy's caches.
MAX_GRADES_PER_WORKER = 2_000
#: A new worker (interpreter start, math-verify import, warm-up) must be ready within this.
STARTUP_TIMEOUT = 60.0
#: "the answer is X" counts only this close to the end (it also appears mid-reasoning).
_LOOSE_MARKER_TAIL = 500
_MARKER_VALUE_CHARS = 300


@dataclass(frozen=True)
class Grade:
    """The verdict on one response: ``correct`` is what a reward uses, ``reason`` says why."""

    correct: bool
    extracted: str | None
    reason: Reason

    def to_dict(self) -> dict[str, Any]:
        return {"correct": self.correct, "extracted": self.extracted, "reason": self.reason}


# --------------------------------------------------------------------------------------------
# Extraction (caller's process; linear time, no sympy)

# A box command (also over-escaped, "\\boxed", as models sometimes write it), an escaped character
# (so \{ \} \\ never count as braces), or a brace. No pattern here may backtrack more than a
# bounded amount per position (no unbounded repeats next to each other over the same
# characters): the input is hostile and must be read in linear time.
_BOX_TOKEN = re.compile(r"\\{1,2}(?:boxed|fbox)(?![A-Za-z])|\\.|[{}]", re.DOTALL)
_SPACE_ARG = re.compile(r"[ \t]*([^\s${}]{1,100})")
_MARKER = re.compile(
    r"(?P<hash>####[ \t]*(?=[-+$\\\d.]))"
    r"|(?P<final>\bfinal[ \t]+answer(?:[ \t]+is)?[ \t]*(?:\*+[ \t]*)?:?[ \t]*)"
    r"|(?P<colon>\banswer[ \t]*(?:\*+[ \t]*)?:[ \t]*)"
    r"|(?P<loose>\b(?:the|my)[ \t]+answer[ \t]+(?:is|=)[ \t]*:?[ \t]*)",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"\.(?=\s|$)|\n")
_DELIMITERS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))


def _last_box(text: str) -> str | None:
    """Content of the box command that starts last among the complete, non-empty ones.

    One pass with a stack of open braces: nested braces are matched, an unclosed box is skipped
    (a truncated answer is no answer), and nothing is ever rescanned.
    """
    best_at = -1
    best: str | None = None
    stack: list[tuple[int, int]] = []  # (box command position or -1, content start)
    box_at = -1  # position of a box command whose "{" is the next token
    n = len(text)
    for m in _BOX_TOKEN.finditer(text):
        token = m.group()
        if token == "{":
            stack.append((box_at, m.end()))
            box_at = -1
        elif token == "}":
            box_at = -1
            if stack:
                at, start = stack.pop()
                if at > best_at:
                    content = text[start : m.start()].strip()
                    if content:
                        best_at, best = at, content
        elif len(token) > 2:  # \boxed or \fbox
            k = m.end()
            while k < n and text[k] in " \t":
                k += 1
            if k < n and text[k] == "{":
                box_at = m.start()
            else:
                box_at = -1
                arg = _SPACE_ARG.match(text, m.end())
                content = arg.group(1).rstrip(".,;:") if arg else ""
                if content and m.start() > best_at:
                    best_at, best = m.start(), content
        else:
            box_at = -1
    return best


def _marker_value(text: str, start: int) -> str | None:
    """The answer written after a marker: a math span, or the rest of the sentence."""
    chunk = text[start : start + _MARKER_VALUE_CHARS].lstrip(" \t*")
    if chunk.startswith("\n"):  # "Answer:" on its own line: take the next non-empty line
        chunk = chunk.lstrip().lstrip("*")
    for opener, closer in _DELIMITERS:
        if chunk.startswith(opener):
            end = chunk.find(closer, len(opener))
            newline = chunk.find("\n")
            if end >= 0 and (opener in ("$$", "\\[") or newline < 0 or end < newline):
                value = chunk[len(opener) : end]
                break
            if opener == "$":  # "$18" with no closing dollar: currency, not math
                chunk = chunk[1:]
    else:
        end_m = _SENTENCE_END.search(chunk)
        value = chunk[: end_m.start()] if end_m else chunk
    value = value.strip().strip("*").strip().rstrip(".,;:!").strip()
    return value or None


def extract_answer(response: str) -> str | None:
    """The final answer of a response, or None when it gives none (graded wrong, not an error).

    The last complete ``\\boxed{...}``, ``\\boxed 5`` or ``\\fbox{...}`` wins; without one, the last
    marked answer ("final answer is X", "Answer: X", "#### X", and "the answer is X" near the end).
    Only the last ``MAX_SCAN_CHARS`` characters are read, so any input is handled in linear time.
    """
    if not isinstance(response, str) or not response:
        return None
    text = response[-MAX_SCAN_CHARS:]
    boxed = _last_box(text)
    if boxed is not None:
        return boxed
    last: re.Match[str] | None = None
    for m in _MARKER.finditer(text):
        if m.lastgroup == "loose" and m.start() < len(text) - _LOOSE_MARKER_TAIL:
            continue
        last = m
    if last is None:
        return None
    return _marker_value(text, last.end())


_GSM8K_ANSWER = re.compile(r"####[ \t]*([^\n]*)")


def reference_answer(reference: str) -> str:
    """The final answer of a reference: a MATH solution's last box, a GSM8K answer's ``#### N``
    (commas dropped), or the reference itself when it is a bare answer.

    Raises DatasetError (a ValueError) when there is no answer at all: that is a fault of the
    data, not a wrong response.
    """
    if not isinstance(reference, str):
        raise DatasetError(f"reference must be a string, not {type(reference).__name__}")
    text = reference[-MAX_SCAN_CHARS:]
    answer = _last_box(text)
    if answer is None:
        gsm = [m.group(1) for m in _GSM8K_ANSWER.finditer(text)]
        answer = gsm[-1].replace(",", "").strip() if gsm else reference.strip()
    if not answer:
        raise DatasetError("reference has no answer")
    return answer


_CANONICAL_DROP = re.compile(r"\\(?:left|right)(?![A-Za-z])|\\[,;:! ]|(?<!\\)\$|\s+")


def _canonical(answer: str) -> str:
    """A string form under which equal strings are certainly equal answers (the fast path)."""
    text = _CANONICAL_DROP.sub("", answer)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return text.rstrip(".")


# --------------------------------------------------------------------------------------------
# Equivalence (worker processes only: sympy work on hostile input)

_UNICODE = str.maketrans(
    {
        "\u2212": "-",  # minus sign
        "\u2013": "-",
        "\u00d7": "\\times ",
        "\u00f7": "\\div ",
        "\u00b7": "\\cdot ",
        "\u03c0": "\\pi ",
        "\u221e": "\\infty ",
        "\u00b0": "^\\circ ",
        "\u2264": "\\le ",
        "\u2265": "\\ge ",
        "\u2260": "\\ne ",
    }
)
_SQRT_UNICODE = re.compile(r"\u221a\s*(?:\(([^()]*)\)|(\d+|[A-Za-z]))")
_LATEX_THOUSANDS = re.compile(r"(?<=\d)(?:,\\!|\{,\})(?=\d{3})")
_SPACING = re.compile(r"(?<!\\)\\[,;:!]")
_BACKSLASH_SPACE = re.compile(r"(?<!\\)\\ ")
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
_IMAGINARY = re.compile(r"(?<=[\d})])i(?![A-Za-z])")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mbox|mathrm|mathbf)\s*\{([^{}]*)\}")
# "42 dollars": words of three letters or more after a number are a unit ("2 x" is not).
_NUMBER_WORDS = re.compile(r"(-?\d[\d,]*(?:\.\d+)?)\s+[A-Za-z]{3,}(?:\s+[A-Za-z]+)*")
# Inside \text{} any words after the number are a unit: \text{5 cm}.
_NUMBER_TEXT = re.compile(r"(-?\d[\d,]*(?:\.\d+)?)\s*[A-Za-z]+(?:\s+[A-Za-z]+)*")
_PLAIN_TEXT = re.compile(r"\(?([A-Za-z]+(?: [A-Za-z]+)*)\)?")
_THOUSANDS = re.compile(r"-?(?:\\\$)?\s*\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d)")


def _clean(answer: str) -> str:
    """Rewrite what math-verify misreads (measured); everything else is left to it."""
    text = answer.replace("\n", " ").translate(_UNICODE)
    text = _SQRT_UNICODE.sub(lambda m: "\\sqrt{" + (m.group(1) or m.group(2)) + "}", text)
    text = _UNESCAPED_DOLLAR.sub("", text)  # math delimiters or currency: not part of the value
    text = _LATEX_THOUSANDS.sub("", text)  # MATH's 5,\!525 and 1{,}000, also inside \frac
    text = _SPACING.sub("", text)  # 1\,000 and 10,\!000
    text = _BACKSLASH_SPACE.sub(" ", text).strip()
    # "-2i" is read as a product with a real symbol i, "-2 i" as the imaginary unit: make both
    # sides read i the same way.
    text = _IMAGINARY.sub(" i", text)
    whole = _TEXT_WRAPPER.fullmatch(text)
    number = _NUMBER_TEXT.fullmatch(whole.group(1).strip()) if whole else None
    if number:
        text = number.group(1)  # \text{5 cm}
    words = _NUMBER_WORDS.fullmatch(text)
    if words:
        text = words.group(1)  # "42 dollars"
    # A trailing full stop ("\text{Monday.}", "\frac{1}{2}.") stops math-verify's parser.
    closing = len(text) - len(text.rstrip("}"))
    body = text[: len(text) - closing].rstrip(" .") if closing else text.rstrip(" .")
    return body + "}" * closing


def _plain_text(answer: str) -> str | None:
    """Lower-case words of a text-only answer (``\\text{Devon and Sam}``), else None."""
    text = _TEXT_WRAPPER.sub(lambda m: m.group(1), answer).strip()
    m = _PLAIN_TEXT.fullmatch(" ".join(text.split()))
    return m.group(1).casefold() if m else None


def _is_list(answer: str) -> bool:
    return "," in answer and _THOUSANDS.fullmatch(answer.strip()) is None


def _equivalent(answer: str, gold: str) -> bool:
    """Whether ``answer`` equals the reference answer ``gold``. Unbounded: call in a worker."""
    from math_verify import parse, verify

    ans, ref = _clean(answer), _clean(gold)
    if _canonical(ans) == _canonical(ref):
        return True
    words_ans, words_ref = _plain_text(ans), _plain_text(ref)
    if words_ans is not None and words_ans == words_ref:
        return True
    if _is_list(ref):
        ans = _DIGIT_COMMA.sub(", ", ans)  # the reference is a list: 100,200 is two items
    parsed_ref = parse("$\\boxed{" + ref + "}$", parsing_timeout=None)
    parsed_ans = parse("$\\boxed{" + ans + "}$", parsing_timeout=None)
    return bool(verify(parsed_ref, parsed_ans, timeout_seconds=None))


def _serve() -> None:
    """Worker main loop: one JSON request line in, one JSON reply line out, until EOF."""
    import resource
    import signal

    limit = int(os.environ.get("FNFORGE_GRADER_MEMORY", DEFAULT_MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The protocol owns the real stdout; anything printed by libraries goes to stderr.
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    try:
        logging.getLogger("math_verify").setLevel(logging.CRITICAL)
        logging.getLogger("latex2sympy2_extended").setLevel(logging.CRITICAL)
        _equivalent("\\frac{3}{4}", "0.75")  # warm-up: imports, regex and parser tables
    except BaseException as exc:
        proto.write(json.dumps({"failed": f"{type(exc).__name__}: {exc}"}) + "\n")
        return
    proto.write(json.dumps({"ready": os.getpid()}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        # An orphaned worker stuck on a hostile answer dies of SIGXCPU instead of spinning on.
        used = resource.getrusage(resource.RUSAGE_SELF)
        budget = int(used.ru_utime + used.ru_stime + 2 * float(request["t"]) + 2)
        resource.setrlimit(resource.RLIMIT_CPU, (budget, resource.RLIM_INFINITY))
        try:
            reply: dict[str, Any] = {"ok": _equivalent(request["a"], request["g"])}
        except (MemoryError, RecursionError):
            reply = {"ok": False}  # hostile input that math-verify let through
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        proto.write(json.dumps(reply) + "\n")


# --------------------------------------------------------------------------------------------
# The worker pool


_WORKER_CODE = "from optimizer.math.grading import _serve; _serve()"


class _Worker:
    """One worker subprocess and its line reader; used by one thread at a time."""

    def __init__(self, memory_bytes: int) -> None:
        root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        # A minimal environment: no keys or tokens near the process that parses model output.
        env = {
            "PYTHONPATH": path,
            "PYTHONIOENCODING": "utf-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "LC_ALL": "C.UTF-8",
            "FNFORGE_GRADER_MEMORY": str(memory_bytes),
        }
        if not sys.executable:
            raise GraderError("cannot start a grading worker: sys.executable is unknown")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the parent, which then stops the workers
            close_fds=True,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin: IO[bytes] = self.process.stdin
        self._fd = self.process.stdout.fileno()
        os.set_blocking(self._fd, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)
        self._buffer = b""
        self.grades = 0
        try:
            hello = self.read_line(STARTUP_TIMEOUT)
        except EOFError:
            self.dispose()
            raise GraderError(
                f"grading worker exited with code {self.process.returncode} before it was "
                f"ready; run {sys.executable} -c '{_WORKER_CODE}' to see why"
            ) from None
        if hello is None or "ready" not in hello:
            self.dispose()
            why = hello.get("failed") if hello else f"not ready within {STARTUP_TIMEOUT:g} s"
            raise GraderError(
                f"grading worker failed to start: {why} (memory limit {memory_bytes >> 20} MiB)"
            )

    def send(self, request: dict[str, Any]) -> None:
        self._stdin.write(json.dumps(request).encode() + b"\n")
        self._stdin.flush()

    def read_line(self, timeout: float) -> dict[str, Any] | None:
        """The next reply, None at the deadline; EOFError when the worker died."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not self._selector.select(left):
                return None
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                raise EOFError("grading worker exited")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def kill(self) -> None:
        """Stop the process; safe from any thread (the pipes stay open for their owner)."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait()

    def dispose(self) -> None:
        """Stop the process and close its pipes: only by the thread that owns the worker, so no
        other thread can be reading a descriptor number that is closed (and maybe reused)."""
        self.kill()
        self._selector.close()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class Grader:
    """A thread-safe pool of grading workers; ``with Grader() as g: g.grade(response, ref)``.

    Workers start on demand, up to ``workers`` of them, so an idle ``Grader`` costs nothing. A
    comparison that misses its ``timeout`` counts as wrong (``timeout``), is logged, and its
    worker is killed and replaced; a worker that dies gives ``error`` and is replaced too.
    """

    def __init__(
        self,
        workers: int = DEFAULT_WORKERS,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.workers = workers
        self.timeout = timeout
        self.memory_bytes = memory_bytes
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._starting = 0
        self._closed = False

    def __enter__(self) -> Grader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every worker; grades still in flight fail with GraderError."""
        with self._cond:
            self._closed = True
            idle, busy = list(self._idle), list(self._busy)
            self._idle.clear()
            self._cond.notify_all()
        for worker in idle:
            worker.dispose()
        for worker in busy:
            worker.kill()  # its grading thread sees EOF and disposes of it

    @property
    def live_workers(self) -> int:
        """Workers started and not yet retired (for tests and monitoring)."""
        with self._cond:
            return len(self._idle) + len(self._busy)

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring and tests)."""
        with self._cond:
            return [w.process.pid for w in (*self._idle, *self._busy)]

    def grade(self, response: str, reference: str) -> Grade:
        """Grade ``response`` against ``reference`` (a MATH solution, GSM8K answer or answer);
        DatasetError when the reference holds no answer."""
        gold = reference_answer(reference)
        answer = extract_answer(response)
        if answer is None:
            return Grade(False, None, "no-answer")
        if _canonical(answer) == _canonical(gold):
            return Grade(True, answer, "match")
        if len(answer) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
            return Grade(False, answer, "mismatch")
        reason = self._compare(answer, gold)
        return Grade(reason == "match", answer, reason)

    def grade_many(self, pairs: Iterable[tuple[str, str]]) -> list[Grade]:
        """Grade (response, reference) pairs concurrently; results in input order."""
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = [pool.submit(self.grade, r, ref) for r, ref in pairs]
            return [f.result() for f in futures]

    def _compare(self, answer: str, gold: str) -> Reason:
        worker = self._acquire()
        started = time.monotonic()
        try:
            worker.send({"a": answer, "g": gold, "t": self.timeout})
            reply = worker.read_line(self.timeout)
        except (EOFError, OSError, ValueError) as exc:
            exit_code = worker.process.poll()
            self._retire(worker)
            if self._closed:
                raise GraderError("the grader was closed while grading") from exc
            logger.warning(
                "grading worker %d died (exit code %s) on answer %.80r; replaced",
                worker.process.pid, exit_code, answer,
            )
            return "error"
        if reply is None:
            self._retire(worker)
            logger.warning(
                "grading timed out after %.1f s on answer %.80r (reference %.80r); worker killed",
                time.monotonic() - started, answer, gold,
            )
            return "timeout"
        worker.grades += 1
        if "error" in reply:
            logger.warning("grading failed on answer %.80r: %s", answer, reply["error"])
            self._retire(worker)
            return "error"
        self._release(worker)
        return "match" if reply.get("ok") else "mismatch"

    def _acquire(self) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise GraderError("the grader is closed")
                if self._idle:
                    worker = self._idle.pop()
                    self._busy.add(worker)
                    return worker
                if len(self._busy) + self._starting < self.workers:
                    self._starting += 1
                    break
                self._cond.wait()
        try:
            worker = _Worker(self.memory_bytes)
        except BaseException:
            with self._cond:
                self._starting -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._starting -= 1
            if self._closed:
                worker.dispose()
                raise GraderError("the grader is closed")
            self._busy.add(worker)
            return worker

    def _release(self, worker: _Worker) -> None:
        if worker.grades >= MAX_GRADES_PER_WORKER:
            self._retire(worker)
            return
        with self._cond:
            self._busy.discard(worker)
            if not self._closed:
                self._idle.append(worker)
                self._cond.notify()
                return
        worker.dispose()

    def _retire(self, worker: _Worker) -> None:
        worker.dispose()
        with self._cond:
            self._busy.discard(worker)
            self._cond.notify()


_default_lock = threading.Lock()
_default: Grader | None = None


def _default_grader() -> Grader:
    global _default
    with _default_lock:
        if _default is None:
            import atexit

            _default = Grader()
            atexit.register(_default.close)
        return _default


def grade(response: str, reference: str) -> Grade:
    """Grade one response with a process-wide ``Grader`` (started on first use)."""
    return _default_grader().grade(response, reference)


# --------------------------------------------------------------------------------------------
# CLI: python -m optimizer grade --jsonl FILE [--out FILE]

#: Files with at least this many lines get a progress bar on stderr.
PROGRESS_MIN_LINES = 100


class _BadLine(ValueError):
    pass


def _parse_line(raw: bytes) -> tuple[str, str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _BadLine(f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _BadLine(f"not JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(row, dict):
        raise _BadLine(f"expected a JSON object, got {type(row).__name__}")
    fields = []
    for name in ("response", "reference"):
        if name not in row:
            raise _BadLine(f"missing field {name!r}")
        if not isinstance(row[name], str):
            raise _BadLine(f"field {name!r} must be a string, not {type(row[name]).__name__}")
        fields.append(row[name])
    try:
        reference_answer(fields[1])
    except DatasetError as exc:
        raise _BadLine(str(exc)) from exc
    return fields[0], fields[1]


GRADE_HELP = ('Grade {"response", "reference"} JSONL lines; writes one '
              '{"correct", "extracted", "reason"} line per input line, in order.')


def add_grade_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `grade` (shared by `python -m optimizer grade` and this module)."""
    parser.add_argument("--jsonl", required=True, type=Path, metavar="FILE", help="input lines")
    parser.add_argument("--out", type=Path, metavar="FILE", help="output (default: stdout)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"grading processes (default: {DEFAULT_WORKERS})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds per comparison (default: {DEFAULT_TIMEOUT:g})")


def grade_command(argv: list[str] | None = None) -> int:
    """``python -m optimizer grade --jsonl FILE [--out FILE]``: grade a JSONL file in order."""
    parser = argparse.ArgumentParser(prog="python -m optimizer grade", description=GRADE_HELP)
    add_grade_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    return run_grade(args)


def run_grade(args: argparse.Namespace) -> int:
    """Exit 0 when every line was graded, 2 for a bad line (after writing the lines before it)
    or an infrastructure error, with one message on stderr."""
    if args.workers < 1 or args.timeout <= 0:
        print("error: --workers must be at least 1 and --timeout positive", file=sys.stderr)
        return 2
    path: Path = args.jsonl
    try:
        with path.open("rb") as fh:
            total = sum(1 for raw in fh if raw.strip())
    except OSError as exc:
        print(f"error: {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        out: IO[str] = (
            args.out.open("w", encoding="utf-8") if args.out is not None else sys.stdout
        )
    except OSError as exc:
        print(f"error: {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        return _grade_file(path, out, total, args.workers, args.timeout)
    finally:
        if out is not sys.stdout:
            out.close()


def _grade_file(path: Path, out: IO[str], total: int, workers: int, timeout: float) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    progress = Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), console=Console(stderr=True),
        disable=total < PROGRESS_MIN_LINES,
    )
    task = progress.add_task(f"grading {path.name}", total=total)
    pending: deque[Future[Grade]] = deque()
    window = 4 * workers

    def write(future: Future[Grade]) -> None:
        out.write(json.dumps(future.result().to_dict(), ensure_ascii=False) + "\n")
        progress.advance(task)

    error: str | None = None
    try:
        with Grader(workers, timeout=timeout) as grader, progress, \
                ThreadPoolExecutor(max_workers=workers) as pool, path.open("rb") as fh:
            try:
                for lineno, raw in enumerate(fh, 1):
                    if not raw.strip():
                        continue  # blank lines are not inputs
                    try:
                        response, reference = _parse_line(raw)
                    except _BadLine as exc:
                        error = f"{path}:{lineno}: {exc}"
                        break
                    pending.append(pool.submit(grader.grade, response, reference))
                    while len(pending) >= window:
                        write(pending.popleft())
                while pending:  # after a bad line too: the lines before it are all written
                    write(pending.popleft())
            finally:
                for future in pending:  # interrupted: do not wait for queued grades
                    future.cancel()
        out.flush()
    except GraderError as exc:
        error = f"grading failed: {exc}"
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as cat does
        if out is sys.stdout:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        with contextlib.suppress(BrokenPipeError):
            out.flush()
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
