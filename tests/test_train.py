"""Training and evaluation end to end: real sandbox, real grader, the scripted LLM server answering
as the assistant and as the optimizer (a responder decides each reply from the request, so
conversations can run concurrently and a killed run can resume in any order).

The script: with an empty library the assistant gets half the problems wrong; the optimizer
proposes a malicious function (refused by vetting), then `add_numbers` with worked examples that
miss the known answers (refused by the answer check), then with examples that hit (applied);
with it the assistant calls `add_numbers` in its code and gets all right (an accepted step); the
optimizer then adds `hurt`, with which it gets all wrong (a rolled-back step); then it
terminates.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from optimizer.conversation import STOP, ConversationResult, EpisodeSettings, solve, task_of
from optimizer.evaluate import evaluate, mcnemar_exact, wilson
from optimizer.libraries import vetted_library
from optimizer.math import Grader, Problem
from optimizer.registration import LibraryPresentation
from optimizer.runconfig import load_run_config
from optimizer.train import RunDirectory, train
from sandbox import FunctionSpec, Sandbox
from tests.scripted_llm import TEST_KEY, Reply, ScriptedLLM, client_for, text, tool_call

pytestmark = pytest.mark.timeout(600)

PROBLEMS = [{"id": f"p{i}", "question": f"What is {i} plus {i + 1}?", "answer": str(2 * i + 1),
             "type": "Arithmetic"} for i in range(1, 9)]
ADD = {"name": "add_numbers", "description": "The sum of two integers a and b.",
       "parameters": {"type": "object", "properties": {"a": {"type": "integer"},
                                                        "b": {"type": "integer"}},
                      "required": ["a", "b"]},
       "code": "def add_numbers(a, b):\n    return a + b\n",
       "tests": [{"args": {"a": 2, "b": 3}, "expect": 5}], "reason": "adding by hand failed"}
EVIL = {**ADD, "name": "shell", "description": "Runs a shell command (malicious).",
        "code": "import os\ndef shell(a, b):\n    return os.system('id') + a + b\n"}
HURT = {"name": "hurt", "description": "A correct sum whose offer misleads the agent.",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"},
                                                        "b": {"type": "integer"}},
                       "required": ["a", "b"]},
        "code": "def hurt(a, b):\n    return a + b\n",
        "tests": [{"args": {"a": 1, "b": 1}, "expect": 2}], "reason": "test"}


def conversations(prompt: str) -> dict[int, tuple[int, int]]:
    """The optimizer prompt's conversations: number -> the two addends of its task."""
    found = re.findall(r"Conversation (\d+) \(.*?\n  task: What is (\d+) plus (\d+)",
                       prompt)
    return {int(n): (int(a), int(b)) for n, a, b in found}


def examples(prompt: str, right: bool = True) -> list[dict[str, Any]]:
    """Worked examples for add_numbers: the tasks' addends (or, wrong, the first one twice)."""
    return [{"conversation": n, "args": {"a": a, "b": b if right else a}}
            for n, (a, b) in sorted(conversations(prompt).items())[:2]]


def respond(body: dict[str, Any]) -> Reply | None:
    """The assistant and the optimizer, decided by what the request holds."""
    tool_names = {t["function"]["name"] for t in body.get("tools") or []}
    messages = body["messages"]
    if "add_function" in tool_names:  # the optimizer
        prompt = messages[1]["content"]
        last_text = str(messages[-1].get("content"))
        if messages[-1]["role"] == "tool" and "known answer" in last_text:
            return tool_call("add_function", {**ADD, "examples": examples(prompt)})
        if messages[-1]["role"] == "tool" and last_text.startswith("Not applied"):
            # the malicious one was refused: a real function, but with examples that miss
            return tool_call("add_function", {**ADD, "examples": examples(prompt, right=False)})
        if messages[-1]["role"] == "tool" or "next change" in last_text:
            return tool_call("terminate", {"reason": "one change per step"})
        if "library is empty" in prompt:
            return tool_call("add_function", EVIL)
        if "hurt(" not in prompt:
            return tool_call("add_function", {**HURT, "examples": examples(prompt)})
        return tool_call("terminate", {"reason": "done"})
    user = next(m["content"] for m in messages if m["role"] == "user")
    library, _, question = user.rpartition("Problem: ")
    a, b = (int(x) for x in re.findall(r"\d+", question)[:2])
    last = messages[-1]
    if "hurt(" in library:
        return text(f"The answer is \\boxed{{{a + b + 1}}}.")
    if "add_numbers(" in library and not last["content"].startswith("exitcode"):
        return text(f"```python\nprint(add_numbers(a={a}, b={b}))\n```")
    if last["role"] == "user" and last["content"].startswith("exitcode"):
        output = last["content"].split("output:\n", 1)[1].strip()
        return text(f"\\boxed{{{output}}}")
    if a % 2:  # no library: odd problems by code (right), even ones by hand (wrong)
        return text(f"```python\nprint({a} + {b})\n```")
    return text(f"By hand: \\boxed{{{a + b + 2}}}")


@pytest.fixture
def server() -> Iterator[ScriptedLLM]:
    s = ScriptedLLM(responder=respond).start()
    try:
        yield s
    finally:
        s.stop()


def write_config(tmp_path: Path, server: ScriptedLLM, epochs: int = 3,
                 concurrency: int = 3) -> Path:
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    config = tmp_path / "run.toml"
    config.write_text(f"""
[data]
dataset = "jsonl"
file = "{data}"
train_per_type = 2
val_per_type = 4
test_per_type = 2
seed = 1

[train]
epochs = {epochs}
max_actions_per_step = 1
concurrency = {concurrency}
patience = 5

[episode]
max_turns = 4
call_timeout = 10.0

[sandbox]
pool_size = 2

[llm]
base_url = "{server.base_url}"
model = "scripted-model"
max_retries = 1
""")
    return config


def journal_keys(run: Path) -> list[tuple[int, str, str]]:
    return [(r["epoch"], r["phase"], r["result"]["problem_id"])
            for r in RunDirectory(run).journal()]


def test_training_accepts_a_helpful_step_and_rolls_back_a_harmful_one(
        tmp_path: Path, server: ScriptedLLM, monkeypatch: pytest.MonkeyPatch,
        sandbox: Sandbox) -> None:
    config = load_run_config(write_config(tmp_path, server))
    client = client_for(server, monkeypatch)
    summary = train(config, tmp_path / "run", client=client, sandbox=sandbox)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [m["decision"] for m in metrics] == ["first", "accepted", "rolled_back"]
    first, second, third = (m["validation_accuracy"] for m in metrics)
    assert first < 1.0 and second == 1.0 and third == 0.0
    assert summary.functions == ["add_numbers"] and summary.best_score == 1.0
    run = tmp_path / "run"
    for name in ("config.json", "split.json", "journal.jsonl", "checkpoint.json",
                 "events.jsonl", "curves.png", "library.json", "steps/step-0003.json"):
        assert (run / name).exists(), name
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keys = journal_keys(run)
    assert len(keys) == len(set(keys)) == 3 * (2 + 4)
    kinds = {json.loads(line)["kind"] for line in (run / "events.jsonl").open()}
    assert {"proposal", "vet", "applied", "decision", "step", "llm_call"} <= kinds
    first = json.loads((run / "steps" / "step-0001.json").read_text())
    assert [(p["name"], p["outcome"]) for p in first["proposals"]] == [
        ("shell", "refused"), ("add_numbers", "refused"), ("add_numbers", "applied")]
    assert "import of 'os' is not allowed" in first["proposals"][0]["why"]
    assert "known answer" in first["proposals"][1]["why"]  # examples that missed
    checks = [json.loads(line)["data"] for line in (run / "events.jsonl").open()
              if json.loads(line)["kind"] == "answer_check"]
    assert [(c["name"], c["hits"]) for c in checks][:2] == [("add_numbers", 0),
                                                            ("add_numbers", 2)]
    second = metrics[1]  # with add_numbers, the assistant called it in every conversation
    assert second["library_use"]["rate"] == 1.0
    assert second["library_use"]["per_function"] == {"add_numbers": 6}
    versions = json.loads((run / "library.json").read_text())["history"]
    assert all(f["name"] != "shell" for v in versions for f in v["functions"])
    for record in RunDirectory(run).journal():  # never offered to the assistant, never called
        assert "shell" not in record["result"]["functions"]
        assert all(c["function"] != "shell" for c in record["result"]["calls"])
    review_the_history(run)


def review_the_history(run: Path) -> None:
    """The run's history verifies, its report shows the refused proposal, and an edit of any
    row is caught and named."""
    import sqlite3

    def review(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "optimizer", "review", *args],
                              capture_output=True, text=True, timeout=120)

    verified = review("verify", str(run))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    shown = review(str(run), "--out", str(run / "review.html"))
    assert shown.returncode == 0, shown.stderr
    # offered in epochs 2 and 3; called in epoch 2 only (beside `hurt`, the script answers by hand)
    assert re.search(r"add_numbers@1 .*used in 6/12 conversations", shown.stdout), shown.stdout
    html = (run / "review.html").read_text()
    assert "shell" in html and "add_numbers" in html and "static.import" in html
    with sqlite3.connect(run / "history.sqlite") as db:
        kinds = {k for (k,) in db.execute("SELECT kind FROM records")}
        assert {"run", "proposal", "vet", "call", "conversation", "metrics"} <= kinds
        db.execute("UPDATE records SET time = time + 1 WHERE seq = 7")
    broken = review("verify", str(run))
    assert broken.returncode == 1 and "record 7" in broken.stdout + broken.stderr


def test_a_killed_run_resumes_with_nothing_lost_or_repeated(
        tmp_path: Path, server: ScriptedLLM, sandbox: Sandbox) -> None:
    config = write_config(tmp_path, server, epochs=2, concurrency=2)
    run = tmp_path / "run"
    env = {**os.environ, "OPENAI_API_KEY": TEST_KEY}
    command = [sys.executable, "-m", "optimizer", "train", "--config", str(config),
               "--run-dir", str(run)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(journal_keys(run)) < 4:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # mid-epoch, mid-write perhaps
    proc.wait()
    done_before = journal_keys(run)
    assert 4 <= len(done_before) < 12
    resumed = subprocess.run([sys.executable, "-m", "optimizer", "train", "--resume", str(run)],
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    keys = journal_keys(run)
    assert keys[:len(done_before)] == done_before  # nothing finished was redone
    assert len(keys) == len(set(keys)) == 2 * (2 + 4)  # nothing lost, nothing twice
    assert [m["decision"] for m in json.loads((run / "metrics.json").read_text())] == [
        "first", "accepted"]


def test_evaluation_pairs_the_arms_and_prints_the_table(
        tmp_path: Path, server: ScriptedLLM, monkeypatch: pytest.MonkeyPatch,
        sandbox: Sandbox) -> None:
    config = load_run_config(write_config(tmp_path, server, epochs=2))
    train(config, tmp_path / "run", client=client_for(server, monkeypatch), sandbox=sandbox)
    env = {**os.environ, "OPENAI_API_KEY": TEST_KEY}
    out = subprocess.run([sys.executable, "-m", "optimizer", "eval", "--run",
                          str(tmp_path / "run")], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    overall = report["rows"][-1]
    assert overall["subject"] == "all" and overall["n"] == 2
    assert overall["library"]["accuracy"] == 1.0
    assert "McNemar" in out.stderr and "with library" in out.stderr


def test_statistics() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(6, 0) == pytest.approx(0.03125)
    assert mcnemar_exact(3, 3) == 1.0
    lo, hi = wilson(8, 10)
    assert 0.490 < lo < 0.491 and 0.943 < hi < 0.944
    assert wilson(0, 5)[0] == 0.0 and wilson(5, 5)[1] == 1.0


def test_a_conversation_survives_a_broken_tool_call_and_grades_its_answer(
        server: ScriptedLLM, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> None:
    from sandbox import FunctionSpec

    spec = FunctionSpec.from_dict({k: v for k, v in ADD.items() if k != "reason"})
    server.responder = None
    server.push(Reply(tool_calls=[("add_numbers", "{not json"), ("nope", {})]),
                tool_call("add_numbers", {"a": 1, "b": "x"}),
                text("```python\nprint(add_numbers(a=2, b=3))\n```"),
                text("\\boxed{5}"))
    with Grader(workers=1) as grader:
        result: ConversationResult = solve(
            Problem("q", "2 plus 3?", "5", "Arithmetic", None, "t"),
            client=client_for(server, monkeypatch), sandbox=sandbox, functions=[spec],
            grader=grader, settings=EpisodeSettings(max_turns=5))
    assert result.correct and result.outcome == "answered" and result.tool_calls == 3
    tool_replies = [m["content"] for m in result.messages if m["role"] == "tool"]
    assert "not valid JSON" in tool_replies[0] and "no function 'nope'" in tool_replies[1]
    assert "is not of type 'integer'" in tool_replies[2]
    assert any("exitcode: 0" in str(m["content"]) and "5" in str(m["content"])
               for m in result.messages if m["role"] == "user")
    assert [c["function"] for c in result.calls] == ["<code>"]


@pytest.mark.parametrize("library_as", ["code", "tools"])
def test_tools_are_offered_with_an_explicit_choice_and_their_calls_sent_back_as_text(
        library_as: LibraryPresentation, server: ScriptedLLM,
        monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> None:
    """llama-cpp-python's function-calling template renders no tools for a request without
    tool_choice: `library_as = "tools"` ran the same conversations as "code" (48 of 48
    transcripts identical) until the choice was said; then the server refused the next turn,
    whose assistant message had a null content beside its tool call."""
    from sandbox import FunctionSpec

    spec = FunctionSpec.from_dict({k: v for k, v in ADD.items() if k != "reason"})
    server.responder = None
    if library_as == "tools":
        server.push(tool_call("add_numbers", {"a": 2, "b": 3}))
    server.push(text("\\boxed{5}"))
    with Grader(workers=1) as grader:
        result = solve(Problem("q", "2 plus 3?", "5", "Arithmetic", None, "t"),
                       client=client_for(server, monkeypatch), sandbox=sandbox,
                       functions=[spec], grader=grader,
                       settings=EpisodeSettings(max_turns=2, library_as=library_as))
    assert result.correct
    if library_as == "tools":
        assert [t["function"]["name"] for t in server.requests[0]["tools"]] == ["add_numbers"]
        assert [r["tool_choice"] for r in server.requests] == ["auto", "auto"]
        assert result.library_calls == {"add_numbers": 1}
        assert server.requests[1]["messages"][2]["content"] == ""  # never null (llama.cpp)
    else:
        assert "tools" not in server.requests[0] and "tool_choice" not in server.requests[0]


def test_a_code_block_holding_only_a_json_call_of_an_offered_tool_is_that_call(
        server: ScriptedLLM, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> None:
    """Offered tools and told to write code, the 1.5B model writes its calls as JSON in a code
    fence (README, "Learning"): the call is made and sent back as a tool call and its result;
    JSON naming no offered tool, or code around it, stays code."""
    from sandbox import FunctionSpec

    spec = FunctionSpec.from_dict({k: v for k, v in ADD.items() if k != "reason"})
    server.responder = None
    server.push(text('I will add.\n```python\n{"name": "add_numbers", "arguments": '
                     '{"a": 2, "b": 3}}\n'),  # cut at its closing fence (STOP)
                text('```python\n{"name": "subtract", "arguments": {"a": 2}}\n```'),
                text('```python\n{"name": ["add_numbers"], "arguments": {}}\n```'),
                text("\\boxed{5}"))
    with Grader(workers=1) as grader:
        result = solve(Problem("q", "2 plus 3?", "5", "Arithmetic", None, "t"),
                       client=client_for(server, monkeypatch), sandbox=sandbox,
                       functions=[spec], grader=grader,
                       settings=EpisodeSettings(max_turns=4, library_as="tools"))
    assert result.correct and result.tool_calls == 1 and result.code_blocks == 2
    assert result.library_calls == {"add_numbers": 1}
    called, answer = result.messages[2], result.messages[3]
    assert called["content"] == "I will add."
    assert [json.loads(c["function"]["arguments"]) for c in called["tool_calls"]] == [
        {"a": 2, "b": 3}]
    assert answer == {"role": "tool", "tool_call_id": called["tool_calls"][0]["id"],
                      "content": "5"}
    assert "exitcode: 0" in result.messages[5]["content"]  # the unknown name ran as code


def test_an_output_the_model_invents_is_cut_and_the_real_output_comes_back(
        server: ScriptedLLM, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> None:
    """The 1.5B model writes its code, an output block of its own and a boxed guess; it then
    repeats the guess over the real output. The reply is cut where its invention starts."""
    server.responder = None
    server.push(text("```python\nprint(24**50 % 13)\n```\n```output\n6\n```\n"
                     "The remainder is \\boxed{6}."),
                text(f"The output says \\boxed{{{24**50 % 13}}}."))
    with Grader(workers=1) as grader:
        result = solve(Problem("q", "24^50 mod 13?", str(24**50 % 13), "Number Theory", None,
                               "t"), client=client_for(server, monkeypatch), sandbox=sandbox,
                       functions=[], grader=grader, settings=EpisodeSettings(max_turns=3))
    assert server.requests[0]["stop"] == list(STOP)
    first = result.messages[2]["content"]
    assert first.rstrip().endswith("```") and "boxed" not in first  # cut before the invention
    assert result.correct and result.code_blocks == 1 and result.turns == 2


def test_sigterm_stops_cleanly_and_the_run_resumes(tmp_path: Path, server: ScriptedLLM,
                                                   docker_client: Any, sandbox: Sandbox) -> None:
    config = write_config(tmp_path, server, epochs=1, concurrency=1)
    run = tmp_path / "run"
    env = {**os.environ, "OPENAI_API_KEY": TEST_KEY}
    proc = subprocess.Popen([sys.executable, "-m", "optimizer", "train", "--config",
                             str(config), "--run-dir", str(run)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(journal_keys(run)) < 2:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert f"--resume {run}" in err
    owned = docker_client.containers.list(all=True, filters={"label": f"fnforge.owner={proc.pid}"})
    assert owned == []  # its containers went with it
    resumed = subprocess.run([sys.executable, "-m", "optimizer", "train", "--resume", str(run)],
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    keys = journal_keys(run)
    assert len(keys) == len(set(keys)) == 2 + 4


def test_one_baseline_serves_every_library_an_evaluation_compares(
        tmp_path: Path, server: ScriptedLLM, monkeypatch: pytest.MonkeyPatch,
        sandbox: Sandbox) -> None:
    config = load_run_config(write_config(tmp_path, server))
    problems = [Problem(id=p["id"], question=p["question"], answer=p["answer"],
                        subject=p["type"], level=None, source="test") for p in PROBLEMS[:3]]
    client = client_for(server, monkeypatch)

    def arms_asked(spec: dict[str, Any]) -> list[bool]:
        """Evaluate with a library of `spec`; which arm each new assistant request came from."""
        before = len(server.requests)
        fields = {k: v for k, v in spec.items() if k != "reason"}  # `reason` is a proposal's
        library = vetted_library([FunctionSpec.from_dict(fields)], sandbox)
        evaluate(config, problems, library, tmp_path / "eval", client=client, sandbox=sandbox)
        return ["add_numbers(" in json.dumps(r["messages"]) for r in server.requests[before:]]

    first = arms_asked(ADD)
    assert first.count(False) >= 3 and first.count(True) >= 3  # both arms solved
    again = arms_asked({**ADD, "description": "Adds two integers (a new version)."})
    assert again and all(again)  # only the new library's arm is solved again
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["rows"][-1]["n"] == 3


def test_an_empty_library_is_its_baseline_solved_once_with_no_gain(
        tmp_path: Path, server: ScriptedLLM, monkeypatch: pytest.MonkeyPatch,
        sandbox: Sandbox) -> None:
    """With no function the library arm's prompt is the base arm's: solving it again would only
    sample the server's noise (and double the cost of `make eval` after a run that kept none)."""
    config = load_run_config(write_config(tmp_path, server))
    problems = [Problem(id=p["id"], question=p["question"], answer=p["answer"],
                        subject=p["type"], level=None, source="test") for p in PROBLEMS[:3]]
    before = len(server.requests)
    report = evaluate(config, problems, vetted_library([], sandbox), tmp_path / "eval",
                      client=client_for(server, monkeypatch), sandbox=sandbox)
    first_turns = [r for r in server.requests[before:]
                   if sum(m["role"] == "user" for m in r["messages"]) == 1]
    assert sorted(task_of(r["messages"][1]["content"]) for r in first_turns) == \
        sorted(p.question for p in problems)  # each problem once
    overall = report["rows"][-1]
    assert overall["n"] == 3 and overall["gain"] == 0.0
    assert overall["discordant"] == {"library_only": 0, "base_only": 0}
    assert report["functions"] == [] and report["compute"]["library"]["conversations"] == 3


def test_an_epoch_whose_library_did_not_change_reuses_the_conversations_it_would_repeat(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> None:
    def idle(body: dict[str, Any]) -> Reply | None:  # an optimizer that never changes a thing
        if "add_function" in {t["function"]["name"] for t in body.get("tools") or []}:
            return tool_call("terminate", {"reason": "nothing to add"})
        return respond(body)

    server = ScriptedLLM(responder=idle).start()

    def episodes_solved(since: int) -> int:
        return len([r for r in server.requests[since:] if not r.get("tools")
                    and [m["role"] for m in r["messages"]].count("user") == 1])

    try:
        config = load_run_config(write_config(tmp_path, server, epochs=3))
        assert config.episode.temperature == 0
        client = client_for(server, monkeypatch)
        train(config, tmp_path / "run", client=client, sandbox=sandbox)
        assert episodes_solved(0) == 6  # 2 train + 4 validation problems, in epoch 1 only
        records = RunDirectory(tmp_path / "run").journal()
        assert [r["reused_from"] for r in records if r["epoch"] > 1] == [1] * 12
        metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
        assert len({m["validation_accuracy"] for m in metrics}) == 1
        assert [m["reused_conversations"] for m in metrics] == [0, 6, 6]
        # above temperature 0 each epoch is a new sample: solved again
        warm = replace(config, episode=replace(config.episode, temperature=0.5))
        before = len(server.requests)
        train(warm, tmp_path / "warm", client=client, sandbox=sandbox)
        assert episodes_solved(before) == 18
    finally:
        server.stop()
