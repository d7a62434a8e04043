"""Evaluation: the same test problems without the library and with it, paired.

Each test problem is solved twice, by the same assistant under the same settings: once with no
functions (the baseline) and once with the trained library. The table gives, per subject and in
all, each arm's accuracy with a 95% Wilson interval and McNemar's exact test on the paired
outcomes (only the problems where the arms disagree carry information). Every finished
conversation is journaled, so an interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sandbox import FunctionLibrary, FunctionSpec, Sandbox
from sandbox.text import markup_safe

from .backends import Backend, Episode, backend_for
from .llm import LLMClient
from .llm.config import resolve_llm_config
from .math import Grader, Problem
from .runconfig import RunConfig
from .train import RunDirectory, _progress

__all__ = ["ARMS", "EvalRow", "evaluate", "mcnemar_exact", "summarise", "wilson"]

ARMS = ("base", "library")


@dataclass(frozen=True)
class EvalRow:
    subject: str
    n: int
    base_correct: int
    library_correct: int
    library_only: int  # right with the library, wrong without
    base_only: int  # right without, wrong with
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "n": self.n,
                "base": {"correct": self.base_correct, "accuracy": self.base_correct / self.n,
                         "ci95": wilson(self.base_correct, self.n)},
                "library": {"correct": self.library_correct,
                            "accuracy": self.library_correct / self.n,
                            "ci95": wilson(self.library_correct, self.n)},
                "discordant": {"library_only": self.library_only, "base_only": self.base_only},
                "mcnemar_p": self.p_value}


def wilson(correct: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion: sound at small n and near 0 or 1."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of b against b + c at one half."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return float(min(1.0, 2 * tail))


def summarise(problems: Sequence[Problem],
              outcomes: dict[tuple[str, str], bool]) -> list[EvalRow]:
    """Rows per subject, then "all", from (arm, problem id) -> correct."""
    subjects = sorted({p.subject for p in problems})
    rows = []
    for subject in [*subjects, "all"]:
        chosen = [p for p in problems if subject in ("all", p.subject)
                  and ("base", p.id) in outcomes and ("library", p.id) in outcomes]
        if not chosen:
            continue
        base = [outcomes[("base", p.id)] for p in chosen]
        lib = [outcomes[("library", p.id)] for p in chosen]
        b = sum(1 for x, y in zip(base, lib, strict=True) if y and not x)
        c = sum(1 for x, y in zip(base, lib, strict=True) if x and not y)
        rows.append(EvalRow(subject, len(chosen), sum(base), sum(lib), b, c,
                            round(mcnemar_exact(b, c), 4)))
    return rows


def evaluate(config: RunConfig, problems: Sequence[Problem], library: FunctionLibrary,
             out_dir: Path, *, console: Console | None = None, client: LLMClient | None = None,
             sandbox: Sandbox | None = None, backend: Backend | None = None) -> dict[str, Any]:
    """Solve every problem with and without the library; write eval.json; return it."""
    console = console or Console(stderr=True)
    started = time.monotonic()
    run = RunDirectory(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if client is None:
        llm, key = resolve_llm_config(config.llm or None)
        client = LLMClient(llm, api_key=key)
    outcomes: dict[tuple[str, str], bool] = {}
    for record in run.journal("eval-journal.jsonl"):
        if record.get("library_version") == library.version:
            outcomes[(record["arm"], record["result"]["problem_id"])] = \
                bool(record["result"]["correct"])
    with contextlib.ExitStack() as stack:
        if sandbox is None:
            sandbox = stack.enter_context(Sandbox(
                pool_size=config.sandbox.pool_size, runtime=config.sandbox.runtime or None,
                engine_wait_s=config.sandbox.engine_wait_s))
        grader = stack.enter_context(Grader())
        if backend is None:
            backend = stack.enter_context(contextlib.closing(backend_for(
                config, client=client, sandbox=sandbox, grader=grader)))
        functions = [s for s in library.specs() if sandbox.vet(s).passed]
        arms: dict[str, tuple[FunctionSpec, ...]] = {"base": (), "library": tuple(functions)}
        todo = [Episode(p, arms[arm], arm) for p in problems for arm in ARMS
                if (arm, p.id) not in outcomes]
        with _progress(console) as progress:
            task = progress.add_task("evaluation", total=2 * len(problems),
                                     completed=2 * len(problems) - len(todo), stats="")
            for episode, result in backend.solve_all(todo, config.episode):
                arm = episode.tag
                outcomes[(arm, result.problem_id)] = result.correct
                run.append_journal({"arm": arm, "library_version": library.version,
                                    "result": result.to_dict()}, "eval-journal.jsonl")
                progress.update(task, advance=1, stats=_running(outcomes))
    rows = summarise(problems, outcomes)
    report = {"problems": len(problems), "functions": [s.name for s in functions],
              "library_version": library.version, "seconds": round(time.monotonic() - started, 1),
              "rows": [r.to_dict() for r in rows]}
    run.write_json("eval.json", report)
    console.print(_table(rows))
    return report


def _running(outcomes: dict[tuple[str, str], bool]) -> str:
    parts = []
    for arm in ARMS:
        done = [v for (a, _), v in outcomes.items() if a == arm]
        if done:
            parts.append(f"{arm} {sum(done)}/{len(done)}")
    return "  ".join(parts)


def _table(rows: Sequence[EvalRow]) -> Table:
    table = Table(title="evaluation: the same test problems without and with the library")
    for col in ("subject", "n", "without library", "with library", "+ / -", "McNemar p"):
        table.add_column(col, justify="right" if col != "subject" else "left")
    for r in rows:
        lo_b, hi_b = wilson(r.base_correct, r.n)
        lo_l, hi_l = wilson(r.library_correct, r.n)
        table.add_row(markup_safe(r.subject), str(r.n),
                      f"{100 * r.base_correct / r.n:.1f}% [{100 * lo_b:.0f}-{100 * hi_b:.0f}]",
                      f"{100 * r.library_correct / r.n:.1f}% [{100 * lo_l:.0f}-{100 * hi_l:.0f}]",
                      f"+{r.library_only} / -{r.base_only}", f"{r.p_value:.3f}")
    return table
