"""The "call" record: one sandboxed function call or code block made during a conversation.

Why a helper: every call site records the same fields, and none of them stores arguments or
output (they can be large or hold problem data); the arguments' hash lets a reviewer match a
call to a transcript without the history holding it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from sandbox import CallResult, ErrorKind, RunResult

from .canonical import canonical_json, jsonable, sha256_hex

__all__ = ["CODE_BLOCK", "call_data"]

CODE_BLOCK = "<code>"
"""The function name recorded for a code block the assistant wrote (Sandbox.run)."""

_MESSAGE_CHARS = 500


def call_data(function: str, args: Mapping[str, Any] | str | None, result: CallResult, *,
              problem_id: str | int | None = None, epoch: int | None = None,
              code_hash: str | None = None) -> dict[str, Any]:
    """The data of a "call" record for `result`.

    `function` is the function's name, or CODE_BLOCK with `args` the code block's source (its
    hash is recorded as code_hash); `code_hash` is the function version's, when known."""
    if function == CODE_BLOCK and isinstance(args, str):
        code_hash = code_hash or sha256_hex(args)
        args_hash = None
    else:
        args_hash = hashlib.sha256(canonical_json(jsonable(args or {})).encode()).hexdigest()
    error = result.error
    limits = [name for name, hit in (
        ("timeout", result.timed_out), ("memory", result.oom_killed),
        ("stdout", result.stdout_truncated), ("stderr", result.stderr_truncated),
        ("output", error is not None and error.kind is ErrorKind.OUTPUT_LIMIT),
        ("result_size", error is not None and error.kind is ErrorKind.RESULT_INVALID),
        ("resources", error is not None and error.kind is ErrorKind.RESOURCE_LIMIT)) if hit]
    data: dict[str, Any] = {
        "function": function, "args_hash": args_hash, "code_hash": code_hash,
        "duration_ms": round(float(result.duration_ms), 3), "ok": bool(result.ok),
        "error": None if error is None else {
            "kind": error.kind.value, "type": error.type,
            "message": error.message[:_MESSAGE_CHARS]},
        "timed_out": bool(result.timed_out), "oom_killed": bool(result.oom_killed),
        "limits_hit": limits, "audit": [e.to_dict() for e in result.audit],
        "image_id": result.image_id, "problem_id": problem_id, "epoch": epoch,
    }
    if isinstance(result, RunResult):
        data["exit_code"] = result.exit_code
        data["library_calls"] = dict(result.calls)  # what the block called of its library
    return data
