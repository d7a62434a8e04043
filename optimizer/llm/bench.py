"""Benchmark rows for a chat endpoint: prompt and generation tokens/s, time to first token;
and `wasted_generation`, what a slow single-slot server generates for nobody.

Prompts are laid out the way fnforge lays them out, stable part first: the server (llama.cpp)
reuses the cached prefix, so a repeated prefix should answer much sooner than a fresh one.
``python -m optimizer.bench_llm [--base-url URL --model NAME] [--json]``; with no URL it uses the
running local server, starting (and afterwards stopping) one if none runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from typing import Any

from ..errors import LLMError
from .client import LLMClient
from .config import config_from_dict, load_config
from .scripted import ScriptedLLM, text

__all__ = ["STABLE_PREFIX", "bench_rows", "main", "wasted_generation"]


STABLE_PREFIX = (
    "You improve the function library of a Python agent. Each function is a JSON object with "
    "name, description, parameters (a JSON schema of type object), code (one Python def), "
    "packages and tests. Functions run in a sandbox without network or files; keep them pure, "
    "short and deterministic, validate arguments and raise ValueError on bad input. "
) * 6


def _messages(prefix: str, question: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": prefix}, {"role": "user", "content": question}]


def _ttft(client: LLMClient, messages: list[dict[str, Any]],
          max_tokens: int) -> tuple[float, float, int]:
    """(time to first piece, total time, pieces) of a streamed reply."""
    start = time.perf_counter()
    first: float | None = None
    pieces = 0
    for _ in client.stream_text("assistant", messages, max_tokens=max_tokens, temperature=0.0):
        if first is None:
            first = time.perf_counter() - start
        pieces += 1
    total = time.perf_counter() - start
    return (first if first is not None else total), total, pieces


def bench_rows(base_url: str, model: str, repeats: int = 2) -> list[dict[str, Any]]:
    """Measure the endpoint; each row is {"bench", "value", "unit", "model", "detail"}."""
    cfg = config_from_dict({"provider": "openai", "base_url": base_url, "model": model,
                            "max_retries": 1, "timeout": 600.0}, env={})
    rows: list[dict[str, Any]] = []

    def row(name: str, value: float, unit: str, detail: str) -> None:
        rows.append({"bench": name, "value": round(value, 3), "unit": unit, "model": model,
                     "detail": detail})

    with LLMClient(cfg, use_config_cache=False, base_url=base_url) as client:
        client.chat("assistant", _messages("Warm up.", "Say OK."), max_tokens=1)  # load, connect
        # Prompt processing: a nonce first defeats the prefix cache; one output token.
        fresh = f"[run {uuid.uuid4().hex}] {STABLE_PREFIX}"
        start = time.perf_counter()
        result = client.chat("assistant", _messages(fresh, "Say OK."), max_tokens=1,
                             temperature=0.0)
        elapsed = time.perf_counter() - start
        row("llm_prompt_tokens_per_s", result.prompt_tokens / elapsed if elapsed else 0.0,
            "tokens/s", f"{result.prompt_tokens} prompt tokens, uncached, {elapsed:.2f} s")

        # Time to first token: fresh prefix, then the same prefix again with new questions.
        cold_prefix = f"[run {uuid.uuid4().hex}] {STABLE_PREFIX}"
        cold, _, _ = _ttft(client, _messages(cold_prefix, "Name one prime."), 4)
        warm = [_ttft(client, _messages(cold_prefix, f"Name a number above {i}."), 4)[0]
                for i in range(repeats)]
        row("llm_ttft_cold_s", cold, "s", "stable prefix not cached")
        row("llm_ttft_repeated_prefix_s", statistics.median(warm), "s",
            f"same stable prefix, new question; median of {repeats}")

        # Generation speed: time after the first piece over the pieces that followed.
        first, total, pieces = _ttft(
            client, _messages("You are a helpful assistant.",
                              "Write the numbers from 1 to 100 in words, one per line."), 64)
        gen_time = total - first
        row("llm_generation_tokens_per_s",
            (pieces - 1) / gen_time if pieces > 1 and gen_time > 0 else 0.0,
            "tokens/s", f"{pieces} tokens streamed")
    return rows


# A reply of REPLY_TOKENS at TOKEN_S each takes 1 s; the fixed timeout is shorter than a reply
# plus the wait behind another one, as 120 s was for the 1.5B model beside two CPU hogs.
REPLY_TOKENS, TOKEN_S, FIXED_TIMEOUT_S = 50, 0.02, 1.5
_MODES: dict[str, dict[str, Any]] = {
    "whole_replies_fixed_timeout": {"timeout": FIXED_TIMEOUT_S},
    "streamed_capped": {"stream": True, "max_in_flight": 1, "silence_timeout": 5.0,
                        "first_token_timeout": 5.0},
}


def _drive(client: LLMClient, requests: int, in_flight: int) -> int:
    """`requests` chat calls from `in_flight` threads; how many failed."""
    failed: list[LLMError] = []

    def ask(count: int) -> None:
        for _ in range(count):
            try:
                client.chat("assistant", [{"role": "user", "content": "go"}])
            except LLMError as exc:
                failed.append(exc)

    share = [requests // in_flight + (i < requests % in_flight) for i in range(in_flight)]
    threads = [threading.Thread(target=ask, args=(n,)) for n in share]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(failed)


def wasted_generation(requests: int = 6, in_flight: int = 2) -> dict[str, Any]:
    """`requests` chat calls, `in_flight` at a time, against a scripted server that generates
    one reply at a time (llama-cpp-python's way): fnforge's old way (whole replies, a fixed
    timeout) against streamed requests capped at the server's slot. Tokens generated are the
    server's own count, so a reply generated for a client that gave up is counted too."""
    out: dict[str, Any] = {"requests": requests, "in_flight": in_flight,
                           "reply_s": REPLY_TOKENS * TOKEN_S}
    words = " ".join(f"w{i}" for i in range(REPLY_TOKENS))
    for mode, table in _MODES.items():
        server = ScriptedLLM(slots=1, token_latency=TOKEN_S,
                             responder=lambda body: text(words, completion_tokens=REPLY_TOKENS))
        server.start()
        cfg = config_from_dict({"base_url": server.base_url, "model": "scripted-model",
                                "max_retries": 3, "backoff_base": 0.01, **table}, env={})
        try:
            with LLMClient(cfg, use_config_cache=False, api_key="sk-bench-not-a-key-0000",
                           base_url=server.base_url) as client:
                started = time.perf_counter()
                failed = _drive(client, requests, in_flight)
                seconds = time.perf_counter() - started
                usage = client.usage_report()["run"]
            time.sleep(REPLY_TOKENS * TOKEN_S)  # let generations nobody waits for end
        finally:
            server.stop()
        generated = sum(g.tokens for g in server.generations)
        used = usage["completion_tokens"]
        out[mode] = {
            "seconds": round(seconds, 2), "answered": usage["calls"], "failed": failed,
            "server_tokens_generated": generated, "tokens_used": used,
            "generated_per_used": round(generated / used, 3) if used else None,
            "abandoned": usage["abandoned"], "left_running": usage["left_running"],
            "retries": usage["retries"],
            "retried_while_generating": usage["retried_while_generating"],
            "generated_for_a_client_gone": sum(
                g.tokens for g in server.generations if g.client_gone)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optimizer.bench_llm")
    parser.add_argument("--base-url", help="OpenAI-compatible endpoint (default: local server)")
    parser.add_argument("--model", help="model name (default: the local model's alias)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    server = None
    base_url, model = args.base_url, args.model
    if base_url is None:
        from .local import LocalServer

        local = load_config().local
        server = LocalServer()
        info = server.status()
        if info is not None:
            server = None  # somebody else's: leave it running
        else:
            info = server.start(local)
        base_url, model = info.base_url, model or info.model
    if model is None:
        parser.error("--model is required with --base-url")
    try:
        rows = bench_rows(base_url, model)
    finally:
        if server is not None:
            server.stop()
    for r in rows:
        if args.json:
            print(json.dumps(r))
        else:
            print(f"{r['bench']:<32} {r['value']:>10.3f} {r['unit']:<9} {r['detail']}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
