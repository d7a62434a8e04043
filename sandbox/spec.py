"""FunctionSpec: a generated function as plain, hashable data, parsed as hostile input.

JSON form (README, "FunctionSpec"):
    {"name", "description", "parameters": {JSON schema of type object},
     "code": "def name(...): ...", "packages": [...],
     "tests": [{"args": {...}, "expect": value} | {"args": {...}, "expect_error": "ValueError"}]}
Upstream AgentOptimizer's "arguments" (a bare properties map, also JSON-encoded as a string) is
accepted for "parameters"; "packages" may be one space-separated string.

Why hostile: specs are written by an LLM. `from_dict` and `load` accept only bounded, plain JSON
(SPEC_JSON_LIMITS: no NaN/Infinity, no non-string keys, no lone surrogates, bounded size and
nesting) and parameters in the subset of sandbox/schema.py, so nothing later on the host (hashing,
vetting, validation, reports) meets data it cannot handle. Each refusal is an InvalidSpec naming
the field and what to change.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidSpec
from .schema import (
    JsonDataError,
    JsonLimits,
    check_parameters,
    loads_json,
    plain_json,
    read_json_file,
)

__all__ = ["MAX_SPEC_BYTES", "SPEC_JSON_LIMITS", "FunctionSpec", "FunctionTest"]

MAX_SPEC_BYTES = 1 << 20
"""A spec is a few KiB (code is limited to 20,000 characters by the vetting policy); a spec file
or object over 1 MiB is refused unread."""

SPEC_JSON_LIMITS = JsonLimits(max_depth=48, max_values=100_000, max_chars=MAX_SPEC_BYTES,
                              max_string_chars=MAX_SPEC_BYTES)
"""The whole spec as JSON. Depth 48 leaves room for the schema's own limit (sandbox/schema.py
refuses schemas nested deeper than its LIMITS.max_depth) under "parameters" and for nested test
values, and is far below Python's recursion limit."""

_FIELDS = ("name", "description", "parameters", "arguments", "code", "packages", "tests")
_TEST_FIELDS = ("args", "expect", "expect_error")
_MAX_PACKAGES = 32
_MAX_SHORT_CHARS = 128  # a package name, an exception type name
_MISSING: Any = object()
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""Characters that rewrite what a reviewer sees in a terminal (escape sequences, bidi)."""


@dataclass(frozen=True)
class FunctionTest:
    args: dict[str, Any]
    expect: Any = _MISSING
    expect_error: str | None = None

    @property
    def has_expect(self) -> bool:
        return self.expect is not _MISSING

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"args": self.args}
        if self.has_expect:
            out["expect"] = self.expect
        if self.expect_error is not None:
            out["expect_error"] = self.expect_error
        return out


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    description: str
    parameters: dict[str, Any]
    code: str
    packages: tuple[str, ...] = ()
    tests: tuple[FunctionTest, ...] = field(default=())

    @classmethod
    def from_dict(cls, data: Any) -> FunctionSpec:
        """Parse the JSON form from hostile input; raises InvalidSpec (only) naming the field at
        fault. The spec keeps its own plain copy: later changes to `data` do not reach it."""
        if not isinstance(data, dict):
            raise InvalidSpec(f"a function spec must be a JSON object, got {type(data).__name__}")
        try:
            data = plain_json(data, SPEC_JSON_LIMITS, "spec")
        except JsonDataError as exc:
            raise InvalidSpec(str(exc)) from None
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise InvalidSpec(f"unknown spec field(s) {_names(unknown)}; use only "
                              f"{', '.join(_FIELDS)}")
        name = _text(data, "name", required=True)
        if not name.isprintable() or len(name) > _MAX_SHORT_CHARS:
            raise InvalidSpec("spec field 'name' must be a short Python identifier without "
                              "control characters")
        code = _text(data, "code", required=True)
        if "\0" in code:
            raise InvalidSpec("spec field 'code' contains a NUL character; remove it")
        description = _text(data, "description", required=False)
        if _CONTROL.search(description):
            raise InvalidSpec("spec field 'description' contains control or bidirectional "
                              "override characters; use plain text (newlines and tabs are fine)")
        parameters = _parameters(data)
        problems = check_parameters(parameters)
        if problems:
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise InvalidSpec(f"spec field 'parameters' is refused: {problems[0]}{more}")
        return cls(name=name, description=description, parameters=parameters, code=code,
                   packages=_packages(data.get("packages", [])),
                   tests=_tests(data.get("tests", [])))

    @classmethod
    def load(cls, path: str | Path) -> FunctionSpec:
        """Read at most MAX_SPEC_BYTES (+1 to tell) of the file, then parse as from_dict."""
        return cls.from_dict(read_json_file(path, "spec file", MAX_SPEC_BYTES, SPEC_JSON_LIMITS))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "parameters": self.parameters, "code": self.code,
                "packages": list(self.packages), "tests": [t.to_dict() for t in self.tests]}

    @property
    def code_hash(self) -> str:
        return hashlib.sha256(self.code.encode("utf-8", "surrogatepass")).hexdigest()

    @property
    def spec_hash(self) -> str:
        """Hash of the canonical JSON form: any change to any field changes it."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _names(keys: list[str]) -> str:
    shown = ", ".join(repr(k[:40]) for k in keys[:5])
    return shown + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def _text(data: dict[str, Any], key: str, *, required: bool) -> str:
    value = data.get(key, _MISSING if required else "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidSpec(f"spec field {key!r} must be a"
                          + (" non-empty string" if required else " string"))
    return value


def _parameters(data: dict[str, Any]) -> dict[str, Any]:
    """"parameters", or upstream's "arguments": a bare properties map (every property
    required), a whole object schema, or either of them JSON-encoded as a string."""
    if "parameters" in data:
        if "arguments" in data:
            raise InvalidSpec("give either 'parameters' or 'arguments', not both")
        parameters = data["parameters"]
        if not isinstance(parameters, dict):
            raise InvalidSpec("spec field 'parameters' must be a JSON-schema object such as "
                              '{"type": "object", "properties": {...}, "required": [...]}')
        return parameters
    arguments = data.get("arguments", {})
    if isinstance(arguments, str):  # upstream sometimes stores it JSON-encoded
        try:
            arguments = loads_json(arguments, SPEC_JSON_LIMITS, "spec field 'arguments'")
        except JsonDataError as exc:
            raise InvalidSpec(str(exc)) from None
    if not isinstance(arguments, dict):
        raise InvalidSpec("spec field 'arguments' must be an object of properties")
    if arguments.get("type") == "object":
        return arguments
    return {"type": "object", "properties": arguments, "required": sorted(arguments)}


def _packages(packages: Any) -> tuple[str, ...]:
    if isinstance(packages, str):
        packages = packages.split()
    if (not isinstance(packages, list) or len(packages) > _MAX_PACKAGES
            or not all(isinstance(p, str) and 0 < len(p) <= _MAX_SHORT_CHARS
                       and p.isprintable() for p in packages)):
        raise InvalidSpec(f"spec field 'packages' must be a list of at most {_MAX_PACKAGES} "
                          "package names")
    return tuple(packages)


def _tests(raw_tests: Any) -> tuple[FunctionTest, ...]:
    if not isinstance(raw_tests, list):
        raise InvalidSpec("spec field 'tests' must be a list")
    tests = []
    for i, raw in enumerate(raw_tests):
        if not isinstance(raw, dict) or not isinstance(raw.get("args", {}), dict):
            raise InvalidSpec(f"tests[{i}] must be an object with an 'args' object")
        if set(raw) - set(_TEST_FIELDS):
            raise InvalidSpec(f"tests[{i}] has unknown fields; use args, expect, expect_error")
        has_expect = "expect" in raw
        error = raw.get("expect_error")
        if has_expect == (error is not None):
            raise InvalidSpec(f"tests[{i}] needs exactly one of 'expect' or 'expect_error'")
        if error is not None and not (isinstance(error, str) and error.isidentifier()
                                      and len(error) <= _MAX_SHORT_CHARS):
            raise InvalidSpec(f"tests[{i}].expect_error must name an exception type")
        tests.append(FunctionTest(args=raw.get("args", {}),
                                  expect=raw["expect"] if has_expect else _MISSING,
                                  expect_error=error))
    return tuple(tests)
