"""Evaluation: the same test problems without the library and with it, paired.

Each test problem is solved twice, by the same assistant under the same settings (the same
system prompt, turn and token limits: compute-matched): once with no functions (the baseline)
and once with the library. The table gives, per subject and in all, each arm's accuracy with a
95% Wilson interval, McNemar's exact test on the paired outcomes (only the problems where the
arms disagree carry information), and the smallest gain that many pairs could detect, so a
null result that only means "too few problems" reads as such. It also says how often the
library arm called its library, and what each arm spent. Every finished conversation is
journaled, so an interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sandbox import FunctionLibrary, FunctionSpec, Sandbox, markup_safe

from .backends import Backend, Episode
from .conversation import ConversationResult
from .llm import LLMClient
from .math import Problem
from .runconfig import RunConfig
from .session import (
    RunDirectory,
    episode_key,
    library_digest,
    library_use,
    open_session,
    progress_bar,
    source_commit,
    use_text,
)

__all__ = ["ARMS", "DISCORDANCE_WHEN_NONE_SEEN", "EvalRow", "detectable_effect", "evaluate",
           "mcnemar_exact", "summarise", "wilson"]

ARMS = ("base", "library")
DISCORDANCE_WHEN_NONE_SEEN = 0.25
"""The share of disagreeing pairs a detectable gain assumes when none disagreed (as when the
library is empty and both arms are one set of conversations): MATH arms of a small model
disagree on about a quarter of problems. Assuming none would claim that a handful of pairs
detects a gain of a few points."""
ARM_BLOCK = 8
"""Problems per arm in a row: both arms advance together (a slower machine later on weighs on
both alike), yet a local server keeps one arm's prompt prefix cached for several requests
(alternating arms on every request made it re-read the library block each time)."""


@dataclass(frozen=True)
class EvalRow:
    subject: str
    n: int
    base_correct: int
    library_correct: int
    library_only: int  # right with the library, wrong without
    base_only: int  # right without, wrong with
    p_value: float

    @property
    def discordance(self) -> float:
        """The share of pairs whose arms disagree, as seen (DISCORDANCE_WHEN_NONE_SEEN if 0)."""
        seen = (self.library_only + self.base_only) / self.n if self.n else 0.0
        return seen or DISCORDANCE_WHEN_NONE_SEEN

    @property
    def detectable(self) -> float | None:
        """The smallest gain these pairs detect (see detectable_effect)."""
        return detectable_effect(self.n, self.discordance)

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "n": self.n,
                "base": {"correct": self.base_correct, "accuracy": self.base_correct / self.n,
                         "ci95": wilson(self.base_correct, self.n)},
                "library": {"correct": self.library_correct,
                            "accuracy": self.library_correct / self.n,
                            "ci95": wilson(self.library_correct, self.n)},
                "discordant": {"library_only": self.library_only, "base_only": self.base_only},
                "mcnemar_p": self.p_value,
                "gain": (self.library_correct - self.base_correct) / self.n,
                "gain_ci95": paired_difference_ci(self.n, self.library_only, self.base_only),
                "detectable_gain": self.detectable,
                "detectable_assumes_discordance": round(self.discordance, 4)}


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


@functools.lru_cache(maxsize=256)
def detectable_effect(n: int, discordant_share: float = 0.0, *, alpha: float = 0.05,
                      power: float = 0.8) -> float | None:
    """The smallest accuracy gain (library minus base, a share of n) that an exact two-sided
    McNemar test on n pairs detects with the given power at level alpha.

    Power depends on how many pairs disagree: this assumes the share of discordant pairs seen
    (at least the gain itself, when every disagreement favours the library). None when even a
    gain of 100 points is out of reach."""
    if n <= 0:
        return None

    def enough(step: int) -> bool:
        gain = step / 200
        return _mcnemar_power(n, gain, min(1.0, max(discordant_share, gain)), alpha) >= power

    if not enough(200):
        return None
    low, high = 0, 200  # power grows with the gain: the smallest step that is enough
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high / 200


def _mcnemar_power(n: int, gain: float, share: float, alpha: float) -> float:
    """P(exact McNemar rejects) when a pair is discordant with probability `share` and a
    discordant pair favours the library with probability (share + gain) / (2 share)."""
    q = min(1.0, (share + gain) / (2 * share))
    total = 0.0
    spread = 8 * math.sqrt(n * share * (1 - share)) + 2  # beyond it the binomial is negligible
    low, high = max(1, int(n * share - spread)), min(n, int(n * share + spread) + 1)
    for m in range(low, high + 1):
        k = _rejecting_count(m, alpha)
        if k is not None:
            total += _pmf(n, m, share) * sum(_pmf(m, i, q) for i in range(k, m + 1))
    return total


def _pmf(n: int, k: int, p: float) -> float:
    """Binomial P(X = k), in floats (log-gamma): exact big-int sums are far too slow here."""
    if p <= 0.0 or p >= 1.0:
        return float(k == (n if p >= 1.0 else 0))
    log = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
           + k * math.log(p) + (n - k) * math.log1p(-p))
    return math.exp(log)


@functools.cache
def _rejecting_count(m: int, alpha: float) -> int | None:
    """The fewest of m discordant pairs favouring the library that the exact test rejects at:
    the upper tail, summed from the top, until its two-sided p-value passes alpha."""
    found, tail, term = None, 0, 1  # term = comb(m, k), from k = m down
    for k in range(m, m // 2, -1):
        tail += term
        if Fraction(2 * tail, 1 << m) > alpha:  # exact: 2 ** m overflows a float past 1023
            break
        found = k
        term = term * k // (m - k + 1)
    return found


def paired_difference_ci(n: int, library_only: int, base_only: int,
                         alpha: float = 0.05) -> tuple[float, float]:
    """95% interval of the paired accuracy difference (library minus base), exact and so in
    agreement with the exact McNemar test (it excludes 0 exactly when p < alpha): a
    Clopper-Pearson interval for the share of discordant pairs the library won, scaled by the
    discordant share observed. With no discordant pair, +/- the largest discordant share
    consistent with seeing none."""
    if n == 0:
        return (-1.0, 1.0)
    m = library_only + base_only
    if m == 0:
        most = 1 - (alpha / 2) ** (1 / n)
        return (round(-most, 4), round(most, 4))
    lo = 0.0 if library_only == 0 else _solve(
        lambda p: _tail_at_least(library_only, m, p) - alpha / 2)
    hi = 1.0 if library_only == m else _solve(
        lambda p: alpha / 2 - (1 - _tail_at_least(library_only + 1, m, p)))
    return (round(m / n * (2 * lo - 1), 4), round(m / n * (2 * hi - 1), 4))


def _tail_at_least(k: int, m: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(m, p), 0 < p < 1, summed in log space (m may be large)."""
    if k <= 0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    return min(1.0, sum(math.exp(math.lgamma(m + 1) - math.lgamma(i + 1) - math.lgamma(m - i + 1)
                                 + i * log_p + (m - i) * log_q) for i in range(k, m + 1)))


def _solve(f: Callable[[float], float]) -> float:
    """The root in (0, 1) of f, increasing in p, by bisection."""
    lo, hi = 1e-12, 1 - 1e-12
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


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
    functions = tuple(library.specs())  # each episode registers what passes (registration.py)
    wanted = {p.id for p in problems}
    void = 0  # episodes whose sandboxed call the engine lost every time: not journaled, and
    # so solved again by a resumed evaluation
    with open_session(config, client=client, sandbox=sandbox, backend=backend) as session:
        model = session.client.config.role("assistant").model
        arms: dict[str, tuple[FunctionSpec, ...]] = {"base": (), "library": functions}
        keys = {arm: episode_key(specs, config.episode, model) for arm, specs in arms.items()}
        key = keys["library"]
        results: dict[tuple[str, str], ConversationResult] = {}
        for record in run.journal("eval-journal.jsonl"):
            arm = record.get("arm")
            if arm in keys and record.get("library_key") == keys[arm] and \
                    record["result"]["problem_id"] in wanted:
                result = ConversationResult.from_dict(record["result"])
                results[(arm, result.problem_id)] = result
        # No function: the library arm's prompt IS the base arm's (no block, no tools), so its
        # conversations are the base arm's, not a second sample of the server's noise.
        solved = ARMS if functions else ("base",)
        todo = [Episode(p, arms[arm], arm)
                for start in range(0, len(problems), ARM_BLOCK) for arm in solved
                for p in problems[start:start + ARM_BLOCK] if (arm, p.id) not in results]
        with progress_bar(console) as progress:
            total = len(solved) * len(problems)
            task = progress.add_task("evaluation", total=total, completed=total - len(todo),
                                     stats=_running(results))
            for episode, result in session.backend.solve_all(todo, config.episode):
                arm = episode.tag
                if result.outcome == "sandbox_error":
                    void += 1
                    progress.update(task, advance=1)
                    continue
                results[(arm, result.problem_id)] = result
                run.append_journal({"arm": arm, "library_version": library.version,
                                    "library_key": keys[arm], "result": result.to_dict()},
                                   "eval-journal.jsonl")
                run.record_left_out(result, arm=arm)
                progress.update(task, advance=1, stats=_running(results))
    if not functions:
        results.update({("library", pid): r for (arm, pid), r in list(results.items())
                        if arm == "base"})
    rows = summarise(problems, {k: r.correct for k, r in results.items()})
    by_arm = {arm: [r for (a, _), r in results.items() if a == arm] for arm in ARMS}
    report: dict[str, Any] = {
              "problems": len(problems), "functions": [s.name for s in functions],
              "library_version": library.version, "library_key": key,
              "library_digest": library_digest(functions), "commit": source_commit(),
              "presentation": config.episode.library_as, "void_episodes": void,
              "seconds": round(time.monotonic() - started, 1),
              "rows": [r.to_dict() for r in rows],
              "library_use": library_use(by_arm["library"]),
              "compute": {arm: _compute(rs) for arm, rs in by_arm.items()},
              "limits": {"max_turns": config.episode.max_turns,
                         "max_tokens": config.episode.max_tokens,
                         "seconds": config.episode.seconds}}
    run.write_json("eval.json", report)
    if not functions:
        console.print("[yellow]the library has no function[/]: both arms are the same "
                      "conversations (solved once), so the gain is 0 by construction")
    console.print(_table(rows))
    if report["rows"]:
        overall = report["rows"][-1]  # the figures eval.json keeps, not computed again
        lo, hi = overall["gain_ci95"]
        can = overall["detectable_gain"]
        console.print(
            f"gain {100 * overall['gain']:+.1f} points, 95% interval [{100 * lo:+.1f}, "
            f"{100 * hi:+.1f}]; {overall['n']} pairs detect "
            + (f"a gain of {100 * can:.1f} points or more" if can is not None else "no gain")
            + f" with {100 * overall['detectable_assumes_discordance']:.0f}% of pairs "
            "disagreeing (exact McNemar, alpha 0.05, power 0.8)")
    use = report["library_use"]
    if use["offered"]:
        console.print(f"library called in {use['used']} of {use['offered']} conversations "
                      f"that offered it; per function: "
                      f"{markup_safe(json.dumps(use['per_function']))}")
    return report


def _compute(results: Sequence[ConversationResult]) -> dict[str, Any]:
    """What an arm spent: equal limits, and here what was used under them."""
    n = len(results) or 1
    return {"conversations": len(results),
            "turns": round(sum(r.turns for r in results) / n, 2),
            "prompt_tokens": round(sum(r.prompt_tokens for r in results) / n, 1),
            "completion_tokens": round(sum(r.completion_tokens for r in results) / n, 1),
            "seconds": round(sum(r.seconds for r in results) / n, 1)}


def _running(results: dict[tuple[str, str], ConversationResult]) -> str:
    parts = []
    for arm in ARMS:
        done = [r for (a, _), r in results.items() if a == arm]
        if done:
            parts.append(f"{arm} {sum(r.correct for r in done)}/{len(done)}")
    library = [r for (a, _), r in results.items() if a == "library"]
    return "  ".join(parts) + use_text(library)


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
