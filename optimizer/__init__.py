"""fnforge's optimizer: the learning step, the agents' loop, training and evaluation.

    AgentOptimizer      upstream's API (record_one_conversation, step, reset_optimizer), with
                        vetted proposals, roll-back and early stop
    OptimizerSettings   how it learns (ties, patience, prompt budget, snapshots)
    Event, EventLog     what it reports as it works

Errors live in `optimizer.errors` (its docstring draws the tree); LLM access is `optimizer.llm`,
problems and answer checking `optimizer.math`, the run loop `optimizer.train` and
`optimizer.evaluate`.
"""

from __future__ import annotations

from .agent_optimizer import AgentOptimizer, OptimizerSettings, StepSummary
from .errors import OptimizerError
from .events import Event, EventLog, EventSink

__all__ = ["AgentOptimizer", "Event", "EventLog", "EventSink", "OptimizerError",
           "OptimizerSettings", "StepSummary"]
