"""The history store: one append-only, hash-chained SQLite database per run (RUN/history.sqlite).

Why SQLite in WAL mode with synchronous=FULL: every record is one transaction that is on disk
(the WAL fsynced) before `record()` returns, so a crash loses nothing already reported, and a
reviewer can read the file with nothing but the `sqlite3` tool.

Schema (checked exactly by `verify`):

    records(seq INTEGER PRIMARY KEY, time REAL, kind TEXT, step INTEGER, epoch INTEGER,
            data TEXT (canonical JSON object), prev_hash TEXT, hash TEXT)
    meta(key TEXT PRIMARY KEY, value TEXT): format, run_id, created, head_seq, head_hash
    PRAGMA application_id = 0x666e6667 ("fnfg"), user_version = 1

Records are only ever inserted. The one thing updated is the head pointer in `meta` (head_seq,
head_hash), in the same transaction as each insert: it is how removing the last records is
detected. Record 1 is kind "genesis" (data: format, run_id, created); its prev_hash is
`genesis_hash(run_id)`. See canonical.py for the hash of a record.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import sqlite3
import threading
import time as _time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import HistoryError
from ..events import Event, EventSink
from .canonical import (
    FORMAT,
    canonical_json,
    genesis_hash,
    jsonable,
    record_content,
    record_hash,
)

__all__ = [
    "APPLICATION_ID",
    "HISTORY_FILE",
    "KNOWN_KINDS",
    "SCHEMA",
    "USER_VERSION",
    "HistoryStore",
    "Record",
    "connect_readonly",
    "fit_record",
    "history_path",
    "llm_hashes",
]

HISTORY_FILE = "history.sqlite"
APPLICATION_ID = 0x666E6667
USER_VERSION = 1
MAX_RECORD_CHARS = 32 << 20
"""One record's data as canonical JSON; a bigger one is a bug in the caller, not a record."""

_RECORDS_SQL = (
    "CREATE TABLE records (seq INTEGER PRIMARY KEY, time REAL NOT NULL, kind TEXT NOT NULL, "
    "step INTEGER, epoch INTEGER, data TEXT NOT NULL, prev_hash TEXT NOT NULL, "
    "hash TEXT NOT NULL)")
_META_SQL = "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"

SCHEMA: frozenset[tuple[str, str, str, str | None]] = frozenset({
    ("table", "records", "records", _RECORDS_SQL),
    ("table", "meta", "meta", _META_SQL),
    ("index", "sqlite_autoindex_meta_1", "meta", None),
})
"""sqlite_master as the store creates it: (type, name, tbl_name, sql). Anything else (a trigger,
a view, an index, a changed column) is a change to the file made by something other than fnforge."""

KNOWN_KINDS = frozenset({
    "genesis", "run", "llm_call", "prompt", "proposal", "vet", "applied", "refused", "dropped",
    "terminate", "decision", "early_stop", "registered", "removed", "step", "call",
    "conversation", "metrics", "approval",
})
"""Kinds the review knows how to show; others are stored and verified all the same."""

_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")


def history_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / HISTORY_FILE


@dataclass(frozen=True)
class Record:
    """One row of the chain, as stored."""

    seq: int
    time: float
    kind: str
    step: int | None
    epoch: int | None
    data: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time, "kind": self.kind, "step": self.step,
                "epoch": self.epoch, "data": self.data, "prev_hash": self.prev_hash,
                "hash": self.hash}


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A connection that cannot change the file (no checkpoint, no recovery writes)."""
    if not path.is_file():
        raise HistoryError(f"no history at {path}: is this a run directory?")
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA trusted_schema=OFF")
    except sqlite3.Error as exc:
        raise HistoryError(f"cannot open {path}: {exc}") from None
    return conn


class HistoryStore:
    """Appends records to RUN/history.sqlite, each committed and fsynced before returning.

    Thread-safe, and safe across processes (each append takes SQLite's write lock and reads the
    head inside it), so a reviewer's `review approve` can append while a run is going."""

    def __init__(self, path: Path, conn: sqlite3.Connection, run_id: str) -> None:
        self.path = path
        self.run_id = run_id
        self.epoch: int | None = None
        """Default epoch for records that give none (the sink's); the training loop sets it."""
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.Lock()

    # -- opening ----------------------------------------------------------------------------------
    @classmethod
    def open(cls, run_dir: str | Path, *, run_id: str | None = None,
             create: bool = True) -> HistoryStore:
        """Create RUN/history.sqlite, or continue its chain (after a crash too).

        An existing history must be intact at its end (the last record hashes correctly and is
        the head); a run_id, when given, must be the history's own."""
        path = history_path(run_dir)
        if not path.exists():
            if not create:
                raise HistoryError(f"no history at {path}: is this a run directory?")
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                   timeout=60.0)
        except sqlite3.Error as exc:
            raise HistoryError(f"cannot open {path}: {exc}") from None
        try:
            conn.execute("PRAGMA trusted_schema=OFF")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise HistoryError(f"{path}: SQLite refused WAL mode ({mode}); put the run "
                                   "directory on a local file system")
            conn.execute("PRAGMA synchronous=FULL")
            actual_id = cls._initialize(conn, path, run_id)
            cls._check_tail(conn, path)
        except sqlite3.Error as exc:
            conn.close()
            raise HistoryError(f"{path} is not a usable history: {exc}; run "
                               "`python -m optimizer review verify` on the run") from None
        except BaseException:
            conn.close()
            raise
        return cls(path, conn, actual_id)

    @staticmethod
    def _initialize(conn: sqlite3.Connection, path: Path, run_id: str | None) -> str:
        conn.execute("BEGIN IMMEDIATE")
        try:
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                new_id = run_id or uuid.uuid4().hex
                if not new_id.isprintable() or not 0 < len(new_id) <= 200:
                    raise HistoryError("run_id must be printable text of 1 to 200 characters")
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {USER_VERSION}")
                conn.execute(_RECORDS_SQL)
                conn.execute(_META_SQL)
                created = _time.time()
                conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
                    ("format", FORMAT), ("run_id", new_id), ("created", repr(created)),
                    ("head_seq", "0"), ("head_hash", genesis_hash(new_id))])
                _append(conn, "genesis", {"format": FORMAT, "run_id": new_id,
                                          "created": created}, None, None, created)
                conn.execute("COMMIT")
                return new_id
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if app_id != APPLICATION_ID or tables != {"records", "meta"}:
            raise HistoryError(f"{path} is not an fnforge history (or its schema was changed); "
                               "use another run directory")
        meta = {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        if meta.get("format") != FORMAT:
            raise HistoryError(f"{path} is a history of format {meta.get('format')!r}; this "
                               f"fnforge writes {FORMAT}")
        existing = meta.get("run_id", "")
        if run_id is not None and run_id != existing:
            raise HistoryError(f"{path} belongs to run {existing!r}, not {run_id!r}")
        return existing

    @staticmethod
    def _check_tail(conn: sqlite3.Connection, path: Path) -> None:
        """Never extend a chain whose end was altered: the new records would hide it."""
        head_seq, head_hash = _head(conn)
        row = conn.execute("SELECT seq, time, kind, step, epoch, data, prev_hash, hash "
                           "FROM records ORDER BY seq DESC LIMIT 1").fetchone()
        why = None
        if row is None or row[0] != head_seq or row[7] != head_hash:
            why = "its last record is not the recorded head"
        else:
            try:
                content = record_content(row[0], row[1], row[2], row[3], row[4],
                                         json.loads(row[5]))
            except (TypeError, ValueError):
                why = "its last record does not parse"
            else:
                if record_hash(row[6], content) != row[7]:
                    why = "its last record does not match its hash"
        if why:
            raise HistoryError(f"{path} cannot be continued: {why}. Run `python -m optimizer "
                               "review verify` on the run and keep the file as evidence")

    # -- writing ----------------------------------------------------------------------------------
    def record(self, kind: str, data: Mapping[str, Any], *, step: int | None = None,
               epoch: int | None = None, time: float | None = None) -> int:
        """Append one record; it is on disk when this returns. Returns its sequence number."""
        if not isinstance(kind, str) or not _KIND.match(kind):
            raise HistoryError(f"record kind must be a short lowercase identifier, not "
                               f"{kind!r:.60}")
        if kind == "genesis":
            raise HistoryError("only the store writes the genesis record")
        if not isinstance(data, Mapping):
            raise HistoryError(f"record data must be a mapping, not {type(data).__name__}")
        for label, value in (("step", step), ("epoch", epoch)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise HistoryError(f"{label} must be an integer or None, not {value!r:.60}")
        epoch = self.epoch if epoch is None else epoch
        when = round(float(_time.time() if time is None else time), 6)
        if not math.isfinite(when):
            raise HistoryError(f"record time must be a finite number, not {time!r}")
        try:
            clean = jsonable(data)
            canonical_json(clean)
        except (ValueError, RecursionError) as exc:
            raise HistoryError(f"a {kind} record's data cannot be stored as JSON: "
                               f"{type(exc).__name__}") from None
        with self._lock:
            conn = self._conn
            if conn is None:
                raise HistoryError(f"the history {self.path} is closed")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    seq = _append(conn, kind, clean, step, epoch, when)
                    conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise HistoryError(f"cannot write to the history {self.path}: {exc}") from None
            return seq

    @property
    def sink(self) -> EventSink:
        """`AgentOptimizer(events=store.sink)`: every optimizer event becomes a record.

        llm_call records gain request_hash and response_hash (sha256 of their canonical JSON),
        which `verify` recomputes. A failed write raises: training must not go on unrecorded."""
        return self._write_event

    def _write_event(self, event: Event) -> None:
        data = fit_record(event.data)
        if event.kind == "llm_call":
            data.update(llm_hashes(data))
        self.record(event.kind, data, step=event.step, time=event.time)

    # -- reading ----------------------------------------------------------------------------------
    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last record: pin it to detect a rewritten history later."""
        with self._lock:
            if self._conn is None:
                raise HistoryError(f"the history {self.path} is closed")
            return _head(self._conn)

    def records(self) -> Iterator[Record]:
        """Every record, in order (as stored: run `verify` to know they are intact)."""
        with self._lock:
            if self._conn is None:
                raise HistoryError(f"the history {self.path} is closed")
            rows = self._conn.execute("SELECT seq, time, kind, step, epoch, data, prev_hash, "
                                      "hash FROM records ORDER BY seq").fetchall()
        for row in rows:
            yield Record(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6],
                         row[7])

    # -- closing ----------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HistoryStore({str(self.path)!r}, run_id={self.run_id!r})"


def fit_record(data: Mapping[str, Any], limit: int = MAX_RECORD_CHARS - 4096) -> dict[str, Any]:
    """An event's data within the record limit: as it is when it fits; else its longest strings
    cut (halving a common cap) until it does, each saying how long it was. An event is recorded,
    however large the model or a container made it; the hashes are of what is stored."""
    try:
        clean: dict[str, Any] = jsonable(dict(data))
        size = len(canonical_json(clean))
        cap = limit
        while size > limit and cap > 64:
            cap //= 2
            clean = _cap_strings(clean, cap)
            size = len(canonical_json(clean))
    except (ValueError, RecursionError) as exc:  # record() says so for data given directly
        return {"cut": True, "unstorable": type(exc).__name__,
                "fields": sorted(map(str, data))[:100]}
    if size > limit:  # structure alone is over: keep what it was, not what it said
        clean = {"cut": True, "chars": size, "fields": sorted(clean)[:100]}
    return clean


def _cap_strings(value: Any, cap: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= cap else f"{value[:cap]} [... cut from {len(value)}]"
    if isinstance(value, dict):
        return {k: _cap_strings(v, cap) for k, v in value.items()}
    if isinstance(value, list):
        return [_cap_strings(v, cap) for v in value]
    return value


def llm_hashes(data: Mapping[str, Any]) -> dict[str, str]:
    """request_hash and response_hash of an llm_call's data (what verify recomputes)."""
    return {"request_hash": _hash_of(data.get("request")),
            "response_hash": _hash_of(data.get("response"))}


def _hash_of(value: Any) -> str:
    return hashlib.sha256(canonical_json(jsonable(value)).encode("ascii")).hexdigest()


def _head(conn: sqlite3.Connection) -> tuple[int, str]:
    meta = dict(conn.execute(
        "SELECT key, value FROM meta WHERE key IN ('head_seq', 'head_hash')").fetchall())
    try:
        return int(meta["head_seq"]), str(meta["head_hash"])
    except (KeyError, ValueError):
        raise HistoryError("the history's head pointer is missing or damaged") from None


def _append(conn: sqlite3.Connection, kind: str, data: Any, step: int | None,
            epoch: int | None, when: float) -> int:
    """Insert the next record and move the head, inside the caller's write transaction."""
    head_seq, head_hash = _head(conn)
    seq = head_seq + 1
    text = canonical_json(data)
    if len(text) > MAX_RECORD_CHARS:
        raise HistoryError(f"a {kind} record of {len(text)} characters is over the "
                           f"{MAX_RECORD_CHARS >> 20} MiB limit")
    digest = record_hash(head_hash, record_content(seq, when, kind, step, epoch, data))
    conn.execute("INSERT INTO records (seq, time, kind, step, epoch, data, prev_hash, hash) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (seq, when, kind, step, epoch, text, head_hash, digest))
    conn.execute("UPDATE meta SET value = ? WHERE key = 'head_seq'", (str(seq),))
    conn.execute("UPDATE meta SET value = ? WHERE key = 'head_hash'", (digest,))
    return seq
