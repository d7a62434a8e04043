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
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from sandbox import FunctionLibrary, FunctionSpec, VetReport, template_safe

from .quoting import quote_untrusted

__all__ = ["LIBRARY_HEADER", "EpisodeRegistration", "LLMRegistrar", "LLMRegistration",
           "LibraryPresentation", "register_for_episode", "relevant", "signature", "tools_for",
           "usage_example"]

LibraryPresentation = Literal["code", "tools"]
LIBRARY_HEADER = ("These Python functions are already defined, tested and correct. Call them "
                  "in your ```python``` code instead of computing by hand; do not define them "
                  "again:")
_DESCRIPTION_CHARS = 160  # one line of the library block
_EXAMPLE_CHARS = 140
_DEFAULT_CHARS = 40
_SIGNATURE_CHARS = 200


class Vetter(Protocol):
    def vet(self, spec: FunctionSpec) -> VetReport: ...


@dataclass(frozen=True)
class EpisodeRegistration:
    """What one episode may use, decided at its start."""

    functions: tuple[FunctionSpec, ...] = ()
    left_out: tuple[dict[str, Any], ...] = ()  # {"name", "code_hash", "why": [...]}
    presentation: LibraryPresentation = "code"
    shown: tuple[FunctionSpec, ...] | None = None  # what the assistant reads (all: None)

    @property
    def offered(self) -> tuple[FunctionSpec, ...]:
        """The functions the assistant is told of (all are callable either way)."""
        return self.functions if self.shown is None else self.shown

    def for_task(self, task: str, limit: int | None) -> EpisodeRegistration:
        """Only the `limit` functions most relevant to `task` shown (`relevant`); None: all."""
        if limit is None or len(self.functions) <= limit:
            return self
        return replace(self, shown=relevant(self.functions, task, limit))

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.functions]

    def tools(self) -> list[dict[str, Any]] | None:
        """The OpenAI tools list, when the functions are offered as tools."""
        if self.presentation != "tools" or not self.offered:
            return None
        return [_tool(s) for s in self.offered]

    def prompt_block(self) -> str:
        """The library as the assistant reads it, first in its user turn (a stable prefix)."""
        if not self.offered:
            return ""
        lines = [LIBRARY_HEADER, "```python"]
        for spec in self.offered:
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


_WORD = re.compile(r"[a-z]+")
_STOP_WORDS = frozenset(_WORD.findall(  # function words, and the words every math problem uses
    "an and are as at be by each every for from given how if in is it its many much of on or "
    "that the their them then there these this to what when where which with "
    "integer integers number numbers positive negative real whole value values find compute"))


def _terms(text: str) -> set[str]:
    """Lower-case words of a text, a plural's final s dropped, names split at underscores."""
    words = _WORD.findall(text.lower().replace("_", " "))
    return {w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
            for w in words if w not in _STOP_WORDS and len(w) > 1}


def relevant(functions: Sequence[FunctionSpec], task: str, limit: int) -> tuple[FunctionSpec, ...]:
    """The `limit` functions whose name and description share the most rare words with the
    task (idf-weighted overlap; ties keep library order). A function sharing no word with the
    task is not shown: a small model offered functions that do not apply composes them wrongly
    (README, "Learning")."""
    vocab = [_terms(f"{s.name} {s.description}") for s in functions]
    words = _terms(task)
    df: dict[str, int] = {}
    for terms in vocab:
        for w in terms:
            df[w] = df.get(w, 0) + 1
    n = len(functions)
    scores = [sum(math.log(1 + n / df[w]) for w in terms & words) for terms in vocab]
    ranked = sorted((i for i in range(n) if scores[i] > 0), key=lambda i: (-scores[i], i))
    return tuple(functions[i] for i in sorted(ranked[:limit]))


def signature(spec: FunctionSpec) -> str:
    """`name(a, b=10)` from the spec's schema (defaults as the schema gives them, quoted and
    short: a default is untrusted text too; a long one shows as `...`)."""
    props = spec.parameters.get("properties", {})
    required = set(spec.parameters.get("required", []))
    params = []
    for name, schema in props.items():
        if name in required or not isinstance(schema, dict) or "default" not in schema:
            params.append(name)
            continue
        default = _py(schema["default"])
        params.append(f"{name}={_one_line(default, _DEFAULT_CHARS)}"
                      if len(default) <= _DEFAULT_CHARS else f"{name}=...")
    return _one_line(f"{spec.name}({', '.join(params)})", _SIGNATURE_CHARS)


def usage_example(spec: FunctionSpec) -> str:
    """One call with its result, from the spec's first test that expects a value: the form of
    the arguments is what small models get wrong, and a worked call shows it. Printed: shown
    `f(x) returns 5`, the model wrote bare calls whose values nobody saw."""
    test = next((t for t in spec.tests if t.has_expect), None)
    if test is None:
        return ""
    args = ", ".join(f"{k}={_py(v)}" for k, v in test.args.items())
    text = f"print({spec.name}({args})) prints {_py(test.expect)}"
    return text if len(text) <= _EXAMPLE_CHARS else ""


def _py(value: Any) -> str:
    """A JSON value as Python source (True/None, not true/null)."""
    return repr(value) if isinstance(value, bool | None | str) else json.dumps(value)


def _one_line(text: str, limit: int) -> str:
    """Untrusted text as one quoted line that cannot close the code block it sits in."""
    return quote_untrusted(" ".join(text.replace("`", "'").split()), limit)


def _tool(spec: FunctionSpec) -> dict[str, Any]:
    """The OpenAI tool of a spec, every string in it broken up where it could open a
    chat-template token (the server pastes tools into the prompt)."""
    return {"type": "function", "function": _template_safe({
        "name": spec.name, "description": spec.description, "parameters": spec.parameters})}


def _template_safe(value: Any) -> Any:
    if isinstance(value, str):
        return template_safe(value)
    if isinstance(value, list):
        return [_template_safe(v) for v in value]
    if isinstance(value, dict):
        return {template_safe(k): _template_safe(v) for k, v in value.items()}
    return value


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
