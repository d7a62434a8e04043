"""Hardened containers: the one place that builds container options, plus the attached stream.

Every option below is on by default and named where it is applied. The runner inside adds its own
per-call confinement (sandbox/runner/server.py, sandbox/runner/seccomp.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import struct
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container
from docker.types import LogConfig, Ulimit

from .errors import EngineUnavailable, SandboxBroken, engine_errors
from .image import LABEL
from .limits import SANDBOX_UID, Limits
from .runner.protocol import loads_bounded
from .text import container_text

__all__ = ["OWNER_LABEL", "Stream", "check_runtime", "connect", "container_options", "gc",
           "pid_alive", "remove"]

OWNER_LABEL = "fnforge.owner"  # host pid of the process that owns the container


GVISOR_HOST_TASKS_PER_PROCESS = 64
"""Under runsc the pids cgroup counts gVisor's own host threads (its kernel, its file server, a
ptrace stub per address space): measured 44 idle, 58 configured, 920-1023 during the self-test;
at the limit gVisor panics. Inside gVisor the per-container process cap is RLIMIT_NPROC, which
its kernel counts per sandbox (threads included)."""


def container_options(image: str, limits: Limits, runtime: str | None = None) -> dict[str, Any]:
    """Keyword arguments for docker-py's containers.create: every hardening knob, nothing else."""
    mb = 1024 * 1024
    gvisor = runtime == "runsc"
    pids = limits.pids * GVISOR_HOST_TASKS_PER_PROCESS if gvisor else limits.pids
    nproc = limits.pids if gvisor else limits.nproc
    options: dict[str, Any] = dict(
        image=image,
        labels={LABEL: "container", OWNER_LABEL: str(os.getpid())},
        stdin_open=True,  # the protocol stream; the runner's only channel
        # Nothing outlives its owner, however the owner dies: its attach stream closes with it
        # (the kernel closes a dead process's sockets), the engine then closes the runner's
        # stdin (StdinOnce: docker-py sets it for stdin_open without detach), the runner leaves
        # at end of input, and the engine removes the exited container (auto_remove). How a
        # container ended is read from the engine's events once it is gone (runtime.py).
        detach=False,
        auto_remove=True,
        network_mode="none",  # no interface but loopback
        dns=["127.0.0.1"],  # resolv.conf names no host resolver (there is no network anyway)
        read_only=True,  # read-only root filesystem
        tmpfs={
            # the one writable place: bounded in bytes and inodes, emptied after every call;
            # owned by the sandbox user so the runner can put back its mode and times
            "/tmp": f"rw,noexec,nosuid,nodev,noatime,size={limits.tmpfs_mb}m,"
                    f"nr_inodes={limits.tmp_inodes},mode=1777,uid={SANDBOX_UID},"
                    f"gid={SANDBOX_UID}",
            # replaces Docker's mqueue mount: no message queue can carry state across calls
            "/dev/mqueue": "ro,noexec,nosuid,nodev,size=4k",
        },
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=pids,
        mem_limit=limits.memory_mb * mb,
        memswap_limit=limits.memory_mb * mb,  # equal: no swap
        nano_cpus=int(limits.cpus * 1e9),
        ulimits=[
            Ulimit(name="nofile", soft=limits.nofile, hard=limits.nofile),
            Ulimit(name="nproc", soft=nproc, hard=nproc),
            Ulimit(name="fsize", soft=limits.fsize_mb * mb, hard=limits.fsize_mb * mb),
            Ulimit(name="cpu", soft=limits.container_cpu_s, hard=limits.container_cpu_s),
            Ulimit(name="core", soft=0, hard=0),
        ],
        user=f"{SANDBOX_UID}:{SANDBOX_UID}",
        ipc_mode="none",
        # The runner is the init (pid 1): it reaps every orphan and cannot be signalled from inside.
        # docker-init is not used: as pid 1 it would hold the protocol stream in a process the
        # code under test can reach through /proc/1/fd and /proc/1/mem (same uid, dumpable).
        init=False,
        environment={},  # nothing from the host, ever
        log_config=LogConfig(type="none"),
        hostname="sandbox",
        working_dir="/tmp",
        privileged=False,
        mounts=[],  # no host path, no Docker socket
        devices=[],
    )
    if runtime:
        options["runtime"] = runtime  # runsc (gVisor), only when the configuration asks for it
    return options


def connect() -> docker.DockerClient:
    """A client for the engine at DOCKER_HOST (or the default socket), or a clear error."""
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:
        raise EngineUnavailable(f"Docker engine not reachable at {where}: start it or set "
                                f"DOCKER_HOST ({type(exc).__name__})") from None
    return client


def check_runtime(client: docker.DockerClient, runtime: str | None) -> None:
    """A runtime the configuration names must be registered with the engine."""
    if runtime is None:
        return
    with engine_errors("list its runtimes"):
        runtimes = client.info().get("Runtimes", {}) or {}
    if runtime not in runtimes:
        hint = " (run images/setup-gvisor.sh as root)" if runtime == "runsc" else ""
        raise EngineUnavailable(f"the Docker engine has no {runtime!r} runtime{hint}; it has: "
                                f"{', '.join(sorted(runtimes)) or 'none'}")


@engine_errors("remove a sandbox container")
def remove(container: Container) -> None:
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if "already in progress" not in str(exc):
            raise


@engine_errors("remove containers of dead fnforge processes")
def gc(client: docker.DockerClient, everything: bool = False) -> list[str]:
    """Remove fnforge containers whose owner process is gone (all of them with everything)."""
    removed = []
    # one list call with the labels in it: containers other processes remove meanwhile are fine
    for summary in client.api.containers(all=True, filters={"label": f"{LABEL}=container"}):
        owner = (summary.get("Labels") or {}).get(OWNER_LABEL, "")
        if not everything and owner.isdigit() and pid_alive(int(owner)):
            continue
        try:
            client.api.remove_container(summary["Id"], force=True)
        except docker.errors.NotFound:
            continue
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                raise
        removed.append(summary["Id"][:12])
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a host process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class Stream:
    """The runner's stdin/stdout over Docker's attach API: JSON lines, bounded, with deadlines.

    Docker multiplexes stdout and stderr in frames of an 8-byte header (stream, 0, 0, 0, size).
    """

    def __init__(self, client: docker.DockerClient, container: Container, max_line: int):
        params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        raw = client.api.attach_socket(container.id, params=params)
        self._sock: socket.socket = getattr(raw, "_sock", raw)
        self._sock.setblocking(True)
        self._pending = b""  # bytes of the current frame stream not yet parsed
        self._stdout = b""
        self.stderr = b""  # the runner's own stderr: diagnostics only, bounded
        self._max_line = max_line

    def send(self, message: dict[str, Any]) -> None:
        try:
            self._sock.sendall((json.dumps(message, allow_nan=False) + "\n").encode())
        except OSError as exc:
            raise SandboxBroken(f"the container's stream is closed ({exc})") from None

    def receive(self, deadline: float) -> dict[str, Any]:
        """The next JSON line, or SandboxBroken on timeout, EOF, overflow or garbage. What has
        already arrived is read even when the deadline has passed (once: a deadline of now
        asks only for what is there)."""
        first = True
        while b"\n" not in self._stdout:
            if len(self._stdout) > self._max_line:
                raise SandboxBroken("runner response over the size limit")
            remaining = deadline - time.monotonic()
            if remaining <= 0 and not first:
                raise TimeoutError("no response from the runner in time")
            first = False
            try:
                ready, _, _ = select.select([self._sock], [], [], max(remaining, 0.0))
                chunk = self._sock.recv(1 << 16) if ready else None
            except (OSError, ValueError) as exc:  # reset, or closed under us
                raise SandboxBroken(f"the container's stream broke ({exc})") from None
            if chunk is None:
                continue
            if not chunk:
                raise SandboxBroken("the container closed its stream" + self._stderr_tail())
            self._pending += chunk
            self._parse_frames()
        line, self._stdout = self._stdout.split(b"\n", 1)
        try:
            message = loads_bounded(line, self._max_line)
        except ValueError as exc:
            raise SandboxBroken(f"the runner sent a line that is not bounded JSON ({exc})"
                                ) from None
        if not isinstance(message, dict):
            raise SandboxBroken("the runner sent JSON that is not an object")
        return message

    def readable(self) -> bool:
        """Whether anything (bytes, or the end of the stream) waits unasked: an idle runner
        never speaks, so this means it has died or broken the protocol."""
        try:
            return bool(select.select([self._sock], [], [], 0)[0]) or bool(self._pending)
        except (OSError, ValueError):
            return True

    def _parse_frames(self) -> None:
        while len(self._pending) >= 8:
            kind, size = struct.unpack(">BxxxL", self._pending[:8])
            if len(self._pending) < 8 + size:
                return
            payload, self._pending = self._pending[8:8 + size], self._pending[8 + size:]
            if kind == 1:
                self._stdout += payload
            elif len(self.stderr) < 65536:
                self.stderr += payload

    def _stderr_tail(self) -> str:
        tail = container_text(self.stderr.decode("utf-8", "replace").strip()[-2000:], 2000)
        return f"; runner stderr: {tail}" if tail else ""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
