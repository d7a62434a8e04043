"""Text from untrusted sources (function names, code, findings, model output) made safe to show.

A terminal interprets control sequences and rich interprets markup: either lets hostile text
erase a REJECTED table and print a fake PASSED. Everything untrusted that fnforge prints goes
through `terminal_safe` (plain text) or `markup_safe` (text placed inside rich markup); a field
that must stay on one line (a summary row) passes `one_line=True`, so a newline inside it cannot
forge the next row.

Every string that leaves a container goes through `container_text` once, where the host parses
the runner's answer, before any consumer (tool replies, vetting feedback, prompts, records,
terminals) sees it: valid Unicode, bounded, terminal-safe and prompt-safe.
"""

from __future__ import annotations

import re
from typing import Any

from rich.markup import escape

__all__ = ["container_text", "container_value", "markup_safe", "template_safe", "terminal_safe"]

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides and
# isolates that reorder what a reviewer sees (Trojan Source).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f]")
_UNSAFE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                          "\u200e\u200f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_TEMPLATE_MARK = re.compile("<([|\uff5c])")
"""Chat templates' special tokens (`<|im_start|>`, `<|eot_id|>`, DeepSeek's with U+FF5C bars):
a local server parses them inside message text, so text holding one could open a forged turn."""


def template_safe(text: str) -> str:
    """`text` with the opening `<|` of every chat-template token broken up as `<\\|`."""
    return _TEMPLATE_MARK.sub(r"<\\\1", text) if "<" in text else text


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}"


def terminal_safe(text: object, limit: int | None = None, *, one_line: bool = False) -> str:
    """Printable text: control characters shown as escapes, lone surrogates replaced; with
    `one_line`, newlines and tabs are escaped too."""
    s = text if isinstance(text, str) else str(text)
    if limit is not None and len(s) > limit:
        s = s[:limit] + "..."
    s = _SURROGATE.sub("\ufffd", s)
    return (_UNSAFE_LINE if one_line else _UNSAFE).sub(_escape, s)


def markup_safe(text: object, limit: int | None = None, *, one_line: bool = False) -> str:
    """terminal_safe, then escaped so rich shows `[bold]` as it is written."""
    return escape(terminal_safe(text, limit, one_line=one_line))


def container_text(text: object, limit: int) -> str:
    """A string a container sent, as every host consumer may use it: lone surrogates shown as
    `\\udXXX` (so it always encodes as UTF-8), control and bidirectional characters but newline
    and tab shown as escapes, `<|` of chat-template tokens broken up as `<\\|`, and at most
    `limit` characters (cut after escaping, so escapes cannot grow it past the limit)."""
    s = text if isinstance(text, str) else ""
    if not s.isascii():
        s = _SURROGATE.sub(_escape, s)
    s = template_safe(_UNSAFE.sub(_escape, s))
    if len(s) > limit:
        s = s[:max(0, limit - 3)] + "..."
    return s


def container_value(value: Any, limit: int) -> Any:
    """A JSON value a container sent, with every string and key through `container_text`
    (iterative: the value's depth was bounded when it was parsed)."""
    if isinstance(value, str):
        return container_text(value, limit)
    if not isinstance(value, list | dict):
        return value
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]
    while stack:
        item, parent, key = stack.pop()
        if isinstance(item, str):
            parent[key] = container_text(item, limit)
        elif isinstance(item, list):
            copy: list[Any] = [None] * len(item)
            parent[key] = copy
            stack.extend((child, copy, i) for i, child in enumerate(item))
        elif isinstance(item, dict):
            mapping: dict[str, Any] = {}
            parent[key] = mapping
            for k, child in item.items():
                clean = container_text(k, limit)
                mapping[clean] = None
                stack.append((child, mapping, clean))
        else:
            parent[key] = item
    return root[0]
