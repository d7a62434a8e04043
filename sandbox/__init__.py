"""fnforge's sandbox: untrusted Python runs only in hardened, pooled Docker containers.

    Sandbox          the pool of containers: call(), run(), vet(), selftest()
    FunctionSpec     a generated function as data (name, description, parameters, code, tests)
    CallResult, RunResult, ErrorInfo, ErrorKind, AuditEvent
                     what comes back: a value or an error whose kind says who measured it
    vet, VetReport, StageResult, Finding, VerdictCache
                     the six vetting stages and their verdicts
    FunctionLibrary  the versioned set of vetted functions an agent may call
    Limits           every resource limit, as data
    the errors       (sandbox/errors.py draws the tree; the engine's own never leave the package)

What the optimizer (and any other host program) shares with the sandbox, so it never reaches
into a module of it:
    EXIT_OK, EXIT_REJECTED, EXIT_BAD_INPUT, EXIT_BUG, report_bug
                     the exit status every fnforge command uses, and how a bug is reported
    terminal_safe, markup_safe, template_safe, container_text
                     text a host may show, paste into a prompt, or take from a container
    write_text_atomic, write_json_atomic, append_line
                     state files that survive a crash (sandbox/files.py)
    read_json_file, JsonLimits
                     a JSON file read as hostile: bounded, strict, one clear error
    allowed_modules, policy_hash
                     what generated code may import, and the hash of every vetting rule
    build_image, image_tag
                     the sandbox image: build it, or name the one these sources make
    cache_dir, pid_alive
                     where fnforge keeps what it builds; whether a host process lives

The trust model (README, "Trust model"): the container, the kernel filter and a fresh process per
call are the boundary; the static gate, RestrictedPython and the audit hook are a cheap first
filter and evidence for reviewers.
"""

from __future__ import annotations

from .container import pid_alive
from .errors import (
    AlreadyInLibrary,
    EngineError,
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
from .exits import EXIT_BAD_INPUT, EXIT_BUG, EXIT_OK, EXIT_REJECTED, report_bug
from .files import append_line, write_json_atomic, write_text_atomic
from .image import build_image, image_tag
from .library import FunctionLibrary, LibraryVersion
from .limits import DEFAULT_LIMITS, Limits
from .paths import cache_dir
from .policy import allowed_modules, policy_hash
from .results import AuditEvent, CallResult, ErrorInfo, ErrorKind, RunResult
from .runtime import Sandbox
from .schema import JsonLimits, read_json_file
from .spec import FunctionSpec, FunctionTest
from .text import container_text, markup_safe, template_safe, terminal_safe
from .vetting import Finding, StageResult, VerdictCache, VetReport, vet

__all__ = [
    "DEFAULT_LIMITS",
    "EXIT_BAD_INPUT",
    "EXIT_BUG",
    "EXIT_OK",
    "EXIT_REJECTED",
    "AlreadyInLibrary",
    "AuditEvent",
    "CallResult",
    "EngineError",
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
    "JsonLimits",
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
    "allowed_modules",
    "append_line",
    "build_image",
    "cache_dir",
    "container_text",
    "image_tag",
    "markup_safe",
    "pid_alive",
    "policy_hash",
    "read_json_file",
    "report_bug",
    "template_safe",
    "terminal_safe",
    "vet",
    "write_json_atomic",
    "write_text_atomic",
]
