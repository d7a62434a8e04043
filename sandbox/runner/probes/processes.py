"""Probes of other processes: the runner, the zygotes and the spares cannot be signalled,
traced or read through /proc; forking stops at the limit."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import struct
import time

from .common import (
    _DENIED,
    _GVISOR,
    _HOLDER,
    _SYSCALL_DENIED,
    MAX_FORKS,
    MAX_PIDS,
    ProbeResult,
    _comm,
    _en,
    _lib,
    _open_for_write,
    _other_pids,
    _pids,
    _read,
    _syscall,
)

__all__ = [
    "probe_fork_limit",
    "probe_pid_namespace",
    "probe_proc_other_processes",
    "probe_ptrace_other_processes",
    "probe_sigio_to_other_processes",
    "probe_signal_other_processes",
]



def probe_pid_namespace() -> ProbeResult:
    pids = _pids()
    bad = []
    try:
        init = _read("/proc/1/cmdline").split("\0")[0]
    except OSError:
        init = "?"
    base = os.path.basename(init)
    if base in ("systemd", "init", "launchd") or init.startswith(("/lib/systemd", "/sbin/init")):
        bad.append(f"pid 1 is the host's {init!r}")
    host_daemons = {"dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2",
                    "sshd", "systemd", "systemd-journal", "kthreadd", "cron", "rsyslogd"}
    seen = sorted({c for c in map(_comm, pids)} & host_daemons)
    if seen:
        bad.append("host processes visible: " + ", ".join(seen))
    if len(pids) > MAX_PIDS:
        bad.append(f"{len(pids)} processes visible")
    return (not bad), "; ".join(bad) or f"{len(pids)} pids visible, pid 1 is {init!r}"


def probe_fork_limit() -> ProbeResult:
    """Fork children that wait on a pipe; forking must stop (EAGAIN) before MAX_FORKS.

    Under gVisor a forked Python child costs 8-24 MiB of the container's memory (its kernel
    copies on write in 2 MiB units), so the memory limit would end the whole sandbox before the
    process limit is reached: there the children are spawned `cat`s reading the pipe (a fresh,
    small address space each), which count against the same limit."""
    r, w = os.pipe()
    kids: list[int] = []
    stopped: OSError | None = None
    # gVisor spawns one child in 25-30 ms on 2 cores: 64 of them (its NPROC limit) take about
    # 2 s, and a shorter deadline reported "not confined" for a limit it simply had not reached
    deadline = time.monotonic() + (6.0 if _GVISOR else 1.5)
    holder = _HOLDER if _GVISOR else None
    try:
        while len(kids) < MAX_FORKS and time.monotonic() < deadline:
            try:
                if holder:
                    kids.append(os.posix_spawn(holder, [holder], {}, file_actions=[
                        (os.POSIX_SPAWN_DUP2, r, 0)]))
                    continue
                pid = os.fork()
            except OSError as exc:
                stopped = exc
                break
            if pid == 0:
                try:
                    os.close(w)
                    signal.setitimer(signal.ITIMER_REAL, 5.0)
                    os.read(r, 1)
                finally:
                    os._exit(0)
            kids.append(pid)
    finally:
        os.close(w)
        os.close(r)
        end = time.monotonic() + 3.0
        for pid in kids:
            _reap_blocking(pid, end)
    if stopped is not None and stopped.errno in (errno.EAGAIN, errno.ENOMEM, errno.EPERM):
        return True, f"fork refused after {len(kids)} children: {_en(stopped.errno)}"
    if stopped is not None:
        return False, f"fork failed after {len(kids)}: {_en(stopped.errno)}"
    return False, f"{len(kids)} children forked without hitting a limit"


def _reap_blocking(pid: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.002)


def probe_signal_other_processes() -> ProbeResult:
    """Signal 0 (a pure permission check) to every other process, by every signalling path."""
    bad, ok, gone = [], 0, 0
    info = ctypes.create_string_buffer(128)
    struct.pack_into("=iii", info, 0, 0, 0, -1)  # si_signo 0, si_errno 0, si_code SI_QUEUE
    for pid in _other_pids():
        who = f"{pid}({_comm(pid)})"
        try:
            os.kill(pid, 0)
            bad.append(f"kill {who}")
        except ProcessLookupError:
            gone += 1
            continue
        except PermissionError:
            ok += 1
        for label, args in (("tkill", ("tkill", pid, 0)), ("tgkill", ("tgkill", pid, pid, 0)),
                            ("rt_sigqueueinfo", ("rt_sigqueueinfo", pid, 0, info))):
            ret, err = _syscall(*args)
            if ret == 0:
                bad.append(f"{label} {who}")
            elif err not in _SYSCALL_DENIED | {errno.ESRCH}:
                bad.append(f"{label} {who}: {_en(err)}")
        ret, err = _syscall("pidfd_open", pid, 0)
        if ret >= 0:
            pidfd = ret
            try:
                ret2, _err2 = _syscall("pidfd_send_signal", pidfd, 0, 0, 0)
                if ret2 == 0:
                    bad.append(f"pidfd_send_signal {who}")
                ret3, _err3 = _syscall("pidfd_getfd", pidfd, 1, 0)
                if ret3 >= 0:
                    os.close(ret3)
                    bad.append(f"pidfd_getfd stole fd 1 of {who}")
            finally:
                os.close(pidfd)
    if bad:
        return False, "signals reach: " + "; ".join(bad)
    return True, f"{ok} processes refuse signal 0 by kill/tkill/tgkill/sigqueue/pidfd"


def probe_sigio_to_other_processes() -> ProbeResult:
    """F_SETOWN lets a process aim SIGIO (or any F_SETSIG signal) at another one without kill()."""
    import fcntl
    r, w = os.pipe()
    bad = []
    try:
        for pid in _other_pids():
            try:
                fcntl.fcntl(r, fcntl.F_SETOWN, pid)
                fcntl.fcntl(r, fcntl.F_SETOWN, 0)
                bad.append(f"F_SETOWN {pid}({_comm(pid)}) accepted")
            except OSError as exc:
                if exc.errno not in _SYSCALL_DENIED | {errno.ESRCH, errno.EINVAL}:
                    bad.append(f"F_SETOWN {pid}: {_en(exc.errno)}")
    finally:
        os.close(r)
        os.close(w)
    if bad:
        return False, "SIGIO could be aimed at: " + "; ".join(bad)
    return True, "F_SETOWN to other processes refused"


def probe_ptrace_other_processes() -> ProbeResult:
    libc = _lib()
    bad, ok = [], 0
    word = ctypes.create_string_buffer(8)
    for pid in _other_pids():
        who = f"{pid}({_comm(pid)})"
        ctypes.set_errno(0)
        rc = libc.ptrace(0x4206, pid, None, None)  # PTRACE_SEIZE
        err = ctypes.get_errno()
        if rc == 0:
            bad.append(f"PTRACE_SEIZE {who}")  # the tracee is not stopped; detached at our exit
        elif err not in _SYSCALL_DENIED | {errno.ESRCH}:
            bad.append(f"ptrace {who}: {_en(err)}")
        # process_vm_readv at an address valid in a fork sibling/parent (None is shared by fork)
        local = (ctypes.c_void_p * 2)(ctypes.addressof(word), 8)
        remote = (ctypes.c_void_p * 2)(id(None), 8)
        ret, err = _syscall("process_vm_readv", pid, local, 1, remote, 1, 0)
        if ret >= 0 or err == errno.EFAULT:
            bad.append(f"process_vm_readv {who} ({'read' if ret >= 0 else 'permitted'})")
        elif err not in _SYSCALL_DENIED | {errno.ESRCH}:
            bad.append(f"process_vm_readv {who}: {_en(err)}")
        else:
            ok += 1
    if bad:
        return False, "; ".join(bad)
    return True, f"ptrace and process_vm_readv refused for {ok} processes"


def probe_proc_other_processes() -> ProbeResult:
    """Another process's /proc/<pid>/{mem,fd,environ,...}: the runner's pipes must be out of
    reach.

    gVisor before release-20251215.0 (Debian's runsc is 20221219) ignores dumpability for
    /proc/<pid>/fd (mode 0555), environ and maps. There the test is the one that matters: no
    descriptor of another process can be opened through fd/ (the runner's channels are sockets,
    its protocol stream has mode 0), environ is empty and mem stays closed; maps is readable."""
    bad, tolerated = [], set()
    for pid in _other_pids():
        who = f"{pid}({_comm(pid)})"
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if _GVISOR:
                tolerated.add("fd/ listable")
                bad += _reopenable_fds(pid, fds)
            else:
                bad.append(f"/proc/{who}/fd listable ({len(fds)} fds)")
                for fdname in ("0", "1", "2"):
                    if fdname in fds:
                        b = _open_for_write(f"/proc/{pid}/fd/{fdname}")
                        if b:
                            bad.append(b)
        except OSError as exc:
            if exc.errno not in _DENIED | {errno.ENOENT}:
                bad.append(f"/proc/{who}/fd: {_en(exc.errno)}")
        for name, mode in (("mem", os.O_RDONLY), ("mem", os.O_RDWR), ("environ", os.O_RDONLY),
                           ("maps", os.O_RDONLY)):
            try:
                fd = os.open(f"/proc/{pid}/{name}", mode)
                try:
                    content = os.read(fd, 4096) if name == "environ" else b""
                finally:
                    os.close(fd)
                if _GVISOR and name == "maps":
                    tolerated.add("maps readable")
                elif _GVISOR and name == "environ" and not content:
                    tolerated.add("environ empty")
                else:
                    bad.append(f"/proc/{who}/{name} opened ({'rw' if mode else 'r'})")
            except OSError as exc:
                if exc.errno not in _DENIED | {errno.ENOENT, errno.ESRCH}:
                    bad.append(f"/proc/{who}/{name}: {_en(exc.errno)}")
    if bad:
        return False, "; ".join(bad)
    if tolerated:
        return True, ("gVisor: no other process's descriptor can be reopened, mem closed (" +
                      ", ".join(sorted(tolerated)) + ")")
    return True, "other processes' /proc fd, mem, environ, maps closed to us"


def _reopenable_fds(pid: int, fds: list[str]) -> list[str]:
    """Descriptors of another process that /proc/<pid>/fd/<n> lets us open (/dev/null aside)."""
    bad = []
    for name in fds:
        path = f"/proc/{pid}/fd/{name}"
        try:
            target = os.readlink(path)
        except OSError:
            continue
        if target == os.devnull:
            continue
        for mode in (os.O_WRONLY, os.O_RDONLY):
            try:
                fd = os.open(path, mode | os.O_NONBLOCK | os.O_NOCTTY)
            except OSError as exc:
                if exc.errno not in _DENIED | {errno.ENXIO, errno.ENOENT, errno.ESRCH}:
                    bad.append(f"{path} ({target}): {_en(exc.errno)}")
                continue
            os.close(fd)
            bad.append(f"{path} ({target}) opened {'w' if mode else 'r'}")
    return bad
