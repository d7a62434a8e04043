"""Keep a finished run's figures in the repository: `python -m optimizer.publish RUN OUT`.

`make experiment` uses it to put the run's eval.json, metrics.json and curves.png under
results/, with what a reader needs to judge them: the command, the commit, the machine, the
split's rule and counts. Nothing large is copied (no journal, no history, no weights).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from sandbox import FunctionLibrary

from .session import library_digest, source_commit

__all__ = ["machine", "publish"]

KEPT = ("eval.json", "metrics.json", "curves.png")


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gib": round(memory / 2 ** 30, 1),
            "python": platform.python_version(), "system": platform.platform()}


def publish(run: Path, out: Path, command: str) -> Path:
    """Copy the figures, refusing figures that are not those of the run's own library: an
    eval.json written by `eval --library OTHER`, or by an older fnforge that did not record
    which library it measured, would be published under the wrong name."""
    missing = [name for name in KEPT if not (run / name).exists()]
    if missing:
        raise FileNotFoundError(f"{run} has no {', '.join(missing)}: train and evaluate first")
    report = json.loads((run / "eval.json").read_text(encoding="utf-8"))
    saved = run / "library.json"
    library = FunctionLibrary.load(saved) if saved.exists() else FunctionLibrary()
    if report.get("library_digest") != library_digest(library.specs()):
        raise ValueError(f"{run / 'eval.json'} was not measured with {saved} (another "
                         f"library, or an eval.json that predates the check): run `python -m "
                         f"optimizer eval --run {run}` again, then publish")
    out.mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        shutil.copyfile(run / name, out / name)
    split = json.loads((run / "split.json").read_text(encoding="utf-8"))
    meta = {"command": command, "commit": report.get("commit", "unknown"),
            "published_from": source_commit(), "machine": machine(),
            "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": json.loads((run / "config.json").read_text(encoding="utf-8")),
            "split": {**split["params"], **{k: len(split[k]) for k in
                                            ("train", "validation", "test")}}}
    (out / "run.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optimizer.publish", description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--command", default="make experiment")
    args = parser.parse_args(argv)
    try:
        where = publish(args.run, args.out, args.command)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"published {args.run} -> {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
