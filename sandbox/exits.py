"""The exit status every fnforge command shares (`python -m sandbox`, `python -m optimizer`),
and the one way a bug is reported.

    0  done: a result, a passing verdict, a built image (also when the user's code failed)
    1  a negative verdict: a function rejected, a probe not confined, a history that fails
    2  bad input or infrastructure: one message on stderr saying what to do
    3  an unexpected error inside fnforge (a bug): reported as such, never as a verdict
"""

from __future__ import annotations

import os
import time
import traceback

from rich.console import Console

from .paths import cache_dir
from .text import markup_safe

__all__ = ["EXIT_BAD_INPUT", "EXIT_BUG", "EXIT_OK", "EXIT_REJECTED", "report_bug"]

EXIT_OK, EXIT_REJECTED, EXIT_BAD_INPUT, EXIT_BUG = 0, 1, 2, 3

_err = Console(stderr=True, soft_wrap=True, highlight=False)


def report_bug(exc: BaseException) -> None:
    """One line on stderr; the traceback goes to a file under the cache, not at the user."""
    where = cache_dir() / "logs" / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(traceback.format_exc(), encoding="utf-8")
        saved = f"; traceback in {where}"
    except OSError:
        saved = ""
    _err.print(f"[bold red]internal error, a bug in fnforge (please report it):[/] "
               f"{markup_safe(type(exc).__name__)}: {markup_safe(exc, 500)}{markup_safe(saved)}")
