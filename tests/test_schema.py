"""sandbox/schema.py: the JSON-schema subset for parameters, as a specification.

Each hostile case of issue item 4 is here: references to a live local HTTP server (which must
receive no request) and to file:///etc/passwd, catastrophic patterns (RE2, never Python's `re`),
NaN/Infinity/huge numbers, huge enums, deep nesting, unknown keywords. None of these tests needs
Docker.
"""

from __future__ import annotations

import glob
import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import pytest

import sandbox.schema as S
from sandbox.errors import InvalidArguments, InvalidSpec
from sandbox.schema import (
    LIMITS,
    JsonDataError,
    check_parameters,
    check_schema,
    loads_json,
    plain_json,
    validate_arguments,
    validator,
)
from sandbox.spec import FunctionSpec
from sandbox.vetting.shape import check_shape
from sandbox.vetting.smoke_cases import smoke_cases

CORPUS = sorted(Path(__file__).parent.joinpath("corpus", "benign").glob("*.json"))


def params(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": sorted(props)}


def direct_spec(parameters: Any, tests: tuple[Any, ...] = ()) -> FunctionSpec:
    """A spec built without from_dict, as a caller could: shape must still catch everything."""
    return FunctionSpec(name="f", description="d", parameters=parameters,
                        code="def f(x):\n    return x\n", tests=tests)


def problems_text(p: Any) -> str:
    return " | ".join(check_parameters(p))


# ---------------------------------------------------------------------------- the subset


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_every_benign_corpus_schema_is_in_the_subset(path: Path) -> None:
    data = json.loads(path.read_text())
    assert check_parameters(data["parameters"]) == []
    validator(data["parameters"])


@pytest.mark.parametrize("schema", [
    params(),
    {"type": "object"},
    params(n={"type": "integer", "minimum": 0, "maximum": 10, "description": "count"}),
    params(x={"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "multipleOf": 0.25}),
    params(s={"type": "string", "minLength": 1, "maxLength": 9, "pattern": "^[a-z]+$"}),
    params(a={"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 5,
              "uniqueItems": True}),
    params(o={"type": "object", "properties": {"k": {"type": "string"}}, "required": ["k"],
              "additionalProperties": False}),
    params(o={"type": "object", "additionalProperties": {"type": "number"}}),
    params(e={"type": "string", "enum": ["a", "b"], "default": "a", "title": "E"}),
    params(c={"const": 3}),
    params(n={"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}),
    params(n={"oneOf": [{"type": "integer"}, {"type": "string"}]}),
    params(n={"type": ["integer", "null"]}),
    params(anything={}),
])
def test_the_function_calling_subset_is_accepted(schema: dict[str, Any]) -> None:
    assert check_parameters(schema) == []


@pytest.mark.parametrize(("schema", "expected"), [
    ({"type": "array"}, 'must have "type": "object"'),
    ([1, 2], "must be a JSON-schema object"),
    (params(**{"class": {"type": "integer"}}), "not a valid Python parameter name"),
    (params(_x={"type": "integer"}), "must not start with '_'"),
    (params(n={"type": "nonsense"}), "must be one of"),
    (params(n={"type": "integer", "format": "int32"}), "'format' is not enforced"),
    (params(n={"type": "integer", "nullable": True}), '"type": ["integer", "null"]'),
    (params(n={"allOf": [{"type": "integer"}]}), "merge the schemas"),
    (params(n={"type": "integer", "frobnicate": 1}), "keyword 'frobnicate' is not supported"),
    (params(n={"not": {"type": "integer"}}), "keyword 'not' is not supported"),
    (params(n={"type": "integer", "exclusiveMinimum": True}),
     '"exclusiveMinimum": 0 instead of "minimum": 0'),
    (params(n={"type": "integer", "minLength": 2}), "applies to string values"),
    (params(n={"type": "integer", "enum": ["1"]}), "'1' is not of type integer"),
    (params(n={"type": "integer", "minimum": 5, "maximum": 3}), "leave no valid value"),
    (params(n={"type": "array", "minItems": 10**6}), "integer from 0 to 1000"),
    (params(n={"type": "number", "multipleOf": 0}), "must be a number from"),
    (params(n={"type": "array", "items": [{"type": "integer"}]}), "must be a schema object"),
    (params(n=True), "must be a schema object"),
    ({"type": "object", "properties": {"n": {}}, "required": ["m"]}, "['m'] not in properties"),
    (params(n={"anyOf": []}), "list of 1 to 8 schemas"),
    (params(n={"type": "string", "pattern": 5}), "must be a string"),
    (params(n={"type": "object", "properties": {"$weird": {}}}), "not start with '$'"),
])
def test_mistakes_are_reported_with_what_to_change(schema: Any, expected: str) -> None:
    text = problems_text(schema)
    assert expected in text, text


def test_every_problem_is_reported_at_once_but_boundedly() -> None:
    schema = params(a={"type": "integer", "format": "x"}, b={"type": "nonsense"},
                    c={"$ref": "#/x"})
    assert len(check_parameters(schema)) == 3
    many = params(**{f"p{i}": {"frob": i} for i in range(60)})
    assert len(check_parameters(many)) == LIMITS.max_problems


# ---------------------------------------------------------------------------- references


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _CountingHandler.hits.append(self.path)
        body = b'{"type": "integer"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def schema_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on 127.0.0.1 that records every request it gets."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    _CountingHandler.hits = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _CountingHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _CountingHandler.hits
    finally:
        server.shutdown()
        server.server_close()


def _every_host_path(schema: dict[str, Any], args: dict[str, Any]) -> list[str]:
    """Run a schema through everything on the host that reads parameters; collect messages."""
    out = list(check_parameters(schema))
    for call in (lambda: validator(schema), lambda: validate_arguments("f", schema, args),
                 lambda: FunctionSpec.from_dict({"name": "f", "description": "d",
                                                 "code": "def f(x): return x",
                                                 "parameters": schema})):
        with pytest.raises(InvalidSpec) as info:
            call()
        out.append(str(info.value))
    out += [f.message for f in check_shape(direct_spec(schema, ()))]
    assert smoke_cases(schema) == []
    return out


def test_plain_jsonschema_would_contact_the_server(schema_server: tuple[str, list[str]]) -> None:
    """The control: proves the server works and the hazard is real."""
    url, hits = schema_server
    schema = params(x={"$ref": f"{url}/control.json"})
    with pytest.warns(DeprecationWarning):
        assert jsonschema.Draft202012Validator(schema).is_valid({"x": 1})
    assert hits == ["/control.json"]


@pytest.mark.parametrize("where", ["property", "items", "anyOf", "additionalProperties",
                                   "top", "dynamic", "id", "schema", "defs"])
def test_a_reference_to_a_live_server_is_refused_and_never_fetched(
        schema_server: tuple[str, list[str]], where: str) -> None:
    url, hits = schema_server
    ref = f"{url}/{where}.json"
    schema = {
        "property": params(x={"$ref": ref}),
        "items": params(x={"type": "array", "items": {"$ref": ref}}),
        "anyOf": params(x={"anyOf": [{"type": "null"}, {"$ref": ref}]}),
        "additionalProperties": params(x={"type": "object", "additionalProperties": {"$ref": ref}}),
        "top": {**params(x={"type": "integer"}), "$ref": ref},
        "dynamic": params(x={"$dynamicRef": ref}),
        "id": {**params(x={"$ref": "other.json"}), "$id": ref},
        "schema": {**params(x={"type": "integer"}), "$schema": ref},
        "defs": {**params(x={"$ref": "#/$defs/y"}), "$defs": {"y": {"$ref": ref}}},
    }[where]
    messages = _every_host_path(schema, {"x": 1})
    assert all("not allowed" in m or "refused" in m for m in messages), messages
    time.sleep(0.05)
    assert hits == []


def test_reference_lookalikes_in_values_are_data_and_never_fetched(
        schema_server: tuple[str, list[str]]) -> None:
    url, hits = schema_server
    schema = params(x={"type": "object", "default": {"$ref": f"{url}/default.json"},
                       "enum": [{"$ref": f"{url}/enum.json"}]})
    assert check_parameters(schema) == []
    validate_arguments("f", schema, {"x": {"$ref": f"{url}/enum.json"}})
    with pytest.raises(InvalidArguments):
        validate_arguments("f", schema, {"x": {"$ref": f"{url}/arg.json"}})
    assert hits == []


def test_a_file_reference_is_refused_and_no_file_text_leaks() -> None:
    schema = params(x={"$ref": "file:///etc/passwd"})
    messages = _every_host_path(schema, {"x": 1})
    assert all("write the referenced schema inline" in m for m in messages), messages
    text = " ".join(messages)
    assert "root:" not in text and "/bin/" not in text


def test_even_a_validator_of_the_extended_class_never_resolves() -> None:
    """Defence in depth below the check: the keyword itself refuses, the registry is empty."""
    raw = S._SafeValidator({"$ref": "file:///etc/passwd"}, registry=S._EMPTY_REGISTRY)
    errors = list(raw.iter_errors(1))
    assert [e.message for e in errors] == ["references are not resolved"]


# ---------------------------------------------------------------------------- patterns


CATASTROPHIC = ["^(a+)+$", "(a|aa)+$", "^(a|a?)+$", "(x+x+)+y", "^(([a-z])+.)+[A-Z]([a-z])+$"]


@pytest.fixture
def python_re_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every pattern Python's `re` compiles while the test runs."""
    seen: list[str] = []
    real = re._compile  # type: ignore[attr-defined]

    def spy(pattern: Any, flags: Any) -> Any:
        seen.append(pattern if isinstance(pattern, str) else repr(pattern))
        return real(pattern, flags)

    monkeypatch.setattr(re, "_compile", spy)
    return seen


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_a_catastrophic_pattern_runs_in_linear_time_on_re2(
        pattern: str, python_re_spy: list[str]) -> None:
    schema = params(s={"type": "string", "pattern": pattern})
    assert check_parameters(schema) == []
    spec = direct_spec(schema, ())
    for n in (50, 5_000, 100_000):
        t0 = time.perf_counter()
        with pytest.raises(InvalidArguments, match="does not match"):
            validate_arguments("f", schema, {"s": "a" * n + "!"})
        assert time.perf_counter() - t0 < 0.25, n
    t0 = time.perf_counter()
    check_shape(spec)
    smoke_cases(schema)
    assert time.perf_counter() - t0 < 0.5
    assert pattern not in python_re_spy


def test_python_re_never_sees_a_spec_pattern_anywhere(python_re_spy: list[str]) -> None:
    pattern = "^(q+)+$"
    data = {"name": "f", "description": "d", "code": "def f(s):\n    return s\n",
            "parameters": params(s={"type": "string", "pattern": pattern}),
            "tests": [{"args": {"s": "qq"}, "expect": "qq"}]}
    spec = FunctionSpec.from_dict(data)
    check_shape(spec)
    assert smoke_cases(spec.parameters) == []  # no candidate string matches: none is made
    validate_arguments("f", spec.parameters, {"s": "qqq"})
    with pytest.raises(InvalidArguments):
        validate_arguments("f", spec.parameters, {"s": "q" * 40 + "x"})
    assert pattern not in python_re_spy
    assert not any("q+" in p for p in python_re_spy)


@pytest.mark.parametrize(("pattern", "why"), [
    (r"(a)\1", "backreference"),
    (r"a(?=b)", "lookahead"),
    (r"(?<!a)b", "lookbehind"),
    (r"\u0041", "ECMA escape"),
    ("a{1001}", "huge repetition"),
    ("(", "syntax"),
    ("x" * 300, "too long"),
])
def test_a_pattern_re2_cannot_run_is_refused_clearly(pattern: str, why: str,
                                                      python_re_spy: list[str]) -> None:
    text = problems_text(params(s={"type": "string", "pattern": pattern}))
    assert "pattern" in text
    assert ("RE2 cannot compile" in text) or ("longer than" in text), (why, text)
    assert pattern not in python_re_spy


def test_pattern_semantics_are_json_schemas_unanchored_search() -> None:
    schema = params(s={"type": "string", "pattern": "b"})
    validate_arguments("f", schema, {"s": "abc"})
    anchored = params(s={"type": "string", "pattern": "^b$"})
    with pytest.raises(InvalidArguments, match="does not match"):
        validate_arguments("f", anchored, {"s": "b\n"})  # ECMA/RE2 '$': no trailing newline
    unicode = params(s={"type": "string", "pattern": r"^\p{L}+$"})
    validate_arguments("f", unicode, {"s": "Ünïcødé"})
    with pytest.raises(InvalidArguments):
        validate_arguments("f", params(s={"type": "string", "pattern": "x"}), {"s": "\ud800x"})


# ---------------------------------------------------------------------------- numbers, sizes


@pytest.mark.parametrize("bad", [float("-inf"), float("inf"), float("nan"), 1e300, 10**40,
                                 -(2**64)])
@pytest.mark.parametrize("keyword", ["minimum", "maximum", "exclusiveMinimum", "multipleOf"])
def test_numbers_in_a_schema_are_finite_and_bounded(bad: float, keyword: str) -> None:
    schema = params(n={"type": "number", keyword: bad})
    assert check_parameters(schema), (keyword, bad)
    with pytest.raises(InvalidSpec):
        validator(schema)


@pytest.mark.parametrize("where", ["enum", "default", "const"])
@pytest.mark.parametrize("bad", [float("nan"), float("-inf"), 1e999])
def test_non_finite_values_are_refused_everywhere_in_a_schema(where: str, bad: float) -> None:
    value: Any = [bad] if where == "enum" else bad
    text = problems_text(params(n={"type": "number", where: value}))
    assert "not a finite number" in text


def test_infinity_no_longer_crashes_anything() -> None:
    """The reported crash: "minimum": -Infinity gave a traceback in vetting."""
    schema = params(n={"type": "number", "minimum": float("-inf")})
    spec = direct_spec(schema)
    assert [f.rule for f in check_shape(spec)] == ["shape.parameters"]
    assert smoke_cases(schema) == []


@pytest.mark.parametrize("size", [LIMITS.max_enum + 1, 100_000])
def test_huge_enums_are_refused_quickly(size: int) -> None:
    t0 = time.perf_counter()
    text = problems_text(params(e={"enum": list(range(size))}))
    assert "enum" in text or "values in total" in text
    assert time.perf_counter() - t0 < 0.5


def test_enum_at_the_limit_is_fine() -> None:
    assert check_parameters(params(e={"enum": list(range(LIMITS.max_enum))})) == []


def nested_arrays(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


def test_nesting_is_bounded() -> None:
    ok = params(x=nested_arrays(LIMITS.max_depth - 2))
    assert check_parameters(ok) == []
    deep = params(x=nested_arrays(LIMITS.max_depth))
    assert "nested deeper than" in problems_text(deep)


@pytest.mark.parametrize("depth", [100, 10_000, 200_000])
def test_pathological_nesting_is_refused_without_recursion_errors(depth: int) -> None:
    schema = params(x=nested_arrays(depth))
    t0 = time.perf_counter()
    assert "nested deeper" in problems_text(schema)
    with pytest.raises(InvalidSpec):
        validate_arguments("f", schema, {"x": 1})
    assert time.perf_counter() - t0 < 1.0


def test_a_cyclic_schema_is_refused() -> None:
    inner: dict[str, Any] = {"type": "array"}
    inner["items"] = inner
    assert "nested deeper" in problems_text(params(x=inner))
    with pytest.raises(InvalidSpec):
        validator(params(x=inner))


def test_node_count_properties_and_strings_are_bounded() -> None:
    wide = params(**{f"p{i}": {"type": "object", "properties": {
        f"q{j}": {"type": "integer"} for j in range(LIMITS.max_properties)}}
        for i in range(8)})
    assert "sub-schemas" in problems_text(wide)
    many = {"type": "object", "properties": {f"p{i}": {} for i in range(65)}}
    assert "more than 64 properties" in problems_text(many)
    long_text = params(x={"type": "integer", "description": "d" * 10_000})
    assert "over the limit" in problems_text(long_text)


def test_non_json_and_non_string_keys_are_refused() -> None:
    assert "key 1 is not a string" in problems_text({"type": "object", "properties": {1: {}}})
    assert "not JSON data" in problems_text(params(x={"default": object()}))
    assert "lone surrogate" in problems_text(params(x={"description": "\udc80"}))


# ---------------------------------------------------------------------------- validation


def test_validate_arguments_gives_one_clear_message() -> None:
    add = params(a={"type": "integer"}, b={"type": "integer"})
    validate_arguments("add", add, {"a": 1, "b": 2})
    with pytest.raises(InvalidArguments, match="'b' is a required property"):
        validate_arguments("add", add, {"a": 1})
    with pytest.raises(InvalidArguments, match="a: 'one' is not of type 'integer'"):
        validate_arguments("add", add, {"a": "one", "b": 2})
    with pytest.raises(InvalidArguments, match="must be a JSON object"):
        validate_arguments("add", add, [1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), object(), {1: 2}, 10**5000,
                                 "\ud800"], ids=["inf", "nan", "object", "int-key", "huge-int",
                                                 "surrogate"])
def test_non_json_arguments_are_refused_before_validation(bad: Any) -> None:
    with pytest.raises(InvalidArguments, match="not JSON-serialisable"):
        validate_arguments("f", params(x={}), {"x": bad})


def test_deep_arguments_are_refused_without_recursion_errors() -> None:
    deep: Any = 0
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(InvalidArguments, match="nested deeper"):
        validate_arguments("f", params(x={}), {"x": deep})


def test_unique_items_is_linear() -> None:
    schema = params(xs={"type": "array", "uniqueItems": True})
    items = [{"k": i} for i in range(20_000)]
    t0 = time.perf_counter()
    validate_arguments("f", schema, {"xs": items})
    with pytest.raises(InvalidArguments, match="non-unique"):
        validate_arguments("f", schema, {"xs": [*items, {"k": 7}]})
    assert time.perf_counter() - t0 < 2.0  # jsonschema's own check: ~10^9 comparisons
    with pytest.raises(InvalidArguments, match="non-unique"):
        validate_arguments("f", schema, {"xs": [1, 1.0]})
    validate_arguments("f", schema, {"xs": [1, True, "1", [1], {"a": 1}, {"a": True}]})


def test_validators_are_cached_by_canonical_json_and_rechecked_after_mutation() -> None:
    a: dict[str, Any] = {"type": "object", "properties": {"x": {"type": "integer"}},
                         "required": ["x"]}
    b: dict[str, Any] = {"required": ["x"], "properties": {"x": {"type": "integer"}},
                         "type": "object"}
    assert validator(a) is validator(b)
    a["properties"]["x"]["$ref"] = "file:///etc/passwd"  # after the check and the caching
    with pytest.raises(InvalidSpec, match=r"\$ref"):
        validate_arguments("f", a, {"x": 1})
    validate_arguments("f", b, {"x": 1})  # the cached validator holds its own copy
    del a["properties"]["x"]["$ref"]
    assert validator(a) is validator(b)


def test_a_long_but_valid_schema_is_validated_without_the_cache() -> None:
    schema = params(**{f"p{i}": {"type": "integer", "description": "é" * 1_900}
                       for i in range(32)})
    assert check_parameters(schema) == []
    assert len(json.dumps(schema)) > S._MAX_CACHED_CHARS
    validate_arguments("f", schema, {f"p{i}": i for i in range(32)})
    with pytest.raises(InvalidArguments, match="p3: 'x' is not of type 'integer'"):
        validate_arguments("f", schema, {**{f"p{i}": i for i in range(32)}, "p3": "x"})


def test_validate_cost_per_call_is_small() -> None:
    """The runtime validates before every call. Measured ~30 us on a 2020s x86 core; the bound
    is loose for slow CI machines."""
    schema = params(a={"type": "integer", "minimum": 0}, b={"type": "string"},
                    c={"type": "number"})
    args = {"a": 3, "b": "x**2", "c": 1.5}
    validate_arguments("f", schema, args)
    n = 2_000
    t0 = time.perf_counter()
    for _ in range(n):
        validate_arguments("f", schema, args)
    per_call = (time.perf_counter() - t0) / n
    print(f"validate_arguments: {per_call * 1e6:.1f} us per call (cached, 3 parameters)")
    assert per_call < 500e-6


# ---------------------------------------------------------------------------- hostile JSON


def test_plain_json_copies_and_normalises() -> None:
    original = {"a": (1, 2), "b": {"c": [None, True, 1.5, "s"]}}
    copied = plain_json(original, S.SCHEMA_JSON_LIMITS)
    assert copied == {"a": [1, 2], "b": {"c": [None, True, 1.5, "s"]}}
    assert copied["b"] is not original["b"]


@pytest.mark.parametrize(("text", "expected"), [
    ('{"a": NaN}', "NaN is not JSON"),
    ('{"a": -Infinity}', "-Infinity is not JSON"),
    ('{"a": 1e999}', "not a finite number"),
    ('{"a": 1, "a": 2}', "appears twice"),
    ("[" * 100_000 + "]" * 100_000, "nested"),
    ('{"a": ' + "9" * 5000 + "}", "not valid JSON"),
    ('{"a": "\\ud800"}', "lone surrogate"),
    ("{", "not valid JSON"),
])
def test_loads_json_refuses_what_json_module_accepts(text: str, expected: str) -> None:
    with pytest.raises(JsonDataError, match=expected):
        loads_json(text, S.ARGUMENT_JSON_LIMITS, "input")


def test_check_schema_works_on_sub_schemas() -> None:
    assert check_schema({"type": "integer", "minimum": 0}) == []
    assert check_schema({"$ref": "#"})


def test_public_api_is_complete() -> None:
    for name in S.__all__:
        assert hasattr(S, name), name
    assert set(S.ALLOWED_KEYWORDS) >= {"type", "properties", "required", "items", "enum",
                                       "pattern", "anyOf", "oneOf"}
    assert not any(k.startswith("$") for k in S.ALLOWED_KEYWORDS)
    assert set(S.APPLIES_TO) <= set(S.ALLOWED_KEYWORDS)


def test_the_benign_corpus_round_trips_through_validation() -> None:
    """Every corpus test's arguments validate; sanity for the extended validator."""
    for path in glob.glob(str(Path(__file__).parent / "corpus" / "benign" / "*.json")):
        data = json.loads(Path(path).read_text())
        for test in data.get("tests", []):
            validate_arguments(data["name"], data["parameters"], test["args"])
