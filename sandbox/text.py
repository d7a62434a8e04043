"""Text from untrusted sources (function names, code, findings, model output) made safe to show.

A terminal interprets control sequences and rich interprets markup: either lets hostile text
erase a REJECTED table and print a fake PASSED. Everything untrusted that fnforge prints goes
through `terminal_safe` (plain text) or `markup_safe` (text placed inside rich markup).
"""

from __future__ import annotations

import re

from rich.markup import escape

__all__ = ["markup_safe", "terminal_safe"]

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides and
# isolates that reorder what a reviewer sees (Trojan Source).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def terminal_safe(text: object, limit: int | None = None) -> str:
    """Printable text: control characters shown as escapes, lone surrogates replaced."""
    s = text if isinstance(text, str) else str(text)
    if limit is not None and len(s) > limit:
        s = s[:limit] + "..."
    s = _SURROGATE.sub("\ufffd", s)
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256
                       else f"\\u{ord(m.group()):04x}", s)


def markup_safe(text: object, limit: int | None = None) -> str:
    """terminal_safe, then escaped so rich shows `[bold]` as it is written."""
    return escape(terminal_safe(text, limit))
