"""The embedded model's server: llama-cpp-python's own, with a chat handler of fnforge's that
lays out every request as the model was trained to read it.

Why: llama-cpp-python's `chatml-function-calling` handler garbled what the model read. Its Jinja
environment escapes HTML, so every message reached the model with `<`, `&` and quotes as
entities: code came back as `print(&#34;a&lt;b&#34;)`, the optimizer's JSON example as
`{&#34;action&#34;: ...}`. Its template renders no `tool` message, so the model never read what a
call returned and called again (measured: the same call repeated to the turn limit in 21 of 24
conversations); a reply it starts as a message is held to a grammar that allows only a
function's name or the end; and it cannot stream an automatic tool choice.

The `fnforge-tools` handler renders every request as Qwen2.5's chat template does (the model
file carries it): plain chatml turns; the tools as JSON inside <tools> in the system turn; a call
as <tool_call>{"name": ..., "arguments": {...}}</tool_call> after the reply's text; results
inside <tool_response> in the next user turn. It lets the model write freely and turns the
<tool_call> blocks of its reply into OpenAI tool calls, whole or streamed; a call forced by name
and a JSON response_format are held to their schema by a grammar. Text that is not the model's
own cannot open or close one of those blocks: its tags are broken up (as `template_safe` breaks
up `<|`), and `<` inside tool JSON is written `\\u003c`.

Run as ``python -m optimizer.llm.serve ARGS`` (llama_cpp.server's arguments); this module never
imports llama_cpp at import time, so the rest of fnforge loads without the runtime.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import re
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = ["CHAT_FORMAT", "ToolCall", "json_call", "main", "parse_reply", "render"]

CHAT_FORMAT = "fnforge-tools"
_TOOLS_HEAD = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>")
_TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')
_DEFAULT_SYSTEM = "You are a helpful assistant."
_OPEN, _CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(re.escape(_OPEN) + r"\s*(.*?)\s*(?:" + re.escape(_CLOSE) + r"|\Z)", re.S)

ToolCall = dict[str, Any]
"""An OpenAI tool call: {"id", "type": "function", "function": {"name", "arguments"}}."""

_TAG = re.compile(r"<(/?(?:tool_call|tool_response|tools)>)")


def _json(value: Any) -> str:
    """JSON in which no string can write a tag (its `<` is `\\u003c`: the same JSON value)."""
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c")


def _text(message: Mapping[str, Any]) -> str:
    """A message's text, the tags of the tool format in it broken up (`<\\tool_call>`)."""
    content = message.get("content")
    if isinstance(content, list):  # OpenAI content parts
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return _TAG.sub(r"<\\\1", content) if isinstance(content, str) else ""


def _call_text(call: Mapping[str, Any]) -> str:
    function = call.get("function")
    fn: Mapping[str, Any] = function if isinstance(function, Mapping) else call
    arguments = fn.get("arguments", "{}")
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError, RecursionError):  # else shown as written
            arguments = json.loads(arguments)
    return f"{_call_opening(str(fn.get('name', '')))}{_json(arguments)}}}\n{_CLOSE}"


def _call_opening(name: str) -> str:
    """A call as the template writes it, up to its arguments (a forced call starts here)."""
    return f'{_OPEN}\n{{"name": {_json(name)}, "arguments": '


def render(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]]) -> str:
    """The prompt, laid out as Qwen2.5's chat template lays out tools, calls and results."""
    out: list[str] = []
    rest = list(messages)
    system = _text(rest.pop(0)) if rest and rest[0].get("role") == "system" else None
    if tools:
        out.append(f"<|im_start|>system\n{system if system is not None else _DEFAULT_SYSTEM}"
                   + _TOOLS_HEAD + "".join("\n" + _json(t) for t in tools)
                   + _TOOLS_TAIL + "<|im_end|>\n")
    elif system is not None:
        out.append(f"<|im_start|>system\n{system}<|im_end|>\n")
    for i, message in enumerate(rest):
        role = message.get("role")
        if role == "tool":
            if i == 0 or rest[i - 1].get("role") != "tool":
                out.append("<|im_start|>user")
            out.append(f"\n<tool_response>\n{_text(message)}\n</tool_response>")
            if i == len(rest) - 1 or rest[i + 1].get("role") != "tool":
                out.append("<|im_end|>\n")
        elif role == "assistant" and message.get("tool_calls"):
            text = _text(message).rstrip()
            out.append("<|im_start|>assistant" + (f"\n{text}" if text else "")
                       + "".join("\n" + _call_text(c) for c in message["tool_calls"]
                                 if isinstance(c, Mapping))
                       + "<|im_end|>\n")
        else:
            out.append(f"<|im_start|>{role}\n{_text(message)}<|im_end|>\n")
    out.append("<|im_start|>assistant\n")
    return "".join(out)


def parse_reply(text: str) -> tuple[str, list[ToolCall]]:
    """The reply's text before its first call, and its calls. A block that is not a JSON
    object with a name stays text: the model reads back what it wrote, not a made-up call."""
    start = text.find(_OPEN)
    if start < 0:
        return text, []
    calls: list[ToolCall] = []
    for body in _CALL.findall(text, start):
        call = json_call(body)
        if call is None:
            return text, []
        name, arguments = call
        calls.append(_new_call(name, arguments if isinstance(arguments, str)
                               else _json(arguments)))
    return text[:start].rstrip(), calls


def json_call(text: str) -> tuple[str, Any] | None:
    """The name and arguments of a call written as JSON, {"name": ..., "arguments": ...}
    (arguments {} when left out); None for anything else, however deep or broken."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    return data["name"], data.get("arguments", {})


# -- the handler (runs in the server process) ------------------------------------------------------
_PASSED = ("max_tokens", "temperature", "top_p", "min_p", "typical_p", "frequency_penalty",
           "presence_penalty", "repeat_penalty", "top_k", "seed", "tfs_z", "mirostat_mode",
           "mirostat_tau", "mirostat_eta", "model", "logits_processor", "grammar", "logit_bias")


def _handler(llama: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
             tool_choice: Any = None, stream: bool = False, stop: Any = None,
             response_format: Mapping[str, Any] | None = None, logprobs: bool | None = None,
             top_logprobs: int | None = None, **kwargs: Any) -> Any:
    """llama-cpp-python's chat-handler signature; see the module doc. A call forced by name
    (tool_choice {"function": {"name": ...}}) is written from its opening, its arguments held to
    the tool's schema; a JSON response_format holds the reply to its schema."""
    offered = list(tools or []) if tool_choice != "none" else []
    prompt = render(messages, offered)
    passed = {k: kwargs[k] for k in _PASSED if k in kwargs}
    passed["stop"] = [*([stop] if isinstance(stop, str) else stop or []), "<|im_end|>"]
    passed["logprobs"] = top_logprobs if logprobs else None
    forced = None
    if isinstance(tool_choice, Mapping):
        forced = str(tool_choice.get("function", {}).get("name", ""))
        tool = next((t for t in offered if t.get("function", {}).get("name") == forced), None)
        if tool is None:
            raise ValueError(f"tool_choice names {forced!r}, which is not among the tools")
        prompt += _call_opening(forced)
        passed["grammar"] = _json_grammar(tool["function"].get("parameters"))
    elif (response_format or {}).get("type") == "json_object" and not passed.get("grammar"):
        passed["grammar"] = _json_grammar((response_format or {}).get("schema"))
    completion = llama.create_completion(prompt=prompt, stream=stream, **passed)
    if stream:  # a stream carries no usage: the prompt is counted here, for its last chunk
        return _streamed(completion, len(llama.tokenize(prompt.encode(), special=True)), forced)
    return _whole(completion, forced)


def _json_grammar(schema: Mapping[str, Any] | None) -> Any:
    """A grammar holding the reply to a JSON schema (any JSON object without one)."""
    grammars = _runtime("llama_cpp.llama_grammar").LlamaGrammar
    if schema:
        with contextlib.suppress(Exception):  # a schema the converter cannot take: any JSON
            return grammars.from_json_schema(json.dumps(schema), verbose=False)
    return grammars.from_string(_runtime("llama_cpp.llama_grammar").JSON_GBNF, verbose=False)


def _new_call(name: str, arguments: str) -> ToolCall:
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": name, "arguments": arguments}}


def _whole(completion: Mapping[str, Any], forced: str | None = None) -> dict[str, Any]:
    choice = completion["choices"][0]
    if forced is not None:
        content, calls = "", [_new_call(forced, choice["text"])]
    else:
        content, calls = parse_reply(choice["text"])
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = calls
    return {"id": "chat" + completion["id"], "object": "chat.completion",
            "created": completion["created"], "model": completion["model"],
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if calls else choice["finish_reason"]}],
            "usage": completion["usage"]}


def _streamed(chunks: Iterator[Mapping[str, Any]], prompt_tokens: int = 0,
              forced: str | None = None) -> Iterator[dict[str, Any]]:
    """Text streams as it comes until a call opens; the calls follow when the reply ends (a
    tail that may be the start of ``<tool_call>`` is held back until it is not). A forced
    call's arguments stream as they come. The last chunk carries the usage (llama-cpp-python
    sends none with a stream)."""
    head: dict[str, Any] = {}
    held, calling, finish, made = "", False, None, 0
    call = _new_call(forced, "") if forced is not None else None

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {**head, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish_reason}]}

    for piece in chunks:
        if not head:
            head = {"id": "chat" + piece["id"], "created": piece["created"],
                    "model": piece["model"]}
            yield chunk({"role": "assistant"})
            if call is not None:
                yield chunk({"tool_calls": [{"index": 0, **call}]})
        choice = piece["choices"][0]
        finish = choice["finish_reason"] or finish
        text = choice["text"] or ""
        made += bool(text)
        if call is not None:
            if text:
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": text}}]})
            continue
        held += text
        if calling:
            continue
        at = held.find(_OPEN)
        if at >= 0:
            calling = True
            text, held = held[:at].rstrip(), held[at:]
        else:
            keep = next((n for n in range(len(_OPEN) - 1, 0, -1)
                         if held.endswith(_OPEN[:n])), 0)
            keep = max(keep, len(held) - len(held.rstrip()))  # a call's text ends unspaced
            text, held = held[:len(held) - keep], held[len(held) - keep:]
        if text:
            yield chunk({"content": text})
    if not head:
        return
    content, calls = parse_reply(held) if calling else (held, [])
    if content:
        yield chunk({"content": content})
    if calls:
        yield chunk({"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]})
    last = chunk({}, "tool_calls" if calls or call is not None else finish)
    last["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": made,
                     "total_tokens": prompt_tokens + made}
    yield last


def main(argv: Sequence[str] | None = None) -> None:
    """llama_cpp.server's command line, with ``fnforge-tools`` among the chat formats."""
    _runtime("llama_cpp.llama_chat_format").register_chat_completion_handler(CHAT_FORMAT)(
        _handler)
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    _runtime("llama_cpp.server.__main__").main()


def _runtime(module: str) -> Any:
    """A module of llama-cpp-python, untyped: fnforge type-checks without the runtime."""
    return importlib.import_module(module)


if __name__ == "__main__":
    main()
