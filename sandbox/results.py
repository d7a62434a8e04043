"""What comes back from the sandbox: plain data, JSON-ready for the CLI and the history.

Every field is either measured outside the call's own process (by the runner or the host:
`error.kind` other than EXCEPTION, `timed_out`, `oom_killed`, `duration_ms`, truncation, a
code block's `exit_code`) or reported by that process (`value`, an exception's type, message
and traceback, `audit`). Reported fields are validated and bounded, never trusted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .runner.protocol import ErrorKind

__all__ = ["AuditEvent", "CallResult", "ErrorInfo", "ErrorKind", "RunResult"]


@dataclass(frozen=True)
class ErrorInfo:
    kind: ErrorKind
    type: str  # the exception's class name (kind EXCEPTION), else a name for the condition
    message: str
    traceback: str = ""
    container_end: str = ""
    """How the call's container ended when the call was lost with it, as the host saw it:
    "engine" (killed by the engine or lost with it: not the code's doing), "oom" or "runner"
    (the runner exited or broke the protocol); "" when the container outlived the call."""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "type": self.type, "message": self.message,
                "traceback": self.traceback, "container_end": self.container_end}

    @property
    def lost_to_engine(self) -> bool:
        """The call was lost with its container through no fault of its own: run it again."""
        return self.container_end == "engine"


@dataclass(frozen=True)
class AuditEvent:
    """A forbidden event the call's own process reported through its audit hook: evidence, not a
    guarantee (code that escapes the Python layer can silence or forge its own reports)."""

    event: str
    detail: str
    reported_by: str = "child"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CallResult:
    """One function call. ok=False covers both an exception in user code and a killed call."""

    ok: bool
    value: Any = None  # JSON; sympy and other objects are converted (README, "Return values")
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    error: ErrorInfo | None = None
    timed_out: bool = False
    oom_killed: bool = False
    duration_ms: float = 0.0
    image_id: str = ""
    audit: list[AuditEvent] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["error"] = self.error.to_dict() if self.error else None
        out["audit"] = [e.to_dict() for e in self.audit]
        return out


@dataclass(frozen=True)
class RunResult(CallResult):
    """One code block, run the way an agent's executor runs it. `exit_code` is the process's
    own exit status as the runner measured it (negative: killed by that signal); `calls`, the
    library functions the block called."""

    exit_code: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    """How often the block called each library function it was given (the block's own
    process counts them: like `value`, a claim of the code's, checked only for its shape)."""
