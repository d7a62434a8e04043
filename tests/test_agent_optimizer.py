"""AgentOptimizer against the scripted LLM server and the real sandbox: a specification.

Each of upstream's defects has its regression test here (late binding, removals that never
propagate, TERMINATE ignored, parallel calls over the cap, step() with nothing recorded,
is_satisfied=None blocking on input(), a model that matches no endpoint).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from optimizer import AgentOptimizer, OptimizerSettings
from optimizer.errors import ConfigError, OptimizerStateError
from optimizer.events import EventLog
from optimizer.llm import LLMClient
from sandbox import FunctionLibrary, Sandbox
from tests.scripted_llm import Reply, ScriptedLLM, client_for, json_reply, text, tool_call

CONVERSATION = [{"role": "user", "content": "What is the sum of the divisors of 360?"},
                {"role": "assistant", "content": "It is \\boxed{1000}."}]


def fn(name: str, body: str, expect: Any, *, n_test: int = 2) -> dict[str, Any]:
    """The fields of an add_function/revise_function tool call for `def name(n): body`."""
    return {"name": name, "description": f"{name} of an integer n",
            "parameters": {"type": "object", "properties": {"n": {"type": "integer"}},
                           "required": ["n"]},
            "code": f"def {name}(n):\n    {body}\n",
            "tests": [{"args": {"n": n_test}, "expect": expect}], "reason": "helps"}


def add(name: str, body: str, expect: Any) -> Reply:
    return tool_call("add_function", fn(name, body, expect))


def optimizer(server: ScriptedLLM, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox,
              **settings: Any) -> tuple[AgentOptimizer, EventLog]:
    log = EventLog()
    client: LLMClient = client_for(server, monkeypatch)
    opt = AgentOptimizer(max_actions_per_step=settings.pop("max_actions", 3), client=client,
                         sandbox=sandbox, settings=OptimizerSettings(**settings), events=log)
    return opt, log


def record(opt: AgentOptimizer, *labels: bool) -> None:
    for label in labels:
        opt.record_one_conversation(CONVERSATION, is_satisfied=label)


def llm_names(register_for_llm: list[dict[str, Any]]) -> dict[str, bool]:
    return {(i["func_sig"]["name"] if isinstance(i["func_sig"], dict) else i["func_sig"]):
            i["is_remove"] for i in register_for_llm}


# ---------------------------------------------------------------------------------------------
def test_add_registers_the_function_in_both_forms_and_each_name_runs_its_own(
        scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> None:
    scripted_llm.push(add("double", "return 2 * n", 4), add("square", "return n * n", 4),
                      text("TERMINATE"), tool_call("terminate", {"reason": "done"}))
    opt, log = optimizer(scripted_llm, monkeypatch, sandbox)
    record(opt, True, False)
    for_llm, for_executor = opt.step()
    assert llm_names(for_llm) == {"double": False, "square": False}
    double, square = for_executor["double"], for_executor["square"]
    assert double is not None and square is not None
    assert double(n=5) == 10 and square(n=5) == 25
    assert [e.data["decision"] for e in log.of("decision")] == ["first"]
    assert len(log.of("vet")) == 2 and all(e.data["passed"] for e in log.of("vet"))


def test_terminate_ends_the_steps_actions(scripted_llm: ScriptedLLM,
                                          monkeypatch: pytest.MonkeyPatch,
                                          sandbox: Sandbox) -> None:
    scripted_llm.push(tool_call("terminate", {"reason": "nothing to change"}),
                      add("never", "return n", 2))
    opt, log = optimizer(scripted_llm, monkeypatch, sandbox)
    record(opt, True)
    for_llm, for_executor = opt.step()
    assert for_llm == [] and for_executor == {}
    assert len(scripted_llm.requests) == 1 and scripted_llm.remaining == 1
    assert log.of("terminate")


def test_a_terminate_beside_a_refused_proposal_waits_until_the_refusal_is_read(
        scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> None:
    """The embedded optimizer's usual reply: a proposal and a terminate together. Refused, the
    proposal would end the step unfixed; the refusal goes back, and the fix is applied."""
    wrong = {**fn("plus_one", "return n + 1", 3), "parameters": {
        "type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}
    scripted_llm.push(Reply(tool_calls=[("add_function", wrong),
                                        ("terminate", {"reason": "done"})]),
                      add("plus_one", "return n + 1", 3), tool_call("terminate", {"reason": "ok"}))
    opt, log = optimizer(scripted_llm, monkeypatch, sandbox)
    record(opt, False)
    _, for_executor = opt.step()
    assert sorted(for_executor) == ["plus_one"] and len(scripted_llm.requests) >= 2
    assert "not a parameter of plus_one" in json.dumps(scripted_llm.requests[1]["messages"])
    assert [e.data["why"] for e in log.of("dropped")] == [
        "in the same reply as a refused proposal"]


def test_parallel_calls_never_exceed_max_actions_per_step(
        scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> None:
    calls = [("add_function", fn(f"f{i}", f"return n + {i}", 2 + i)) for i in range(5)]
    scripted_llm.push(Reply(tool_calls=calls))
    opt, log = optimizer(scripted_llm, monkeypatch, sandbox, max_actions=3)
    record(opt, True)
    _, for_executor = opt.step()
    assert sorted(for_executor) == ["f0", "f1", "f2"]
    assert len(log.of("dropped")) == 2 and len(scripted_llm.requests) == 1


def test_a_rejected_proposal_is_fed_back_and_fixed_on_retry(
        scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> None:
    bad = fn("cwd_len", "import os\n    return len(os.getcwd()) + n", 3)
    scripted_llm.push(tool_call("add_function", bad), add("plus_one", "return n + 1", 3),
                      tool_call("terminate", {"reason": "done"}))
    opt, log = optimizer(scripted_llm, monkeypatch, sandbox)
    record(opt, False)
    _, for_executor = opt.step()
    assert sorted(for_executor) == ["plus_one"]
    feedback = json.dumps(scripted_llm.requests[1]["messages"][-2:])
    assert "import of 'os' is not allowed" in feedback and "propose cwd_len again" in feedback
    assert "static.import" not in feedback  # rule ids are for the record, not for the model
    assert [e.data["action"] for e in log.of("refused")] == ["add_function"]


def test_a_malicious_proposal_never_reaches_the_executor(
        scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> None:
    evil = {**fn("helper", "return n", 2), "code": (
        "def helper(n):\n    return [c for c in ().__class__.__base__.__subclasses__()][n]\n")}
    sneaky = {**fn("helper", "return n", 2), "code": (
        "import sympy\n\ndef helper(n):\n    return str(sympy.sympify(\"__import__('os')."
        "system('id')\"))\n"), "tests": [{"args": {"n": 2}, "expect": "0"}]}
    scripted_llm.push(tool_call("add_function", evil), tool_call("add_function", sneaky),
                      tool_call("add_function", evil), tool_call("terminate", {"reason": "x"}))
    opt, log = optimizer(scripted_llm, monkeypatch, sandbox, max_actions=1)
    record(opt, False)
    for_llm, for_executor = opt.step()
    assert for_llm == [] and for_executor == {} and len(opt.library) == 0
    # the third, the first sent again unchanged, is refused without a second vetting
    assert [e.data["passed"] for e in log.of("vet")] == [False, False]
    assert len(log.of("refused")) == 3 and not log.of("applied")


def test_a_refused_proposal_sent_again_unchanged_is_refused_unvetted_and_retries_are_sampled(
        scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> None:
    """A small model at a low temperature resubmits what was refused: it is told so, with the
    first refusal's reason, and the tries after a refusal are sampled at retry_temperature."""
    wrong = fn("triple", "return 3 * n", 7)  # triple(2) is 6, not 7
    scripted_llm.push(tool_call("add_function", wrong), tool_call("add_function", wrong),
                      add("triple", "return 3 * n", 6), tool_call("terminate", {"reason": "ok"}))
    opt, log = optimizer(scripted_llm, monkeypatch, sandbox, temperature=0.1,
                         retry_temperature=0.9)
    record(opt, False)
    _, for_executor = opt.step()
    assert sorted(for_executor) == ["triple"]
    assert len(log.of("vet")) == 2  # the unchanged resubmission was not vetted again
    second = log.of("refused")[1].data["why"]
    assert "character for character" in second and "expected 7" in second
    assert [r.get("temperature") for r in scripted_llm.requests] == [0.1, 0.9, 0.9, 0.1]


def test_a_refusal_quotes_the_line_it_is_about_and_says_fields_are_not_code(
        scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> None:
    """The 1.5B copied the proposal's `packages = [sympy]` into its code, twice: the refusal
    quotes the line and says what `code` may hold."""
    echoed = {**fn("halve", "return n // 2", 1),
              "code": "packages = [sympy]\n\ndef halve(n):\n    return n // 2\n"}
    scripted_llm.push(tool_call("add_function", echoed), tool_call("terminate", {"reason": "x"}))
    opt, log = optimizer(scripted_llm, monkeypatch, sandbox, max_actions=1)
    record(opt, False)
    opt.step()
    why = log.of("refused")[0].data["why"]
    assert "line 1 (`packages = [sympy]`)" in why
    assert "`code` holds the def and its imports only" in why


def test_revise_replaces_the_code_and_remove_takes_it_out_of_both(
        scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> None:
    scripted_llm.push(add("f", "return n + 1", 3), tool_call("terminate", {"reason": "ok"}))
    opt, _ = optimizer(scripted_llm, monkeypatch, sandbox)
    record(opt, False)
    _, first = opt.step()
    old_f = first["f"]
    assert old_f is not None
    scripted_llm.push(tool_call("revise_function", fn("f", "return n + 10", 12)),
                      tool_call("terminate", {"reason": "ok"}))
    record(opt, True)
    _, second = opt.step()
    revised = second["f"]
    assert revised is not None and revised(n=1) == 11
    scripted_llm.push(tool_call("remove_function", {"name": "nope", "reason": "x"}),
                      tool_call("remove_function", {"name": "f", "reason": "useless"}),
                      tool_call("terminate", {"reason": "ok"}))
    record(opt, True)
    for_llm, third = opt.step()
    assert {"func_sig": "f", "is_remove": True} in for_llm and third == {"f": None}
    assert "no function 'nope' to remove" in json.dumps(scripted_llm.requests[-2]["messages"])
    with pytest.raises(Exception, match="no longer in the function library"):
        old_f(n=1)


def test_roll_back_restores_the_best_set_and_remembers_the_failure(
        scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> None:
    scripted_llm.push(add("f", "return n + 1", 3), tool_call("terminate", {"reason": "ok"}))
    opt, log = optimizer(scripted_llm, monkeypatch, sandbox)
    record(opt, True, False)
    opt.step()  # 0.5 with the empty library: the first best; f is the trial
    scripted_llm.push(tool_call("terminate", {"reason": "ok"}))
    record(opt, False, False)
    for_llm, for_executor = opt.step()  # 0.0 with f: worse, back to the empty library
    assert [e.data["decision"] for e in log.of("decision")] == ["first", "rolled_back"]
    assert llm_names(for_llm) == {"f": True} and for_executor == {"f": None}
    last_prompt = json.dumps(scripted_llm.requests[-1]["messages"])
    assert "scored worse" in last_prompt and "f: f of an integer n" in last_prompt
    assert opt.best_score == 0.5 and len(opt.best_library()) == 0


@pytest.mark.parametrize("ties,decision", [("accept", "accepted_tie"),
                                           ("reject", "tie_rejected")])
def test_ties_follow_the_setting(scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch,
                                 sandbox: Sandbox, ties: str, decision: str) -> None:
    scripted_llm.push(add("f", "return n + 1", 3), tool_call("terminate", {"reason": "ok"}),
                      tool_call("terminate", {"reason": "ok"}))
    opt, log = optimizer(scripted_llm, monkeypatch, sandbox, ties=ties)
    record(opt, True, False)
    opt.step()
    record(opt, False, True)
    opt.step()
    assert log.of("decision")[-1].data["decision"] == decision
    assert (opt.library.names() == ["f"]) == (ties == "accept")


def test_early_stop_after_patience_steps_without_improvement(
        scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> None:
    opt, log = optimizer(scripted_llm, monkeypatch, sandbox, patience=2)
    for _ in range(3):
        scripted_llm.push(tool_call("terminate", {"reason": "ok"}))
    record(opt, True)
    opt.step(score=0.6)
    record(opt, True)
    opt.step(score=0.4)
    assert not opt.should_stop
    record(opt, True)
    requests = len(scripted_llm.requests)
    opt.step(score=0.5)
    assert opt.should_stop and log.of("early_stop")
    assert len(scripted_llm.requests) == requests  # no proposals once stopped


def test_invalid_json_is_retried_in_json_mode(scripted_llm: ScriptedLLM,
                                              monkeypatch: pytest.MonkeyPatch,
                                              sandbox: Sandbox) -> None:
    client = client_for(scripted_llm, monkeypatch, structured="json")
    good = {"action": "add_function", "reason": "r",
            "function": {k: v for k, v in fn("g", "return n", 2).items() if k != "reason"}}
    scripted_llm.push(text("{not json"), json_reply({"actions": [good]}),
                      json_reply({"actions": [{"action": "terminate", "reason": "ok"}]}))
    opt = AgentOptimizer(client=client, sandbox=sandbox)
    record(opt, True)
    _, for_executor = opt.step()
    assert list(for_executor) == ["g"]
    schema = scripted_llm.requests[0]["response_format"]["schema"]
    variants = schema["properties"]["actions"]["items"]["anyOf"]
    assert [v["properties"]["action"]["const"] for v in variants] == ["add_function",
                                                                       "terminate"]


def test_the_prompt_stays_within_budget_with_50_long_conversations(
        scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> None:
    scripted_llm.push(tool_call("terminate", {"reason": "ok"}))
    opt, log = optimizer(scripted_llm, monkeypatch, sandbox)
    for i in range(50):
        long = [{"role": "user", "content": f"Problem {i}: " + "x + 1 = 2. " * 400},
                {"role": "assistant", "content": "```python\nprint(1)\n```\n" * 30},
                {"role": "user", "content": "exitcode: 1\nTraceback ... ValueError: bad"},
                {"role": "assistant", "content": f"\\boxed{{{i}}}"}]
        opt.record_one_conversation(long, is_satisfied=i % 3 == 0)
    opt.step()
    stats = log.of("prompt")[0].data
    assert stats["estimated_tokens"] <= 6000 and stats["conversations"] == 50
    assert stats["failed_shown"] == min(stats["shown"], 33) > 0
    chars = sum(len(m["content"]) for m in scripted_llm.requests[0]["messages"])
    assert chars / 3.2 <= 6000


def test_nothing_recorded_and_bad_labels_are_clear_errors(
        scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> None:
    opt, _ = optimizer(scripted_llm, monkeypatch, sandbox)
    with pytest.raises(OptimizerStateError, match="record_one_conversation"):
        opt.step()
    with pytest.raises(ValueError, match="is_satisfied must be True or False"):
        opt.record_one_conversation(CONVERSATION, None)  # upstream: blocks on input()
    with pytest.raises(ValueError, match="OpenAI messages"):
        opt.record_one_conversation("not a history", True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="score must be a number between 0 and 1"):
        record(opt, True)
        opt.step(score=1.5)


def test_a_model_no_endpoint_serves_fails_at_construction(sandbox: Sandbox) -> None:
    config = {"config_list": [{"model": "gpt-4o", "api_key": "sk-test-0123456789abcdef",
                               "base_url": "http://127.0.0.1:9/v1"}]}
    with pytest.raises(ConfigError, match="serves model 'gpt-4-1106-preview'"):
        AgentOptimizer(llm_config=config, optimizer_model="gpt-4-1106-preview", sandbox=sandbox)
    opt = AgentOptimizer(llm_config=config, optimizer_model="gpt-4o", sandbox=sandbox)
    assert opt.optimizer_model == "gpt-4o" and "sk-test" not in repr(opt.client)


def test_snapshots_and_exact_resume(scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch,
                                    sandbox: Sandbox, tmp_path: Path) -> None:
    scripted_llm.push(add("f", "return n + 1", 3), tool_call("terminate", {"reason": "ok"}))
    opt, _ = optimizer(scripted_llm, monkeypatch, sandbox, snapshot_dir=tmp_path / "snap")
    record(opt, True, False)
    opt.step()
    record(opt, False)  # recorded, then the process dies before the next step
    opt.save(tmp_path / "state.json")
    snapshot = json.loads((tmp_path / "snap" / "step-0001.json").read_text())
    assert snapshot["decision"] == "first" and snapshot["score"] == 0.5
    assert FunctionLibrary.load(tmp_path / "snap" / "step-0001.json").names() == ["f"]

    scripted_llm.push(tool_call("terminate", {"reason": "ok"}))
    resumed, log = optimizer(scripted_llm, monkeypatch, sandbox,
                             snapshot_dir=tmp_path / "snap")
    resumed.restore(tmp_path / "state.json")
    assert resumed.recorded == 1 and resumed.library.names() == ["f"]
    _, for_executor = resumed.step()  # 0.0 < 0.5: rolled back, as without the crash
    assert log.of("decision")[0].data["decision"] == "rolled_back"
    assert for_executor == {"f": None} and resumed.step_count == 2
    assert (tmp_path / "snap" / "step-0002.json").exists()
