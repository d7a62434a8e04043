"""Streamed requests against a real local HTTP server, through the real openai client.

The scripted server is made slow and single-slot, like llama-cpp-python's under load: a request
queued behind another must not be timed out or retried, and a request fnforge gives up on must
stop being generated (the server sees the disconnect and emits no more tokens).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from optimizer.errors import EndpointUnavailable
from optimizer.llm import LLMClient
from optimizer.llm.client import ChatResult, DeadlineExceeded
from optimizer.llm.config import config_from_dict
from tests.scripted_llm import Reply, ScriptedLLM, client_for, text, tool_call

MSGS = [{"role": "user", "content": "hi"}]
STREAMED = {"stream": True, "max_in_flight": 1, "silence_timeout": 0.5,
            "first_token_timeout": 1.0}


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


@pytest.fixture
def slow_server() -> Any:
    """One slot, 20 tokens a second."""
    server = ScriptedLLM(slots=1, token_latency=0.05).start()
    try:
        yield server
    finally:
        server.stop()


def test_streamed_text_and_tool_calls(slow_server: ScriptedLLM,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    args = {"name": "gcd", "code": "def gcd(a, b):\n    return a if not b else gcd(b, a % b)\n"}
    slow_server.push(text("one two three", prompt_tokens=42),
                     tool_call("add_function", args))
    client = client_for(slow_server, monkeypatch, **STREAMED)
    reply = client.chat("assistant", MSGS)
    assert (reply.text, reply.finish_reason, reply.attempts) == ("one two three", "stop", 1)
    assert (reply.prompt_tokens, reply.completion_tokens) == (42, 3)
    call = client.chat("optimizer", MSGS, tools=[{"type": "function", "function": {
        "name": "add_function", "parameters": {"type": "object"}}}])
    assert call.finish_reason == "tool_calls" and call.text is None
    assert [(c.name, json.loads(c.arguments)) for c in call.tool_calls] == [
        ("add_function", args)]
    assert all(r.get("stream") for r in slow_server.requests)
    run = client.usage_report()["run"]
    assert run["tokens_generated"] == run["completion_tokens"] > 3
    assert run["generated_per_used"] == 1.0 and run["abandoned"] == 0


def test_a_queued_request_is_not_timed_out_or_retried(slow_server: ScriptedLLM,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Each reply takes 3 s, three times the wait for a first token: the second and third
    requests wait for the slot in the client, and none of that wait counts against them."""
    slow_server.push(*[text(words(60)) for _ in range(3)])
    client = client_for(slow_server, monkeypatch, **STREAMED)
    results: list[ChatResult] = []

    def ask() -> None:
        results.append(client.chat("assistant", MSGS))

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [r.attempts for r in results] == [1, 1, 1]
    assert sorted(r.queue_wait_s > 2.5 for r in results) == [False, True, True]
    assert all(r.completion_tokens == 60 for r in results)
    assert len(slow_server.requests) == 3 and slow_server.max_in_flight == 1
    assert all(g.finished and not g.client_gone for g in slow_server.generations)
    run = client.usage_report()["run"]
    assert run["retries"] == run["abandoned"] == run["retried_while_generating"] == 0
    assert run["queue_wait_s"] > 4.0  # 3 s + 6 s of waiting, counted as nobody's failure
    assert run["generated_per_used"] == 1.0


def test_without_the_cap_the_servers_queue_looks_like_silence(
        slow_server: ScriptedLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    """The failure the cap prevents: queued inside the server, the second request sees no
    token for longer than it waits and is given up while the server is busy."""
    slow_server.push(text(words(60)), text(words(60)), text("late"))
    client = client_for(slow_server, monkeypatch, **{**STREAMED, "max_in_flight": 0})
    results: list[ChatResult] = []
    threads = [threading.Thread(target=lambda: results.append(client.chat("assistant", MSGS)))
               for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.1)
    for t in threads:
        t.join(30)
    assert sorted(r.attempts for r in results) == [1, 2]
    run = client.usage_report()["run"]
    assert run["abandoned"] == 1 and run["retried_while_generating"] == 1


def test_a_request_given_up_stops_being_generated(slow_server: ScriptedLLM,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The episode's time runs out during a 10 s reply: the call ends at the deadline, the
    server stops within a token, and its slot is free for the next request at once."""
    slow_server.push(text("warm"), text(words(200)), text("next"))
    client = client_for(slow_server, monkeypatch, **STREAMED)
    client.chat("assistant", MSGS)  # connected: the deadline is the generation's alone
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="time budget ran out") as info:
        client.chat("assistant", MSGS, deadline=started + 1.0)
    assert info.value.status == 408  # the episode's failure, not the endpoint's
    assert 1.0 <= time.monotonic() - started < 2.0
    time.sleep(0.3)
    gen = slow_server.generations[1]
    assert gen.client_gone and not gen.finished
    assert gen.ended - started < 1.5 and 5 < gen.tokens < 40
    assert client.chat("assistant", MSGS).text == "next"
    assert slow_server.generations[2].queued_s < 0.1
    run = client.usage_report()["run"]
    assert run["abandoned"] == 1 and run["left_running"] == 0
    assert run["retries"] == run["retried_while_generating"] == 0
    # the client counts the tokens it received: the server made at most one more
    received = run["tokens_generated"] - 2  # less "warm" and "next"
    assert gen.tokens - 1 <= received <= gen.tokens
    assert run["generated_per_used"] > 3


def test_a_deadline_while_waiting_for_a_slot(slow_server: ScriptedLLM,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    slow_server.push(text(words(40)))
    client = client_for(slow_server, monkeypatch, **STREAMED)
    first = threading.Thread(target=lambda: client.chat("assistant", MSGS))
    first.start()
    time.sleep(0.2)
    with pytest.raises(DeadlineExceeded, match="waited for a free slot"):
        client.chat("assistant", MSGS, deadline=time.monotonic() + 0.3)
    first.join(10)
    assert len(slow_server.requests) == 1  # never sent


def test_a_silent_server_is_given_up_and_retried(slow_server: ScriptedLLM,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Silent for 0.5 s after 3 tokens: given up; the retry waits (at the server) for the
    stalled generation to notice its client left, then gets its reply."""
    slow_server.push(Reply(text=words(10), stall_after=3, stall=1.5), text("fine"))
    client = client_for(slow_server, monkeypatch, **STREAMED)
    started = time.monotonic()
    reply = client.chat("assistant", MSGS)
    assert reply.text == "fine" and reply.attempts == 2
    assert time.monotonic() - started < 3.0
    assert slow_server.generations[0].client_gone and slow_server.generations[0].tokens == 3
    run = client.usage_report()["run"]
    # silent for 0.5 s: nothing was being generated when the retry went out
    assert run["abandoned"] == 1 and run["retried_while_generating"] == 0
    assert run["tokens_generated"] == 3 + 1


def test_a_late_first_token_is_retried_and_counted(slow_server: ScriptedLLM,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """No first token within its budget: given up (the server may be processing the prompt,
    so the retry counts as sent while it was busy), and the retry's own wait starts afresh."""
    slow_server.push(text("slow", delay=3.0), text("fast"))
    client = client_for(slow_server, monkeypatch, **STREAMED)
    reply = client.chat("assistant", MSGS)
    assert reply.text == "fast" and reply.attempts == 2
    run = client.usage_report()["run"]
    assert run["abandoned"] == 1 and run["retried_while_generating"] == 1
    assert slow_server.generations[0].client_gone and slow_server.generations[0].tokens <= 1


def test_silence_runs_out_the_retries(slow_server: ScriptedLLM,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    slow_server.push(*[Reply(text=words(5), stall_after=1, stall=2.0)] * 2)
    client = client_for(slow_server, monkeypatch, **STREAMED, max_retries=1)
    with pytest.raises(EndpointUnavailable, match=r"failed 2 time\(s\).*no token for 0.5 s"):
        client.chat("assistant", MSGS)


def test_whole_replies_keep_the_fixed_timeout_and_leave_work_running(
        slow_server: ScriptedLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unstreamed (remote endpoints): the old policy, and the waste it causes is counted: the
    server generates the abandoned reply to its end while the retry waits behind it."""
    slow_server.push(text(words(30)), text("again"))
    client = client_for(slow_server, monkeypatch, timeout=1.0)
    reply = client.chat("assistant", MSGS)
    assert reply.text == "again" and reply.attempts == 2
    gen = slow_server.generations[0]
    assert gen.finished and gen.client_gone and gen.tokens == 30
    run = client.usage_report()["run"]
    assert (run["abandoned"], run["left_running"], run["retried_while_generating"]) == (1, 1, 1)


def test_the_embedded_model_streams_every_request_tools_offered_too(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its server's fnforge-tools handler streams an automatic tool choice (the stock handler
    could not), and the prompt it counts is laid out as the server lays it out, tools too."""
    server = ScriptedLLM(slots=1, stream_usage=False).start()
    try:
        server.push(text("streamed"), tool_call("terminate", {"reason": "x"}))
        cfg = config_from_dict({"provider": "local"}, env={})
        assert cfg.streamed and cfg.in_flight_cap == 1
        client = LLMClient(cfg, base_url=server.base_url)
        streamed = client.chat("assistant", MSGS)
        assert streamed.text == "streamed"
        # no usage in the stream: the server's tokenizer counted the messages as chatml
        assert streamed.prompt_tokens == 1 and streamed.completion_tokens == 1
        tools = [{"type": "function", "function": {"name": "terminate", "parameters": {}}}]
        called = client.chat("optimizer", MSGS, tools=tools, tool_choice="auto")
        assert called.tool_calls and called.prompt_tokens > streamed.prompt_tokens + 10
        assert [bool(r.get("stream")) for r in server.requests] == [True, True]
    finally:
        server.stop()
    remote = config_from_dict({"base_url": "http://127.0.0.1:9/v1", "model": "m"}, env={})
    assert not remote.streamed and remote.in_flight_cap == 0
