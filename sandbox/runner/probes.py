"""Fail-closed confinement probes, run INSIDE a sandbox container (``python -m sandbox selftest``).

Runs as the unprivileged sandbox user, in a forked child of the runner, with the same rlimits and
seccomp filter as user code. Standard library only; never imports ``sandbox.*``.

``run_probes() -> {name: {"confined": bool, "detail": str}}``

Rules (codejail's discipline): every probe tries the forbidden thing for real (bounded, harmless:
files are opened for writing but never written, signals are signal 0, a successful privileged
action is undone at once) and reports ``confined=True`` only when it sees the specific refusal it
expects (ENETUNREACH, EROFS, EACCES, EPERM, ...). Anything else (success, a timeout, an errno that
means "packets left the box", an unexpected exception) is ``confined=False`` with the reason in
``detail``. Each probe catches its own exceptions; the whole set takes well under 3 s when the
sandbox is confined (connects fail at once), and stays bounded (about 3 s) when it is not.

Run standalone for checking a container by hand: ``docker run ... python3 - < probes.py`` prints the
JSON and exits 1 when any probe is not confined.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import re
import select
import signal
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypedDict

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


# --------------------------------------------------------------------------------------------
# bounds

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


# --------------------------------------------------------------------------------------------
# network


def _connect_all(targets: Sequence[tuple[int, tuple[str | int, ...]]],
                 proto: int = socket.SOCK_STREAM) -> list[str]:
    """Non-blocking connects to every target at once; returns the failures of confinement."""
    bad: list[str] = []
    pending: dict[socket.socket, str] = {}
    for family, addr in targets:
        label = f"{addr[0]}:{addr[1]}"
        try:
            s = socket.socket(family, proto)
        except OSError as exc:
            if exc.errno not in _NO_ROUTE:
                bad.append(f"{label} socket() {_en(exc.errno)}")
            continue
        s.setblocking(False)
        rc = s.connect_ex(addr)
        if rc in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK):
            pending[s] = label
            continue
        s.close()
        if rc == 0:
            bad.append(f"{label} connected")
        elif rc not in _NO_ROUTE:
            bad.append(f"{label} {_en(rc)} (a route exists)")
    if pending:
        _, writable, _ = select.select([], list(pending), [], CONNECT_WAIT_S)
        for s, label in pending.items():
            if s in writable:
                rc = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if rc == 0:
                    bad.append(f"{label} connected")
                elif rc not in _NO_ROUTE:
                    bad.append(f"{label} {_en(rc)} (packets left the container)")
            else:
                bad.append(f"{label} still connecting after {CONNECT_WAIT_S}s (packets left)")
            s.close()
    return bad


def _nameservers() -> list[str]:
    """Resolvers named in resolv.conf that are not the container's own loopback."""
    try:
        servers = [line.split()[1] for line in _read("/etc/resolv.conf").splitlines()
                   if line.startswith("nameserver") and len(line.split()) > 1]
    except OSError:
        return []
    return [ns for ns in servers if not ns.startswith("127.") and ns != "::1"][:3]


def probe_net_egress_ipv4() -> ProbeResult:
    targets = [(socket.AF_INET, ("1.1.1.1", 53)), (socket.AF_INET, ("8.8.8.8", 443)),
               (socket.AF_INET, ("93.184.216.34", 80))]
    targets += [(socket.AF_INET, (ns, 53)) for ns in _nameservers() if ":" not in ns]
    bad = _connect_all(targets)
    if bad:
        return False, "; ".join(bad)
    return True, f"{len(targets)} TCP connects refused with no route"


def probe_net_udp_egress() -> ProbeResult:
    """A DNS query built by hand: sendto must fail locally, not leave the box."""
    bad = []
    targets = ["8.8.8.8", "1.1.1.1"] + [ns for ns in _nameservers() if ":" not in ns]
    for host in targets:
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except OSError as exc:
            if exc.errno not in _NO_ROUTE:
                bad.append(f"{host} socket() {_en(exc.errno)}")
            continue
        try:
            s.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00"
                     b"\x00\x01\x00\x01", (host, 53))
            bad.append(f"udp {host}:53 datagram sent")
        except OSError as exc:
            if exc.errno not in _NO_ROUTE:
                bad.append(f"udp {host}:53 {_en(exc.errno)}")
        finally:
            s.close()
    return (not bad), "; ".join(bad) or f"UDP to {len(targets)} resolvers: no route"


def probe_net_dns() -> ProbeResult:
    names = ["pypi.org", "example.com", "host.docker.internal"]
    results: dict[str, str] = {}

    def resolve() -> None:
        for n in names:
            try:
                socket.getaddrinfo(n, 443, proto=socket.IPPROTO_TCP)
                results[n] = "resolved"
            except socket.gaierror as exc:
                results[n] = f"gaierror {exc.errno}"
            except OSError as exc:
                results[n] = f"refused {_en(exc.errno)}"

    t = threading.Thread(target=resolve, daemon=True)
    t.start()
    t.join(DNS_WAIT_S)
    if t.is_alive():
        return False, f"resolver still waiting after {DNS_WAIT_S}s (queries are leaving): {results}"
    bad = [n for n, v in results.items() if v == "resolved"]
    if bad:
        return False, "resolved: " + ", ".join(bad)
    return True, "; ".join(f"{n}: {v}" for n, v in results.items())


def probe_net_interfaces() -> ProbeResult:
    names = []
    for line in _read("/proc/net/dev").splitlines()[2:]:
        names.append(line.split(":")[0].strip())
    try:
        names += [n for _, n in socket.if_nameindex()]
    except OSError:
        pass
    extra = sorted(set(names) - {"lo"})
    routes = [row for row in _read("/proc/net/route").splitlines()[1:] if row.strip()]
    bad = []
    if extra:
        bad.append("interfaces besides lo: " + ", ".join(extra))
    if routes:
        bad.append(f"{len(routes)} IPv4 routes")
    try:
        r6 = [row for row in _read("/proc/net/ipv6_route").splitlines()
              if row.strip() and not row.rstrip().endswith(" lo")]
        if r6:
            bad.append(f"{len(r6)} IPv6 routes off lo")
    except OSError:
        pass
    return (not bad), "; ".join(bad) or "only lo, no routes"


def probe_net_host_gateway() -> ProbeResult:
    targets = [(socket.AF_INET, ("172.17.0.1", p)) for p in (22, 53, 80, 2375, 2376, 8080)]
    targets.append((socket.AF_INET, ("169.254.169.254", 80)))  # cloud metadata service
    targets.append((socket.AF_INET, ("10.0.2.2", 80)))
    for line in _read("/proc/net/route").splitlines()[1:]:
        f = line.split()
        if len(f) > 2 and f[1] == "00000000" and f[2] != "00000000":
            gw = socket.inet_ntoa(struct.pack("<I", int(f[2], 16)))
            targets.append((socket.AF_INET, (gw, 80)))
    bad = _connect_all(targets)
    return (not bad), "; ".join(bad) or f"{len(targets)} gateway/metadata connects: no route"


def probe_host_loopback() -> ProbeResult:
    """Our loopback must be a private one: nothing listens, no host sockets are visible."""
    bad = []
    for name in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6"):
        try:
            lines = [row for row in _read(f"/proc/net/{name}", 1 << 20).splitlines()[1:]
                     if row.strip()]
        except OSError:
            continue
        if lines:
            bad.append(f"/proc/net/{name}: {len(lines)} sockets visible")
    try:
        unix = [row for row in _read("/proc/net/unix", 1 << 20).splitlines()[1:] if row.strip()]
        named = [row.split()[-1] for row in unix if len(row.split()) >= 8]
        if named:
            bad.append("unix sockets in our netns: " + ", ".join(named[:5]))
    except OSError:
        pass
    for port in (22, 53, 80, 631, 2375, 2376, 3000, 5000, 5432, 6379, 8000, 8080, 11434):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(0.2)
        try:
            rc = s.connect_ex(("127.0.0.1", port))
        finally:
            s.close()
        if rc == 0:
            bad.append(f"127.0.0.1:{port} accepts connections")
        elif rc not in _NO_ROUTE | {errno.ECONNREFUSED}:
            bad.append(f"127.0.0.1:{port} {_en(rc)}")
    return (not bad), "; ".join(bad) or "private loopback: nothing listening, no foreign sockets"


def probe_net_ipv6() -> ProbeResult:
    targets = [(socket.AF_INET6, ("2606:4700:4700::1111", 53, 0, 0)),
               (socket.AF_INET6, ("2001:4860:4860::8888", 443, 0, 0))]
    bad = _connect_all(targets)
    if not bad:
        try:
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            try:
                s.sendto(b"x", ("2001:4860:4860::8888", 53, 0, 0))
                bad.append("udp6 datagram sent")
            except OSError as exc:
                if exc.errno not in _NO_ROUTE:
                    bad.append(f"udp6 {_en(exc.errno)}")
            finally:
                s.close()
        except OSError as exc:
            if exc.errno not in _NO_ROUTE:
                bad.append(f"udp6 socket() {_en(exc.errno)}")
    return (not bad), "; ".join(bad) or "IPv6 egress: no route"


def probe_net_raw_socket() -> ProbeResult:
    bad, ok = [], []
    kinds = [("inet raw icmp", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
             ("inet raw", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW),
             ("inet6 raw", socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)]
    if hasattr(socket, "AF_PACKET"):
        kinds.append(("packet", socket.AF_PACKET, socket.SOCK_RAW, 0x0300))
    for label, fam, typ, proto in kinds:
        try:
            s = socket.socket(fam, typ, proto)
            s.close()
            bad.append(f"{label} socket opened")
        except OSError as exc:
            if exc.errno in _DENIED | {errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT,
                                       errno.ESOCKTNOSUPPORT}:
                ok.append(f"{label} {_en(exc.errno)}")
            else:
                bad.append(f"{label} {_en(exc.errno)}")
    return (not bad), "; ".join(bad) or "; ".join(ok)


def probe_net_netlink() -> ProbeResult:
    """Opening a route netlink socket is harmless; changing the network through it must not be."""
    if not hasattr(socket, "AF_NETLINK"):
        return True, "no AF_NETLINK"
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
    except OSError as exc:
        if exc.errno in _DENIED | {errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT}:
            return True, f"netlink socket refused: {_en(exc.errno)}"
        return False, f"netlink socket: {_en(exc.errno)}"

    def request(msg_type: int, flags: int) -> int:
        addr = socket.inet_aton("10.213.7.9")
        ifa = struct.pack("=BBBBI", socket.AF_INET, 32, 0, 0, 1)  # lo is ifindex 1
        attrs = struct.pack("=HH4s", 8, 2, addr) + struct.pack("=HH4s", 8, 1, addr)
        body = ifa + attrs
        hdr = struct.pack("=IHHII", 16 + len(body), msg_type, flags, 1, 0)
        s.send(hdr + body)
        s.settimeout(0.5)
        data = s.recv(65536)
        _mlen, mtype = struct.unpack("=IH", data[:6])
        if mtype == 2:  # NLMSG_ERROR
            nl_errno: int = struct.unpack("=i", data[16:20])[0]
            return -nl_errno
        return -1

    try:
        # RTM_NEWADDR, NLM_F_REQUEST|NLM_F_ACK|NLM_F_EXCL|NLM_F_CREATE
        err = request(20, 0x1 | 0x4 | 0x200 | 0x400)
        if err == 0:
            try:
                request(21, 0x1 | 0x4)  # RTM_DELADDR: undo
            except OSError:
                pass
            return False, "netlink RTM_NEWADDR on lo succeeded (CAP_NET_ADMIN)"
        if err in _DENIED:
            return True, f"netlink route socket opens, RTM_NEWADDR refused: {_en(err)}"
        return False, f"netlink RTM_NEWADDR: unexpected answer {_en(err)}"
    except OSError as exc:
        if exc.errno in _DENIED:
            return True, f"netlink send refused: {_en(exc.errno)}"
        return False, f"netlink: {type(exc).__name__} {_en(exc.errno)}"
    finally:
        s.close()


# --------------------------------------------------------------------------------------------
# filesystem, /proc and /sys


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


def probe_proc_sysrq_trigger() -> ProbeResult:
    bad = _open_for_write("/proc/sysrq-trigger")
    return (bad is None), bad or "/proc/sysrq-trigger not writable"


def probe_proc_sys_write() -> ProbeResult:
    paths = ["/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe",
             "/proc/sys/kernel/hostname", "/proc/sys/vm/drop_caches",
             "/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/panic"]
    bad = [b for b in map(_open_for_write, paths) if b]
    return (not bad), "; ".join(bad) or f"{len(paths)} /proc/sys files refused"


def probe_sys_write() -> ProbeResult:
    paths = ["/sys/kernel/uevent_helper", "/sys/fs/cgroup/memory/memory.limit_in_bytes",
             "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes",
             "/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/memory.max",
             "/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/cgroup.procs",
             "/sys/class/net/lo/mtu", "/sys/power/state"]
    bad = [b for b in map(_open_for_write, paths) if b]
    for d in ("/sys/fs/cgroup/memory/fnforge_probe", "/sys/fs/cgroup/fnforge_probe"):
        try:
            os.mkdir(d)
            os.rmdir(d)
            bad.append(f"mkdir {d} succeeded (cgroup writable)")
        except OSError as exc:
            if exc.errno not in _RO_OR_DENIED | {errno.ENOENT}:
                bad.append(f"mkdir {d}: {_en(exc.errno)}")
    return (not bad), "; ".join(bad) or "/sys and cgroup files read-only"


def probe_proc_oom_score_adj() -> ProbeResult:
    def attempt() -> ProbeResult:
        cur = int(_read("/proc/self/oom_score_adj").strip())
        if cur <= -1000:
            return False, "oom_score_adj already -1000"
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(max(-1000, cur - 500)))
            return False, f"lowered oom_score_adj from {cur} (CAP_SYS_RESOURCE)"
        except OSError as exc:
            if exc.errno in _RO_OR_DENIED:
                return True, f"lowering oom_score_adj refused: {_en(exc.errno)}"
            return False, f"oom_score_adj: {_en(exc.errno)}"
    return _in_fork(attempt)


def probe_proc_masked() -> ProbeResult:
    """Kernel memory, logs and tables docker masks must stay masked (--privileged unmasks)."""
    bad = []
    for path in ("/proc/kcore", "/proc/kmsg", "/proc/sched_debug", "/proc/timer_list",
                 "/proc/keys", "/dev/kmsg", "/dev/mem", "/proc/sysrq-trigger"):
        try:
            with open(path, "rb", buffering=0) as f:
                fd = f.fileno()
                os.set_blocking(fd, False)
                try:
                    data = f.read(64)
                except BlockingIOError:
                    data = b""
            if data:
                bad.append(f"{path} readable")
        except OSError as exc:
            if exc.errno not in _DENIED | {errno.ENOENT, errno.EINVAL, errno.EROFS}:
                bad.append(f"{path}: {_en(exc.errno)}")
    try:
        entries = os.listdir("/sys/firmware")
        if entries:
            bad.append("/sys/firmware not masked: " + ",".join(entries[:5]))
    except OSError:
        pass
    try:
        first = _read("/proc/kallsyms", 4096).split("\n", 1)[0]
        if first and first.split()[0].strip("0"):
            bad.append("/proc/kallsyms shows kernel addresses")
    except OSError:
        pass
    return (not bad), "; ".join(bad) or "kcore/kmsg/keys/timer_list masked, kallsyms zeroed"


def probe_write_outside_tmp() -> ProbeResult:
    dirs = ["/", "/etc", "/usr", "/usr/lib/python3/dist-packages", "/opt", "/var", "/var/tmp",
            "/run", "/run/lock", "/home", "/root", "/dev", "/dev/shm", "/sys/fs/cgroup",
            os.path.expanduser("~") or "/", os.getcwd()]
    try:
        import sysconfig
        dirs.append(sysconfig.get_paths()["purelib"])
    except Exception:
        pass
    for p in sys.path:
        if p and os.path.isdir(p) and not p.startswith("/tmp"):
            dirs.append(p)
    bad, seen = [], set()
    for d in dirs:
        real = os.path.realpath(d)
        if real in seen or real == "/tmp" or real.startswith("/tmp/"):
            continue
        seen.add(real)
        path = os.path.join(real, f".fnforge_probe_{os.getpid()}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            if exc.errno not in _RO_OR_DENIED | {errno.ENOENT, errno.ENOTDIR}:
                bad.append(f"{real}: {_en(exc.errno)}")
            continue
        os.close(fd)
        os.unlink(path)
        bad.append(f"created a file in {real}")
    for f in ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/etc/passwd"):
        b = _open_for_write(f)
        if b:
            bad.append(b)
    return (not bad), "; ".join(bad) or f"{len(seen)} directories and docker's /etc files refused"


def probe_writable_mounts_noexec() -> ProbeResult:
    bad = []
    for m in _mounts():
        p = m["point"]
        if p.startswith("/proc") or not os.path.isdir(p):
            continue
        if "ro" in m["opts"] or not os.access(p, os.W_OK):
            continue
        wanted: tuple[str, ...] = ("noexec", "nosuid", "nodev")
        if _GVISOR:  # gVisor (2022) shows and keeps only noexec of docker's tmpfs options:
            wanted = ("noexec",)  # it never honours set-id bits, and device nodes reach
            b = _device_node_opens(p)  # only its own emulated devices (checked here)
            if b:
                bad.append(b)
        missing = [o for o in wanted if o not in m["opts"]]
        if missing:
            bad.append(f"{p} ({m['fstype']}) writable without {','.join(missing)}")
    return (not bad), "; ".join(bad) or ("every writable mount is noexec; device nodes made there"
                                         " reach only gVisor's own devices" if _GVISOR else
                                         "every writable mount is noexec,nosuid,nodev")


def _device_node_opens(directory: str) -> str | None:
    """None when a /dev/mem node made in directory cannot be opened (or not made at all)."""
    path = os.path.join(directory, f".fnforge_probe_dev_{os.getpid()}")
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 1))
    except OSError:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
        os.close(fd)
        return f"a /dev/mem node made in {directory} opens"
    except OSError as exc:
        return None if exc.errno in (errno.ENXIO, errno.ENODEV, errno.EACCES, errno.EPERM) \
            else f"device node in {directory}: {_en(exc.errno)}"
    finally:
        os.unlink(path)


def probe_tmp_noexec() -> ProbeResult:
    base = f"/tmp/.fnforge_probe_exec_{os.getpid()}"
    bad, ok, made = [], [], []
    try:
        script = base + ".sh"
        with open(script, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        made.append(script)
        os.chmod(script, 0o755)
        candidates = [script]
        for src in ("/bin/true", "/usr/bin/true"):
            if os.path.exists(src):
                elf = base + ".elf"
                with open(src, "rb") as fi, open(elf, "wb") as fo:
                    fo.write(fi.read(4 << 20))
                made.append(elf)
                os.chmod(elf, 0o755)
                candidates.append(elf)
                break
        for path in candidates:
            try:
                pid = os.posix_spawn(path, [path], {})
            except OSError as exc:
                if exc.errno in _DENIED:
                    ok.append(f"{os.path.basename(path)} {_en(exc.errno)}")
                else:
                    bad.append(f"exec {path}: {_en(exc.errno)}")
                continue
            _, status = os.waitpid(pid, 0)
            bad.append(f"executed {path} from /tmp (status {status})")
        # mapping a /tmp file executable must fail too (noexec covers mmap PROT_EXEC)
        import mmap
        with open(made[0], "rb") as f:
            try:
                mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ | mmap.PROT_EXEC,
                               flags=mmap.MAP_PRIVATE)
                mm.close()
                if _GVISOR:  # gVisor enforces noexec on execve only; an executable mapping
                    ok.append("mmap exec allowed (gVisor)")  # is no more than anonymous RWX
                else:
                    bad.append("mmap PROT_EXEC of a /tmp file allowed")
            except OSError as exc:
                if exc.errno in _DENIED:
                    ok.append(f"mmap exec {_en(exc.errno)}")
                else:
                    bad.append(f"mmap exec: {_en(exc.errno)}")
    except OSError as exc:
        if not made and exc.errno in _RO_OR_DENIED | {errno.ENOENT}:
            return True, f"/tmp not writable at all: {_en(exc.errno)}"
        bad.append(f"{type(exc).__name__}: {exc}")
    finally:
        for p in made:
            try:
                os.unlink(p)
            except OSError:
                pass
    return (not bad), "; ".join(bad) or "; ".join(ok)


def probe_tmp_bounded() -> ProbeResult:
    try:
        st = os.statvfs("/tmp")
    except OSError as exc:
        return False, f"statvfs /tmp: {_en(exc.errno)}"
    size = st.f_blocks * st.f_frsize
    tmp = [m for m in _mounts() if m["point"] == "/tmp"]
    if not tmp:
        return False, "/tmp is not a separate mount (it lives on the root filesystem)"
    if tmp[-1]["fstype"] != "tmpfs":
        return False, f"/tmp is {tmp[-1]['fstype']}, not tmpfs"
    if size > MAX_TMP_BYTES:
        return False, f"/tmp is {size >> 20} MiB"
    return True, f"/tmp tmpfs of {size >> 20} MiB"


def probe_host_mounts() -> ProbeResult:
    """Nothing of the host is mounted except docker's own resolv.conf/hostname/hosts and init."""
    allowed_files = {"/etc/resolv.conf", "/etc/hostname", "/etc/hosts", "/sbin/docker-init",
                     "/usr/sbin/docker-init", "/dev/init"}
    pseudo = {"proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2", "tmpfs", "devtmpfs"}
    bad = []
    for m in _mounts():
        p, fs = m["point"], m["fstype"]
        if p == "/":
            if "ro" not in m["opts"]:
                bad.append("root filesystem mounted read-write")
            continue
        if p in allowed_files:
            if "ro" not in m["opts"] and os.access(p, os.W_OK):
                bad.append(f"{p} writable")
            continue
        if fs in pseudo and (p.startswith(("/proc", "/sys", "/dev")) or p == "/tmp"):
            if fs == "tmpfs" and m["root"] not in ("/", "/null") and p != "/tmp":
                bad.append(f"{p}: a host tmpfs path {m['root']} is mounted")
            continue
        bad.append(f"{p}: {fs} from {m['source']}:{m['root']}")
    return (not bad), "; ".join(bad) or "no host mounts beyond docker's /etc files"


def probe_host_files() -> ProbeResult:
    bad = []
    for d in ("/root", "/home"):
        try:
            entries = os.listdir(d)
        except OSError as exc:
            if exc.errno not in _DENIED | {errno.ENOENT}:
                bad.append(f"{d}: {_en(exc.errno)}")
            continue
        for e in entries:
            full = os.path.join(d, e)
            try:
                inner = os.listdir(full) if os.path.isdir(full) else [e]
            except OSError:
                continue
            if inner:
                bad.append(f"{full} has content: {', '.join(sorted(inner)[:4])}")
        if d == "/root" and entries and not any(b.startswith("/root") for b in bad):
            bad.append("/root is listable: " + ", ".join(sorted(entries)[:4]))
    for f in ("/etc/shadow", "/etc/gshadow", "/etc/ssh/ssh_host_rsa_key", "/root/.ssh/id_rsa",
              "/root/.docker/config.json", "/var/run/secrets/kubernetes.io/serviceaccount/token"):
        try:
            with open(f, "rb") as fh:
                fh.read(1)
            bad.append(f"{f} readable")
        except OSError as exc:
            if exc.errno not in _DENIED | {errno.ENOENT, errno.ENOTDIR}:
                bad.append(f"{f}: {_en(exc.errno)}")
    try:
        name = _read("/etc/hostname").strip()
        node = os.uname().nodename
        if name != node:
            bad.append(f"/etc/hostname {name!r} differs from our UTS name {node!r}")
        elif not (re.fullmatch(r"[0-9a-f]{12}|[0-9a-f]{64}", node) or
                  re.search(r"fnforge|sandbox", node, re.I)):
            bad.append(f"hostname {node!r} does not look like a container's (host UTS?)")
    except OSError:
        pass
    return (not bad), "; ".join(bad) or "no host files, /root and /home empty or closed"


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


def probe_devices() -> ProbeResult:
    allowed = {"null", "zero", "full", "random", "urandom", "tty", "console", "ptmx", "pts",
               "shm", "mqueue", "fd", "stdin", "stdout", "stderr", "core", "init"}
    if _GVISOR:  # gVisor's own emulated tun and fuse: unusable without CAP_NET_ADMIN / mount
        allowed |= {"net", "fuse"}
    bad = []
    try:
        for e in os.listdir("/dev"):
            st = os.lstat(os.path.join("/dev", e))
            if stat.S_ISBLK(st.st_mode):
                bad.append(f"block device /dev/{e}")
            elif e not in allowed:
                bad.append(f"/dev/{e}")
    except OSError as exc:
        return False, f"/dev: {_en(exc.errno)}"
    return (not bad), "; ".join(bad[:10]) or "only the standard character devices"


def probe_docker_socket() -> ProbeResult:
    bad = []
    for p in ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
              "/var/run/containerd/containerd.sock", "/run/podman/podman.sock",
              "/run/user/0/docker.sock", "/tmp/docker.sock", "/docker.sock"):
        if os.path.lexists(p):
            bad.append(f"{p} exists")
    for top in ("/run", "/var/run", "/tmp", "/var/lib", "/dev", "/"):
        try:
            entries = os.scandir(top)
        except OSError:
            continue
        with entries:
            for e in entries:
                try:
                    if stat.S_ISSOCK(e.stat(follow_symlinks=False).st_mode):
                        bad.append(f"socket {e.path}")
                    elif top in ("/run", "/var/run") and e.is_dir(follow_symlinks=False):
                        for sub in os.scandir(e.path):
                            if stat.S_ISSOCK(sub.stat(follow_symlinks=False).st_mode):
                                bad.append(f"socket {sub.path}")
                except OSError:
                    continue
    for m in _mounts():  # a socket bind-mounted anywhere
        try:
            if stat.S_ISSOCK(os.stat(m["point"]).st_mode):
                bad.append(f"socket mounted at {m['point']}")
        except OSError:
            continue
    try:  # a docker engine on the host's abstract or TCP endpoints would show in host netns only
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect("\0/containerd-shim")
            bad.append("abstract containerd-shim socket reachable")
        except OSError:
            pass
        finally:
            s.close()
    except OSError:
        pass
    bad = sorted(set(bad))
    return (not bad), "; ".join(bad) or "no docker/containerd socket anywhere"


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


# --------------------------------------------------------------------------------------------
# privileges


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
        bad, ok = [], []
        flags = [("CLONE_NEWNS", 0x00020000), ("CLONE_NEWNET", 0x40000000),
                 ("CLONE_NEWPID", 0x20000000), ("CLONE_NEWUSER", 0x10000000)]
        for label, flag in flags:
            ctypes.set_errno(0)
            rc = libc.unshare(ctypes.c_int(flag))
            err = ctypes.get_errno()
            if rc == 0:
                bad.append(f"unshare({label}) succeeded")
            elif err in _SYSCALL_DENIED:
                ok.append(f"unshare({label}) {_en(err)}")
            else:
                bad.append(f"unshare({label}) {_en(err)}")
        # raw clone with a new user namespace (clone itself, not only unshare)
        if "clone" in _NR and not bad:
            ret, err = _syscall("clone", 0x10000000 | signal.SIGCHLD, 0, 0, 0, 0)
            if ret == 0:
                os._exit(0)
            if ret > 0:
                os.waitpid(ret, 0)
                bad.append("clone(CLONE_NEWUSER) succeeded")
            elif err in _SYSCALL_DENIED:
                ok.append(f"clone(CLONE_NEWUSER) {_en(err)}")
            else:
                bad.append(f"clone(CLONE_NEWUSER) {_en(err)}")
        return (not bad), "; ".join(bad) or "; ".join(ok)
    return _in_fork(attempt)


def probe_keyctl() -> ProbeResult:
    def attempt() -> ProbeResult:
        bad, ok = [], []
        ret, err = _syscall("add_key", ctypes.c_char_p(b"user"), ctypes.c_char_p(b"fnforge"),
                            ctypes.c_char_p(b"x"), 1, -2)  # KEY_SPEC_PROCESS_KEYRING
        if ret >= 0:
            bad.append("add_key succeeded")
        elif err in _SYSCALL_DENIED:
            ok.append(f"add_key {_en(err)}")
        else:
            bad.append(f"add_key {_en(err)}")
        ret, err = _syscall("keyctl", 1, 0, 0, 0, 0)  # KEYCTL_JOIN_SESSION_KEYRING(NULL)
        if ret >= 0:
            bad.append("keyctl(JOIN_SESSION_KEYRING) succeeded")
        elif err in _SYSCALL_DENIED:
            ok.append(f"keyctl {_en(err)}")
        else:
            bad.append(f"keyctl {_en(err)}")
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


def probe_fork_limit() -> ProbeResult:
    """Fork children that wait on a pipe; forking must stop (EAGAIN) before MAX_FORKS.

    Under gVisor a forked Python child costs 8-24 MiB of the container's memory (its kernel
    copies on write in 2 MiB units), so the memory limit would end the whole sandbox before the
    process limit is reached: there the children are spawned `cat`s reading the pipe (a fresh,
    small address space each), which count against the same limit."""
    r, w = os.pipe()
    kids: list[int] = []
    stopped: OSError | None = None
    deadline = time.monotonic() + 1.5
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


# --------------------------------------------------------------------------------------------
# the runner and the other processes of the container


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


# --------------------------------------------------------------------------------------------
# resource limits


def _first_readable(*paths: str) -> tuple[str, str] | None:
    """(path, stripped content) of the first readable path; None when none is."""
    for p in paths:
        try:
            return p, _read(p).strip()
        except OSError:
            continue
    return None


def probe_memory_limit() -> ProbeResult:
    found = _first_readable("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                            "/sys/fs/cgroup/memory.max")
    if found is None and _GVISOR:
        # No cgroupfs inside gVisor (2022); runsc sizes the sandbox's memory from the memory
        # limit of its host cgroup, which is what enforces it (engine_memory_limit: no swap).
        match = re.search(r"MemTotal:\s+(\d+) kB", _read("/proc/meminfo"))
        if match is None:
            return False, "no memory cgroup, no MemTotal"
        total = int(match.group(1)) << 10
        return total <= MAX_MEMORY_BYTES, f"gVisor MemTotal {total >> 20} MiB"
    if found is None:
        return False, "no memory cgroup limit visible"
    path, val = found
    if val == "max" or int(val) > MAX_MEMORY_BYTES:
        return False, f"{path} = {val}"
    limit = int(val)
    detail = f"{limit >> 20} MiB"
    swap = _first_readable("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes",
                           "/sys/fs/cgroup/memory.swap.max")
    if swap is not None:
        p2, sw = swap
        if p2.endswith("memsw.limit_in_bytes") and int(sw) != limit:
            return False, f"memory {limit} but memory+swap {sw}: swap allowed"
        if p2.endswith("swap.max") and sw != "0":
            return False, f"memory.swap.max = {sw}"
        detail += ", no swap"
    return True, detail


def probe_pids_limit() -> ProbeResult:
    found = _first_readable("/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max")
    if found is None and _GVISOR:
        # gVisor's kernel counts RLIMIT_NPROC per sandbox, threads included: the per-container
        # process cap there (fork_limit tests it); the host pids cgroup bounds its own threads.
        import resource
        hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        ok = hard != resource.RLIM_INFINITY and hard <= MAX_PIDS
        return ok, f"gVisor RLIMIT_NPROC = {hard}"
    if found is None:
        return False, "no pids cgroup limit visible"
    path, val = found
    if val == "max" or int(val) > MAX_PIDS:
        return False, f"{path} = {val}"
    return True, f"pids.max = {val}"


def probe_cpu_limit() -> ProbeResult:
    found = _first_readable("/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
                            "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us",
                            "/sys/fs/cgroup/cpu.max")
    if found is None and _GVISOR:  # nothing of the quota is visible inside gVisor (2022)
        return True, "gVisor: not observable inside; checked from the host (engine_cpu_limit)"
    if found is None:
        return False, "no cpu cgroup visible"
    path, val = found
    quota = val.split()[0]
    if quota in ("max", "-1"):
        return False, f"{path} = {val} (no CPU quota)"
    return True, f"{path} = {val}"


def probe_rlimits() -> ProbeResult:
    import resource
    bad, got = [], []
    for label, res, bound in (("FSIZE", resource.RLIMIT_FSIZE, MAX_FSIZE),
                              ("NOFILE", resource.RLIMIT_NOFILE, MAX_NOFILE),
                              ("NPROC", resource.RLIMIT_NPROC, MAX_NPROC),
                              ("CPU", resource.RLIMIT_CPU, 7 * 24 * 3600),
                              ("CORE", resource.RLIMIT_CORE, 0)):
        soft, hard = resource.getrlimit(res)
        got.append(f"{label}={soft}/{hard}")
        if hard == resource.RLIM_INFINITY or hard > bound:
            bad.append(f"{label} hard limit {hard}")
    if bad:
        return False, "; ".join(bad) + " (" + ", ".join(got) + ")"
    return True, ", ".join(got)


# --------------------------------------------------------------------------------------------

PROBES: list[tuple[str, Callable[[], ProbeResult]]] = [
    # order matters: forking probes run before the DNS probe starts a thread
    ("fork_limit", probe_fork_limit),
    ("uid", probe_uid),
    ("setuid", probe_setuid),
    ("capabilities", probe_capabilities),
    ("no_new_privs", probe_no_new_privs),
    ("seccomp", probe_seccomp),
    ("setuid_binaries", probe_setuid_binaries),
    ("mount", probe_mount),
    ("unshare", probe_unshare),
    ("keyctl", probe_keyctl),
    ("ptrace", probe_ptrace),
    ("signal_other_processes", probe_signal_other_processes),
    ("sigio_to_other_processes", probe_sigio_to_other_processes),
    ("ptrace_other_processes", probe_ptrace_other_processes),
    ("proc_other_processes", probe_proc_other_processes),
    ("proc_sysrq_trigger", probe_proc_sysrq_trigger),
    ("proc_sys_write", probe_proc_sys_write),
    ("proc_oom_score_adj", probe_proc_oom_score_adj),
    ("proc_masked", probe_proc_masked),
    ("sys_write", probe_sys_write),
    ("write_outside_tmp", probe_write_outside_tmp),
    ("writable_mounts_noexec", probe_writable_mounts_noexec),
    ("tmp_noexec", probe_tmp_noexec),
    ("tmp_bounded", probe_tmp_bounded),
    ("host_mounts", probe_host_mounts),
    ("host_files", probe_host_files),
    ("pid_namespace", probe_pid_namespace),
    ("devices", probe_devices),
    ("docker_socket", probe_docker_socket),
    ("env_empty", probe_env_empty),
    ("memory_limit", probe_memory_limit),
    ("pids_limit", probe_pids_limit),
    ("cpu_limit", probe_cpu_limit),
    ("rlimits", probe_rlimits),
    ("host_loopback", probe_host_loopback),
    ("net_interfaces", probe_net_interfaces),
    ("net_egress_ipv4", probe_net_egress_ipv4),
    ("net_udp_egress", probe_net_udp_egress),
    ("net_host_gateway", probe_net_host_gateway),
    ("net_ipv6", probe_net_ipv6),
    ("net_raw_socket", probe_net_raw_socket),
    ("net_netlink", probe_net_netlink),
    ("net_dns", probe_net_dns),
]
PROBE_NAMES = [name for name, _ in PROBES]


def run_probes() -> dict[str, ProbeReport]:
    """Run every probe; {name: {"confined": bool, "detail": str}}. Never raises."""
    out: dict[str, ProbeReport] = {}
    me = os.getpid()
    for name, fn in PROBES:
        t0 = time.monotonic()
        try:
            confined, detail = fn()
        except BaseException as exc:
            if os.getpid() != me:  # a forked helper escaped its branch: never return twice
                os._exit(0)
            confined, detail = False, f"probe error {type(exc).__name__}: {exc}"
        out[name] = {"confined": bool(confined),
                     "detail": f"{detail} [{(time.monotonic() - t0) * 1000:.0f} ms]"}
    return out


if __name__ == "__main__":
    t0 = time.monotonic()
    results = run_probes()
    failed = [n for n, r in results.items() if not r["confined"]]
    print(json.dumps({"ok": not failed, "failed": failed, "probes": results,
                      "seconds": round(time.monotonic() - t0, 3)}, indent=1))
    sys.exit(1 if failed else 0)
