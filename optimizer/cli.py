"""`python -m optimizer`: training, evaluation, answer grading and the embedded model.

Exit status, the same for every command (as `python -m sandbox`):
    0  done
    1  a negative verdict
    2  bad input or infrastructure: one message on stderr saying what to do
    3  an unexpected error inside fnforge (a bug): reported as such
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from sandbox import EXIT_BAD_INPUT, EXIT_BUG, EXIT_OK, SandboxError, report_bug, terminal_safe

from .errors import ConfigError, DatasetError, OptimizerError

__all__ = ["main"]


def _llm(args: argparse.Namespace) -> int:
    from .llm.config import load_config
    from .llm.local import LocalServer, model_file

    server = LocalServer()
    if args.action == "stop":
        print("local model server stopped" if server.stop() else "no local model server running")
        return EXIT_OK
    if args.action == "status":
        info = server.status()
        if info is None:
            print("no local model server running")
            return 1
        print(f"{info.model} at {info.base_url} (pid {info.pid}, log {info.log})")
        return EXIT_OK
    local = load_config(args.config).local
    if args.model:
        local = replace(local, model=args.model)
    if args.action == "model":
        print(model_file(local.model))
        return EXIT_OK
    info = server.start(local, port=args.port, strict_port=args.port is not None)
    print(f"{info.model} ready at {info.base_url} (pid {info.pid}, log {info.log})")
    print(f"  export OPENAI_BASE_URL={info.base_url}")
    return EXIT_OK


def _grade(args: argparse.Namespace) -> int:
    from .math.grading import run_grade

    return run_grade(args)


def _train(args: argparse.Namespace) -> int:
    from .runconfig import load_run_config, saved_run_config
    from .train import train

    if args.resume:  # the run's own configuration for everything, the model server included
        if args.config or args.run_dir:
            raise ConfigError("--resume continues a run with the configuration it saved; "
                              "leave out --config and --run-dir")
        run_dir = Path(args.resume)
        config = saved_run_config(run_dir)
    else:
        if not args.config:
            raise ConfigError("train needs --config FILE (e.g. configs/small.toml), or "
                              "--resume RUN to continue a run")
        config = load_run_config(args.config)
        stem = Path(args.config).stem
        run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / \
            f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    where = _backend_choice(args)
    return _resumable(lambda: train(config, run_dir, resume=bool(args.resume),
                                    backend_choice=where), config.llm,
                      run_dir / "config.json",
                      f"python -m optimizer train --resume {terminal_safe(run_dir)}")


def _resumable(work: Callable[[], object], llm_table: dict[str, Any], started: Path,
               again: str) -> int:
    """Run long work; when it stops (Ctrl-C, SIGTERM, an endpoint or engine that stayed away,
    a full disk) after `started` exists, say how to continue it."""
    hint = f"nothing finished is lost; continue with: {again}"
    try:
        with _local_model(llm_table):
            work()
    except KeyboardInterrupt:
        print(f"interrupted; {hint}", file=sys.stderr)
        return 130
    except (OptimizerError, SandboxError) as exc:
        if isinstance(exc, ConfigError | DatasetError) or not started.exists():
            raise
        print(f"error: {terminal_safe(exc, 4000)}\nstopped; once that is fixed, {hint}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"error: no space left for {terminal_safe(exc.filename or started.parent)}: "
              f"free some space; {hint}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate
    from .libraries import load_library
    from .math import Split
    from .runconfig import load_run_config, run_config_from_dict
    from .train import RunDirectory, make_split

    if args.run:
        run = RunDirectory(Path(args.run))
        saved, split_data = run.read_json("config.json"), run.read_json("split.json")
        if saved is None or split_data is None:
            raise ConfigError(f"{args.run} is not a training run directory (no config.json "
                              "or split.json)")
        config = run_config_from_dict(saved, str(run / "config.json"))
        problems = list(Split.from_dict(split_data).test)
        library = load_library(Path(args.library) if args.library else run / "library.json",
                               config.sandbox.runtime)
        out = Path(args.out) if args.out else run.path
    else:
        if not (args.library and args.config):
            raise ConfigError("eval needs --run RUN, or --library FILE with --config FILE")
        config = load_run_config(args.config)
        problems = list(make_split(config.data).test)
        library = load_library(args.library, config.sandbox.runtime)
        out = Path(args.out) if args.out else Path("runs") / \
            f"eval-{time.strftime('%Y%m%d-%H%M%S')}"
    where = _backend_choice(args)
    if where is not None:
        config = replace(config, train=replace(config.train, backend=where[0], address=where[1]))
    if args.lock:  # only approved functions, each exactly the code the lock pinned
        from .history import load_locked_library

        library = load_locked_library(Path(args.lock), library)
    given = [("--run", args.run), ("--library", args.library), ("--config", args.config),
             ("--lock", args.lock), ("--out", out)]
    again = "python -m optimizer eval" + "".join(
        f" {flag} {terminal_safe(value)}" for flag, value in given if value)
    return _resumable(lambda: evaluate(config, problems, library, out), config.llm, out, again)


@contextlib.contextmanager
def _local_model(llm_table: dict[str, Any]) -> Iterator[None]:
    """With the embedded model: start its server if none runs, and stop it again afterwards."""
    from .llm.config import resolve_llm_config
    from .llm.local import LocalServer

    config, _ = resolve_llm_config(llm_table or None)  # as train and evaluate resolve it
    if config.provider != "local":
        yield
        return
    server = LocalServer()
    started = server.status() is None
    if started:
        print(f"starting the embedded model ({config.local.model}) on 127.0.0.1; the first "
              "start assembles and checks it", file=sys.stderr)
        server.start(config.local)
    try:
        yield
    finally:
        if started:
            server.stop()


def _parser() -> argparse.ArgumentParser:
    from .llm.config import LOCAL_MODELS
    from .llm.local import MODELS
    from .math.grading import GRADE_HELP, add_grade_arguments

    parser = argparse.ArgumentParser(prog="python -m optimizer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = parser.add_subparsers(dest="group", required=True)
    llm = groups.add_parser("llm", help="the embedded local model server")
    llm.add_argument("action", choices=["start", "stop", "status", "model"],
                     help="model: assemble and verify the model file, print its path")
    llm.add_argument("--model", choices=LOCAL_MODELS,
                     help=f"default: llm.local.model, else {next(iter(MODELS))}")
    llm.add_argument("--port", type=int, help="fail if busy (default: llm.local.port, "
                     "falling back to a free port if that is busy)")
    llm.add_argument("--config",
                     help="TOML config file (default: $FNFORGE_CONFIG or ./fnforge.toml)")
    grade = groups.add_parser("grade", help="grade {response, reference} JSONL lines",
                              description=GRADE_HELP)
    add_grade_arguments(grade)
    train = groups.add_parser("train", help="train a function library (see configs/)")
    train.add_argument("--config", help="run configuration (TOML: [data] [train] [episode] "
                       "[sandbox] [llm])")
    train.add_argument("--run-dir", help="where the run goes (default runs/NAME-TIME)")
    train.add_argument("--resume", metavar="RUN", help="continue an interrupted run")
    _add_backend_arguments(train)
    ev = groups.add_parser("eval", help="the test problems without and with a library, paired")
    ev.add_argument("--run", help="a training run: its test split and its best library")
    ev.add_argument("--library", help="a library JSON, or a TOML function file such as "
                    "libraries/number-theory.toml (with --config, or instead of the run's)")
    ev.add_argument("--config", help="run configuration, when not evaluating a run")
    ev.add_argument("--out", help="where eval.json goes (default: the run directory)")
    ev.add_argument("--lock", help="a lock file (review lock): evaluate only the approved "
                    "functions, refusing any whose code differs from the lock")
    _add_backend_arguments(ev)
    groups.add_parser("review", help="a run's history: show, verify, approve, deny, lock, "
                      "export (review --help)")
    return parser


def _add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=("local", "ray"),
                        help="where conversations run (default: the config's [train] backend, "
                        "else local); ray needs `pip install .[ray]` (README, Scaling out)")
    parser.add_argument("--address", help="the Ray cluster to join (default: RAY_ADDRESS, else "
                        "a Ray instance started on this machine)")


def _backend_choice(args: argparse.Namespace) -> tuple[str, str] | None:
    if args.backend is None:
        if args.address:
            raise ConfigError("--address is for --backend ray")
        return None
    return args.backend, args.address or ""


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "llm": _llm, "grade": _grade, "train": _train, "eval": _eval}


def _review(argv: list[str]) -> int:
    from .history import review_command

    return review_command(argv)


_OWN_PARSERS: dict[str, Callable[[list[str]], int]] = {"review": _review}


def _interrupt(*_: object) -> NoReturn:
    raise KeyboardInterrupt
"""Commands that parse their own arguments (their subcommands and options are their own)."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in _OWN_PARSERS:
        return _OWN_PARSERS[argv[0]](argv[1:])
    # SIGTERM unwinds like Ctrl-C: containers are removed, the local model stopped, files closed
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_BAD_INPUT
    try:
        return _COMMANDS[args.group](args)
    except (OptimizerError, SandboxError) as exc:
        print(f"error: {terminal_safe(exc, 4000)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        report_bug(exc)
        return EXIT_BUG
