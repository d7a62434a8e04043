"""The optimizer's own channel to its LLM: bounded replies, requests within the budget, records
within the store's limit.

Why here, in one place: the optimizer LLM is as untrusted as the code it writes. Its reply is
bounded before it is parsed (`check_reply_size`) and a proposal's function before it becomes a
spec (`check_function_size`), so no record made from it can outgrow the history's limit. What the
model said earlier in a step goes back to it summarised (`replayed`: the latest reply whole only
while small; `fit_request`: older replies as one line each), never repeated at any length, and
every request is cut to the token budget as a whole (`fit_request`): the stable head first,
then the latest exchanges, older ones left out with a note. Every request and
response is recorded, parseable or not, with the response cut to `MAX_RECORDED_CHARS`
(`recorded_response`, which keeps the full length and hash of what was cut).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sandbox import template_safe

from .llm import ChatResult

__all__ = ["CHARS_PER_TOKEN", "MAX_ACTIONS_PER_REPLY", "MAX_ARGUMENTS_CHARS",
           "MAX_ERROR_CHARS", "MAX_FUNCTION_CHARS", "MAX_REASON_CHARS", "MAX_RECORDED_CHARS",
           "REPLAY_CHARS", "SUMMARY_CHARS", "answered", "check_function_size",
           "check_reply_size", "clip_error", "fit_request", "recorded_response", "replayed"]

CHARS_PER_TOKEN = 3.2  # as optimizer/prompts.py estimates: code and math are dense
MAX_ACTIONS_PER_REPLY = 8  # the JSON mode schema's maxItems; tool calls alike
MAX_ARGUMENTS_CHARS = 96 * 1024  # one action's JSON, before it is parsed
MAX_FUNCTION_CHARS = 64 * 1024  # one proposed function as JSON (code is at most 20,000)
MAX_REASON_CHARS = 240  # the schemas' maxLength; longer reasons are cut, not refused
MAX_ERROR_CHARS = 600  # one parse error (it may quote the reply) as fed back and recorded
REPLAY_CHARS = 2400  # the latest reply re-sent as it was up to this size, summarised past it
SUMMARY_CHARS = 300  # an older reply of the same step: a summary of what it proposed
MAX_RECORDED_CHARS = 256 * 1024  # a response's text and tool-call arguments, as recorded

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _clean(text: str) -> str:
    """Text the model (or anything else) wrote, made fit to send again: lone surrogates (which
    cannot be encoded: the request would fail) and control characters escaped, `<|` of
    chat-template tokens broken up."""
    if text.isascii() and "<|" not in text and text.isprintable():
        return text
    return template_safe(_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text))


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]} [... {len(text) - limit} characters left out]"


def clip_error(message: object) -> str:
    """A parse error as fed back and recorded: one bounded, sendable string."""
    return _clean(_clip(str(message), MAX_ERROR_CHARS))


def check_reply_size(result: ChatResult) -> None:
    """ValueError, before anything is parsed, for a reply with too many or too large actions."""
    if len(result.tool_calls) > MAX_ACTIONS_PER_REPLY:
        raise ValueError(f"the reply has {len(result.tool_calls)} tool calls; give at most "
                         f"{MAX_ACTIONS_PER_REPLY} (one at a time is best)")
    for call in result.tool_calls:
        if len(call.arguments or "") > MAX_ARGUMENTS_CHARS:
            raise ValueError(f"{_clean(call.name[:64])}: the arguments are "
                             f"{len(call.arguments)} characters; the limit is "
                             f"{MAX_ARGUMENTS_CHARS}: propose a smaller function")
    if len(result.text or "") > MAX_ARGUMENTS_CHARS * MAX_ACTIONS_PER_REPLY:
        raise ValueError(f"the reply is {len(result.text or '')} characters; the limit is "
                         f"{MAX_ARGUMENTS_CHARS * MAX_ACTIONS_PER_REPLY}")


def check_function_size(action: str, raw: Any) -> None:
    """ValueError for a proposed function over MAX_FUNCTION_CHARS as JSON (whatever field makes
    it so), before it is parsed into a spec or recorded."""
    try:
        size = len(json.dumps(raw, ensure_ascii=False, default=str))
    except (TypeError, ValueError, RecursionError):
        raise ValueError(f"{action}: the function is not plain JSON") from None
    if size > MAX_FUNCTION_CHARS:
        raise ValueError(f"{action}: the function is {size} characters as JSON; the limit is "
                         f"{MAX_FUNCTION_CHARS}: propose a smaller function with fewer tests")


def replayed(result: ChatResult) -> dict[str, Any]:
    """An earlier reply as the assistant message to send back: as it was when small; past
    REPLAY_CHARS its text is cut and each tool call's arguments become a one-line summary (still
    valid JSON, so templates that parse arguments accept it); at most MAX_ACTIONS_PER_REPLY tool
    calls. Always sendable text."""
    message = result.assistant_message()
    calls = message.get("tool_calls") or []
    if len(calls) > MAX_ACTIONS_PER_REPLY:  # the caller answers only the calls kept here
        message["tool_calls"] = calls = calls[:MAX_ACTIONS_PER_REPLY]
        message["content"] = (f"{message.get('content') or ''} ({len(result.tool_calls)} tool "
                              "calls; the first ones are shown)").strip()
    size = len(message.get("content") or "") + sum(len(c["function"]["arguments"] or "")
                                                   for c in calls)
    message["content"] = _clean(_clip(message["content"], REPLAY_CHARS)
                                if size > REPLAY_CHARS else message["content"])
    for call in calls:
        function = call["function"]
        function["name"] = _clean(str(function["name"])[:64])
        arguments = str(function["arguments"] or "")
        if size > REPLAY_CHARS:
            arguments = json.dumps({"summary": _summary(arguments)})
        function["arguments"] = _clean(arguments)
    return message


def answered(result: ChatResult, tools: bool, per_call: Sequence[str],
             otherwise: str) -> list[dict[str, Any]]:
    """A reply (`replayed`) and the answer to it, in the protocol's own form: in tools mode one
    tool message per call (`per_call[i]`, else `otherwise`), else one user message."""
    message = replayed(result)
    if tools and message.get("tool_calls"):
        return [message, *({"role": "tool", "tool_call_id": call["id"],
                            "content": per_call[i] if i < len(per_call) else otherwise}
                           for i, call in enumerate(message["tool_calls"]))]
    return [{"role": "assistant", "content": message.get("content") or ""},
            {"role": "user", "content": "\n".join(per_call) or otherwise}]


def _summary(arguments: str) -> str:
    """One line about a tool call's arguments: what it named, and how much was left out."""
    try:
        data = json.loads(arguments)
    except (ValueError, RecursionError):
        data = None
    fields = data if isinstance(data, dict) else {}
    function = fields.get("function") if isinstance(fields.get("function"), dict) else fields
    name = function.get("name") if isinstance(function, dict) else None
    what = f"function {str(name)[:64]!r}, " if isinstance(name, str) else ""
    return f"{what}{len(arguments)} characters of arguments (left out here)"


def _size(message: Mapping[str, Any]) -> int:
    content = message.get("content")
    size = len(content) if isinstance(content, str) else len(json.dumps(content, default=str))
    for call in message.get("tool_calls") or []:
        function = call.get("function", {}) if isinstance(call, Mapping) else {}
        size += len(str(function.get("arguments") or "")) + len(str(function.get("name") or ""))
    return size + 16  # role and framing


def fit_request(messages: Sequence[Mapping[str, Any]], max_tokens: int) -> list[dict[str, Any]]:
    """The messages as sent: every string sendable, and the whole within `max_tokens`
    (estimated). The first two (system, the step's prompt) stay; the latest exchanges are kept
    while they fit and older ones are left out with a note; if the head alone is over, the
    prompt (then the system message) is cut at its end, saying so."""
    budget = int(max_tokens * CHARS_PER_TOKEN)
    out = [_sendable(m) for m in messages]
    head, tail = out[:2], out[2:]
    units: list[list[dict[str, Any]]] = []
    for m in tail:  # an assistant message starts an exchange; its tool replies stay with it
        if m.get("role") == "assistant" or not units:
            units.append([])
        units[-1].append(m)
    for unit in units[:-1]:  # earlier exchanges: summarised; only the latest reply is whole
        unit[:] = [_compact(m) if m.get("role") == "assistant" else m for m in unit]
    total = sum(_size(m) for m in head) + sum(_size(m) for u in units for m in u)
    dropped = 0
    while total > budget and len(units) > 1:
        total -= sum(_size(m) for m in units.pop(0))
        dropped += 1
    if dropped and head:
        note = (f"\n\n({dropped} earlier exchange(s) of this step are left out here to stay "
                "within the prompt budget.)")
        head[-1] = {**head[-1], "content": str(head[-1].get("content") or "") + note}
        total += len(note)
    for i in (1, 0, *range(2, len(head) + sum(map(len, units)))):
        if total <= budget:
            break
        flat = head + [m for u in units for m in u]
        if i >= len(flat) or not isinstance(flat[i].get("content"), str):
            continue
        text = flat[i]["content"]
        keep = max(0, len(text) - (total - budget) - 80)
        cut = text[:keep] + f"\n[... {len(text) - keep} characters left out to stay within " \
                            "the prompt budget]"
        total -= len(text) - len(cut)
        flat[i]["content"] = cut
    return head + [m for u in units for m in u]


def _compact(message: dict[str, Any]) -> dict[str, Any]:
    """An earlier reply of the step as one short message: what it did, not what it said."""
    out = dict(message)
    if isinstance(out.get("content"), str):
        out["content"] = _clip(out["content"], SUMMARY_CHARS)
    if out.get("tool_calls"):
        out["tool_calls"] = [
            {**c, "function": {**c["function"], "arguments": json.dumps(
                {"summary": _summary(str(c["function"].get("arguments") or ""))})}}
            if isinstance(c, Mapping) and isinstance(c.get("function"), Mapping)
            and len(str(c["function"].get("arguments") or "")) > SUMMARY_CHARS else c
            for c in out["tool_calls"]]
    return out


def _sendable(message: Mapping[str, Any]) -> dict[str, Any]:
    """A copy whose strings can be encoded (no lone surrogates, no controls but \\n and \\t)."""
    out = dict(message)
    if isinstance(out.get("content"), str):
        out["content"] = _clean(out["content"])
    if out.get("tool_calls"):
        out["tool_calls"] = [
            {**c, "function": {**c["function"],
                               "name": _clean(str(c["function"].get("name") or "")),
                               "arguments": _clean(str(c["function"].get("arguments") or ""))}}
            if isinstance(c, Mapping) and isinstance(c.get("function"), Mapping) else c
            for c in out["tool_calls"]]
    return out


def recorded_response(result: ChatResult) -> dict[str, Any]:
    """A response as the history keeps it: text and tool calls as returned, each cut to
    MAX_RECORDED_CHARS (then `chars` and `sha256` say what the whole was)."""
    whole = (result.text or "") + "".join(f"{c.name}{c.arguments}" for c in result.tool_calls)
    out: dict[str, Any] = {
        "text": _clip(result.text, MAX_RECORDED_CHARS) if result.text is not None else None,
        "tool_calls": [{"name": _clip(c.name, 200),
                        "arguments": _clip(c.arguments or "", MAX_RECORDED_CHARS)}
                       for c in result.tool_calls[:MAX_ACTIONS_PER_REPLY * 4]]}
    if len(whole) > MAX_RECORDED_CHARS or len(result.tool_calls) > MAX_ACTIONS_PER_REPLY * 4:
        out.update(cut=True, chars=len(whole), tool_call_count=len(result.tool_calls),
                   sha256=hashlib.sha256(whole.encode("utf-8", "surrogatepass")).hexdigest())
    return out
