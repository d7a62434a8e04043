"""What comes back from the sandbox: plain data, JSON-ready for the CLI and the history."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ErrorInfo:
    type: str  # exception class name, or a sandbox condition: Timeout, MemoryLimit, ...
    message: str
    traceback: str = ""


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
    audit: list[dict[str, Any]] = field(default_factory=list)  # forbidden events, for reviewers

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunResult(CallResult):
    """One code block, run the way an agent's executor runs it."""

    exit_code: int = 0
