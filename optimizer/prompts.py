"""What the optimizer LLM reads: a stable instruction block, then the library, the failure
experience and the conversations, all within a token budget.

Upstream sends every conversation in full, so context limits cap the training set. Here each
conversation is boiled down to its key lines (the task, the tool calls and their results, the
code that failed and its error, the final answer), failed conversations come first, the rest is
a sample spread over the different ways the agent worked, and everything is cut to a budget.
The stable part (instructions, rules, a worked example) comes first, so a local llama.cpp server
reuses its cached prefix from one call to the next.

Everything in the variable part that fnforge did not write (function descriptions and code,
conversations, tool results, errors) is data, never instructions: each untrusted value is quoted
onto one line with `quote_untrusted`, and whole sections of such lines (or of code) go inside an
`untrusted_block`, whose end marker the data cannot forge. Other prompts use the same two
helpers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sandbox import FunctionSpec, allowed_modules

from .conversation import task_of
from .quoting import quote_untrusted, untrusted_block

__all__ = ["PromptBudget", "PromptStats", "Recorded", "digest", "estimate_tokens",
           "quote_untrusted", "system_prompt", "untrusted_block", "user_prompt"]


@dataclass(frozen=True)
class PromptBudget:
    """Tokens per optimizer call (estimated at 3.2 characters a token: code and math are dense)."""

    max_prompt_tokens: int = 6000
    library_tokens: int = 1800  # the current functions, code included while it fits
    failure_tokens: int = 500  # function sets that scored worse
    reserve_tokens: int = 900  # this step's earlier actions and their outcomes
    per_conversation_chars: int = 1400  # one conversation's key lines at most


@dataclass(frozen=True)
class Recorded:
    """One conversation the optimizer learns from."""

    history: list[dict[str, Any]]
    satisfied: bool
    answer: str | None = None  # the problem's known answer, when the caller gave it


@dataclass(frozen=True)
class PromptStats:
    conversations: int
    shown: int
    failed_shown: int
    estimated_tokens: int


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 3.2)


# -- untrusted text into prompts ------------------------------------------------------------------
_EXAMPLE = {
    "name": "count_divisors",
    "description": "Number of positive divisors of a positive integer n.",
    "parameters": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}},
                   "required": ["n"]},
    "code": "import sympy\n\ndef count_divisors(n):\n    return int(sympy.divisor_count(n))\n",
    "packages": ["sympy"],
    "tests": [{"args": {"n": 12}, "expect": 6}, {"args": {"n": 1}, "expect": 1}],
}


def system_prompt() -> str:
    """The stable instructions: the same text for every call of a run."""
    modules = ", ".join(sorted(allowed_modules()))
    return (
        "You improve the function library of a math-solving agent. The agent is an LLM that "
        "solves competition math problems step by step; it can call the library's functions "
        "as tools and use them in the Python code it writes. You read what happened in its "
        "recent conversations and change the library so that it solves more problems: add a "
        "new function, revise a function that failed or misled it, or remove one that is "
        "useless or harmful. When no change would help, terminate.\n\n"
        "Every function you propose is checked automatically before the agent may use it; "
        "one that breaks a rule is rejected and you are told why:\n"
        "- code is ONE Python function `def NAME(...)` (small helpers allowed) whose keyword "
        "parameters are exactly the properties of `parameters`, a JSON schema of type object; "
        "a parameter without a default value must be listed in `required`;\n"
        f"- it may import only: {modules}; no files, network, processes, eval/exec, classes, "
        "global state, or names that start with an underscore;\n"
        "- it returns numbers, strings, booleans, lists or dicts (a sympy result becomes its "
        "string form) and raises ValueError on bad input;\n"
        "- `tests` holds 1 to 3 calls with their expected value: {\"args\": {...}, \"expect\": "
        "value}, using exactly the parameter names; `expect` is exactly what the function "
        "returns (6, [1, 2], \"x\"), never an object describing it; the tests run before the "
        "function is accepted;\n"
        "- it is general and reusable (solving, counting, number theory, geometry, algebra "
        "helpers), never the answer to one particular problem.\n\n"
        "- `examples` holds calls that answer recorded conversations' problems: the "
        "conversation's number and the arguments taken from its task; the function is applied "
        "only if what it returns for them is the known answer (at least two when two or more "
        "conversations are shown), so propose functions that compute whole answers.\n\n"
        "A good add_function proposal looks like this:\n"
        + json.dumps({"action": "add_function", "reason": "the agent miscounted divisors by "
                      "hand in two problems", "function": _EXAMPLE,
                      "examples": [{"conversation": 2, "args": {"n": 196}},
                                   {"conversation": 5, "args": {"n": 72}}]})
        + "\n\nPropose one change at a time."
    )


def user_prompt(library: Sequence[FunctionSpec], failures: Sequence[Mapping[str, Any]],
                conversations: Sequence[Recorded], budget: PromptBudget,
                allowed: Sequence[str]) -> tuple[str, PromptStats]:
    """The variable part: the library, earlier worse sets, then the conversations."""
    parts = [_library_text(library, budget.library_tokens)]
    failure_text = _failures_text(failures, budget.failure_tokens)
    if failure_text:
        parts.append(failure_text)
    used = estimate_tokens(system_prompt()) + sum(estimate_tokens(p) for p in parts)
    left = budget.max_prompt_tokens - used - budget.reserve_tokens - 200
    conv_text, shown, failed_shown = _conversations_text(
        conversations, max(left, 400) * 3.2, budget.per_conversation_chars)
    parts.append(conv_text)
    parts.append(f"Choose one of: {', '.join(allowed)}.")
    text = "\n\n".join(parts)
    stats = PromptStats(conversations=len(conversations), shown=shown,
                        failed_shown=failed_shown,
                        estimated_tokens=estimate_tokens(system_prompt()) + estimate_tokens(text))
    return text, stats


def _library_text(library: Sequence[FunctionSpec], tokens: int) -> str:
    if not library:
        return "The library is empty: the agent has no functions yet."
    lines = []
    budget = tokens * 3.2
    for spec in library:
        params = quote_untrusted(", ".join(spec.parameters.get("properties", {})), 200)
        head = f"- {spec.name}({params}): {quote_untrusted(spec.description, 400)}"
        with_code = f"{head}\n{_fenced(spec.code.rstrip())}"
        entry = with_code if len(with_code) <= budget else head
        budget -= len(entry)
        lines.append(entry if budget > 0 else f"- {spec.name}({params})")
    return (f"The library has {len(library)} function(s):\n"
            + untrusted_block("library", "\n".join(lines)))


def _fenced(code: str) -> str:
    """Code in a Markdown fence longer than any run of backticks inside it."""
    longest = max((len(run) for run in re.findall("`+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}python\n{code}\n{fence}"


def _failures_text(failures: Sequence[Mapping[str, Any]], tokens: int) -> str:
    if not failures:
        return ""
    lines = ["Function sets that scored worse than the current one (do not go back to them):"]
    budget = tokens * 3.2
    for f in sorted(failures, key=lambda f: -float(f.get("score", 0.0))):
        line = (f"- score {float(f.get('score', 0.0)):.2f}: "
                + ", ".join(quote_untrusted(f"{n}: {d}", 120)
                            for n, d in f.get("functions", {}).items()))
        if len(line) > budget:
            break
        budget -= len(line)
        lines.append(line or "- (empty library)")
    return lines[0] + "\n" + untrusted_block("worse sets", "\n".join(lines[1:]))


def _conversations_text(conversations: Sequence[Recorded], chars: float,
                        per_conversation: int) -> tuple[str, int, int]:
    """Failed first, then the rest spread over the tools each used; until the budget is met."""
    failed = [(i, c) for i, c in enumerate(conversations) if not c.satisfied]
    solved = [(i, c) for i, c in enumerate(conversations) if c.satisfied]
    ordered = failed + _spread(solved)
    out, shown, failed_shown = [], 0, 0
    for i, conv in ordered:
        text = digest(conv.history, conv.satisfied, i + 1, per_conversation, conv.answer)
        if len(text) > chars:
            break
        chars -= len(text)
        out.append(text)
        shown += 1
        failed_shown += not conv.satisfied
    n_ok = len(solved)
    head = (f"Conversations since the last change: {len(conversations)} ({n_ok} solved, "
            f"{len(failed)} failed); {shown} shown below, failed first.")
    body = untrusted_block("conversations", "\n\n".join(out)) if out else ""
    return "\n\n".join([head, body]) if body else head, shown, failed_shown


def _spread(items: list[tuple[int, Recorded]]) -> list[tuple[int, Recorded]]:
    """Round-robin over groups of conversations that used the same tools: a diverse sample."""
    groups: dict[tuple[str, ...], list[tuple[int, Recorded]]] = {}
    for item in items:
        groups.setdefault(_tools_used(item[1].history), []).append(item)
    out: list[tuple[int, Recorded]] = []
    queues = list(groups.values())
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def _tools_used(history: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    names = {str(c.get("function", {}).get("name", "")) for m in history
             for c in (m.get("tool_calls") or []) if isinstance(c, Mapping)}
    return tuple(sorted(names))


_CODE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S)


def digest(history: Sequence[Mapping[str, Any]], satisfied: bool, number: int,
           max_chars: int, answer: str | None = None) -> str:
    """A conversation's key lines: the task, tool calls and results, failing code and its
    error, the final answer (and the known one, which worked examples must reproduce)."""
    known = f"; known answer: {_clip(answer, 80)}" if answer is not None else ""
    lines = [f"Conversation {number} ({'solved' if satisfied else 'FAILED'}{known}):"]
    messages = [m for m in history if isinstance(m, Mapping)]
    task = next((_text(m) for m in messages if m.get("role") == "user"), "")
    lines.append(f"  task: {_clip(task_of(task), 500)}")
    for m in messages:
        role = m.get("role")
        if role == "assistant":
            for call in m.get("tool_calls") or []:
                fn = call.get("function", {}) if isinstance(call, Mapping) else {}
                lines.append(f"  calls {_clip(str(fn.get('name')), 80)}"
                             f"({_clip(str(fn.get('arguments')), 160)})")
            code = _CODE.findall(_text(m))
            if code:
                lines.append(f"  runs code: {_clip(code[-1].strip(), 300)}")
        elif role == "tool":
            lines.append(f"  tool result: {_clip(_text(m), 200)}")
        elif role == "user" and m is not messages[0] and messages and task != _text(m):
            text = _text(m)
            if "error" in text.lower() or "traceback" in text.lower() or "exitcode" in text:
                lines.append(f"  execution: {_clip(_last_lines(text, 4), 300)}")
    final = next((_text(m) for m in reversed(messages) if m.get("role") == "assistant"
                  and _text(m)), "")
    lines.append(f"  final answer: {_clip(_last_lines(final, 3), 250)}")
    text = "\n".join(lines)
    return text if len(text) <= max_chars else text[: max_chars - 4] + " ..."


def _text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def _last_lines(text: str, n: int) -> str:
    return " / ".join(line.strip() for line in text.strip().splitlines()[-n:])


def _clip(text: str, n: int) -> str:
    """One line of untrusted conversation text (runs of whitespace joined first)."""
    return quote_untrusted(" ".join(text.split()), n)
