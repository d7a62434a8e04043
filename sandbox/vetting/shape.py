"""Vetting stage 1 on the host: the spec's shape (name, description, parameters, size, tests).

Everything here reads the spec as hostile data: nothing is fetched, evaluated or compiled. The
parameters go through sandbox/schema.py (the JSON-schema subset, RE2 patterns), and test
arguments through the same validate_arguments the runtime uses before a call. A spec built
directly (not through FunctionSpec.from_dict) gets the same checks here, as findings.
"""

from __future__ import annotations

import builtins
import keyword
import re
from typing import Any

from .. import policy as P
from ..errors import InvalidArguments, InvalidSpec
from ..packages import image_packages
from ..schema import JsonDataError, check_parameters, plain_json, validate_arguments
from ..spec import SPEC_JSON_LIMITS, FunctionSpec
from .report import Finding

__all__ = ["check_shape"]


def check_shape(spec: FunctionSpec) -> list[Finding]:
    """Name, description, parameter schema, code size, packages, test arguments."""
    lim = P.SIZE_LIMITS
    out: list[Finding] = []
    name = spec.name
    if not name.isidentifier() or not name.isascii():
        out.append(Finding("shape.name", 0, 0, f"name {name!r} is not a Python identifier"))
    elif keyword.iskeyword(name) or keyword.issoftkeyword(name):
        out.append(Finding("shape.name", 0, 0, f"name {name!r} is a Python keyword"))
    elif hasattr(builtins, name):
        out.append(Finding("shape.name", 0, 0,
                           f"name {name!r} shadows a Python builtin; choose a descriptive name"))
    elif name.startswith("_"):
        out.append(Finding("shape.name", 0, 0, f"name {name!r} must not start with '_'"))
    if len(name) > lim.max_name_chars:
        out.append(Finding("shape.name", 0, 0, f"name is longer than {lim.max_name_chars}"))
    out.extend(_check_description(spec.description, lim.max_description_chars))
    out.extend(_check_parameters(spec.parameters))
    if len(spec.code) > lim.max_code_chars:
        out.append(Finding("shape.code-size", 0, 0,
                           f"code has {len(spec.code)} characters; the limit is "
                           f"{lim.max_code_chars}"))
    if spec.code.count("\n") + 1 > lim.max_code_lines:
        out.append(Finding("shape.code-size", 0, 0,
                           f"code has more than {lim.max_code_lines} lines"))
    pkgs = image_packages()
    for pkg in spec.packages:
        if not pkgs.accepts(pkg):
            out.append(Finding("shape.packages", 0, 0,
                               f"package {pkg!r} is not in the sandbox image (available: "
                               f"{', '.join(sorted(pkgs.modules))} and the standard library); "
                               "nothing is installed at run time"))
    if len(spec.tests) > lim.max_tests:
        out.append(Finding("shape.tests", 0, 0, f"more than {lim.max_tests} tests"))
    if not any(f.rule == "shape.parameters" for f in out):
        out.extend(_check_tests(spec))
    return out


_NOT_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                           "\u200e\u200f\ud800-\udfff]")
"""Line breaks, tabs, other controls, bidirectional controls and lone surrogates."""


def _check_description(description: str, limit: int) -> list[Finding]:
    """One line of plain text: the description is pasted into the assistant's and the
    optimizer's prompts, where a line break could forge a prompt line."""
    problems = []
    if not description.strip():
        problems.append("description is empty: say what the function computes and returns")
    if len(description) > limit:
        problems.append(f"description is longer than {limit} characters; one sentence is enough")
    bad = _NOT_ONE_LINE.search(description)
    if bad is not None:
        problems.append(f"description must be one line of plain text; it holds character "
                        f"U+{ord(bad.group()):04X} (a line break, tab or control character)")
    return [Finding("shape.description", 0, 0, p) for p in problems]


def _check_parameters(params: Any) -> list[Finding]:
    out = [Finding("shape.parameters", 0, 0, msg) for msg in check_parameters(params)]
    props = params.get("properties", {}) if isinstance(params, dict) else {}
    if isinstance(props, dict) and len(props) > P.SIZE_LIMITS.max_parameters:
        out.append(Finding("shape.parameters", 0, 0,
                           f"more than {P.SIZE_LIMITS.max_parameters} parameters; take fewer "
                           "(group related values in an object or array)"))
    return out


def _check_tests(spec: FunctionSpec) -> list[Finding]:
    """Sandbox.call refuses arguments that break the schema before the function runs, so every
    test (expect_error ones too) must be a valid call; expected values must be plain JSON."""
    out: list[Finding] = []
    props = spec.parameters.get("properties", {})
    required = spec.parameters.get("required", [])
    for i, test in enumerate(spec.tests[: P.SIZE_LIMITS.max_tests]):
        args = test.args if isinstance(test.args, dict) else {}
        unknown = sorted(set(args) - set(props), key=str)
        missing = sorted(set(required) - set(args), key=str)
        if unknown or missing:
            out.append(Finding("shape.test-args", 0, 0,
                               f"tests[{i}].args: unknown {unknown}, missing {missing}"[:500]))
            continue
        try:
            validate_arguments(spec.name, spec.parameters, test.args)
        except (InvalidArguments, InvalidSpec) as exc:
            out.append(Finding("shape.test-args", 0, 0, f"tests[{i}]: {exc}"))
        if test.has_expect:
            try:
                plain_json(test.expect, SPEC_JSON_LIMITS, f"tests[{i}].expect")
            except JsonDataError as exc:
                out.append(Finding("shape.tests", 0, 0, str(exc)))
    return out
