"""The runner's protocol vocabulary, shared by both sides of the boundary.

Standard library only. Inside the container the runner imports it as `protocol`; on the host it
is `sandbox.runner.protocol`. It is the one definition of the error kinds and of the bounded JSON
reader, so the runner, the pool and vetting can never disagree about them.
"""

from __future__ import annotations

import json
import math
from enum import StrEnum
from typing import Any

__all__ = ["MAX_CALLED", "MAX_DEPTH", "ErrorKind", "checked_calls", "depth_within",
           "loads_bounded"]


class ErrorKind(StrEnum):
    """Why a call did not return a value.

    EXCEPTION is the one kind the call's own process reports (its exception's class name, message
    and traceback); every other kind is measured from outside that process: by the runner (exit
    status, signals, deadlines, output volume, result size, the cgroup's OOM counter) or by the
    host (no answer in time, a dead container)."""

    EXCEPTION = "exception"  # the code raised; ErrorInfo.type is the exception's class name
    TIMEOUT = "timeout"  # wall-clock deadline or CPU-time limit
    MEMORY_LIMIT = "memory_limit"  # killed by the container's memory cgroup
    OUTPUT_LIMIT = "output_limit"  # stdout/stderr flood past 16 times the kept cap
    RESULT_INVALID = "result_invalid"  # the value could not be converted to JSON, or is too large
    PROTOCOL = "protocol"  # the result channel held a malformed, forged or extra line
    CRASHED = "crashed"  # the process (or the container) died before returning a result
    RESOURCE_LIMIT = "resource_limit"  # no process could be started (pids limit)


MAX_DEPTH = 64
"""Nesting limit of any JSON read from the other side (value, arguments, audit details)."""


def depth_within(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when lists and dicts nest at most `limit` deep (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def loads_bounded(data: bytes | str, max_bytes: int, limit: int = MAX_DEPTH) -> Any:
    """json.loads for bytes the other side controls: ValueError (never RecursionError or
    MemoryError) for anything too large, too deep, not JSON, or holding NaN/Infinity."""
    if len(data) > max_bytes:
        raise ValueError(f"{len(data)} bytes, over the limit of {max_bytes}")
    try:
        value = json.loads(data, parse_constant=_no_constant, parse_float=_finite_float)
    except (RecursionError, MemoryError):
        raise ValueError("nested too deeply to parse") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    if not depth_within(value, limit):
        raise ValueError(f"nested deeper than {limit} levels")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a JSON number")
    return value


MAX_CALLED = 64
"""Library functions a code block's report may name (its calls of each: `checked_calls`)."""


def checked_calls(raw: object) -> dict[str, int] | None:
    """A code block's claim of how often it called each library function, if well formed:
    at most MAX_CALLED identifiers, each with a count from 0 to 10**9."""
    if not isinstance(raw, dict) or len(raw) > MAX_CALLED:
        return None
    for name, times in raw.items():
        if not (isinstance(name, str) and name.isidentifier() and len(name) <= 100) or \
                isinstance(times, bool) or not isinstance(times, int) or \
                not 0 <= times <= 10 ** 9:
            return None
    return dict(raw)
