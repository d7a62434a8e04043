"""Resource limits: policy as plain data, applied in one place each (see container.py, runner)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["DEFAULT_LIMITS", "SANDBOX_UID", "Limits"]

SANDBOX_UID = 10001
"""The unprivileged user every container runs as (created in images/Dockerfile)."""


@dataclass(frozen=True)
class Limits:
    # Per container (docker options, container.py).
    memory_mb: int = 512  # mem_limit == memswap_limit: no swap
    cpus: float = 1.0  # nano_cpus
    pids: int = 64  # pids_limit: stops fork bombs inside the container
    tmpfs_mb: int = 64  # /tmp, noexec,nosuid,nodev
    tmp_inodes: int = 16384  # files and directories in /tmp: bounds the clean-up after a call
    nofile: int = 256  # ulimit nofile
    nproc: int = 4096  # ulimit nproc: counted per host uid across ALL containers, so it must
    # stay far above pool size x pids, or one container's fork bomb starves the others' forks;
    # pids (cgroup) is the per-container cap
    fsize_mb: int = 16  # ulimit fsize: one huge write stops here
    container_cpu_s: int = 3600  # ulimit cpu for the long-lived runner; calls get less
    # Per call (runner and host).
    timeout_s: float = 10.0  # wall clock of one call, enforced in the runner and from the host
    host_grace_s: float = 2.0  # the host kills the container this long after the timeout
    ready_wait_s: float = 10.0  # the runner's clean-up after a call (it says "ready"); past it
    # the container is replaced and the next request, never started, goes to another one
    output_cap: int = 64 * 1024  # bytes kept of stdout and of stderr each
    max_request: int = 1 << 20  # bytes of one request line (code + args)
    max_value: int = 1 << 20  # bytes of a result's JSON value
    max_response: int = 4 << 20  # bytes of a call's report, and of one answer from the runner
    calls_per_container: int = 5000  # recycled after this many calls

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_LIMITS = Limits()
