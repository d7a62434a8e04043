"""fnforge's sandbox: untrusted Python runs only in hardened, pooled Docker containers.

Public API: Sandbox, FunctionSpec, CallResult, RunResult, Limits and the errors. Vetting
(vet, VetReport) and FunctionLibrary are imported lazily so the runtime stays importable alone.
"""

from __future__ import annotations

from typing import Any

from .errors import (
    EngineUnavailable,
    ImageMissing,
    InvalidArguments,
    InvalidSpec,
    SandboxBroken,
    SandboxError,
    SelftestFailed,
)
from .limits import DEFAULT_LIMITS, Limits
from .results import CallResult, ErrorInfo, RunResult
from .runtime import Sandbox
from .spec import FunctionSpec, FunctionTest

__all__ = [
    "DEFAULT_LIMITS",
    "CallResult",
    "EngineUnavailable",
    "ErrorInfo",
    "Finding",
    "FunctionLibrary",
    "FunctionSpec",
    "FunctionTest",
    "ImageMissing",
    "InvalidArguments",
    "InvalidSpec",
    "Limits",
    "RunResult",
    "Sandbox",
    "SandboxBroken",
    "SandboxError",
    "SelftestFailed",
    "StageResult",
    "VetReport",
    "vet",
]

_LAZY = {"vet": "vet", "VetReport": "vet", "StageResult": "vet", "Finding": "vet",
         "FunctionLibrary": "library"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
