"""Record/replay response cache through the real client and server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optimizer.errors import CacheMiss
from optimizer.llm import LLMClient
from optimizer.llm.cache import CacheMode, ResponseCache, request_key
from tests.scripted_llm import TEST_KEY, ScriptedLLM, client_for, scripted_llm, text

__all__ = ["scripted_llm"]

MSGS = [{"role": "user", "content": "hi"}]


def test_key_is_stable_and_sensitive() -> None:
    base = {"model": "m", "messages": MSGS, "temperature": 0.0}
    assert request_key(base) == request_key(dict(reversed(list(base.items()))))
    assert request_key(base) == request_key({**base, "timeout": 5})  # transport detail
    for change in ({"model": "n"}, {"temperature": 0.5}, {"seed": 1},
                   {"messages": [{"role": "user", "content": "hi!"}]},
                   {"tools": [{"type": "function", "function": {"name": "f"}}]},
                   {"response_format": {"type": "json_object"}}):
        assert request_key({**base, **change}) != request_key(base)


def test_record_then_replay(scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch,
                            tmp_path: Path) -> None:
    scripted_llm.push(text("first", prompt_tokens=30, completion_tokens=4), text("second"))
    client = client_for(scripted_llm, monkeypatch,
                        cache={"mode": "record", "dir": str(tmp_path)})
    a = client.chat("optimizer", MSGS, temperature=0.0)
    b = client.chat("optimizer", MSGS, temperature=0.0)
    assert (a.text, a.cached, b.text, b.cached) == ("first", False, "first", True)
    assert len(scripted_llm.requests) == 1
    usage = client.usage_report()["run"]
    assert usage["calls"] == 1 and usage["cached_calls"] == 1 and usage["prompt_tokens"] == 30

    files = list(tmp_path.rglob("*.json"))
    assert len(files) == 1
    entry = json.loads(files[0].read_text())
    assert entry["request"]["messages"] == MSGS and entry["request"]["temperature"] == 0.0
    assert TEST_KEY not in files[0].read_text()

    # Replay with the server gone: answers come from the files alone.
    scripted_llm.stop()
    replay = client_for(scripted_llm, monkeypatch,
                        cache={"mode": "replay", "dir": str(tmp_path)})
    assert replay.chat("optimizer", MSGS, temperature=0.0).text == "first"
    with pytest.raises(CacheMiss, match="replay mode: no recorded response"):
        replay.chat("optimizer", MSGS, temperature=0.5)


def test_cache_object_and_off_mode(scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch,
                                   tmp_path: Path) -> None:
    scripted_llm.push(text("one"), text("two"))
    client = client_for(scripted_llm, monkeypatch)
    assert client.cache is None
    assert client.chat("optimizer", MSGS).text == "one"
    assert client.chat("optimizer", MSGS).text == "two"
    off = ResponseCache(tmp_path, CacheMode.OFF)
    assert off.get({"model": "m", "messages": MSGS}) is None
    assert off.put({"model": "m", "messages": MSGS}, {"choices": []}) is None
    assert not list(tmp_path.iterdir())


def test_env_selects_replay(scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch,
                            tmp_path: Path) -> None:
    from optimizer.llm.config import config_from_dict

    cfg = config_from_dict({"base_url": scripted_llm.base_url, "model": "m"},
                           env={"FNFORGE_LLM_CACHE": "replay",
                                "FNFORGE_LLM_CACHE_DIR": str(tmp_path)})
    with pytest.raises(CacheMiss):
        LLMClient(cfg).chat("optimizer", MSGS)
    assert scripted_llm.requests == []
