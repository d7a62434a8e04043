"""Where fnforge keeps what it builds or fetches: one cache root, outside every repository.

`FNFORGE_CACHE` moves it (default `~/.cache/fnforge`). Beneath it: the image's root filesystem
tarball, the self-test verdicts (`selftest/`), the local model (`models/`), the local model
server's state and log (`run/`) and recorded LLM responses (`llm-responses/`).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_dir"]

CACHE_ENV = "FNFORGE_CACHE"


def cache_dir() -> Path:
    """The cache root, created on first use."""
    named = os.environ.get(CACHE_ENV, "").strip()
    root = Path(named).expanduser() if named else Path.home() / ".cache" / "fnforge"
    root.mkdir(parents=True, exist_ok=True)
    return root
