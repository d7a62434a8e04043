"""Probes of the filesystem: a read-only root, a bounded noexec /tmp, no host files, mounts,
devices or Docker socket, /proc and /sys closed to writes."""

from __future__ import annotations

import errno
import os
import re
import socket
import stat
import sys

from .common import (
    _DENIED,
    _GVISOR,
    _RO_OR_DENIED,
    MAX_TMP_BYTES,
    ProbeResult,
    _en,
    _in_fork,
    _mounts,
    _open_for_write,
    _read,
)

__all__ = [
    "probe_devices",
    "probe_docker_socket",
    "probe_host_files",
    "probe_host_mounts",
    "probe_proc_masked",
    "probe_proc_oom_score_adj",
    "probe_proc_sys_write",
    "probe_proc_sysrq_trigger",
    "probe_sys_write",
    "probe_tmp_bounded",
    "probe_tmp_noexec",
    "probe_writable_mounts_noexec",
    "probe_write_outside_tmp",
]



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
