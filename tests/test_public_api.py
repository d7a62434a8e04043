"""The public API, as httpx tests its own: each package's `__all__` is what it exports, and only
the documented error classes leave its public functions (no docker-py, no requests, no bare
ValueError for bad data).

No container runs here: the engine is a stand-in that fails the way a real one does.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests.exceptions

import optimizer
import optimizer.errors
import sandbox
import sandbox.errors
from optimizer.errors import DatasetError
from optimizer.math import Grader, reference_answer
from sandbox import (
    EngineError,
    EngineUnavailable,
    FunctionLibrary,
    FunctionSpec,
    ImageMissing,
    InvalidSpec,
    Sandbox,
    SandboxBroken,
    SandboxError,
)

FACADES = ["sandbox", "optimizer", "optimizer.history", "optimizer.llm", "optimizer.math"]
"""Packages whose __init__ only gathers names from their modules: everything public in them is
an export."""


def _modules() -> list[str]:
    names = []
    for root in (sandbox, optimizer):
        names.append(root.__name__)
        for info in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
            if ".runner" in info.name or info.name.endswith(("ray_backend", "__main__")):
                continue  # the runner runs in containers; Ray is an optional extra
            names.append(info.name)
    return names


def _project_names(module: types.ModuleType) -> set[str]:
    """Public names bound in `module` that are fnforge's own (not imported typing helpers,
    not modules)."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or name == "annotations" or isinstance(value, types.ModuleType):
            continue
        if isinstance(value, type | types.FunctionType) and \
                value.__module__.split(".")[0] not in ("sandbox", "optimizer"):
            continue
        names.add(name)
    return names


@pytest.mark.parametrize("name", FACADES)
def test_a_packages_all_is_exactly_what_it_exports(name: str) -> None:
    package = importlib.import_module(name)
    assert sorted(package.__all__) == sorted(_project_names(package))
    assert len(set(package.__all__)) == len(package.__all__)


@pytest.mark.parametrize("name", _modules())
def test_every_name_in_all_exists(name: str) -> None:
    module = importlib.import_module(name)
    missing = [n for n in getattr(module, "__all__", []) if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"


@pytest.mark.parametrize(("errors", "base", "package"), [
    (sandbox.errors, SandboxError, sandbox), (optimizer.errors, optimizer.OptimizerError, None)])
def test_every_documented_error_is_in_its_tree(errors: types.ModuleType, base: type,
                                               package: types.ModuleType | None) -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, base), name
        assert name in (errors.__doc__ or ""), f"{name} is not drawn in the tree"
        if package is not None:
            assert getattr(package, name) is cls


# -- the engine's errors stay inside the sandbox's tree ------------------------------------------
class _Engine:
    """A docker client whose every call fails with `error` from the step named `where` on."""

    def __init__(self, where: str, error: Exception) -> None:
        self.where, self.error = where, error
        self.api = types.SimpleNamespace(containers=self._at("list"),
                                         remove_container=self._at("remove"))
        self.images = types.SimpleNamespace(get=self._at("image", types.SimpleNamespace(
            id="sha256:test", tags=["fnforge-sandbox:test"])))
        self.containers = types.SimpleNamespace(create=self._at("create"))

    def _at(self, step: str, value: Any = None) -> Callable[..., Any]:
        def call(*_: Any, **__: Any) -> Any:
            if step == self.where:
                raise self.error
            return [] if step == "list" else value
        return call

    def info(self) -> dict[str, Any]:
        return {"ID": "test", "Runtimes": {"runc": {}}}

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


def _api_error() -> docker.errors.APIError:
    return docker.errors.APIError("500 Server Error", explanation="the engine is unwell")


@pytest.mark.parametrize(("where", "error", "expected"), [
    ("list", _api_error(), EngineError),
    ("list", requests.exceptions.ConnectionError("reset by peer"), EngineUnavailable),
    ("image", _api_error(), EngineError),
    ("image", docker.errors.ImageNotFound("no such image"), ImageMissing),
    ("create", _api_error(), SandboxBroken),
    ("create", docker.errors.ImageNotFound("removed meanwhile"), ImageMissing),
    ("create", requests.exceptions.ReadTimeout("read timed out"), EngineUnavailable),
])
def test_sandbox_start_raises_only_sandbox_errors(monkeypatch: pytest.MonkeyPatch, where: str,
                                                  error: Exception, expected: type) -> None:
    import sandbox.container

    monkeypatch.setattr(sandbox.container, "connect", lambda: _Engine(where, error))
    box = Sandbox(pool_size=1)
    with pytest.raises(expected) as caught:
        box.start()
    assert isinstance(caught.value, SandboxError)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_the_cli_reports_an_engine_fault_as_infrastructure_not_a_bug(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import sandbox.container
    from sandbox.cli import main

    monkeypatch.setattr(sandbox.container, "pid_alive", lambda pid: False)
    engine = _Engine("remove", _api_error())
    engine.api.containers = lambda **_: [{"Id": "0" * 64, "Labels": {}}]
    monkeypatch.setattr(sandbox.container, "connect", lambda: engine)
    with pytest.raises(SystemExit) as exit_:
        main(["gc"])
    assert exit_.value.code == sandbox.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "the engine is unwell" in err and "bug" not in err


# -- bad data is the package's own error ---------------------------------------------------------
@pytest.mark.parametrize("content", [b"\xff\xfe", b"{", b"[]", b'{"a": NaN}', b""])
def test_hostile_files_raise_only_invalid_spec(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "f.json"
    path.write_bytes(content)
    for load in (FunctionSpec.load, FunctionLibrary.load):
        with pytest.raises(InvalidSpec):
            load(path)


@pytest.mark.parametrize("reference", ["", "   ", None, 3])
def test_a_reference_without_an_answer_is_a_dataset_error(reference: Any) -> None:
    with pytest.raises(DatasetError):
        reference_answer(reference)
    with Grader(workers=1) as grader, pytest.raises(DatasetError):
        grader.grade("\\boxed{1}", reference)


# -- the optimizer uses the sandbox through its public names ------------------------------------
ROOT = Path(__file__).resolve().parents[1]
PUBLIC_SANDBOX_MODULES = {"sandbox", "sandbox.bench"}  # sandbox.bench: for the benchmarks
NOT_YET_SWITCHED: set[str] = set()
"""Files still importing sandbox modules by their private paths; each is switched to the
public names in its own change, and then leaves this set (the test fails until it does)."""


def _private_sandbox_imports(path: Path) -> list[str]:
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "sandbox" else \
                [f"sandbox.{a.name}" for a in node.names
                 if importlib.util.find_spec(f"sandbox.{a.name}") is not None]
            found += [n for n in names if n.split(".")[0] == "sandbox"
                      and n not in PUBLIC_SANDBOX_MODULES]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("sandbox.")]
    return found


def test_the_optimizer_imports_only_the_sandboxs_public_names() -> None:
    private = {str(p.relative_to(ROOT)): _private_sandbox_imports(p)
               for p in sorted((ROOT / "optimizer").rglob("*.py"))}
    offenders = {p for p, names in private.items() if names}
    assert offenders - NOT_YET_SWITCHED == set(), {p: private[p] for p in offenders}
    assert NOT_YET_SWITCHED - offenders == set(), "switched: remove them from NOT_YET_SWITCHED"
