"""Every exception a caller of `optimizer` may catch, in one tree.

    OptimizerError                  base: a problem to report, with what to do about it
    ├── OptimizerStateError         not possible now (step() with nothing recorded), or a saved
    │                               state that cannot be restored
    ├── ConfigError                 a config file, a config dict or the environment is unusable
    ├── LocalModelError             the embedded model cannot be prepared or served
    ├── DatasetError                a dataset file is missing or malformed, or a split is impossible
    ├── GraderError                 the grading workers failed (cannot start, or closed)
    ├── HistoryError                a run's history cannot be opened, written or read as asked
    │   ├── HistoryBroken           the history failed verification (`.report` says where)
    │   ├── UnknownVersion          NAME@VERSION names no function version of the run
    │   └── LockError               a lock file is unusable, or a library does not match it
    └── LLMError                    a model call failed
        ├── KeyRejected             HTTP 401/403: the key is wrong or not allowed
        ├── ModelNotFound           the endpoint does not serve the model (or deployment)
        ├── ContextTooLong          the prompt does not fit the model's context
        ├── EndpointUnavailable     429/5xx/timeouts/connection errors until retries ran out
        ├── LLMRequestError         any other refusal (HTTP 4xx); `.status`
        ├── CacheMiss               replay mode found no recorded response
        └── ActionParseError        the optimizer model gave no usable action; `.errors`, `.raw`

Sandbox errors (`sandbox.SandboxError` and its subclasses) are not wrapped: they say what is
wrong with the engine, the image or a function, and pass through unchanged.

Bad data is always one of the classes above: a reference without an answer, a malformed dataset
file and an impossible split raise DatasetError (also a ValueError). A bare ValueError
or TypeError means the caller's own programming error: an argument outside its documented range
(`Grader(workers=0)`, a split other than "train" or "test", settings out of range).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .history.verify import VerifyReport

__all__ = [
    "ActionParseError",
    "CacheMiss",
    "ConfigError",
    "ContextTooLong",
    "DatasetError",
    "EndpointUnavailable",
    "GraderError",
    "HistoryBroken",
    "HistoryError",
    "KeyRejected",
    "LLMError",
    "LLMRequestError",
    "LocalModelError",
    "LockError",
    "ModelNotFound",
    "OptimizerError",
    "OptimizerStateError",
    "UnknownVersion",
]


class OptimizerError(Exception):
    """Base class of every error raised by `optimizer`."""


class OptimizerStateError(OptimizerError):
    """The optimizer cannot do what was asked in its current state, or a saved state cannot be
    restored."""


class ConfigError(OptimizerError):
    """The configuration is unusable; the message says where and what to change."""


class LocalModelError(OptimizerError):
    """The local model cannot be prepared or served; the message says what to run."""


class DatasetError(OptimizerError, ValueError):
    """A dataset file is missing or malformed, or a split cannot be drawn."""


class GraderError(OptimizerError):
    """The grading infrastructure failed (a worker cannot start, or the grader is closed)."""


class HistoryError(OptimizerError):
    """The history cannot be opened, written or read; the message says what to do."""


class HistoryBroken(HistoryError):
    """Verification failed: the record is not what was written (or is damaged)."""

    def __init__(self, message: str, report: VerifyReport) -> None:
        super().__init__(message)
        self.report = report


class UnknownVersion(HistoryError):
    """NAME@VERSION is malformed or names no version proposed in this run."""


class LockError(HistoryError):
    """A lock file is malformed, or a function does not match what the lock approved."""


class LLMError(OptimizerError):
    """A model call failed in a way the caller should report, with what to do about it."""


class KeyRejected(LLMError):
    """The endpoint refused the API key (HTTP 401/403)."""


class ModelNotFound(LLMError):
    """The endpoint does not serve the configured model or deployment."""


class ContextTooLong(LLMError):
    """The prompt does not fit the model's context window."""


class EndpointUnavailable(LLMError):
    """The endpoint kept failing (429, 5xx, connection errors) until the retries ran out."""


class LLMRequestError(LLMError):
    """Any other refusal by the endpoint (HTTP 4xx)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CacheMiss(LLMError):
    """Replay mode found no recorded response for a request."""


class ActionParseError(LLMError):
    """The model's output still did not parse after the allowed number of attempts."""

    def __init__(self, message: str, errors: Sequence[str], raw: str) -> None:
        super().__init__(message)
        self.errors = tuple(errors)
        self.raw = raw
