"""Probes of the network: no route out, no DNS, no host, no raw or netlink sockets."""

from __future__ import annotations

import errno
import select
import socket
import struct
import threading
from collections.abc import Sequence

from .common import (
    _DENIED,
    _NO_ROUTE,
    CONNECT_WAIT_S,
    DNS_WAIT_S,
    ProbeResult,
    _en,
    _read,
)

__all__ = [
    "probe_host_loopback",
    "probe_net_dns",
    "probe_net_egress_ipv4",
    "probe_net_host_gateway",
    "probe_net_interfaces",
    "probe_net_ipv6",
    "probe_net_netlink",
    "probe_net_raw_socket",
    "probe_net_udp_egress",
]



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
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:  # the call's kernel filter allows AF_UNIX sockets only
            if exc.errno not in _NO_ROUTE:
                bad.append(f"socket(AF_INET): {_en(exc.errno)}")
            break
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
