"""What the optimizer LLM reads (optimizer/prompts.py): a stable instruction block, then the
library, the worse sets and the conversations, failed first, all within the token budget.

Pure text: no model, no Docker.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from optimizer.prompts import (
    PromptBudget,
    Recorded,
    digest,
    estimate_tokens,
    system_prompt,
    user_prompt,
)
from sandbox import FunctionSpec, allowed_modules

from .conftest import make_spec

RECORDED = Path(__file__).parent / "data" / "recorded_math.jsonl"
ACTIONS = ["add_function", "revise_function", "remove_function", "terminate"]


def recorded() -> list[Recorded]:
    rows = [json.loads(line) for line in RECORDED.read_text().splitlines() if line.strip()]
    return [Recorded(r["history"], bool(r["satisfied"])) for r in rows]


def conversation(task: str, satisfied: bool, tools: tuple[str, ...] = (),
                 answer: str = "\\boxed{4}") -> Recorded:
    calls = [{"id": f"c{i}", "type": "function",
              "function": {"name": name, "arguments": '{"n": 12}'}}
             for i, name in enumerate(tools)]
    history: list[dict[str, Any]] = [{"role": "user", "content": task}]
    if calls:
        history += [{"role": "assistant", "content": None, "tool_calls": calls},
                    *({"role": "tool", "tool_call_id": c["id"], "content": "6"} for c in calls)]
    history.append({"role": "assistant", "content": answer})
    return Recorded(history, satisfied)


def test_the_system_prompt_is_stable_and_its_example_is_a_valid_spec() -> None:
    text = system_prompt()
    assert text == system_prompt()  # the same bytes every call: the server reuses its prefix
    for module in allowed_modules():
        assert module in text
    example = json.loads(text[text.index("{\"action\""):text.index("\n\nPropose one change")])
    spec = FunctionSpec.from_dict(example["function"])
    assert spec.name == "count_divisors" and spec.tests


def test_the_prompt_stays_within_its_budget_however_many_conversations() -> None:
    many = recorded() * 10
    for tokens in (6000, 3000, 1500):
        budget = PromptBudget(max_prompt_tokens=tokens)
        text, stats = user_prompt([], [], many, budget, ACTIONS)
        assert stats.conversations == 100 and 0 < stats.shown < 100
        assert stats.estimated_tokens == estimate_tokens(system_prompt()) + estimate_tokens(text)
        assert stats.estimated_tokens <= tokens
        assert text.endswith(f"Choose one of: {', '.join(ACTIONS)}.")


def test_failed_conversations_come_first() -> None:
    convs = [conversation(f"solved task {i}", True) for i in range(6)] + \
        [conversation(f"failed task {i}", False) for i in range(3)]
    text, stats = user_prompt([], [], convs, PromptBudget(), ACTIONS)
    assert stats.failed_shown == 3 and stats.shown == 9
    headers = re.findall(r"Conversation \d+ \((solved|FAILED)\)", text)
    assert headers[:3] == ["FAILED"] * 3 and set(headers[3:]) == {"solved"}
    assert "9 (6 solved, 3 failed); 9 shown below, failed first" in text


def test_solved_conversations_are_sampled_across_the_tools_they_used() -> None:
    long = " and".join(["a long task"] * 40)  # ~450 characters a digest: 2 fit the minimum
    convs = [conversation(f"plain {i}: {long}", True) for i in range(5)] + \
        [conversation(f"with a tool: {long}", True, ("count_divisors",))]
    tight = PromptBudget(max_prompt_tokens=1000, library_tokens=50, reserve_tokens=0)
    text, stats = user_prompt([], [], convs, tight, ACTIONS)
    assert stats.shown == 2
    assert "plain 0" in text and "calls count_divisors" in text  # one of each kind


def test_the_library_is_shown_with_code_while_it_fits() -> None:
    assert "The library is empty" in user_prompt([], [], [], PromptBudget(), ACTIONS)[0]
    small = make_spec("def add(a, b):\n    return a + b\n")
    big = make_spec("def pad(n):\n    return n\n" + "# filler\n" * 400)
    text, _ = user_prompt([small, big], [], [], PromptBudget(library_tokens=300), ACTIONS)
    assert "The library has 2 function(s)" in text
    assert "def add(a, b)" in text and "# filler" not in text  # pad: its head line only
    assert "- pad(n): pad (test)" in text


def test_worse_sets_are_listed_best_first_within_their_budget() -> None:
    failures = [{"score": 0.2, "functions": {"low": "scored 0.2"}},
                {"score": 0.4, "functions": {"high": "scored 0.4"}}]
    text, _ = user_prompt([], failures, [], PromptBudget(), ACTIONS)
    assert "scored worse" in text and text.index("high: scored 0.4") < text.index("low: scored")
    text, _ = user_prompt([], failures, [], PromptBudget(failure_tokens=1), ACTIONS)
    assert "scored worse" in text and "high" not in text
    assert "scored worse" not in user_prompt([], [], [], PromptBudget(), ACTIONS)[0]


def test_a_digest_keeps_the_key_lines_within_its_size() -> None:
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "What is the sum of the divisors of 12?"},
        {"role": "assistant", "content": "```python\nprint(sum(divisors(12)))\n```"},
        {"role": "user", "content": "exitcode: 1\nTraceback ...\nNameError: divisors"},
        {"role": "assistant", "content": [{"type": "text", "text": "The sum is \\boxed{28}"}]}]
    text = digest(history, False, 7, 2000)
    assert text.startswith("Conversation 7 (FAILED):")
    assert "task: What is the sum" in text and "runs code: print(sum(divisors(12)))" in text
    assert "execution:" in text and "NameError: divisors" in text
    assert "final answer: The sum is \\boxed{28}" in text
    short = digest(history, False, 7, 80)
    assert len(short) <= 80 and short.endswith(" ...")


@pytest.mark.parametrize("history", [[], [{"role": "user"}], ["not a message", 3],
                                     [{"role": "assistant", "tool_calls": ["junk"]}]])
def test_a_digest_of_malformed_history_does_not_raise(history: list[Any]) -> None:
    assert digest(history, True, 1, 500).startswith("Conversation 1 (solved):")
