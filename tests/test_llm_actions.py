"""Optimizer actions as tool calls and as JSON mode, with malformed output fed back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from optimizer.actions import (
    AddFunction,
    RemoveFunction,
    ReviseFunction,
    Terminate,
    json_mode_schema,
    request_actions,
    tool_definitions,
)
from optimizer.errors import ActionParseError
from tests.scripted_llm import (
    Reply,
    ScriptedLLM,
    client_for,
    error,
    json_reply,
    scripted_llm,
    text,
    tool_call,
)

__all__ = ["scripted_llm"]

MSGS = [{"role": "system", "content": "You improve functions."},
        {"role": "user", "content": "Improve the library."}]

DOUBLE: dict[str, Any] = {
    "name": "double", "description": "Twice n.",
    "parameters": {"type": "object", "properties": {"n": {"type": "integer"}},
                   "required": ["n"]},
    "code": "def double(n):\n    return 2 * n\n", "packages": [],
    "tests": [{"args": {"n": 2}, "expect": 4}, {"args": {"n": "x"}, "expect_error": "TypeError"}],
}


def test_tool_call_actions(scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_llm.push(Reply(tool_calls=[
        ("add_function", {**DOUBLE, "reason": "needed"}),
        ("remove_function", {"name": "old", "reason": "unused"}),
        ("terminate", {"reason": "done"})]))
    client = client_for(scripted_llm, monkeypatch)
    reply = request_actions(client, MSGS)
    assert reply.mode == "tools" and reply.attempts == 1
    add, remove, stop = reply.actions
    assert isinstance(add, AddFunction) and add.reason == "needed"
    assert add.function.name == "double" and add.function.tests[0].expect == 4
    assert add.function.tests[1].expect_error == "TypeError"
    assert remove == RemoveFunction(name="old", reason="unused")
    assert stop == Terminate(reason="done")
    sent = scripted_llm.requests[0]
    assert [t["function"]["name"] for t in sent["tools"]] == [
        "add_function", "revise_function", "remove_function", "terminate"]
    assert sent["tool_choice"] == "required" and "response_format" not in sent


def test_json_mode_actions(scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_llm.push(json_reply({"actions": [
        {"action": "revise_function", "function": DOUBLE, "reason": "faster"}]}))
    client = client_for(scripted_llm, monkeypatch, structured="json")
    reply = request_actions(client, MSGS)
    assert reply.mode == "json"
    (action,) = reply.actions
    assert isinstance(action, ReviseFunction) and action.function.code.startswith("def double")
    sent = scripted_llm.requests[0]
    assert sent["response_format"] == {"type": "json_object", "schema": json_mode_schema()}
    assert "tools" not in sent
    assert '{"actions": [...]}' in sent["messages"][0]["content"]  # instructions in system msg
    assert sent["messages"][0]["content"].startswith("You improve functions.")  # stable first


def test_same_dataclasses_either_way(scripted_llm: ScriptedLLM,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_llm.push(tool_call("add_function", {**DOUBLE, "reason": "r"}),
                      json_reply({"actions": [{"action": "add_function", "function": DOUBLE,
                                               "reason": "r"}]}))
    client = client_for(scripted_llm, monkeypatch)
    via_tools = request_actions(client, MSGS, mode="tools").actions
    via_json = request_actions(client, MSGS, mode="json").actions
    assert via_tools == via_json


def test_malformed_json_is_fed_back(scripted_llm: ScriptedLLM,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cut = '{"actions": [{"action": "add_function", '
    scripted_llm.push(text(cut),
                      json_reply({"actions": [{"action": "terminate", "reason": "ok"}]}))
    client = client_for(scripted_llm, monkeypatch, structured="json")
    reply = request_actions(client, MSGS)
    assert reply.attempts == 2 and reply.actions == (Terminate("ok"),)
    assert "not valid JSON" in reply.errors[0]
    second = scripted_llm.requests[1]["messages"]
    assert second[-2] == {"role": "assistant", "content": cut}
    assert second[-1]["role"] == "user" and "not valid JSON" in second[-1]["content"]


def test_invalid_function_is_fed_back(scripted_llm: ScriptedLLM,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    broken = {**DOUBLE, "code": "def double(n)\n    return 2 * n\n"}
    wrong_name = {**DOUBLE, "code": "def triple(n):\n    return 3 * n\n"}
    scripted_llm.push(tool_call("add_function", {**broken, "reason": "r"}),
                      tool_call("add_function", {**wrong_name, "reason": "r"}),
                      tool_call("add_function", {**DOUBLE, "reason": "r"}))
    client = client_for(scripted_llm, monkeypatch, structured="tools")
    reply = request_actions(client, MSGS)
    assert reply.attempts == 3
    assert "syntax error" in reply.errors[0]
    assert "def double(...)" in reply.errors[1]
    msgs = scripted_llm.requests[1]["messages"]
    assert msgs[-2]["tool_calls"][0]["function"]["name"] == "add_function"
    assert msgs[-1]["role"] == "tool" and msgs[-1]["tool_call_id"] == "call_0"
    assert "syntax error" in msgs[-1]["content"]


def test_tool_args_not_json(scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_llm.push(tool_call("terminate", '{"reason": '), tool_call("terminate", {"reason": ""}))
    reply = request_actions(client_for(scripted_llm, monkeypatch), MSGS)
    assert "arguments are not valid JSON" in reply.errors[0]
    assert reply.actions == (Terminate(""),)


def test_retries_are_bounded(scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_llm.push(text("I would add a function."), text("Sure!"), text("{}"))
    client = client_for(scripted_llm, monkeypatch, structured="json")
    with pytest.raises(ActionParseError, match="3 attempt") as info:
        request_actions(client, MSGS, max_attempts=3)
    assert len(info.value.errors) == 3 and info.value.raw == "{}"
    assert len(scripted_llm.requests) == 3


def test_plain_text_in_tool_mode(scripted_llm: ScriptedLLM,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_llm.push(text("I think we are done."), tool_call("terminate", {"reason": "done"}))
    reply = request_actions(client_for(scripted_llm, monkeypatch), MSGS)
    assert "no tool was called" in reply.errors[0] and reply.attempts == 2


def test_tools_refused_falls_back_to_json(scripted_llm: ScriptedLLM,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_llm.push(error(400, "tools are not supported by this model"),
                      json_reply({"action": "terminate", "reason": "single object"}),
                      json_reply({"actions": [{"action": "terminate", "reason": "again"}]}))
    client = client_for(scripted_llm, monkeypatch)
    reply = request_actions(client, MSGS)
    assert reply.mode == "json" and reply.actions == (Terminate("single object"),)
    assert client.tools_unsupported
    assert request_actions(client, MSGS).mode == "json"  # remembered
    assert "tools" not in scripted_llm.requests[2]


def test_allowed_actions(scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_llm.push(json_reply({"actions": [{"action": "terminate", "reason": "x"}]}),
                      json_reply({"actions": [{"action": "remove_function", "name": "f",
                                               "reason": "x"}]}))
    client = client_for(scripted_llm, monkeypatch, structured="json")
    reply = request_actions(client, MSGS, allowed=["remove_function"])
    assert reply.actions == (RemoveFunction("f", "x"),)
    assert "only remove_function may be used" in reply.errors[0]
    schema = scripted_llm.requests[0]["response_format"]["schema"]
    assert schema["properties"]["actions"]["items"]["properties"]["action"] == {
        "const": "remove_function"}


def test_schemas_are_json() -> None:
    assert json.loads(json.dumps(tool_definitions()))
    schema = json_mode_schema()
    variants = schema["properties"]["actions"]["items"]["anyOf"]
    assert [v["properties"]["action"]["const"] for v in variants] == [
        "add_function", "revise_function", "remove_function", "terminate"]
    with pytest.raises(ValueError, match="allowed actions"):
        json_mode_schema(["explode"])


def test_bare_properties_map_is_accepted(scripted_llm: ScriptedLLM,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    bare = {**DOUBLE, "parameters": {"n": {"type": "integer"}}}
    scripted_llm.push(tool_call("add_function", {**bare, "reason": "r"}))
    reply = request_actions(client_for(scripted_llm, monkeypatch), MSGS,
                            allowed=["add_function"])
    (action,) = reply.actions
    assert isinstance(action, AddFunction)
    assert action.function.parameters == {
        "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    assert scripted_llm.requests[0]["tool_choice"] == {"type": "function",
                                                       "function": {"name": "add_function"}}


def test_local_server_gets_auto_tool_choice(scripted_llm: ScriptedLLM) -> None:
    from optimizer.llm import LLMClient
    from optimizer.llm.config import config_from_dict

    cfg = config_from_dict({"structured": "tools"}, env={})
    assert cfg.provider == "local"
    scripted_llm.push(tool_call("terminate", {"reason": "done"}))
    client = LLMClient(cfg, base_url=scripted_llm.base_url)  # stands in for llama.cpp's server
    assert request_actions(client, MSGS).actions == (Terminate("done"),)
    assert scripted_llm.requests[0]["tool_choice"] == "auto"  # the only form llama.cpp takes
