"""Structured optimizer actions: add_function, revise_function, remove_function, terminate.

The model proposes them as tool calls where the endpoint supports tools, otherwise through JSON
mode with a schema (llama.cpp's ``{"type": "json_object", "schema": ...}``, which constrains
sampling with a grammar). Either way the caller gets the same dataclasses. Output that does not
parse or validate is sent back to the model with the error, a bounded number of times, because
small models often fix a reply once told what is wrong.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sandbox import FunctionSpec, InvalidSpec

from .channel import (
    MAX_ACTIONS_PER_REPLY,
    MAX_ARGUMENTS_CHARS,
    MAX_REASON_CHARS,
    answered,
    check_function_size,
    check_reply_size,
    clip_error,
    fit_request,
)
from .errors import ActionParseError, LLMError, LLMRequestError, OptimizerError
from .llm import ChatResult, LLMClient

__all__ = [
    "ACTION_NAMES",
    "MAX_EXAMPLES",
    "Action",
    "ActionReply",
    "AddFunction",
    "FunctionAction",
    "RemoveFunction",
    "ReviseFunction",
    "Terminate",
    "WorkedExample",
    "action_name",
    "choose_mode",
    "function_schema",
    "json_mode_schema",
    "parse_action",
    "parse_json_reply",
    "parse_tool_calls",
    "request_actions",
    "response_format",
    "tool_definitions",
]

ACTION_NAMES: tuple[str, ...] = ("add_function", "revise_function", "remove_function",
                                 "terminate")
Mode = Literal["tools", "json"]


@dataclass(frozen=True)
class WorkedExample:
    """A call of a proposed function that should answer one recorded conversation's problem:
    the optimizer checks it against that problem's known answer before applying (LATM's rule:
    a tool is kept only once it reproduces real answers)."""

    conversation: int  # the number the prompt showed (1-based)
    args: dict[str, Any]


@dataclass(frozen=True)
class FunctionAction:
    """An action that carries a whole function (its vetting comes before it is applied)."""

    function: FunctionSpec
    reason: str = ""
    examples: tuple[WorkedExample, ...] = ()


@dataclass(frozen=True)
class AddFunction(FunctionAction):
    """A new name."""


@dataclass(frozen=True)
class ReviseFunction(FunctionAction):
    """The same name, new code (a new version)."""


@dataclass(frozen=True)
class RemoveFunction:
    name: str
    reason: str = ""


@dataclass(frozen=True)
class Terminate:
    reason: str = ""


Action = AddFunction | ReviseFunction | RemoveFunction | Terminate


@dataclass(frozen=True)
class ActionReply:
    """The parsed actions plus what it took to get them."""

    actions: tuple[Action, ...]
    mode: Mode
    attempts: int
    errors: tuple[str, ...] = ()          # parse errors fed back on the way
    results: tuple[ChatResult, ...] = field(default=(), repr=False)


# ---- schemas ------------------------------------------------------------------------------------

_TEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "args": {"type": "object", "description": "keyword arguments, by parameter name"},
        # Not an object: under a grammar an unconstrained value drifts into {"value": 6}, and a
        # small model then describes the result instead of giving it (measured with the 1.5B).
        "expect": {"description": "exactly the value the function returns, e.g. 6 or [1, 2]",
                   "anyOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"},
                             {"type": "array"}, {"type": "null"}]},
        "expect_error": {"type": "string", "description": "an exception class name instead"},
    },
    "required": ["args"],
}

FUNCTION_PROPERTIES: dict[str, Any] = {
    "name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$",
             "description": "Python identifier; the def in code has it"},
    "description": {"type": "string", "maxLength": 400,
                    "description": "what the function does, one sentence"},
    "parameters": {"type": "object",
                   "description": "JSON schema (type object) of the keyword arguments",
                   "properties": {"type": {"const": "object"},
                                  "properties": {"type": "object"},
                                  "required": {"type": "array", "items": {"type": "string"}}},
                   "required": ["type", "properties", "required"]},
    "code": {"type": "string", "description": "Python source: def name(...): ..."},
    "packages": {"type": "array", "items": {"type": "string"},
                 "description": "extra packages the code imports (usually none)"},
    "tests": {"type": "array", "items": _TEST_SCHEMA,
              "description": "calls with their expected value or exception type name"},
}
_FUNCTION_REQUIRED = ["name", "description", "parameters", "code"]
MAX_EXAMPLES = 4
_EXAMPLES: dict[str, Any] = {
    "type": "array", "maxItems": MAX_EXAMPLES,
    "description": "calls that answer recorded conversations' problems: the conversation's "
                   "number and the arguments; the returned value must be that problem's answer",
    "items": {"type": "object",
              "properties": {"conversation": {"type": "integer", "minimum": 1},
                             "args": {"type": "object"}},
              "required": ["conversation", "args"]}}
_REASON = {"type": "string", "maxLength": 240, "description": "why this action helps"}
_IDENT = {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$"}


def function_schema() -> dict[str, Any]:
    """JSON schema of a function in an action (the sandbox FunctionSpec's JSON form)."""
    return {"type": "object", "properties": dict(FUNCTION_PROPERTIES),
            "required": list(_FUNCTION_REQUIRED)}


def tool_definitions(allowed: Sequence[str] = ACTION_NAMES) -> list[dict[str, Any]]:
    """OpenAI ``tools`` for the allowed actions (function fields flattened into the arguments)."""
    func_args = {"type": "object",
                 "properties": {**FUNCTION_PROPERTIES, "examples": _EXAMPLES, "reason": _REASON},
                 "required": [*_FUNCTION_REQUIRED, "examples", "reason"]}
    specs: dict[str, tuple[str, dict[str, Any]]] = {
        "add_function": ("Add a new function to the agent's library.", func_args),
        "revise_function": ("Replace an existing function (same name) with a better one.",
                            func_args),
        "remove_function": ("Remove a function from the agent's library.",
                            {"type": "object",
                             "properties": {"name": _IDENT, "reason": _REASON},
                             "required": ["name", "reason"]}),
        "terminate": ("Stop optimizing: the library is good enough.",
                      {"type": "object", "properties": {"reason": _REASON},
                       "required": ["reason"]}),
    }
    return [{"type": "function",
             "function": {"name": name, "description": specs[name][0],
                          "parameters": specs[name][1]}}
            for name in _check_allowed(allowed)]


def json_mode_schema(allowed: Sequence[str] = ACTION_NAMES) -> dict[str, Any]:
    """Schema for JSON mode: ``{"actions": [{"action": NAME, ...}, ...]}``.

    One variant per action (anyOf with a const name), so the grammar forces add/revise to carry
    a function and remove to carry a name; the action name comes first so the model commits early.
    """
    extras: dict[str, dict[str, Any]] = {
        "add_function": {"function": function_schema(), "examples": _EXAMPLES},
        "revise_function": {"function": function_schema(), "examples": _EXAMPLES},
        "remove_function": {"name": _IDENT},
        "terminate": {},
    }
    variants: list[dict[str, Any]] = [{"type": "object",
                 "properties": {"action": {"const": name}, **extras[name], "reason": _REASON},
                 "required": ["action", *extras[name], "reason"]}
                for name in _check_allowed(allowed)]
    items: dict[str, Any] = variants[0] if len(variants) == 1 else {"anyOf": variants}
    return {"type": "object",
            "properties": {"actions": {"type": "array", "items": items, "minItems": 1,
                                       "maxItems": 8}},
            "required": ["actions"]}


def response_format(allowed: Sequence[str] = ACTION_NAMES) -> dict[str, Any]:
    """llama.cpp server's JSON mode with a schema (OpenAI's json_schema form is not served)."""
    return {"type": "json_object", "schema": json_mode_schema(allowed)}


def _check_allowed(allowed: Sequence[str]) -> list[str]:
    names = [n for n in ACTION_NAMES if n in allowed]
    unknown = set(allowed) - set(ACTION_NAMES)
    if unknown or not names:
        raise ValueError(f"allowed actions must be among {', '.join(ACTION_NAMES)}, "
                         f"got {', '.join(map(str, allowed)) or 'none'}")
    return names


JSON_MODE_INSTRUCTIONS = (
    'Reply with one JSON object {"actions": [...]}. Each action is an object with "action" '
    '(one of add_function, revise_function, remove_function, terminate) and "reason"; '
    'add_function and revise_function also carry "function": {"name", "description", '
    '"parameters" (JSON schema of type object), "code" (a Python def with that name), '
    '"packages" (list), "tests" ([{"args": {...}, "expect": value}])} and "examples" '
    '([{"conversation": N, "args": {...}}]: calls that answer recorded problems); '
    'remove_function carries "name".'
)


# ---- parsing ------------------------------------------------------------------------------------

def parse_action(name: str, args: Any) -> Action:
    """One action from its name and arguments; ValueError says what is wrong."""
    if name not in ACTION_NAMES:
        raise ValueError(f"unknown action {name!r}; use one of {', '.join(ACTION_NAMES)}")
    if not isinstance(args, dict):
        raise ValueError(f"{name}: arguments must be a JSON object")
    reason = args.get("reason", "")
    if not isinstance(reason, str):
        raise ValueError(f"{name}: 'reason' must be a string")
    reason = reason[:MAX_REASON_CHARS]  # bounded before anything records it
    if name == "terminate":
        return Terminate(reason=reason)
    if name == "remove_function":
        target = args.get("name")
        if not isinstance(target, str) or not target.isidentifier() or len(target) > 64:
            raise ValueError("remove_function: 'name' must name the function to remove")
        return RemoveFunction(name=target, reason=reason)
    raw_fn = args.get("function")
    if raw_fn is None:  # tool-call form: the function's fields are the arguments themselves
        raw_fn = {k: v for k, v in args.items() if k not in ("reason", "action", "examples")}
    spec = _function(name, raw_fn)
    examples = _examples(name, args.get("examples", []))
    kind = AddFunction if name == "add_function" else ReviseFunction
    return kind(spec, reason, examples)


def _examples(action: str, raw: Any) -> tuple[WorkedExample, ...]:
    """Worked examples, bounded at parsing (the arguments are checked against the schema when
    the function is called)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError(f"{action}: 'examples' must be a list of {{\"conversation\": N, "
                         "\"args\": {...}}")
    out = []
    for i, item in enumerate(raw[:MAX_EXAMPLES]):
        number = item.get("conversation") if isinstance(item, dict) else None
        args = item.get("args") if isinstance(item, dict) else None
        if isinstance(number, bool) or not isinstance(number, int) or not isinstance(args, dict):
            raise ValueError(f"{action}: examples[{i}] must be {{\"conversation\": N, "
                             "\"args\": {...}}")
        out.append(WorkedExample(number, dict(args)))
    return tuple(out)


def _function(action: str, raw: Any) -> FunctionSpec:
    check_function_size(action, raw)
    params = raw.get("parameters") if isinstance(raw, dict) else None
    if (isinstance(params, dict) and params and "type" not in params
            and "properties" not in params and all(isinstance(v, dict) for v in params.values())):
        # A bare properties map (models often send one): FunctionSpec's "arguments" form.
        raw = {**{k: v for k, v in raw.items() if k != "parameters"}, "arguments": params}
    try:
        spec = FunctionSpec.from_dict(raw)
    except InvalidSpec as exc:
        raise ValueError(f"{action}: {exc}") from None
    if not spec.name.isidentifier():
        raise ValueError(f"{action}: function name {spec.name!r} is not a Python identifier")
    if spec.parameters.get("type", "object") != "object":
        raise ValueError(f"{action}: 'parameters' must be a JSON schema with type object")
    try:
        tree = ast.parse(spec.code)
    except SyntaxError as exc:
        raise ValueError(f"{action}: code of {spec.name!r} has a syntax error at line "
                         f"{exc.lineno}: {exc.msg}") from None
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    if spec.name not in defs:
        raise ValueError(f"{action}: code must define a top-level 'def {spec.name}(...)'")
    return _with_required(spec, defs[spec.name])


def _with_required(spec: FunctionSpec, fn: ast.FunctionDef) -> FunctionSpec:
    """A schema that gives no `required` at all gets the def's parameters without a default:
    models often leave it out, and what they mean is not in doubt. A `required` that is given
    is kept as written (vetting reports any mismatch)."""
    if "required" in spec.parameters:
        return spec
    args = fn.args.posonlyargs + fn.args.args
    no_default = [a.arg for a in args[:len(args) - len(fn.args.defaults)]]
    no_default += [a.arg for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults, strict=True)
                   if d is None]
    props = spec.parameters.get("properties", {})
    required = [name for name in no_default if name in props]
    if not required:
        return spec
    return FunctionSpec.from_dict({**spec.to_dict(),
                                   "parameters": {**spec.parameters, "required": required}})


def parse_json_reply(text: str | None) -> tuple[Action, ...]:
    """Actions from a JSON-mode reply (also accepts a single bare action object)."""
    if not text or not text.strip():
        raise ValueError("the reply was empty; send a JSON object with an 'actions' list")
    if len(text) > MAX_ARGUMENTS_CHARS * MAX_ACTIONS_PER_REPLY:
        raise ValueError(f"the reply is {len(text)} characters; the limit is "
                         f"{MAX_ARGUMENTS_CHARS * MAX_ACTIONS_PER_REPLY}")
    body = text.strip()
    if body.startswith("```"):  # models love fences even when told not to
        body = body.strip("`").removeprefix("json").strip()
    try:
        data = _shallow(json.loads(body))
    except json.JSONDecodeError as exc:
        raise ValueError(f"the reply is not valid JSON ({exc.msg} at line {exc.lineno} column "
                         f"{exc.colno})") from None
    except RecursionError:
        raise ValueError(f"the reply nests more than {MAX_REPLY_DEPTH} levels deep") from None
    if isinstance(data, dict) and "action" in data and "actions" not in data:
        data = {"actions": [data]}
    if not isinstance(data, dict) or not isinstance(data.get("actions"), list):
        raise ValueError("the reply must be a JSON object with an 'actions' list")
    if not data["actions"]:
        raise ValueError("the 'actions' list is empty; give at least one action "
                         "(terminate if nothing should change)")
    if len(data["actions"]) > MAX_ACTIONS_PER_REPLY:
        raise ValueError(f"the 'actions' list has {len(data['actions'])} items; give at most "
                         f"{MAX_ACTIONS_PER_REPLY} (one at a time is best)")
    actions = []
    for i, item in enumerate(data["actions"]):
        if not isinstance(item, dict) or not isinstance(item.get("action"), str):
            raise ValueError(f"actions[{i}] must be an object with an 'action' name")
        try:
            actions.append(parse_action(item["action"], item))
        except ValueError as exc:
            raise ValueError(f"actions[{i}]: {exc}") from None
    return tuple(actions)


MAX_REPLY_DEPTH = 32
"""How deeply a reply may nest (a function spec needs far less; a model stuck repeating `[[[`
must not reach Python's recursion limit anywhere on the host)."""


def _shallow(value: Any) -> Any:
    """`value` if it nests at most MAX_REPLY_DEPTH deep (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_REPLY_DEPTH:
            raise ValueError(f"the reply nests more than {MAX_REPLY_DEPTH} levels deep")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return value


def parse_tool_calls(result: ChatResult) -> tuple[Action, ...]:
    """Actions from a reply's tool calls."""
    if not result.tool_calls:
        raise ValueError("no tool was called; call one of add_function, revise_function, "
                         "remove_function or terminate")
    check_reply_size(result)
    actions = []
    for call in result.tool_calls:
        try:
            args = _shallow(json.loads(call.arguments or "{}"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{call.name}: arguments are not valid JSON ({exc.msg} at column "
                             f"{exc.colno})") from None
        except RecursionError:
            raise ValueError(f"{call.name}: arguments nest more than {MAX_REPLY_DEPTH} levels "
                             "deep") from None
        actions.append(parse_action(call.name, args))
    return tuple(actions)


# ---- the request loop ---------------------------------------------------------------------------

def choose_mode(client: LLMClient) -> Mode:
    """Tools where the endpoint takes them; JSON mode for the local server or when told to."""
    setting = client.config.structured
    if setting == "json" or client.tools_unsupported:
        return "json"
    if setting == "tools":
        return "tools"
    return "json" if client.config.provider == "local" else "tools"


Exchange = Callable[[list[dict[str, Any]], ChatResult | None, str | None], None]
"""on_exchange(request as sent, its result or None, the parse or request error or None)."""


def request_actions(client: LLMClient, messages: Sequence[Mapping[str, Any]], *,
                    role: str = "optimizer", mode: Mode | None = None, max_attempts: int = 3,
                    temperature: float | None = None, max_tokens: int | None = None,
                    seed: int | None = None,
                    allowed: Sequence[str] = ACTION_NAMES,
                    max_prompt_tokens: int | None = None,
                    on_exchange: Exchange | None = None) -> ActionReply:
    """Ask ``role`` for actions; retry malformed output with the error fed back.

    ``allowed`` narrows the actions offered (e.g. no remove/revise while the library is empty).
    Every request is cut to ``max_prompt_tokens`` as a whole (optimizer/channel.py), and
    ``on_exchange`` sees each one as sent with its outcome, parseable or not.
    """
    def send(request: list[dict[str, Any]], **options: Any) -> ChatResult:
        sent = fit_request(request, max_prompt_tokens) if max_prompt_tokens else request
        try:
            result = client.chat(role, sent, **options)
        except LLMError as exc:
            if on_exchange is not None:
                on_exchange(sent, None, clip_error(exc))
            raise
        exchanges.append(sent)
        return result

    exchanges: list[list[dict[str, Any]]] = []
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    allowed = _check_allowed(allowed)
    chosen: Mode = mode or choose_mode(client)
    history = [dict(m) for m in messages]
    errors: list[str] = []
    results: list[ChatResult] = []
    raw = ""
    for attempt in range(1, max_attempts + 1):
        if chosen == "tools":
            try:
                result = send(history, tools=tool_definitions(allowed),
                              tool_choice=_tool_choice(client, allowed),
                              temperature=temperature, max_tokens=max_tokens, seed=seed)
            except LLMRequestError as exc:
                if mode == "tools" or not _tools_refused(exc):
                    raise
                client.tools_unsupported = True  # remember: later calls go straight to JSON
                chosen = "json"
                continue
        else:
            result = send(_with_json_instructions(history),
                          response_format=response_format(allowed),
                          temperature=temperature, max_tokens=max_tokens, seed=seed)
        results.append(result)
        raw = result.text or json.dumps([c.arguments for c in result.tool_calls])
        try:
            actions = (parse_tool_calls(result) if chosen == "tools"
                       else parse_json_reply(result.text))
            refused = [type(a).__name__ for a in actions if action_name(a) not in allowed]
            if refused:
                raise ValueError(f"only {', '.join(allowed)} may be used here, "
                                 f"not {', '.join(refused)}")
        except ValueError as exc:
            if isinstance(exc, OptimizerError):  # fnforge's own fault, not the model's reply
                raise
            errors.append(clip_error(exc))
            if on_exchange is not None:
                on_exchange(exchanges[-1], result, errors[-1])
            fix = f"Your reply could not be used: {errors[-1]}. Reply again, correctly."
            history.extend(answered(result, chosen == "tools", [], fix))
            continue
        if on_exchange is not None:
            on_exchange(exchanges[-1], result, None)
        return ActionReply(actions=actions, mode=chosen, attempts=attempt,
                           errors=tuple(errors), results=tuple(results))
    raise ActionParseError(
        f"the {role} model gave no usable actions in {max_attempts} attempt(s) ({chosen} mode); "
        f"last problem: {errors[-1] if errors else 'none'}. A stronger model, or JSON mode "
        "(llm.structured = \"json\"), usually fixes this.", errors, raw)


def _tool_choice(client: LLMClient, allowed: Sequence[str]) -> Any:
    """Force a tool call: by name when only one is allowed (every server takes that form);
    "required" otherwise, except on the embedded server, whose handler (llm/serve.py) holds
    only a call forced by name to a grammar: "auto" says what it does there."""
    if len(allowed) == 1:
        return {"type": "function", "function": {"name": allowed[0]}}
    return "auto" if client.config.provider == "local" else "required"


def action_name(action: Action) -> str:
    """The wire name of an action (add_function, ...)."""
    return {AddFunction: "add_function", ReviseFunction: "revise_function",
            RemoveFunction: "remove_function", Terminate: "terminate"}[type(action)]


def _tools_refused(exc: LLMRequestError) -> bool:
    text = str(exc).lower()
    return exc.status in (400, 422, 501) and ("tool" in text or "function" in text)


def _with_json_instructions(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Append the JSON instructions to the system message (stable prefix stays first)."""
    out = [dict(m) for m in history]
    if out and out[0].get("role") == "system":
        content = str(out[0].get("content") or "")
        if JSON_MODE_INSTRUCTIONS not in content:
            out[0]["content"] = f"{content}\n\n{JSON_MODE_INSTRUCTIONS}".strip()
    else:
        out.insert(0, {"role": "system", "content": JSON_MODE_INSTRUCTIONS})
    return out

