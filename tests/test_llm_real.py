"""End to end with a real model (SmolLM2-135M via llama.cpp): start, talk, parse an action, solve
a problem through the whole conversation loop (sandbox and grader included), stop.

Skipped only when llama_cpp is missing AND FNFORGE_REQUIRE_REAL_LLM is unset; CI sets it, so a
missing runtime fails there instead of passing silently.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

import pytest

from optimizer.actions import RemoveFunction, Terminate, request_actions
from optimizer.conversation import EpisodeSettings, solve
from optimizer.llm import DeadlineExceeded, LLMClient
from optimizer.llm.config import LocalConfig, config_from_dict
from optimizer.llm.local import LocalServer, healthy, port_free
from optimizer.math import Grader, Problem
from sandbox import Sandbox

if importlib.util.find_spec("llama_cpp") is None and not os.environ.get(
        "FNFORGE_REQUIRE_REAL_LLM"):
    pytest.skip("llama-cpp-python is not installed (run `make llm-deps`; set "
                "FNFORGE_REQUIRE_REAL_LLM=1 to make this a failure)", allow_module_level=True)


def test_smollm2_end_to_end(tmp_path: Path) -> None:
    server = LocalServer(tmp_path / "run")
    info = server.start(LocalConfig(model="smollm2-135m", port=0, n_ctx=2048), show=False)
    try:
        assert info.base_url.startswith("http://127.0.0.1:")
        assert server.status() == info and healthy(info.base_url, "smollm2-135m")
        assert Path(info.log).is_file()
        assert server.start(LocalConfig(model="smollm2-135m"), show=False) == info  # reused

        cfg = config_from_dict({"base_url": info.base_url, "model": "smollm2-135m",
                                "structured": "json", "timeout": 120.0}, env={})
        with LLMClient(cfg, use_config_cache=False) as client:
            assert client.list_models() == ["smollm2-135m"]
            reply = client.chat("assistant", [{"role": "user", "content": "Say hello."}],
                                max_tokens=16, temperature=0.0)
            assert reply.text and reply.prompt_tokens > 0 and reply.completion_tokens > 0

            actions = request_actions(
                client,
                [{"role": "system", "content": "You manage the function library of an agent."},
                 {"role": "user", "content": "The function old_helper is useless. Remove it."}],
                allowed=("remove_function", "terminate"), max_tokens=400, temperature=0.0,
                seed=1, max_attempts=3)
            assert actions.mode == "json" and actions.actions
            assert all(isinstance(a, RemoveFunction | Terminate) for a in actions.actions)
            sent = actions.results[0].raw
            assert sent  # the raw response was kept for the record
            assert client.usage_report()["run"]["calls"] == 1 + actions.attempts

            # the whole loop: the real model as the assistant, its code in the sandbox, graded
            problem = Problem("real/1", "What is 7 times 6?", "42", "Arithmetic", 1, "test")
            with Sandbox(pool_size=1) as sandbox, Grader(workers=1) as grader:
                result = solve(problem, client=client, sandbox=sandbox, functions=[],
                               grader=grader, settings=EpisodeSettings(max_turns=2,
                                                                        max_tokens=120))
            assert result.outcome in ("answered", "turn_limit", "terminated"), result.reason
            assert result.turns >= 1 and result.completion_tokens > 0
            assert result.messages[-1]["role"] in ("assistant", "user")
            assert result.grade_reason in ("match", "mismatch", "no-answer")
    finally:
        assert server.stop() is True
    assert server.status() is None and not server.pid_file.exists()
    assert port_free(info.port)


def test_smollm2_streams_and_stops_generating_what_it_gave_up(tmp_path: Path) -> None:
    """The embedded model's way (streamed, one slot) against the real llama-cpp-python server:
    replies and forced tool calls come back whole from their deltas, prompt tokens are counted;
    a request given up at its deadline stops being generated (the server logs the disconnect and
    answers the next request at once instead of finishing the abandoned 2,000 tokens)."""
    server = LocalServer(tmp_path / "run")
    info = server.start(LocalConfig(model="smollm2-135m", port=0, n_ctx=2048), show=False)
    try:
        cfg = config_from_dict({"provider": "local", "local": {"model": "smollm2-135m"}},
                               env={})
        assert cfg.streamed and cfg.in_flight_cap == 1
        with LLMClient(cfg, use_config_cache=False, base_url=info.base_url) as client:
            reply = client.chat("assistant", [{"role": "user", "content": "Say hello."}],
                                max_tokens=16, temperature=0.0)
            assert reply.text and reply.finish_reason in ("stop", "length")
            assert reply.prompt_tokens > 5 and 0 < reply.completion_tokens <= 16
            add = {"type": "function", "function": {"name": "add", "parameters": {
                "type": "object", "properties": {"a": {"type": "integer"},
                                                 "b": {"type": "integer"}},
                "required": ["a", "b"]}}}
            call = client.chat("assistant", [{"role": "user", "content": "Add 2 and 3."}],
                               tools=[add], max_tokens=40, temperature=0.0,
                               tool_choice={"type": "function", "function": {"name": "add"}})
            assert [c.name for c in call.tool_calls] == ["add"]
            assert set(json.loads(call.tool_calls[0].arguments)) == {"a", "b"}

            long = [{"role": "user", "content": "Write the numbers from 1 to 2000 as JSON."}]
            # a grammar with no end before 1,000 items: the reply cannot stop early, on any CPU
            # (left free, the model's greedy answer ran 160 tokens on one machine and 9 on
            # another), so 2,000 tokens take far longer than the deadline
            endless = {"type": "json_object", "schema": {"type": "object", "properties": {
                "numbers": {"type": "array", "items": {"type": "integer"}, "minItems": 1000}},
                "required": ["numbers"]}}
            before = client.usage_report()["run"]["tokens_generated"]
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                client.chat("assistant", long, max_tokens=2000, temperature=0.0,
                            response_format=endless, deadline=started + 1.5)
            given_up = time.monotonic() - started
            assert given_up < 3.0
            made = client.usage_report()["run"]["tokens_generated"] - before
            assert 0 < made < 1000
            started = time.monotonic()
            quick = client.chat("assistant", [{"role": "user", "content": "Say OK."}],
                                max_tokens=4, temperature=0.0)
            # had the server gone on with the 2,000 tokens, this would wait for the rest
            rest = (2000 - made) * given_up / made
            assert quick.completion_tokens > 0 and time.monotonic() - started < rest / 3
            run = client.usage_report()["run"]
            assert run["abandoned"] == 1 and run["left_running"] == 0
            assert run["retries"] == run["retried_while_generating"] == 0
        assert "Disconnected from client" in Path(info.log).read_text(errors="replace")
    finally:
        server.stop()


def test_smollm2_reads_tool_results_and_streams_with_tools_offered(tmp_path: Path) -> None:
    """The server's fnforge-tools handler (optimizer/llm/serve.py) against the real runtime: a
    call's result reaches the model's prompt (the stock chatml-function-calling template left
    every `tool` message out, so the model called again and again), and a reply with tools
    offered streams (the stock handler refused an automatic tool choice streamed)."""
    server = LocalServer(tmp_path / "run")
    info = server.start(LocalConfig(model="smollm2-135m", port=0, n_ctx=2048), show=False)
    add = {"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"]}}}

    def history(result: str) -> list[dict[str, object]]:
        return [{"role": "user", "content": "Add 2 and 3."},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "c1", "type": "function",
                     "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": result}]
    try:
        whole = config_from_dict({"provider": "local", "local": {"model": "smollm2-135m"},
                                  "stream": False}, env={})
        with LLMClient(whole, use_config_cache=False, base_url=info.base_url) as client:
            short, long = (client.chat("assistant", history(result), tools=[add],
                                       tool_choice="auto", max_tokens=8, temperature=0.0)
                           for result in ("5", " ".join(["5"] * 200)))
            # the server's own count: the longer result is in the prompt the model reads
            assert long.prompt_tokens - short.prompt_tokens >= 150
            # and text reaches it as written: the stock template escaped HTML (`<` as `&lt;`)
            raw, escaped = (client.chat("assistant", [{"role": "user", "content": text * 60}],
                                        max_tokens=1, temperature=0.0)
                            for text in ("<", "&lt;"))
            assert raw.prompt_tokens < escaped.prompt_tokens
        streamed = config_from_dict({"provider": "local", "local": {"model": "smollm2-135m"}},
                                    env={})
        with LLMClient(streamed, use_config_cache=False, base_url=info.base_url) as client:
            reply = client.chat("assistant", history("5"), tools=[add], tool_choice="auto",
                                max_tokens=24, temperature=0.0)
            assert reply.finish_reason in ("stop", "length", "tool_calls")
            assert reply.text or reply.tool_calls
            assert reply.prompt_tokens == short.prompt_tokens  # the stream's usage: the server's
            assert client.usage_report()["run"]["retries"] == 0
    finally:
        server.stop()
