"""``python -m optimizer llm start|stop|status|model``: manage the embedded local model server."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from .config import LOCAL_MODELS, ConfigError, load_config
from .local_llm import MODELS, LocalLLMError, LocalServer, model_file


def _llm(args: argparse.Namespace) -> int:
    server = LocalServer()
    if args.action == "stop":
        print("local model server stopped" if server.stop() else "no local model server running")
        return 0
    if args.action == "status":
        info = server.status()
        if info is None:
            print("no local model server running")
            return 1
        print(f"{info.model} at {info.base_url} (pid {info.pid}, log {info.log})")
        return 0
    local = load_config(args.config).local
    if args.model:
        local = replace(local, model=args.model)
    if args.action == "model":
        print(model_file(local.model))
        return 0
    info = server.start(local, port=args.port, strict_port=args.port is not None)
    print(f"{info.model} ready at {info.base_url} (pid {info.pid}, log {info.log})")
    print(f"  export OPENAI_BASE_URL={info.base_url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optimizer")
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
    args = parser.parse_args(argv)
    try:
        return _llm(args)
    except (ConfigError, LocalLLMError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
