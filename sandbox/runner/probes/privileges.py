"""Probes of privileges: uid, capabilities, no_new_privs, seccomp, no setuid, mount, unshare,
keyctl or ptrace, and an environment with nothing of the host."""

from __future__ import annotations

import ctypes
import os
import re
import signal
import stat
import time
from collections.abc import Callable

from .common import (
    _DENIED,
    _ENV_SUSPICIOUS,
    _GVISOR,
    _NR,
    _SYSCALL_DENIED,
    _VALUE_SUSPICIOUS,
    ENV_ALLOWED,
    ProbeResult,
    _en,
    _in_fork,
    _judge,
    _lib,
    _pids,
    _reap,
    _status_fields,
    _syscall,
)

__all__ = [
    "probe_capabilities",
    "probe_env_empty",
    "probe_keyctl",
    "probe_mount",
    "probe_no_new_privs",
    "probe_ptrace",
    "probe_seccomp",
    "probe_setuid",
    "probe_setuid_binaries",
    "probe_uid",
    "probe_unshare",
]



def probe_env_empty() -> ProbeResult:
    bad = []

    def check(source: str, env: dict[str, str]) -> None:
        for k, v in env.items():
            if k not in ENV_ALLOWED:
                flag = " (looks like a secret)" if _ENV_SUSPICIOUS.search(k) else ""
                bad.append(f"{source}: {k}{flag}")
            elif _VALUE_SUSPICIOUS.search(v) or (k == "PATH" and re.search(r"/home/|/root", v)):
                bad.append(f"{source}: {k} has a host-like or secret-like value")
            elif k == "HOME" and v.startswith("/home/") and not os.path.isdir(v):
                bad.append(f"{source}: HOME={v} does not exist here (host value?)")

    check("os.environ", dict(os.environ))
    for pid in ["self"] + [str(p) for p in _pids()]:
        try:
            raw = open(f"/proc/{pid}/environ", "rb").read(1 << 20)
        except OSError:
            continue
        env: dict[str, str] = {}
        for item in raw.split(b"\0"):
            if b"=" in item:
                k, _, v = item.partition(b"=")
                env[k.decode(errors="replace")] = v.decode(errors="replace")
        check(f"/proc/{pid}/environ", env)
    bad = sorted(set(bad))
    return (not bad), "; ".join(bad) or "only: " + ",".join(sorted(os.environ))


def probe_uid() -> ProbeResult:
    ruid, euid, suid = os.getresuid()
    rgid, egid, sgid = os.getresgid()
    bad = []
    if 0 in (ruid, euid, suid):
        bad.append(f"uid {ruid}/{euid}/{suid}")
    if 0 in (rgid, egid, sgid):
        bad.append(f"gid {rgid}/{egid}/{sgid}")
    if 0 in os.getgroups():
        bad.append("member of group 0")
    return (not bad), "; ".join(bad) or f"uid {euid}, gid {egid}"


def probe_setuid() -> ProbeResult:
    def attempt() -> ProbeResult:
        bad: list[str] = []
        ok: list[str] = []
        calls: tuple[tuple[str, Callable[[], None]], ...] = (
            ("setgroups([0])", lambda: os.setgroups([0])),
            ("setgid(0)", lambda: os.setgid(0)),
            ("setuid(0)", lambda: os.setuid(0)),
            ("setresuid(0,0,0)", lambda: os.setresuid(0, 0, 0)))
        for label, fn in calls:
            try:
                fn()
                bad.append(f"{label} succeeded")
            except OSError as exc:
                (ok if exc.errno in _DENIED else bad).append(f"{label} {_en(exc.errno)}")
        if os.geteuid() == 0:
            bad.append("euid is 0")
        return (not bad), "; ".join(bad) or "; ".join(ok)
    return _in_fork(attempt)


def probe_capabilities() -> ProbeResult:
    st = _status_fields()
    if _GVISOR and "CapAmb" not in st:
        st["CapAmb"] = "0"  # gVisor (2022) implements no ambient set and prints no CapAmb line
    bad = [f"{k}={st.get(k)}" for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
           if int(st.get(k, "1"), 16) != 0]
    return (not bad), ", ".join(bad) or "all capability sets empty"


def probe_no_new_privs() -> ProbeResult:
    v = _status_fields().get("NoNewPrivs")
    if v is None and _GVISOR:  # no status line; gVisor never grants privileges on exec
        v = str(_lib().prctl(39, 0, 0, 0, 0))  # PR_GET_NO_NEW_PRIVS
        return v == "1", f"PR_GET_NO_NEW_PRIVS={v} (gVisor)"
    return v == "1", f"NoNewPrivs={v}"


def probe_seccomp() -> ProbeResult:
    st = _status_fields()
    v = st.get("Seccomp")
    return v == "2", f"Seccomp={v}, filters={st.get('Seccomp_filters', '?')}"


def probe_setuid_binaries() -> ProbeResult:
    found = []
    for d in ("/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin",
              "/usr/libexec", "/usr/lib/openssh", "/usr/lib/dbus-1.0", "/usr/lib/eject"):
        try:
            with os.scandir(d) as it:
                for e in it:
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                        found.append(e.path)
        except OSError:
            continue
    found = sorted(set(found))
    if not found:
        return True, "no setuid/setgid binaries"
    nnp = _status_fields().get("NoNewPrivs") == "1"
    if nnp:
        return True, "present but inert under NoNewPrivs: " + ", ".join(found)
    return False, "setuid/setgid binaries usable: " + ", ".join(found)


def probe_mount() -> ProbeResult:
    def attempt() -> ProbeResult:
        libc = _lib()
        target = f"/tmp/.fnforge_probe_mnt_{os.getpid()}"
        try:
            os.mkdir(target)
        except OSError:
            target = "/tmp"
        try:
            ctypes.set_errno(0)
            rc = libc.mount(b"none", target.encode(), b"tmpfs", 0, None)
            err = ctypes.get_errno()
            if rc == 0:
                libc.umount2(target.encode(), 2)  # MNT_DETACH
                return False, f"mount tmpfs on {target} succeeded"
            if err in _SYSCALL_DENIED:
                return True, f"mount refused: {_en(err)}"
            return False, f"mount: {_en(err)}"
        finally:
            if target != "/tmp":
                try:
                    os.rmdir(target)
                except OSError:
                    pass
    return _in_fork(attempt)


def probe_unshare() -> ProbeResult:
    def attempt() -> ProbeResult:
        libc = _lib()
        bad: list[str] = []
        ok: list[str] = []
        flags = [("CLONE_NEWNS", 0x00020000), ("CLONE_NEWNET", 0x40000000),
                 ("CLONE_NEWPID", 0x20000000), ("CLONE_NEWUSER", 0x10000000)]
        for label, flag in flags:
            ctypes.set_errno(0)
            rc = libc.unshare(ctypes.c_int(flag))
            _judge(f"unshare({label})", rc == 0, ctypes.get_errno(), bad, ok)
        # raw clone with a new user namespace (clone itself, not only unshare)
        if "clone" in _NR and not bad:
            ret, err = _syscall("clone", 0x10000000 | signal.SIGCHLD, 0, 0, 0, 0)
            if ret == 0:
                os._exit(0)
            if ret > 0:
                os.waitpid(ret, 0)
            _judge("clone(CLONE_NEWUSER)", ret > 0, err, bad, ok)
        return (not bad), "; ".join(bad) or "; ".join(ok)
    return _in_fork(attempt)


def probe_keyctl() -> ProbeResult:
    def attempt() -> ProbeResult:
        bad: list[str] = []
        ok: list[str] = []
        ret, err = _syscall("add_key", ctypes.c_char_p(b"user"), ctypes.c_char_p(b"fnforge"),
                            ctypes.c_char_p(b"x"), 1, -2)  # KEY_SPEC_PROCESS_KEYRING
        _judge("add_key", ret >= 0, err, bad, ok)
        ret, err = _syscall("keyctl", 1, 0, 0, 0, 0)  # KEYCTL_JOIN_SESSION_KEYRING(NULL)
        _judge("keyctl(JOIN_SESSION_KEYRING)", ret >= 0, err, bad, ok)
        return (not bad), "; ".join(bad) or "; ".join(ok)
    return _in_fork(attempt)


def probe_ptrace() -> ProbeResult:
    """ptrace of a child of our own (the easiest target there is) must be refused."""
    libc = _lib()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        signal.setitimer(signal.ITIMER_REAL, 2.0)
        try:
            os.read(r, 1)
        finally:
            os._exit(0)
    os.close(r)
    try:
        ctypes.set_errno(0)
        rc = libc.ptrace(0x4206, pid, None, None)  # PTRACE_SEIZE: attach without stopping
        err = ctypes.get_errno()
        if rc == 0:
            return False, "PTRACE_SEIZE of our own child succeeded"
        if err in _SYSCALL_DENIED:
            return True, f"ptrace refused: {_en(err)}"
        return False, f"ptrace: {_en(err)}"
    finally:
        os.close(w)
        _reap(pid, time.monotonic() + 2.5)
