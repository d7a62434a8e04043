"""Sandbox: a pool of warm, hardened containers and the fast call path into them.

Each container runs the runner (sandbox/runner/server.py); each call is one JSON line each way and
one fresh process inside. The host treats every byte a container sends as hostile: an answer is
parsed with size and nesting limits and checked field by field (`_checked`), and a runner that
answers late, malformed or not at all is killed with its container and replaced; the call gets a
result saying so, never an exception. Timeouts are enforced by the runner and again here.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import itertools
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from . import container as _container
from .errors import (
    EngineUnavailable,
    InvalidArguments,
    InvalidSpec,
    SandboxBroken,
    SandboxError,
    SelftestFailed,
    engine_errors,
)
from .image import find_image
from .limits import DEFAULT_LIMITS, SANDBOX_UID, Limits
from .paths import cache_dir
from .policy import policy_for_runner
from .results import AuditEvent, CallResult, ErrorInfo, ErrorKind, RunResult
from .runner.protocol import checked_calls
from .schema import validate_arguments
from .spec import FunctionSpec
from .text import container_text, container_value
from .vetting import VerdictCache, VetReport, vet

__all__ = ["Sandbox"]

log = logging.getLogger("fnforge.sandbox")

_REPLACE_AFTER = {ErrorKind.MEMORY_LIMIT, ErrorKind.RESOURCE_LIMIT}
"""Kinds after which the container is replaced: the OOM killer may have hit the runner's own
processes, and a full pids table means processes escaped the clean-up."""
_START_TIMEOUT_S = 90.0
ENGINE_WAIT_S = 300.0
"""How long the pool waits for an engine that stopped answering (restarting, overloaded) before
calls fail with EngineUnavailable; replacements are retried with backoff meanwhile."""
_BACKOFF_S = (0.5, 10.0)  # first and longest pause between attempts to start a container
_MAX_TIMEOUT_S = 600.0
_MAX_AUDIT = 100
_RETRIES_FOR_RETIRED = 3
_VERIFY_ATTEMPTS = 3  # self-test runs after an outage before calls fail EngineUnavailable


class _NoAnswer(SandboxBroken):
    """The runner did not answer in time: the call timed out from the host's side."""


class _NotStarted(SandboxBroken):
    """The request was never sent: the runner did not say it was ready for it (it died while
    idle, or is still stuck cleaning up after its last call). It goes to another container."""


class _NotReady(_NotStarted):
    """The runner has not said it is ready (yet)."""


class _Retired(_NotStarted):
    """The runner could not restore a clean state after its last call, or could not start a
    process for the request, and has exited without running it: it goes to another container."""


class _Worker:
    """One warm container and its protocol stream. Used by one call at a time."""

    _ids = itertools.count(1)

    def __init__(self, client: docker.DockerClient, options: dict[str, Any], limits: Limits,
                 policy: dict[str, Any]) -> None:
        self.limits = limits
        self.calls = 0
        self.client = client
        self.created = time.time()
        self.unready = False  # an answer came; the runner's "ready" (or "retire") has not yet
        with engine_errors("create a sandbox container", SandboxBroken):
            self.container: Container = client.containers.create(**options)
        try:
            with engine_errors("start a sandbox container", SandboxBroken):
                self.stream = _container.Stream(client, self.container, limits.max_response)
                self.container.start()
            answer = self.request({"op": "configure", "policy": policy,
                                   "limits": limits.to_dict()}, _START_TIMEOUT_S)
            if answer.get("ok") is not True:
                raise SandboxBroken("the runner refused its configuration: "
                                    f"{container_text(str(answer.get('error')), 500)}")
        except BaseException:
            self.close_quietly()  # what failed is what the caller hears of, not the clean-up
            raise

    def request(self, message: dict[str, Any], wait_s: float) -> dict[str, Any]:
        """The runner's answer. The clock starts once the runner has said it is ready: its
        clean-up after the last call is never charged to this one."""
        self.settle(time.monotonic() + self.limits.ready_wait_s)
        message = {"id": next(self._ids), **message}
        try:
            self.stream.send(message)
        except SandboxBroken as exc:  # the stream is gone: nothing reached the runner
            raise _NotStarted(f"the request could not be sent ({exc})") from None
        try:
            response = self.stream.receive(time.monotonic() + wait_s)
        except TimeoutError:
            raise _NoAnswer(f"the runner gave no answer within {wait_s:g} s") from None
        if response.get("id") is None and "retire" in response:
            raise _Retired(container_text(str(response["retire"]), 500))
        if response.get("id") != message["id"]:
            raise SandboxBroken("the runner answered out of turn")
        self.unready = True
        self.calls += 1
        return response

    def settle(self, deadline: float) -> None:
        """Wait for the runner's "ready" after its last answer; _NotStarted (and so another
        container for the request) if it retires, dies, says anything else or is late."""
        if not self.unready:
            return
        try:
            message = self.stream.receive(deadline)
        except TimeoutError:
            raise _NotReady("the runner was not ready for the next request within "
                            f"{self.limits.ready_wait_s:g} s of its last answer") from None
        except SandboxBroken as exc:
            raise _NotStarted(str(exc)) from None
        if message.get("id") is None and "retire" in message:
            raise _Retired(container_text(str(message["retire"]), 500))
        if message != {"id": None, "ready": True}:
            raise _NotStarted("the runner said something else than ready between calls")
        self.unready = False

    def broken(self) -> bool:
        """Whether an idle runner is known dead or out of protocol (one still cleaning up is
        not: request() waits for it)."""
        if self.unready and self.stream.readable():
            try:
                self.settle(time.monotonic())
            except _NotReady:
                return False
            except _NotStarted:
                return True
        return not self.unready and self.stream.readable()

    def kill(self) -> None:
        stream = getattr(self, "stream", None)
        if stream is not None:
            stream.close()
        _container.remove(self.container)

    def close_quietly(self) -> bool:
        """Kill the container; False if the engine could not be asked (it is down)."""
        try:
            self.kill()
        except Exception as exc:
            log.warning("could not remove container %s: %s", self.container.short_id, exc)
            return False
        return True


class Sandbox:
    """A pool of warm hardened containers. Use as a context manager; thread-safe.

    `Sandbox()` refuses to run code until the confinement self-test has passed for this image,
    engine, runtime and option set (the verdict is cached on disk, so it runs once).
    `runtime="runsc"` runs every container under gVisor (registered with the engine by
    images/setup-gvisor.sh); the default is the engine's own (runc).

    When the engine stops answering (a restart, an overload), lost containers are replaced with
    backoff for up to `engine_wait_s`; calls wait meanwhile, and once the engine is back the
    self-test runs again (not from its cache) before any call is served. Past the limit, calls
    raise EngineUnavailable.
    """

    def __init__(self, pool_size: int = 2, limits: Limits = DEFAULT_LIMITS,
                 runtime: str | None = None, verdicts: VerdictCache | None = None,
                 engine_wait_s: float = ENGINE_WAIT_S) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.pool_size = pool_size
        self.engine_wait_s = engine_wait_s
        self.recoveries = 0  # engine outages the pool came back from (self-test re-run each time)
        self.limits = limits
        self.runtime = runtime
        self.verdicts = verdicts if verdicts is not None else VerdictCache()
        self.image_id = ""
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._workers: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = True
        self._start_error: BaseException | None = None
        self._replacing = 0  # replacements under way
        self._closing = threading.Event()  # wakes replacements waiting for the engine
        self._outage = False  # the engine stopped answering; re-verify before the next call
        self._verify_lock = threading.Lock()
        self._verifier: int | None = None  # the thread re-running the self-test
        self._refusal: SelftestFailed | None = None
        self._orphans: list[Container] = []  # containers the engine could not remove when asked
        self._replacer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fnforge-replace")

    # -- life cycle -------------------------------------------------------------------------------
    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, verify: bool = True) -> None:
        """Start the pool. verify=False is for `python -m sandbox selftest` alone: it reports."""
        self._client = _container.connect()
        _container.gc(self._client)  # containers of killed fnforge processes go first
        _container.check_runtime(self._client, self.runtime)
        self.image_id = str(find_image(self._client).id)
        self._options = _container.container_options(self.image_id, self.limits, self.runtime)
        self._policy = policy_for_runner()
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
        self._closing.set()
        self._replacer.shutdown(wait=True)  # replacements under way see the flag, remove theirs
        with self._lock:
            workers = list(self._workers)
            self._workers.clear()
        for worker in workers:
            worker.close_quietly()  # keep removing the others
        for orphan in self._orphans:
            with contextlib.suppress(Exception):
                _container.remove(orphan)
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
                worker.close_quietly()
                raise SandboxError("sandbox closed")
            self._workers.add(worker)
        return worker

    def _replace(self, worker: _Worker) -> None:
        """Remove a container and start its successor, waiting out an engine outage."""
        with self._lock:
            self._workers.discard(worker)
            self._replacing += 1
        try:
            self._discard(worker)
            pause, deadline = _BACKOFF_S[0], time.monotonic() + self.engine_wait_s
            while not self._closed:
                try:
                    self._idle.put(self._new_worker())
                    self._start_error = None
                    return
                except Exception as exc:
                    if self._closed:
                        return
                    if not self._engine_answers():
                        self._outage = True
                    if time.monotonic() + pause > deadline:
                        log.error("could not replace a sandbox container: %s", exc)
                        self._start_error = (EngineUnavailable(
                            f"the Docker engine has not answered for {self.engine_wait_s:g} s "
                            f"({type(exc).__name__}: {str(exc)[:300]}); start it, then try "
                            "again") if self._outage else exc)
                        return
                    log.warning("could not start a sandbox container (%s); retrying in %.1fs",
                                exc, pause)
                    self._closing.wait(pause)
                    pause = min(pause * 2, _BACKOFF_S[1])
        finally:
            with self._lock:
                self._replacing -= 1

    def _engine_answers(self) -> bool:
        try:
            self._client.ping()
        except Exception:
            return False
        return True

    def _acquire(self) -> _Worker:
        """An idle worker whose runner is alive: one found dead is replaced, never handed out.
        After an engine outage the self-test runs again before anything else is served."""
        deadline = time.monotonic() + _START_TIMEOUT_S * 2 + self.engine_wait_s
        while True:
            if self._closed:
                raise SandboxError("the sandbox is closed: use it inside `with Sandbox() as sb:`")
            if self._refusal is not None:
                raise self._refusal
            try:
                worker = self._idle.get(timeout=0.5)
            except queue.Empty:
                error = self._start_error
                if error is not None and not self._workers and not self._replacing:
                    if isinstance(error, SandboxError):
                        raise error from None
                    raise SandboxBroken(f"no sandbox container could be started: "
                                        f"{error}") from None
                if time.monotonic() > deadline:
                    raise SandboxBroken("no sandbox container became free in time") from None
                continue
            if worker.broken():
                end, cause = _container_end(worker)
                log.warning("a sandbox container's runner died while idle (%s); replacing it",
                            cause)
                if _engine_suspect(end, cause):
                    self._outage = True  # a restart while nothing ran: verify before serving
                self._release(worker, healthy=False)
                continue
            if self._verifier != threading.get_ident() and (
                    self._outage or self._verifier is not None):
                self._idle.put(worker)
                self._verify_after_outage()
                continue
            return worker

    def _verify_after_outage(self) -> None:
        """Run the whole self-test again (the engine may have come back changed); one thread
        runs it, the others wait for its verdict. Until a run completes without losing a
        container, no call is served; a probe that gets out refuses every later call."""
        with self._verify_lock:
            if not self._outage:
                return
            self._verifier = threading.get_ident()
            try:
                report = self._selftest_after_outage()
                failed = [name for name, probe in report.items() if not probe["confined"]]
                if failed:
                    self._refusal = SelftestFailed(failed)
                    raise self._refusal
                self.recoveries += 1
                log.warning("the Docker engine is back; the self-test passed again")
            finally:
                self._verifier = None

    def _selftest_after_outage(self) -> dict[str, dict[str, Any]]:
        last: BaseException | None = None
        for _ in range(_VERIFY_ATTEMPTS):
            self._remove_orphans()
            self._outage = False  # what the test itself loses to the engine sets it again
            try:
                report = self.selftest()
            except Exception as exc:  # the engine, still unsteady: try again
                last, report = exc, {}
            if report and not self._outage:
                return report
            self._outage = True
            self._closing.wait(_BACKOFF_S[0] * 4)
        raise EngineUnavailable(f"the Docker engine came back but the self-test could not "
                                f"complete ({type(last).__name__ if last else 'containers lost'}"
                                f": {str(last)[:300] if last else 'during the probes'}); no "
                                "call is served until it does")

    def _remove_orphans(self) -> None:
        with self._lock:
            orphans, self._orphans = self._orphans, []
        for orphan in orphans:
            try:
                _container.remove(orphan)
            except Exception:
                with self._lock:
                    self._orphans.append(orphan)  # the engine still refuses: try later

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
            self._discard(worker)

    def _discard(self, worker: _Worker) -> None:
        """Remove a worker's container; one the engine cannot be asked about now (it is down)
        is kept as an orphan and removed once the engine is back (or at close)."""
        if not worker.close_quietly():
            with self._lock:
                self._orphans.append(worker.container)

    def _request(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """The runner's checked answer, or a result saying why there is none. A request that
        never started (the runner retired, died while idle or was not ready for it) is sent
        again, to another container: a call that never started is never failed."""
        for attempt in range(_RETRIES_FOR_RETIRED + 1):
            worker = self._acquire()
            healthy = False
            wait = timeout + self.limits.host_grace_s
            started = time.monotonic()
            end, cause = "", ""
            try:
                answer = _checked(worker.request(message, wait), message["op"], self.limits)
                kind = answer["error"].kind if answer["error"] else None
                healthy = kind not in _REPLACE_AFTER
                return answer
            except _NotStarted as exc:
                log.warning("a sandbox container could not take a call (%s); another will", exc)
                if not isinstance(exc, _Retired):
                    end, cause = _container_end(worker)
                    if _engine_suspect(end, cause):
                        self._outage = True  # died while idle: verify before serving again
                if attempt < _RETRIES_FOR_RETIRED:
                    continue
                failure: SandboxBroken = exc
            except SandboxBroken as exc:  # the container is killed and replaced
                failure = exc
                end, cause = _container_end(worker)
                if _engine_suspect(end, cause) or (end == "engine"
                                                   and not self._engine_answers()):
                    self._outage = True
            finally:
                self._release(worker, healthy)
            kind = (ErrorKind.MEMORY_LIMIT if end == "oom" else
                    ErrorKind.CRASHED if end == "engine" else  # the engine's doing, not a timeout
                    ErrorKind.TIMEOUT if isinstance(failure, _NoAnswer) else ErrorKind.CRASHED)
            return {**_EMPTY, "timed_out": kind is ErrorKind.TIMEOUT,
                    "oom_killed": end == "oom",
                    "error": ErrorInfo(kind, _CONDITION[kind], container_text(
                                       f"container lost ({cause or 'replaced'}): {failure}",
                                       4000), container_end=end),
                    "exit_code": -9, "duration_ms": (time.monotonic() - started) * 1000}
        raise AssertionError("unreachable")

    # -- self-test --------------------------------------------------------------------------------
    def _selftest_marker(self) -> Path:
        with engine_errors("describe itself"):
            engine = self._client.info().get("ID", "")
        options = {k: v for k, v in self._options.items() if k != "labels"}  # labels name our pid
        key = json.dumps([self.image_id, engine, options, self._policy], sort_keys=True,
                         default=repr)
        return cache_dir() / "selftest" / (hashlib.sha256(key.encode()).hexdigest() + ".json")

    def _ensure_selftest(self) -> None:
        if self._selftest_marker().exists():
            return
        report = self.selftest()
        self.record_selftest(report)

    def record_selftest(self, report: dict[str, dict[str, Any]]) -> None:
        """Remember a passing self-test for this image, engine and option set."""
        failed = [name for name, probe in report.items() if not probe["confined"]]
        if failed:
            raise SelftestFailed(failed)
        marker = self._selftest_marker()
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(report, indent=1, sort_keys=True))

    def selftest(self) -> dict[str, dict[str, Any]]:
        """Run every confinement probe now: in a real call process, and on the container's
        configuration as the engine reports it."""
        report = self._host_checks()
        for heavy in (False, True):  # processes of the light zygote and of the heavy one
            kind = "heavy call process" if heavy else "light call process"
            answer = self._request({"op": "probe", "heavy": heavy, "timeout": 30.0}, 30.0)
            if answer["error"] is not None and answer["error"].lost_to_engine:
                raise SandboxBroken(f"the self-test's {kind} was lost with its container: "
                                    f"{answer['error'].message}")
            probes = answer["value"]
            if not answer["ok"] or not isinstance(probes, dict):
                err = answer["error"]
                report[f"probes_ran_in_{kind.replace(' ', '_')}"] = {
                    "confined": False,
                    "detail": f"probe run failed: {err.message if err else 'no value'}"}
                continue
            for name, probe in probes.items():
                if not isinstance(probe, dict):
                    report[str(name)] = {"confined": False, "detail": "malformed probe report"}
                    continue
                confined = probe.get("confined") is True
                seen = report.get(name)
                if seen is None or (seen["confined"] and not confined):
                    report[str(name)] = {"confined": confined,
                                         "detail": f"{kind}: {str(probe.get('detail'))[:500]}"}
        return report

    def _host_checks(self) -> dict[str, dict[str, Any]]:
        worker = self._acquire()
        try:
            worker.container.reload()
            attrs = worker.container.attrs
        except Exception as exc:
            raise SandboxBroken(f"the engine did not describe a container ({exc})") from None
        finally:
            self._release(worker, True)
        host, config = attrs["HostConfig"], attrs["Config"]
        env = [e for e in (config.get("Env") or []) if not e.startswith("PATH=")]
        tmpfs = host.get("Tmpfs") or {}
        checks = {
            "engine_network_none": host.get("NetworkMode") == "none",
            "engine_read_only_root": host.get("ReadonlyRootfs") is True,
            "engine_caps_dropped": "ALL" in (host.get("CapDrop") or []) and not host.get("CapAdd"),
            "engine_not_privileged": host.get("Privileged") is False,
            "engine_no_new_privileges": "no-new-privileges" in (host.get("SecurityOpt") or []),
            "engine_no_host_mounts": not host.get("Binds") and not attrs.get("Mounts"),
            "engine_pids_limit": host.get("PidsLimit") == self._options["pids_limit"],
            "engine_cpu_limit": host.get("NanoCpus") == self._options["nano_cpus"] > 0,
            "engine_memory_limit": host.get("Memory") == host.get("MemorySwap") > 0,
            "engine_ipc_none": host.get("IpcMode") == "none",
            "engine_user": config.get("User") == f"{SANDBOX_UID}:{SANDBOX_UID}",
            "engine_empty_env": not env,
            "engine_no_devices": not host.get("Devices"),
            "engine_mqueue_read_only": "ro" in tmpfs.get("/dev/mqueue", "").split(","),
            "engine_runtime": (host.get("Runtime") or "runc") == (self.runtime or "runc"),
            # the runner's input ends with its owner's stream, and the engine removes it then
            "engine_removed_with_owner": host.get("AutoRemove") is True
            and config.get("StdinOnce") is True,
        }
        return {name: {"confined": ok, "detail": "container config as the engine reports it"}
                for name, ok in checks.items()}

    # -- calls ------------------------------------------------------------------------------------
    def vet(self, spec: FunctionSpec, *, timeout: float | None = None,
            use_cache: bool = True) -> VetReport:
        """Vet a proposed function: shape, static policy, RestrictedPython, tests, smoke, audit
        (sandbox/vetting). Verdicts are cached in `self.verdicts`."""
        return vet(self, spec, timeout=timeout, use_cache=use_cache)

    def call(self, spec: FunctionSpec, args: Mapping[str, Any] | None = None, *,
             timeout: float | None = None, restricted: bool = True,
             audit: bool = True) -> CallResult:
        """Run one function with keyword arguments in a fresh process in a container."""
        if not isinstance(spec, FunctionSpec):
            raise InvalidSpec(f"expected a FunctionSpec, got {type(spec).__name__}")
        args = dict(args or {})
        validate_arguments(spec.name, spec.parameters, args)
        seconds = self._timeout(timeout)
        message = {"op": "call", "function": {"name": spec.name, "code": spec.code},
                   "args": args, "timeout": seconds, "restricted": restricted, "audit": audit}
        self._check_size(message)
        return CallResult(**self._result(self._request(message, seconds)))

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
        answer = self._request(message, seconds)
        return RunResult(**self._result(answer), exit_code=answer["exit_code"])

    def _result(self, answer: dict[str, Any]) -> dict[str, Any]:
        fields = {k: v for k, v in answer.items() if k != "exit_code"}
        return {**fields, "image_id": self.image_id}

    def _timeout(self, timeout: float | None) -> float:
        seconds = self.limits.timeout_s if timeout is None else float(timeout)
        if not 0 < seconds <= _MAX_TIMEOUT_S:
            raise InvalidArguments(f"timeout must be between 0 and {_MAX_TIMEOUT_S:g} seconds")
        return seconds

    def _check_size(self, message: dict[str, Any]) -> None:
        try:
            size = len(json.dumps(message, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise InvalidArguments(f"the request cannot be sent as JSON: {exc}") from None
        if size > self.limits.max_request:
            raise InvalidArguments(f"request is {size} bytes, over the limit of "
                                   f"{self.limits.max_request}: send smaller code or arguments")


# -- the runner's answer, checked -----------------------------------------------------------------
_CONDITION = {ErrorKind.TIMEOUT: "Timeout", ErrorKind.MEMORY_LIMIT: "MemoryLimit",
              ErrorKind.CRASHED: "Crashed", ErrorKind.PROTOCOL: "ProtocolError"}
_EMPTY: dict[str, Any] = {"ok": False, "value": None, "stdout": "", "stderr": "",
                          "stdout_truncated": False, "stderr_truncated": False, "error": None,
                          "timed_out": False, "oom_killed": False, "duration_ms": 0.0,
                          "audit": [], "exit_code": -9}
_FLAGS = ("ok", "stdout_truncated", "stderr_truncated", "timed_out", "oom_killed")
_KINDS = {k.value: k for k in ErrorKind}


def _checked(answer: dict[str, Any], op: str, limits: Limits) -> dict[str, Any]:
    """The fields of a CallResult/RunResult from the runner's answer, each checked for type
    and size; SandboxBroken (and so a replaced container) for anything else. Every string in
    it (value, stdout, stderr, error type, message, traceback, audit) goes through
    `container_text` here, the one place the host takes text from a runner."""
    def broken(why: str) -> SandboxBroken:
        return SandboxBroken(f"the runner's answer is malformed: {why}")

    out: dict[str, Any] = {}
    for flag in _FLAGS:
        if not isinstance(answer.get(flag), bool):
            raise broken(f"{flag} is not a boolean")
        out[flag] = answer[flag]
    text_cap = limits.output_cap * 4 + 64  # bytes shown as \\xNN escapes grow fourfold
    for name in ("stdout", "stderr"):
        if not isinstance(answer.get(name), str) or len(answer[name]) > text_cap:
            raise broken(f"{name} is not a bounded string")
        out[name] = container_text(answer[name], text_cap)
    duration = answer.get("duration_ms")
    if isinstance(duration, bool) or not isinstance(duration, int | float) or \
            not math.isfinite(duration) or duration < 0:
        raise broken("duration_ms is not a non-negative number")
    out["duration_ms"] = float(duration)
    out["value"] = container_value(answer.get("value"), limits.max_value) if out["ok"] \
        else None
    out["error"] = _error_info(answer.get("error"), broken)
    if out["ok"] == (out["error"] is not None):
        raise broken("ok and error disagree")
    audit = answer.get("audit")
    if not isinstance(audit, list) or len(audit) > _MAX_AUDIT:
        raise broken("audit is not a bounded list")
    events = []
    for event in audit:
        if not isinstance(event, dict) or not isinstance(event.get("event"), str) or \
                not isinstance(event.get("detail"), str):
            raise broken("an audit event is not {event, detail}")
        events.append(AuditEvent(container_text(event["event"], 200),
                                 container_text(event["detail"], 2000)))
    out["audit"] = events
    if op == "run":
        code = answer.get("exit_code")
        if isinstance(code, bool) or not isinstance(code, int) or not -64 <= code <= 255:
            raise broken("exit_code is not a process exit status")
        out["exit_code"] = code
        calls = checked_calls(answer.get("calls", {}))
        if calls is None:
            raise broken("calls is not a bounded map of library names to counts")
        out["calls"] = calls
    return out


def _error_info(raw: Any, broken: Any) -> ErrorInfo | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("kind") not in _KINDS:
        raise broken("error has no known kind")
    fields = []
    for name, cap in (("type", 200), ("message", 4000), ("traceback", 16000)):
        value = raw.get(name, "")
        if not isinstance(value, str) or len(value) > cap:
            raise broken(f"error.{name} is not a bounded string")
        fields.append(container_text(value, cap))
    return ErrorInfo(_KINDS[raw["kind"]], *fields)


_KILLED_FROM_OUTSIDE = "killed (SIGKILL) from outside, e.g. by the engine"
_OOM_FLAG_WAIT_S = 0.5
_EVENTS_PAST_NOW_S = 0.2  # how far past now the engine's event log is read (it then closes)


def _container_state(worker: _Worker) -> dict[str, Any] | None:
    """The engine's State of the container; for one it has removed already (auto_remove), what
    its event log says; None when the engine cannot tell."""
    try:
        worker.container.reload()
        state: dict[str, Any] = worker.container.attrs["State"]
    except docker.errors.NotFound:
        return _state_from_events(worker)
    except Exception:
        return None
    return state


def _state_from_events(worker: _Worker) -> dict[str, Any] | None:
    """How a removed container ended, from the engine's events: its exit code ("die") and
    whether its OOM killer fired ("oom"); None if the log holds no end (an engine restarted)."""
    state: dict[str, Any] = {"Running": False, "OOMKilled": False}
    try:
        events = worker.client.events(since=int(worker.created) - 1,
                                      until=f"{time.time() + _EVENTS_PAST_NOW_S:.9f}",
                                      filters={"container": worker.container.id}, decode=True)
        for event in events:
            action = event.get("Action") if isinstance(event, dict) else None
            if action == "oom":
                state["OOMKilled"] = True
            elif action == "die":
                code = str(event.get("Actor", {}).get("Attributes", {}).get("exitCode", ""))
                state["ExitCode"] = int(code) if code.isdigit() else -1
    except Exception:
        return None
    return state if "ExitCode" in state else None


def _engine_suspect(end: str, cause: str) -> bool:
    """An end that may mean the engine restarted (not only that someone killed a container)."""
    return end == "engine" and cause != _KILLED_FROM_OUTSIDE


def _container_end(worker: _Worker) -> tuple[str, str]:
    """(ErrorInfo.container_end, how the container ended in words) as the engine tells it."""
    state = _container_state(worker)
    if state is None:
        return "engine", "the engine no longer knows the container, or does not answer"
    if state.get("ExitCode") == 137 and not state.get("OOMKilled"):
        time.sleep(_OOM_FLAG_WAIT_S)  # the engine may record the OOM kill after the exit
        state = _container_state(worker) or state
    if state.get("OOMKilled"):
        return "oom", "the OOM killer ended it"
    if state.get("Running"):
        return "runner", "the runner stopped answering"
    code = state.get("ExitCode")
    if code == 137:
        return "engine", _KILLED_FROM_OUTSIDE
    if code == 0:  # the runner exits 0 only on the engine's SIGTERM or when its stream closes;
        # nothing inside can signal it (seccomp refuses kill to every call process)
        return "engine", "stopped by the engine"
    return "runner", f"the runner exited with status {code}"
