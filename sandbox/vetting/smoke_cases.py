"""Smoke-test arguments generated from a function's JSON schema.

Why: the optimizer LLM's own tests exercise the happy path; smoke cases probe typical and edge
values per type (0, -1, empty strings and lists, unicode, bounds) so a function that hangs, floods
output or crashes the interpreter on ordinary input is rejected before an agent ever calls it.
Every case satisfies the schema (the runtime refuses anything else), and the count is bounded.

The schema is hostile data: only schemas that pass sandbox/schema.py's check are used, every
candidate is filtered with schema.validator (RE2 patterns, no references), and the work is
bounded whatever the schema: each distinct sub-schema is expanded once per run (memoised by its
canonical JSON), keeps at most _MAX_CANDIDATES values, a value over _MAX_VALUE_SIZE is never
built, and validation stops once _MAX_WORK is spent (the remaining nodes get no values; the
cases found so far are kept). No clock is involved: the same schema gives the same cases.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

from ..errors import InvalidSpec
from ..policy import SIZE_LIMITS
from ..schema import validator

__all__ = ["smoke_cases"]

_LARGE_INT = 10**5  # large enough to find quadratic blow-ups, small enough for a loop to finish
_MAX_CANDIDATES = 8  # values kept per schema node
_MAX_VALUE_SIZE = 400  # size of one generated value (JSON values; a string counts 1 + len/32)
_MAX_CASE_SIZE = 2_000  # size of one case (all its arguments)
_MAX_WORK = 50_000  # total size of the values validated in one run: bounds the time (~0.3 s)
_STRINGS = ("x", "", "abc", "x**2 - 1", "Ünïcødé ∑ 数学", "1/3", "0", "-5", "42", "a1", "A",
            "hello world", "2024-01-01", "x@y.z")
"""Candidate strings; for a pattern or length bound, the ones that do not fit are skipped."""

_Cand = tuple[Any, int]  # a value and its size in JSON values


class _Generator:
    """One run over one parameters schema (already checked by sandbox/schema.py)."""

    def __init__(self) -> None:
        self.values: dict[str, list[_Cand]] = {}
        self.work = 0

    def candidates(self, schema: Any) -> list[_Cand]:
        """Typical value first, then edge values, each valid for `schema`, deduplicated."""
        if not isinstance(schema, dict):
            return []
        canonical = json.dumps(schema, sort_keys=True)
        hit = self.values.get(canonical)
        if hit is not None:
            return hit
        check = validator(schema, parameters=False)
        out: list[_Cand] = []
        seen: set[str] = set()
        for value, size in self._raw(schema):
            key = json.dumps(value, sort_keys=True)
            if size > _MAX_VALUE_SIZE or key in seen or self.work + size > _MAX_WORK:
                continue
            self.work += size
            if not check.is_valid(value):
                continue
            seen.add(key)
            out.append((value, size))
            if len(out) >= _MAX_CANDIDATES:
                break
        self.values[canonical] = out
        return out

    def _raw(self, schema: dict[str, Any]) -> list[_Cand]:
        if "const" in schema:
            return [(schema["const"], _size(schema["const"]))]
        if isinstance(schema.get("enum"), list):
            return [(v, _size(v)) for v in schema["enum"]]
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list):
                return [c for sub in branches for c in self.candidates(sub)[:2]]
        declared = schema.get("type")
        if isinstance(declared, str):
            return self._of_type(schema, declared)
        if isinstance(declared, list):
            return [c for t in declared for c in self._of_type(schema, t)[:2]]
        if "properties" in schema:
            return self._of_type(schema, "object")
        if "items" in schema:
            return self._of_type(schema, "array")
        return [(1, 1), ("x", 1), (None, 1), (True, 1)]

    def _of_type(self, schema: dict[str, Any], typ: str) -> list[_Cand]:
        if typ == "integer":
            return [(v, 1) for v in _ints(schema)]
        if typ == "number":
            return [(v, 1) for v in _numbers(schema)]
        if typ == "string":
            return [(v, 1 + len(v) // 32) for v in _strings(schema)]
        if typ == "boolean":
            return [(True, 1), (False, 1)]
        if typ == "null":
            return [(None, 1)]
        if typ == "array":
            return self._arrays(schema)
        if typ == "object":
            return self._objects(schema)
        return []

    def _arrays(self, schema: dict[str, Any]) -> list[_Cand]:
        items = schema.get("items")
        elems = self.candidates(items) if isinstance(items, dict) else [(0, 1), ("x", 1)]
        lengths = [3, 0, 1, 7]
        lo = schema.get("minItems")
        if isinstance(lo, int) and lo > 0:
            lengths.append(lo)
        out: list[_Cand] = []
        for n in lengths:
            if n and not elems:
                continue
            picked = [elems[i % len(elems)] for i in range(n)] if n else []
            size = 1 + sum(s for _, s in picked)
            if size <= _MAX_VALUE_SIZE:
                out.append(([v for v, _ in picked], size))
        return out

    def _objects(self, schema: dict[str, Any]) -> list[_Cand]:
        props = schema.get("properties", {})
        if not isinstance(props, dict):
            return [({}, 1)]
        required = [r for r in schema.get("required", []) if r in props]
        per = {k: self.candidates(v) for k, v in props.items()}
        if any(not per[r] for r in required):
            return []  # a required property has no value we can build
        typical = {k: c[0] for k, c in per.items() if c}
        out: list[_Cand] = []
        for obj in (typical, {k: typical[k] for k in required}):
            out.append(({k: v for k, (v, _) in obj.items()},
                        1 + sum(s for _, s in obj.values())))
        return out


def _size(value: Any) -> int:
    """The size of an enum or const value (small: the schema check bounds them)."""
    if isinstance(value, dict):
        return 1 + sum(_size(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_size(v) for v in value)
    return 1 + len(value) // 32 if isinstance(value, str) else 1


def _number(schema: dict[str, Any], key: str) -> float | None:
    v = schema.get(key)
    return v if isinstance(v, int | float) and not isinstance(v, bool) else None


def _ints(schema: dict[str, Any]) -> list[int]:
    """Typical 3, the bounds (exclusive ones moved inward), 0, +-1, 12, a large one."""
    lo, xlo = _number(schema, "minimum"), _number(schema, "exclusiveMinimum")
    hi, xhi = _number(schema, "maximum"), _number(schema, "exclusiveMaximum")
    los = [math.ceil(lo)] if lo is not None else []
    los += [math.floor(xlo) + 1] if xlo is not None else []
    his = [math.floor(hi)] if hi is not None else []
    his += [math.ceil(xhi) - 1] if xhi is not None else []
    base = [3, *([max(los)] if los else []), *([min(his)] if his else []),
            0, 1, -1, 12, _LARGE_INT]
    step = _number(schema, "multipleOf")
    if step is not None and step >= 1:
        start = math.ceil(max(los) / step) if los else 1
        base[1:1] = [int(step * start), int(step * (start + 1))]
    return base


def _numbers(schema: dict[str, Any]) -> list[float]:
    """Typical 2.5 (or the middle of the range), the bounds (exclusive ones moved inward),
    0, 0.5, -2.5, 1, 1e5."""
    lo, xlo = _number(schema, "minimum"), _number(schema, "exclusiveMinimum")
    hi, xhi = _number(schema, "maximum"), _number(schema, "exclusiveMaximum")
    edges = [v for v in (hi, lo, None if xhi is None else xhi - 0.5,
                         None if xlo is None else xlo + 0.5) if v is not None]
    low = lo if lo is not None else xlo
    high = hi if hi is not None else xhi
    middle = [(low + high) / 2] if low is not None and high is not None else []
    base: list[float] = [2.5, *middle, *edges, 0, 0.5, -2.5, 1, 1e5]
    step = _number(schema, "multipleOf")
    if step is not None:
        start = math.ceil(low / step) if low is not None else 1
        base[1:1] = [step * start, step * (start + 1)]
    return base


def _strings(schema: dict[str, Any]) -> list[str]:
    out = list(_STRINGS)
    lo = schema.get("minLength")
    if isinstance(lo, int) and lo > 0:
        out += ["x" * lo, "a" * lo, "1" * lo]
    return out


def smoke_cases(parameters: dict[str, Any], limit: int | None = None) -> list[dict[str, Any]]:
    """At most `limit` distinct argument dicts valid for `parameters`: one typical case, then
    one case per edge value of each parameter in turn (others typical), then the minimal one.
    A schema that fails sandbox/schema.py's check gets no cases (shape has refused it)."""
    limit = SIZE_LIMITS.max_smoke_cases if limit is None else limit
    try:
        check = validator(parameters)
    except InvalidSpec:
        return []
    props = parameters.get("properties", {})
    required = [r for r in parameters.get("required", []) if r in props]
    gen = _Generator()
    per = {k: gen.candidates(v) for k, v in props.items()}
    if any(not per[r] for r in required):
        return []
    typical = {k: c[0] for k, c in per.items() if c}
    cases: list[dict[str, _Cand]] = [typical]
    # round-robin over parameters, so each gets its edges tried before any gets a second one
    columns = [[(k, c) for c in cands[1:]] for k, cands in per.items()]
    for row in itertools.zip_longest(*columns):
        for cell in row:
            if cell is not None:
                k, c = cell
                cases.append({**typical, k: c})
    cases.append({k: typical[k] for k in required})
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    work = 0
    for case in cases:
        size = sum(s for _, s in case.values())
        if size > _MAX_CASE_SIZE:
            continue
        args = {k: v for k, (v, _) in case.items()}
        key = json.dumps(args, sort_keys=True)
        if key in seen:
            continue
        work += size
        if work > _MAX_WORK:
            break
        if not check.is_valid(args):
            continue
        seen.add(key)
        out.append(args)
        if len(out) >= limit:
            break
    return out
