"""`python -m sandbox`: one JSON object on stdout per command.

Exit status, the same for every command (sandbox/exits.py):
    0  done: a result, a passing verdict, a built image (also when the user's code failed)
    1  a negative verdict: `vet` rejected a function, `selftest` found a probe not confined
    2  bad input or infrastructure: one message on stderr saying what to do
    3  an unexpected error inside fnforge (a bug): reported as such, never as a verdict
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Table

from .errors import InvalidSpec, SandboxError
from .exits import EXIT_BAD_INPUT, EXIT_BUG, EXIT_OK, EXIT_REJECTED, report_bug
from .library import LIBRARY_JSON_LIMITS, MAX_LIBRARY_BYTES
from .schema import read_json_file
from .spec import FunctionSpec
from .text import markup_safe
from .vetting import VerdictCache, VetReport

__all__ = ["main"]

_err = Console(stderr=True, soft_wrap=True, highlight=False)


class _Usage(Exception):
    """Bad input from the command line: exit 2 with this message."""


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def load_functions(path: str) -> list[FunctionSpec]:
    """A list of specs, or an object with a "functions" list or map (a saved FunctionLibrary)."""
    data = read_json_file(path, "function library", MAX_LIBRARY_BYTES, LIBRARY_JSON_LIMITS)
    if isinstance(data, dict) and "functions" in data:
        data = data["functions"]
    if isinstance(data, dict):
        data = list(data.values())
    if not isinstance(data, list):
        raise InvalidSpec(f"{path}: expected a list of function specs or {{'functions': [...]}}")
    specs = []
    for i, item in enumerate(data):
        try:
            specs.append(FunctionSpec.from_dict(item))
        except InvalidSpec as exc:
            raise InvalidSpec(f"{path}: function {i}: {exc}") from None
    return specs


def _sandbox(args: argparse.Namespace, pool_size: int = 1) -> Any:
    from .runtime import Sandbox

    return Sandbox(pool_size=pool_size, runtime=args.runtime,
                   verdicts=VerdictCache(getattr(args, "cache_dir", None)))


# -- commands -------------------------------------------------------------------------------------
def _cmd_image(args: argparse.Namespace) -> int:
    from .container import connect
    from .image import build_image

    client = connect()
    with _err.status("building the sandbox image") as status:
        image = build_image(client, log=lambda line: status.update(markup_safe(line)))
    _print_json({"image": image.tags[0] if image.tags else "", "id": image.id})
    return EXIT_OK


def _cmd_call(args: argparse.Namespace) -> int:
    spec = FunctionSpec.load(args.spec)
    try:
        call_args = json.loads(args.args)
    except ValueError as exc:
        raise _Usage(f"--args is not valid JSON: {exc}") from None
    if not isinstance(call_args, dict):
        raise _Usage("--args must be a JSON object of keyword arguments, e.g. '{\"n\": 5}'")
    with _sandbox(args) as sandbox:
        result = sandbox.call(spec, call_args, timeout=args.timeout)
    _print_json(result.to_dict())
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        code = Path(args.code).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _Usage(f"cannot read {args.code}: {getattr(exc, 'strerror', None) or exc}"
                     ) from None
    functions = load_functions(args.functions) if args.functions else []
    with _sandbox(args) as sandbox:
        result = sandbox.run(code, functions, timeout=args.timeout)
    _print_json(result.to_dict())
    return EXIT_OK


def _cmd_selftest(args: argparse.Namespace) -> int:
    sandbox = _sandbox(args)
    try:
        sandbox.start(verify=False)
        report = sandbox.selftest()
        failed = sorted(name for name, probe in report.items() if not probe["confined"])
        if not failed:
            sandbox.record_selftest(report)
    finally:
        sandbox.close()
    _print_json({"passed": not failed, "failed": failed, "image_id": sandbox.image_id,
                 "runtime": args.runtime or "runc", "probes": report})
    if failed:
        _err.print(f"[bold red]NOT CONFINED:[/] {markup_safe(', '.join(failed))}")
        return EXIT_REJECTED
    _err.print(f"[green]all {len(report)} probes confined[/]")
    return EXIT_OK


def _cmd_vet(args: argparse.Namespace) -> int:
    from .vetting import vet

    specs = [FunctionSpec.load(p) for p in args.specs]
    if args.host_only:
        reports = [vet(None, s) for s in specs]
    else:
        with _sandbox(args, pool_size=args.pool_size) as sb:
            reports = [sb.vet(s, timeout=args.timeout) for s in specs]
    if args.human:
        console = Console(width=120, highlight=False)
        for report in reports:
            console.print(_human(report))
    else:
        out: Any = [r.to_dict() for r in reports]
        _print_json(out[0] if len(out) == 1 else out)
    return EXIT_OK if all(r.passed for r in reports) else EXIT_REJECTED


def _human(report: VetReport) -> Table:
    """A readable table; every untrusted string is made terminal- and markup-safe."""
    verdict = "[bold green]PASSED[/]" if report.passed else "[bold red]REJECTED[/]"
    table = Table(title=f"{markup_safe(report.function, 64)}: {verdict}"
                  + (" (untested: smoke only)" if report.untested else "")
                  + (" \\[cached]" if report.cached else ""))
    for col in ("stage", "result", "ms", "findings"):
        table.add_column(col)
    for s in report.stages:
        state = "skipped" if s.skipped else ("ok" if s.passed else "FAIL")
        text = "\n".join(markup_safe(f"{f.severity} {f.rule} {f.line}:{f.col} {f.message}", 600)
                         for f in s.findings)
        table.add_row(s.name, state, f"{s.duration_ms:.1f}", text)
    return table


def _cmd_gc(args: argparse.Namespace) -> int:
    from .container import connect, gc

    _print_json({"removed": gc(connect(), everything=args.all)})
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import main as bench_main

    return bench_main(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_runtime(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--runtime", default=None, help="container runtime, e.g. runsc "
                       "(gVisor; see images/setup-gvisor.sh); default: the engine's (runc)")
        return p

    sub.add_parser("image", help="build the sandbox image (offline; quick when up to date)")
    call = with_runtime(sub.add_parser("call", help="call one function (a FunctionSpec file)"))
    call.add_argument("spec", help="FunctionSpec JSON file")
    call.add_argument("--args", default="{}", help="keyword arguments as a JSON object")
    call.add_argument("--timeout", type=float, default=None, help="seconds (default 10)")
    run = with_runtime(sub.add_parser("run", help="run a code block as an agent's executor"))
    run.add_argument("code", help="Python file")
    run.add_argument("--functions", help="JSON list of FunctionSpecs, or a saved library")
    run.add_argument("--timeout", type=float, default=None, help="seconds (default 10)")
    with_runtime(sub.add_parser("selftest", help="probe the confinement; exit 1 names a leak"))
    gc = sub.add_parser("gc", help="remove containers left by dead fnforge processes")
    gc.add_argument("--all", action="store_true", help="remove every fnforge container")
    vet = with_runtime(sub.add_parser("vet", help="vet FunctionSpecs: exit 0 pass, 1 rejected"))
    vet.add_argument("specs", nargs="+", metavar="SPEC.json")
    vet.add_argument("--human", action="store_true", help="print a readable table")
    vet.add_argument("--host-only", action="store_true",
                     help="only the host stages (shape, static, restricted); no Docker")
    vet.add_argument("--cache-dir", default=None, help="keep verdicts in this directory")
    vet.add_argument("--pool-size", type=int, default=2)
    vet.add_argument("--timeout", type=float, default=None, help="seconds per call")
    bench = with_runtime(sub.add_parser("bench", help="latency and throughput against "
                                        "docker run/exec"))
    bench.add_argument("--calls", type=int, default=300, help="fnforge calls to time")
    bench.add_argument("--out", help="also write the figures to this JSON file")
    return parser


_COMMANDS = {"image": _cmd_image, "call": _cmd_call, "run": _cmd_run, "selftest": _cmd_selftest,
             "gc": _cmd_gc, "vet": _cmd_vet, "bench": _cmd_bench}


def _fail(message: str, code: int) -> NoReturn:
    _err.print(f"[bold red]error:[/] {markup_safe(message, 4000)}")
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse printed the usage
        return EXIT_OK if exc.code == 0 else EXIT_BAD_INPUT
    # SIGTERM unwinds like Ctrl-C, so context managers remove their containers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return _COMMANDS[args.command](args)
    except (SandboxError, _Usage) as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        _err.print("interrupted; containers removed")
        return 130
    except Exception as exc:
        report_bug(exc)
        return EXIT_BUG
