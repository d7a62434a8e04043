"""The LLM side of a library: tools now, and AutoGen updates that say each removal once."""

from __future__ import annotations

from optimizer.registration import LLMRegistrar
from sandbox import FunctionLibrary, Sandbox

from .test_library import make, vetted


def test_removals_are_advertised_once_by_name(sandbox: Sandbox) -> None:
    lib = FunctionLibrary()
    lib.add(*vetted(sandbox, make("double", "return n * 2", 4)))
    lib.add(*vetted(sandbox, make("square", "return n * n", 4)))
    registrar = LLMRegistrar()
    first = registrar.register(lib)
    assert [t["function"]["name"] for t in first.tools] == ["double", "square"]
    assert all(not item["is_remove"] for item in first.autogen)
    lib.remove("double")
    second = registrar.register(lib)
    assert [t["function"]["name"] for t in second.tools] == ["square"]
    assert {"func_sig": "double", "is_remove": True} in second.autogen
    assert not any(item["is_remove"] for item in registrar.register(lib).autogen)  # said once


def test_a_function_never_advertised_is_never_removed(sandbox: Sandbox) -> None:
    lib = FunctionLibrary()
    lib.add(*vetted(sandbox, make("f", "return n + 1", 3)))
    registrar = LLMRegistrar()
    registrar.register(lib)
    good = lib.version
    lib.add(*vetted(sandbox, make("g", "return n", 2)))
    lib.restore(good)
    assert {"func_sig": "g", "is_remove": True} not in registrar.register(lib).autogen
    restored = LLMRegistrar.from_dict(registrar.to_dict())
    assert restored.advertised == {"f"}
