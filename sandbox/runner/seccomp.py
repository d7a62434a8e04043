"""The kernel filter installed in every call process, before it reads its request.

A classic-BPF seccomp program, built once in the runner before any fork. Python-level layers in
the same process can be escaped; this filter cannot be removed by the process it confines, so it
is part of the boundary: whatever the call's code reaches, it can neither signal, trace, throttle
nor read the memory of the runner, a zygote or a waiting spare, nor create a kernel object
(SysV IPC, message queue, key, namespace, mount, BPF program) that could outlive the call, nor
set an inode's attribute flags (chattr's no-dump, no-atime...: /tmp itself outlives the call).
Everything else is left to Docker's own profile. x86_64 only: elsewhere the runner refuses to
start (fail closed).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

__all__ = [
    "CLONE_NAMESPACE_FLAGS",
    "DENIED_IOCTL_CMDS",
    "DENIED_SYSCALLS",
    "INODE_FLAG_IOCTLS",
    "SELF_ONLY_SYSCALLS",
    "SOCKET_DOMAINS_ALLOWED",
    "install",
    "prctl",
]

DENIED_SYSCALLS: dict[str, int] = {
    # signals and process handles aimed at other processes
    "kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297,
    "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438,
    # tracing and other processes' memory
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "process_madvise": 440,
    # SysV IPC and POSIX message queues: objects that outlive the process
    "shmget": 29, "shmat": 30, "shmctl": 31, "shmdt": 67,
    "semget": 64, "semop": 65, "semctl": 66, "semtimedop": 220,
    "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71,
    "mq_open": 240, "mq_unlink": 241, "mq_timedsend": 242, "mq_timedreceive": 243,
    "mq_notify": 244, "mq_getsetattr": 245,
    # keyrings, kernel programs, asynchronous kernel interfaces
    "keyctl": 250, "add_key": 248, "request_key": 249,
    "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    # namespaces and the filesystem tree
    "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155,
    "chroot": 161, "personality": 135,
    # priorities: PRIO_USER would reach the runner too
    "setpriority": 141, "ioprio_set": 251,
    # inode attribute flags by path (Linux 6.17+); the ioctls are in DENIED_IOCTL_CMDS
    "file_setattr": 469,
}
"""Refused with EPERM (x86_64 numbers)."""

SELF_ONLY_SYSCALLS: dict[str, int] = {
    "prlimit64": 302, "sched_setaffinity": 203, "sched_setscheduler": 144,
    "sched_setparam": 142, "sched_setattr": 314,
}
"""Calls that may name another process of the same uid: allowed on the caller only (pid 0)."""

DENIED_FCNTL_CMDS = (8, 10, 15)  # F_SETOWN, F_SETSIG, F_SETOWN_EX: no SIGIO aimed at others
INODE_FLAG_IOCTLS = (0x40086602, 0x40046602, 0x401C5820)
"""FS_IOC_SETFLAGS, FS_IOC32_SETFLAGS and FS_IOC_FSSETXATTR set an inode's flags: the owner of
/tmp (the sandbox user) may set no-dump or no-atime on it, and /tmp outlives every call, so a
call could leave a few bits for the next one there. Nothing a function needs sets them."""
DENIED_IOCTL_CMDS = (0x8901, 0x8902, 0x5412,  # FIOSETOWN, SIOCSPGRP, TIOCSTI
                     *INODE_FLAG_IOCTLS)

CLONE_NAMESPACE_FLAGS = 0x7E020000
"""clone() flags that make a namespace (NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID,
NEWNET): refused. Docker's own profile refuses them too, but runsc does not apply it, and
gVisor's kernel lets any user make a user namespace. (clone3 is ENOSYS under both runtimes, so
glibc falls back to clone, whose flags this filter can read.)"""

SOCKET_DOMAINS_ALLOWED = (1,)
"""socket() and socketpair() only for AF_UNIX: no TCP/UDP state (a loopback TIME_WAIT socket
outlives the process by a minute, so a call could leave a mark for the next one), no netlink,
no packet sockets. The container has no network anyway; this closes its loopback too."""

_FCNTL, _IOCTL, _CLONE, _SOCKET, _SOCKETPAIR = 72, 16, 56, 41, 53
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000


def _program() -> bytes:
    """Wrong arch -> kill; x32, a denied call or a denied command -> EPERM; else allow."""
    ld_abs, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill, deny = 0x7FFF0000, 0x80000000, 0x00050000 | errno.EPERM
    # (code, k, jump-if-true label, jump-if-false label); labels resolve to relative offsets.
    ops: list[tuple[int, int, str | None, str | None] | str] = [
        (ld_abs, 4, None, None),  # seccomp_data.arch
        (jeq, _AUDIT_ARCH_X86_64, "nr", None),
        (ret, kill, None, None),
        "nr", (ld_abs, 0, None, None),  # seccomp_data.nr
        (jge, _X32_SYSCALL_BIT, "deny", None),
        *[(jeq, nr, "deny", None) for nr in sorted(set(DENIED_SYSCALLS.values()))],
        *[(jeq, nr, "self_only", None) for nr in sorted(SELF_ONLY_SYSCALLS.values())],
        (jeq, _FCNTL, "fcntl", None),
        (jeq, _IOCTL, "ioctl", None),
        (jeq, _CLONE, "clone", None),
        (jeq, _SOCKET, "socket", None),
        (jeq, _SOCKETPAIR, "socket", None),
        (ret, allow, None, None),
        "socket", (ld_abs, 16, None, None),  # low half of args[0]: the domain
        *[(jeq, domain, "allow", None) for domain in SOCKET_DOMAINS_ALLOWED],
        (ret, deny, None, None),
        "clone", (ld_abs, 16, None, None),  # low half of args[0]: the flags
        (jset, CLONE_NAMESPACE_FLAGS, "deny", None),
        (ret, allow, None, None),
        "fcntl", (ld_abs, 24, None, None),  # low half of args[1]: the command
        *[(jeq, cmd, "deny", None) for cmd in DENIED_FCNTL_CMDS],
        (ret, allow, None, None),
        "ioctl", (ld_abs, 24, None, None),
        *[(jeq, cmd, "deny", None) for cmd in DENIED_IOCTL_CMDS],
        (ret, allow, None, None),
        "self_only", (ld_abs, 16, None, None),  # low half of args[0]: the pid
        (jeq, 0, None, "deny"),
        (ld_abs, 20, None, None),  # high half of args[0]
        (jeq, 0, None, "deny"),
        (ret, allow, None, None),
        "deny", (ret, deny, None, None),
        "allow", (ret, allow, None, None),
    ]
    labels, count = {}, 0
    for op in ops:
        if isinstance(op, str):
            labels[op] = count
        else:
            count += 1
    out, index = [], 0
    for op in ops:
        if isinstance(op, str):
            continue
        code, k, true, false = op
        jt = labels[true] - index - 1 if true else 0
        jf = labels[false] - index - 1 if false else 0
        out.append(struct.pack("HBBI", code, jt, jf, k))
        index += 1
    return b"".join(out)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]  # noqa: RUF012


_libc = ctypes.CDLL(None, use_errno=True)
_BUFFER = ctypes.create_string_buffer(_program())  # built once, before any fork
_FPROG = _SockFprog(len(_BUFFER.raw) // 8, ctypes.cast(_BUFFER, ctypes.c_void_p))


def install() -> None:
    """Confine the calling process (and everything it forks) for good."""
    if os.uname().machine != "x86_64":
        raise OSError("the runner's seccomp filter supports x86_64 only")
    if _libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
    if _libc.prctl(22, 2, ctypes.byref(_FPROG), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP failed")


def prctl(option: int, arg: int = 0) -> int:
    """prctl(2) for the runner's own settings (dumpable, subreaper)."""
    return int(_libc.prctl(option, arg, 0, 0, 0))
