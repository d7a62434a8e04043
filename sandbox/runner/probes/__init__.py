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

The probes are grouped by what they probe: ``filesystem``, ``network``, ``privileges``,
``processes`` (the runner, the zygotes and the spares), ``resources``, ``state`` (what a call
inherits or could leave besides files: random generators, /tmp's inode flags); ``common`` holds
what they share. A call process imports this package as ``probes`` (the runner's directory is on
its path).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from .common import ProbeReport, ProbeResult
from .filesystem import (
    probe_devices,
    probe_docker_socket,
    probe_host_files,
    probe_host_mounts,
    probe_proc_masked,
    probe_proc_oom_score_adj,
    probe_proc_sys_write,
    probe_proc_sysrq_trigger,
    probe_sys_write,
    probe_tmp_bounded,
    probe_tmp_noexec,
    probe_writable_mounts_noexec,
    probe_write_outside_tmp,
)
from .network import (
    probe_host_loopback,
    probe_net_dns,
    probe_net_egress_ipv4,
    probe_net_host_gateway,
    probe_net_interfaces,
    probe_net_ipv6,
    probe_net_netlink,
    probe_net_raw_socket,
    probe_net_udp_egress,
)
from .privileges import (
    probe_capabilities,
    probe_env_empty,
    probe_keyctl,
    probe_mount,
    probe_no_new_privs,
    probe_ptrace,
    probe_seccomp,
    probe_setuid,
    probe_setuid_binaries,
    probe_uid,
    probe_unshare,
)
from .processes import (
    probe_fork_limit,
    probe_pid_namespace,
    probe_proc_other_processes,
    probe_ptrace_other_processes,
    probe_sigio_to_other_processes,
    probe_signal_other_processes,
)
from .resources import (
    probe_cpu_limit,
    probe_memory_limit,
    probe_pids_limit,
    probe_rlimits,
)
from .state import probe_random_reseeded, probe_tmp_inode_flags

__all__ = ["PROBES", "PROBE_NAMES", "ProbeReport", "run_probes"]

PROBES: list[tuple[str, Callable[[], ProbeResult]]] = [
    # order matters: the generators are looked at before any probe could draw from one, and
    # forking probes run before the DNS probe starts a thread
    ("random_reseeded", probe_random_reseeded),
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
    ("tmp_inode_flags", probe_tmp_inode_flags),
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
