"""`python -m optimizer review ...` (also `python -m optimizer.history ...`): the reviewer's CLI.

    review [show] RUN [--out FILE]       terminal summary + one self-contained HTML report
    review verify RUN [--expect-head H | --lock LOCK] [--json]
                                         check the chain; non-zero names the first broken record
    review approve [RUN] NAME@VERSION --why WHY [--by WHO]
    review deny    [RUN] NAME@VERSION --why WHY [--by WHO]
                                         record a verdict in the history (RUN may be --run or
                                         $FNFORGE_RUN)
    review lock RUN [--out FILE]         lock file of the approved best library (library.json)
    review export RUN [--out FILE]       the whole history as JSONL (stdout by default)

Exit status: 0 done / verified, 1 a negative verdict (the history does not verify), 2 bad input
(no such run, unknown NAME@VERSION) with one message, 3 an unexpected error (a bug).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from sandbox import (
    EXIT_BAD_INPUT,
    EXIT_BUG,
    EXIT_OK,
    EXIT_REJECTED,
    SandboxError,
    markup_safe,
    report_bug,
    terminal_safe,
)

from ..errors import HistoryBroken, HistoryError, OptimizerError
from .export import export_jsonl
from .html import render_html
from .lock import LOCK_FILE, LockFile, build_lock
from .review import FunctionVersion, Review, build_review, parse_ref
from .store import HISTORY_FILE, HistoryStore
from .verify import VerifyReport, verify_history

__all__ = ["REPORT_FILE", "SUBCOMMANDS", "review_command"]

SUBCOMMANDS = ("show", "verify", "approve", "deny", "lock", "export")
REPORT_FILE = "review.html"


def review_command(argv: list[str]) -> int:
    """Run one review subcommand (`show` when none is named); returns the exit status."""
    argv = list(argv)
    if not argv or argv[0] not in (*SUBCOMMANDS, "-h", "--help"):
        argv = ["show", *argv]
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_BAD_INPUT
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        return command(args)
    except HistoryBroken as exc:
        _error(str(exc))
        return EXIT_REJECTED
    except (HistoryError, OptimizerError, SandboxError) as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except Exception as exc:
        report_bug(exc)
        return EXIT_BUG


def _error(message: str) -> None:
    print(f"error: {terminal_safe(message, 4000, one_line=True)}", file=sys.stderr)


def _line(text: object, limit: int | None = None) -> str:
    """Untrusted text for one line of the terminal output (markup and newlines escaped): a
    newline in a finding or a name cannot forge the next line of a summary."""
    return markup_safe(text, limit, one_line=True)


def _console() -> Console:
    return Console(soft_wrap=True, highlight=False)


def _run(path: str) -> Path:
    run = Path(path)
    if not (run / HISTORY_FILE).is_file():
        what = "does not exist" if not run.exists() else f"has no {HISTORY_FILE}"
        raise HistoryError(f"run directory {path} {what}; give the directory a training run "
                           "wrote (it holds history.sqlite)")
    return run


# -- show ---------------------------------------------------------------------------------------
def _show(args: argparse.Namespace) -> int:
    run = _run(args.run)
    review = build_review(run)
    out = Path(args.out) if args.out else run / REPORT_FILE
    _write_text(out, render_html(review))
    console = _console()
    _print_summary(console, review)
    console.print(f"report: {_line(out)}")
    return EXIT_OK if review.verify.ok else EXIT_REJECTED


def _print_summary(console: Console, review: Review) -> None:
    console.print(f"[bold]fnforge review of run {_line(review.run_id or 'unknown')}[/]")
    _print_verdict(console, review.verify)
    kinds: dict[str, int] = {}
    for record in review.records:
        kinds[record.kind] = kinds.get(record.kind, 0) + 1
    calls = review.of_kind("call")
    console.print(f"{len(review.records)} records: {kinds.get('llm_call', 0)} optimizer LLM "
                  f"calls, {len(review.proposals)} proposals, {len(review.versions)} function "
                  f"versions, {len(calls)} sandboxed calls "
                  f"({sum(not c.data.get('ok') for c in calls)} failed), "
                  f"{kinds.get('approval', 0)} approvals")
    if review.versions:
        console.print("[bold]function versions[/] (vetting, library, calls, use, review, "
                      "model):")
        width = min(40, max(len(v.ref) for v in review.versions))
        for v in review.versions:
            approval = v.approval
            verdict = f"{approval.verdict} by {approval.who}" if approval else "unreviewed"
            vetting = "[green]passed[/]  " if v.passed else f"[red]{v.status:<8}[/]"
            flags = f" [yellow]flagged: {_line(', '.join(v.flag_reasons))}[/]" \
                if v.flagged else ""
            console.print(f"  {_line(v.ref.ljust(width), 200)}  {vetting}  "
                          f"{_membership(v)}  "
                          f"{v.calls.calls} calls ({v.calls.failures} failed)  "
                          f"used in {v.used}/{v.offered} conversations  "
                          f"{_line(verdict, 120)}  "
                          f"{_line(', '.join(v.models) or 'model unknown', 80)}{flags}")
    rejected = [v for v in review.versions if v.rejected]
    if rejected:
        console.print("[bold]rejected by vetting:[/]")
        for v in rejected:
            errors = [f for vet in v.vets for f in vet.errors][:3]
            reasons = "; ".join(f"{f.get('rule')} (line {f.get('line')}): {f.get('message')}"
                                for f in errors)
            console.print(f"  {_line(v.ref, 80)}: {_line(reasons, 600)}")
    for label, library in (("best library (library.json: what eval and a deployment use)",
                            review.best),
                           ("last trial set (held when the run stopped; not deployed)",
                            review.last_trial)):
        refs = ", ".join(f"{name}@{v.version if v else '?'}" for name, v in library.items())
        console.print(f"{label}: {_line(refs or 'empty', 2000)}")


def _membership(v: FunctionVersion) -> str:
    """Which of the run's two libraries hold a version, in a fixed width."""
    return f"{'best' if v.in_best else '    '} {'trial' if v.in_last_trial else '     '}"


def _print_verdict(console: Console, report: VerifyReport, limit: int = 20) -> None:
    if report.ok:
        console.print(f"[green]{_line(report.summary())}[/]")
        return
    console.print(f"[bold red]{_line(report.summary())}[/]")
    for problem in report.problems[:limit]:
        console.print(f"  {_line(problem.where)} \\[{_line(problem.check)}]: "
                      f"{_line(problem.message, 600)}")
    if len(report.problems) > limit:
        console.print(f"  ... {len(report.problems) - limit} more")


# -- verify -------------------------------------------------------------------------------------
def _verify(args: argparse.Namespace) -> int:
    run = _run(args.run)
    expect = args.expect_head
    if args.lock:
        lock = LockFile.load(args.lock)
        expect = lock.head_hash
    report = verify_history(run, expect_head=expect)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        console = _console()
        _print_verdict(console, report)
        if report.ok:
            console.print(f"pin this head to detect a rewritten history later: "
                          f"--expect-head {report.head_hash}")
    return EXIT_OK if report.ok else EXIT_REJECTED


# -- approve / deny -----------------------------------------------------------------------------
def _verdict(args: argparse.Namespace) -> int:
    refs = args.refs
    if len(refs) > 2:
        raise HistoryError(f"expected [RUN] NAME@VERSION, got {len(refs)} arguments")
    if len(refs) == 2:
        run_arg, ref = refs
    else:
        run_arg, ref = args.run or os.environ.get("FNFORGE_RUN", ""), refs[0]
        if not run_arg:
            raise HistoryError("which run? give it first (`review approve RUN NAME@VERSION`), "
                               "or as --run RUN, or in $FNFORGE_RUN")
    run = _run(run_arg)
    name, number = parse_ref(ref)
    why = args.why.strip()
    who = (args.by or os.environ.get("FNFORGE_REVIEWER") or _login()).strip()
    if not why or not who:
        raise HistoryError("an approval needs who (--by) and why (--why), both non-empty")
    review = build_review(run)
    if not review.verify.ok:
        raise HistoryBroken(f"not recording a verdict in a history that does not verify: "
                            f"{review.verify.summary()}", review.verify)
    version = review.version(name, number)
    verdict = "approve" if args.subcommand == "approve" else "deny"
    if verdict == "approve" and not version.passed:
        raise HistoryError(f"{version.ref} never passed vetting ({version.status}); it cannot "
                           "be approved")
    with HistoryStore.open(run, create=False) as store:  # bound to the whole reviewed spec
        seq = store.record("approval", {
            "name": version.name, "version": version.version, "verdict": verdict,
            "who": who, "why": why, "code_hash": version.code_hash,
            "spec_hash": version.spec_hash})
    _console().print(f"recorded: {verdict} {_line(version.ref, 200)} by "
                     f"{_line(who, 200)} (record {seq})")
    return EXIT_OK


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


# -- lock and export ----------------------------------------------------------------------------
def _lock(args: argparse.Namespace) -> int:
    run = _run(args.run)
    lock = build_lock(build_review(run))
    path = lock.save(Path(args.out) if args.out else run / LOCK_FILE)
    console = _console()
    console.print(f"lock file: {_line(path)} (history head record {lock.head_seq})")
    for f in lock.functions:
        console.print(f"  locked   {_line(f.ref, 200)} {f.code_hash[:16]}")
    for x in lock.excluded:
        console.print(f"  excluded {_line(x.get('name'), 200)}@{x.get('version')}: "
                      f"{_line(x.get('why'), 400)}")
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    run = _run(args.run)
    if args.out and args.out != "-":
        target = Path(args.out)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", encoding="ascii") as fh:
            report = export_jsonl(run, fh)
    else:
        report = export_jsonl(run, sys.stdout)
    print(terminal_safe(report.summary(), 2000), file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_REJECTED


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as fh:
            fh.write(text)
        _readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _readable(path: str) -> None:
    """mkstemp makes 0600 files; a report is for reviewers. (Not via os.umask: it is
    process-wide, and setting it even briefly races with other threads creating files.)"""
    os.chmod(path, 0o644)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m optimizer review", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="subcommand", required=True)
    show = sub.add_parser("show", help="terminal summary and the HTML report")
    show.add_argument("run", help="the run directory")
    show.add_argument("--out", help=f"the HTML file (default: RUN/{REPORT_FILE})")
    show.set_defaults(command=_show)
    verify = sub.add_parser("verify", help="check the hash chain and every code hash")
    verify.add_argument("run")
    pin = verify.add_mutually_exclusive_group()
    pin.add_argument("--expect-head", metavar="HASH",
                     help="fail unless this record hash (printed by an earlier verify) is "
                          "still in the chain")
    pin.add_argument("--lock", metavar="LOCK", help="fail unless the lock file's head is")
    verify.add_argument("--json", action="store_true", help="the verdict as JSON")
    verify.set_defaults(command=_verify)
    for name in ("approve", "deny"):
        p = sub.add_parser(name, help=f"record that a reviewer {name}s NAME@VERSION")
        p.add_argument("refs", nargs="+", metavar="[RUN] NAME@VERSION")
        p.add_argument("--run", help="the run directory (default: $FNFORGE_RUN)")
        p.add_argument("--why", required=True, help="the reason, recorded in the history")
        p.add_argument("--by", help="who (default: $FNFORGE_REVIEWER, else the login name)")
        p.set_defaults(command=_verdict)
    lock = sub.add_parser("lock", help="write the lock file of the approved best library "
                          "(library.json, what eval uses)")
    lock.add_argument("run")
    lock.add_argument("--out", help=f"default: RUN/{LOCK_FILE}")
    lock.set_defaults(command=_lock)
    export = sub.add_parser("export", help="every record as JSONL")
    export.add_argument("run")
    export.add_argument("--out", help="a file (default: stdout)")
    export.set_defaults(command=_export)
    return parser
