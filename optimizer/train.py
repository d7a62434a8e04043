"""Training: epochs of conversations, an optimizer step per epoch, everything in one run directory.

An epoch: the train problems are solved with the current library (several conversations in
flight) and recorded for the optimizer; the validation problems are solved with the same library
and their accuracy is the score roll-back and early stop read (OptimizerSettings explains why
validation, not train); then the optimizer steps. Every finished conversation is appended to the
journal before anything else happens with it, and the optimizer's state is checkpointed after
every step, so Ctrl-C or a crash loses nothing finished: `--resume RUN` replays the journal of
the unfinished epoch into the optimizer and solves only what is missing.

The run directory (README, "Training"):
    config.json     the resolved configuration      split.json      train/validation/test problems
    journal.jsonl   one line per finished conversation (epoch, phase, the whole conversation)
    checkpoint.json the optimizer after the last complete step, and the epoch it finished
    events.jsonl    the optimizer's events          history.sqlite  the tamper-evident history
                                                    (every proposal, verdict, call, decision)
    steps/          the library after every step    metrics.json    accuracy per epoch
    curves.png      train and validation accuracy, accepted and rolled-back steps marked
    library.json    the best library (what `eval` uses)
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from sandbox import Sandbox, SandboxError, markup_safe

from .agent_optimizer import AgentOptimizer, OptimizerSettings
from .backends import Backend, Episode
from .conversation import ConversationResult
from .errors import ConfigError, DatasetError, OptimizerError
from .events import Event
from .history import HistoryStore
from .llm import LLMClient
from .math import Split, family_rule, load_gsm8k, load_jsonl, load_math, load_math500, split
from .prompts import PromptBudget
from .runconfig import DataConfig, RunConfig, run_config_from_dict
from .session import (
    RunDirectory,
    episode_key,
    library_use,
    open_session,
    progress_bar,
    source_commit,
    use_text,
)

__all__ = ["RunDirectory", "TrainSummary", "make_split", "train"]


@dataclass(frozen=True)
class TrainSummary:
    run_dir: Path
    epochs: int
    best_score: float | None
    stopped_early: bool
    functions: list[str]
    seconds: float


# -- data -----------------------------------------------------------------------------------------
def make_split(data: DataConfig) -> Split:
    """Train and validation from the training file, test from the test file (MATH, GSM8K);
    MATH-500 and JSONL files have one file, split three ways."""
    subjects = list(data.subjects) or None
    levels = list(data.levels) or None
    family = family_rule(data.family, data.pattern)
    if data.dataset in ("math", "gsm8k"):
        load = load_math if data.dataset == "math" else load_gsm8k
        learn = split(load("train"), train_per_type=data.train_per_type,
                      val_per_type=data.val_per_type, test_per_type=0, seed=data.seed,
                      subjects=subjects, levels=levels, family=family)
        held_out = split(load("test"), train_per_type=0, val_per_type=0,
                         test_per_type=data.test_per_type, seed=data.seed, subjects=subjects,
                         levels=levels, family=family)
        return Split(learn.train, learn.validation, held_out.test,
                     {**learn.params, "test_per_type": data.test_per_type,
                      **({"selected_test": held_out.params["selected"]} if family else {}),
                      "sources": ["train file for train/validation", "test file for test"]})
    problems = load_math500() if data.dataset == "math500" else load_jsonl(data.file)
    return split(problems, train_per_type=data.train_per_type, val_per_type=data.val_per_type,
                 test_per_type=data.test_per_type, seed=data.seed, subjects=subjects,
                 levels=levels, family=family)


# -- training -------------------------------------------------------------------------------------
def train(config: RunConfig, run_dir: Path, *, resume: bool = False,
          console: Console | None = None, client: LLMClient | None = None,
          sandbox: Sandbox | None = None, backend: Backend | None = None,
          backend_choice: tuple[str, str] | None = None,
          sinks: Sequence[Callable[[Event], None]] = ()) -> TrainSummary:
    """Train (or continue training) in `run_dir`; see the module doc. Conversations run on
    `backend` (default: the one the config names, or `backend_choice` = (name, Ray address),
    which also holds on resume); the step, vetting and files stay here."""
    console = console or Console(stderr=True)
    started = time.monotonic()
    run = RunDirectory(run_dir)
    if backend_choice is not None and not resume:
        config = _placed(config, backend_choice)
    config, the_split = _prepare(run, config, resume, console)
    if backend_choice is not None and resume:  # a new run saved it in config.json already
        config = _placed(config, backend_choice)
    with contextlib.ExitStack() as stack:
        session = stack.enter_context(open_session(config, client=client, sandbox=sandbox,
                                                   backend=backend))
        client, sandbox, backend = session.client, session.sandbox, session.backend
        history = stack.enter_context(HistoryStore.open(run_dir))
        history.record("run", {"event": "resume" if resume else "start",
                               "config": config.to_dict()})
        to_history = history.sink

        def sink(event: Event) -> None:
            run.append_journal(event.to_dict(), "events.jsonl")
            to_history(event)
            for extra in sinks:
                extra(event)

        settings = OptimizerSettings(
            patience=config.train.patience, ties=config.train.ties,
            candidates=config.train.candidates,
            budget=PromptBudget(max_prompt_tokens=config.train.max_prompt_tokens),
            call_timeout=config.episode.call_timeout, snapshot_dir=run / "steps")
        optimizer = AgentOptimizer(config.train.max_actions_per_step, client=client,
                                   sandbox=sandbox, settings=settings, events=sink)
        checkpoint = run.read_json("checkpoint.json")
        first_epoch = 1
        if checkpoint is not None:
            optimizer.load_state(checkpoint["optimizer"])
            first_epoch = int(checkpoint["epoch"]) + 1
        metrics: list[dict[str, Any]] = list((checkpoint or {}).get("metrics", []))
        try:
            for epoch in range(first_epoch, config.train.epochs + 1):
                if optimizer.should_stop:
                    break
                history.epoch = epoch
                metrics.append(_epoch(run, config, the_split, epoch, optimizer, client, sandbox,
                                      backend, history, console))
                history.record("metrics", metrics[-1])
                run.write_json("checkpoint.json", {"epoch": epoch, "metrics": metrics,
                                                   "optimizer": optimizer.state_dict()})
                run.write_json("metrics.json", metrics)
                _plot(run, metrics)
        except (OptimizerError, SandboxError, OSError) as exc:
            with contextlib.suppress(Exception):  # the disk may be full: the error says so
                history.record("run", {"event": "stopped", "why": str(exc)[:2000]})
            raise
        best = optimizer.best_library()
        best.save(run / "library.json")
    summary = TrainSummary(run_dir, len(metrics), optimizer.best_score, optimizer.should_stop,
                           best.names(), round(time.monotonic() - started, 1))
    best_text = f"{100 * summary.best_score:.1f}%" if summary.best_score is not None else "-"
    console.print(f"[bold]trained[/] {summary.epochs} epoch(s) in "
                  f"{summary.seconds / 60:.1f} min, best score {best_text}; library: "
                  f"{markup_safe(', '.join(summary.functions) or 'empty')} -> "
                  f"{markup_safe(run / 'library.json')}")
    return summary


def _placed(config: RunConfig, choice: tuple[str, str]) -> RunConfig:
    backend, address = choice
    return replace(config, train=replace(config.train, backend=backend,
                                         address=address))


def _prepare(run: RunDirectory, config: RunConfig, resume: bool,
             console: Console) -> tuple[RunConfig, Split]:
    if resume:
        saved = run.read_json("config.json")
        split_data = run.read_json("split.json")
        if saved is None or split_data is None:
            raise ConfigError(f"{run.path} is not a run directory to resume (no config.json or "
                              "split.json); start a new run instead")
        console.print(f"resuming {markup_safe(run.path)}")
        return run_config_from_dict(saved, str(run / "config.json")), \
            Split.from_dict(split_data)
    if run.path.exists() and any(run.path.iterdir()):
        raise ConfigError(f"{run.path} already holds a run; continue it with --resume "
                          f"{run.path}, or choose another --run-dir")
    run.path.mkdir(parents=True, exist_ok=True)
    try:
        the_split = make_split(config.data)
    except (DatasetError, ValueError) as exc:
        raise ConfigError(f"cannot draw the problems: {exc}") from None
    run.write_json("config.json", config.to_dict())
    run.write_json("split.json", the_split.to_dict())
    console.print(f"run directory {markup_safe(run.path)}: {len(the_split.train)} train, "
                  f"{len(the_split.validation)} validation, {len(the_split.test)} test problems")
    return config, the_split


def _epoch(run: RunDirectory, config: RunConfig, the_split: Split, epoch: int,
           optimizer: AgentOptimizer, client: LLMClient, sandbox: Sandbox, backend: Backend,
           history: HistoryStore, console: Console) -> dict[str, Any]:
    """One epoch: train conversations (recorded), validation conversations (scored), a step."""
    journal = run.journal()
    done = [r for r in journal if r.get("epoch") == epoch]
    functions = optimizer.library.specs()  # each episode registers what passes (registration.py)
    key = episode_key(functions, config.episode, client.config.role("assistant").model)
    # At temperature 0 an epoch whose library did not change (the step applied nothing) would
    # solve every problem again to the same end: an earlier epoch's result of the same key is
    # taken instead. Above 0, a new epoch is a new sample, and is solved.
    earlier = {(r["phase"], r["result"]["problem_id"]): r for r in journal
               if config.episode.temperature == 0 and r.get("key") == key
               and r.get("epoch") != epoch}
    results: dict[str, list[ConversationResult]] = {"train": [], "validation": []}
    void = 0  # episodes whose sandboxed call the engine lost every time: not counted, not
    # journaled (a resumed run solves them again), never shown to the optimizer
    reused_total = 0
    answers = {p.id: p.answer for p in the_split.train}  # proposals are checked against them
    for record in done:  # a resumed epoch: what was finished counts, and is not redone
        result = ConversationResult.from_dict(record["result"])
        results[record["phase"]].append(result)
        if record["phase"] == "train":
            optimizer.record_one_conversation(result.messages, is_satisfied=result.correct,
                                              answer=answers.get(result.problem_id))
    phases = [("train", the_split.train)]
    if config.train.score == "validation":
        phases.append(("validation", the_split.validation))
    for phase, problems in phases:
        finished = {r.problem_id for r in results[phase]}
        todo = [p for p in problems if p.id not in finished]
        reused = [earlier[(phase, p.id)] for p in todo if (phase, p.id) in earlier]
        todo = [p for p in todo if (phase, p.id) not in earlier]
        reused_total += len(reused)
        with progress_bar(console) as progress:
            task = progress.add_task(f"epoch {epoch}/{config.train.epochs} {phase}",
                                     total=len(problems), completed=len(finished),
                                     stats=_stats(results[phase]))

            episodes = [Episode(p, tuple(functions), phase) for p in todo]
            taken = [(ConversationResult.from_dict(r["result"]), r.get("reused_from") or r["epoch"])
                     for r in reused]
            solved = ((result, None) for _, result in backend.solve_all(episodes, config.episode))
            for result, reused_from in itertools.chain(taken, solved):
                if result.outcome == "sandbox_error":
                    void += 1
                    progress.update(task, advance=1)
                    continue
                run.append_journal({"epoch": epoch, "phase": phase, "key": key,
                                    "library_version": optimizer.library.version,
                                    "reused_from": reused_from, "result": result.to_dict()})
                if reused_from is None:  # a reused one's calls are in the history already
                    _record_conversation(history, phase, result)
                    run.record_left_out(result, epoch=epoch, phase=phase)
                results[phase].append(result)
                if phase == "train":
                    optimizer.record_one_conversation(result.messages,
                                                      is_satisfied=result.correct,
                                                      answer=answers.get(result.problem_id))
                progress.update(task, advance=1, stats=_stats(results[phase]))
    train_acc = _accuracy(results["train"])
    val_acc = _accuracy(results["validation"]) if config.train.score == "validation" else None
    decision = "-"
    if optimizer.recorded:
        optimizer.step(score=val_acc)
        decision = optimizer.history[-1].decision
    use = library_use(results["train"] + results["validation"])
    line = (f"epoch {epoch}: train {_pct(train_acc)}, validation {_pct(val_acc)}"
            + (f", library used in {use['used']}/{use['offered']} conversations"
               if use["offered"] else "")
            + f", step {decision}; library: {', '.join(optimizer.library.names()) or 'empty'}"
            + (f"; {void} conversation(s) lost to the engine, not counted" if void else ""))
    console.print(markup_safe(line))
    return {"epoch": epoch, "train_accuracy": train_acc, "validation_accuracy": val_acc,
            "decision": decision, "best_score": optimizer.best_score,
            "functions_offered": [s.name for s in functions],
            "library_use": use,
            "library_after": optimizer.library.names(), "void_episodes": void,
            "reused_conversations": reused_total,
            "step": (vars(optimizer.history[-1]) if optimizer.history else None),
            "usage": client.usage_report(), "commit": source_commit()}


def _record_conversation(history: HistoryStore, phase: str, result: ConversationResult) -> None:
    """The history keeps every sandboxed call of a conversation and its outcome (not the text:
    the journal has it)."""
    for call in result.calls:
        history.record("call", call)
    history.record("conversation", {
        "problem_id": result.problem_id, "phase": phase, "correct": result.correct,
        "outcome": result.outcome, "reason": result.reason, "answer": result.answer,
        "turns": result.turns, "tool_calls": result.tool_calls,
        "code_blocks": result.code_blocks, "functions": result.functions,
        "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
        "seconds": result.seconds, "faults": result.faults,
        "library_calls": result.library_calls})


def _stats(results: Sequence[ConversationResult]) -> str:
    if not results:
        return ""
    right = sum(r.correct for r in results)
    tokens = sum(r.prompt_tokens + r.completion_tokens for r in results)
    return f"acc {right}/{len(results)}  {tokens / 1000:.1f}k tok{use_text(results)}"


def _accuracy(results: Sequence[ConversationResult]) -> float | None:
    return sum(r.correct for r in results) / len(results) if results else None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _plot(run: RunDirectory, metrics: Sequence[dict[str, Any]]) -> None:
    """curves.png: accuracy per epoch, accepted steps as green triangles, roll-backs as red x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [m["epoch"] for m in metrics]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    for key, label in (("train_accuracy", "train"), ("validation_accuracy", "validation")):
        points = [(e, m[key]) for e, m in zip(epochs, metrics, strict=True)
                  if m.get(key) is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=label)
    for e, m in zip(epochs, metrics, strict=True):
        score = m.get("validation_accuracy", m.get("train_accuracy"))
        if score is None:
            continue
        if m.get("decision") in ("accepted", "accepted_tie", "first"):
            ax.scatter([e], [score], marker="^", s=90, color="green", zorder=3)
        elif m.get("decision") in ("rolled_back", "tie_rejected"):
            ax.scatter([e], [score], marker="x", s=90, color="red", zorder=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("fnforge training (^ accepted step, x rolled back)")
    ax.legend(loc="best")
    fig.tight_layout()
    tmp = run / ".curves.png.tmp"
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, run / "curves.png")
