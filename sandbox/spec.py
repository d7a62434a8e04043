"""FunctionSpec: a generated function as plain, hashable data.

JSON form (README, "FunctionSpec"):
    {"name", "description", "parameters": {JSON schema of type object},
     "code": "def name(...): ...", "packages": [...],
     "tests": [{"args": {...}, "expect": value} | {"args": {...}, "expect_error": "ValueError"}]}
Upstream AgentOptimizer's "arguments" (a bare properties map) is accepted for "parameters".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidSpec

_MISSING: Any = object()


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
        """Parse the JSON form; raises InvalidSpec naming the field at fault."""
        if not isinstance(data, dict):
            raise InvalidSpec(f"a function spec must be a JSON object, got {type(data).__name__}")
        unknown = set(data) - {"name", "description", "parameters", "arguments", "code",
                               "packages", "tests"}
        if unknown:
            raise InvalidSpec(f"unknown spec field(s): {', '.join(sorted(unknown))}")
        for key in ("name", "code"):
            if not isinstance(data.get(key), str) or not data[key].strip():
                raise InvalidSpec(f"spec field {key!r} must be a non-empty string")
        description = data.get("description", "")
        if not isinstance(description, str):
            raise InvalidSpec("spec field 'description' must be a string")
        parameters = data.get("parameters", _MISSING)
        if parameters is _MISSING:
            arguments = data.get("arguments", {})
            if isinstance(arguments, str):  # upstream sometimes stores it JSON-encoded
                try:
                    arguments = json.loads(arguments)
                except ValueError as exc:
                    raise InvalidSpec(f"spec field 'arguments' is not JSON: {exc}") from None
            if not isinstance(arguments, dict):
                raise InvalidSpec("spec field 'arguments' must be an object of properties")
            if arguments.get("type") == "object":
                parameters = arguments
            else:
                parameters = {"type": "object", "properties": arguments,
                              "required": sorted(arguments)}
        if not isinstance(parameters, dict):
            raise InvalidSpec("spec field 'parameters' must be a JSON-schema object")
        packages = data.get("packages", [])
        if isinstance(packages, str):
            packages = packages.split()
        if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
            raise InvalidSpec("spec field 'packages' must be a list of package names")
        raw_tests = data.get("tests", [])
        if not isinstance(raw_tests, list):
            raise InvalidSpec("spec field 'tests' must be a list")
        tests = []
        for i, raw in enumerate(raw_tests):
            if not isinstance(raw, dict) or not isinstance(raw.get("args", {}), dict):
                raise InvalidSpec(f"tests[{i}] must be an object with an 'args' object")
            if set(raw) - {"args", "expect", "expect_error"}:
                raise InvalidSpec(f"tests[{i}] has unknown fields; use args, expect, expect_error")
            has_expect = "expect" in raw
            error = raw.get("expect_error")
            if has_expect == (error is not None):
                raise InvalidSpec(f"tests[{i}] needs exactly one of 'expect' or 'expect_error'")
            if error is not None and not (isinstance(error, str) and error.isidentifier()):
                raise InvalidSpec(f"tests[{i}].expect_error must name an exception type")
            tests.append(FunctionTest(args=raw.get("args", {}),
                                      expect=raw["expect"] if has_expect else _MISSING,
                                      expect_error=error))
        return cls(name=data["name"], description=description, parameters=parameters,
                   code=data["code"], packages=tuple(packages), tests=tuple(tests))

    @classmethod
    def load(cls, path: str | Path) -> FunctionSpec:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidSpec(f"cannot read spec file {path}: {exc.strerror}") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InvalidSpec(f"spec file {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "parameters": self.parameters, "code": self.code,
                "packages": list(self.packages), "tests": [t.to_dict() for t in self.tests]}

    @property
    def code_hash(self) -> str:
        return hashlib.sha256(self.code.encode()).hexdigest()

    @property
    def spec_hash(self) -> str:
        """Hash of the canonical JSON form: any change to any field changes it."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
