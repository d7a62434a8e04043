"""One episode: an assistant LLM and a user proxy solve one problem, every line of code in the
sandbox.

At its start the episode asks the library's one registration path
(`optimizer.registration.register_for_episode`) what it may use: the functions that pass vetting
against this sandbox now, and how the assistant is shown them (Python signatures with a usage
example in its user turn, by default; as OpenAI tools with `library_as = "tools"`). The user
proxy:
- runs the Python code blocks of a reply with `Sandbox.run`, the library's functions defined (a
  block that re-defines a library name gets the library's version: the runner keeps it),
- runs each tool call as `Sandbox.call` of that function (arguments checked against its schema);
  with tools offered, a code block holding nothing but a JSON call of one is that call (the 1.5B
  model writes its calls that way),
- returns the results as the next messages,
and the episode ends at a final `\\boxed{}` answer, TERMINATE, the turn limit or the time limit.
Both arms of an evaluation get the same system prompt, turns and tokens; only the library (its
block, or its tools and one sentence) differs (compute-matched).

Faults are sorted by whose they are, so the optimizer never learns from noise:
- the code's (an exception, a timeout, a memory limit): a message for the assistant;
- this conversation's (a prompt too long, a request the endpoint refuses): the episode ends
  with outcome ``llm_error``, recorded;
- the infrastructure's: a call lost with a container the engine killed makes the episode run
  again from the start (up to EPISODE_ATTEMPTS times, each fault noted in ``faults``); an
  endpoint or engine that stays away past its retries, a rejected key, a missing model raise,
  so the run stops and resumes later with nothing counted.
The history is OpenAI messages, the form the optimizer reads.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from sandbox import (
    CallResult,
    FunctionSpec,
    InvalidArguments,
    RunResult,
    VetReport,
    template_safe,
)

from .errors import ContextTooLong, LLMRequestError
from .history.calls import CODE_BLOCK, call_data
from .llm import ChatResult, DeadlineExceeded, LLMClient, ToolCall
from .llm.serve import json_call
from .math import Grader, Problem, extract_answer
from .registration import (
    EpisodeRegistration,
    LibraryPresentation,
    register_for_episode,
)

__all__ = [
    "SYSTEM_PROMPT",
    "ConversationResult",
    "EpisodeSettings",
    "Executor",
    "solve",
    "user_turn",
]

EPISODE_ATTEMPTS = 3  # an episode whose sandboxed call the engine lost is run again from the start
CODE_FENCE = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.S)
OUTPUT_CHARS = 2000  # of a code block's output or a tool result, shown to the assistant


class Executor(Protocol):
    """Where the user proxy runs code: a Sandbox (the benchmark also plugs in upstream's way)."""

    def call(self, spec: FunctionSpec, args: dict[str, Any] | None = None, *,
             timeout: float | None = None) -> CallResult: ...

    def run(self, code: str, functions: Sequence[FunctionSpec] = (), *,
            timeout: float | None = None) -> RunResult: ...

    def vet(self, spec: FunctionSpec) -> VetReport: ...


@dataclass(frozen=True)
class EpisodeSettings:
    max_turns: int = 6  # assistant replies
    seconds: float = 600.0  # wall clock of the whole episode
    call_timeout: float = 10.0  # one function call or code block
    max_tokens: int | None = 700  # one assistant reply
    temperature: float | None = 0.0
    library_as: LibraryPresentation = "code"  # "tools": also offered as OpenAI tools
    library_shown: int = 0  # functions shown per problem, the most relevant to it (0: all)


@dataclass
class ConversationResult:
    problem_id: str
    messages: list[dict[str, Any]]
    answer: str | None
    correct: bool
    outcome: str  # answered | terminated | turn_limit | time_limit | llm_error | sandbox_error
    reason: str  # sandbox_error: a call lost to the engine in every one of EPISODE_ATTEMPTS
    turns: int = 0
    tool_calls: int = 0
    code_blocks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    functions: list[str] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)  # every sandboxed call, in order
    grade_reason: str = ""
    faults: list[str] = field(default_factory=list)  # infrastructure faults that restarted it
    library_calls: dict[str, int] = field(default_factory=dict)  # per offered function: tool
    # calls plus calls by name in code blocks
    left_out: list[dict[str, Any]] = field(default_factory=list)  # functions vetting refused
    # at the episode's start (registration.register_for_episode says why)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def used_library(self) -> bool:
        return any(self.library_calls.values())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConversationResult:
        return cls(**data)


DEFAULT_EPISODE = EpisodeSettings()


SYSTEM_PROMPT = (
    "You solve math competition problems by writing Python. Reply with one ```python code "
    "block``` that computes the answer and prints it; it is run for you (sympy, numpy, "
    "fractions and math are available) and its output comes back in the next message. Then "
    "reply with the final answer in \\boxed{} and no code.")
"""The same for every episode and both arms of an evaluation (a stable, cached prefix)."""

STOP = ("```\n", "```output")
"""Where a reply is cut: at the end of its first code block. The 1.5B model writes its code,
then an output of its own invention and a boxed answer from it, and next turn repeats that
answer over the real output (measured: README, "Learning"). Cut there, the code is run and the
real output is all it has to go on. (An opening fence names its language, ```python, so only a
closing fence ends a line with the three backticks; `_closed` puts back the one cut off.)"""
_ASK = "Write Python that computes the answer to this problem and prints it."
_ASK_LIBRARY = " Call the functions above where they fit."
_ASK_TOOLS = ("Solve this problem. Call the tool that computes what it asks, if one does; "
              "otherwise write Python that computes the answer and prints it.")
"""Offered as tools. Pressed harder to use them, the 1.5B model calls one more often and
answers fewer problems: "call the one that fits" 15 of 24 calls and 7 of 24 answers against 13
without, this wording 5 and 15 (README, "Learning")."""
_PROBLEM_HEAD = "Problem: "
"""The instruction sits in the user turn, right before the problem: the 1.5B model follows
instructions there far better than in the system turn (README, "Learning")."""


def user_turn(problem: Problem, registration: EpisodeRegistration) -> str:
    """The library block first (stable across problems, so the server reuses its prefix), the
    instruction, then the problem. Offered as tools, the functions are in the system turn
    instead (the server lays them out as the model's chat template does)."""
    if registration.tools():
        block, ask = "", _ASK_TOOLS
    else:
        block = registration.prompt_block()
        ask = _ASK + (_ASK_LIBRARY if block else "")
    return ((f"{block}\n\n" if block else "")
            + f"{ask}\n\n{_PROBLEM_HEAD}{template_safe(problem.question)}")


def task_of(first_user_turn: str) -> str:
    """The problem of an episode's first user turn, without the library block and instruction."""
    # the library block's lines cannot hold a line break (registration quotes them), so the
    # first blank line before the head is the instruction's
    head = first_user_turn.find("\n\n" + _PROBLEM_HEAD)
    return first_user_turn[head + 2 + len(_PROBLEM_HEAD):] if head >= 0 else first_user_turn


def solve(problem: Problem, *, client: LLMClient, sandbox: Executor,
          functions: Sequence[FunctionSpec], grader: Grader,
          settings: EpisodeSettings = DEFAULT_EPISODE,
          on_call: Callable[[dict[str, Any]], None] | None = None) -> ConversationResult:
    """Run one episode and grade it (the module doc says which faults raise)."""
    faults: list[str] = []
    for _ in range(EPISODE_ATTEMPTS):
        result = _episode(problem, client, sandbox, functions, grader, settings, on_call)
        if result.outcome != "sandbox_error":
            break
        faults.append(result.reason)
    result.faults = faults if result.outcome != "sandbox_error" else faults[:-1]
    return result


def _episode(problem: Problem, client: LLMClient, sandbox: Executor,
             functions: Sequence[FunctionSpec], grader: Grader, settings: EpisodeSettings,
             on_call: Callable[[dict[str, Any]], None] | None) -> ConversationResult:
    started = time.monotonic()
    registration = register_for_episode(functions, sandbox, settings.library_as).for_task(
        problem.question, settings.library_shown or None)
    by_name = {s.name: s for s in registration.functions}
    tools = registration.tools()
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user_turn(problem, registration)}]
    result = ConversationResult(problem.id, messages, None, False, "turn_limit",
                                f"no final answer in {settings.max_turns} turns",
                                functions=sorted(s.name for s in registration.offered),
                                left_out=list(registration.left_out))

    def used(name: str, times: int = 1) -> None:
        result.library_calls[name] = result.library_calls.get(name, 0) + times
    lost: list[str] = []  # a call the engine lost: the episode is void

    def record(call: dict[str, Any]) -> None:
        call["problem_id"] = problem.id
        result.calls.append(call)
        if on_call is not None:
            on_call(call)

    def check(outcome: CallResult) -> None:
        if outcome.error is not None and outcome.error.lost_to_engine:
            lost.append(outcome.error.message)

    final = ""
    for turn in range(1, settings.max_turns + 1):
        if time.monotonic() - started > settings.seconds:
            result.outcome, result.reason = "time_limit", f"over {settings.seconds:g} s"
            break
        try:
            # "auto" said, not implied: llama-cpp-python's function-calling template renders
            # no tools at all for a request without tool_choice (OpenAI's default is "auto")
            reply = client.chat("assistant", messages, tools=tools,
                                tool_choice="auto" if tools else None,
                                max_tokens=settings.max_tokens,
                                temperature=settings.temperature, stop=STOP,
                                deadline=started + settings.seconds)
        except DeadlineExceeded:  # the episode's own time ran out while the model answered
            result.outcome, result.reason = "time_limit", f"over {settings.seconds:g} s"
            break
        except (ContextTooLong, LLMRequestError) as exc:
            if isinstance(exc, LLMRequestError) and exc.status in (None, 402, 404, 429):
                raise  # quota, billing, a wrong URL: the endpoint's, not this episode's
            result.outcome, result.reason = "llm_error", str(exc)[:500]
            break
        if tools and not reply.tool_calls:
            reply = _written_calls(reply, by_name)
        result.turns = turn
        result.prompt_tokens += reply.prompt_tokens
        result.completion_tokens += reply.completion_tokens
        message = _assistant_message(reply)
        messages.append(message)
        text = str(message.get("content") or "")
        if reply.tool_calls:
            for call in reply.tool_calls:
                result.tool_calls += 1
                if call.name in by_name:
                    used(call.name)
                messages.append(_tool_message(call.id, call.name, call.arguments, by_name,
                                              sandbox, settings, record, check))
        elif blocks := CODE_FENCE.findall(text):
            result.code_blocks += 1
            code = "\n\n".join(blocks)
            try:
                run = sandbox.run(code, list(by_name.values()), timeout=settings.call_timeout)
            except InvalidArguments as exc:  # e.g. a block over the request size limit
                messages.append({"role": "user", "content": f"error: {exc}"[:OUTPUT_CHARS]})
                continue
            for name, times in run.calls.items():  # what the block called, as it ran
                if name in by_name and times:
                    used(name, times)
            record(call_data(CODE_BLOCK, code, run))
            check(run)
            messages.append({"role": "user", "content": _run_output(run)})
        else:
            final = text
            if extract_answer(text) is not None:
                result.outcome, result.reason = "answered", "final answer given"
                break
            if "TERMINATE" in text:
                result.outcome, result.reason = "terminated", "TERMINATE without an answer"
                break
            messages.append({"role": "user", "content": "Continue. When you are done, give "
                             "the final answer in \\boxed{}."})
        if lost:
            result.outcome, result.reason = "sandbox_error", lost[0][:500]
            break
    final = final or next((str(m.get("content") or "") for m in reversed(messages)
                           if m.get("role") == "assistant" and m.get("content")), "")
    grade = grader.grade(final, problem.answer)
    result.answer, result.correct, result.grade_reason = grade.extracted, grade.correct, \
        grade.reason
    if result.outcome == "sandbox_error":
        result.correct = False  # a void episode is never counted as solved
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _assistant_message(reply: ChatResult) -> dict[str, Any]:
    message = reply.assistant_message()
    message["content"] = _closed(message["content"])
    return message


def _written_calls(reply: ChatResult, offered: Mapping[str, FunctionSpec]) -> ChatResult:
    """A reply whose code blocks each hold nothing but a JSON call of an offered tool,
    {"name": ..., "arguments": {...}}, as those calls. Offered tools and told to write code, the
    1.5B model writes its calls that way, not in its template's tool-call format (README,
    "Learning"); run as code, such a block would print nothing."""
    text = _closed(reply.text or "")
    calls = []
    for block in CODE_FENCE.findall(text):
        call = json_call(block)
        if call is None or call[0] not in offered or not isinstance(call[1], dict):
            return reply
        calls.append(ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", name=call[0],
                              arguments=json.dumps(call[1])))
    if not calls:
        return reply
    return dataclasses.replace(reply, text=text[:text.find("```")].rstrip(),
                               tool_calls=tuple(calls))


def _closed(text: str) -> str:
    """A reply whose last code block was cut at its closing fence (STOP), closed again."""
    return text.rstrip() + "\n```" if text.count("```") % 2 else text


def _tool_message(call_id: str, name: str, arguments: str, by_name: dict[str, FunctionSpec],
                  sandbox: Executor, settings: EpisodeSettings,
                  record: Callable[[dict[str, Any]], None],
                  check: Callable[[CallResult], None]) -> dict[str, Any]:
    """The result of one tool call as the assistant will read it (errors included)."""
    def reply(content: str) -> dict[str, Any]:
        return {"role": "tool", "tool_call_id": call_id, "content": content}

    spec = by_name.get(name)
    if spec is None:
        return reply(f"Error: there is no function {name!r}; available: "
                     f"{', '.join(sorted(by_name)) or 'none'}")
    try:
        args = json.loads(arguments or "{}")
    except ValueError as exc:
        return reply(f"Error: the arguments are not valid JSON ({exc}); call {name} again")
    if not isinstance(args, dict):
        return reply(f"Error: the arguments must be a JSON object; call {name} again")
    try:
        result = sandbox.call(spec, args, timeout=settings.call_timeout)
    except InvalidArguments as exc:
        return reply(f"Error: {exc}")
    record(call_data(name, args, result, code_hash=spec.code_hash))
    check(result)
    if result.ok:
        return reply(json.dumps(result.value)[:OUTPUT_CHARS])
    err = result.error
    return reply(f"Error: {err.type}: {err.message}"[:OUTPUT_CHARS] if err else "Error")


def _run_output(run: RunResult) -> str:
    out = run.stdout.strip()
    err = run.stderr.strip()
    parts = [f"exitcode: {run.exit_code} ({'execution succeeded' if run.ok else 'failed'})"]
    if out:
        parts.append("output:\n" + out[-OUTPUT_CHARS:])
    if err:
        parts.append("error:\n" + err[-OUTPUT_CHARS:])
    if run.error and not err:
        parts.append(f"error: {run.error.type}: {run.error.message}"[:OUTPUT_CHARS])
    return "\n".join(parts)
