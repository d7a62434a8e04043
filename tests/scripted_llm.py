"""The scripted LLM server (optimizer/llm/scripted.py) as pytest fixtures and helpers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from optimizer.llm.scripted import (
    Reply,
    ScriptedLLM,
    completion,
    error,
    json_reply,
    rate_limited,
    server_error,
    text,
    tool_call,
)

__all__ = ["TEST_KEY", "Reply", "ScriptedLLM", "client_for", "completion", "error", "json_reply",
           "rate_limited", "scripted_llm", "server_error", "text", "tool_call"]


@pytest.fixture
def scripted_llm() -> Iterator[ScriptedLLM]:
    """A started scripted server, stopped after the test."""
    server = ScriptedLLM().start()
    try:
        yield server
    finally:
        server.stop()


TEST_KEY = "sk-test-DO-NOT-LEAK-0123456789abcdef"


def client_for(server: ScriptedLLM, monkeypatch: pytest.MonkeyPatch, **table: Any) -> Any:
    """An LLMClient for the scripted server with fast retries and a recognisable fake key."""
    from optimizer.llm import LLMClient
    from optimizer.llm.config import config_from_dict

    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    settings: dict[str, Any] = {"base_url": server.base_url, "model": "scripted-model",
                                "max_retries": 3, "backoff_base": 0.01, "backoff_max": 0.5,
                                "timeout": 5.0}
    settings.update(table)
    env = {"OPENAI_API_KEY": TEST_KEY}
    return LLMClient(config_from_dict(settings, env=env))
