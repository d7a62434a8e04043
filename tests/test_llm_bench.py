"""Benchmark rows against the scripted server with a fixed latency."""

from __future__ import annotations

from optimizer.llm.bench import bench_rows, wasted_generation
from tests.scripted_llm import ScriptedLLM, text


def test_bench_rows_with_fixed_latency() -> None:
    server = ScriptedLLM(latency=0.1, token_latency=0.02).start()
    try:
        server.push(text("OK"), text("OK", prompt_tokens=400),
                    *[text("one two three four")] * 3,
                    text(" ".join(["word"] * 21), completion_tokens=21))
        rows = {r["bench"]: r for r in bench_rows(server.base_url, "scripted-model")}
    finally:
        server.stop()
    assert set(rows) == {"llm_prompt_tokens_per_s", "llm_ttft_cold_s",
                         "llm_ttft_repeated_prefix_s", "llm_generation_tokens_per_s"}
    assert 400 / 0.5 < rows["llm_prompt_tokens_per_s"]["value"] < 400 / 0.1
    assert rows["llm_ttft_cold_s"]["value"] >= 0.1
    assert rows["llm_ttft_repeated_prefix_s"]["value"] >= 0.1
    assert 20 < rows["llm_generation_tokens_per_s"]["value"] <= 50.5  # 20 ms per piece
    assert all(r["model"] == "scripted-model" for r in rows.values())
    prompts = [r["messages"][0]["content"] for r in server.requests[2:5]]
    assert prompts[0] == prompts[1] == prompts[2]  # the stable prefix is repeated verbatim


def test_wasted_generation_old_way_against_streamed() -> None:
    """Two requests in flight to a one-slot server: whole replies with a fixed timeout shorter
    than a reply plus its wait are given up and generated anyway; streamed ones waste nothing."""
    figures = wasted_generation(requests=4, in_flight=2)
    old, new = figures["whole_replies_fixed_timeout"], figures["streamed_capped"]
    assert old["generated_per_used"] > 1.3 and old["left_running"] >= 1
    assert old["retried_while_generating"] >= 1 and old["generated_for_a_client_gone"] > 0
    assert new["generated_per_used"] == 1.0 and new["answered"] == 4
    assert new["abandoned"] == new["retries"] == new["generated_for_a_client_gone"] == 0
    assert new["seconds"] < old["seconds"]
