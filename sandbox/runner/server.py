"""The fnforge runner: pid 1 of every sandbox container, and the only fnforge code in there.

It reads one JSON request per line on stdin and answers one JSON line on stdout. Each call runs
in a fresh process that a zygote forked ahead of time (zygote.py; the process is child.py):
- the runner forks the two zygotes at configure time, before it reads any call, so no call
  process ever descends from a process that held another call's request, arguments or result;
- a call's request reaches its process only through that process's own pipe; the process
  compiles its code itself, under the call's deadline: the runner never compiles (or keeps) any
  call's code, so no call's code costs the runner time or memory after its answer;
- the runner measures everything it reports about a call from outside the call's process: the
  exit status and signal (from the zygote, which reaps it), the time, the deadline (SIGKILL),
  the output volume (the pipes, drained here with caps), the size of the report, and the
  memory kill (the cgroup's OOM counter). What the call's process writes on its result pipe (a
  value or an exception, and audit events) is parsed with size and nesting limits and
  validated field by field: it is the process's claim, never trusted beyond that;
- after the answer (off the critical path): every process of the call is killed, /tmp is
  emptied without recursion, the next spare is forked and has done its warm-up (it says so
  before it reads anything, so before any call's code runs in it); then the runner says it is
  ready (a
  `{"id": null, "ready": true}` line), and only then does the host send the next request and
  start its clock. If the runner cannot restore a clean state it says so (`retire`) and exits,
  and the host replaces the container (fail closed) and sends that request elsewhere;
- a request that never started is never failed: whatever keeps the runner from starting a call
  process for it (a dead zygote, a full pids table) retires the runner before the call starts.

The runner is the container's init: it reaps every orphan, and as a namespace init it cannot be
killed from inside. It is non-dumpable, so /proc/1/{mem,fd,environ} are closed to the sandbox
user, and the kernel filter of every call process (seccomp.py) refuses signals, tracing and
process_vm_* aimed at it. Standard library and RestrictedPython only; never imports `sandbox`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import json
import marshal
import os
import re
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), "/opt/fnforge/lib"]

import seccomp
import zygote
from child import SPARE_READY
from protocol import ErrorKind, checked_calls, loads_bounded

__all__ = [
    "HEAVY_SOURCE",
    "IGNORED_SIGNALS",
    "MAX_AUDIT_EVENTS",
    "READY",
    "STATUS_WAIT_S",
    "TMP",
    "CallNotStarted",
    "CallProcess",
    "Outcome",
    "Server",
    "Zygote",
    "ZygoteDied",
    "channel",
    "empty_dir",
    "needs_heavy",
    "parse_report",
    "respond",
]


TMP = "/tmp"
IGNORED_SIGNALS = (signal.SIGIO, signal.SIGURG, signal.SIGHUP, signal.SIGINT, signal.SIGPIPE,
                   signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGTSTP,
                   signal.SIGTTIN, signal.SIGTTOU, signal.SIGXFSZ, signal.SIGVTALRM,
                   signal.SIGPROF)
HEAVY_SOURCE = re.compile(r"\b(?:sympy|numpy|mpmath)\b")
READY: dict[str, Any] = {"id": None, "ready": True}
"""Sent once the clean-up after an answer is done: the host starts the next call's clock here."""
MAX_AUDIT_EVENTS = 100  # audit lines accepted from one call; more is a protocol violation
STATUS_WAIT_S = 5.0  # how long to wait for a killed process's exit status
SPARE_WARM_UP_S = 2.0  # how long the clean-up waits for a new spare's warm-up; then "ready"
# all the same, and the call that takes that spare waits for it (up to STATUS_WAIT_S)
KILL_WAIT_S = 1.5  # how long the clean-up may take to end a call's processes, then: retire
_PR_SET_DUMPABLE, _PR_SET_CHILD_SUBREAPER = 4, 36


class ZygoteDied(RuntimeError):
    """A zygote is gone: the runner cannot fork clean processes any more and exits."""


class CallNotStarted(RuntimeError):
    """The runner failed before the call's process got its request: nothing of it ran."""


@dataclass
class Zygote:
    pid: int
    sock: socket.socket


@dataclass
class CallProcess:
    """A forked call process and the runner's ends of its four pipes."""

    pid: int
    zygote: Zygote
    req_w: int
    res_r: int
    out_r: int
    err_r: int
    warm: bool = False  # it said SPARE_READY: its warm-up is done, it waits for its request
    reaped: bool = False  # its zygote has reported its exit

    def close(self) -> None:
        for fd in (self.req_w, self.res_r, self.out_r, self.err_r):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.req_w = self.res_r = self.out_r = self.err_r = -1


@dataclass
class Outcome:
    """What the runner measured of one call, and the report lines the process wrote."""

    killed_for: ErrorKind | None = None  # the runner's reason to kill it, if any
    status: int | None = None  # wait status; None when killed after its report without waiting
    oom: bool = False  # the container's OOM killer killed a process (any) during the call
    report: bytearray = field(default_factory=bytearray)
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    stdout_total: int = 0
    stderr_total: int = 0
    duration_ms: float = 0.0


class Server:
    def __init__(self) -> None:
        self.proto_in = os.dup(0)
        self.proto_out = os.dup(1)
        for fd in (0, 1, 2):  # the protocol stream and stderr: mode 0, so nothing can reopen
            with contextlib.suppress(OSError):  # them through /proc/1/fd (open under gVisor)
                os.fchmod(fd, 0)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)  # nothing this process prints can reach the protocol stream
        os.close(devnull)
        self.buffer = b""
        self.policy: dict[str, Any] = {}
        self.limits: dict[str, Any] = {}
        self.zygotes: dict[bool, Zygote] = {}  # by heavy
        self.spares: dict[bool, CallProcess | None] = {False: None, True: None}
        self.current: CallProcess | None = None
        self.exited: dict[int, int] = {}  # wait statuses the zygotes reported, by pid
        self.oom_file = next((p for p in ("/sys/fs/cgroup/memory/memory.oom_control",
                                          "/sys/fs/cgroup/memory.events")
                              if os.path.exists(p)), None)
        self.oom_baseline = 0
        self.tmp_baseline = 1
        self.tmp_stamp: Stamp = (0, 0, 0, 0, 0, 0)

    # -- the protocol loop ------------------------------------------------------------------------
    def serve(self) -> None:
        for signum in IGNORED_SIGNALS:  # nothing in the container may stop us with a signal
            signal.signal(signum, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        seccomp.prctl(_PR_SET_DUMPABLE, 0)  # /proc/<pid>/* closed to same-uid processes
        seccomp.prctl(_PR_SET_CHILD_SUBREAPER, 1)  # orphans come back to us
        os.environ.pop("LC_CTYPE", None)  # set by Python's C-locale coercion; keep env empty
        while True:
            line = self.read_request()
            if line is None:
                return  # the host has gone (its stream closed): the container ends, and goes
            self.send(self.answer(line))
            try:
                self.finish()
            except Exception as exc:  # no clean state: say so before taking any request
                self.retire(exc)
            self.send(READY)

    def answer(self, line: bytes) -> dict[str, Any]:
        """The answer to one request line (the runner retires instead when the call never
        started, or when it failed under a call)."""
        try:
            if not line:
                raise ValueError("the line is empty or over the size limit")
            request = loads_bounded(line, int(self.limits.get("max_request", 1 << 20)))
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
        except ValueError as exc:
            return {"id": None, "ok": False, "error": _error(
                ErrorKind.PROTOCOL, "ProtocolError", f"bad request: {exc}")}
        try:
            return self.handle(request)
        except CallNotStarted as exc:  # the host sends the request to another container
            self.retire(exc)
        except Exception as exc:  # the call started: answer it, then leave
            self.send(_crash_answer(request, f"the runner failed: {type(exc).__name__}"))
            self.retire(exc)

    def retire(self, exc: BaseException) -> NoReturn:
        """Leave for good, telling the host first; it replaces the container."""
        with contextlib.suppress(OSError):
            self.send({"id": None, "retire": f"{type(exc).__name__}: {exc}"[:500]})
        raise SystemExit(f"runner retired: {type(exc).__name__}: {exc}")

    def read_request(self) -> bytes | None:
        """The next request line; b"" for a line over the size limit (dropped, answered as
        bad); None when the host has gone."""
        limit = int(self.limits.get("max_request", 1 << 20))
        while b"\n" not in self.buffer:
            chunk = os.read(self.proto_in, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk
            if len(self.buffer) > limit and b"\n" not in self.buffer:
                while b"\n" not in (chunk := os.read(self.proto_in, 1 << 16)):
                    if not chunk:
                        return None
                self.buffer = chunk.split(b"\n", 1)[1]
                return b""
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, allow_nan=False) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self.proto_out, view):]

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "configure":
            if self.policy:
                return _refusal(request, "configure was sent twice")
            self.configure(request["policy"], request["limits"])
            return {"id": request.get("id"), "ok": True, "pid": os.getpid(),
                    "python": sys.version.split()[0]}
        if not self.policy:
            return _refusal(request, "configure first")
        if op not in ("call", "run", "probe"):
            return _refusal(request, f"unknown op {op!r}")
        response = self.run(request)
        response["id"] = request.get("id")
        return response

    def configure(self, policy: dict[str, Any], limits: dict[str, Any]) -> None:
        """Everything that forks clean processes starts here, before any call is read."""
        self.policy, self.limits = policy, limits
        for heavy in (False, True):
            self.zygotes[heavy] = self._start_zygote(heavy)
        self.tmp_baseline = _inodes_in(TMP)
        self.tmp_stamp = _stamp(TMP)
        self.oom_baseline = self._oom_count()
        for heavy in (False, True):
            self.spares[heavy] = self._fork(heavy)
        gc.collect()

    # -- zygotes ----------------------------------------------------------------------------------
    def _start_zygote(self, heavy: bool) -> Zygote:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            for fd in (self.proto_in, self.proto_out):
                os.close(fd)
            zygote.zygote_main(theirs, heavy, self.policy, self.limits)
        theirs.close()
        z = Zygote(pid, ours)
        if self._message(z)[0] != b"R":
            raise ZygoteDied("a zygote did not start")
        return z

    def _message(self, z: Zygote, timeout: float | None = None) -> tuple[bytes, int]:
        """The zygote's next message; an exit status is filed in self.exited on the way."""
        if timeout is not None and not select.select([z.sock], [], [], timeout)[0]:
            return b"", 0
        message = z.sock.recv(64)
        if not message:
            raise ZygoteDied("a zygote died")
        kind = message[:1]
        if kind == b"E":
            pid, status = struct.unpack("ii", message[1:9])
            self.exited[pid] = status
            return kind, pid
        return kind, (struct.unpack("i", message[1:5])[0] if kind == b"P" else 0)

    def _poll_zygotes(self) -> None:
        """File every pending exit report, then forget those of processes we no longer track."""
        for z in self.zygotes.values():
            while select.select([z.sock], [], [], 0)[0]:
                self._message(z)
        tracked = {p.pid for p in (self.current, *self.spares.values()) if p is not None}
        self.exited = {pid: st for pid, st in self.exited.items() if pid in tracked}

    def _fork(self, heavy: bool) -> CallProcess | None:
        """A new call process, or None while the pids limit is still full of a dying call's."""
        z = self.zygotes[heavy]
        for delay in (0, 0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5):
            time.sleep(delay)
            req_r, req_w = channel()
            res_r, res_w = channel()
            out_r, out_w = channel()
            err_r, err_w = channel()
            try:
                socket.send_fds(z.sock, [b"F"], [req_r, res_w, out_w, err_w])
                while (reply := self._message(z))[0] != b"P":
                    pass
            finally:
                for fd in (req_r, res_w, out_w, err_w):
                    os.close(fd)
            if reply[1] > 0:
                return CallProcess(reply[1], z, req_w, res_r, out_r, err_r)
            for fd in (req_w, res_r, out_r, err_r):
                os.close(fd)
            self._kill_all_but_ours()
        return None

    @staticmethod
    def _warm(proc: CallProcess, deadline: float) -> bool:
        """Whether the process has said SPARE_READY (waiting for it until the deadline). It says
        so before it reads its request, so the byte is the zygote's code, never a call's."""
        if not proc.warm and select.select([proc.res_r], [], [],
                                           max(0.0, deadline - time.monotonic()))[0]:
            proc.warm = os.read(proc.res_r, len(SPARE_READY)) == SPARE_READY
        return proc.warm

    def _wait(self, proc: CallProcess, deadline: float) -> int | None:
        """The process's wait status once its zygote reports it; None if not by the deadline."""
        while proc.pid not in self.exited:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._message(proc.zygote, remaining)
        proc.reaped = True
        return self.exited.pop(proc.pid)

    # -- one call ---------------------------------------------------------------------------------
    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        heavy = needs_heavy(request)
        try:
            self._poll_zygotes()
            proc = self.spares[heavy]
            self.spares[heavy] = None
            if proc is not None and proc.pid in self.exited:  # the spare died while waiting
                self.exited.pop(proc.pid)
                proc.close()
                proc = None
            proc = proc or self._fork(heavy)
        except (ZygoteDied, OSError) as exc:
            raise CallNotStarted(f"{type(exc).__name__}: {exc}") from exc
        if proc is None:  # what holds the pids is not this call's: it goes elsewhere
            raise CallNotStarted("cannot start a process: the container's pids limit is full")
        self.current = proc
        if not self._warm(proc, time.monotonic() + STATUS_WAIT_S):
            raise CallNotStarted("the call process died or hung before its request")
        timeout = float(request.get("timeout") or self.limits["timeout_s"])
        outcome = self._feed_and_watch(proc, self._payload(request, timeout), timeout,
                                       wait_status=request.get("op") == "run")
        return respond(request.get("op", ""), outcome, self.limits, timeout)

    @staticmethod
    def _payload(request: dict[str, Any], timeout: float) -> bytes:
        """The request for the call process. Its code is compiled there, under the call's
        deadline and memory, never here: a compile that is slow or large is the call's own."""
        op = request.get("op")
        message: dict[str, Any] = {"op": op, "timeout": timeout,
                                   "audit": bool(request.get("audit", True))}
        if op == "call":
            fn = request["function"]
            restricted = bool(request.get("restricted", True))
            message.update(args=request.get("args", {}), function={
                "name": fn["name"], "code": fn["code"], "restricted": restricted})
        elif op == "run":
            message.update(code=request["code"], functions=[
                {"name": f["name"], "code": f["code"]} for f in request.get("functions", [])])
        return marshal.dumps(message)

    def _feed_and_watch(self, proc: CallProcess, payload: bytes, timeout: float,
                        wait_status: bool) -> Outcome:
        """Hand the request over; drain output until the report is in, the deadline passes,
        the output floods or the process dies; then end the process."""
        out = Outcome()
        cap = int(self.limits["output_cap"])
        flood = cap * 16
        max_report = int(self.limits["max_response"])
        started = time.monotonic()
        deadline = started + timeout
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(proc.req_w, view):]
        except OSError as exc:  # it died before reading all of it, so before running anything
            raise CallNotStarted(f"the call process died before its request: {exc}") from exc
        os.close(proc.req_w)
        proc.req_w = -1
        open_fds = [proc.out_r, proc.err_r, proc.res_r]
        reported = False
        while open_fds and not reported and out.killed_for is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                out.killed_for = ErrorKind.TIMEOUT
                break
            ready, _, _ = select.select(open_fds, [], [], remaining)
            for fd in ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    open_fds.remove(fd)
                elif fd == proc.res_r:
                    out.report += chunk
                    if len(out.report) > max_report:
                        out.killed_for = ErrorKind.RESULT_INVALID
                    reported = _has_result_line(out.report)
                else:
                    self._keep(out, fd == proc.out_r, chunk, cap)
                    if out.stdout_total + out.stderr_total > flood:
                        out.killed_for = ErrorKind.OUTPUT_LIMIT
        out.duration_ms = (time.monotonic() - started) * 1000
        if reported and wait_status and out.killed_for is None:
            out.status = self._wait(proc, deadline)  # it exits right after its report
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)  # done, or misbehaving: either way it ends here
        if out.status is None and (not reported or out.killed_for or wait_status):
            out.status = self._wait(proc, time.monotonic() + STATUS_WAIT_S)
        self._drain(proc, out, cap)
        # Any OOM kill in the container since the clean-up before this call is this call's:
        # its own process, a child of it, or a zygote or spare the kernel chose instead.
        out.oom = self._oom_count() > self.oom_baseline
        return out

    @staticmethod
    def _keep(out: Outcome, is_stdout: bool, chunk: bytes, cap: int) -> None:
        buf = out.stdout if is_stdout else out.stderr
        if is_stdout:
            out.stdout_total += len(chunk)
        else:
            out.stderr_total += len(chunk)
        if len(buf) < cap:
            buf += chunk[: cap - len(buf)]

    def _drain(self, proc: CallProcess, out: Outcome, cap: int) -> None:
        """What is still in the output pipes, without blocking (the report is complete)."""
        for fd, is_stdout in ((proc.out_r, True), (proc.err_r, False)):
            with contextlib.suppress(OSError):
                os.set_blocking(fd, False)
                while chunk := os.read(fd, 1 << 16):
                    self._keep(out, is_stdout, chunk, cap)

    def _oom_count(self) -> int:
        if self.oom_file is None:
            return 0
        try:
            with open(self.oom_file) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            pass
        return 0

    # -- after the answer -------------------------------------------------------------------------
    def finish(self) -> None:
        """No process of the call survives, /tmp is as it was, the next spares wait."""
        proc, self.current = self.current, None
        if proc is not None:
            proc.close()
            if not proc.reaped:  # killed already: wait for its exit asleep, not scanning /proc
                self._wait(proc, time.monotonic() + KILL_WAIT_S)
            self._kill_all_but_ours()
            if _inodes_in(TMP) != self.tmp_baseline:
                empty_dir(TMP)
            _restore(TMP, self.tmp_stamp)  # its xattrs count against the inodes too
            if _inodes_in(TMP) != self.tmp_baseline:
                raise RuntimeError("/tmp could not be emptied")  # retire: replaced
            self.oom_baseline = self._oom_count()
        for heavy in (False, True):
            if self.spares[heavy] is None:
                self.spares[heavy] = self._fork(heavy)
        deadline = time.monotonic() + SPARE_WARM_UP_S
        for spare in self.spares.values():  # warmed up off the next call's clock
            if spare is not None:
                self._warm(spare, deadline)
        self._poll_zygotes()

    def _kill_all_but_ours(self) -> None:
        """SIGKILL every process but the runner, the zygotes and the spares until none is left
        alive, then collect our own dead (a zygote collects its children itself). A zombie is
        killed too: a thread-group leader that exited alone shows as one while its other threads
        run on. Bounded in time: past it the runner retires rather than keep the next call."""
        keep = {os.getpid(), 1} | {z.pid for z in self.zygotes.values()} | {
            p.pid for p in self.spares.values() if p is not None}
        deadline = time.monotonic() + KILL_WAIT_S
        while time.monotonic() < deadline:
            self._reap_orphans()
            others = {p: _state(p) for p in os.listdir("/proc")
                      if p.isdigit() and int(p) not in keep}
            alive = [p for p, (state, _) in others.items() if state != "Z" or _has_live_task(p)]
            if not alive and not any(ppid == os.getpid() for _, ppid in others.values()):
                return
            for pid in others:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.0002)
        raise RuntimeError("processes of a call survived every kill")  # retire: replaced

    def _reap_orphans(self) -> None:
        """As init, every orphan is ours to reap; a zygote among them means it died."""
        for pid, _ in zygote.reaped():
            if pid in {z.pid for z in self.zygotes.values()}:
                raise ZygoteDied("a zygote died")


def _state(pid: str) -> tuple[str, int]:
    """(state letter, parent pid) of a process; a process already gone reads as a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[0].decode(), int(fields[1])
    except (OSError, IndexError, ValueError):
        return "Z", 0


def needs_heavy(request: dict[str, Any]) -> bool:
    """Whether the request's code names sympy, numpy or mpmath (else a light process runs it)."""
    op = request.get("op")
    if op == "call":
        sources = [request.get("function", {}).get("code", "")]
    elif op == "run":
        sources = [request.get("code", ""), *(f.get("code", "") for f in
                                              request.get("functions", []))]
    else:  # probes ask for either kind
        return bool(request.get("heavy"))
    return any(isinstance(src, str) and HEAVY_SOURCE.search(src) for src in sources)


def _has_result_line(report: bytearray) -> bool:
    """The report is complete when its last line is a result line."""
    if not report.endswith(b"\n"):
        return False
    last = report[report.rfind(b"\n", 0, len(report) - 1) + 1:]
    return last.startswith(b'{"result"')


# -- the answer -----------------------------------------------------------------------------------
def respond(op: str, out: Outcome, limits: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The answer to the host: measured fields from `out`, the process's report validated."""
    cap = int(limits["output_cap"])
    audit, result, problem = parse_report(bytes(out.report), int(limits["max_response"]))
    signum = os.WTERMSIG(out.status) if out.status is not None and os.WIFSIGNALED(
        out.status) else 0
    exit_code = (-signum if signum else os.WEXITSTATUS(out.status)) if out.status is not None \
        else -signal.SIGKILL
    response: dict[str, Any] = {
        "stdout": out.stdout.decode("utf-8", "backslashreplace"),
        "stderr": out.stderr.decode("utf-8", "backslashreplace"),
        "stdout_truncated": out.stdout_total > cap,
        "stderr_truncated": out.stderr_total > cap,
        "timed_out": False, "oom_killed": False,
        "duration_ms": round(out.duration_ms, 3), "audit": audit, "value": None, "ok": False,
    }
    error: dict[str, str] | None
    if out.oom:  # whatever the process reported: the kernel's measure comes first
        response["oom_killed"] = True
        error = _error(ErrorKind.MEMORY_LIMIT, "MemoryLimit",
                       "the container's memory limit was hit during the call: its OOM killer "
                       "killed a process")
    elif out.killed_for is ErrorKind.TIMEOUT or (result is None and signum == signal.SIGXCPU):
        response["timed_out"] = True
        why = "CPU time limit exceeded" if out.killed_for is None else "no result in time"
        error = _error(ErrorKind.TIMEOUT, "Timeout", f"{why} ({timeout:g} s): killed")
    elif out.killed_for is ErrorKind.OUTPUT_LIMIT:
        error = _error(ErrorKind.OUTPUT_LIMIT, "OutputLimit",
                       f"output flood: over {cap * 16} bytes; killed")
    elif out.killed_for is ErrorKind.RESULT_INVALID:
        error = _error(ErrorKind.RESULT_INVALID, "ResultTooLarge",
                       f"the result was over {limits['max_response']} bytes; killed")
    elif problem is not None:
        error = _error(ErrorKind.PROTOCOL, "ProtocolError",
                       f"the call's result channel held {problem}: result discarded")
    elif result is None:
        how = f"signal {signum}" if signum else f"exit status {exit_code}"
        error = _error(ErrorKind.CRASHED, "Crashed",
                       f"the process ended with {how} before returning a result")
    else:
        error = result["error"]
        response["ok"] = bool(result["ok"]) and error is None
        response["value"] = result["value"] if response["ok"] else None
    if op == "run":
        response["calls"] = result["calls"] if result is not None else {}
        response["exit_code"] = exit_code if out.status is not None else -signal.SIGKILL
        if response["exit_code"] != 0 and error is None:
            error = _error(ErrorKind.CRASHED, "Crashed", f"exit status {response['exit_code']}")
        response["ok"] = response["ok"] and response["exit_code"] == 0
    response["error"] = error
    if error is not None:
        response["ok"] = False
    return response


def parse_report(data: bytes, max_bytes: int) -> tuple[list[dict[str, str]],
                                                       dict[str, Any] | None, str | None]:
    """(audit events, the result, a protocol problem) from the call's report lines."""
    audit: list[dict[str, str]] = []
    result: dict[str, Any] | None = None
    for raw in data.split(b"\n"):
        if not raw:
            continue
        try:
            line = loads_bounded(raw, max_bytes)
        except ValueError as exc:
            return audit, None, f"a line that is not bounded JSON ({exc})"
        if result is not None:
            return audit, None, "an extra line after the result"
        if isinstance(line, dict) and set(line) == {"audit"}:
            event = _audit_event(line["audit"])
            if event is None or len(audit) >= MAX_AUDIT_EVENTS:
                return audit, None, "a malformed audit event, or too many"
            audit.append(event)
        elif isinstance(line, dict) and set(line) == {"result"}:
            result = _result(line["result"])
            if result is None:
                return audit, None, "a malformed result"
        else:
            return audit, None, "a line that is neither an audit event nor a result"
    return audit, result, None


def _audit_event(raw: Any) -> dict[str, str] | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("event"), str) or \
            not isinstance(raw.get("detail", ""), str):
        return None
    return {"event": raw["event"][:200], "detail": raw.get("detail", "")[:2000]}


def _result(raw: Any) -> dict[str, Any] | None:
    """The process's claim, checked field by field: ok (bool), value (JSON), error (None or
    type/message/traceback strings of bounded size, type an identifier), and for a code block
    its library calls (identifier -> count)."""
    if not isinstance(raw, dict) or set(raw) - {"calls"} != {"ok", "value", "error"} or \
            not isinstance(raw["ok"], bool):
        return None
    calls = checked_calls(raw.get("calls", {}))
    if calls is None:
        return None
    err = raw["error"]
    if err is None:
        return {"ok": raw["ok"], "value": raw["value"], "error": None, "calls": calls}
    if not isinstance(err, dict) or set(err) - {"type", "message", "traceback"} or \
            not all(isinstance(err.get(k, ""), str) for k in ("type", "message", "traceback")):
        return None
    etype = err.get("type", "")
    if not etype.isidentifier() or len(etype) > 200:
        return None
    kind = ErrorKind.RESULT_INVALID if etype in ("ResultNotJSON", "ResultTooLarge") and \
        not raw["ok"] else ErrorKind.EXCEPTION
    return {"ok": False, "value": None, "calls": calls,
            "error": _error(kind, etype, err.get("message", ""), err.get("traceback", ""))}


def _error(kind: ErrorKind, etype: str, message: str, tb: str = "") -> dict[str, str]:
    return {"kind": kind.value, "type": etype, "message": message[:4000],
            "traceback": tb[-16000:]}


def _crash_answer(request: dict[str, Any], why: str) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "id": request.get("id"), "ok": False, "value": None, "stdout": "", "stderr": "",
        "stdout_truncated": False, "stderr_truncated": False, "timed_out": False,
        "oom_killed": False, "duration_ms": 0.0, "audit": [],
        "error": _error(ErrorKind.CRASHED, "Crashed", why)}
    if request.get("op") == "run":
        answer["exit_code"] = -signal.SIGKILL
    return answer


def _refusal(request: dict[str, Any], why: str) -> dict[str, Any]:
    return {"id": request.get("id"), "ok": False,
            "error": _error(ErrorKind.PROTOCOL, "ProtocolError", why)}


# -- /tmp -----------------------------------------------------------------------------------------
def channel() -> tuple[int, int]:
    """(read end, write end) of a one-way channel: a socketpair, not a pipe. gVisor (Debian's
    runsc 20221219) leaves /proc/<pid>/fd of a non-dumpable process open to its uid, and a pipe
    can be reopened through it, so a call could write into a spare's result channel; a socket
    cannot be reopened through /proc (ENXIO), on Linux or under gVisor."""
    r, w = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    r.shutdown(socket.SHUT_WR)
    w.shutdown(socket.SHUT_RD)
    return r.detach(), w.detach()


def _has_live_task(pid: str) -> bool:
    """Whether any thread of the process is not a zombie."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    return any(_state(f"{pid}/task/{t}")[0] != "Z" for t in tasks)


Stamp = tuple[int, int, int, int, int, int]
_FS_IOC_GETFLAGS, _FS_IOC_SETFLAGS = 0x80086601, 0x40086602


def _stamp(path: str) -> Stamp:
    """What a call can change of a directory besides its entries: mode, owner, times, xattrs,
    and its inode flags (refused to calls by seccomp.py; measured here all the same)."""
    st = os.stat(path)
    return (st.st_mode, st.st_uid, st.st_atime_ns, st.st_mtime_ns, len(os.listxattr(path)),
            _inode_flags(path))


def _inode_flags(path: str, set_to: int | None = None) -> int:
    """chattr's flags of `path` (0 where the filesystem has none), set first if asked."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if set_to is not None:
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("q", set_to))
        buf = bytearray(8)
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buf)
        return int(struct.unpack("i", buf[:4])[0])  # the kernel reads and writes an int
    except OSError as exc:
        if set_to is None and exc.errno in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL,
                                            errno.ENOSYS):
            return 0  # no flags here (gVisor's tmpfs, say): none to set either
        raise
    finally:
        os.close(fd)


def _restore(path: str, stamp: Stamp) -> None:
    """Put back what a call could leave in /tmp itself once its entries are gone: a call that
    picked when to write there, or set a mode or an extended attribute, could leave a number for
    the next one. The runner owns /tmp (tmpfs uid option), so it can. What stays is the change
    time, which says when the runner did this: no more than the start time of the next call
    process says (README, "Trust model"). Anything that cannot be put back retires the runner."""
    mode, _uid, atime, mtime, _, flags = stamp
    os.chmod(path, mode & 0o7777)
    for name in os.listxattr(path):
        os.removexattr(path, name)
    if _inode_flags(path) != flags:
        _inode_flags(path, set_to=flags)
    os.utime(path, ns=(atime, mtime))
    if _stamp(path) != stamp:
        raise RuntimeError("/tmp could not be put back as it was")  # retire: replaced


def _inodes_in(path: str) -> int:
    """Inodes in use on the tmpfs at path: one statvfs instead of a directory walk. gVisor's
    tmpfs reports no inode counts (f_files 0): there, 1 + the entries at the top."""
    stat = os.statvfs(path)
    if stat.f_files == 0:
        with os.scandir(path) as entries:
            return 1 + sum(1 for _ in entries)
    return stat.f_files - stat.f_ffree


def empty_dir(path: str, max_steps: int = 1_000_000) -> None:
    """Remove everything under `path` without recursion and without long paths: a directory
    that is not empty has its entries moved up to `path` itself (descriptor-relative), so any
    depth, read-only modes and names near NAME_MAX take the same few operations per entry."""
    root = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    hoisted = 0
    try:
        for _ in range(max_steps):
            with os.scandir(root) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
            if not entries:
                return
            for name, is_dir in entries:
                if not is_dir:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=root)
                    continue
                try:
                    os.rmdir(name, dir_fd=root)
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EACCES,
                                         errno.EPERM):
                        raise
                os.chmod(name, 0o700, dir_fd=root)
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root)
                try:
                    with os.scandir(sub) as it:
                        inner = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
                    for entry, entry_is_dir in inner:
                        if entry_is_dir:  # moving a directory rewrites its "..": needs write
                            os.chmod(entry, 0o700, dir_fd=sub)
                        hoisted += 1
                        os.rename(entry, f".fnforge-{hoisted}", src_dir_fd=sub, dst_dir_fd=root)
                finally:
                    os.close(sub)
    finally:
        os.close(root)


if __name__ == "__main__":
    try:
        Server().serve()
    except BrokenPipeError:  # the host went away
        pass
