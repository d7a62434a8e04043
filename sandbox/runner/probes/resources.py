"""Probes of resource limits: memory, pids, CPU and the rlimits, as the process sees them."""

from __future__ import annotations

import re

from .common import (
    _GVISOR,
    MAX_FSIZE,
    MAX_MEMORY_BYTES,
    MAX_NOFILE,
    MAX_NPROC,
    MAX_PIDS,
    ProbeResult,
    _read,
)

__all__ = ["probe_cpu_limit", "probe_memory_limit", "probe_pids_limit", "probe_rlimits"]



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
