"""Conversations on a Ray cluster: one long-lived actor per node, one actor task per conversation.

Each node of the cluster gets one `NodeSandbox` actor, pinned to it, that owns that node's
`Sandbox` pool and grader: its Docker engine, its image (built there if missing) and its
self-test are checked when the actor starts, and a node whose actor cannot start takes no work
(fail closed). A conversation is a Ray task of a healthy node's actor, run on one of the actor's
threads: a conversation mostly waits on the LLM, so threads in one warm process serve it better
than a worker process each (measured: Ray's idle-worker reaping made one process per
conversation restart workers, and their imports, all the time). Code blocks and function calls
go to the node's own pool, so containers stay warm and never cross machines.

The driver (training, evaluation) keeps everything else: it picks the node for each task, keeps
`concurrency` tasks in flight and yields each result as it finishes. A task lost with its worker,
its actor or its node is submitted again to another healthy node (a result is yielded once, so
nothing is counted twice); an error the conversation itself raised (an endpoint or engine that
stayed away) stops the batch, as it does locally. An actor whose process dies is restarted by
Ray on its node (its new pool removes the old containers first).

The API key never leaves the machines it was put on: each node's actor reads it from its own
environment (export it before `ray start`; a Ray started by the driver inherits the driver's), so
it is in no task argument, no runtime environment (Ray logs those), no log and no container.
A node must also run the driver's sandbox: the same image sources and the same policy, or it
takes no work (what was vetted is what runs).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import ray
import ray.exceptions
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sandbox import (
    FunctionSpec,
    ImageMissing,
    InvalidArguments,
    Sandbox,
    SandboxBroken,
    SandboxError,
)

from ..conversation import ConversationResult, EpisodeSettings, solve
from ..errors import ConfigError
from ..llm import LLMClient
from ..llm.config import LLMConfig
from ..math import Grader, Problem
from ..runconfig import SandboxConfig
from . import Episode

__all__ = ["NodeSandbox", "RayBackend"]

log = logging.getLogger("fnforge.ray")

NAMESPACE = "fnforge"
TASK_ATTEMPTS = 3  # submissions of one conversation before its loss stops the batch
_ACTOR_START_S = 900.0  # an actor may build the image (mmdebstrap) before it is ready
_LOST = (ray.exceptions.RayError,)
"""Failures of the cluster (a worker, an actor, a node, an object lost), not of the conversation:
the task is submitted again. What the conversation itself raised comes out of `_unwrapped` as
that exception, not as a RayError."""
_RESTART_WAIT_S = 120.0  # for an actor Ray is restarting (a new process, a new pool)


@ray.remote(num_cpus=0, max_restarts=3, max_task_retries=0)
class NodeSandbox:
    """The node's hardened pool, grader and LLM clients; the node's conversations run here."""

    def __init__(self, sandbox: SandboxConfig) -> None:
        self.sandbox = Sandbox(pool_size=sandbox.pool_size, runtime=sandbox.runtime or None,
                               engine_wait_s=sandbox.engine_wait_s)
        try:
            self.sandbox.start()  # the engine, the image, the self-test: or no work here
        except ImageMissing:
            from sandbox import build_image

            build_image(log=log.info)
            self.sandbox.start()
        self.grader = Grader()
        self.clients: dict[str, LLMClient] = {}

    def ready(self) -> dict[str, Any]:
        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "sandbox": _sandbox_identity()}

    def solve(self, problem: Problem, functions: tuple[FunctionSpec, ...],
              settings: EpisodeSettings, llm: LLMConfig,
              base_url: str | None) -> ConversationResult:
        key = repr((llm, base_url))
        client = self.clients.get(key)
        if client is None:
            client = self.clients[key] = LLMClient(llm, base_url=base_url)
        return solve(problem, client=client, sandbox=self.sandbox, functions=functions,
                     grader=self.grader, settings=settings)

    def close(self) -> None:
        self.grader.close()
        self.sandbox.close()


def _sandbox_identity() -> dict[str, str]:
    """What must match between the driver and a node: the image's content tag and the policy."""
    from sandbox import image_tag, policy_hash

    return {"image": image_tag(), "policy": policy_hash()}


def _unwrapped(ref: Any) -> Any:
    """ray.get, raising what the conversation raised (EndpointUnavailable, EngineUnavailable)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, SandboxError) and not isinstance(cause, InvalidArguments):
            raise _NodeFault(f"{type(cause).__name__}: {cause}") from None
        if isinstance(cause, BaseException) and not isinstance(cause, _LOST):
            raise cause from None
        raise


class _NodeFault(Exception):
    """A node's sandbox failed (its engine stayed away, its self-test failed): that node's
    fault, not the conversation's; the node is dropped and the task goes elsewhere."""


def _nodes() -> list[dict[str, Any]]:
    listed: Any = ray.nodes  # untyped in Ray: no `type: ignore` that Ray's absence leaves unused
    nodes: list[dict[str, Any]] = listed()
    return nodes


class RayBackend:
    """Conversations as Ray tasks over the cluster's healthy nodes (module doc)."""

    def __init__(self, client: LLMClient, *, concurrency: int, address: str = "",
                 sandbox: SandboxConfig | None = None) -> None:
        self.concurrency = max(1, concurrency)
        self.sandbox_config = sandbox or SandboxConfig()
        self.llm, self.base_url = client.worker_settings()
        if not ray.is_initialized():
            where = address or os.environ.get("RAY_ADDRESS") or None
            try:
                ray.init(address=where, namespace=NAMESPACE, include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                place = where or "a new local instance"
                raise ConfigError(f"cannot join the Ray cluster at {place}: {exc}; check "
                                  "--address (or RAY_ADDRESS) and that `ray start` runs "
                                  "there") from None
        self.identity = _sandbox_identity()
        self.actors: dict[str, Any] = {}  # node id -> its NodeSandbox, for healthy nodes
        self.refused: dict[str, str] = {}  # node id -> why it takes no work
        self.finished: Counter[str] = Counter()  # node id -> conversations it finished
        self.resubmitted = 0  # tasks lost with a worker, an actor or a node, and sent again
        self._start_actors()
        self._next_node = itertools.cycle(list(self.actors))

    # -- nodes ------------------------------------------------------------------------------------
    def _start_actors(self) -> None:
        nodes = [n["NodeID"] for n in _nodes() if n.get("Alive")]
        pending = {}
        for node in nodes:
            actor = NodeSandbox.options(  # type: ignore[attr-defined]
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
                max_concurrency=self.concurrency + 4,  # its conversations, and ready/close
            ).remote(self.sandbox_config)
            pending[node] = (actor, actor.ready.remote())
        for node, (actor, ready) in pending.items():
            try:
                identity = ray.get(ready, timeout=_ACTOR_START_S)["sandbox"]
                if identity != self.identity:
                    raise SandboxError(f"its sandbox is not the driver's ({identity} here, "
                                       f"{self.identity} on the driver): update its checkout")
                self.actors[node] = actor
            except Exception as exc:  # the engine, the image or the self-test: fail closed
                why = str(getattr(exc, "cause", None) or exc).strip().splitlines()
                self.refused[node] = why[-1][:500] if why else type(exc).__name__
                log.error("Ray node %s takes no work: %s", node[:12], self.refused[node])
                with contextlib.suppress(Exception):
                    ray.kill(actor)
        if not self.actors:
            reasons = "; ".join(f"{n[:12]}: {w}" for n, w in self.refused.items())
            raise SandboxBroken(f"no Ray node passed its sandbox checks "
                                f"({reasons or 'no live nodes'}); run `make image` and "
                                "`python -m sandbox selftest` on each node")

    def _drop(self, node: str, why: str) -> None:
        actor = self.actors.pop(node, None)
        if actor is not None:
            self.refused[node] = why
            log.warning("Ray node %s dropped: %s", node[:12], why)
            self._next_node = itertools.cycle(list(self.actors))
            with contextlib.suppress(Exception):
                ray.kill(actor)  # its pool goes with it (or with the next start's clean-up)
        if not self.actors:
            raise SandboxBroken(f"every Ray node was lost (last: {why}); the run can resume "
                                "once the cluster is back")

    def _node_alive(self, node: str) -> bool:
        return any(n["NodeID"] == node and n.get("Alive") for n in _nodes())

    # -- conversations ----------------------------------------------------------------------------
    def solve_all(self, episodes: Sequence[Episode], settings: EpisodeSettings
                  ) -> Iterator[tuple[Episode, ConversationResult]]:
        waiting = list(reversed(episodes))
        in_flight: dict[Any, tuple[Episode, str, int]] = {}  # ref -> (episode, node, attempt)

        def submit(episode: Episode, attempt: int) -> None:
            node = next(self._next_node)
            ref = self.actors[node].solve.remote(episode.problem, episode.functions, settings,
                                                 self.llm, self.base_url)
            in_flight[ref] = (episode, node, attempt)

        try:
            while waiting or in_flight:
                while waiting and len(in_flight) < self.concurrency:
                    submit(waiting.pop(), 1)
                done, _ = ray.wait(list(in_flight), num_returns=1)
                episode, node, attempt = in_flight.pop(done[0])
                try:
                    result: ConversationResult = _unwrapped(done[0])
                except (*_LOST, _NodeFault) as exc:
                    why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
                    log.warning("conversation %s lost on node %s (%s); submitting it again",
                                episode.problem.id, node[:12], why)
                    if isinstance(exc, _NodeFault) or not self._node_alive(node) or \
                            not self._actor_alive(node):
                        self._drop(node, why)
                    if attempt >= TASK_ATTEMPTS:
                        raise SandboxBroken(f"conversation {episode.problem.id} was lost "
                                            f"{attempt} times on the cluster; last: {why}"
                                            ) from None
                    self.resubmitted += 1
                    submit(episode, attempt + 1)
                    continue
                self.finished[node] += 1
                yield episode, result
        finally:
            for ref in in_flight:  # the caller stopped reading (Ctrl-C, an error)
                with contextlib.suppress(Exception):
                    ray.cancel(ref)

    def _actor_alive(self, node: str) -> bool:
        """Whether the node's actor answers, waiting out a restart Ray has under way."""
        actor = self.actors.get(node)
        deadline = time.monotonic() + _RESTART_WAIT_S
        while actor is not None and time.monotonic() < deadline:
            try:
                ray.get(actor.ready.remote(), timeout=_RESTART_WAIT_S)
                return True
            except ray.exceptions.ActorUnavailableError:
                time.sleep(1.0)
            except Exception:
                return False
        return False

    def close(self) -> None:
        for actor in list(self.actors.values()):
            try:
                ray.get(actor.close.remote(), timeout=60)
            except Exception as exc:
                log.warning("a node's sandbox did not close cleanly: %s", exc)
            ray.kill(actor)
        self.actors.clear()
