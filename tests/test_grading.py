"""Specification of answer checking (optimizer.math.grading).

Tables first: which answers are equivalent (graded in both directions), which are not, and how
the final answer is extracted. Then the hostile inputs (each must finish within a bound and leave
the pool working), the pool's behaviour under threads and dead workers, and the CLI end to end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from optimizer.errors import GraderError
from optimizer.math import grading
from optimizer.math.grading import (
    MAX_SCAN_CHARS,
    Grade,
    Grader,
    extract_answer,
    grade,
    reference_answer,
)

ROOT = Path(__file__).resolve().parents[1]

# (reference answer, response answer): equal, whichever of the two is the reference.
EQUIVALENT: list[tuple[str, str]] = [
    # numbers in different dress
    ("7", "7.0"),
    ("7", "7.00"),
    (r"\frac{3}{4}", "0.75"),
    (r"\frac34", "3/4"),
    (r"\frac{3}{4}", ".75"),
    (r"\frac{1}{2}", r"\frac{2}{4}"),
    (r"\frac{7}{2}", "3.5"),
    ("1.25", r"\frac54"),
    (r"-\frac{1}{2}", "-0.5"),
    (r"\frac{-1}{2}", r"-\frac12"),
    ("-3", "- 3"),
    ("-3", "\u22123"),  # unicode minus
    ("0", "-0"),
    ("12", "012"),
    ("1000000", "10^6"),
    ("2000", r"2 \times 10^3"),
    ("18", "18.00"),
    # thousands separators
    ("2000", "2,000"),
    (r"10,\!000", "10000"),
    ("1{,}000", "1000"),
    ("1,000,000", "1000000"),
    ("1000", r"1\,000"),
    (r"\frac{12}{5,\!525}", r"\frac{12}{5525}"),
    # radicals, pi
    (r"\frac{\sqrt{2}}{2}", r"\sqrt{2}/2"),
    (r"\frac{\sqrt2}{2}", r"\frac{1}{\sqrt{2}}"),
    (r"2\sqrt{3}", r"\sqrt{12}"),
    (r"3\sqrt{2}", r"\sqrt{18}"),
    (r"\sqrt{2}", "2^{1/2}"),
    (r"\sqrt{2}", "\u221a2"),
    (r"\sqrt[3]{2}", "2^{1/3}"),
    (r"\pi/2", r"\frac{\pi}{2}"),
    (r"\frac{\pi}{2}", "\u03c0/2"),
    (r"4\pi", r"4 \pi"),
    # fraction commands and delimiters
    (r"\dfrac{1}{2}", r"\frac12"),
    (r"\tfrac{1}{2}", "0.5"),
    ("(1,2)", r"\left( 1, 2 \right)"),
    ("[-2, 3]", r"\left[ -2, 3 \right]"),
    # tuples, intervals, sets
    ("(3, -1)", "(3,-1)"),
    ("(1, 2]", "(1,2]"),
    (r"[0, \infty)", r"\left[0,\infty\right)"),
    (r"(-\infty, 0) \cup (1, \infty)", r"(-\infty,0)\cup(1,\infty)"),
    (r"\left(-\frac{1}{2}, 3\right)", "(-0.5, 3)"),
    ("1, 2", "2, 1"),  # "all solutions, separated by commas": a set
    ("1,2,3", "3,2,1"),
    ("100, 200", "100,200"),  # the reference is a list, so 100,200 is two numbers
    (r"\{1, 2\}", r"\{2,1\}"),
    (r"\pm 2", "2, -2"),
    ("2+2i, -2-2i", r"-2-2i,\,2+2i"),
    # text
    (r"\text{Monday}", "Monday"),
    ("Monday", r"\text{monday}"),
    (r"\text{Monday}", r"\text{Monday.}"),
    (r"\text{even}", "Even"),
    (r"\text{Devon and Sam}", "devon and sam"),
    (r"\text{(C)}", "C"),
    (r"\textbf{(A)}", "(A)"),
    ("Monday", r"\mbox{Monday}"),
    ("3", r"\text{3}"),
    # units, money, degrees, percent
    (r"5 \text{ cm}", "5"),
    ("5", r"5\mbox{ cm}"),
    (r"5\text{ cm}^2", "5"),
    ("5", r"\text{5 cm}"),
    (r"2 \text{ inches}", "2"),
    ("6", r"6\text{ square units}"),
    (r"\$18", "18"),
    (r"\$18.00", "18"),
    (r"\$42", "42 dollars"),
    (r"30^\circ", "30"),
    ("30", r"30^{\circ}"),
    ("30", "30\u00b0"),
    ("30", "30 degrees"),
    (r"50\%", "50"),  # a percentage matches its number ...
    (r"40\%", "0.4"),  # ... and its value as a fraction
    (r"\frac{2}{5}", r"40\%"),
    # equations, expressions
    ("x = 5", "5"),
    ("k = 3", "3"),
    ("y = 2x + 3", "2x+3"),
    ("x^2+2x+1", "(x+1)^2"),
    ("x^2-1", "(x-1)(x+1)"),
    (r"x \in [1,2]", "[1,2]"),
    # complex numbers
    ("3+4i", "4i+3"),
    ("1-i", "-i+1"),
    ("5-12i", "5 - 12 i"),
    ("-2i", "-2 i"),
    # matrices and vectors
    (
        r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
        r"\begin{pmatrix}1&2\\3&4\end{pmatrix}",
    ),
    (
        r"\begin{pmatrix} \frac{3}{5} \\ -4/13 \end{pmatrix}",
        r"\begin{pmatrix} 0.6 \\ -\frac{4}{13} \end{pmatrix}",
    ),
]

# (reference answer, response answer): different, whichever of the two is the reference.
NOT_EQUIVALENT: list[tuple[str, str]] = [
    (r"\frac{1}{2}", "2"),
    ("(1,2)", "(2,1)"),
    ("(1,2,3)", "(3,2,1)"),
    (r"\frac{1}{3}", "0.333"),
    ("-3", "3"),
    ("x+1", "x-1"),
    ("(1,2]", "(1,2)"),
    ("[1,2]", "(1,2)"),
    ("[1, 2)", "[1,2]"),
    ("(1, 2)", "[1, 2]"),
    ("7", "7.1"),
    ("2", "2.0000001"),
    ("2000", "200"),
    ("2,000", "2"),
    ("1000", "1,000,0"),
    ("12", "1,2"),  # not a thousands separator: a list of two numbers
    ("1,2", "1.2"),
    ("2", "1,2"),
    ("1,2", "1,3"),
    ("(1,2,3)", "(1,2)"),
    (r"\{1,2\}", r"\{1,2,3\}"),
    ("3+4i", "3-4i"),
    ("1+i", "1-i"),
    ("1", "i"),
    (r"\text{Monday}", "Tuesday"),
    (r"\text{yes}", r"\text{no}"),
    (r"\text{A}", r"\text{B}"),
    (r"\sqrt{2}", "2"),
    (r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt{2}}{2}"),
    (r"\sqrt{2}/2", r"\sqrt{3}/2"),
    (r"2\pi", "2"),
    ("e", r"\pi"),
    (
        r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
        r"\begin{pmatrix} 1 & 2 \\ 4 & 3 \end{pmatrix}",
    ),
    (r"30^\circ", "60"),
    (r"\frac{\pi}{3}", r"60^\circ"),  # degrees are dropped, never converted to radians
    ("5", r"6 \text{ cm}"),
    (r"50\%", "5"),
    ("50", "0.5"),
    ("x^2", "x^3"),
    ("3", "3x"),
    ("x=5", "x=6"),
    ("x=5", "y=5"),
    (r"\infty", r"-\infty"),
    ("(0,1)", "(0,-1)"),
    ("50", "5"),
    ("0", "1"),
    ("10", "100"),
    ("0.1", "0.01"),
    (r"\frac{1}{4}", r"\frac{1}{2}"),
    ("24", "24!"),
    (r"\pm 2", "2"),
]


def _both_ways(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [p for a, b in pairs for p in ((a, b), (b, a))]


def _wrap(answer: str) -> str:
    return f"We simplify and check the cases.\n\nTherefore the answer is $\\boxed{{{answer}}}$."


@pytest.fixture(scope="module")
def grader() -> Iterator[Grader]:
    with Grader(workers=2, timeout=20.0) as g:  # generous: correctness, not speed, is tested
        yield g


@pytest.fixture(scope="module")
def strict() -> Iterator[Grader]:
    """A grader with a short deadline, for hostile answers."""
    with Grader(workers=1, timeout=1.0) as g:
        yield g


def test_tables_are_wide() -> None:
    assert len(EQUIVALENT) + len(NOT_EQUIVALENT) >= 60
    assert len(set(EQUIVALENT)) == len(EQUIVALENT)
    assert len(set(NOT_EQUIVALENT)) == len(NOT_EQUIVALENT)


@pytest.mark.parametrize(("reference", "answer"), _both_ways(EQUIVALENT))
def test_equivalent(grader: Grader, reference: str, answer: str) -> None:
    assert grader.grade(_wrap(answer), reference) == Grade(True, answer, "match")


@pytest.mark.parametrize(("reference", "answer"), _both_ways(NOT_EQUIVALENT))
def test_not_equivalent(grader: Grader, reference: str, answer: str) -> None:
    assert grader.grade(_wrap(answer), reference) == Grade(False, answer, "mismatch")


# ------------------------------------------------------------------------------------------
# Extraction

EXTRACTION: list[tuple[str, str | None]] = [
    (r"so $\boxed{5}$.", "5"),
    (r"first \boxed{3}, but wait, it is \boxed{4}", "4"),  # the last box wins
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),  # nested braces
    (r"\boxed{\left\{ 1, 2 \right\}}", r"\left\{ 1, 2 \right\}"),  # escaped braces
    (r"\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"),
    (r"the answer is \fbox{12}", "12"),
    (r"our answer is $\boxed 2$.", "2"),
    (r"thus \boxed 57.", "57"),
    (r"\boxed {6}", "6"),
    (r"$\boxed{}$ then $\boxed{8}$", "8"),  # an empty box is no answer
    (r"\boxed{7} and then \boxed{9", "7"),  # an unclosed box is skipped
    (r"\boxed{\boxed{5}}", "5"),
    (r"a \\boxed{3} b", "3"),  # over-escaped, as models sometimes write it
    ("The final answer is $\\frac{3}{4}$. I hope it is correct.", r"\frac{3}{4}"),
    ("Final Answer: The final answer is 42. I hope it is correct.", "42"),
    ("**Answer:** 17", "17"),
    ("Answer:\n\n$$x = 3$$", "x = 3"),
    ("She earns 9 * 2 = 18 dollars.\n#### 18", "18"),
    ("#### 1,200", "1,200"),
    ("The answer is $18.", "18"),  # a lone dollar is currency
    ("So the answer is 3.5.", "3.5"),
    ("#### Step 1\nAdd them up.", None),  # a markdown heading is not a GSM8K answer
    ("I am not sure.", None),
    ("", None),
    ("{{{{}}}}", None),
    ("\\boxed{" * 1000, None),
]


@pytest.mark.parametrize(("response", "expected"), EXTRACTION)
def test_extract_answer(response: str, expected: str | None) -> None:
    assert extract_answer(response) == expected


def test_loose_marker_counts_only_near_the_end() -> None:
    early = "the answer is 5 unless we are careful. " + "We keep working. " * 100
    assert extract_answer(early) is None
    assert extract_answer(early + "So the answer is 6.") == "6"


def test_box_wins_over_markers() -> None:
    assert extract_answer(r"\boxed{3}. Answer: 4") == "3"


@pytest.mark.parametrize(
    "response",
    [
        "answer" + " " * 19_990 + "x",  # backtracking between adjacent whitespace repeats
        "final answer" + " " * 19_980 + "x",
        "\\" * 19_999 + "x",  # backtracking over a run of backslashes
        "\\boxed 5" * 3_000,  # space-form arguments running to the end
        "####" + " " * 19_990 + "x",
        "answer" + " " * 6_000 + "*" * 6_000 + " " * 6_000 + "x",
        "\\boxed" + " " * 19_990 + "x",
    ],
    ids=["answer-spaces", "final-spaces", "backslashes", "space-boxes", "hash-spaces",
         "answer-stars", "boxed-spaces"],
)
def test_extraction_is_linear(response: str) -> None:
    # Each of these took 0.5-1 s with a quadratic pattern; linear extraction takes ~5 ms.
    started = time.monotonic()
    extract_answer(response)
    assert time.monotonic() - started < 0.3


def test_only_the_tail_is_scanned() -> None:
    assert extract_answer(r"\boxed{1}" + "x" * MAX_SCAN_CHARS) is None
    assert extract_answer("x" * 10 * MAX_SCAN_CHARS + r"\boxed{1}") == "1"


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        (r"Adding, we get $\boxed{2}$ asymptotes.", "2"),
        (r"So $x = \boxed{\frac{1}{2}}$ or $\boxed{3}$.", "3"),
        ("16 - 3 - 4 = <<16-3-4=9>>9\n#### 1,234", "1234"),
        (r"\left( 3, \frac{\pi}{2} \right)", r"\left( 3, \frac{\pi}{2} \right)"),
        ("  42\n", "42"),
    ],
)
def test_reference_answer(reference: str, expected: str) -> None:
    assert reference_answer(reference) == expected


def test_empty_reference_is_an_error(grader: Grader) -> None:
    with pytest.raises(ValueError, match="no answer"):
        grader.grade(r"\boxed{1}", "  ")


def test_no_answer_is_wrong_not_an_error(grader: Grader) -> None:
    assert grader.grade("I could not solve it.", "5") == Grade(False, None, "no-answer")


def test_reference_forms(grader: Grader) -> None:
    solution = r"Thus there are $\boxed{2}$ vertical asymptotes."
    assert grader.grade(r"It has \boxed{2.0}", solution).correct
    assert grader.grade("#### 1234", "Add them.\n#### 1,234").correct
    assert grader.grade(r"\boxed{1,234}", "Add them.\n#### 1,234").correct


def test_module_level_grade() -> None:
    assert grade(r"\boxed{0.5}", r"\frac12") == Grade(True, "0.5", "match")


# ------------------------------------------------------------------------------------------
# Hostile input: bounded time, no harm to the host, the pool keeps working

HOSTILE_ANSWERS = [
    r"9^{9^{9^{9}}}",
    r"10^{10^{10}}",
    r"2^{2^{2^{2^{2^{2}}}}}",  # about 900 MB if left to run
    r"(10^{10})!",
    r"99999999999^{99999999999}",
    "\\frac{" * 90 + "1" + "}{2}" * 90,
]


@pytest.mark.parametrize("answer", HOSTILE_ANSWERS, ids=lambda a: a[:20])
def test_hostile_answer_is_bounded(strict: Grader, answer: str) -> None:
    started = time.monotonic()
    result = strict.grade(f"$\\boxed{{{answer}}}$", "5")
    assert time.monotonic() - started < 8.0  # 1 s deadline + a replacement worker's start
    assert not result.correct
    assert result.reason in ("timeout", "mismatch")
    assert strict.grade(r"\boxed{7.0}", "7") == Grade(True, "7.0", "match")


@pytest.mark.parametrize(
    "response",
    [
        "x" * 1_000_000 + r"\boxed{5}",
        "{" * 1_000_000,
        "}" * 1_000_000,
        "\\boxed{" * 200_000,
        "\\boxed 5" * 100_000,
        "\\" * 1_000_001,
        "\\boxed{" + "\\frac{" * 10_000 + "}{}" * 10_000 + "}",
        "the answer is " * 100_000,
        "#### " * 200_000,
        "\\boxed{" + "1" * (grading.MAX_ANSWER_CHARS + 1) + "}",
    ],
    ids=lambda r: f"{r[:12]}...{len(r)}",
)
def test_huge_or_pathological_response_is_fast(strict: Grader, response: str) -> None:
    started = time.monotonic()
    result = strict.grade(response, "5")
    assert time.monotonic() - started < 2.0
    assert result.reason in ("match", "mismatch", "no-answer")


def test_timeout_is_logged(strict: Grader, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="optimizer.math.grading"):
        result = strict.grade(r"\boxed{9^{9^{9^{9}}}}", "5")
    assert result == Grade(False, "9^{9^{9^{9}}}", "timeout")
    assert "timed out" in caplog.text


def test_dead_worker_is_replaced(caplog: pytest.LogCaptureFixture) -> None:
    with Grader(workers=1, timeout=10.0) as g:
        assert g.grade(r"\boxed{7.0}", "7").correct
        [pid] = g.worker_pids()
        os.kill(pid, signal.SIGKILL)
        with caplog.at_level("WARNING", logger="optimizer.math.grading"):
            assert g.grade(r"\boxed{0.5}", r"\frac12") == Grade(False, "0.5", "error")
        assert "died" in caplog.text
        assert g.grade(r"\boxed{0.5}", r"\frac12").correct
        assert g.worker_pids() != [pid]


def test_memory_limit_applies_to_workers() -> None:
    with Grader(workers=1, memory_bytes=32 << 20) as g, pytest.raises(GraderError, match="start"):
        g.grade(r"\boxed{7.0}", "7")


# ------------------------------------------------------------------------------------------
# The pool


def test_workers_start_lazily_and_stop_on_close() -> None:
    g = Grader(workers=2, timeout=10.0)
    assert g.live_workers == 0
    assert g.grade(r"\boxed{7}", "7").correct  # the string fast path needs no worker
    assert g.live_workers == 0
    assert g.grade(r"\boxed{7.0}", "7").correct
    pids = g.worker_pids()
    assert len(pids) == 1
    g.close()
    assert g.live_workers == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(GraderError, match="closed"):
        g.grade(r"\boxed{7.0}", "7")


def test_many_threads_share_the_pool() -> None:
    pairs = [(f"\\boxed{{{k / 4}}}", f"\\frac{{{k}}}{{4}}") for k in range(1, 41)]
    pairs += [(f"\\boxed{{{k / 4 + 1}}}", f"\\frac{{{k}}}{{4}}") for k in range(1, 41)]
    expected = [True] * 40 + [False] * 40
    results: dict[int, list[bool]] = {}
    peak = 0
    with Grader(workers=2, timeout=20.0) as g:

        def work(n: int) -> None:
            nonlocal peak
            results[n] = [g.grade(r, ref).correct for r, ref in pairs[n::8]]
            peak = max(peak, g.live_workers)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert g.grade_many(pairs) and [x.correct for x in g.grade_many(pairs)] == expected
    for n in range(8):
        assert results[n] == expected[n::8]
    assert peak <= 2


# ------------------------------------------------------------------------------------------
# CLI


def _run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "optimizer", "grade", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )


def _write_jsonl(path: Path, rows: list[dict[str, str] | str]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


CLI_ROWS: list[dict[str, str] | str] = [
    {"response": r"so \boxed{7.0}", "reference": "7"},
    {"response": "no idea", "reference": "7"},
    {"response": r"\boxed{3}", "reference": r"the total is $\boxed{4}$."},
    {"response": "#### 1,234", "reference": "x\n#### 1234"},
    {"response": r"\boxed{\frac{1}{2}}", "reference": "0.5", "id": "extra fields are ignored"},
]
CLI_EXPECTED = [
    {"correct": True, "extracted": "7.0", "reason": "match"},
    {"correct": False, "extracted": None, "reason": "no-answer"},
    {"correct": False, "extracted": "3", "reason": "mismatch"},
    {"correct": True, "extracted": "1,234", "reason": "match"},
    {"correct": True, "extracted": r"\frac{1}{2}", "reason": "match"},
]


def test_cli_grades_in_input_order(tmp_path: Path) -> None:
    src = _write_jsonl(tmp_path / "in.jsonl", CLI_ROWS)
    done = _run_cli("--jsonl", str(src))
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == CLI_EXPECTED
    assert "RuntimeWarning" not in done.stderr


def test_cli_writes_out_file(tmp_path: Path) -> None:
    src = _write_jsonl(tmp_path / "in.jsonl", CLI_ROWS * 30)  # long enough for the bar
    out = tmp_path / "out.jsonl"
    done = _run_cli("--jsonl", str(src), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == CLI_EXPECTED * 30


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"response": "x"}), "missing field 'reference'"),
        (json.dumps({"response": 3, "reference": "3"}), "'response' must be a string"),
        (json.dumps(["response", "reference"]), "expected a JSON object"),
        (json.dumps({"response": "x", "reference": ""}), "no answer"),
    ],
)
def test_cli_bad_line_exits_2_after_writing_earlier_lines(
    tmp_path: Path, bad: str, message: str
) -> None:
    src = _write_jsonl(tmp_path / "in.jsonl", [*CLI_ROWS[:3], bad, CLI_ROWS[0]])
    done = _run_cli("--jsonl", str(src))
    assert done.returncode == 2
    assert f"{src}:4: " in done.stderr
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert [json.loads(line) for line in done.stdout.splitlines()] == CLI_EXPECTED[:3]


def test_cli_missing_file_exits_2(tmp_path: Path) -> None:
    done = _run_cli("--jsonl", str(tmp_path / "absent.jsonl"))
    assert done.returncode == 2
    assert "absent.jsonl" in done.stderr


def test_grade_command_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write_jsonl(tmp_path / "in.jsonl", CLI_ROWS[:2])
    assert grading.grade_command(["--jsonl", str(src), "--workers", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == CLI_EXPECTED[:2]
