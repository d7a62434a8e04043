"""LLMClient against the scripted server: retries, errors, usage, no key leaks."""

from __future__ import annotations

import logging
import socket
import time
import traceback

import pytest

from optimizer.errors import (
    ContextTooLong,
    EndpointUnavailable,
    KeyRejected,
    LLMRequestError,
    ModelNotFound,
)
from optimizer.llm import LLMClient
from optimizer.llm.config import config_from_dict
from tests.scripted_llm import (
    TEST_KEY,
    Reply,
    ScriptedLLM,
    client_for,
    error,
    rate_limited,
    scripted_llm,
    server_error,
    text,
)

__all__ = ["scripted_llm"]  # the fixture, imported for pytest

MSGS = [{"role": "user", "content": "hi"}]


def test_text_reply_and_usage(scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_llm.push(text("hello", prompt_tokens=100, completion_tokens=20),
                      text("again", prompt_tokens=50, completion_tokens=10),
                      text("assist", prompt_tokens=7, completion_tokens=3))
    client = client_for(scripted_llm, monkeypatch, prices={
        "scripted-model": {"input_per_mtok": 1.0, "output_per_mtok": 4.0}})
    r = client.chat("optimizer", MSGS, temperature=0.0, max_tokens=50)
    assert (r.text, r.prompt_tokens, r.completion_tokens, r.attempts) == ("hello", 100, 20, 1)
    assert r.cost_usd == pytest.approx((100 * 1.0 + 20 * 4.0) / 1e6)
    client.chat("optimizer", MSGS)
    client.chat("assistant", MSGS)
    report = client.usage_report()
    assert report["roles"]["optimizer"]["prompt_tokens"] == 150
    assert report["roles"]["optimizer"]["completion_tokens"] == 30
    assert report["roles"]["assistant"]["calls"] == 1
    assert report["run"]["calls"] == 3
    assert report["run"]["total_tokens"] == 190
    assert report["run"]["cost_usd"] == pytest.approx((157 * 1.0 + 33 * 4.0) / 1e6)
    sent = scripted_llm.requests[0]
    assert sent["model"] == "scripted-model" and sent["temperature"] == 0.0
    assert sent["max_tokens"] == 50
    assert scripted_llm.headers[0]["authorization"] == f"Bearer {TEST_KEY}"


def test_no_price_means_no_cost(scripted_llm: ScriptedLLM,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_llm.push(text("x"))
    client = client_for(scripted_llm, monkeypatch)
    assert client.chat("optimizer", MSGS).cost_usd is None
    assert client.usage_report()["run"]["cost_usd"] is None


def test_429_honours_retry_after(scripted_llm: ScriptedLLM,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_llm.push(rate_limited(retry_after=0.4), text("ok"))
    client = client_for(scripted_llm, monkeypatch, backoff_base=0.0)
    start = time.monotonic()
    r = client.chat("optimizer", MSGS)
    assert time.monotonic() - start >= 0.4
    assert r.text == "ok" and r.attempts == 2
    assert client.usage_report()["run"]["retries"] == 1
    assert len(scripted_llm.requests) == 2


def test_retry_after_is_bounded(scripted_llm: ScriptedLLM,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_llm.push(rate_limited(retry_after=3600), text("ok"))
    client = client_for(scripted_llm, monkeypatch, backoff_max=0.2)
    start = time.monotonic()
    assert client.chat("optimizer", MSGS).text == "ok"
    assert time.monotonic() - start < 3


def test_5xx_then_success(scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_llm.push(server_error(500), server_error(503), text("fine"))
    r = client_for(scripted_llm, monkeypatch).chat("optimizer", MSGS)
    assert r.text == "fine" and r.attempts == 3


def test_retries_run_out(scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_llm.push(*[server_error(502)] * 4)
    client = client_for(scripted_llm, monkeypatch, max_retries=3)
    with pytest.raises(EndpointUnavailable, match=r"failed 4 time\(s\).*HTTP 502"):
        client.chat("optimizer", MSGS)
    assert len(scripted_llm.requests) == 4


@pytest.mark.parametrize("fault", [Reply(no_choices=True), Reply(hang_up=True),
                                   Reply(truncate=True)],
                         ids=["no choices", "connection reset", "truncated body"])
def test_broken_answers_are_retried(scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch,
                                    fault: Reply) -> None:
    scripted_llm.push(fault, text("fine"))
    result = client_for(scripted_llm, monkeypatch).chat("optimizer", MSGS)
    assert result.text == "fine" and result.attempts == 2


def test_malformed_response_is_retried(scripted_llm: ScriptedLLM,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_llm.push(Reply(raw_body=b'{"choices": [ {not json'), text("ok"))
    r = client_for(scripted_llm, monkeypatch).chat("optimizer", MSGS)
    assert r.text == "ok" and r.attempts == 2


def test_slow_reply_times_out_and_retries(scripted_llm: ScriptedLLM,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_llm.push(text("late", delay=2.0), text("quick"))
    client = client_for(scripted_llm, monkeypatch, timeout=0.5)
    r = client.chat("optimizer", MSGS)
    assert r.text == "quick" and r.attempts == 2


def test_timeouts_run_out(scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_llm.push(text("late", delay=1.0), text("late", delay=1.0))
    client = client_for(scripted_llm, monkeypatch, timeout=0.3, max_retries=1)
    with pytest.raises(EndpointUnavailable, match="timeout"):
        client.chat("optimizer", MSGS)


def test_connection_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    cfg = config_from_dict({"base_url": f"http://127.0.0.1:{port}/v1", "model": "m",
                            "max_retries": 2, "backoff_base": 0.01}, env={})
    with pytest.raises(EndpointUnavailable, match=r"failed 3 time\(s\).*connection"):
        LLMClient(cfg).chat("optimizer", MSGS)


def test_key_rejected_says_which_and_hides_key(scripted_llm: ScriptedLLM,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_llm.push(error(401, f"Incorrect API key provided: {TEST_KEY}.",
                            code="invalid_api_key"))
    client = client_for(scripted_llm, monkeypatch)
    with pytest.raises(KeyRejected) as info:
        client.chat("optimizer", MSGS)
    message = str(info.value)
    assert "rejected the API key" in message and "$OPENAI_API_KEY" in message
    assert TEST_KEY not in message and "sk-test" not in message
    assert len(scripted_llm.requests) == 1  # never retried


def test_model_not_found_lists_models(scripted_llm: ScriptedLLM,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_llm.push(error(404, "The model `gpt-9` does not exist", code="model_not_found"))
    client = client_for(scripted_llm, monkeypatch, model="gpt-9")
    with pytest.raises(ModelNotFound, match=r"'gpt-9' is not served.*serves: scripted-model"):
        client.chat("optimizer", MSGS)


@pytest.mark.parametrize("reply", [
    error(400, "This model's maximum context length is 8192 tokens.",
          code="context_length_exceeded"),
    error(400, "Requested tokens (9000) exceed context window of 8192"),
])
def test_context_too_long(scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch,
                          reply: Reply) -> None:
    scripted_llm.push(reply)
    with pytest.raises(ContextTooLong, match=r"too long for model 'scripted-model'.*Shorten"):
        client_for(scripted_llm, monkeypatch).chat("optimizer", MSGS)


def test_other_4xx_is_not_retried(scripted_llm: ScriptedLLM,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_llm.push(error(422, "temperature must be <= 2"))
    with pytest.raises(LLMRequestError, match=r"HTTP 422.*temperature") as info:
        client_for(scripted_llm, monkeypatch).chat("optimizer", MSGS)
    assert info.value.status == 422 and len(scripted_llm.requests) == 1


def test_azure_client(scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_llm.push(text("from azure"))
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", TEST_KEY)
    env = {"AZURE_OPENAI_ENDPOINT": f"http://127.0.0.1:{scripted_llm.port}",
           "OPENAI_API_VERSION": "2024-10-21", "AZURE_OPENAI_DEPLOYMENT": "my-deploy"}
    cfg = config_from_dict({}, env=env)
    assert cfg.provider == "azure" and cfg.role("optimizer").model == "my-deploy"
    assert LLMClient(cfg).chat("optimizer", MSGS).text == "from azure"
    headers = scripted_llm.headers[0]
    assert headers[":path"].startswith("/openai/deployments/my-deploy/chat/completions")
    assert "api-version=2024-10-21" in headers[":path"]
    assert headers["api-key"] == TEST_KEY


def test_key_never_leaks(scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch,
                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    scripted_llm.push(error(500, f"upstream said {TEST_KEY}"), text("ok"),
                      *[error(500, f"bad key {TEST_KEY}")] * 2,
                      error(401, f"Incorrect API key provided: {TEST_KEY}"))
    client = client_for(scripted_llm, monkeypatch, max_retries=1)
    client.chat("optimizer", MSGS)
    texts = [repr(client), repr(client.config), str(client.usage_report())]
    for exc_type in (EndpointUnavailable, KeyRejected):
        with pytest.raises(exc_type) as info:
            client.chat("optimizer", MSGS)
        texts += [str(info.value), repr(info.value),
                  "".join(traceback.format_exception(info.value))]
    texts.append(caplog.text)
    for t in texts:
        assert TEST_KEY not in t
    assert "retry 1/1" in caplog.text  # the retries were logged, scrubbed
