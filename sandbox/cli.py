"""`python -m sandbox`: one JSON object on stdout per command.

Exit status: 0 when the sandbox did its job (also when the user's code failed), 1 when a verdict
is negative (selftest found a leak, vet rejected a function), 2 for usage or infrastructure errors.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console

from .errors import InvalidSpec, SandboxError
from .spec import FunctionSpec

_err = Console(stderr=True, soft_wrap=True)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _fail(message: str) -> NoReturn:
    _err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise SystemExit(2)


def _load_json_file(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        _fail(f"cannot read {what} {path}: {exc.strerror}")
    except ValueError as exc:
        _fail(f"{what} {path} is not valid JSON: {exc}")


def load_functions(path: str) -> list[FunctionSpec]:
    """A list of specs, or an object with a "functions" list or map (a saved FunctionLibrary)."""
    data = _load_json_file(path, "function library")
    if isinstance(data, dict) and "functions" in data:
        data = data["functions"]
    if isinstance(data, dict):
        data = list(data.values())
    if not isinstance(data, list):
        raise InvalidSpec(f"{path}: expected a list of function specs or {{'functions': [...]}}")
    specs = []
    for i, item in enumerate(data):
        if isinstance(item, dict) and isinstance(item.get("spec"), dict):
            item = item["spec"]
        try:
            specs.append(FunctionSpec.from_dict(item))
        except InvalidSpec as exc:
            raise InvalidSpec(f"{path}: function {i}: {exc}") from None
    return specs


def _cmd_image(args: argparse.Namespace) -> int:
    from .container import connect
    from .image import build_image

    client = connect()
    with _err.status("building the sandbox image") as status:
        image = build_image(client, log=lambda line: status.update(line))
    _print_json({"image": image.tags[0] if image.tags else "", "id": image.id})
    return 0


def _cmd_call(args: argparse.Namespace) -> int:
    from .runtime import Sandbox

    spec = FunctionSpec.load(args.spec)
    try:
        call_args = json.loads(args.args)
    except ValueError as exc:
        _fail(f"--args is not valid JSON: {exc}")
    if not isinstance(call_args, dict):
        _fail("--args must be a JSON object of keyword arguments, e.g. '{\"n\": 5}'")
    with Sandbox(pool_size=1) as sandbox:
        result = sandbox.call(spec, call_args, timeout=args.timeout)
    _print_json(result.to_dict())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .runtime import Sandbox

    try:
        code = Path(args.code).read_text(encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot read {args.code}: {exc.strerror}")
    functions = load_functions(args.functions) if args.functions else []
    with Sandbox(pool_size=1) as sandbox:
        result = sandbox.run(code, functions, timeout=args.timeout)
    _print_json(result.to_dict())
    return 0


def _cmd_selftest(args: argparse.Namespace) -> int:
    from .runtime import Sandbox

    sandbox = Sandbox(pool_size=1)
    try:
        sandbox.start(verify=False)
        report = sandbox.selftest()
        failed = sorted(name for name, probe in report.items() if not probe["confined"])
        if not failed:
            sandbox.record_selftest(report)
    finally:
        sandbox.close()
    _print_json({"passed": not failed, "failed": failed, "image_id": sandbox.image_id,
                 "probes": report})
    if failed:
        _err.print(f"[bold red]NOT CONFINED:[/] {', '.join(failed)}")
        return 1
    _err.print(f"[green]all {len(report)} probes confined[/]")
    return 0


def _cmd_gc(args: argparse.Namespace) -> int:
    from .container import connect, gc

    removed = gc(connect(), everything=args.all)
    _print_json({"removed": removed})
    return 0


def _cmd_vet(args: argparse.Namespace) -> int:
    from .vet import vet_command

    return vet_command(args.vet_args)


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import main as bench_main

    return bench_main(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("image", help="build the sandbox image (offline; quick when up to date)")
    call = sub.add_parser("call", help="call one function (a FunctionSpec JSON file)")
    call.add_argument("spec", help="FunctionSpec JSON file")
    call.add_argument("--args", default="{}", help="keyword arguments as a JSON object")
    call.add_argument("--timeout", type=float, default=None, help="seconds (default 10)")
    run = sub.add_parser("run", help="run a code block as an agent's executor would")
    run.add_argument("code", help="Python file")
    run.add_argument("--functions", help="JSON list of FunctionSpecs, or a saved library")
    run.add_argument("--timeout", type=float, default=None, help="seconds (default 10)")
    sub.add_parser("selftest", help="probe the confinement; non-zero exit names any leak")
    gc = sub.add_parser("gc", help="remove containers left by dead fnforge processes")
    gc.add_argument("--all", action="store_true", help="remove every fnforge container")
    vet = sub.add_parser("vet", add_help=False,
                         help="vet FunctionSpecs: exit 0 pass, 1 rejected, 2 error (vet --help)")
    vet.add_argument("vet_args", nargs=argparse.REMAINDER)
    bench = sub.add_parser("bench", help="latency and throughput against docker run/exec")
    bench.add_argument("--calls", type=int, default=300, help="fnforge calls to time")
    bench.add_argument("--out", help="also write the figures to this JSON file")
    return parser


_COMMANDS = {"image": _cmd_image, "call": _cmd_call, "run": _cmd_run, "selftest": _cmd_selftest,
             "gc": _cmd_gc, "vet": _cmd_vet, "bench": _cmd_bench}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["vet"]:  # vet parses its own options (sandbox/vet.py)
        args = argparse.Namespace(command="vet", vet_args=argv[1:])
    else:
        args = _parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so context managers remove their containers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return _COMMANDS[args.command](args)
    except SandboxError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _err.print("interrupted; containers removed")
        return 130
