"""The run's history: a tamper-evident record of every proposal, verdict and call; its review.

    HistoryStore        RUN/history.sqlite: append-only, hash-chained, fsynced per record;
                        `AgentOptimizer(events=store.sink)`
    call_data           the data of a "call" record from a CallResult
    verify_history      check the chain, the schema and every code hash (VerifyReport, its
                        HistoryDefect list)
    build_review        versions (NAME@N), verdicts, calls, the best library and the last
                        trial set; render_html
    build_lock, LockFile, load_locked_library
                        approved functions pinned by hash, and loading only those
    export_jsonl        every record as a JSONL line
    review_command      the CLI (`python -m optimizer review ...`)

Kinds and their data: the optimizer's (optimizer/events.py), plus "genesis" (written by the
store), "run", "call", "conversation", "metrics" and "approval" (see README, history section).
"""

from __future__ import annotations

from ..errors import HistoryBroken, HistoryError, LockError, UnknownVersion
from .calls import CODE_BLOCK, call_data
from .canonical import canonical_json, record_content, record_hash
from .cli import review_command
from .export import export_jsonl
from .html import render_html
from .lock import LOCK_FILE, LockedFunction, LockFile, build_lock, load_locked_library
from .review import FunctionVersion, Review, build_review, parse_ref
from .store import HISTORY_FILE, HistoryStore, Record
from .verify import HistoryDefect, VerifyReport, read_history, verify_history

__all__ = [
    "CODE_BLOCK",
    "HISTORY_FILE",
    "LOCK_FILE",
    "FunctionVersion",
    "HistoryBroken",
    "HistoryDefect",
    "HistoryError",
    "HistoryStore",
    "LockError",
    "LockFile",
    "LockedFunction",
    "Record",
    "Review",
    "UnknownVersion",
    "VerifyReport",
    "build_lock",
    "build_review",
    "call_data",
    "canonical_json",
    "export_jsonl",
    "load_locked_library",
    "parse_ref",
    "read_history",
    "record_content",
    "record_hash",
    "render_html",
    "review_command",
    "verify_history",
]
