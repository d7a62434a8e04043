"""Files that must survive a crash: written whole or not at all, or appended line by line.

One implementation for every state file fnforge keeps (libraries, verdicts, checkpoints,
journals): a crash leaves the previous version or the new one, never half of either.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["append_line", "write_json_atomic", "write_text_atomic"]


def write_text_atomic(path: str | Path, text: str, *, sync: bool = True) -> None:
    """Write to a temporary file beside `path`, fsync it, rename it over `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, data: Any, *, sync: bool = True, indent: int = 1) -> None:
    write_text_atomic(path, json.dumps(data, indent=indent, default=str), sync=sync)


def append_line(path: str | Path, line: str) -> None:
    """Append one line and fsync: once this returns, the line survives a crash.

    A write that fails (a full disk) is cut back off, and a line left unfinished by an earlier
    crash is ended first, so one bad write never runs into the next line.
    """
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
