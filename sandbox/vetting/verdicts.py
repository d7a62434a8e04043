"""VerdictCache: re-vetting an unchanged function before each episode costs a dict lookup.

A Sandbox owns one (in memory by default; on disk with a directory, one JSON file per key).
Keys cover the code, the spec, the image and the policy (report.verdict_key).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from ..files import write_json_atomic
from .report import VetReport

__all__ = ["VerdictCache"]


class VerdictCache:
    """Verdicts in memory, and optionally as one JSON file per key in a directory."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory else None
        self._mem: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> VetReport | None:
        with self._lock:
            data = self._mem.get(key)
        if data is None and self.directory is not None:
            try:
                data = json.loads((self.directory / f"{key}.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = None
        if not isinstance(data, dict):
            return None
        try:
            report = VetReport.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None  # a damaged entry is a miss: the function is vetted again
        if report.key != key:
            return None
        with self._lock:
            self._mem[key] = data
        return report.as_cached()

    def put(self, report: VetReport) -> None:
        data = {**report.to_dict(), "cached": False}
        with self._lock:
            self._mem[report.key] = data
        if self.directory is not None:
            write_json_atomic(self.directory / f"{report.key}.json", data, sync=False)

    def clear(self) -> None:
        with self._lock:
            self._mem.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._mem)
