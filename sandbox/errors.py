"""Every exception a caller of `sandbox` may catch, in one tree.

    SandboxError                 base: an infrastructure or usage problem, with what to do about it
    ├── EngineUnavailable        the Docker engine does not answer
    ├── ImageMissing             the sandbox image is not built on this engine
    ├── SandboxBroken            a container could not be started, or its runner broke
    ├── SelftestFailed           a confinement probe succeeded: no code will run (`.failed`)
    ├── InvalidSpec              a FunctionSpec (or its JSON) is malformed or hostile
    ├── InvalidArguments         arguments do not match a function's parameters
    ├── LibraryError             the FunctionLibrary refused an operation
    │   ├── NotVetted            no passing vet report for exactly that spec
    │   ├── NotInLibrary         no function of that name (or no such version)
    │   └── AlreadyInLibrary     add() of a name that exists: use revise()
    └── FunctionCallError        a library function failed in the sandbox (`.kind`, `.error_type`)

User code that fails inside a container is never an exception of `Sandbox.call` or `Sandbox.run`:
it is a result with ok=False. Only the executor callables of a FunctionLibrary raise
FunctionCallError, because an agent framework expects a failing tool to raise.
"""

from __future__ import annotations

__all__ = [
    "AlreadyInLibrary",
    "EngineUnavailable",
    "FunctionCallError",
    "ImageMissing",
    "InvalidArguments",
    "InvalidSpec",
    "LibraryError",
    "NotInLibrary",
    "NotVetted",
    "SandboxBroken",
    "SandboxError",
    "SelftestFailed",
]


class SandboxError(Exception):
    """Base class: an infrastructure or usage problem, never a failure of user code."""


class EngineUnavailable(SandboxError):
    """The Docker engine does not answer."""


class ImageMissing(SandboxError):
    """The sandbox image has not been built on this engine."""


class SandboxBroken(SandboxError):
    """A container could not be started or replaced, or its runner broke the protocol."""


class SelftestFailed(SandboxError):
    """A confinement probe succeeded: the sandbox refuses to run code."""

    def __init__(self, failed: list[str]) -> None:
        self.failed = failed
        super().__init__(
            "sandbox self-test failed, refusing to run code; not confined: " + ", ".join(failed)
        )

    def __reduce__(self) -> tuple[type[SelftestFailed], tuple[list[str]]]:
        return SelftestFailed, (self.failed,)  # pickled whole (a Ray node's verdict)


class InvalidSpec(SandboxError):
    """A FunctionSpec is malformed, too large, or holds data the host refuses to interpret."""


class InvalidArguments(SandboxError):
    """Arguments do not match a function's parameters, or cannot be sent as JSON."""


class LibraryError(SandboxError):
    """The FunctionLibrary refused an operation."""


class NotVetted(LibraryError):
    """A spec was offered to the library without a passing vet report for exactly that spec."""


class NotInLibrary(LibraryError):
    """No function of that name is in the library (or no such version exists)."""


class AlreadyInLibrary(LibraryError):
    """add() named a function that exists; revise() replaces it."""


class FunctionCallError(SandboxError):
    """A library function failed inside the sandbox; `kind` is the sandbox's error kind."""

    def __init__(self, name: str, kind: str, error_type: str, message: str) -> None:
        self.function = name
        self.kind = kind
        self.error_type = error_type
        super().__init__(f"{name} failed: {error_type}: {message}")
