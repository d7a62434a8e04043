"""What every probe needs: bounds, expected refusals, syscall access, /proc readers, and
the fork helpers. Standard library only."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import re
import select
import signal
import time
from collections.abc import Callable
from typing import TypedDict

__all__ = [
    "CONNECT_WAIT_S",
    "DNS_WAIT_S",
    "ENV_ALLOWED",
    "MAX_FORKS",
    "MAX_FSIZE",
    "MAX_MEMORY_BYTES",
    "MAX_NOFILE",
    "MAX_NPROC",
    "MAX_PIDS",
    "MAX_TMP_BYTES",
    "_DENIED",
    "_ENV_SUSPICIOUS",
    "_GVISOR",
    "_HOLDER",
    "_NO_ROUTE",
    "_NR",
    "_RO_OR_DENIED",
    "_SYSCALL_DENIED",
    "_VALUE_SUSPICIOUS",
    "Mount",
    "ProbeReport",
    "ProbeResult",
    "_comm",
    "_en",
    "_in_fork",
    "_judge",
    "_lib",
    "_mounts",
    "_open_for_write",
    "_other_pids",
    "_pids",
    "_read",
    "_reap",
    "_status_fields",
    "_syscall",
]


ProbeResult = tuple[bool, str]  # (confined, detail)


class Mount(TypedDict):
    """One parsed line of /proc/self/mountinfo."""

    root: str
    point: str
    opts: list[str]
    fstype: str
    source: str
    super: list[str]


class ProbeReport(TypedDict):
    confined: bool
    detail: str


MAX_MEMORY_BYTES = 4 << 30  # a container memory limit above this counts as "no limit"


MAX_PIDS = 1024  # pids.max above this counts as "no pids limit"


MAX_FORKS = 200  # fork_limit: confined only if forking stops (EAGAIN) before this many children


MAX_FSIZE = 1 << 30  # RLIMIT_FSIZE hard limit


MAX_NOFILE = 65536  # RLIMIT_NOFILE hard limit


MAX_NPROC = 8192  # RLIMIT_NPROC hard limit


MAX_TMP_BYTES = 1 << 30  # size of the /tmp tmpfs


CONNECT_WAIT_S = 0.5  # how long a non-blocking connect may stay "in progress" (then: not confined)


DNS_WAIT_S = 1.0


_GVISOR = platform.release() == "4.4.0" and "Jan 10 15:06:54 PST 2016" in platform.version()
"""gVisor (runsc) reports this fixed Linux version. Its kernel implements /proc, /sys, devices,
mounts and networking itself, so a few expectations differ; each is marked `_GVISOR` below."""


_HOLDER = next((p for p in ("/bin/cat", "/usr/bin/cat") if os.access(p, os.X_OK)), None)


# errnos that prove a packet could not even leave the container (no route / refused locally)
_NO_ROUTE = {errno.ENETUNREACH, errno.EACCES, errno.EPERM, errno.EAFNOSUPPORT,
             errno.EADDRNOTAVAIL}


if _GVISOR:  # gVisor's netstack without a NIC (--network=none) answers EHOSTUNREACH locally
    _NO_ROUTE.add(errno.EHOSTUNREACH)


_DENIED = {errno.EPERM, errno.EACCES}


_RO_OR_DENIED = {errno.EROFS, errno.EACCES, errno.EPERM}


_SYSCALL_DENIED = {errno.EPERM, errno.EACCES, errno.ENOSYS}


# Variables that may legitimately exist in the sandbox: docker sets PATH, HOSTNAME, HOME; Python
# and the runner may set the others. Any other key is a leak from the host or the engine.
ENV_ALLOWED = {
    "PATH", "HOSTNAME", "HOME", "PWD", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "TMPDIR",
    "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PYTHONHASHSEED", "PYTHONIOENCODING",
    "PYTHONNOUSERSITE", "PYTHONSAFEPATH", "PYTHONPATH", "PYTHONUTF8", "PYTHONFAULTHANDLER",
    "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    "MPLCONFIGDIR", "MPMATH_NOGMPY", "SYMPY_USE_CACHE", "USER", "LOGNAME", "SHLVL", "_",
}


_ENV_SUSPICIOUS = re.compile(
    r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION|OPENAI|ANTHROPIC|AZURE|AWS|GOOGLE|"
    r"GCP|HF_|HUGGING|DOCKER|SSH|GITHUB|GH_|GITLAB|PROXY|FNFORGE|CANARY|CI\b|SUDO", re.I)


_VALUE_SUSPICIOUS = re.compile(
    r"sk-[A-Za-z0-9_-]{16,}|ghp_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|xox[bp]-|-----BEGIN")


_ARCH = platform.machine()


_NR = {  # syscall numbers not wrapped by the standard library
    "x86_64": {"add_key": 248, "keyctl": 250, "tkill": 200, "tgkill": 234,
               "rt_sigqueueinfo": 129, "process_vm_readv": 310, "clone": 56},
    "aarch64": {"add_key": 217, "keyctl": 219, "tkill": 130, "tgkill": 131,
                "rt_sigqueueinfo": 138, "process_vm_readv": 270, "clone": 220},
}.get(_ARCH, {})


_NR.update({"pidfd_send_signal": 424, "pidfd_open": 434, "pidfd_getfd": 438})


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
        _libc.ptrace.restype = ctypes.c_long
        _libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    return _libc


def _syscall(name: str, *args: object) -> tuple[int, int]:
    """(return value, errno); (-1, ENOSYS) when the number is unknown on this architecture."""
    nr = _NR.get(name)
    if nr is None:
        return -1, errno.ENOSYS
    libc = _lib()
    ctypes.set_errno(0)
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    ret = libc.syscall(ctypes.c_long(nr), *conv)
    return ret, ctypes.get_errno()


def _en(code: int | None) -> str:
    return errno.errorcode.get(code or 0, str(code))


def _read(path: str, limit: int = 65536) -> str:
    with open(path, "rb") as f:
        return f.read(limit).decode("utf-8", "replace")


def _status_fields() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in _read("/proc/self/status").splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def _mounts() -> list[Mount]:
    """Parsed /proc/self/mountinfo."""
    out: list[Mount] = []
    for line in _read("/proc/self/mountinfo", 1 << 20).splitlines():
        left, _, right = line.partition(" - ")
        f = left.split()
        r = right.split()
        if len(f) < 6 or len(r) < 2:
            continue
        out.append({"root": f[3], "point": f[4].replace("\\040", " "), "opts": f[5].split(","),
                    "fstype": r[0], "source": r[1], "super": r[2].split(",") if len(r) > 2 else []})
    return out


def _pids() -> list[int]:
    return sorted(int(d) for d in os.listdir("/proc") if d.isdigit())


def _comm(pid: int) -> str:
    try:
        return _read(f"/proc/{pid}/comm").strip()
    except OSError:
        return "?"


def _other_pids() -> list[int]:
    """Every process we can see except ourselves (our own children are reaped by then)."""
    me = os.getpid()
    return [p for p in _pids() if p != me]


def _in_fork(fn: Callable[[], ProbeResult], timeout: float = 1.5) -> ProbeResult:
    """Run fn() -> (confined, detail) in a throwaway child, so a privilege change that wrongly
    succeeds cannot leak into the other probes. The child arms its own timer (kill may be
    forbidden to us by seccomp) and reports through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                res = fn()
            except BaseException as exc:
                res = (False, f"probe error {type(exc).__name__}: {exc}")
            os.write(w, json.dumps(res).encode()[:60000])
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    deadline = time.monotonic() + timeout + 0.5
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
        _reap(pid, deadline + 1.0)
    if not data:
        return False, "probe child gave no answer (timed out or died)"
    confined, detail = json.loads(data)
    return bool(confined), str(detail)


def _reap(pid: int, deadline: float) -> None:
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done or time.monotonic() > deadline:
            return
        time.sleep(0.005)


def _open_for_write(path: str) -> str | None:
    """None when refused as expected; else a description. Never writes a byte."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in _RO_OR_DENIED or exc.errno == errno.ENOENT:
            return None
        return f"{path}: {_en(exc.errno)}"
    os.close(fd)
    return f"{path} opened for writing"


def _judge(label: str, succeeded: bool, err: int, bad: list[str], ok: list[str]) -> None:
    """A forbidden call: its success is a leak, a refusal (EPERM/EACCES/ENOSYS) is confinement,
    any other errno is unexpected and counts as not confined."""
    if succeeded:
        bad.append(f"{label} succeeded")
    elif err in _SYSCALL_DENIED:
        ok.append(f"{label} {_en(err)}")
    else:
        bad.append(f"{label} {_en(err)}")
