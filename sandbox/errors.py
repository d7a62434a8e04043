"""Every exception a caller of `sandbox` may catch, in one tree.

    SandboxError                 base: an infrastructure or usage problem, with what to do about it
    ├── EngineError              the Docker engine refused or failed an operation
    │   └── EngineUnavailable    the Docker engine does not answer
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
FunctionCallError, because an agent framework expects a failing tool to raise. No exception of
docker-py or of its HTTP connection leaves the package: the engine's are EngineError (or a more
precise class above), so a caller catches SandboxError and nothing else. A bare ValueError or
TypeError means the caller's own programming error (`Sandbox(pool_size=0)`), never bad data or
a failing engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import docker.errors
import requests.exceptions

__all__ = [
    "AlreadyInLibrary",
    "EngineError",
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


class EngineError(SandboxError):
    """The Docker engine refused or failed an operation (an API error, a lost connection)."""


class EngineUnavailable(EngineError):
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


@contextlib.contextmanager
def engine_errors(doing: str, error: type[SandboxError] = EngineError) -> Iterator[None]:
    """docker-py's exceptions, and its connection's, as the sandbox's own (the tree above):
    every call into the engine runs inside this, so no caller ever handles a foreign exception.
    `error` is the class for the engine's refusals (SandboxBroken where a container fails)."""
    try:
        yield
    except docker.errors.ImageNotFound as exc:
        raise ImageMissing(f"could not {doing}: the sandbox image is not on this engine "
                           f"({_said(exc)}); run `make image`") from None
    except docker.errors.APIError as exc:
        raise error(f"the Docker engine could not {doing}: {_said(exc)}") from None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise EngineUnavailable(f"the Docker engine stopped answering while trying to {doing} "
                                f"({type(exc).__name__}: {_said(exc)})") from None


def _said(exc: Exception) -> str:
    """What the engine said, bounded: its explanation when it gave one."""
    return str(getattr(exc, "explanation", None) or exc)[:500]
