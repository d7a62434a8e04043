"""LLM access: one client for any OpenAI-compatible endpoint, its config, the embedded model.

    client.py   LLMClient: chat calls with retries, usage and cost, record/replay, scrubbed errors;
                the embedded model's requests streamed, capped at its slots, given up on silence
                or a deadline (DeadlineExceeded), and what that wastes counted
    config.py   the [llm] table of fnforge.toml and the environment -> LLMConfig
    local.py    the embedded llama.cpp server on 127.0.0.1 (model files, start, stop)
    cache.py    record/replay of chat completions
    bench.py    tokens per second, time to first token, generation wasted on a one-slot server
"""

from __future__ import annotations

from .cache import CacheMode, ResponseCache
from .client import ChatResult, DeadlineExceeded, LLMClient, ToolCall, Usage
from .config import LLMConfig, LocalConfig, RoleConfig, config_from_dict, load_config

__all__ = [
    "CacheMode",
    "ChatResult",
    "DeadlineExceeded",
    "LLMClient",
    "LLMConfig",
    "LocalConfig",
    "ResponseCache",
    "RoleConfig",
    "ToolCall",
    "Usage",
    "config_from_dict",
    "load_config",
]
