"""Drop-in for AutoGen/AG2 users: real `autogen` (AG2's classic API, 0.14.1, a test-only
dependency) agents take the two structures `step()` returns exactly as upstream's notebook does,
call two different functions by name and get each one's own result, and lose a removed function
from both the assistant's tools and the executor map. fnforge itself never imports autogen.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest

autogen = pytest.importorskip("autogen")  # pinned in the dev extra; present in CI

from optimizer import AgentOptimizer  # noqa: E402
from sandbox import Sandbox  # noqa: E402
from tests.scripted_llm import TEST_KEY, Reply, ScriptedLLM, client_for, text  # noqa: E402
from tests.test_agent_optimizer import fn  # noqa: E402


def _agents(server: ScriptedLLM) -> tuple[Any, Any]:
    llm_config = {"config_list": [{"model": "scripted-model", "base_url": server.base_url,
                                   "api_key": TEST_KEY}], "cache_seed": None}
    assistant = autogen.AssistantAgent("assistant", llm_config=llm_config)
    user_proxy = autogen.UserProxyAgent("user_proxy", human_input_mode="NEVER",
                                        code_execution_config=False,
                                        max_consecutive_auto_reply=3,
                                        is_termination_msg=lambda m: "TERMINATE" in str(
                                            m.get("content") or ""))
    return assistant, user_proxy


def _tool_names(assistant: Any) -> set[str]:
    """What the assistant advertises: update_function_signature keeps AutoGen's legacy
    "functions" list (OpenAI's function_call API), which it sends with every request."""
    return {f["name"] for f in assistant.llm_config.get("functions", [])}


def test_autogen_agents_use_what_step_returns(scripted_llm: ScriptedLLM,
                                              monkeypatch: pytest.MonkeyPatch,
                                              sandbox: Sandbox) -> None:
    opt = AgentOptimizer(client=client_for(scripted_llm, monkeypatch), sandbox=sandbox)
    assistant, user_proxy = _agents(scripted_llm)

    scripted_llm.push(Reply(tool_calls=[("add_function", fn("double", "return 2 * n", 4)),
                                        ("add_function", fn("square", "return n * n", 4))]),
                      Reply(tool_calls=[("terminate", {"reason": "ok"})]))
    opt.record_one_conversation([{"role": "user", "content": "x"}], is_satisfied=False)
    register_for_llm, register_for_executor = opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for item in register_for_llm:  # upstream's notebook, unchanged
            assistant.update_function_signature(**item)
        if len(register_for_executor.keys()) > 0:
            user_proxy.register_function(function_map=register_for_executor)
    assert _tool_names(assistant) == {"double", "square"}

    # the assistant calls both functions in one turn, then ends the chat
    scripted_llm.push(Reply(tool_calls=[("double", {"n": 7}), ("square", {"n": 7})]),
                      text("The answers are 14 and 49. TERMINATE"))
    user_proxy.initiate_chat(assistant, message="double and square 7", max_turns=2)
    history = user_proxy.chat_messages[assistant]
    results = [r for m in history for r in (m.get("tool_responses") or [])]
    assert sorted(r["content"] for r in results) == ["14", "49"]  # each name ran its own code
    sent = scripted_llm.requests[-1]
    assert {f["name"] for f in sent["functions"]} == {"double", "square"}

    # a step that removes `double`: gone from the assistant's tools and the executor map
    scripted_llm.push(Reply(tool_calls=[("remove_function", {"name": "double",
                                                             "reason": "unused"})]),
                      Reply(tool_calls=[("terminate", {"reason": "ok"})]))
    opt.record_one_conversation([{"role": "user", "content": "x"}], is_satisfied=True)
    register_for_llm, register_for_executor = opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for item in register_for_llm:
            assistant.update_function_signature(**item)
        user_proxy.register_function(function_map=register_for_executor)
    assert _tool_names(assistant) == {"square"}
    assert "double" not in user_proxy.function_map and "square" in user_proxy.function_map
    assert json.loads(json.dumps(register_for_llm, default=str))  # plain data throughout
