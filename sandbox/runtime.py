"""Sandbox: a pool of warm, hardened containers and the fast call path into them.

Each container runs the fork-server runner; each call is one JSON line each way and one fresh
child process inside. Timeouts are enforced in the runner and again here: a runner that does not
answer within the timeout plus a grace period is killed with its container and replaced, and so
is any container whose call timed out, ran out of memory, flooded output or broke the protocol.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import jsonschema
from docker.models.containers import Container

from . import container as _container
from .errors import InvalidArguments, InvalidSpec, SandboxBroken, SandboxError, SelftestFailed
from .image import cache_dir, find_image
from .limits import DEFAULT_LIMITS, SANDBOX_UID, Limits
from .results import CallResult, ErrorInfo, RunResult
from .spec import FunctionSpec

if TYPE_CHECKING:
    from .vet import VetReport

log = logging.getLogger("fnforge.sandbox")

class _NoAnswer(SandboxBroken):
    """The runner did not answer in time: the call timed out from the host's side."""


_MISBEHAVIOUR = {"Timeout", "MemoryLimit", "OutputLimit", "ProtocolError", "ResourceLimit"}
_START_TIMEOUT_S = 90.0
_MAX_TIMEOUT_S = 600.0


def runner_policy() -> dict[str, Any]:
    """The policy data the runner enforces (import allowlist, audit rules): sandbox/policy.py."""
    from .policy import policy_for_runner

    return policy_for_runner()


class _Worker:
    """One warm container and its protocol stream. Used by one call at a time."""

    _ids = itertools.count(1)

    def __init__(self, client: docker.DockerClient, options: dict[str, Any], limits: Limits,
                 policy: dict[str, Any]) -> None:
        self.limits = limits
        self.calls = 0
        self.container: Container = client.containers.create(**options)
        try:
            self.stream = _container.Stream(client, self.container, limits.max_response)
            self.container.start()
            self.request({"op": "configure", "policy": policy, "limits": limits.to_dict()},
                         _START_TIMEOUT_S)
        except BaseException:
            self.kill()
            raise

    def request(self, message: dict[str, Any], wait_s: float) -> dict[str, Any]:
        message = {"id": next(self._ids), **message}
        self.stream.send(message)
        try:
            response = self.stream.receive(time.monotonic() + wait_s)
        except TimeoutError:
            raise _NoAnswer(f"runner gave no answer within {wait_s:g} s") from None
        if response.get("id") != message["id"]:
            raise SandboxBroken("runner answered out of turn")
        if message["op"] == "configure" and not response.get("ok"):
            raise SandboxBroken(f"runner refused its configuration: {response.get('error')}")
        self.calls += 1
        return response

    def kill(self) -> None:
        stream = getattr(self, "stream", None)
        if stream is not None:
            stream.close()
        _container.remove(self.container)


class Sandbox:
    """A pool of warm hardened containers. Use as a context manager; thread-safe.

    `Sandbox()` refuses to run code until the confinement self-test has passed for this image,
    engine and option set (the verdict is cached on disk, so it runs once).
    """

    def __init__(self, pool_size: int = 2, limits: Limits = DEFAULT_LIMITS,
                 runtime: str | None = "auto") -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.pool_size = pool_size
        self.limits = limits
        self._runtime_choice = runtime
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._workers: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = True
        self._start_error: BaseException | None = None
        self._replacer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fnforge-replace")
        self.image_id = ""

    # -- life cycle -------------------------------------------------------------------------------
    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, verify: bool = True) -> None:
        """Start the pool. verify=False is for `python -m sandbox selftest` alone: it reports."""
        self._client = _container.connect()
        image = find_image(self._client)
        self.image_id = str(image.id)
        runtime = (_container.default_runtime(self._client) if self._runtime_choice == "auto"
                   else self._runtime_choice)
        self._options = _container.container_options(self.image_id, self.limits, runtime)
        self._policy = runner_policy()
        self._closed = False
        atexit.register(self.close)
        try:
            with ThreadPoolExecutor(max_workers=self.pool_size) as starter:
                workers = list(starter.map(lambda _: self._new_worker(), range(self.pool_size)))
            for worker in workers:
                self._idle.put(worker)
            if verify:
                self._ensure_selftest()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Remove every container of this sandbox before returning; safe twice, and on Ctrl-C."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        # Replacements under way finish first; they see the sandbox closed and remove theirs.
        self._replacer.shutdown(wait=True)
        with self._lock:
            workers = list(self._workers)
            self._workers.clear()
        for worker in workers:
            try:
                worker.kill()
            except Exception as exc:  # keep removing the others
                log.warning("could not remove container: %s", exc)
        while not self._idle.empty():
            self._idle.get_nowait()
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()
        atexit.unregister(self.close)

    def _new_worker(self) -> _Worker:
        worker = _Worker(self._client, self._options, self.limits, self._policy)
        with self._lock:
            if self._closed:
                worker.kill()
                raise SandboxError("sandbox closed")
            self._workers.add(worker)
        return worker

    def _replace(self, worker: _Worker) -> None:
        with self._lock:
            self._workers.discard(worker)
            closed = self._closed
        worker.kill()
        if closed:
            return
        try:
            self._idle.put(self._new_worker())
        except BaseException as exc:
            if not self._closed:
                log.error("could not replace a sandbox container: %s", exc)
                self._start_error = exc

    def _acquire(self) -> _Worker:
        deadline = time.monotonic() + _START_TIMEOUT_S * 2
        while True:
            if self._closed:
                raise SandboxError("the sandbox is closed: use it inside `with Sandbox() as sb:`")
            try:
                return self._idle.get(timeout=0.5)
            except queue.Empty:
                if self._start_error is not None and not self._workers:
                    raise SandboxBroken(f"no sandbox container could be started: "
                                        f"{self._start_error}") from None
                if time.monotonic() > deadline:
                    raise SandboxBroken("no sandbox container became free in time") from None

    def _release(self, worker: _Worker, healthy: bool) -> None:
        """Back to the pool at once: the runner cleans up while the next call goes elsewhere."""
        if healthy and worker.calls < self.limits.calls_per_container and not self._closed:
            self._idle.put(worker)
            return
        try:
            self._replacer.submit(self._replace, worker)
        except RuntimeError:  # closing: no replacement, just removal
            with self._lock:
                self._workers.discard(worker)
            worker.kill()

    def _request(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        worker = self._acquire()
        healthy = False
        try:
            response = worker.request(message, timeout + self.limits.host_grace_s)
            error = response.get("error") or {}
            healthy = error.get("type") not in _MISBEHAVIOUR
            return response
        except SandboxBroken as exc:
            # The runner did not answer properly: the container is killed and replaced.
            oom = self._oom_killed(worker)
            kind = ("MemoryLimit" if oom else "Timeout" if isinstance(exc, _NoAnswer)
                    else "Crashed")
            return {"ok": False, "timed_out": kind == "Timeout", "oom_killed": oom,
                    "error": {"type": kind, "message": f"container killed: {exc}"},
                    "exit_code": -9, "duration_ms": (timeout + self.limits.host_grace_s) * 1000}
        finally:
            self._release(worker, healthy)

    @staticmethod
    def _oom_killed(worker: _Worker) -> bool:
        try:
            worker.container.reload()
            return bool(worker.container.attrs["State"].get("OOMKilled"))
        except Exception:
            return False

    # -- self-test --------------------------------------------------------------------------------
    def _selftest_marker(self) -> Path:
        engine = self._client.info().get("ID", "")
        options = {k: v for k, v in self._options.items() if k != "labels"}  # labels name our pid
        key = json.dumps([self.image_id, engine, options, self._policy], sort_keys=True,
                         default=repr)
        return cache_dir() / "selftest" / (hashlib.sha256(key.encode()).hexdigest() + ".json")

    def _ensure_selftest(self) -> None:
        marker = self._selftest_marker()
        if marker.exists():
            return
        report = self.selftest()
        failed = [name for name, probe in report.items() if not probe["confined"]]
        if failed:
            raise SelftestFailed(failed)
        self.record_selftest(report)

    def record_selftest(self, report: dict[str, dict[str, Any]]) -> None:
        """Remember a passing self-test for this image, engine and option set."""
        if any(not probe["confined"] for probe in report.values()):
            raise SelftestFailed([n for n, p in report.items() if not p["confined"]])
        marker = self._selftest_marker()
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(report, indent=1, sort_keys=True))

    def selftest(self) -> dict[str, dict[str, Any]]:
        """Run every confinement probe now: in a real call child, and on the container's config."""
        report = self._host_checks()
        for heavy in (False, True):  # children of the runner, and of the sympy/numpy zygote
            kind = "zygote child" if heavy else "runner child"
            response = self._request({"op": "probe", "heavy": heavy, "timeout": 20.0}, 20.0)
            if not response.get("ok") or not isinstance(response.get("value"), dict):
                error = response.get("error") or {}
                report[f"probes_ran_in_{kind.replace(' ', '_')}"] = {
                    "confined": False, "detail": f"probe run failed: {error.get('message')}"}
                continue
            for name, probe in response["value"].items():
                seen = report.get(name)
                if seen is None or (seen["confined"] and not probe["confined"]):
                    report[name] = {"confined": bool(probe["confined"]),
                                    "detail": f"{kind}: {probe['detail']}"}
        return report

    def _host_checks(self) -> dict[str, dict[str, Any]]:
        worker = self._acquire()
        try:
            worker.container.reload()
            attrs = worker.container.attrs
        finally:
            self._release(worker, True)
        host, config = attrs["HostConfig"], attrs["Config"]
        env = [e for e in (config.get("Env") or []) if not e.startswith("PATH=")]
        checks = {
            "engine_network_none": host.get("NetworkMode") == "none",
            "engine_read_only_root": host.get("ReadonlyRootfs") is True,
            "engine_caps_dropped": "ALL" in (host.get("CapDrop") or []) and not host.get("CapAdd"),
            "engine_not_privileged": host.get("Privileged") is False,
            "engine_no_new_privileges": "no-new-privileges" in (host.get("SecurityOpt") or []),
            "engine_no_host_mounts": not host.get("Binds") and not attrs.get("Mounts"),
            "engine_pids_limit": host.get("PidsLimit") == self.limits.pids,
            "engine_memory_limit": host.get("Memory") == host.get("MemorySwap") > 0,
            "engine_ipc_none": host.get("IpcMode") == "none",
            "engine_user": config.get("User") == f"{SANDBOX_UID}:{SANDBOX_UID}",
            "engine_empty_env": not env,
            "engine_no_devices": not host.get("Devices"),
        }
        return {name: {"confined": ok, "detail": "container config as the engine reports it"}
                for name, ok in checks.items()}

    # -- calls ------------------------------------------------------------------------------------
    def vet(self, spec: FunctionSpec, **options: Any) -> VetReport:
        """Vet a proposed function: shape, static policy, RestrictedPython, tests, smoke, audit."""
        from .vet import vet

        return vet(self, spec, **options)

    def call(self, spec: FunctionSpec, args: Mapping[str, Any] | None = None, *,
             timeout: float | None = None, restricted: bool = True,
             audit: bool = True) -> CallResult:
        """Run one function with keyword arguments in a fresh process in a container."""
        if not isinstance(spec, FunctionSpec):
            raise InvalidSpec(f"expected a FunctionSpec, got {type(spec).__name__}")
        args = dict(args or {})
        _check_args(spec, args)
        seconds = self._timeout(timeout)
        message = {"op": "call", "function": {"name": spec.name, "code": spec.code},
                   "args": args, "timeout": seconds, "restricted": restricted, "audit": audit}
        self._check_size(message)
        response = self._request(message, seconds)
        return CallResult(**self._fields(response))

    def run(self, code: str, functions: Iterable[FunctionSpec] = (), *,
            timeout: float | None = None, audit: bool = True) -> RunResult:
        """Run a code block as an agent's executor would, with `functions` callable by name."""
        if not isinstance(code, str):
            raise InvalidArguments("code must be a string")
        specs = list(functions)
        for spec in specs:
            if not isinstance(spec, FunctionSpec):
                raise InvalidSpec(f"expected FunctionSpec objects, got {type(spec).__name__}")
        seconds = self._timeout(timeout)
        message = {"op": "run", "code": code, "timeout": seconds, "audit": audit,
                   "functions": [{"name": s.name, "code": s.code} for s in specs]}
        self._check_size(message)
        response = self._request(message, seconds)
        return RunResult(**self._fields(response), exit_code=int(response.get("exit_code", 1)))

    def _timeout(self, timeout: float | None) -> float:
        seconds = self.limits.timeout_s if timeout is None else float(timeout)
        if not 0 < seconds <= _MAX_TIMEOUT_S:
            raise InvalidArguments(f"timeout must be between 0 and {_MAX_TIMEOUT_S:g} seconds")
        return seconds

    def _check_size(self, message: dict[str, Any]) -> None:
        size = len(json.dumps(message))
        if size > self.limits.max_request:
            raise InvalidArguments(f"request is {size} bytes, over the limit of "
                                   f"{self.limits.max_request}: send smaller code or arguments")

    def _fields(self, response: dict[str, Any]) -> dict[str, Any]:
        error = response.get("error")
        return {
            "ok": bool(response.get("ok")),
            "value": response.get("value"),
            "stdout": str(response.get("stdout", "")),
            "stderr": str(response.get("stderr", "")),
            "stdout_truncated": bool(response.get("stdout_truncated")),
            "stderr_truncated": bool(response.get("stderr_truncated")),
            "error": ErrorInfo(type=str(error.get("type", "Error")),
                               message=str(error.get("message", "")),
                               traceback=str(error.get("traceback", ""))) if error else None,
            "timed_out": bool(response.get("timed_out")),
            "oom_killed": bool(response.get("oom_killed")),
            "duration_ms": float(response.get("duration_ms", 0.0)),
            "image_id": self.image_id,
            "audit": list(response.get("audit") or []),
        }


@functools.lru_cache(maxsize=512)
def _validator(schema_json: str) -> jsonschema.Draft202012Validator:
    """Checked once per distinct schema: building a validator costs more than a whole call."""
    schema = json.loads(schema_json)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _check_args(spec: FunctionSpec, args: dict[str, Any]) -> None:
    try:
        json.dumps(args, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArguments(f"arguments for {spec.name} are not JSON-serialisable: {exc}"
                               " (pass numbers, strings, booleans, null, lists and objects)"
                               ) from None
    try:
        validator = _validator(json.dumps(spec.parameters, sort_keys=True))
    except (TypeError, ValueError):
        raise InvalidSpec(f"parameters of {spec.name} is not JSON") from None
    except jsonschema.SchemaError as exc:
        raise InvalidSpec(f"parameters of {spec.name} is not a valid JSON schema: "
                          f"{exc.message}") from None
    errors = sorted(validator.iter_errors(args), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "arguments"
        raise InvalidArguments(f"arguments do not match the parameters of {spec.name}: "
                               f"{where}: {errors[0].message}")
