"""How a function library reaches an agent: the one place a function becomes callable.

`register_for_episode` is the single path from a library to an episode. At the start of every
episode it re-checks each function against the sandbox that will run it (the current image and
policy; a cached verdict costs nothing) and returns what that episode may use: the executor's
functions, how the assistant is shown them, and what was left out and why. Training, evaluation
and every backend go through it; nothing else decides what an episode can call.

How the assistant is shown its library was measured with the embedded 1.5B model
(README, "Learning"): functions listed in the system prompt or offered as `tools` made it stop
writing code and call nothing; the same functions as Python signatures with a usage example, in
the USER turn, "already defined, call them in your code", is what it follows. So that is the
default ("code"); "tools" adds the OpenAI tools list for endpoints that call tools well.

For AutoGen users, `LLMRegistrar` keeps upstream's update list: what changed since the last
registration, removals included (upstream diffs dict keys, not names, so removed and rolled-back
functions stay advertised there).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sandbox import FunctionLibrary, FunctionSpec, VetReport

from .quoting import quote_untrusted

__all__ = ["EpisodeRegistration", "LLMRegistrar", "LLMRegistration", "LibraryPresentation",
           "register_for_episode", "signature", "tools_for", "usage_example"]

LibraryPresentation = Literal["code", "tools"]
_DESCRIPTION_CHARS = 160  # one line of the library block
_EXAMPLE_CHARS = 120


class Vetter(Protocol):
    def vet(self, spec: FunctionSpec) -> VetReport: ...


@dataclass(frozen=True)
class EpisodeRegistration:
    """What one episode may use, decided at its start."""

    functions: tuple[FunctionSpec, ...] = ()
    left_out: tuple[dict[str, Any], ...] = ()  # {"name", "code_hash", "why": [...]}
    presentation: LibraryPresentation = "code"

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.functions]

    def tools(self) -> list[dict[str, Any]] | None:
        """The OpenAI tools list, when the functions are offered as tools."""
        if self.presentation != "tools" or not self.functions:
            return None
        return [_tool(s) for s in self.functions]

    def prompt_block(self) -> str:
        """The library as the assistant reads it, first in its user turn (a stable prefix)."""
        if not self.functions:
            return ""
        lines = ["These Python functions are already defined, tested and correct. Call them "
                 "in your ```python``` code instead of computing by hand; do not define them "
                 "again:", "```python"]
        for spec in self.functions:
            lines.append(f"{signature(spec)}  # {_one_line(spec.description, _DESCRIPTION_CHARS)}")
            example = usage_example(spec)
            if example:
                lines.append(f"#   e.g. {_one_line(example, _EXAMPLE_CHARS)}")
        lines.append("```")
        return "\n".join(lines)


def register_for_episode(functions: Iterable[FunctionSpec], sandbox: Vetter,
                         presentation: LibraryPresentation = "code") -> EpisodeRegistration:
    """Re-check every function against `sandbox` now; keep those that pass, say why of the rest."""
    kept, left_out = [], []
    for spec in sorted(functions, key=lambda s: s.name):
        report = sandbox.vet(spec)
        if report.passed:
            kept.append(spec)
        else:
            left_out.append({"name": spec.name, "code_hash": spec.code_hash,
                             "why": [f.message[:300] for f in report.errors][:5]})
    return EpisodeRegistration(tuple(kept), tuple(left_out), presentation)


def signature(spec: FunctionSpec) -> str:
    """`name(a, b=10)` from the spec's schema (defaults as the schema gives them)."""
    props = spec.parameters.get("properties", {})
    required = set(spec.parameters.get("required", []))
    params = []
    for name, schema in props.items():
        if name in required or not isinstance(schema, dict) or "default" not in schema:
            params.append(name)
        else:
            params.append(f"{name}={json.dumps(schema['default'])}")
    return f"{spec.name}({', '.join(params)})"


def usage_example(spec: FunctionSpec) -> str:
    """One call with its result, from the spec's first test that expects a value: the form of
    the arguments is what small models get wrong, and a worked call shows it."""
    test = next((t for t in spec.tests if t.has_expect), None)
    if test is None:
        return ""
    args = ", ".join(f"{k}={_py(v)}" for k, v in test.args.items())
    text = f"{spec.name}({args}) returns {_py(test.expect)}"
    return text if len(text) <= _EXAMPLE_CHARS else ""


def _py(value: Any) -> str:
    """A JSON value as Python source (True/None, not true/null)."""
    return repr(value) if isinstance(value, bool | None | str) else json.dumps(value)


def _one_line(text: str, limit: int) -> str:
    """Untrusted text as one quoted line that cannot close the code block it sits in."""
    return quote_untrusted(" ".join(text.replace("`", "'").split()), limit)


def _tool(spec: FunctionSpec) -> dict[str, Any]:
    return {"type": "function", "function": {"name": spec.name, "description": spec.description,
                                             "parameters": spec.parameters}}


def tools_for(library: FunctionLibrary) -> list[dict[str, Any]]:
    """The OpenAI `tools` list of a library's current functions."""
    return [_tool(s) for s in library.specs()]


@dataclass(frozen=True)
class LLMRegistration:
    tools: list[dict[str, Any]]  # OpenAI tools list: the current functions
    autogen: list[dict[str, Any]]  # [{"func_sig": sig | name, "is_remove": bool}]


@dataclass
class LLMRegistrar:
    """What was advertised to one assistant; `register` returns what changed since."""

    advertised: set[str] = field(default_factory=set)

    def register(self, library: FunctionLibrary) -> LLMRegistration:
        tools = tools_for(library)
        current = {t["function"]["name"] for t in tools}
        removed = sorted(self.advertised - current)
        self.advertised = current
        autogen: list[dict[str, Any]] = [{"func_sig": t["function"], "is_remove": False}
                                         for t in tools]
        autogen += [{"func_sig": name, "is_remove": True} for name in removed]
        return LLMRegistration(tools=tools, autogen=autogen)

    def to_dict(self) -> dict[str, Any]:
        return {"advertised": sorted(self.advertised)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LLMRegistrar:
        names: Sequence[Any] = data.get("advertised", [])
        return cls(advertised={str(n) for n in names})
