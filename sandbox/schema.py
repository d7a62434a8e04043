"""The JSON-schema subset fnforge accepts for function parameters, and hostile-JSON helpers.

Why: a spec comes from an LLM, so its `parameters` is hostile data on the host. A general
JSON-schema validator is a small interpreter: `$ref` makes jsonschema fetch URLs and read files,
`pattern` runs Python's backtracking `re` (catastrophic patterns burn seconds per character),
NaN/Infinity and huge values crash or stall the code that reads them. So:

- `check_schema` / `check_parameters` accept only the subset that function calling uses
  (ALLOWED_KEYWORDS below, plain JSON values within LIMITS) and report every problem as a short
  message a model can act on. Anything else, every `$`-keyword above all, is refused before a
  validator is ever built. Nothing here fetches, opens, evaluates or imports anything.
- `pattern` is allowed, but only through RE2 (google-re2), a linear-time engine: RE2 compiles it
  at check time (a pattern RE2 cannot compile is refused) and RE2 matches it at validation time.
  Python's `re` never sees a spec's pattern.
- `anyOf` and `oneOf` are allowed (bounded): function-calling schemas use them for nullable or
  either-typed arguments (`anyOf: [{"type": "integer"}, {"type": "null"}]`, as pydantic writes).
  `allOf`, `not`, conditionals, `patternProperties`, tuples and `format` are refused: rare in
  function calling, and each is more interpreter than the host needs.
- `validator` builds a jsonschema Draft 2020-12 validator extended so that `pattern` uses RE2,
  `uniqueItems` is linear, and `$ref`/`$dynamicRef` can never resolve (empty registry, no
  retrieval), cached by the schema's canonical JSON; `validate_arguments` is the runtime's check
  before every call.

The policy (keywords, bounds) is the data at the top of this module; policy_hash() in
sandbox/policy.py hashes this file, so any change re-vets every function.
"""

from __future__ import annotations

import functools
import itertools
import json
import keyword
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import jsonschema
import re2
import referencing
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator

from .errors import InvalidArguments, InvalidSpec

__all__ = [
    "ALLOWED_KEYWORDS",
    "APPLIES_TO",
    "ARGUMENT_JSON_LIMITS",
    "JSON_TYPES",
    "LIMITS",
    "REFUSED_KEYWORD_HINTS",
    "SCHEMA_JSON_LIMITS",
    "JsonDataError",
    "JsonLimits",
    "SchemaLimits",
    "check_parameters",
    "check_schema",
    "loads_json",
    "plain_json",
    "read_json_file",
    "validate_arguments",
    "validator",
]

# ---------------------------------------------------------------------------- policy (data)

JSON_TYPES: frozenset[str] = frozenset(
    {"string", "integer", "number", "boolean", "array", "object", "null"})

ALLOWED_KEYWORDS: tuple[str, ...] = (
    "type", "properties", "required", "additionalProperties", "items", "enum", "const",
    "anyOf", "oneOf", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "minLength", "maxLength", "pattern", "minItems", "maxItems", "uniqueItems",
    "description", "title", "default",
)
"""Every keyword a parameters schema may use (JSON Schema Draft 2020-12 meaning; `pattern` in
RE2 syntax; `additionalProperties` true, false or a schema; `items` one schema)."""

APPLIES_TO: dict[str, frozenset[str]] = {
    **dict.fromkeys(("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
                    frozenset({"integer", "number"})),
    **dict.fromkeys(("minLength", "maxLength", "pattern"), frozenset({"string"})),
    **dict.fromkeys(("items", "minItems", "maxItems", "uniqueItems"), frozenset({"array"})),
    **dict.fromkeys(("properties", "required", "additionalProperties"), frozenset({"object"})),
}
"""A keyword next to a "type" it cannot apply to is ignored by validators: always a mistake."""

REFUSED_KEYWORD_HINTS: dict[str, str] = {
    "$ref": "fnforge never resolves references; write the referenced schema inline",
    "$dynamicRef": "fnforge never resolves references; write the referenced schema inline",
    "$defs": "fnforge never resolves references; write each schema inline where it is used",
    "definitions": "fnforge never resolves references; write each schema inline where it is used",
    "$schema": "leave it out: parameters are always read as JSON Schema Draft 2020-12",
    "$id": "leave it out: schemas are never identified or loaded by URI",
    "nullable": 'write "type": ["integer", "null"] (or anyOf with {"type": "null"}) instead',
    "format": "'format' is not enforced; describe the format in 'description' or use 'pattern'",
    "examples": "put examples in 'description'",
    "allOf": "merge the schemas into one",
    "prefixItems": "use an array with one 'items' schema, or separate parameters",
    "patternProperties": "name each property in 'properties'",
    "additionalItems": "use 'items'",
}
"""Refused keywords that models often write, with what to do instead."""


@dataclass(frozen=True)
class SchemaLimits:
    """Bounds on one parameters schema. Function-calling schemas are a few dozen nodes; these
    are far above that and far below what could make checking, validating or generating smoke
    cases slow."""

    max_depth: int = 8            # nested schemas (parameters = 1, a property's schema = 2, ...)
    max_nodes: int = 256          # schema objects in total
    max_properties: int = 64      # per object (the top-level count is policy.SIZE_LIMITS')
    max_enum: int = 128           # enum members
    max_union: int = 8            # anyOf / oneOf branches
    max_types: int = 7            # entries of a "type" list
    max_name_chars: int = 64      # property names
    max_pattern_chars: int = 256
    max_abs_number: float = 2.0**63   # minimum, maximum, exclusive*, multipleOf
    min_multiple_of: float = 1e-12
    max_count: int = 1_000_000    # maxLength, maxItems
    max_min_count: int = 1_000    # minLength, minItems: a smallest valid value stays small
    max_problems: int = 20        # reported per schema (a hostile one could have thousands)
    re2_max_mem: int = 2 << 20    # bytes RE2 may use to compile one pattern


LIMITS = SchemaLimits()


@dataclass(frozen=True)
class JsonLimits:
    """Bounds on a JSON value read from hostile input (a spec, a schema, arguments)."""

    max_depth: int
    max_values: int
    max_chars: int                # all strings and keys together
    max_string_chars: int         # any one string
    max_int_bits: int = 14_000    # ~4200 digits: Python refuses to print ints over 4300


SCHEMA_JSON_LIMITS = JsonLimits(max_depth=2 * LIMITS.max_depth + 8, max_values=4_096,
                                max_chars=64 * 1024, max_string_chars=2_000,
                                max_int_bits=128)
"""A parameters schema as JSON: each schema level is at most two JSON levels (properties, name),
plus room for enum/default values. Descriptions and enum strings up to 2000 characters."""

ARGUMENT_JSON_LIMITS = JsonLimits(max_depth=64, max_values=1_000_000,
                                  max_chars=64 * 1024 * 1024, max_string_chars=64 * 1024 * 1024)
"""Arguments of one call: the runtime bounds the request size; this bounds the shape."""

# ---------------------------------------------------------------------------- hostile JSON


class JsonDataError(ValueError):
    """A value is not bounded, plain JSON data; the message says where and what to change."""


_SURROGATE = re.compile("[\ud800-\udfff]")  # our own constant pattern, never a spec's


def plain_json(value: Any, limits: JsonLimits, where: str = "") -> Any:
    """A copy of `value` made only of dict (string keys), list, str, int, float, bool and None,
    or JsonDataError naming the first problem: a non-finite number, an int too large to print,
    a lone surrogate, a non-string key, too deep, too large. Tuples become lists (as in JSON).
    Recursion is bounded by limits.max_depth, so cycles and deep nesting are refused, not a
    RecursionError."""
    budget = [limits.max_values, limits.max_chars]
    path: list[str | int] = []

    def fail(problem: str) -> NoReturn:
        raise JsonDataError(f"{_path(where, path)}: {problem}")

    def text(s: str) -> str:
        if len(s) > limits.max_string_chars:
            fail(f"a string of {len(s)} characters is over the limit of "
                 f"{limits.max_string_chars}; shorten it")
        budget[1] -= len(s)
        if budget[1] < 0:
            fail(f"the strings add up to more than {limits.max_chars} characters; shorten them")
        if not s.isascii() and _SURROGATE.search(s):
            fail("a string holds a lone surrogate (invalid Unicode); remove it")
        return str(s)

    def copy(v: Any, depth: int) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            fail(f"more than {limits.max_values} values in total; make it smaller")
        if v is None or isinstance(v, bool):
            return v
        if isinstance(v, str):
            return text(v)
        if isinstance(v, int):
            if v.bit_length() > limits.max_int_bits:
                fail(f"an integer of {v.bit_length()} bits is over the limit of "
                     f"{limits.max_int_bits} bits; use a smaller number")
            return int(v)
        if isinstance(v, float):
            if not math.isfinite(v):
                fail(f"{v!r} is not a finite number; JSON has no NaN or Infinity, so use a "
                     "finite number or leave the value out")
            return float(v)
        if isinstance(v, dict | list | tuple):
            if depth >= limits.max_depth:
                fail(f"nested deeper than {limits.max_depth} levels; flatten it")
            if isinstance(v, dict):
                out: dict[str, Any] = {}
                for k, item in v.items():
                    if not isinstance(k, str):
                        fail(f"key {_short(k, 40)} is not a string; JSON object keys are strings")
                    path.append(k)
                    out[text(k)] = copy(item, depth + 1)
                    path.pop()
                return out
            items: list[Any] = []
            for i, item in enumerate(v):
                path.append(i)
                items.append(copy(item, depth + 1))
                path.pop()
            return items
        fail(f"a {type(v).__name__} is not JSON data; use objects, arrays, strings, numbers, "
             "booleans or null")

    return copy(value, 0)


def loads_json(text: str, limits: JsonLimits, where: str) -> Any:
    """Parse hostile JSON text: NaN/Infinity literals and duplicate keys are refused (a reviewer
    and the host must read the same object), deep nesting is an error not a RecursionError, and
    the result passes `plain_json` (so 1e999, which Python parses as inf, is refused too)."""

    def constant(name: str) -> NoReturn:
        raise JsonDataError(f"{where}: {name} is not JSON; use a finite number or leave it out")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise JsonDataError(f"{where}: key {_short(k, 40)} appears twice in one object; "
                                    "keep one")
            out[k] = v
        return out

    try:
        data = json.loads(text, parse_constant=constant, object_pairs_hook=pairs)
    except RecursionError:
        raise JsonDataError(f"{where}: nested too deeply; flatten it") from None
    except JsonDataError:
        raise
    except ValueError as exc:  # JSONDecodeError, and ints over Python's 4300-digit limit
        raise JsonDataError(f"{where} is not valid JSON: {exc}") from None
    return plain_json(data, limits, where)



def read_json_file(path: str | Path, what: str, max_bytes: int, limits: JsonLimits,
                   error: Callable[[str], Exception] = InvalidSpec) -> Any:
    """A JSON file the host must treat as hostile (a spec, a library, a lock file): read at most
    `max_bytes` (+1 to tell), UTF-8 only, parsed with `loads_json`'s limits. Anything else
    raises `error` (the caller's own error class) with one clear message."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(raw) > max_bytes:
        raise error(f"{what} {path} is over {max_bytes // 1024} KiB; check that this is the "
                    "right file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
                    ) from None
    try:
        return loads_json(text, limits, f"{what} {path}")
    except JsonDataError as exc:
        raise error(str(exc)) from None

def _path(root: str, path: list[str | int]) -> str:
    out = root
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p.isidentifier() and len(p) <= 64:
            out += f".{p}" if out else p
        else:
            out += f"[{_short(p, 40)}]"
    return out or "the value"


def _short(value: Any, limit: int = 120) -> str:
    """repr, cut to `limit` characters: messages must stay short whatever the input."""
    try:
        text = _brief_repr(value)
    except (ValueError, RecursionError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _brief_repr(value: Any) -> str:
    """repr, but a long string or a big container is summarised rather than printed whole."""
    if isinstance(value, str) and len(value) > 200:
        return repr(value[:200]) + f"... ({len(value)} characters)"
    if isinstance(value, list | dict) and len(value) > 20:
        return f"<{type(value).__name__} of {len(value)} items>"
    return repr(value)


# ---------------------------------------------------------------------------- the check


def check_schema(schema: Any, where: str = "schema") -> list[str]:
    """Every problem (up to LIMITS.max_problems) that keeps `schema` out of the subset."""
    try:
        plain = plain_json(schema, SCHEMA_JSON_LIMITS, where)
    except JsonDataError as exc:
        return [str(exc)]
    checker = _Checker(where)
    checker.node(plain, [], 1)
    return checker.problems


def check_parameters(params: Any) -> list[str]:
    """check_schema, plus what function calling needs of the top level: an object schema whose
    property names are usable Python parameter names. Messages start with 'parameters'."""
    if not isinstance(params, dict):
        return ["parameters must be a JSON-schema object such as "
                '{"type": "object", "properties": {...}, "required": [...]}']
    problems = check_schema(params, "parameters")
    if params.get("type") != "object":
        problems.insert(0, 'parameters must have "type": "object"')
    props = params.get("properties")
    if isinstance(props, dict):
        for name in itertools.islice(props, LIMITS.max_properties):
            if not isinstance(name, str):
                continue  # check_schema reported it
            if not (name.isidentifier() and name.isascii()) or keyword.iskeyword(name):
                problems.append(f"parameters.properties: {_short(name, 70)} is not a valid "
                                "Python parameter name; use letters, digits and underscores")
            elif name.startswith("_"):
                problems.append(f"parameters.properties: parameter {name!r} must not start "
                                "with '_'")
    return problems[: LIMITS.max_problems]


class _Checker:
    """Walks a plain-JSON schema (depth already bounded) and collects problems."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.problems: list[str] = []
        self.nodes = 0

    def bad(self, path: list[str | int], problem: str) -> None:
        if len(self.problems) < LIMITS.max_problems:
            self.problems.append(f"{_path(self.root, path)}: {problem}")

    def full(self) -> bool:
        return len(self.problems) >= LIMITS.max_problems or self.nodes > LIMITS.max_nodes

    def node(self, schema: Any, path: list[str | int], depth: int) -> None:
        if self.full():
            return
        if not isinstance(schema, dict):
            self.bad(path, f"must be a schema object, not {_short(schema, 40)}")
            return
        self.nodes += 1
        if self.nodes > LIMITS.max_nodes:
            self.bad(path, f"the schema has more than {LIMITS.max_nodes} sub-schemas; "
                     "simplify it")
            return
        if depth > LIMITS.max_depth:
            self.bad(path, f"schemas are nested deeper than {LIMITS.max_depth} levels; "
                     "flatten the parameters")
            return
        for key, value in schema.items():
            here = [*path, key]
            if key in ALLOWED_KEYWORDS:
                self.keyword(key, value, here, depth)
            elif key in REFUSED_KEYWORD_HINTS:
                self.bad(here, f"keyword {key!r} is not allowed: {REFUSED_KEYWORD_HINTS[key]}")
            elif key.startswith("$"):
                self.bad(here, f"keyword {_short(key, 40)} is not allowed: fnforge reads no "
                         "'$' keyword (nothing is ever referenced, identified or loaded)")
            else:
                self.bad(here, f"keyword {_short(key, 40)} is not supported; use only "
                         f"{', '.join(ALLOWED_KEYWORDS)}")
        self.consistency(schema, path)

    def keyword(self, key: str, value: Any, here: list[str | int], depth: int) -> None:
        lim = LIMITS
        if key == "type":
            names = value if isinstance(value, list) else [value]
            if (not names or len(names) > lim.max_types
                    or not all(isinstance(n, str) and n in JSON_TYPES for n in names)
                    or len(set(names)) != len(names)):
                self.bad(here, f"must be one of {', '.join(sorted(JSON_TYPES))} or a list of "
                         "distinct ones")
        elif key == "properties":
            if not isinstance(value, dict):
                self.bad(here, "must be an object mapping property names to schemas")
                return
            if len(value) > lim.max_properties:
                self.bad(here, f"more than {lim.max_properties} properties; use fewer")
                return
            for name, sub in value.items():
                if not name or len(name) > lim.max_name_chars or name.startswith("$"):
                    self.bad([*here, name], f"property names must have 1 to "
                             f"{lim.max_name_chars} characters and not start with '$'")
                self.node(sub, [*here, name], depth + 1)
        elif key == "required":
            if (not isinstance(value, list) or not all(isinstance(n, str) for n in value)
                    or len(set(value)) != len(value)):
                self.bad(here, "must be a list of distinct property names")
        elif key in ("items",):
            self.node(value, here, depth + 1)
        elif key == "additionalProperties":
            if not isinstance(value, bool):
                self.node(value, here, depth + 1)
        elif key in ("anyOf", "oneOf"):
            if not isinstance(value, list) or not 1 <= len(value) <= lim.max_union:
                self.bad(here, f"must be a list of 1 to {lim.max_union} schemas")
                return
            for i, sub in enumerate(value):
                self.node(sub, [*here, i], depth + 1)
        elif key == "enum":
            if not isinstance(value, list) or not 1 <= len(value) <= lim.max_enum:
                self.bad(here, f"must be a list of 1 to {lim.max_enum} values")
        elif key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if isinstance(value, bool) and key.startswith("exclusive"):
                self.bad(here, f"must be a number in JSON Schema 2020-12: write "
                         f'"{key}": 0 instead of "{key[9:].lower()}": 0, "{key}": true')
            elif not _is_number(value) or abs(value) > lim.max_abs_number:
                self.bad(here, f"must be a finite number of magnitude at most "
                         f"{lim.max_abs_number:.3g}")
        elif key == "multipleOf":
            if (not _is_number(value)
                    or not lim.min_multiple_of <= value <= lim.max_abs_number):
                self.bad(here, f"must be a number from {lim.min_multiple_of:g} to "
                         f"{lim.max_abs_number:.3g}")
        elif key in ("minLength", "minItems", "maxLength", "maxItems"):
            top = lim.max_min_count if key.startswith("min") else lim.max_count
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
                self.bad(here, f"must be an integer from 0 to {top}")
        elif key == "uniqueItems":
            if not isinstance(value, bool):
                self.bad(here, "must be true or false")
        elif key in ("description", "title"):
            if not isinstance(value, str):
                self.bad(here, "must be a string")
        elif key == "pattern":
            problem = _pattern_problem(value)
            if problem:
                self.bad(here, problem)
        # "const" and "default": any value; plain_json has bounded it already

    def consistency(self, schema: dict[str, Any], path: list[str | int]) -> None:
        """Mistakes valid JSON Schema accepts silently: a keyword the declared type ignores,
        an empty range, required names without a property, enum values of another type."""
        declared = schema.get("type")
        names = declared if isinstance(declared, list) else [declared]
        types = {t for t in names if isinstance(t, str) and t in JSON_TYPES}
        if types and len(types) == len(names):
            for key in schema:
                applies = APPLIES_TO.get(key)
                if applies is not None and not applies & types:
                    self.bad([*path, key], f"applies to {'/'.join(sorted(applies))} values but "
                             f"the type is {'/'.join(sorted(types))}; remove it or fix 'type'")
            enum = schema.get("enum")
            fixed = {"enum": enum if isinstance(enum, list) else [],
                     "const": [schema["const"]] if "const" in schema else []}
            for key, values in fixed.items():
                wrong = [v for v in values if not any(_json_type_is(v, t) for t in types)]
                if wrong:
                    self.bad([*path, key], f"{_short(wrong[0], 60)} is not of type "
                             f"{'/'.join(sorted(types))}; fix the value or 'type'")
        for lo, hi in (("minimum", "maximum"), ("minLength", "maxLength"),
                       ("minItems", "maxItems"), ("exclusiveMinimum", "exclusiveMaximum")):
            a: Any = schema.get(lo)
            b: Any = schema.get(hi)
            if _is_number(a) and _is_number(b) and (a > b or (a == b and lo[0] == "e")):
                self.bad(path, f"{lo} {a} and {hi} {b} leave no valid value; fix the range")
        required, props = schema.get("required"), schema.get("properties", {})
        if isinstance(required, list) and isinstance(props, dict):
            missing = [r for r in required if isinstance(r, str) and r not in props]
            if missing:
                self.bad([*path, "required"], f"{_short(missing, 80)} not in properties; add a "
                         "schema for each required name or drop it from required")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _json_type_is(v: Any, t: str) -> bool:
    """Draft 2020-12's type test: 1.0 is an integer, True is not a number."""
    if t == "null":
        return v is None
    if t == "boolean":
        return isinstance(v, bool)
    if t == "integer":
        return _is_number(v) and float(v).is_integer()
    if t == "number":
        return _is_number(v)
    if t == "string":
        return isinstance(v, str)
    if t == "array":
        return isinstance(v, list)
    return isinstance(v, dict)


def _re2_options() -> re2.Options:
    options = re2.Options()
    options.max_mem = LIMITS.re2_max_mem
    options.log_errors = False  # RE2 would print every refused pattern on stderr
    return options


_RE2_OPTIONS = _re2_options()


@functools.lru_cache(maxsize=1024)
def _re2_compile(pattern: str) -> Any:
    return re2.compile(pattern, _RE2_OPTIONS)


def _pattern_problem(pattern: Any) -> str | None:
    if not isinstance(pattern, str):
        return "must be a string"
    if len(pattern) > LIMITS.max_pattern_chars:
        return f"longer than {LIMITS.max_pattern_chars} characters; simplify it"
    try:
        _re2_compile(pattern)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "unknown error"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        return (f"RE2 cannot compile {_short(pattern, 60)} ({reason}); patterns run on RE2: "
                r"no backreferences or lookaround, write \x{41} not \u0041")
    return None


# ---------------------------------------------------------------------------- validation


def _re2_pattern(validator: Validator, pattern: str, instance: Any,
                 schema: dict[str, Any]) -> Iterator[ValidationError]:
    """Draft 2020-12 "pattern" (unanchored search), on RE2."""
    if not validator.is_type(instance, "string"):
        return
    try:
        found = _re2_compile(pattern).search(instance) is not None
    except UnicodeEncodeError:
        yield ValidationError(f"{_short(instance, 60)} is not valid Unicode text")
        return
    if not found:
        yield ValidationError(f"{_short(instance, 60)} does not match {pattern!r}")


def _unique_items(validator: Validator, unique: bool, instance: Any,
                  schema: dict[str, Any]) -> Iterator[ValidationError]:
    """jsonschema's fallback is quadratic for lists of objects; this is linear."""
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[str] = set()
    for item in instance:
        key = json.dumps(_normal(item), sort_keys=True)
        if key in seen:
            yield ValidationError(f"{_short(instance, 60)} has non-unique elements")
            return
        seen.add(key)


def _normal(v: Any) -> Any:
    """JSON Schema equality: 1 == 1.0, True != 1; key order and tuple/list do not matter."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, dict):
        return {k: _normal(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_normal(x) for x in v]
    return v


def _refuse_reference(validator: Validator, ref: Any, instance: Any,
                      schema: dict[str, Any]) -> Iterator[ValidationError]:
    """Defence in depth: check_schema refuses references, and they never resolve here."""
    yield ValidationError("references are not resolved")


_SafeValidator: type[Validator] = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    validators={"pattern": _re2_pattern, "uniqueItems": _unique_items,
                "$ref": _refuse_reference, "$dynamicRef": _refuse_reference},
)


_EMPTY_REGISTRY: referencing.Registry[Any] = referencing.Registry()
"""No resources, and referencing's default `retrieve` refuses every URI: nothing is fetched."""


_MAX_CACHED_CHARS = 256 * 1024
"""Canonical schemas longer than this are not cached (the cache then holds at most 64 MiB);
real parameter schemas are a few KiB, and only a pathological one (heavily escaped strings)
could pass the check and be longer: it is then checked again on every call."""


@functools.lru_cache(maxsize=256)
def _compiled(canonical: str, parameters: bool) -> Validator | tuple[str, ...]:
    """The validator for one canonical schema, or its problems (both cached: a bad schema
    sent again costs a lookup). The validator holds its own copy of the schema."""
    schema = json.loads(canonical)
    problems = check_parameters(schema) if parameters else check_schema(schema)
    if problems:
        return tuple(problems)
    return _SafeValidator(schema, registry=_EMPTY_REGISTRY, format_checker=None)


def validator(schema: Any, *, parameters: bool = True) -> Validator:
    """A cached, safe validator for a schema that passes check_parameters (or check_schema with
    parameters=False, for a sub-schema); InvalidSpec naming the problems otherwise. The check
    runs here again on a cache miss: the dict may have changed since the spec was parsed."""
    canonical: str | None
    try:
        canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        canonical = None
    result: Validator | tuple[str, ...]
    if canonical is not None and len(canonical) <= _MAX_CACHED_CHARS:
        result = _compiled(canonical, parameters)
    elif canonical is not None:
        result = _compiled.__wrapped__(canonical, parameters)
    else:
        result = tuple(check_parameters(schema) if parameters else check_schema(schema)) or (
            "the schema is not JSON",)
    if isinstance(result, tuple):
        raise InvalidSpec(f"the schema is refused: {'; '.join(result[:3])}"
                          + (f" (and {len(result) - 3} more)" if len(result) > 3 else ""))
    return result


def validate_arguments(name: str, params: dict[str, Any], args: dict[str, Any]) -> None:
    """Check arguments before a call: plain bounded JSON (finite numbers, string keys, bounded
    depth), then the schema. Raises InvalidArguments with one message, or InvalidSpec if
    `params` itself is refused. Either argument may in fact be anything: both are checked."""
    try:
        plain = plain_json(args, ARGUMENT_JSON_LIMITS, "arguments")
    except JsonDataError as exc:
        raise InvalidArguments(f"arguments for {name} are not JSON-serialisable: {exc} (pass "
                               "numbers, strings, booleans, null, lists and objects)") from None
    if not isinstance(plain, dict):
        raise InvalidArguments(f"arguments for {name} must be a JSON object of parameter "
                               "values")
    check = validator(params)
    try:
        errors = list(itertools.islice(check.iter_errors(plain), 16))
    except RecursionError:
        raise InvalidArguments(f"arguments for {name} are nested too deeply") from None
    if errors:
        first = min(errors, key=lambda e: (len(e.path), [str(p) for p in e.path]))
        where = "/".join(str(p) for p in first.path) or "arguments"
        message = first.message if len(first.message) <= 300 else first.message[:297] + "..."
        raise InvalidArguments(f"arguments do not match the parameters of {name}: "
                               f"{where}: {message}")
