"""fnforge's sandbox: untrusted Python runs only in hardened, pooled Docker containers.

    Sandbox          the pool of containers: call(), run(), vet(), selftest()
    FunctionSpec     a generated function as data (name, description, parameters, code, tests)
    CallResult, RunResult, ErrorInfo, ErrorKind, AuditEvent
                     what comes back: a value or an error whose kind says who measured it
    vet, VetReport, StageResult, Finding, VerdictCache
                     the six vetting stages and their verdicts
    FunctionLibrary  the versioned set of vetted functions an agent may call
    Limits           every resource limit, as data
    the errors       (sandbox/errors.py draws the tree)

The trust model (README, "Trust model"): the container, the kernel filter and a fresh process per
call are the boundary; the static gate, RestrictedPython and the audit hook are a cheap first
filter and evidence for reviewers.
"""

from __future__ import annotations

from .errors import (
    AlreadyInLibrary,
    EngineUnavailable,
    FunctionCallError,
    ImageMissing,
    InvalidArguments,
    InvalidSpec,
    LibraryError,
    NotInLibrary,
    NotVetted,
    SandboxBroken,
    SandboxError,
    SelftestFailed,
)
from .library import FunctionLibrary, LibraryVersion
from .limits import DEFAULT_LIMITS, Limits
from .paths import cache_dir
from .results import AuditEvent, CallResult, ErrorInfo, ErrorKind, RunResult
from .runtime import Sandbox
from .spec import FunctionSpec, FunctionTest
from .vetting import Finding, StageResult, VerdictCache, VetReport, vet

__all__ = [
    "DEFAULT_LIMITS",
    "AlreadyInLibrary",
    "AuditEvent",
    "CallResult",
    "EngineUnavailable",
    "ErrorInfo",
    "ErrorKind",
    "Finding",
    "FunctionCallError",
    "FunctionLibrary",
    "FunctionSpec",
    "FunctionTest",
    "ImageMissing",
    "InvalidArguments",
    "InvalidSpec",
    "LibraryError",
    "LibraryVersion",
    "Limits",
    "NotInLibrary",
    "NotVetted",
    "RunResult",
    "Sandbox",
    "SandboxBroken",
    "SandboxError",
    "SelftestFailed",
    "StageResult",
    "VerdictCache",
    "VetReport",
    "cache_dir",
    "vet",
]
