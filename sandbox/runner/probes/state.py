"""Probes of what a call process inherits or could leave behind besides files: the inode flags
of /tmp (which outlives every call) and the state of the random generators it was forked with."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import random
import struct
import sys

from .common import ProbeResult, _en, _lib

__all__ = ["probe_random_reseeded", "probe_tmp_inode_flags"]

_FS_IOC_GETFLAGS = 0x80086601
_SET_FLAGS = (("FS_IOC_SETFLAGS", 0x40086602, "q"), ("FS_IOC32_SETFLAGS", 0x40046602, "i"))
_FS_IOC_FSSETXATTR = 0x401C5820
_FS_NODUMP_FL, _FS_NOATIME_FL, _FS_XFLAG_NODUMP = 0x40, 0x80, 0x80
_NR_FILE_SETATTR, _AT_FDCWD, _FILE_ATTR_SIZE = 469, -100, 24


def probe_tmp_inode_flags() -> ProbeResult:
    """chattr-style flags the owner of /tmp may set (no-dump, no-atime) would outlive the call:
    every way to set them must be refused by the call's filter (EPERM)."""
    fd = os.open("/tmp", os.O_RDONLY | os.O_DIRECTORY)
    try:
        before = _flags(fd)
        bad = []
        wanted = before | _FS_NODUMP_FL | _FS_NOATIME_FL
        tries: list[tuple[str, int, bytes]] = [
            (name, cmd, struct.pack(fmt, wanted)) for name, cmd, fmt in _SET_FLAGS]
        tries.append(("FS_IOC_FSSETXATTR", _FS_IOC_FSSETXATTR,
                      struct.pack("IIIII8x", _FS_XFLAG_NODUMP, 0, 0, 0, 0)))
        for name, cmd, arg in tries:
            try:
                fcntl.ioctl(fd, cmd, arg)
                bad.append(f"{name} succeeded")
            except OSError as exc:
                if exc.errno != errno.EPERM:
                    bad.append(f"{name}: {_en(exc.errno)} (not the filter's EPERM)")
        attr = ctypes.create_string_buffer(struct.pack("QIIII", _FS_XFLAG_NODUMP, 0, 0, 0, 0))
        ctypes.set_errno(0)
        ret = _lib().syscall(ctypes.c_long(_NR_FILE_SETATTR), ctypes.c_long(_AT_FDCWD),
                             b"/tmp", attr, ctypes.c_long(_FILE_ATTR_SIZE), ctypes.c_long(0))
        err = ctypes.get_errno()
        if ret == 0:
            bad.append("file_setattr succeeded")
        elif err != errno.EPERM:
            bad.append(f"file_setattr: {_en(err)} (not the filter's EPERM)")
        if _flags(fd) != before:
            bad.append(f"/tmp's flags changed: {before:#x} -> {_flags(fd):#x}")
            fcntl.ioctl(fd, _SET_FLAGS[0][1], struct.pack("q", before))  # undo at once
        return (not bad), "; ".join(bad) or "every way to set /tmp's inode flags refused (EPERM)"
    finally:
        os.close(fd)


def _flags(fd: int) -> int:
    buf = bytearray(8)
    try:
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buf)
    except OSError:
        return 0  # a filesystem without flags
    return int(struct.unpack("i", buf[:4])[0])


def probe_random_reseeded() -> ProbeResult:
    """Every random generator this process got from its zygote draws its own numbers: its state
    differs from the zygote's (runs first, before any probe could draw from one)."""
    import child  # the runner's module, loaded in the zygote this process was forked from

    held = child.ZYGOTE_GENERATORS
    ids = {id(gen) for gen, _ in held}
    must = [("random", random._inst)]
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        must.append(("numpy.random", numpy_random.mtrand._rand))
    sympy_random = sys.modules.get("sympy.core.random")
    if sympy_random is not None:
        must.append(("sympy", sympy_random.rng))
    missing = [name for name, gen in must if id(gen) not in ids]
    same = [type(gen).__name__ for gen, digest in held if child.state_digest(gen) == digest]
    bad = ([f"not found in the zygote: {', '.join(missing)}"] if missing else []) + (
        [f"{len(same)} still in the zygote's state: {', '.join(sorted(set(same)))}"]
        if same else [])
    return (not bad), "; ".join(bad) or (
        f"{len(held)} generators of the zygote reseeded from the kernel "
        f"({', '.join(name for name, _ in must)} among them)")
