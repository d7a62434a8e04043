"""Shared fixtures: one real sandbox (real Docker engine, real image) for the whole session."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import pytest
from docker.models.containers import Container

from sandbox import FunctionSpec, Sandbox

from .scripted_llm import scripted_llm as scripted_llm  # the fixture, for every test


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(pool_size=2) as sb:
        yield sb


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    return docker.from_env()


def make_spec(code: str, name: str | None = None, properties: dict[str, Any] | None = None,
              required: list[str] | None = None, **extra: object) -> FunctionSpec:
    """A FunctionSpec from a def, with an all-required parameter schema unless given."""
    import ast

    tree = ast.parse(code)
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef))
    params = [a.arg for a in func.args.args]
    props = properties if properties is not None else {p: {} for p in params}
    return FunctionSpec.from_dict({
        "name": name or func.name, "description": f"{func.name} (test)",
        "parameters": {"type": "object", "properties": props,
                       "required": required if required is not None else params},
        "code": code, **extra})


def _orphaned(container: Container) -> bool:
    """Ours, or left by a process that is gone (other fnforge processes may be running)."""
    owner = container.labels.get("fnforge.owner", "")
    if not owner.isdigit() or int(owner) == os.getpid():
        return True
    try:
        os.kill(int(owner), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No fnforge container may outlive the test session."""
    try:
        listed = docker.from_env().containers.list(all=True,
                                                   filters={"label": "fnforge=container"})
    except Exception:
        return
    left = [c for c in listed if _orphaned(c)]
    if left:
        names = ", ".join(c.short_id for c in left)
        for container in left:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        session.exitstatus = 1
        print(f"\nFAILED: fnforge containers left behind after the tests: {names}")
