"""sandbox/spec.py: FunctionSpec.from_dict and load treat a spec as hostile data.

The accepted forms stay accepted (parameters, upstream's "arguments" map or JSON string, packages
as a string); everything else is one InvalidSpec naming the field and what to change. No Docker.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

from sandbox.errors import InvalidSpec
from sandbox.spec import MAX_SPEC_BYTES, FunctionSpec, FunctionTest
from sandbox.vetting.shape import check_shape

CORPUS = sorted(Path(__file__).parent.joinpath("corpus", "benign").glob("*.json"))
ADD = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
       "required": ["a", "b"]}


def spec_data(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "add", "description": "Add two integers.",
                            "parameters": copy.deepcopy(ADD),
                            "code": "def add(a, b):\n    return a + b\n", "packages": [],
                            "tests": [{"args": {"a": 1, "b": 2}, "expect": 3}]}
    data.update(over)
    return {k: v for k, v in data.items() if v is not ...}


def refused(data: Any) -> str:
    with pytest.raises(InvalidSpec) as info:
        FunctionSpec.from_dict(data)
    return str(info.value)


# ---------------------------------------------------------------------------- accepted forms


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_the_benign_corpus_loads_and_round_trips(path: Path) -> None:
    spec = FunctionSpec.load(path)
    again = FunctionSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.spec_hash == spec.spec_hash
    assert check_shape(spec) == []


def test_the_plain_form() -> None:
    spec = FunctionSpec.from_dict(spec_data())
    assert spec.parameters == ADD and spec.tests[0].expect == 3


def test_upstream_arguments_as_a_bare_properties_map() -> None:
    spec = FunctionSpec.from_dict(spec_data(parameters=..., arguments=ADD["properties"]))
    assert spec.parameters == {**ADD, "required": ["a", "b"]}


def test_upstream_arguments_json_encoded_as_a_string() -> None:
    spec = FunctionSpec.from_dict(spec_data(parameters=...,
                                            arguments=json.dumps(ADD["properties"])))
    assert spec.parameters["properties"] == ADD["properties"]


def test_arguments_holding_a_whole_object_schema() -> None:
    spec = FunctionSpec.from_dict(spec_data(parameters=..., arguments=ADD))
    assert spec.parameters == ADD


def test_no_parameters_means_no_arguments() -> None:
    spec = FunctionSpec.from_dict(spec_data(parameters=..., code="def add():\n    return 1\n",
                                            tests=[]))
    assert spec.parameters == {"type": "object", "properties": {}, "required": []}


def test_packages_as_a_space_separated_string() -> None:
    assert FunctionSpec.from_dict(spec_data(packages="sympy  numpy")).packages == (
        "sympy", "numpy")


def test_the_spec_keeps_its_own_copy() -> None:
    data = spec_data()
    spec = FunctionSpec.from_dict(data)
    data["parameters"]["properties"]["a"]["$ref"] = "file:///etc/passwd"
    data["tests"][0]["args"]["a"] = float("nan")
    assert "$ref" not in spec.parameters["properties"]["a"]
    assert spec.tests[0].args == {"a": 1, "b": 2}


def test_tuples_are_read_as_json_arrays() -> None:
    spec = FunctionSpec.from_dict(spec_data(packages=("sympy",),
                                            tests=({"args": {"a": 1, "b": 2}, "expect": 3},)))
    assert spec.packages == ("sympy",) and len(spec.tests) == 1


# ---------------------------------------------------------------------------- refused forms


@pytest.mark.parametrize(("data", "expected"), [
    ([1, 2], "must be a JSON object, got list"),
    (None, "must be a JSON object, got NoneType"),
    (spec_data(code=...), "'code' must be a non-empty string"),
    (spec_data(name="  "), "'name' must be a non-empty string"),
    (spec_data(description=5), "'description' must be a string"),
    (spec_data(extra=1), "unknown spec field(s) 'extra'; use only name"),
    (spec_data(arguments={"a": {}}), "either 'parameters' or 'arguments', not both"),
    (spec_data(parameters=[1]), "'parameters' must be a JSON-schema object"),
    (spec_data(parameters=..., arguments="{not json"), "'arguments' is not valid JSON"),
    (spec_data(parameters=..., arguments=[1]), "'arguments' must be an object of properties"),
    (spec_data(packages=[1]), "'packages' must be a list of at most 32 package names"),
    (spec_data(packages=["x"] * 33), "'packages' must be a list of at most 32"),
    (spec_data(tests={}), "'tests' must be a list"),
    (spec_data(tests=[{"args": {}}]), "exactly one of 'expect' or 'expect_error'"),
    (spec_data(tests=[{"args": {}, "expect": 1, "why": 2}]), "unknown fields"),
    (spec_data(tests=[{"args": 1, "expect": 1}]), "'args' object"),
    (spec_data(tests=[{"args": {}, "expect_error": "not a name"}]), "name an exception type"),
    (spec_data(parameters={"type": "array"}), "'parameters' is refused: parameters must have"),
    (spec_data(parameters={"type": "object", "properties": {"class": {}}}),
     "not a valid Python parameter name"),
])
def test_malformed_specs_are_refused_naming_the_field(data: Any, expected: str) -> None:
    assert expected in refused(data)


def messages_are_single_sentences(message: str) -> bool:
    return "\n" not in message and len(message) < 1_000


# ---------------------------------------------------------------------------- hostile values


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")],
                         ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["minimum", "enum", "default", "args", "expect", "nested"])
def test_non_finite_numbers_are_refused_anywhere(bad: float, where: str) -> None:
    props: dict[str, dict[str, Any]] = {"a": {"type": "number"}, "b": {"type": "integer"}}
    tests: list[dict[str, Any]] = [{"args": {"a": 1, "b": 2}, "expect": 3}]
    if where in ("minimum", "default"):
        props["a"][where] = bad
    elif where == "enum":
        props["a"]["enum"] = [1, bad]
    elif where == "args":
        tests[0]["args"]["a"] = bad
    elif where == "expect":
        tests[0]["expect"] = bad
    else:
        tests[0]["expect"] = {"roots": [[1.0, bad]]}
    message = refused(spec_data(parameters={**ADD, "properties": props}, tests=tests))
    assert "not a finite number" in message and messages_are_single_sentences(message)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
def test_non_finite_literals_in_a_spec_file_are_refused(tmp_path: Path, literal: str) -> None:
    text = json.dumps(spec_data()).replace('"expect": 3', f'"expect": {literal}')
    assert literal in text
    path = tmp_path / "spec.json"
    path.write_text(text)
    with pytest.raises(InvalidSpec, match=r"not JSON|not a finite number"):
        FunctionSpec.load(path)


def test_a_huge_integer_is_refused() -> None:
    assert "bits is over the limit" in refused(spec_data(tests=[{"args": {"a": 10**5000,
                                                                           "b": 1},
                                                                  "expect": 1}]))


def test_the_reported_ref_and_pattern_specs_are_refused() -> None:
    for bad in ({"$ref": "http://127.0.0.1:8000/schema.json"}, {"$ref": "file:///etc/passwd"}):
        message = refused(spec_data(parameters={**ADD, "properties": {"a": bad, "b": {}}}))
        assert "'$ref' is not allowed" in message and "root:" not in message


def test_a_catastrophic_pattern_is_accepted_but_only_ever_runs_on_re2() -> None:
    data = spec_data(parameters={"type": "object", "required": ["a", "b"], "properties": {
        "a": {"type": "string", "pattern": "^(a+)+$"}, "b": {"type": "integer"}}},
        tests=[{"args": {"a": "a" * 50 + "b", "b": 1}, "expect_error": "ValueError"}])
    t0 = time.perf_counter()
    spec = FunctionSpec.from_dict(data)
    findings = check_shape(spec)
    assert time.perf_counter() - t0 < 0.5
    assert [f.rule for f in findings] == ["shape.test-args"]
    assert "does not match" in findings[0].message


def test_a_pattern_re2_refuses_is_refused_by_from_dict() -> None:
    data = spec_data(parameters={"type": "object", "properties": {
        "a": {"type": "string", "pattern": r"(a)\1"}}})
    assert "RE2 cannot compile" in refused(data)


def test_huge_enums_and_deep_nesting_are_refused() -> None:
    big_enum = {"type": "object", "properties": {"a": {"enum": list(range(10_000))}}}
    assert "'parameters' is refused" in refused(spec_data(parameters=big_enum))
    deep: Any = {"type": "integer"}
    for _ in range(20):
        deep = {"type": "array", "items": deep}
    message = refused(spec_data(parameters={"type": "object", "properties": {"a": deep}}))
    assert "nested deeper" in message
    very_deep: Any = 1
    for _ in range(100_000):
        very_deep = [very_deep]
    message = refused(spec_data(tests=[{"args": {"a": very_deep, "b": 1}, "expect": 1}]))
    assert "nested deeper than 48 levels" in message


def test_a_cyclic_spec_is_refused() -> None:
    data = spec_data()
    data["tests"][0]["expect"] = data["tests"]
    assert "nested deeper" in refused(data)


def test_unknown_schema_keywords_are_refused() -> None:
    params = {"type": "object", "properties": {"a": {"type": "string", "format": "email"}}}
    assert "'format' is not enforced" in refused(spec_data(parameters=params))


def test_non_string_keys_are_refused() -> None:
    assert "key 1 is not a string" in refused(spec_data(tests=[{"args": {1: 2}, "expect": 1}]))
    assert "is not a string" in refused({**spec_data(), None: 1})


@pytest.mark.parametrize("field", ["name", "description", "code", "args", "key", "packages"])
def test_lone_surrogates_are_refused_everywhere(field: str) -> None:
    s = "x\ud800"
    data = {
        "name": spec_data(name=s), "description": spec_data(description=s),
        "code": spec_data(code=s), "packages": spec_data(packages=[s]),
        "args": spec_data(tests=[{"args": {"a": s, "b": 1}, "expect": 1}]),
        "key": spec_data(tests=[{"args": {s: 1}, "expect": 1}]),
    }[field]
    assert "lone surrogate" in refused(data)


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("name", "add\x1b[2J", "'name' must be a short Python identifier"),
    ("description", "Adds.\x1b]0;pwned\x07", "control or bidirectional override"),
    ("description", "Adds \u202etwo\u202c numbers", "control or bidirectional override"),
    ("code", "def add(a, b):\n    return a + b\0\n", "NUL character"),
])
def test_control_characters_are_refused_where_they_mislead(field: str, value: str,
                                                           expected: str) -> None:
    assert expected in refused(spec_data(**{field: value}))


def test_newlines_and_tabs_in_a_description_are_fine() -> None:
    FunctionSpec.from_dict(spec_data(description="Adds.\n\tReturns an int. Ünïcødé ∑ fine."))


def test_a_spec_over_the_size_limit_is_refused() -> None:
    message = refused(spec_data(description="d" * (MAX_SPEC_BYTES + 1)))
    assert "over the limit" in message


# ---------------------------------------------------------------------------- files


def test_a_10_mb_spec_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    big = spec_data(description="d" * (10 * 1024 * 1024))
    path.write_text(json.dumps(big))
    t0 = time.perf_counter()
    with pytest.raises(InvalidSpec, match="over 1024 KiB"):
        FunctionSpec.load(path)
    assert time.perf_counter() - t0 < 0.5


def test_a_10_gb_sparse_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    with open(path, "wb") as fh:
        fh.truncate(10 * 1024**3)  # sparse: no disk used; reading it all would take minutes
    t0 = time.perf_counter()
    with pytest.raises(InvalidSpec, match="over 1024 KiB"):
        FunctionSpec.load(path)
    assert time.perf_counter() - t0 < 0.5


def test_a_spec_file_at_the_limit_is_read(tmp_path: Path) -> None:
    data = spec_data(description="d")
    text = json.dumps(data)
    padded = text[:-1] + " " * (MAX_SPEC_BYTES - len(text)) + "}"
    assert len(padded.encode()) == MAX_SPEC_BYTES
    path = tmp_path / "spec.json"
    path.write_text(padded)
    assert FunctionSpec.load(path).name == "add"


@pytest.mark.parametrize(("content", "expected"), [
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"name": "a", "name": "b"}', "appears twice"),
    (b"[" * 200_000, "nested too deeply|not valid JSON"),
    (b"{", "not valid JSON"),
    (b'{"name": "x", "code": "' + b"9" * 10 + b'", "tests": [{"args": {}, "expect": '
     + b"9" * 5000 + b"}]}", "not valid JSON"),
])
def test_malformed_spec_files_are_refused(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "spec.json"
    path.write_bytes(content)
    with pytest.raises(InvalidSpec, match=expected):
        FunctionSpec.load(path)


def test_an_unreadable_spec_file_is_an_invalid_spec(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="cannot read spec file"):
        FunctionSpec.load(tmp_path / "missing.json")
    with pytest.raises(InvalidSpec, match="cannot read spec file"):
        FunctionSpec.load(tmp_path)


def test_a_spec_file_name_with_odd_characters_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "spec ünï.json"
    path.write_text(json.dumps(spec_data()))
    assert FunctionSpec.load(path).name == "add"


# ---------------------------------------------------------------------------- shape


def test_shape_catches_the_same_problems_in_a_directly_built_spec() -> None:
    """FunctionSpec(...) bypasses from_dict; shape reports the parameters and tests."""
    spec = FunctionSpec(name="add", description="d", code="def add(a, b):\n    return a\n",
                        parameters={**ADD, "properties": {"a": {"$ref": "#/x"}, "b": {}}},
                        tests=())
    assert {f.rule for f in check_shape(spec)} == {"shape.parameters"}
    spec = FunctionSpec(name="add", description="d", code="def add(a, b):\n    return a\n",
                        parameters=ADD,
                        tests=(FunctionTest(args={"a": float("nan"), "b": 1}, expect=1),
                               FunctionTest(args={"a": 1, "b": 1}, expect=float("inf"))))
    rules = [f.rule for f in check_shape(spec)]
    assert rules == ["shape.test-args", "shape.tests"]


def test_every_message_is_one_short_sentence() -> None:
    cases = [spec_data(code=...), spec_data(tests=[{"args": {}}]),
             spec_data(parameters={"type": "object", "properties": {
                 f"p{i}": {"frob": 1} for i in range(50)}})]
    for data in cases:
        message = refused(data)
        assert messages_are_single_sentences(message), message
