"""Errors raised to callers of the sandbox.

Every error says what went wrong and what to do about it; the CLI prints the message and exits 2.
User code that fails inside a container is never an exception here: it is a result with ok=False.
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base class: an infrastructure or usage problem, never a failure of user code."""


class EngineUnavailable(SandboxError):
    """The Docker engine does not answer."""


class ImageMissing(SandboxError):
    """The sandbox image has not been built on this engine."""


class InvalidSpec(SandboxError):
    """A FunctionSpec is malformed."""


class InvalidArguments(SandboxError):
    """Arguments do not match a function's parameters, or cannot be sent as JSON."""


class SelftestFailed(SandboxError):
    """A confinement probe succeeded: the sandbox refuses to run code."""

    def __init__(self, failed: list[str]) -> None:
        self.failed = failed
        super().__init__(
            "sandbox self-test failed, refusing to run code; not confined: " + ", ".join(failed)
        )


class SandboxBroken(SandboxError):
    """A container could not be started or replaced."""
