"""Smoke-test arguments generated from a function's JSON schema.

Why: the optimizer LLM's own tests exercise the happy path; smoke cases probe typical and edge
values per type (0, -1, empty strings and lists, unicode, bounds) so a function that hangs, floods
output or crashes the interpreter on ordinary input is rejected before an agent ever calls it.
Every case satisfies the schema (the runtime refuses anything else), and the count is bounded.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import jsonschema

from .policy import SIZE_LIMITS

_LARGE_INT = 10**5  # large enough to find quadratic blow-ups, small enough for a loop to finish


def _ints(schema: dict[str, Any]) -> list[Any]:
    lo = schema.get("minimum")
    hi = schema.get("maximum")
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        lo = int(schema["exclusiveMinimum"]) + 1
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        hi = int(schema["exclusiveMaximum"]) - 1
    lo = int(lo) if isinstance(lo, int | float) else None
    hi = int(hi) if isinstance(hi, int | float) else None
    base = [3, 0, 1, -1, 12, _LARGE_INT]
    if lo is not None:
        base.insert(1, lo)
    if hi is not None:
        base.insert(2, hi)
    out = [v for v in base if (lo is None or v >= lo) and (hi is None or v <= hi)]
    return out or [lo if lo is not None else (hi if hi is not None else 0)]


def _numbers(schema: dict[str, Any]) -> list[Any]:
    lo = schema.get("minimum", schema.get("exclusiveMinimum"))
    hi = schema.get("maximum", schema.get("exclusiveMaximum"))
    base: list[Any] = [2.5, 0, 0.5, -2.5, 1, 1e5]
    if isinstance(lo, int | float):
        base.insert(1, lo if "minimum" in schema else lo + 0.5)
    if isinstance(hi, int | float):
        base.insert(1, hi if "maximum" in schema else hi - 0.5)
    out = [v for v in base if jsonschema.Draft202012Validator(schema).is_valid(v)]
    return out or [lo if isinstance(lo, int | float) else 0]


def _strings(schema: dict[str, Any]) -> list[Any]:
    cands = ["x", "", "abc", "x**2 - 1", "Ünïcødé ∑ 数学", "1/3", "0", "-5"]
    return [s for s in cands if jsonschema.Draft202012Validator(schema).is_valid(s)] or ["x"]


def values_for(schema: Any, depth: int = 0) -> list[Any]:
    """Typical value first, then edge values, all valid for `schema`."""
    if not isinstance(schema, dict):
        return [None]
    if "const" in schema:
        return [schema["const"]]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return list(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            vals = [v for sub in schema[key] for v in values_for(sub, depth + 1)[:2]]
            return [v for v in vals if _valid(schema, v)] or vals[:1]
    typ = schema.get("type")
    if isinstance(typ, list):
        vals = [v for t in typ for v in values_for({**schema, "type": t}, depth)[:2]]
        return vals or [None]
    if typ == "integer":
        return _ints(schema)
    if typ == "number":
        return _numbers(schema)
    if typ == "string":
        return _strings(schema)
    if typ == "boolean":
        return [True, False]
    if typ == "null":
        return [None]
    if typ == "array":
        return _arrays(schema, depth)
    if typ == "object" or "properties" in schema:
        return _objects(schema, depth)
    return [1, "x", None]


def _valid(schema: dict[str, Any], value: Any) -> bool:
    try:
        return bool(jsonschema.Draft202012Validator(schema).is_valid(value))
    except (jsonschema.SchemaError, TypeError):
        return False


def _arrays(schema: dict[str, Any], depth: int) -> list[Any]:
    items = schema.get("items", {})
    elems = values_for(items, depth + 1) if depth < 4 else [0]
    prefix = schema.get("prefixItems")
    cands: list[Any] = []
    if isinstance(prefix, list):
        cands.append([values_for(p, depth + 1)[0] for p in prefix])
    cands += [elems[:3], [], elems[:1], (elems * 4)[:7]]
    lo = schema.get("minItems", 0)
    if isinstance(lo, int) and lo > 0:
        cands.append((elems * lo)[:lo] if elems else [])
    return [c for c in cands if _valid(schema, c)] or cands[:1]


def _objects(schema: dict[str, Any], depth: int) -> list[Any]:
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        return [{}]
    required = [r for r in schema.get("required", []) if r in props]
    per = {k: values_for(v, depth + 1) if depth < 4 else [None] for k, v in props.items()}
    typical = {k: v[0] for k, v in per.items()}
    minimal = {k: per[k][0] for k in required}
    out = [typical, minimal]
    return [o for o in out if _valid(schema, o)] or out[:1]


def smoke_cases(parameters: dict[str, Any], limit: int | None = None) -> list[dict[str, Any]]:
    """At most `limit` distinct argument dicts valid for `parameters`: one typical case, then
    one case per edge value of each parameter in turn (others typical), then the minimal one."""
    limit = SIZE_LIMITS.max_smoke_cases if limit is None else limit
    props = parameters.get("properties", {})
    if not isinstance(props, dict):
        return [{}]
    required = [r for r in parameters.get("required", []) if r in props]
    per = {k: values_for(v) for k, v in props.items()}
    typical = {k: v[0] for k, v in per.items()}
    cases: list[dict[str, Any]] = [typical]
    # round-robin over parameters, so each gets its edges tried before any gets a second one
    columns = [[(k, v) for v in vals[1:]] for k, vals in per.items()]
    for row in itertools.zip_longest(*columns):
        for cell in row:
            if cell is not None:
                k, v = cell
                cases.append({**typical, k: v})
    cases.append({k: typical[k] for k in required})
    validator = jsonschema.Draft202012Validator(parameters)
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for case in cases:
        key = json.dumps(case, sort_keys=True, default=str)
        if key in seen or not validator.is_valid(case):
            continue
        seen.add(key)
        out.append(case)
        if len(out) >= limit:
            break
    return out
