"""AgentOptimizer: the learning step. An agent's functions are its weights; after each epoch an
optimizer LLM reads the conversations and proposes to add, revise or remove functions.

Upstream's API, so an AutoGen/AG2 user switches by changing one import:

    optimizer = AgentOptimizer(max_actions_per_step=3, llm_config=config, optimizer_model="gpt-4o")
    for conversation, solved in epoch:
        optimizer.record_one_conversation(conversation, is_satisfied=solved)
    register_for_llm, register_for_executor = optimizer.step()
    for item in register_for_llm:
        assistant.update_function_signature(**item)
    user_proxy.register_function(function_map=register_for_executor)

What differs from upstream, on purpose (each is a regression test):
- every executor name runs its own function, in the sandbox, with its arguments checked against
  its schema; a removal or a roll-back takes a function out of both returned structures;
- every add and revise is vetted (sandbox.vet) before it can be applied; a rejected proposal is
  never applied, and its findings go back to the model for a bounded number of retries;
- a TERMINATE ends the step's actions, unless it came in the reply of a proposal that was
  refused (written before the model read why: the refusal goes back to it first); parallel
  tool calls never exceed max_actions_per_step;
- step() with nothing recorded, and is_satisfied that is not a bool, are clear errors;
- prompts are bounded (optimizer/prompts.py);
- when conversations are recorded with their problems' known answers
  (`record_one_conversation(..., answer=...)`), a proposal must carry worked examples (a call
  per problem it is meant for) and is applied only if the sandboxed calls return answers the
  grader accepts; the misses go back to the model like a vetting finding;
- roll-back keeps the best function set and early stop ends training (`should_stop`); the
  score may come from a held-out validation split (`step(score=...)`), see OptimizerSettings.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from copy import deepcopy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from sandbox import (
    FunctionLibrary,
    FunctionSpec,
    InvalidArguments,
    Sandbox,
    VetReport,
    write_json_atomic,
)

from .actions import (
    ACTION_NAMES,
    MAX_EXAMPLES,
    Action,
    ActionReply,
    AddFunction,
    RemoveFunction,
    ReviseFunction,
    Terminate,
    WorkedExample,
    action_name,
    request_actions,
)
from .channel import answered, recorded_response
from .conversation import task_of
from .errors import ActionParseError, OptimizerStateError
from .events import Event, EventSink
from .llm import ChatResult, LLMClient
from .llm.config import resolve_llm_config
from .math import Grader
from .prompts import PromptBudget, Recorded, system_prompt, user_prompt
from .registration import LLMRegistrar

__all__ = ["AgentOptimizer", "OptimizerSettings", "StepSummary"]

_STATE_FORMAT = 1


@dataclass(frozen=True)
class OptimizerSettings:
    """How the optimizer learns. Defaults follow the paper, except where noted.

    Score: `step(score=None)` uses the share of recorded conversations that were satisfied (the
    paper's and upstream's training accuracy). The paper's curves overfit (test accuracy peaks
    before the last epoch), so fnforge's training loop passes the accuracy on a held-out
    validation split instead; that is the recommended use.
    """

    retries_per_slot: int = 3  # vetting rejections fed back per action slot
    parse_attempts: int = 3  # malformed replies re-asked per request
    ties: Literal["accept", "reject"] = "accept"  # upstream accepts a set that only ties
    patience: int = 10  # early stop after this many steps without improvement (paper: 10)
    budget: PromptBudget = field(default_factory=PromptBudget)
    temperature: float | None = None  # None: the optimizer role's own (fnforge.toml)
    retry_temperature: float | None = 0.8  # the tries after a refusal: a small model at its
    # usual low temperature sent the refused function back unchanged (measured with the 1.5B)
    max_tokens: int | None = 1500  # one action, code included
    seed: int | None = None
    call_timeout: float | None = None  # seconds per executor call; None: the sandbox's default
    examples_needed: int = 2  # worked examples that must hit known answers (fewer if fewer
    # recorded conversations have one)
    candidates: int = 1  # replies sampled for a proposal (the rest at retry_temperature); the
    # one whose function passes and hits the most known answers is applied (1: upstream's way)
    snapshot_dir: Path | None = None  # a library JSON after every step, when set

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["snapshot_dir"] = str(self.snapshot_dir) if self.snapshot_dir else None
        return data


@dataclass
class Judged:
    """A proposal as decided (not yet applied): `why` is empty when it may be applied."""

    action: Action
    kind: str
    name: str
    index: int  # in the step's proposals
    report: VetReport | None = None
    hits: int = 0  # known answers its worked examples hit
    why: str = ""


@dataclass(frozen=True)
class StepSummary:
    step: int
    score: float
    decision: str
    library_version: int
    functions: list[str]
    proposals: int
    applied: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    seconds_llm: float
    seconds_vetting: float


ExecutorMap = dict[str, Callable[..., Any] | None]


class AgentOptimizer:
    """Learns a FunctionLibrary from recorded conversations; see the module doc."""

    def __init__(self, max_actions_per_step: int = 3, llm_config: Any = None,
                 optimizer_model: str | None = None, *, sandbox: Sandbox | None = None,
                 library: FunctionLibrary | None = None,
                 settings: OptimizerSettings | None = None, events: EventSink | None = None,
                 client: LLMClient | None = None) -> None:
        if not isinstance(max_actions_per_step, int) or max_actions_per_step < 1:
            raise ValueError("max_actions_per_step must be a positive integer")
        self.max_actions_per_step = max_actions_per_step
        self.settings = settings or OptimizerSettings()
        if self.settings.ties not in ("accept", "reject") or self.settings.patience < 1:
            raise ValueError("settings: ties must be 'accept' or 'reject', patience at least 1")
        if self.settings.candidates < 1:
            raise ValueError("settings: candidates must be at least 1")
        if client is None:
            config, key = resolve_llm_config(llm_config, optimizer_model)
            client = LLMClient(config, api_key=key)
        self.client = client
        self.optimizer_model = client.config.role("optimizer").model
        self._events = events
        self._own_sandbox = sandbox is None
        self.sandbox = sandbox if sandbox is not None else Sandbox()
        if self._own_sandbox:
            self.sandbox.start()
        self._initial = (library or FunctionLibrary()).to_dict()
        self.library = library if library is not None else FunctionLibrary()
        self.registrar = LLMRegistrar()
        self._grader: Grader | None = None  # started on the first answer check
        self._fresh_state()

    # -- life cycle -------------------------------------------------------------------------------
    def __enter__(self) -> AgentOptimizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the sandbox if this optimizer opened it (and the LLM client)."""
        if self._own_sandbox:
            self.sandbox.close()
        if self._grader is not None:
            self._grader.close()
        self.client.close()

    def _fresh_state(self) -> None:
        self._recorded: list[Recorded] = []
        self._failures: list[dict[str, Any]] = []
        self._best_version: int | None = None
        self.best_score: float | None = None
        self._steps_without_improvement = 0
        self._refused_specs: dict[str, str] = {}  # what was refused in this step -> why
        self._stopped = False
        self.step_count = 0
        self.history: list[StepSummary] = []

    def reset_optimizer(self) -> None:
        """Forget everything learned: recorded conversations, scores, failure experience; the
        library goes back to the one the optimizer started from."""
        self.library = FunctionLibrary.from_dict(self._initial)
        self._fresh_state()

    # -- the API ----------------------------------------------------------------------------------
    def record_one_conversation(self, conversation_history: Sequence[Mapping[str, Any]],
                                is_satisfied: bool | None = None, *,
                                answer: str | None = None) -> None:
        """Keep one conversation (OpenAI message format) and whether its answer was right;
        with the problem's known `answer`, proposals are checked against it (module doc)."""
        if not isinstance(is_satisfied, bool):
            raise ValueError("is_satisfied must be True or False (was the conversation's answer "
                             f"right?), not {is_satisfied!r}; fnforge never asks on stdin")
        if isinstance(conversation_history, str | bytes) or not all(
                isinstance(m, Mapping) and "role" in m for m in conversation_history):
            raise ValueError("conversation_history must be a list of OpenAI messages "
                             "({'role': ..., 'content': ...})")
        if answer is not None and not isinstance(answer, str):
            raise ValueError(f"answer must be the problem's known answer as text, not {answer!r}")
        self._recorded.append(Recorded([dict(m) for m in deepcopy(list(conversation_history))],
                                       is_satisfied, answer))

    @property
    def should_stop(self) -> bool:
        """True once `patience` steps in a row have not improved on the best score."""
        return self._stopped

    @property
    def recorded(self) -> int:
        return len(self._recorded)

    def step(self, score: float | None = None) -> tuple[list[dict[str, Any]], ExecutorMap]:
        """Judge the function set used since the last step, keep or roll back, then propose up
        to max_actions_per_step vetted changes. Returns (register_for_llm,
        register_for_executor) in upstream's formats, relative to what the agents have now."""
        if not self._recorded:
            raise OptimizerStateError("step() needs recorded conversations: call "
                                      "record_one_conversation() for each one of the epoch first")
        if score is None:
            score = sum(c.satisfied for c in self._recorded) / len(self._recorded)
        if isinstance(score, bool) or not isinstance(score, int | float) or \
                not math.isfinite(score) or not 0.0 <= score <= 1.0:
            raise ValueError(f"score must be a number between 0 and 1, not {score!r}")
        started = time.monotonic()
        self.step_count += 1
        self._clock = {"llm": 0.0, "vetting": 0.0}
        self._counts = {"proposals": 0, "applied": 0, "prompt": 0, "completion": 0}
        self._proposals: list[dict[str, Any]] = []
        decision = self._decide(float(score))
        if not self._stopped:
            self._propose()
        self._recorded = []
        register_for_llm, register_for_executor = self._updates()
        summary = StepSummary(
            step=self.step_count, score=float(score), decision=decision,
            library_version=self.library.version, functions=self.library.names(),
            proposals=self._counts["proposals"], applied=self._counts["applied"],
            prompt_tokens=self._counts["prompt"], completion_tokens=self._counts["completion"],
            seconds=round(time.monotonic() - started, 3),
            seconds_llm=round(self._clock["llm"], 3),
            seconds_vetting=round(self._clock["vetting"], 3))
        self.history.append(summary)
        snapshot = self._snapshot(summary)
        self._emit("step", {**asdict(summary), "snapshot": str(snapshot) if snapshot else None})
        return register_for_llm, register_for_executor

    def best_library(self) -> FunctionLibrary:
        """The best function set so far (what to evaluate or deploy)."""
        best = FunctionLibrary.from_dict(self.library.to_dict())
        if self._best_version is not None and self._best_version != best.version:
            best.restore(self._best_version)
        return best

    # -- roll-back and early stop ----------------------------------------------------------------
    def _decide(self, score: float) -> str:
        trial = self.library.version
        if self.best_score is None or self._best_version is None:
            self._best_version, self.best_score, decision = trial, score, "first"
        elif score > self.best_score:
            self._best_version, self.best_score, decision = trial, score, "accepted"
            self._steps_without_improvement = 0
        elif score == self.best_score and self.settings.ties == "accept":
            self._best_version, decision = trial, "accepted_tie"
            self._steps_without_improvement += 1
        else:
            decision = "rolled_back" if score < self.best_score else "tie_rejected"
            if self._signature(trial) != self._signature(self._best_version):
                self._failures.append({"score": score, "version": trial, "functions": {
                    s.name: s.description for s in self._specs_at(trial)}})
                self.library.restore(self._best_version)
            self._steps_without_improvement += 1
        if self._steps_without_improvement >= self.settings.patience and not self._stopped:
            self._stopped = True
            if self._signature(self.library.version) != self._signature(self._best_version):
                self.library.restore(self._best_version)
            self._emit("early_stop", {"steps_without_improvement":
                                      self._steps_without_improvement,
                                      "patience": self.settings.patience})
        self._emit("decision", {"score": score, "best_score": self.best_score,
                                "decision": decision, "library_version": self.library.version,
                                "failures": len(self._failures)})
        return decision

    def _specs_at(self, version: int) -> list[FunctionSpec]:
        state = next(v for v in self.library.history if v.number == version)
        return [state.specs[n] for n in sorted(state.specs)]

    def _signature(self, version: int) -> tuple[str, ...]:
        return tuple(s.spec_hash for s in self._specs_at(version))

    # -- proposals --------------------------------------------------------------------------------
    def _allowed(self) -> list[str]:
        if len(self.library) == 0:  # nothing to revise or remove: a small model needs fewer choices
            return ["add_function", "terminate"]
        return list(ACTION_NAMES)

    def _propose(self) -> None:
        allowed = self._allowed()
        user, stats = user_prompt(self.library.specs(), self._failures, self._recorded,
                                  self.settings.budget, allowed)
        self._emit("prompt", asdict(stats))
        base = [{"role": "system", "content": system_prompt()},
                {"role": "user", "content": user}]
        transcript: list[dict[str, Any]] = []
        slots_used = tries = 0
        self._refused_specs.clear()
        while slots_used < self.max_actions_per_step:
            allowed = self._allowed()
            temperature = self.settings.retry_temperature if tries else None
            reply = self._ask(base + transcript, allowed, slots_used, temperature)
            if reply is None:
                return
            first: Judged | None = None  # the first action, already judged among candidates
            if self.settings.candidates > 1 and reply.actions and \
                    isinstance(reply.actions[0], AddFunction | ReviseFunction):
                reply, first = self._best_candidate(reply, base + transcript, allowed,
                                                    slots_used, tries)
            outcomes: list[str] = []
            refused = False  # a proposal of this reply was refused: its model has not seen why
            for action in reply.actions:
                if slots_used >= self.max_actions_per_step:
                    self._emit("dropped", {"action": action_name(action),
                                           "why": "over max_actions_per_step"})
                    outcomes.append("Not applied: this step's action budget is used up.")
                    continue
                if isinstance(action, Terminate) and refused:
                    # written before the refusal: the model decides again once it has read it
                    self._emit("dropped", {"action": "terminate",
                                           "why": "in the same reply as a refused proposal"})
                    outcomes.append("Not applied: read why the proposal above was refused; "
                                    "fix it and propose it again, or terminate.")
                    continue
                if isinstance(action, Terminate):
                    self._emit("terminate", {"reason": action.reason})
                    return
                if first is not None and action is first.action:
                    applied, feedback = self._settle(first)
                else:
                    applied, feedback = self._settle(self._judge(action, slots_used + 1,
                                                                 tries + 1))
                refused = refused or not applied
                outcomes.append(feedback)
                tries += 1
                if applied or tries >= self.settings.retries_per_slot:
                    slots_used, tries = slots_used + 1, 0
            transcript += answered(reply.results[-1], reply.mode == "tools", outcomes,
                                   "Not applied." if outcomes else "Nothing was applied.")
            if tries == 0 and slots_used < self.max_actions_per_step:  # a slot was used up
                transcript.append({"role": "user", "content": "Propose the next change, or "
                                   "terminate if the library is good enough."})

    def _ask(self, messages: list[dict[str, Any]], allowed: list[str],
             slot: int, temperature: float | None = None,
             candidate: int = 1) -> ActionReply | None:
        t0 = time.monotonic()

        def exchange(request: list[dict[str, Any]], result: ChatResult | None,
                     error: str | None) -> None:  # every request and response, as it happens
            self._record_exchange(request, result, error, slot)

        try:
            reply = request_actions(self.client, messages, role="optimizer",
                                    max_attempts=self.settings.parse_attempts,
                                    temperature=(self.settings.temperature
                                                 if temperature is None else temperature),
                                    max_tokens=self.settings.max_tokens,
                                    seed=(None if self.settings.seed is None else
                                          self.settings.seed + candidate - 1),
                                    allowed=allowed,
                                    max_prompt_tokens=self.settings.budget.max_prompt_tokens,
                                    on_exchange=exchange)
        except ActionParseError as exc:
            self._clock["llm"] += time.monotonic() - t0
            self._emit("refused", {"action": None, "name": None,
                                   "why": f"no usable reply: {exc}", "errors": list(exc.errors)})
            return None
        self._clock["llm"] += time.monotonic() - t0
        return reply

    def _record_exchange(self, request: list[dict[str, Any]], result: ChatResult | None,
                         error: str | None, slot: int) -> None:
        """One llm_call record per request as sent (within the budget), with its response cut
        to the record limit (channel.recorded_response), parseable or not."""
        if result is not None:
            self._counts["prompt"] += result.prompt_tokens
            self._counts["completion"] += result.completion_tokens
        self._emit("llm_call", {
            "role": "optimizer", "model": result.model if result else self.optimizer_model,
            "slot": slot + 1, "prompt_tokens": result.prompt_tokens if result else 0,
            "completion_tokens": result.completion_tokens if result else 0,
            "attempts": result.attempts if result else 0,
            "cached": result.cached if result else False, "request": request,
            "response": recorded_response(result) if result else None,
            "parse_errors": [error] if error and result else [],
            "error": error if result is None else None})

    def _best_candidate(self, reply: ActionReply, messages: list[dict[str, Any]],
                        allowed: list[str], slot: int,
                        tries: int) -> tuple[ActionReply, Judged | None]:
        """Sample candidates - 1 more replies for this proposal, judge the first function
        action of each (every candidate is a proposal of record, vetted and checked), and keep
        the reply whose function passes with the most known answers hit (the earliest on a
        tie). The others are refused as not chosen."""
        judged = [(reply, self._judge(reply.actions[0], slot + 1, tries + 1, 1))]
        for n in range(2, self.settings.candidates + 1):
            # a seed of its own: the same prompt, temperature and seed is the same reply
            more = self._ask(messages, allowed, slot, self.settings.retry_temperature, n)
            if more is not None and more.actions and \
                    isinstance(more.actions[0], AddFunction | ReviseFunction):
                judged.append((more, self._judge(more.actions[0], slot + 1, tries + 1, n)))
        best = max(range(len(judged)), key=lambda i: (not judged[i][1].why,
                                                        judged[i][1].hits, -i))
        for i, (_, other) in enumerate(judged):
            if i != best:
                why = other.why or (f"candidate {best + 1} of {len(judged)} was chosen: it "
                                    f"hit {judged[best][1].hits} known answer(s), this one "
                                    f"{other.hits}")
                self._refuse(other.kind, other.name, why, other.index)
        return judged[best]

    def _settle(self, judged: Judged) -> tuple[bool, str]:
        """(applied, what to tell the model): a judged action applied if it passed, refused
        if not. Nothing unvetted is ever applied."""
        if judged.why:
            return self._refuse(judged.kind, judged.name, judged.why, judged.index)
        action, name, kind = judged.action, judged.name, judged.kind
        if isinstance(action, RemoveFunction):
            self.library.remove(name)
            self._counts["applied"] += 1
            self._emit("applied", {"action": kind, "name": name,
                                   "version": self.library.version, "code_hash": None})
            return True, f"Applied: {name} was removed."
        assert isinstance(action, AddFunction | ReviseFunction) and judged.report is not None
        report = judged.report
        if isinstance(action, AddFunction):
            self.library.add(action.function, report)
        else:
            self.library.revise(action.function, report)
        self._counts["applied"] += 1
        self._emit("applied", {"action": kind, "name": name, "version": self.library.version,
                               "code_hash": action.function.code_hash,
                               "spec_hash": action.function.spec_hash})
        warnings = "; ".join(f.message for f in report.warnings)[:600]
        note = f" Vetting warnings (not blocking): {warnings}" if warnings else ""
        return True, f"Applied: {name} passed vetting and is in the library.{note}"

    def _judge(self, action: Action, slot: int, attempt: int,
               candidate: int | None = None) -> Judged:
        """Record the proposal and decide it: vetting, then the answer check. Changes nothing
        in the library (`_settle` does)."""
        name = action.name if isinstance(action, RemoveFunction) else \
            action.function.name  # type: ignore[union-attr]
        kind = action_name(action)
        self._counts["proposals"] += 1
        exists = name in self.library
        parent = self.library.get(name).spec_hash if exists else None
        proposal: dict[str, Any] = {"action": kind, "name": name, "reason": action.reason,
                                    "slot": slot, "attempt": attempt, "parent": parent}
        if candidate is not None:
            proposal["candidate"] = candidate
        if isinstance(action, AddFunction | ReviseFunction):
            proposal.update(spec=action.function.to_dict(), code_hash=action.function.code_hash)
        self._emit("proposal", proposal)
        self._proposals.append({"action": kind, "name": name, "code_hash": proposal.get(
            "code_hash"), "outcome": "applied", "why": ""})
        judged = Judged(action, kind, name, len(self._proposals) - 1)
        if isinstance(action, RemoveFunction):
            if not exists:
                judged.why = (f"there is no function {name!r} to remove; the library has: "
                              f"{', '.join(self.library.names()) or 'none'}")
            return judged
        assert isinstance(action, AddFunction | ReviseFunction)
        if isinstance(action, AddFunction) and exists:
            judged.why = (f"{name!r} already exists; use revise_function to change it, or add "
                          "it under another name")
            return judged
        if isinstance(action, ReviseFunction) and not exists:
            judged.why = f"there is no function {name!r} to revise; use add_function for a new one"
            return judged
        spec = action.function
        # vetting judges the function alone; the answer check, the function with its examples
        with_examples = spec.spec_hash + json.dumps(
            [asdict(e) for e in action.examples], sort_keys=True, default=str)
        earlier = self._refused_specs.get(spec.spec_hash) or \
            self._refused_specs.get(with_examples)
        if earlier:  # checking it again would say the same
            judged.why = (f"this {name} is character for character the one already refused, "
                          f"for this reason: {earlier}")[:1800]
            return judged
        judged.report = self._vet(spec)
        if not judged.report.passed:
            judged.why = self._refused_specs[spec.spec_hash] = _rejection(spec, judged.report)
            return judged
        judged.hits, missed = self._check_examples(spec, action.examples)
        if missed:
            judged.why = self._refused_specs[with_examples] = missed
        return judged

    def _vet(self, spec: FunctionSpec) -> VetReport:
        t0 = time.monotonic()
        report = self.sandbox.vet(spec)
        self._clock["vetting"] += time.monotonic() - t0
        self._emit("vet", {"name": spec.name, "code_hash": spec.code_hash,
                           "spec_hash": spec.spec_hash, "passed": report.passed,
                           "report": report.to_dict()})
        return report

    def _check_examples(self, spec: FunctionSpec,
                        examples: Sequence[WorkedExample]) -> tuple[int, str]:
        """(known answers hit, "" when enough were, else what to tell the model). Nothing to
        check when no recorded conversation has a known answer."""
        known = [c for c in self._recorded if c.answer is not None]
        need = min(self.settings.examples_needed, len(known))
        if need == 0:
            return 0, ""
        t0 = time.monotonic()
        hits: list[str] = []
        misses: list[str] = []
        seen: set[int] = set()
        for example in examples:
            if example.conversation in seen:  # a hit counts once per problem
                misses.append(f"conversation {example.conversation} is given twice: one example "
                              "per conversation")
                continue
            seen.add(example.conversation)
            line = self._try_example(spec, example)
            (hits if line is None else misses).append(line or str(example.conversation))
        self._clock["vetting"] += time.monotonic() - t0
        self._emit("answer_check", {"name": spec.name, "code_hash": spec.code_hash,
                                    "needed": need, "hits": len(hits), "misses": misses})
        if len(hits) >= need:
            return len(hits), ""
        told = (f"{spec.name} passed vetting but was checked against the known answers: it "
                f"needs {need} worked example(s) that return a conversation's known answer, and "
                f"{len(hits)} did.")
        if not examples:
            told += (" Give `examples`: the numbers of conversations this function answers, "
                     "with the arguments taken from their tasks.")
        return len(hits), (told + "".join(f"\n- {m}" for m in misses[:MAX_EXAMPLES]))[:1800]

    def _try_example(self, spec: FunctionSpec, example: WorkedExample) -> str | None:
        """None when the call returns the conversation's known answer, else why not."""
        n = example.conversation
        if not 1 <= n <= len(self._recorded) or self._recorded[n - 1].answer is None:
            return f"conversation {n} is not a recorded conversation with a known answer"
        recorded = self._recorded[n - 1]
        answer = str(recorded.answer)
        call = f"{spec.name}({', '.join(f'{k}={v!r}' for k, v in example.args.items())})"[:200]
        task = next((str(m.get("content") or "") for m in recorded.history
                     if m.get("role") == "user"), "")
        if _echoes(example.args, answer, task_of(task)):
            return (f"conversation {n}: {call} is handed the known answer as an argument; the "
                    "arguments must come from the task, and the function must compute the "
                    "answer")[:400]
        try:
            result = self.sandbox.call(spec, example.args, timeout=self.settings.call_timeout)
        except InvalidArguments as exc:
            return f"conversation {n}: {call} has invalid arguments: {exc}"[:400]
        if not result.ok:
            err = result.error
            what = f"{err.type}: {err.message}" if err else "an error"
            return f"conversation {n}: {call} raised {what}"[:400]
        if self._grader is None:
            self._grader = Grader()
        value = result.value
        text = value if isinstance(value, str) else json.dumps(value)
        if self._grader.grade(f"\\boxed{{{text}}}", answer).correct:
            return None
        return (f"conversation {n}: {call} returned {text[:120]}, but the problem's known "
                f"answer is {answer[:80]}")

    def _refuse(self, kind: str, name: str, why: str,
                index: int | None = None) -> tuple[bool, str]:
        self._emit("refused", {"action": kind, "name": name, "why": why})
        self._proposals[-1 if index is None else index].update(outcome="refused", why=why)
        return False, f"Not applied: {why}"

    # -- what the agents get ----------------------------------------------------------------------
    def _updates(self) -> tuple[list[dict[str, Any]], ExecutorMap]:
        before = set(self.registrar.advertised)
        registration = self.registrar.register(self.library)
        executor = self.library.register_for_executor(self.sandbox,
                                                      timeout=self.settings.call_timeout)
        names = self.library.names()
        removed = sorted(before - set(names))
        updates: ExecutorMap = {name: executor[name] for name in names}
        updates.update({name: None for name in removed})
        self._emit("registered", {"names": names})
        if removed:
            self._emit("removed", {"names": removed})
        return registration.autogen, updates

    # -- snapshots and state ----------------------------------------------------------------------
    def _snapshot(self, summary: StepSummary) -> Path | None:
        directory = self.settings.snapshot_dir
        if directory is None:
            return None
        data = {**self.library.to_dict(), "step": summary.step, "score": summary.score,
                "decision": summary.decision, "best_score": self.best_score,
                "best_version": self._best_version, "early_stop": self._stopped,
                "proposals": self._proposals}
        path = Path(directory) / f"step-{summary.step:04d}.json"
        write_json_atomic(path, data)
        return path

    def state_dict(self) -> dict[str, Any]:
        """Everything a crashed training run needs to resume exactly (no key, no sandbox)."""
        return {
            "format": _STATE_FORMAT,
            "max_actions_per_step": self.max_actions_per_step,
            "optimizer_model": self.optimizer_model,
            "settings": self.settings.to_dict(),
            "library": self.library.to_dict(),
            "initial_library": self._initial,
            "best_version": self._best_version,
            "best_score": self.best_score,
            "failures": self._failures,
            "recorded": [{"history": c.history, "satisfied": c.satisfied, "answer": c.answer}
                         for c in self._recorded],
            "steps_without_improvement": self._steps_without_improvement,
            "stopped": self._stopped,
            "step_count": self.step_count,
            "history": [asdict(s) for s in self.history],
            "registrar": self.registrar.to_dict(),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Continue from `state_dict()` output (the settings stay as constructed)."""
        if not isinstance(state, Mapping) or state.get("format") != _STATE_FORMAT:
            raise OptimizerStateError("not a saved AgentOptimizer state (or of another format)")
        try:
            self.library = FunctionLibrary.from_dict(state["library"])
            self._initial = dict(state["initial_library"])
            self._best_version = state["best_version"]
            self.best_score = state["best_score"]
            self._failures = [dict(f) for f in state["failures"]]
            self._recorded = [Recorded(list(c["history"]), bool(c["satisfied"]),
                                       c.get("answer")) for c in state["recorded"]]
            self._steps_without_improvement = int(state["steps_without_improvement"])
            self._stopped = bool(state["stopped"])
            self.step_count = int(state["step_count"])
            self.history = [StepSummary(**s) for s in state["history"]]
            self.registrar = LLMRegistrar.from_dict(state["registrar"])
        except (KeyError, TypeError, ValueError) as exc:
            raise OptimizerStateError(f"the saved optimizer state is damaged: "
                                      f"{type(exc).__name__}: {exc}") from None

    def save(self, path: str | Path) -> None:
        """state_dict() as JSON, written atomically."""
        write_json_atomic(path, self.state_dict())

    def restore(self, path: str | Path) -> None:
        try:
            state = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise OptimizerStateError(f"cannot read optimizer state {path}: {exc}") from None
        self.load_state(state)

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        if self._events is not None:
            self._events(Event(kind, self.step_count, data))


def _echoes(args: Mapping[str, Any], answer: str, task: str) -> bool:
    """Whether an argument IS the known answer (and not a number the task itself gives): a
    function that returns what it is handed would otherwise pass the answer check."""
    target = _plain(answer)
    stack: list[Any] = list(args.values())
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str | int | float) and not isinstance(item, bool):
            text = _plain(str(item))
            if text and _same(text, target) and text not in _plain(task):
                return True
    return False


def _plain(text: str) -> str:
    return "".join(ch for ch in text if ch not in " $\\{}").lower()[:200]


def _same(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (ValueError, OverflowError):
        return False


_FIELD_IN_CODE = re.compile(
    r"^\s*(tests|examples|packages|parameters|description|reason)\s*=", re.MULTILINE)


def _rejection(spec: FunctionSpec, report: VetReport) -> str:
    """Vetting's findings as the model should read them: what to fix in which function, each
    with the line it is about quoted (a small model does not count lines), and a hint for the
    mistakes small models repeat. Rule ids stay in the record, not in the prompt: a small model
    took `static.import` for a function to write (measured with the 1.5B)."""
    name, errors, code = spec.name, report.errors, spec.code.splitlines()
    lines = []
    for f in errors[:8]:
        where = ""
        if f.line:
            quoted = code[f.line - 1].strip()[:80] if 0 < f.line <= len(code) else ""
            where = f"line {f.line} (`{quoted}`): " if quoted else f"line {f.line}: "
        lines.append(where + f.message)
    hints = []
    if _FIELD_IN_CODE.search(spec.code):
        hints.append("`code` holds the def and its imports only: tests, examples, packages, "
                     "parameters, description and reason are fields of the proposal beside "
                     "it, never lines of the code.")
    if any(f.rule == "tests.failed" and ": expected {" in f.message for f in errors):
        hints.append("`expect` must be the plain value the function returns (for example 6), "
                     "not an object such as {\"value\": 6}.")
    if any(f.rule in ("shape.test-args", "static.signature") for f in errors):
        hints.append("Use exactly the parameter names of `parameters` in the def and in every "
                     "test's args.")
    text = (f"vetting rejected {name}. Fix these problems in {name} and propose {name} again "
            "(the same function, corrected):\n- " + "\n- ".join(lines))
    return (text + ("\n" + " ".join(hints) if hints else ""))[:1800]

