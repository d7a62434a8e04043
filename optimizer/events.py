"""What the optimizer reports as it works: one structured event per thing that happened.

The training loop writes them to the run directory and the history store (a tamper-evident
chain for reviewers) records them; tests read them. An event is plain JSON-ready data.

Kinds (`data` fields):
    llm_call     role, model, prompt_tokens, completion_tokens, attempts, request (messages),
                 response (text and tool calls), parse_errors (the history store adds
                 request_hash and response_hash)
    prompt       conversations, shown, failed_shown, estimated_tokens (the step's first prompt)
    proposal     action, name, reason, spec (for add/revise), code_hash, parent (the version
                 it would replace, or None), slot, attempt
    vet          name, code_hash, spec_hash, passed, report (the whole VetReport)
    applied      action, name, version (the library's), code_hash
    refused      action, name, why (not applied: vetting rejected it, an unknown name, ...)
    dropped      action, why (over max_actions_per_step)
    terminate    reason
    decision     score, best_score, decision (accepted | rolled_back | tie_rejected | first),
                 library_version, failures
    early_stop   steps_without_improvement, patience
    registered   names (advertised to the assistant and the executor after the step)
    removed      names (taken away from both)
    step         step, score, decision, prompt_tokens, completion_tokens, seconds,
                 seconds_llm, seconds_vetting, proposals, applied, snapshot
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "EventLog", "EventSink"]


@dataclass(frozen=True)
class Event:
    kind: str
    step: int
    data: dict[str, Any]
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "step": self.step, "time": self.time, "data": self.data}


EventSink = Callable[[Event], None]


class EventLog:
    """A sink that keeps every event in memory (tests, and small scripted runs)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]
