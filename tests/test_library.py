"""FunctionLibrary as a specification (real containers via the `sandbox` fixture).

Regression tests for upstream AgentOptimizer's defects: every executor name runs its own code
(no late binding), and a removed or rolled-back function is gone from both the LLM registration
and the executor map.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandbox import Sandbox
from sandbox.library import FunctionCallError, FunctionLibrary, NotVetted
from sandbox.spec import FunctionSpec
from sandbox.vet import VerdictCache, VetReport, vet

CACHE = VerdictCache()


def make(name: str, body: str, expect: Any = None) -> FunctionSpec:
    tests = [{"args": {"n": 2}, "expect": expect}] if expect is not None else []
    return FunctionSpec.from_dict({
        "name": name, "description": f"{name} of n", "code": f"def {name}(n):\n    {body}\n",
        "parameters": {"type": "object", "properties": {"n": {"type": "integer"}},
                       "required": ["n"]},
        "tests": tests})


def vetted(sandbox: Sandbox, spec: FunctionSpec) -> tuple[FunctionSpec, VetReport]:
    report = vet(sandbox, spec, cache=CACHE)
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


def test_removed_function_is_gone_from_both_maps(sandbox: Sandbox) -> None:
    lib = FunctionLibrary()
    lib.add(*vetted(sandbox, make("double", "return n * 2", 4)))
    lib.add(*vetted(sandbox, make("square", "return n * n", 4)))
    first = lib.register_for_llm()
    assert [t["function"]["name"] for t in first.tools] == ["double", "square"]
    assert all(not item["is_remove"] for item in first.autogen)
    ex = lib.register_for_executor(sandbox)
    stale = ex["double"]
    lib.remove("double")
    assert "double" not in ex  # the live map lost it
    assert "double" not in lib.register_for_executor(sandbox)
    with pytest.raises(LookupError):
        stale(n=1)  # a reference kept by a caller stops working too
    second = lib.register_for_llm()
    assert [t["function"]["name"] for t in second.tools] == ["square"]
    assert {"func_sig": "double", "is_remove": True} in second.autogen
    assert not any(item["is_remove"] for item in lib.register_for_llm().autogen)  # said once


def test_only_passing_reports_for_the_same_spec_are_admitted(sandbox: Sandbox) -> None:
    lib = FunctionLibrary()
    bad = make("broken", "return n + 1", 99)
    report = vet(sandbox, bad, cache=CACHE)
    assert not report.passed
    with pytest.raises(NotVetted):
        lib.add(bad, report)
    good, good_report = vetted(sandbox, make("double", "return n * 2", 4))
    with pytest.raises(NotVetted):
        lib.add(make("double", "return n * 3", 6), good_report)  # report of another version
    lib.add(good, good_report)
    with pytest.raises(ValueError):
        lib.add(good, good_report)
    assert len(lib) == 1 and lib.version == 1


def test_revise_snapshot_and_rollback(sandbox: Sandbox) -> None:
    lib = FunctionLibrary()
    lib.add(*vetted(sandbox, make("f", "return n + 1", 3)))
    good = lib.snapshot()
    ex = lib.register_for_executor(sandbox)
    lib.revise(*vetted(sandbox, make("f", "return n + 100", 102)))
    lib.add(*vetted(sandbox, make("g", "return n", 2)))
    ex = lib.register_for_executor(sandbox)
    assert ex["f"](n=1) == 101 and "g" in ex
    version = lib.restore(good)
    assert version == 4 and lib.names() == ["f"]
    assert "g" not in ex
    ex = lib.register_for_executor(sandbox)
    assert ex["f"](n=1) == 2
    assert [h["note"] for h in lib.history] == ["empty", "add f", "revise f", "add g",
                                                "restore 1"]
    assert {"func_sig": "g", "is_remove": True} not in lib.register_for_llm().autogen  # never sent


def test_failures_raise_with_the_sandbox_error_type(sandbox: Sandbox) -> None:
    lib = FunctionLibrary()
    spec = make("inv", "return 10 // n", 5)
    lib.add(*vetted(sandbox, spec))
    with pytest.raises(FunctionCallError) as info:
        lib.register_for_executor(sandbox)["inv"](n=0)
    assert info.value.error_type == "ZeroDivisionError"


def test_save_and_load_round_trip(sandbox: Sandbox, tmp_path: Path) -> None:
    lib = FunctionLibrary()
    lib.add(*vetted(sandbox, make("double", "return n * 2", 4)))
    lib.add(*vetted(sandbox, make("square", "return n * n", 4)))
    lib.remove("square")
    lib.register_for_llm()
    path = tmp_path / "library.json"
    lib.save(path)
    loaded = FunctionLibrary.load(path)
    assert loaded.names() == ["double"] and loaded.version == lib.version
    assert loaded.history == lib.history
    assert loaded.register_for_executor(sandbox)["double"](n=21) == 42
    assert loaded.restore(2) and loaded.names() == ["double", "square"]
