"""Problem families: which problems a function library can help with, chosen by TYPE.

A family is a documented rule over the problem text (a regular expression, case-insensitive),
optionally restricted to subjects. It selects problems by what they ask (remainders, bases,
divisors, ...), never by how a baseline did on them: choosing the problems a model failed makes
any second run look better (regression to the mean).

The rules are data (FAMILIES); `[data] family = "NAME"` picks one, `[data] pattern = "REGEX"`
gives a rule of your own. The split records the rule and the counts it selected (split.json).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import DatasetError
from .datasets import Problem

__all__ = ["FAMILIES", "Family", "family_rule", "select"]


@dataclass(frozen=True)
class Family:
    """A selection rule: `pattern` must match the question; `subjects` (if any) must hold it."""

    name: str
    pattern: str
    subjects: tuple[str, ...] = ()
    description: str = ""

    def matches(self, problem: Problem) -> bool:
        # a problem of unknown subject (a JSONL file without one) is judged by its text alone
        if self.subjects and problem.subject and \
                problem.subject.lower() not in {s.lower() for s in self.subjects}:
            return False
        return re.search(self.pattern, problem.question, re.IGNORECASE) is not None

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "pattern": self.pattern, "subjects": list(self.subjects),
                "description": self.description}


_REMAINDERS = (r"\bremainders?\b|\bmodulo\b|\bmod\b|\\pmod|\\bmod|\\equiv|\bcongruen"
               r"|\bunits? digit|\bones digit|\blast (?:two |three )?digits?\b")
_BASES = r"\bbase[ -]?(?:\d+|ten|two|eight|sixteen)\b|\bin base\b|\d_\{?\d+\}?"
_DIVISORS = (r"\bdivisors?\b|\bfactors? of\b|\bprime factori[sz]ation\b|\bgreatest common"
             r"|\bleast common multiple\b|\\gcd|\blcm\b|\bGCD\b|\bLCM\b")

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("number-theory", f"{_REMAINDERS}|{_BASES}|{_DIVISORS}", ("Number Theory",),
           "remainders and modular arithmetic, units digits, bases, divisors, gcd/lcm"),
    Family("remainders", _REMAINDERS, ("Number Theory",),
           "remainders, congruences, units and last digits"),
    Family("bases", _BASES, ("Number Theory",), "numbers written in other bases"),
    Family("divisors", _DIVISORS, ("Number Theory", "Prealgebra"),
           "divisors, factorizations, gcd and lcm"),
    Family("counting", r"\\d?binom|\bchoose\b|\bfactorial\b|\d!|\bpermutations?\b"
           r"|\bcombinations?\b|\barrangements?\b", ("Counting & Probability",),
           "binomial coefficients, factorials, arrangements"),
)}


def family_rule(family: str, pattern: str) -> Family | None:
    """The rule a [data] table names: a known family, a pattern of its own, or none."""
    if family and pattern:
        raise DatasetError("give [data] family or [data] pattern, not both")
    if family:
        try:
            return FAMILIES[family]
        except KeyError:
            raise DatasetError(f"unknown problem family {family!r}; known: "
                               f"{', '.join(sorted(FAMILIES))} (or set [data] pattern)") from None
    if pattern:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise DatasetError(f"[data] pattern is not a valid regular expression: {exc}") \
                from None
        return Family("custom", pattern)
    return None


def select(problems: Sequence[Problem], rule: Family | None) -> list[Problem]:
    """The problems the rule selects (all of them without a rule), order kept."""
    return list(problems) if rule is None else [p for p in problems if rule.matches(p)]
