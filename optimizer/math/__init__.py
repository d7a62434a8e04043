"""MATH and GSM8K problems (`datasets`) and the one answer checker (`grading`)."""

from __future__ import annotations

from .datasets import (
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
from .families import FAMILIES, Family, family_rule, select
from .grading import Grade, Grader, Reason, extract_answer, grade, reference_answer

__all__ = [
    "FAMILIES",
    "GSM8K_SUBJECT",
    "Family",
    "Grade",
    "Grader",
    "Problem",
    "Reason",
    "Split",
    "data_dir",
    "extract_answer",
    "family_rule",
    "grade",
    "load_gsm8k",
    "load_jsonl",
    "load_math",
    "load_math500",
    "reference_answer",
    "select",
    "split",
]
