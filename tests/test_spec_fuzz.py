"""Fuzz: mutated specs never crash the host, and never take long.

Starting from the benign corpus, a seeded generator applies a few random mutations per spec
(drop, duplicate, retype and swap fields; inject $ref, patterns, NaN/Infinity, huge numbers, deep
nesting, cycles, control characters, lone surrogates, very long strings, unknown keywords). For
every mutant:
- FunctionSpec.from_dict raises nothing but InvalidSpec;
- an accepted spec goes through the host vetting stages, `vet(None, spec)` (shape, static,
  restricted), smoke-case generation and argument validation without an exception escaping;
- each of these finishes within a time bound, and an accepted spec is plain JSON again.
Deterministic (fixed seed) and about 10 s; no Docker.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sandbox.errors import InvalidArguments, InvalidSpec
from sandbox.schema import validate_arguments
from sandbox.spec import FunctionSpec
from sandbox.vetting import vet
from sandbox.vetting.shape import check_shape
from sandbox.vetting.smoke_cases import smoke_cases

SEED = 20_260_401
MUTANTS = 3_000
PARSE_BOUND_S = 0.5  # from_dict of one mutant
VET_BOUND_S = 2.0  # shape + static + restricted + smoke generation of one accepted mutant
CORPUS = [json.loads(p.read_text()) for p in
          sorted(Path(__file__).parent.joinpath("corpus", "benign").glob("*.json"))]

REFS = ["http://127.0.0.1:9/schema.json", "file:///etc/passwd", "#/definitions/x", "#",
        "https://example.com/s.json"]
PATTERNS = ["^(a+)+$", "(a|aa)+$", r"(a)\1", "(?=x)", "[", "a{1001}", "(" * 40, "x" * 400,
            r"^\d+$", "^[a-z]*$", "\ud800", "\x00"]
ODD_NUMBERS: list[Any] = [float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 10**30,
                          -(10**5000), 2**63, 1e-320, -0.0, True]
ODD_STRINGS = ["", " ", "\x00", "\x1b[2J", "\u202e", "\ud800", "\udfff", "é", "$ref", "__init__",
               "class", "a" * 65, "\n"]
VALUES: list[Any] = [None, True, False, 0, -1, 1.5, "", "x", [], {}, [1, 2], {"a": 1},
                     {"type": "integer"}, ["sympy"]]
KEYWORDS: dict[str, list[Any]] = {
    "$ref": REFS, "$id": REFS, "$schema": REFS, "$defs": [{"x": {"$ref": REFS[0]}}],
    "$dynamicRef": REFS, "definitions": [{"x": {}}], "format": ["email", "regex"],
    "pattern": PATTERNS, "allOf": [[{}]], "not": [{}], "if": [{}], "nullable": [True],
    "enum": [[], list(range(500)), [float("nan")], ["a", "a"]], "const": [float("inf"), {}],
    "minimum": ODD_NUMBERS, "maximum": ODD_NUMBERS, "exclusiveMinimum": [True, 0, 1e400],
    "multipleOf": [0, -1, 1e-300, float("nan")], "minItems": [-1, 10**9, 1.5, 1000],
    "minLength": [10**9, 1000], "maxLength": [-5, 0], "type": ["nonsense", [], ["integer"] * 9],
    "items": [[{}], True, {"$ref": "#"}], "properties": [[], {"": {}}, {1: {}}],
    "required": ["x", [1], ["a", "a"]], "additionalProperties": [{"$ref": "#"}, 3],
    "anyOf": [[], [{}] * 20], "uniqueItems": [True, "yes"],
}


def _slots(node: Any) -> list[tuple[Any, Any]]:
    """(container, key) of every value in `node`, each container once (mutants may be cyclic),
    at most 20,000 (mutants may be deep)."""
    out: list[tuple[Any, Any]] = []
    stack, seen = [node], {id(node)}
    while stack and len(out) < 20_000:
        item = stack.pop()
        pairs = item.items() if isinstance(item, dict) else enumerate(item)
        for k, v in list(pairs):
            out.append((item, k))
            if isinstance(v, dict | list) and id(v) not in seen:
                seen.add(id(v))
                stack.append(v)
    return out


def _dup(value: Any) -> Any:
    """A deep copy, or the value itself when it is too deep (or cyclic-deep) to copy."""
    try:
        return copy.deepcopy(value)
    except RecursionError:
        return value


def _dicts(node: Any) -> list[dict[str, Any]]:
    return [node] + [c[k] for c, k in _slots(node) if isinstance(c[k], dict)]


def _strings(node: Any) -> list[tuple[Any, Any]]:
    return [(c, k) for c, k in _slots(node) if isinstance(c[k], str)]


def _nest(rng: random.Random) -> Any:
    depth = rng.choice([9, 30, 60, 1_000, 50_000])
    value: Any = {"type": "integer"}
    for _ in range(depth):
        value = rng.choice([[value], {"type": "array", "items": value}, {"a": value}])
    return value


def mutate(rng: random.Random, spec: dict[str, Any]) -> None:
    """One random mutation of `spec`, in place."""
    slots = _slots(spec)
    container, key = rng.choice(slots)
    op = rng.randrange(13)
    if op == 0:  # drop
        del container[key]
    elif op == 1:  # duplicate a value under another key / at another index
        if isinstance(container, dict):
            container[rng.choice([*container, "extra", "arguments", "parameters"])] = \
                _dup(container[key])
        else:
            container.append(_dup(container[key]))
    elif op == 2:  # retype
        container[key] = _dup(rng.choice(VALUES + ODD_NUMBERS + ODD_STRINGS))
    elif op == 3:  # swap two values
        c2, k2 = rng.choice(slots)
        if c2 is not container[key] and container is not c2[k2]:
            container[key], c2[k2] = c2[k2], container[key]
    elif op == 4:  # a keyword, hostile or odd, into some schema-like dict
        schema = rng.choice(_dicts(spec))
        word = rng.choice(list(KEYWORDS))
        schema[word] = _dup(rng.choice(KEYWORDS[word]))
    elif op == 5:  # replace any value by a reference
        container[key] = {"$ref": rng.choice(REFS)}
    elif op == 6:  # an odd number anywhere
        container[key] = rng.choice(ODD_NUMBERS)
    elif op == 7:  # deep nesting
        container[key] = _nest(rng)
    elif op == 8:  # a cycle
        container[key] = rng.choice([spec, container])
    elif op == 9:  # control characters, surrogates, odd names in a string
        strings = _strings(spec)
        if strings:
            c, k = rng.choice(strings)
            i = rng.randrange(len(c[k]) + 1)
            c[k] = c[k][:i] + rng.choice(ODD_STRINGS) + c[k][i:]
    elif op == 10:  # a very long string (code stays under the policy limit, see module doc)
        strings = _strings(spec)
        if strings:
            c, k = rng.choice(strings)
            n = rng.choice([5_000, 100_000, 1_100_000])
            c[k] = (c[k] * (n // max(1, len(c[k])) + 1))[:n] if k != "code" else c[k][:19_000]
    elif op == 11:  # a non-string key
        target: dict[Any, Any] = rng.choice(_dicts(spec))
        target[rng.choice([1, None, 2.5, True])] = 1
    else:  # upstream forms: arguments map or JSON string, packages string
        params = spec.pop("parameters", None)
        props = params.get("properties", {}) if isinstance(params, dict) else params
        try:
            spec["arguments"] = json.dumps(props) if rng.random() < 0.5 else props
        except (TypeError, ValueError, RecursionError):  # a cyclic or non-JSON mutant
            spec["arguments"] = props
        packages = spec.get("packages")
        if isinstance(packages, list) and all(isinstance(p, str) for p in packages):
            spec["packages"] = " ".join(packages)


def _timed(bound: float, what: str, fn: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    try:
        return fn()
    finally:
        elapsed = time.perf_counter() - t0
        assert elapsed < bound, f"{what} took {elapsed:.2f} s"


def _parse(label: str, data: dict[str, Any]) -> FunctionSpec:
    spec: FunctionSpec = _timed(PARSE_BOUND_S, f"{label}: from_dict",
                                lambda: FunctionSpec.from_dict(data))
    return spec


def _check_accepted(spec: FunctionSpec, label: str) -> None:
    """Everything the host does with an accepted spec: no exception, bounded time."""
    json.dumps(spec.to_dict(), allow_nan=False)  # plain JSON again
    assert spec.spec_hash and spec.code_hash

    def host_stages() -> None:
        check_shape(spec)
        report = vet(None, spec)
        assert [s.name for s in report.stages][:3] == ["shape", "static", "restricted"]
        cases = smoke_cases(spec.parameters)
        for args in cases:
            validate_arguments(spec.name, spec.parameters, args)
        for test in spec.tests:
            with contextlib.suppress(InvalidArguments):
                validate_arguments(spec.name, spec.parameters, test.args)

    _timed(VET_BOUND_S, f"{label}: host stages", host_stages)


def test_mutated_specs_raise_only_invalid_spec_and_never_crash_vetting() -> None:
    rng = random.Random(SEED)
    accepted = refused = 0
    reasons: dict[str, int] = {}
    for i in range(MUTANTS):
        base = CORPUS[i % len(CORPUS)]
        data = copy.deepcopy(base)
        for _ in range(rng.choice([1, 1, 2, 3, 4])):
            mutate(rng, data)
        label = f"mutant {i} of {base['name']}"
        try:
            spec = _parse(label, data)
        except InvalidSpec as exc:
            refused += 1
            message = str(exc)
            assert message and "\n" not in message and len(message) < 2_000, (label, message)
            word = message.split(":")[0][:40]
            reasons[word] = reasons.get(word, 0) + 1
            continue
        accepted += 1
        _check_accepted(spec, label)
    # the mutations must exercise both paths substantially, or the test proves little
    assert accepted > MUTANTS // 10 and refused > MUTANTS // 3, (accepted, refused)
    print(f"\n{accepted} accepted, {refused} refused; top reasons: "
          f"{sorted(reasons.items(), key=lambda kv: -kv[1])[:8]}")


@pytest.mark.parametrize("seed", range(3))
def test_mutated_spec_files_raise_only_invalid_spec(tmp_path: Path, seed: int) -> None:
    """The file path: bytes mutated after serialisation (truncation, NaN literals, junk)."""
    rng = random.Random(SEED + seed)
    path = tmp_path / "spec.json"
    for i in range(200):
        text = json.dumps(CORPUS[i % len(CORPUS)])
        op = rng.randrange(5)
        if op == 0:
            text = text[: rng.randrange(len(text))]
        elif op == 1:
            text = text.replace("1", rng.choice(["NaN", "Infinity", "-Infinity", "1e999"]), 1)
        elif op == 2:
            j = rng.randrange(len(text))
            text = text[:j] + rng.choice(["\\ud800", "\x00", "[" * 5_000, '"a": 1, ']) + text[j:]
        elif op == 3:
            text = text.replace('"name"', '"name": "x", "name"', 1)
        data = text.encode("utf-8", "surrogatepass")
        if op == 4:
            data = data[:10] + bytes([rng.randrange(256)]) + data[11:]
        path.write_bytes(data)
        try:
            spec = _timed(PARSE_BOUND_S, f"file {i}", lambda: FunctionSpec.load(path))
        except InvalidSpec:
            continue
        _check_accepted(spec, f"file {i}")


def test_oversized_code_is_rejected_without_parsing_it() -> None:
    spec = FunctionSpec.from_dict({"name": "f", "description": "d",
                                   "code": "def f():\n    return 1\n" + "x = 1\n" * 30_000,
                                   "parameters": {"type": "object", "properties": {}}})
    t0 = time.perf_counter()
    assert not vet(None, spec).passed
    assert time.perf_counter() - t0 < 0.5
