"""A zygote: a process that has never held any call's data and forks the call processes.

The runner forks two at configure time, before it reads any call: a light one (standard library,
RestrictedPython, the guards) and a heavy one that has imported sympy, numpy and mpmath too.
Forking from a zygote instead of from the runner is what keeps calls apart: the runner reads
every request, argument and result, so a process forked from it would carry the previous call's
data in its memory (its frames, its heap); a zygote's memory holds only modules and policy.

Protocol over a SOCK_SEQPACKET socketpair with the runner:
    runner -> zygote  b"F" with four descriptors (SCM_RIGHTS): the call's pipe ends; fork one
    zygote -> runner  b"R"                    ready (after the imports)
                      b"P" + pid              the child forked (pid -1: the pids limit is full)
                      b"E" + pid + status     a child of ours exited (its wait status)
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import select
import signal
import socket
import struct
import traceback
from collections.abc import Iterator
from typing import Any, NoReturn

import audit_hook
import child
import guards

__all__ = ["HEAVY_MODULES", "HEAVY_WARM_UP", "LIGHT_MODULES", "reaped", "zygote_main"]

LIGHT_MODULES = ("fractions", "decimal", "itertools", "functools", "collections", "statistics",
                 "math", "cmath", "random", "re", "heapq", "bisect", "numbers", "copy", "array",
                 "json", "typing", "RestrictedPython.Guards")
"""Imported by both zygotes: a child of the light one costs about a millisecond of CPU."""
HEAVY_MODULES = ("sympy", "numpy", "mpmath")
"""Imported by the heavy zygote only: forking a process that holds them costs a few ms."""
HEAVY_WARM_UP = """
import numpy, sympy
x, y = sympy.symbols("x y")
sympy.solve([x + y - 3, x - y - 1], [x, y])
sympy.solve(x**2 - 5*x + 6, x)
sympy.simplify((x**2 - 1) / (x - 1) + sympy.sin(x)**2 + sympy.cos(x)**2)
sympy.factor(x**3 - 6*x**2 + 11*x - 6)
sympy.expand((x + y)**4)
sympy.nsimplify(0.75)
sympy.summation(1 / x**2, (x, 1, 10))
sympy.factorint(360)
sympy.Matrix([[1, 2], [3, 4]]).det()
sympy.Poly(x**2 + 1, x).all_coeffs()
sympy.latex(sympy.Rational(3, 4) * sympy.sqrt(2))
numpy.linalg.solve(numpy.eye(2), numpy.ones(2))
"""
"""Run once in the heavy zygote: sympy fills its caches and builds its dispatch tables on a
first use (solve 44 ms -> 14 on a second, simplify 140 -> 19, expand 35 -> 4), so each child
would pay that again; done before the fork, every child inherits the warm state. Fixed code,
no call's data."""


def zygote_main(sock: socket.socket, heavy: bool, policy: dict[str, Any],
                limits: dict[str, Any]) -> NoReturn:
    """Never returns. Dies with the runner (its socket closes)."""
    try:
        _serve(sock, heavy, policy, limits)
    except BaseException:
        with contextlib.suppress(BaseException):
            os.write(2, traceback.format_exc().encode()[-8000:])
    os._exit(71)


def _serve(sock: socket.socket, heavy: bool, policy: dict[str, Any],
           limits: dict[str, Any]) -> None:
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # no BLAS threads across fork()
    for name in LIGHT_MODULES + (HEAVY_MODULES if heavy else ()):
        __import__(name)
    if heavy:
        exec(compile(HEAVY_WARM_UP, "<warm-up>", "exec"), {})  # fixed source, no call's data
    del os.environ["OPENBLAS_NUM_THREADS"]
    guards.compile_function(child.COMPILE_WARM_UP, policy, True)
    audit_hook.prepare_rules(policy)
    child.prefault(policy)
    child.ZYGOTE_GENERATORS[:] = [(gen, child.state_digest(gen))
                                  for gen in child.find_generators()]
    gc.collect()
    gc.freeze()  # forked children do not touch (and so do not copy) the preloaded heap
    huge_pages()
    wake_r, wake_w = socket.socketpair()  # not a pipe: see server.channel
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sock.sendall(b"R")
    while True:
        ready, _, _ = select.select([sock, wake_r], [], [])
        with contextlib.suppress(BlockingIOError):
            wake_r.recv(4096)
        for pid, status in reaped():
            sock.sendall(b"E" + struct.pack("ii", pid, status))
        if sock not in ready:
            continue
        message, fds, _, _ = socket.recv_fds(sock, 16, 4)
        if not message:
            return  # the runner is gone
        if message[:1] != b"F" or len(fds) != 4:
            for fd in fds:
                os.close(fd)
            raise RuntimeError("the runner broke the zygote protocol")
        try:
            pid = os.fork()
        except OSError:
            pid = -1  # the pids limit: the runner cleans up and asks again
        if pid == 0:
            child.child_main((fds[0], fds[1], fds[2], fds[3]), policy, limits)
        for fd in fds:
            os.close(fd)
        sock.sendall(b"P" + struct.pack("i", pid))


_HUGE_PAGE = 1 << 21
_MADV_HUGEPAGE, _MADV_COLLAPSE = 14, 25


def huge_pages() -> None:
    """Back the zygote's anonymous memory with transparent huge pages where the kernel can
    (MADV_COLLAPSE, Linux 6.1+): a fork then copies one page-table entry per 2 MB instead of
    512, and a call process's exit frees as few. Measured, a heavy zygote's fork plus its
    child's exit take 1 ms less (of 4.5); a child's first write to a huge page still copies
    4 kB only (the kernel splits the mapping). Where the kernel refuses (gVisor, older
    kernels), nothing changes."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    with open("/proc/self/maps") as maps:
        regions = [line.split() for line in maps]  # read whole: madvise splits mappings
    for fields in regions:
        if "w" not in fields[1] or (len(fields) > 5 and fields[5] != "[heap]"):
            continue  # anonymous writable memory only (not files, stacks, vdso)
        low, high = (int(x, 16) for x in fields[0].split("-"))
        start, end = -(-low // _HUGE_PAGE) * _HUGE_PAGE, high // _HUGE_PAGE * _HUGE_PAGE
        if end > start:
            libc.madvise(start, end - start, _MADV_HUGEPAGE)
            libc.madvise(start, end - start, _MADV_COLLAPSE)


def reaped() -> Iterator[tuple[int, int]]:
    """(pid, wait status) of every child that has exited, without blocking."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, status
