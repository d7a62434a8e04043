"""FunctionLibrary as a specification (real containers via the `sandbox` fixture).

Regression tests for upstream AgentOptimizer's defects: every executor name runs its own code
(no late binding), and a removed or rolled-back function is gone from the executor map at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandbox import (
    AlreadyInLibrary,
    ErrorKind,
    FunctionCallError,
    FunctionLibrary,
    FunctionSpec,
    InvalidSpec,
    NotInLibrary,
    NotVetted,
    Sandbox,
    VetReport,
)


def make(name: str, body: str, expect: Any = None) -> FunctionSpec:
    tests = [{"args": {"n": 2}, "expect": expect}] if expect is not None else []
    return FunctionSpec.from_dict({
        "name": name, "description": f"{name} of n", "code": f"def {name}(n):\n    {body}\n",
        "parameters": {"type": "object", "properties": {"n": {"type": "integer"}},
                       "required": ["n"]},
        "tests": tests})


def vetted(sandbox: Sandbox, spec: FunctionSpec) -> tuple[FunctionSpec, VetReport]:
    report = sandbox.vet(spec)
    assert report.passed, report.to_dict()
    return spec, report


def test_each_executor_name_runs_its_own_function(sandbox: Sandbox) -> None:
    lib = FunctionLibrary()
    lib.add(*vetted(sandbox, make("double", "return n * 2", 4)))
    lib.add(*vetted(sandbox, make("square", "return n * n", 4)))
    lib.add(*vetted(sandbox, make("negate", "return -n", -2)))
    ex = lib.register_for_executor(sandbox)
    assert sorted(ex) == ["double", "negate", "square"]
    assert (ex["double"](n=5), ex["square"](n=5), ex["negate"](n=5)) == (10, 25, -5)


def test_removed_function_is_gone_from_the_executor_map(sandbox: Sandbox) -> None:
    lib = FunctionLibrary()
    lib.add(*vetted(sandbox, make("double", "return n * 2", 4)))
    lib.add(*vetted(sandbox, make("square", "return n * n", 4)))
    ex = lib.register_for_executor(sandbox)
    stale = ex["double"]
    lib.remove("double")
    assert "double" not in ex  # the live map lost it
    assert "double" not in lib.register_for_executor(sandbox)
    with pytest.raises(NotInLibrary):
        stale(n=1)  # a reference kept by a caller stops working too
    assert [s["name"] for s in lib.signatures()] == ["square"]


def test_only_passing_reports_for_the_same_spec_are_admitted(sandbox: Sandbox) -> None:
    lib = FunctionLibrary()
    bad = make("broken", "return n + 1", 99)
    report = sandbox.vet(bad)
    assert not report.passed
    with pytest.raises(NotVetted):
        lib.add(bad, report)
    good, good_report = vetted(sandbox, make("double", "return n * 2", 4))
    with pytest.raises(NotVetted):
        lib.add(make("double", "return n * 3", 6), good_report)  # report of another version
    lib.add(good, good_report)
    with pytest.raises(AlreadyInLibrary):
        lib.add(good, good_report)
    with pytest.raises(NotInLibrary, match="'nope' is not in the library; it has: double"):
        lib.get("nope")
    with pytest.raises(NotInLibrary):
        lib.remove("nope")
    assert len(lib) == 1 and lib.version == 1


def test_revise_and_roll_back(sandbox: Sandbox) -> None:
    lib = FunctionLibrary()
    lib.add(*vetted(sandbox, make("f", "return n + 1", 3)))
    good = lib.version
    lib.revise(*vetted(sandbox, make("f", "return n + 100", 102)))
    lib.add(*vetted(sandbox, make("g", "return n", 2)))
    ex = lib.register_for_executor(sandbox)
    assert ex["f"](n=1) == 101 and "g" in ex
    version = lib.restore(good)
    assert version == 4 and lib.names() == ["f"]
    assert "g" not in ex
    assert lib.register_for_executor(sandbox)["f"](n=1) == 2
    assert [v.note for v in lib.history] == ["empty", "add f", "revise f", "add g", "restore 1"]
    with pytest.raises(NotInLibrary, match="no version 99"):
        lib.restore(99)


def test_failures_raise_with_the_sandbox_error_kind_and_type(sandbox: Sandbox) -> None:
    lib = FunctionLibrary()
    lib.add(*vetted(sandbox, make("inv", "return 10 // n", 5)))
    with pytest.raises(FunctionCallError) as info:
        lib.register_for_executor(sandbox)["inv"](n=0)
    assert info.value.error_type == "ZeroDivisionError"
    assert info.value.kind == ErrorKind.EXCEPTION.value


def test_save_and_load_round_trip(sandbox: Sandbox, tmp_path: Path) -> None:
    lib = FunctionLibrary()
    lib.add(*vetted(sandbox, make("double", "return n * 2", 4)))
    lib.add(*vetted(sandbox, make("square", "return n * n", 4)))
    lib.remove("square")
    path = tmp_path / "library.json"
    lib.save(path)
    loaded = FunctionLibrary.load(path)
    assert loaded.names() == ["double"] and loaded.version == lib.version
    assert [v.note for v in loaded.history] == [v.note for v in lib.history]
    assert loaded.register_for_executor(sandbox)["double"](n=21) == 42
    assert loaded.restore(2) and loaded.names() == ["double", "square"]


def test_a_tampered_library_file_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    lib = FunctionLibrary()
    lib.add(*vetted(sandbox, make("double", "return n * 2", 4)))
    data = lib.to_dict()
    data["functions"][0]["code"] = "def double(n):\n    return n * 3\n"
    with pytest.raises(NotVetted):
        FunctionLibrary.from_dict(data)
    with pytest.raises(InvalidSpec, match="damaged"):
        FunctionLibrary.from_dict({"functions": [], "history": [{"no": "version"}]})
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(InvalidSpec, match="not valid JSON"):
        FunctionLibrary.load(tmp_path / "x.json")
