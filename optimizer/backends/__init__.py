"""Where conversations run: in this process (the default) or on a Ray cluster.

A backend solves a batch of problems with a set of functions and yields each result as it
finishes; the caller (training, evaluation) journals it at once. The optimizer step, the
checkpoints, vetting and the history always stay with the caller, on the driver.

    local   threads here, one Sandbox pool and one LLM client (no Ray needed)
    ray     Ray tasks on every node of a cluster, each node's calls in that node's own hardened
            pool, owned by one long-lived actor per node (optimizer/backends/ray_backend.py)
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sandbox import FunctionSpec, Sandbox

from ..conversation import ConversationResult, EpisodeSettings, solve
from ..errors import ConfigError
from ..llm import LLMClient
from ..math import Grader, Problem
from ..runconfig import RunConfig

__all__ = ["Backend", "Episode", "LocalBackend", "backend_for", "parallel"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Episode:
    """One conversation to have: a problem, the functions it may use, the caller's label."""

    problem: Problem
    functions: tuple[FunctionSpec, ...]
    tag: str = ""


class Backend(Protocol):
    def solve_all(self, episodes: Sequence[Episode], settings: EpisodeSettings
                  ) -> Iterator[tuple[Episode, ConversationResult]]:
        """(episode, result) for every episode, as each finishes, `concurrency` in flight.
        Infrastructure that stays away raises (see optimizer/conversation.py)."""
        ...

    def close(self) -> None: ...


def parallel(items: Sequence[T], work: Callable[[T], R],
             concurrency: int) -> Iterator[tuple[T, R]]:
    """(item, result) as each finishes, `concurrency` at a time, on daemon threads: after
    Ctrl-C the caller stops reading and leaves, without waiting for an LLM call in flight."""
    todo: queue.Queue[T | None] = queue.Queue()
    done: queue.Queue[tuple[T, R] | BaseException] = queue.Queue()
    for item in items:
        todo.put(item)
    workers = max(1, min(concurrency, len(items)))
    for _ in range(workers):
        todo.put(None)

    def worker() -> None:
        while (item := todo.get()) is not None:
            try:
                done.put((item, work(item)))
            except BaseException as exc:  # an error is the caller's to see, not a lost result
                done.put(exc)

    for _ in range(workers):
        threading.Thread(target=worker, daemon=True, name="fnforge-episode").start()
    for _ in range(len(items)):
        result = done.get()
        if isinstance(result, BaseException):
            raise result
        yield result


class LocalBackend:
    """Conversations on threads of this process, calls in this machine's pool."""

    def __init__(self, client: LLMClient, sandbox: Sandbox, grader: Grader,
                 concurrency: int) -> None:
        self.client, self.sandbox, self.grader = client, sandbox, grader
        self.concurrency = concurrency

    def solve_all(self, episodes: Sequence[Episode], settings: EpisodeSettings
                  ) -> Iterator[tuple[Episode, ConversationResult]]:
        def work(episode: Episode) -> ConversationResult:
            return solve(episode.problem, client=self.client, sandbox=self.sandbox,
                         functions=episode.functions, grader=self.grader, settings=settings)

        return parallel(episodes, work, self.concurrency)

    def close(self) -> None:
        pass


def backend_for(config: RunConfig, *, client: LLMClient, sandbox: Sandbox,
                grader: Grader) -> Backend:
    """The backend a run configuration names ([train] backend, address)."""
    train = config.train
    if train.backend == "local":
        return LocalBackend(client, sandbox, grader, train.concurrency)
    if train.backend == "ray":
        try:
            from .ray_backend import RayBackend  # lazy: Ray is an optional extra
        except ImportError as exc:
            raise ConfigError(f"the ray backend needs Ray ({exc}): `make ray-deps`, or "
                              "pip install '.[ray]'") from None

        return RayBackend(client, concurrency=train.concurrency, address=train.address,
                          sandbox=config.sandbox)
    raise ConfigError(f"unknown backend {train.backend!r}: use local or ray")
