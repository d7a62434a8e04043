"""Canonical JSON and the chain's hashes: one definition shared by writer, verifier and export.

Why canonical: the hash of a record must be recomputable by anyone from the stored text (or an
exported JSONL line) with nothing but sha256 and a JSON library: sorted keys, no whitespace,
ASCII only (lone surrogates survive as escapes), no NaN or infinities.

    record hash = sha256(prev_hash_hex + "\\n" + canonical({"seq", "time", "kind", "step",
                                                           "epoch", "data"}))
    record 1's prev_hash = sha256("fnforge-history/1\\n" + run_id)
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

__all__ = [
    "FORMAT",
    "canonical_json",
    "genesis_hash",
    "jsonable",
    "record_content",
    "record_hash",
    "sha256_hex",
    "spec_hash",
]

FORMAT = "fnforge-history/1"
"""The chain's format; part of the genesis hash, so a format change cannot be mixed in."""

_MAX_INT_BITS = 13_000  # about 3900 digits: below Python's int-to-str limit


def jsonable(value: Any) -> Any:
    """Plain JSON data for `value`: what is stored is exactly what is hashed.

    Non-finite floats become "nan"/"inf"/"-inf" (as sandbox results do), tuples and sets lists,
    mapping keys strings, dataclasses and objects with `to_dict()` their dicts; anything else
    its `str()`. Recording must never crash a training run over a value's type."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, int):
        if int(value).bit_length() <= _MAX_INT_BITS:
            return int(value)
        return f"<int of {int(value).bit_length()} bits>"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        items = [jsonable(v) for v in value]
        return sorted(items, key=canonical_json)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return jsonable(to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    return str(value)


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, ASCII, no NaN: the bytes every hash is computed over.

    Raises ValueError for data that is not plain JSON (use `jsonable` first)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def sha256_hex(text: str) -> str:
    """sha256 of text as UTF-8 (lone surrogates kept, as FunctionSpec.code_hash does)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def spec_hash(spec: Mapping[str, Any]) -> str:
    """FunctionSpec.spec_hash of a spec's `to_dict()` form, without parsing it again."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def genesis_hash(run_id: str) -> str:
    """What record 1 chains to: depends on the run, so records cannot move between runs."""
    return sha256_hex(f"{FORMAT}\n{run_id}")


def record_content(seq: int, time: float, kind: str, step: int | None, epoch: int | None,
                   data: Any) -> str:
    """The canonical text of one record's content (everything but the two hashes)."""
    return canonical_json({"seq": seq, "time": time, "kind": kind, "step": step,
                           "epoch": epoch, "data": data})


def record_hash(prev_hash: str, content: str) -> str:
    """One link of the chain: the previous record's hash and this record's content."""
    return hashlib.sha256(f"{prev_hash}\n{content}".encode("ascii")).hexdigest()
