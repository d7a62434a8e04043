"""How a FunctionLibrary is advertised to an LLM: OpenAI tools, and AutoGen's update list.

Upstream AgentOptimizer never propagates removals (it diffs dict keys, not names), so removed and
rolled-back functions stay advertised. Here a registrar remembers what it advertised last time,
and the next registration says `is_remove` for every name that is gone, exactly once, in the form
AutoGen's `update_function_signature(func_sig, is_remove)` compares against: the name itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sandbox import FunctionLibrary

__all__ = ["LLMRegistrar", "LLMRegistration", "tools_for"]


@dataclass(frozen=True)
class LLMRegistration:
    tools: list[dict[str, Any]]  # OpenAI tools list: the current functions
    autogen: list[dict[str, Any]]  # [{"func_sig": sig | name, "is_remove": bool}]


def tools_for(library: FunctionLibrary) -> list[dict[str, Any]]:
    """The OpenAI `tools` list of a library's current functions."""
    return [{"type": "function", "function": sig} for sig in library.signatures()]


@dataclass
class LLMRegistrar:
    """What was advertised to one assistant; `register` returns what changed since."""

    advertised: set[str] = field(default_factory=set)

    def register(self, library: FunctionLibrary) -> LLMRegistration:
        sigs = library.signatures()
        current = {s["name"] for s in sigs}
        removed = sorted(self.advertised - current)
        self.advertised = current
        autogen: list[dict[str, Any]] = [{"func_sig": sig, "is_remove": False} for sig in sigs]
        autogen += [{"func_sig": name, "is_remove": True} for name in removed]
        return LLMRegistration(tools=[{"type": "function", "function": s} for s in sigs],
                               autogen=autogen)

    def to_dict(self) -> dict[str, Any]:
        return {"advertised": sorted(self.advertised)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LLMRegistrar:
        names: Iterable[Any] = data.get("advertised", [])
        return cls(advertised={str(n) for n in names})
