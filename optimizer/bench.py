"""`python -m optimizer.bench`: the optimizer's and the training loop's figures, in one run.

1. prompt tokens of an optimizer step with 10 and with 100 recorded conversations (by the
   budget's estimate, and as the embedded model's server counts them);
2. the time a step spends outside the LLM and vetting (a scripted LLM answering at once);
3. the share of optimizer steps that end with at least one vetted function, with the embedded
   model, over the fixed recorded conversations in tests/data/ (target: at least half), with
   one reply per proposal and with the best of three candidates (`[train] candidates`), and
   what each costs in LLM time;
4. the harness's overhead per conversation turn (scripted LLM, zero latency) against a turn of
   the embedded model (target: under 2%);
5. 16 conversations in flight against a scripted 1-second LLM, against one at a time (target: at
   least 8 times faster);
6. one epoch of the same scripted conversations with every code block run upstream's way (a new
   `docker run` each) and through fnforge's sandbox;
7. the Ray backend on a Ray instance on this machine against the local backend: its overhead
   per conversation (one at a time, a scripted LLM answering at once, a code block each), and
   its throughput at 16 conversations in flight against a scripted 1-second LLM (skipped
   without Ray: `make ray-deps`);
8. wasted generation: a scripted server that generates one reply at a time, two requests in
   flight, fnforge's old way (whole replies, a fixed timeout) against streamed requests capped at
   the server's slot: tokens generated per token used, abandoned requests, retries sent while
   the server was still generating (optimizer/llm/bench.py);
9. the embedded model on `make train`'s own workload (configs/small.toml: its problems, episode
   settings and conversations in flight): conversations per minute, generated tokens per second
   and tokens generated per token used, on a quiet machine and beside two CPU-bound processes.
Ratios are of figures measured in this run, on this machine; nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from sandbox import CallResult, FunctionSpec, RunResult, Sandbox, VetReport
from sandbox.bench import HardenedDocker, write_figures

from .agent_optimizer import AgentOptimizer, OptimizerSettings
from .backends import parallel
from .conversation import EpisodeSettings, solve
from .errors import OptimizerError
from .events import EventLog
from .llm import LLMClient
from .llm.bench import wasted_generation
from .llm.config import config_from_dict, load_config
from .llm.scripted import Reply, ScriptedLLM, text, tool_call
from .math import Grader, Problem
from .prompts import PromptBudget, Recorded, system_prompt, user_prompt

__all__ = ["main"]

RECORDED = Path(__file__).resolve().parents[1] / "tests" / "data" / "recorded_math.jsonl"
_console = Console(stderr=True)


def recorded(n: int) -> list[Recorded]:
    """n conversations from the fixed recorded set (cycled)."""
    rows = [json.loads(line) for line in RECORDED.read_text().splitlines() if line.strip()]
    return [Recorded(r["history"], bool(r["satisfied"])) for r in
            (rows[i % len(rows)] for i in range(n))]


def _scripted_client(server: ScriptedLLM) -> LLMClient:
    config = config_from_dict({"base_url": server.base_url, "model": "scripted-model",
                               "max_retries": 1, "timeout": 30.0},
                              env={"OPENAI_API_KEY": "sk-bench-not-a-key-0000"})
    return LLMClient(config, api_key="sk-bench-not-a-key-0000")


# -- 1. prompt tokens ----------------------------------------------------------------------------
def prompt_tokens(local: LLMClient | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in (10, 100):
        for budget in (6000, 3000):
            text_, stats = user_prompt([], [], recorded(n), PromptBudget(max_prompt_tokens=budget),
                                       ["add_function", "terminate"])
            row = {"estimated": stats.estimated_tokens, "shown": stats.shown}
            if local is not None:
                result = local.chat("optimizer", [{"role": "system", "content": system_prompt()},
                                                  {"role": "user", "content": text_}],
                                    max_tokens=1)
                row["counted_by_server"] = result.prompt_tokens
            out[f"{n}_conversations_budget_{budget}"] = row
    return out


# -- 2. a step outside the LLM and vetting ------------------------------------------------------
def step_overhead(sandbox: Sandbox) -> dict[str, Any]:
    code = "import sympy\n\ndef count_divisors(n):\n    return int(sympy.divisor_count(n))\n"
    spec: dict[str, Any] = {"name": "count_divisors", "description": "Number of divisors of n.",
            "parameters": {"type": "object", "properties": {"n": {"type": "integer",
                                                                   "minimum": 1}},
                           "required": ["n"]},
            "code": code, "tests": [{"args": {"n": 12}, "expect": 6}], "reason": "bench"}
    rows = []
    for n in (10, 100):
        server = ScriptedLLM().start()
        try:
            server.push(tool_call("add_function", {**spec, "code": code + f"# {n}\n"}),
                        tool_call("terminate", {"reason": "done"}))
            opt = AgentOptimizer(1, client=_scripted_client(server), sandbox=sandbox)
            for conv in recorded(n):
                opt.record_one_conversation(conv.history, is_satisfied=conv.satisfied)
            opt.step()
            s = opt.history[-1]
            rows.append({"conversations": n, "seconds": s.seconds, "llm": s.seconds_llm,
                         "vetting": s.seconds_vetting,
                         "outside": round(s.seconds - s.seconds_llm - s.seconds_vetting, 4)})
        finally:
            server.stop()
    return {"steps": rows}


# -- 3. vetted proposals with the embedded model -------------------------------------------------
def vetted_share(local: LLMClient, sandbox: Sandbox, steps: int,
                 candidates: int = 1) -> dict[str, Any]:
    """Each step from the empty library, over a different 6 of the recorded conversations and
    with its own seed, so the steps are not one prompt repeated."""
    log = EventLog()
    rows: list[dict[str, Any]] = []
    pool = recorded(10)
    for i in range(steps):
        opt = AgentOptimizer(1, client=local, sandbox=sandbox, events=log,
                             settings=OptimizerSettings(
                                 budget=PromptBudget(max_prompt_tokens=3000), seed=i,
                                 max_tokens=900, temperature=0.7, candidates=candidates))
        for conv in (pool[i:] + pool[:i])[:6]:
            opt.record_one_conversation(conv.history, is_satisfied=conv.satisfied)
        with _console.status(f"optimizer step {i + 1}/{steps} with the embedded model, "
                             f"{candidates} candidate(s) per proposal"):
            opt.step()
        s = opt.history[-1]
        rows.append({"applied": s.applied, "proposals": s.proposals,
                     "prompt_tokens": s.prompt_tokens, "seconds": s.seconds,
                     "seconds_llm": s.seconds_llm, "functions": s.functions})
    with_one = sum(1 for r in rows if r["applied"] >= 1)
    refusals = [e.data.get("why", "")[:300] for e in log.of("refused")]
    return {"candidates": candidates, "steps": rows,
            "share_with_a_vetted_function": round(with_one / steps, 3),
            "llm_seconds_per_step": round(sum(r["seconds_llm"] for r in rows) / steps, 1),
            "refusals": refusals[:10]}


# -- 4, 5, 6: the training loop ------------------------------------------------------------------
_NUMBERS = re.compile(r"\d+")


def _assistant(body: dict[str, Any]) -> Reply:
    """A scripted assistant: code first, then the answer its output gives."""
    messages = body["messages"]
    last = messages[-1]
    question = next(m["content"] for m in messages if m["role"] == "user")
    a, b = (int(x) for x in _NUMBERS.findall(question)[:2])
    if last["role"] == "user" and str(last["content"]).startswith("exitcode"):
        output = str(last["content"]).split("output:\n", 1)[-1].strip()
        return text(f"The answer is \\boxed{{{output}}}.")
    return text(f"```python\nprint({a} * {b})\n```")


def _problems(n: int) -> list[Problem]:
    return [Problem(f"bench/{i}", f"What is {i + 2} times {i + 3}?", str((i + 2) * (i + 3)),
                    "Arithmetic", 1, "bench") for i in range(n)]


def harness_overhead(sandbox: Sandbox, local: LLMClient | None,
                     grader: Grader) -> dict[str, Any]:
    server = ScriptedLLM(responder=_assistant).start()
    try:
        client = _scripted_client(server)
        problems = _problems(20)
        solve(problems[0], client=client, sandbox=sandbox, functions=[], grader=grader)
        t0 = time.perf_counter()
        turns = 0
        for p in problems:
            turns += solve(p, client=client, sandbox=sandbox, functions=[], grader=grader).turns
        per_turn = (time.perf_counter() - t0) / turns
    finally:
        server.stop()
    out: dict[str, Any] = {"harness_seconds_per_turn": round(per_turn, 4)}
    if local is not None:
        question = Problem("bench/real", "What is 12 times 13? Answer in \\boxed{}.", "156",
                           "Arithmetic", 1, "bench")
        t0 = time.perf_counter()
        result = solve(question, client=local, sandbox=sandbox, functions=[], grader=grader,
                       settings=EpisodeSettings(max_turns=2, max_tokens=200))
        model_turn = (time.perf_counter() - t0) / max(result.turns, 1)
        out.update(model_seconds_per_turn=round(model_turn, 2),
                   overhead_share=round(per_turn / model_turn, 5))
    return out


def concurrency(sandbox: Sandbox, grader: Grader) -> dict[str, Any]:
    def answer(body: dict[str, Any]) -> Reply:
        q = next(m["content"] for m in body["messages"] if m["role"] == "user")
        a, b = (int(x) for x in _NUMBERS.findall(q)[:2])
        return text(f"\\boxed{{{a * b}}}")

    server = ScriptedLLM(latency=1.0, responder=answer).start()
    try:
        client = _scripted_client(server)
        problems = _problems(16)

        def work(p: Problem) -> Any:
            return solve(p, client=client, sandbox=sandbox, functions=[], grader=grader)

        t0 = time.perf_counter()
        for p in problems:
            work(p)
        sequential = time.perf_counter() - t0
        t0 = time.perf_counter()
        list(parallel(problems, work, 16))
        in_flight = time.perf_counter() - t0
    finally:
        server.stop()
    return {"sequential_s": round(sequential, 2), "sixteen_in_flight_s": round(in_flight, 2),
            "speedup": round(sequential / in_flight, 1)}


def ray_backend(sandbox: Sandbox, grader: Grader) -> dict[str, Any]:
    """Local backend against Ray backend, the same conversations (a 1-node Ray here)."""
    try:
        import ray

        from .backends.ray_backend import RayBackend
    except ImportError:
        return {"skipped": "Ray is not installed (make ray-deps)"}
    from .backends import Episode, LocalBackend

    def answer(body: dict[str, Any]) -> Reply:
        messages = body["messages"]
        q = next(m["content"] for m in messages if m["role"] == "user")
        a, b = (int(x) for x in _NUMBERS.findall(q)[:2])
        if messages[-1]["role"] == "user" and messages[-1]["content"].startswith("exitcode"):
            return text(f"\\boxed{{{a * b}}}")
        return text(f"```python\nprint({a} * {b})\n```")

    def timed(backend: Any, n: int) -> float:
        episodes = [Episode(p, ()) for p in _problems(n)]
        t0 = time.perf_counter()
        list(backend.solve_all(episodes, EpisodeSettings()))
        return time.perf_counter() - t0

    out: dict[str, Any] = {}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for latency, n, in_flight, key in ((0.0, 16, 1, "one_at_a_time"),
                                           (1.0, 32, 16, "sixteen_in_flight_1s_llm")):
            server = ScriptedLLM(latency=latency, responder=answer).start()
            try:
                client = _scripted_client(server)
                local = LocalBackend(client, sandbox, grader, in_flight)
                on_ray = RayBackend(client, concurrency=in_flight)
                try:
                    timed(on_ray, 2)  # workers and the node's pool warm up first
                    local_s, ray_s = timed(local, n), timed(on_ray, n)
                finally:
                    on_ray.close()
            finally:
                server.stop()
            out[key] = {"conversations": n, "local_s": round(local_s, 2),
                        "ray_s": round(ray_s, 2),
                        "ray_overhead_per_conversation_s": round((ray_s - local_s) / n, 4),
                        "ray_conversations_per_s": round(n / ray_s, 2),
                        "local_conversations_per_s": round(n / local_s, 2)}
    finally:
        ray.shutdown()
    return out


class DockerRunPerCall:
    """Upstream's execution: every code block in a new container (hardened like fnforge's)."""

    def __init__(self) -> None:
        self.docker = HardenedDocker()

    def run(self, code: str, functions: Sequence[FunctionSpec] = (), *,
            timeout: float | None = None) -> RunResult:
        source = "\n\n".join([*(f.code for f in functions), code])
        started = time.perf_counter()
        container = self.docker.start(["/usr/bin/python3", "-c", source],
                                      log_config={"type": "json-file", "config": {}})
        try:
            status = container.wait(timeout=timeout or 30)
            out = container.logs(stdout=True, stderr=False).decode()
            err = container.logs(stdout=False, stderr=True).decode()
        finally:
            self.docker.remove(container)
        code_ = int(status.get("StatusCode", 1))
        return RunResult(ok=code_ == 0, stdout=out, stderr=err, exit_code=code_,
                         duration_ms=(time.perf_counter() - started) * 1000)

    def call(self, spec: FunctionSpec, args: dict[str, Any] | None = None, *,
             timeout: float | None = None) -> CallResult:
        raise OptimizerError("the upstream baseline runs code blocks only")

    def vet(self, spec: FunctionSpec) -> VetReport:
        raise OptimizerError("the upstream baseline vets nothing (it is offered no functions)")


def upstream_epoch(sandbox: Sandbox, grader: Grader, n: int = 8) -> dict[str, Any]:
    server = ScriptedLLM(responder=_assistant).start()
    try:
        client = _scripted_client(server)
        times = {}
        for label, executor in (("fnforge", sandbox), ("docker_run_per_call",
                                                       DockerRunPerCall())):
            t0 = time.perf_counter()
            right = sum(solve(p, client=client, sandbox=executor, functions=[],
                              grader=grader).correct for p in _problems(n))
            times[label] = round(time.perf_counter() - t0, 2)
            times[f"{label}_correct"] = right
    finally:
        server.stop()
    times["ratio"] = round(times["docker_run_per_call"] / times["fnforge"], 1)
    return {"conversations": n, **times}


# -- 9. the embedded model on make train's workload, quiet and under load -------------------------
TRAIN_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "small.toml"
CPU_HOG = "while True: pass"


THROUGHPUT_PHASES = ((0, 1), (0, 2), (2, 1))  # (CPU hogs beside it, conversations in flight)


def embedded_throughput(local: LLMClient, sandbox: Sandbox, grader: Grader, problems: int,
                        phases: Sequence[tuple[int, int]] = THROUGHPUT_PHASES
                        ) -> dict[str, Any]:
    """`problems` of the training split of configs/small.toml, solved with its episode settings
    once per phase: quiet one and two conversations at a time (two interleaved conversations
    share one server slot and can defeat its prefix cache), and beside two CPU hogs; a fresh
    client each time, so its usage report is that phase's alone."""
    from .runconfig import load_run_config
    from .train import make_split

    config = load_run_config(TRAIN_CONFIG)
    config_, base_url = local.worker_settings()  # the same server, a client of its own
    the_split = make_split(config.data)
    chosen = (list(the_split.train) + list(the_split.validation))[:problems]
    out: dict[str, Any] = {"problems": len(chosen), "max_tokens": config.episode.max_tokens}

    def work(problem: Problem) -> Any:
        return solve(problem, client=client, sandbox=sandbox, functions=[], grader=grader,
                     settings=config.episode)

    for n, in_flight in phases:
        label = ("quiet" if n == 0 else f"{n}_cpu_hogs") + \
            ("" if in_flight == 1 else f"_concurrency_{in_flight}")
        procs = [subprocess.Popen([sys.executable, "-c", CPU_HOG]) for _ in range(n)]
        client = LLMClient(config_, use_config_cache=False, base_url=base_url)
        try:
            with _console.status(f"{len(chosen)} conversations on the embedded model ({label})"):
                started = time.perf_counter()
                results = [r for _, r in parallel(chosen, work, in_flight)]
                seconds = time.perf_counter() - started
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
            client.close()
        usage = client.usage_report()["run"]
        outcomes: dict[str, int] = {}
        for r in results:
            outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
        out[label] = {
            "seconds": round(seconds, 1),
            "conversations_per_minute": round(60 * len(results) / seconds, 2),
            "turns": sum(r.turns for r in results), "correct": sum(r.correct for r in results),
            "outcomes": outcomes,
            "generated_tokens_per_s": round(usage["tokens_generated"] / seconds, 2),
            "tokens_generated": usage["tokens_generated"],
            "tokens_used": usage["completion_tokens"],
            "generated_per_used": usage["generated_per_used"],
            **{k: usage[k] for k in ("calls", "retries", "abandoned", "left_running",
                                     "retried_while_generating", "queue_wait_s")}}
    return out


def _local_client() -> LLMClient | None:
    config = load_config()
    if config.provider != "local":
        return None
    from .llm.local import LocalServer

    if LocalServer().status() is None:
        return None
    return LLMClient(config, use_config_cache=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optimizer.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="also write the figures to this JSON file")
    parser.add_argument("--steps", type=int, default=4,
                        help="optimizer steps with the embedded model (default 4)")
    parser.add_argument("--candidates", default="1,3",
                        help="candidates per proposal to compare in those steps (default 1,3)")
    parser.add_argument("--problems", type=int, default=4,
                        help="conversations per phase of the embedded model's throughput "
                             "(default 4; 0 skips it)")
    args = parser.parse_args(argv)
    from .llm.local import LocalServer

    server = LocalServer()
    started = False
    if load_config().provider == "local" and server.status() is None:
        _console.print("starting the embedded model for the model rows")
        server.start(load_config().local)
        started = True
    figures: dict[str, Any] = {}
    try:
        local = _local_client()
        with Sandbox() as sandbox, Grader(workers=2) as grader:
            figures["prompt_tokens"] = prompt_tokens(local)
            figures["step_outside_llm_and_vetting"] = step_overhead(sandbox)
            figures["harness"] = harness_overhead(sandbox, local, grader)
            figures["concurrency"] = concurrency(sandbox, grader)
            figures["upstream_epoch"] = upstream_epoch(sandbox, grader)
            figures["ray_backend"] = ray_backend(sandbox, grader)
            figures["wasted_generation"] = wasted_generation()
            if local is not None:
                figures["vetted_proposals"] = [
                    vetted_share(local, sandbox, args.steps, int(k))
                    for k in args.candidates.split(",") if k.strip()]
                if args.problems > 0:
                    figures["embedded_throughput"] = embedded_throughput(
                        local, sandbox, grader, args.problems)
    finally:
        if started:
            server.stop()
    _report(figures)
    write_figures(figures, args.out)
    return 0


def _report(f: dict[str, Any]) -> None:
    for key, row in f["prompt_tokens"].items():
        _console.print(f"optimizer prompt, {key.replace('_', ' ')}: {row}")
    for row in f["step_outside_llm_and_vetting"]["steps"]:
        _console.print(f"a step with {row['conversations']} conversations: {row['outside']} s "
                       f"outside the LLM ({row['llm']} s) and vetting ({row['vetting']} s)")
    h = f["harness"]
    share = h.get("overhead_share")
    _console.print(f"harness per turn: {h['harness_seconds_per_turn']} s"
                   + (f"; a turn of the embedded model {h['model_seconds_per_turn']} s; "
                      f"overhead {100 * share:.2f}% (target < 2%: "
                      f"{'met' if share < 0.02 else 'MISSED'})" if share is not None else ""))
    c = f["concurrency"]
    _console.print(f"16 conversations, scripted 1 s LLM: {c['sequential_s']} s one at a time, "
                   f"{c['sixteen_in_flight_s']} s in flight: {c['speedup']}x (target >= 8x: "
                   f"{'met' if c['speedup'] >= 8 else 'MISSED'})")
    u = f["upstream_epoch"]
    _console.print(f"an epoch of {u['conversations']} conversations: fnforge "
                   f"{u['fnforge']} s, a docker run per code block {u['docker_run_per_call']} s:"
                   f" {u['ratio']}x")
    r = f.get("ray_backend", {})
    if "skipped" in r:
        _console.print(f"Ray backend: skipped ({r['skipped']})")
    elif r:
        one, many = r["one_at_a_time"], r["sixteen_in_flight_1s_llm"]
        _console.print(f"Ray backend, one conversation at a time: "
                       f"{one['ray_overhead_per_conversation_s']} s more per conversation than "
                       f"local ({one['ray_s']} s against {one['local_s']} s for "
                       f"{one['conversations']})")
        _console.print(f"Ray backend, 16 in flight, scripted 1 s LLM: "
                       f"{many['ray_conversations_per_s']} conversations/s (local "
                       f"{many['local_conversations_per_s']})")
    w = f["wasted_generation"]
    for mode in ("whole_replies_fixed_timeout", "streamed_capped"):
        m = w[mode]
        _console.print(f"wasted generation, scripted one-slot server, {w['in_flight']} in "
                       f"flight, {mode.replace('_', ' ')}: {m['generated_per_used']} tokens "
                       f"generated per token used, {m['abandoned']} abandoned, "
                       f"{m['retried_while_generating']} retried while generating, "
                       f"{m['seconds']} s")
    t = f.get("embedded_throughput")
    for label, row in (t or {}).items():
        if isinstance(row, dict):
            _console.print(
                f"embedded model, make train's workload, {label.replace('_', ' ')}: "
                f"{row['conversations_per_minute']} conversations/min, "
                f"{row['generated_tokens_per_s']} generated tokens/s, "
                f"{row['generated_per_used']} tokens generated per token used (1.0 = nothing "
                f"wasted), {row['retried_while_generating']} retried while generating, "
                f"{row['left_running']} left running")
    for v in f.get("vetted_proposals", []):
        share = v["share_with_a_vetted_function"]
        _console.print(f"optimizer steps with at least one vetted function (embedded model, "
                       f"{v['candidates']} candidate(s) per proposal): {share:.0%} (target >= "
                       f"50%: {'met' if share >= 0.5 else 'MISSED'}); "
                       f"{v['llm_seconds_per_step']} s of LLM per step")


if __name__ == "__main__":
    raise SystemExit(main())
