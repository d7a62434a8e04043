"""`python -m sandbox bench`: fnforge's call path against the baselines, measured in one run.

Baselines, on the same image with the same hardening:
(a) a new `docker run` per call (how AgentOptimizer executes functions),
(b) `docker exec python3 -c ...` into a warm container (how AutoGen's Docker executor runs code),
(c) the floor: one JSON line each way to a local subprocess.
Targets: a trivial call's p50 at least 20x faster than (b) and 80x faster than (a); a sympy
call's at least 15x and 60x; vetting 20 functions per second or more (three unit tests each,
warm pool). The baselines are paced (PACE_S apart), so the like-for-like figures are fnforge's
paced ones; back to back, each call also competes for the CPU with the previous call's clean-up
(the next spare's fork and warm-up), which on 2 cores costs a sympy call about 2 ms.
`--runtime runsc` measures everything under gVisor instead of runc.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from docker.models.containers import Container
from rich.console import Console
from rich.table import Table

from .container import connect, container_options, remove
from .errors import engine_errors
from .image import find_image
from .limits import DEFAULT_LIMITS
from .runtime import Sandbox
from .spec import FunctionSpec

__all__ = ["HardenedDocker", "main", "write_figures"]

_console = Console(stderr=True)
TRIVIAL = FunctionSpec.from_dict({
    "name": "add", "description": "add two integers",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"},
                                                    "b": {"type": "integer"}},
                   "required": ["a", "b"]},
    "code": "def add(a, b):\n    return a + b\n"})
SYMPY = FunctionSpec.from_dict({
    "name": "factor_count", "description": "number of distinct prime factors",
    "parameters": {"type": "object", "properties": {"n": {"type": "integer"}},
                   "required": ["n"]},
    "code": "import sympy\n\ndef factor_count(n):\n    return len(sympy.factorint(n))\n"})
"""A call that needs the sympy/numpy zygote: the trivial call runs in a lighter child."""


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered), 3),
            "p99_ms": round(p99, 3)}


PACE_S = 0.02
"""Think time between paced calls: an agent's calls follow LLM turns, never back to back."""


def _time(fn: Callable[[], Any], n: int, label: str, pace_s: float = 0.0) -> list[float]:
    samples = []
    with _console.status(label):
        for _ in range(n):
            time.sleep(pace_s)
            start = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - start) * 1000)
    return samples


def _floor(n: int) -> list[float]:
    echo = ("import sys\nfor line in sys.stdin:\n"
            "    sys.stdout.write(line)\n    sys.stdout.flush()\n")
    proc = subprocess.Popen([sys.executable, "-c", echo], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout
    line = (json.dumps({"op": "call", "args": {"a": 1, "b": 2}}) + "\n").encode()

    def round_trip() -> None:
        stdin.write(line)
        stdin.flush()
        stdout.readline()

    try:
        return _time(round_trip, n, "floor: JSON line round trip to a local subprocess")
    finally:
        stdin.close()
        proc.wait()


class HardenedDocker:
    """The baselines' way to run code: a new container per command (`docker run`), on the
    sandbox image with fnforge's own hardening (container.py), so a benchmark measures the call
    path and nothing else. optimizer/bench.py times upstream's execution with it too."""

    def __init__(self, runtime: str | None = None) -> None:
        self.client = connect()
        self.image = str(find_image(self.client).id)
        self.runtime = runtime

    def start(self, command: list[str], **options: Any) -> Container:
        """A detached container running `command`; `options` override container options."""
        settings = container_options(self.image, DEFAULT_LIMITS, self.runtime)
        # a baseline container is waited on, read and removed by its caller
        settings.update(entrypoint=command, stdin_open=False, detach=True, auto_remove=False,
                        **options)
        with engine_errors("run a baseline container"):
            container: Container = self.client.containers.run(**settings)
        return container

    @staticmethod
    def remove(container: Container) -> None:
        remove(container)


def _docker_baselines(n_run: int, n_exec: int,
                      runtime: str | None) -> tuple[list[float], list[float]]:
    docker = HardenedDocker(runtime)
    snippet = ["/usr/bin/python3", "-c", "print(1 + 2)"]

    def docker_run() -> None:
        container = docker.start(snippet)
        container.wait()
        docker.remove(container)

    run_samples = _time(docker_run, n_run, "(a) a new hardened `docker run` per call", PACE_S)
    warm = docker.start(["/bin/sleep", "infinity"])
    try:
        exec_samples = _time(lambda: warm.exec_run(snippet), n_exec,
                             "(b) `docker exec python3 -c` into a warm container", PACE_S)
    finally:
        docker.remove(warm)
    return run_samples, exec_samples


def _throughput(sandbox: Sandbox, concurrency: int, seconds: float) -> float:
    count = [0] * concurrency
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        while time.monotonic() < stop:
            sandbox.call(TRIVIAL, {"a": i, "b": 1})
            count[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(count) / (time.monotonic() - start)


def _vet_rate(sandbox: Sandbox, n: int) -> float | None:
    specs = []
    for i in range(n):  # distinct code, so no verdict comes from the cache
        specs.append(FunctionSpec.from_dict({
            "name": "scaled_sum", "description": "k times the sum of 1..n",
            "parameters": {"type": "object", "properties": {"n": {"type": "integer"}},
                           "required": ["n"]},
            "code": f"def scaled_sum(n):\n    return {i + 1} * sum(range(1, n + 1))\n",
            "tests": [{"args": {"n": m}, "expect": (i + 1) * m * (m + 1) // 2}
                      for m in (1, 4, 10)]}))
    start = time.monotonic()
    with _console.status(f"vetting {n} functions (three unit tests each)"):
        reports = [sandbox.vet(spec) for spec in specs]
    elapsed = time.monotonic() - start
    if not all(r.passed for r in reports):
        _console.print("[red]benchmark functions were rejected: vetting figure not valid[/]")
        return None
    return n / elapsed


def main(args: argparse.Namespace) -> int:
    figures: dict[str, Any] = {}
    figures["floor"] = _percentiles(_floor(1000))
    runtime = args.runtime
    figures["runtime"] = runtime or "runc"
    run_samples, exec_samples = _docker_baselines(n_run=15, n_exec=40, runtime=runtime)
    figures["docker_run"] = _percentiles(run_samples)
    figures["docker_exec"] = _percentiles(exec_samples)
    with Sandbox(pool_size=4, runtime=runtime) as sandbox:
        figures["image_id"] = sandbox.image_id
        for _ in range(20):  # warm every container
            sandbox.call(TRIVIAL, {"a": 1, "b": 2})
        with Sandbox(runtime=runtime) as default:  # the default pool, as training uses it
            for _ in range(10):
                default.call(TRIVIAL, {"a": 1, "b": 2})
            call = lambda: default.call(TRIVIAL, {"a": 1, "b": 2})  # noqa: E731
            figures["fnforge"] = _percentiles(_time(
                call, args.calls, f"fnforge: Sandbox.call back to back, pool of "
                f"{default.pool_size}, fresh process per call"))
            figures["fnforge_paced"] = _percentiles(_time(
                call, args.calls, f"fnforge: Sandbox.call every {PACE_S * 1000:g} ms", PACE_S))
            sympy_call = lambda: default.call(SYMPY, {"n": 360})  # noqa: E731
            figures["fnforge_sympy"] = _percentiles(_time(
                sympy_call, args.calls,
                "fnforge: a sympy call back to back (the zygote's heavier child)"))
            figures["fnforge_sympy_paced"] = _percentiles(_time(
                sympy_call, args.calls, f"fnforge: a sympy call every {PACE_S * 1000:g} ms",
                PACE_S))
        with Sandbox(pool_size=1, runtime=runtime) as single:  # its clean-up is on the path
            single.call(TRIVIAL, {"a": 1, "b": 2})
            figures["fnforge_one_container"] = _percentiles(_time(
                lambda: single.call(TRIVIAL, {"a": 1, "b": 2}), args.calls,
                "fnforge: Sandbox.call, a single container"))
        figures["calls_per_s"] = {str(c): round(_throughput(sandbox, c, 3.0), 1)
                                  for c in (1, 2, 4)}
        rate = _vet_rate(sandbox, 40)
        figures["vet_functions_per_s"] = round(rate, 1) if rate is not None else None
    figures["ratios"] = {}
    for key in ("fnforge", "fnforge_paced", "fnforge_sympy", "fnforge_sympy_paced"):
        p50 = figures[key]["p50_ms"]
        figures["ratios"][key] = {
            "docker_exec_over_fnforge_p50": round(figures["docker_exec"]["p50_ms"] / p50, 1),
            "docker_run_over_fnforge_p50": round(figures["docker_run"]["p50_ms"] / p50, 1),
            "fnforge_over_floor_p50": round(p50 / figures["floor"]["p50_ms"], 1),
        }
    _report(figures)
    write_figures(figures, args.out)
    return 0


def write_figures(figures: dict[str, Any], out: str | None) -> None:
    """One JSON line on stdout, and the same figures, indented, in `out` when given."""
    if out:
        Path(out).write_text(json.dumps(figures, indent=2) + "\n")
    sys.stdout.write(json.dumps(figures) + "\n")


def _report(f: dict[str, Any]) -> None:
    table = Table(title=f"fnforge sandbox benchmark under {f['runtime']} (one run, one machine)")
    for column in ("path", "p50 ms", "p99 ms", "n"):
        table.add_column(column)
    pace = f"{PACE_S * 1000:g} ms apart"
    for key, label in (("floor", "(c) floor: JSON line to a local subprocess"),
                       ("fnforge", "fnforge Sandbox.call, default pool, back to back"),
                       ("fnforge_paced", f"fnforge Sandbox.call, default pool, {pace}"),
                       ("fnforge_sympy", "fnforge sympy.factorint call, back to back"),
                       ("fnforge_sympy_paced", f"fnforge sympy.factorint call, {pace}"),
                       ("fnforge_one_container", "fnforge Sandbox.call, pool of 1, back to back"),
                       ("docker_exec", f"(b) docker exec python3 -c, warm container, {pace}"),
                       ("docker_run", f"(a) docker run per call, {pace}")):
        row = f[key]
        table.add_row(label, f"{row['p50_ms']:.2f}", f"{row['p99_ms']:.2f}", str(row["n"]))
    _console.print(table)
    for key, label in (("fnforge", "back to back"), ("fnforge_paced", pace),
                       ("fnforge_sympy", "sympy call, back to back"),
                       ("fnforge_sympy_paced", f"sympy call, {pace}")):
        r = f["ratios"][key]
        want_exec, want_run = (15, 60) if "sympy" in key else (20, 80)
        exec_ok = r["docker_exec_over_fnforge_p50"] >= want_exec
        run_ok = r["docker_run_over_fnforge_p50"] >= want_run
        _console.print(f"fnforge {label}: docker exec / fnforge p50 = "
                       f"{r['docker_exec_over_fnforge_p50']}x (target >= {want_exec}x: "
                       f"{'met' if exec_ok else 'MISSED'}); docker run / fnforge p50 = "
                       f"{r['docker_run_over_fnforge_p50']}x (target >= {want_run}x: "
                       f"{'met' if run_ok else 'MISSED'}); fnforge / floor = "
                       f"{r['fnforge_over_floor_p50']}x")
    _console.print("calls per second at concurrency 1, 2, 4 (pool of 4): "
                   + ", ".join(f"{c}: {v}" for c, v in f["calls_per_s"].items()))
    vet = f["vet_functions_per_s"]
    if vet is not None:
        _console.print(f"vetting: {vet} functions/s with three unit tests each "
                       f"(target >= 20: {'met' if vet >= 20 else 'MISSED'})")
