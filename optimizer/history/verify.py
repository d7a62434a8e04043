"""Verification: is RUN/history.sqlite exactly what fnforge wrote, record by record?

What `verify` checks, in one read-only pass (a consistent snapshot, even while a run appends):
- the file: SQLite opens it and its quick_check passes (a truncated or overwritten file fails);
- the schema: application_id, user_version and sqlite_master exactly as the store creates them
  (no added trigger, view, index or column, nothing dropped); meta holds format and run_id;
- the sequence: records numbered 1, 2, 3, ... without a gap, a duplicate or a stray number;
- each record: column types, a known-format kind, data that is a canonical JSON object, and its
  hash recomputed from its prev_hash and content (any edit of any column is caught here);
- the chain: record 1 is the genesis of this run (its prev_hash derives from the run id, so rows
  cannot be transplanted from another run), and each prev_hash is the previous record's hash
  (deletion, insertion and reordering break it);
- the head: meta's head pointer is the last record (removing records from the end is caught);
- content: every proposal's code_hash is recomputed from its stored code; every vet report
  matches its record (function, code and spec hash, verdict) and vets code proposed earlier;
  every vet verdict agrees with its own stages and findings; every applied add/revise applies
  code whose vetting passed earlier; llm_call request and
  response hashes are recomputed; every approval names an existing NAME@VERSION (a version is
  a distinct spec: code, description, parameters, tests) with that version's code hash and spec
  hash (and an approval only a version whose very spec passed vetting);
- a pin, when given (`--expect-head`, or a lock file's head): that hash is a record of the chain.

What it cannot detect: a whole history rewritten by someone who can write the file and
recomputes every hash and the head pointer (the chain is not signed), including dropping records
from the end that way. Against that, pin the head: `review verify` prints the head hash, lock
files carry it, and `verify --expect-head HASH` fails if that record is no longer in the chain.
Nor can it tell whether the writer told the truth: events never recorded, a wrong clock, or audit
events a function's own process suppressed (audit events are evidence, not proof).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .canonical import (
    FORMAT,
    canonical_json,
    genesis_hash,
    record_content,
    record_hash,
    sha256_hex,
    spec_hash,
)
from .store import (
    APPLICATION_ID,
    SCHEMA,
    USER_VERSION,
    Record,
    connect_readonly,
    history_path,
    llm_hashes,
)

__all__ = ["HistoryDefect", "VerifyReport", "read_history", "verify_history"]

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
_MAX_PROBLEMS = 200


@dataclass(frozen=True)
class HistoryDefect:
    """One thing verification found broken in a history: `seq` is the record (None: the file
    or its schema as a whole). Not a math problem (optimizer.math.Problem)."""

    seq: int | None
    check: str  # file, schema, meta, sequence, record, hash, chain, head, content, pin
    message: str

    @property
    def where(self) -> str:
        return "the file" if self.seq is None else f"record {self.seq}"

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "check": self.check, "message": self.message}


@dataclass(frozen=True)
class VerifyReport:
    """The verdict on one history. `first_broken` is what the CLI names."""

    path: str
    run_id: str | None
    records: int
    head_seq: int | None
    head_hash: str | None
    problems: tuple[HistoryDefect, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_broken(self) -> HistoryDefect | None:
        return self.problems[0] if self.problems else None

    def summary(self) -> str:
        if self.ok:
            return (f"history intact: {self.records} records, run {self.run_id}, "
                    f"head record {self.head_seq} {self.head_hash}")
        first = self.problems[0]
        more = len(self.problems) - 1
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        return f"history BROKEN at {first.where} [{first.check}]: {first.message}{tail}"

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "path": self.path, "run_id": self.run_id,
                "records": self.records, "head_seq": self.head_seq,
                "head_hash": self.head_hash,
                "first_broken": self.first_broken.seq if self.first_broken else None,
                "problems": [p.to_dict() for p in self.problems]}


def verify_history(run_dir: str | Path, *, expect_head: str | None = None) -> VerifyReport:
    """Check RUN/history.sqlite (see the module doc). HistoryError only if there is no file."""
    return read_history(run_dir, expect_head=expect_head)[1]


def read_history(run_dir: str | Path, *,
                 expect_head: str | None = None) -> tuple[list[Record], VerifyReport]:
    """Every record that can be read (in order, broken ones included) and the verdict."""
    path = history_path(run_dir)
    conn = connect_readonly(path)
    try:
        records, report = _Scan(path, conn, expect_head).run()
    finally:
        conn.close()
    if not records and any(p.check == "file" for p in report.problems):
        salvaged = _salvage(path, expect_head)
        if salvaged is not None and salvaged[0]:
            records, found = salvaged
            report = replace(found, path=report.path, problems=tuple(sorted(
                {*report.problems, *found.problems},
                key=lambda p: (p.seq is None, p.seq or 0, p.check, p.message))))
    return records, report


def _salvage(path: Path, expect_head: str | None) -> tuple[list[Record], VerifyReport] | None:
    """SQLite refuses a whole file that is shorter than its header says (a truncated file).
    Read a copy whose header no longer claims a size, to name the first record that is gone;
    the original is never touched."""
    try:
        with tempfile.TemporaryDirectory(prefix="fnforge-verify-") as tmp:
            copy = Path(tmp) / path.name
            shutil.copyfile(path, copy)
            with open(copy, "r+b") as fh:
                header = bytearray(fh.read(100))
                if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
                    return None
                counter = int.from_bytes(header[24:28], "big")
                header[92:96] = ((counter + 1) & 0xFFFFFFFF).to_bytes(4, "big")  # size: file's
                header[18:20] = b"\x01\x01"  # rollback journal: no WAL index for a copy
                fh.seek(0)
                fh.write(header)
                page = int.from_bytes(header[16:18], "big")
                page = 65536 if page == 1 else page
                if page >= 512:  # a torn last page would read as garbage, not as missing
                    size = fh.seek(0, os.SEEK_END)
                    fh.truncate(size - size % page)
            conn = sqlite3.connect(f"{copy.as_uri()}?mode=ro&immutable=1", uri=True,
                                   isolation_level=None)
            try:
                conn.execute("PRAGMA trusted_schema=OFF")
                return _Scan(path, conn, expect_head).run()
            finally:
                conn.close()
    except (OSError, sqlite3.Error):
        return None


class _Scan:
    def __init__(self, path: Path, conn: sqlite3.Connection, expect_head: str | None) -> None:
        self.path, self.conn, self.expect_head = path, conn, expect_head
        self.problems: list[HistoryDefect] = []
        self.records: list[Record] = []
        self.run_id: str | None = None
        self.damaged = False  # SQLite's own check failed: the file, not a record, is broken
        self.content = _ContentChecks(self._problem)

    def _problem(self, seq: int | None, check: str, message: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(HistoryDefect(seq, check, message))

    def run(self) -> tuple[list[Record], VerifyReport]:
        try:
            self.conn.execute("BEGIN")  # one snapshot: meta and records agree
            meta = self._file_and_schema()
            if meta is not None:
                self._records(meta)
        except sqlite3.DatabaseError as exc:
            self._problem(None, "file", f"SQLite cannot read {self.path.name} ({exc}): the "
                          "file was truncated, overwritten or is not an fnforge history")
        finally:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
        last = self.records[-1] if self.records else None
        if self.expect_head is not None:
            pinned = self.expect_head.strip().lower()
            if not any(r.hash == pinned for r in self.records):
                self._problem(None, "pin", f"the pinned head {pinned[:64]!r} is not a record "
                              "of this history: it was rewritten or replaced since it was "
                              "pinned")
        problems = sorted(self.problems, key=lambda p: (p.seq is None, p.seq or 0))
        report = VerifyReport(str(self.path), self.run_id, len(self.records),
                              last.seq if last else None, last.hash if last else None,
                              tuple(problems))
        return self.records, report

    def _file_and_schema(self) -> dict[str, str] | None:
        try:
            check = self.conn.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:  # still read what can be read, to name a record
            check = [(str(exc),)]
        if check != [("ok",)]:
            self.damaged = True
            lines = "; ".join(str(r[0]) for r in check[:3])
            self._problem(None, "file", f"SQLite's integrity check failed ({lines}): the file "
                          "was damaged or truncated")
        app_id = self.conn.execute("PRAGMA application_id").fetchone()[0]
        user_version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id != APPLICATION_ID or user_version != USER_VERSION:
            self._problem(None, "schema", f"the file's application id/version is "
                          f"{app_id:#x}/{user_version}, not {APPLICATION_ID:#x}/{USER_VERSION}: "
                          "not an fnforge history, or its header was changed")
        schema = {tuple(r) for r in self.conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master")}
        for item in sorted(schema - SCHEMA, key=str):
            self._problem(None, "schema", f"the schema has an addition or change not made by "
                          f"fnforge: {item[0]} {item[1]!s:.80} "
                          f"({str(item[3] or '')[:200]})")
        for item in sorted(SCHEMA - schema, key=str):
            if not any(s[0] == item[0] and s[1] == item[1] for s in schema):
                self._problem(None, "schema", f"the schema lacks fnforge's {item[0]} {item[1]}")
        names = {s[1] for s in schema if s[0] == "table"}
        if not {"records", "meta"} <= names:
            if not schema:
                self._problem(None, "file", "the file holds no tables: it was truncated to "
                              "nothing or replaced by an empty database")
            return None
        meta = {str(k): str(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}
        if meta.get("format") != FORMAT:
            self._problem(None, "meta", f"meta format is {meta.get('format')!r:.80}, "
                          f"not {FORMAT!r}")
        if not meta.get("run_id"):
            self._problem(None, "meta", "meta has no run_id")
        self.run_id = meta.get("run_id") or None
        return meta

    def _records(self, meta: dict[str, str]) -> None:
        expected = 1
        try:
            cursor = self.conn.execute("SELECT seq, time, kind, step, epoch, data, prev_hash, "
                                       "hash FROM records ORDER BY seq")
        except sqlite3.DatabaseError as exc:
            self._problem(expected, "file", f"no record can be read ({exc}): the file was "
                          "truncated or overwritten")
            return
        prev: tuple[int, str, bool] | None = None  # seq, hash, own hash ok
        soft: list[tuple[int, str, str]] = []
        while True:
            try:
                row = cursor.fetchone()
            except sqlite3.DatabaseError as exc:
                self._problem(expected, "file", f"record {expected} and later cannot be read "
                              f"({exc}): the file was truncated or overwritten")
                return
            if row is None:
                break
            seq = row[0]
            if seq != expected:
                if not isinstance(seq, int) or seq < 1:
                    if self.damaged:  # a torn page reads as rows of zeros: not a record
                        self._problem(None, "file", f"a row numbered {seq!r:.40} was read "
                                      "from a damaged page")
                    else:
                        self._problem(seq if isinstance(seq, int) else None, "sequence",
                                      f"record {seq!r:.40}: sequence numbers start at 1 (a "
                                      "row was inserted)")
                    continue
                missing = (f"record {expected} is missing" if seq == expected + 1 else
                           f"records {expected} to {seq - 1} are missing")
                self._problem(expected, "sequence", f"{missing}: record {seq} follows "
                              f"record {expected - 1} (deleted, or record {seq} was inserted "
                              "or renumbered)")
                prev = None
            expected = seq + 1
            own_ok, record = self._record(row, meta)
            if record is not None:
                self.records.append(record)
            link = row[6] if isinstance(row[6], str) else ""
            if prev is not None and prev[0] == seq - 1 and link != prev[1]:
                if own_ok and prev[2]:
                    soft.append((seq, link, prev[1]))  # who is to blame depends on the next link
                else:
                    self._problem(seq, "chain", f"record {seq} does not chain to record "
                                  f"{seq - 1} (moved, inserted or altered)")
            prev = (seq, row[7] if isinstance(row[7], str) else "", own_ok)
        head = self._head(meta)
        self._blame(soft, head)

    def _blame(self, soft: list[tuple[int, str, str]], head: HistoryDefect | None) -> None:
        """A broken link between two self-consistent records: if the record after the link
        does not link onward either, it was replaced (transplanted); otherwise the record
        before the link was altered and re-hashed."""
        last_seq = self.records[-1].seq if self.records else 0
        broken = {b for b, _, _ in soft}
        explained: set[int] = set()
        for b, link, before in soft:
            if b in explained:
                continue
            head_breaks = head is not None and head.seq == b == last_seq
            if b + 1 in broken or head_breaks:
                explained.add(b + 1)
                if head_breaks:
                    head = None
                self._problem(b, "chain", f"record {b} was replaced: it chains to neither "
                              f"record {b - 1} nor is it what "
                              f"{'the head' if b == last_seq else f'record {b + 1}'} chains to "
                              "(moved from elsewhere, or rewritten)")
            else:
                self._problem(b - 1, "chain", f"record {b - 1} was altered and re-hashed: "
                              f"record {b} chains to {link[:16]}..., record {b - 1} now hashes "
                              f"to {before[:16]}...")
        if head is not None:
            self._problem(head.seq, head.check, head.message)

    def _record(self, row: tuple[Any, ...], meta: dict[str, str]) -> tuple[bool, Record | None]:
        """Check one row on its own; (its hash matches, the parsed record if it parses)."""
        seq, when, kind, step, epoch, text, prev_hash, digest = row
        bad: list[str] = []
        if isinstance(when, bool) or not isinstance(when, int | float):
            bad.append(f"time is {type(when).__name__}, not a number")
        if not isinstance(kind, str) or not _KIND.match(kind):
            bad.append(f"kind {kind!r:.40} is not a record kind")
        for label, value in (("step", step), ("epoch", epoch)):
            if value is not None and not isinstance(value, int):
                bad.append(f"{label} is {type(value).__name__}, not an integer")
        for label, value in (("prev_hash", prev_hash), ("hash", digest)):
            if not isinstance(value, str) or not _HEX64.match(value):
                bad.append(f"{label} is not a sha256 hex digest")
        data: Any = None
        if not isinstance(text, str):
            bad.append(f"data is {type(text).__name__}, not JSON text")
        else:
            try:
                data = json.loads(text)
            except (ValueError, RecursionError) as exc:
                bad.append(f"data is not JSON ({exc})")
            else:
                if not isinstance(data, dict):
                    bad.append("data is not a JSON object")
                    data = None
                else:
                    try:
                        canonical = canonical_json(data)
                    except (ValueError, RecursionError):
                        canonical = None
                    if canonical != text:
                        bad.append("data is not in canonical form (edited by hand)")
        if bad:
            self._problem(seq, "record", f"record {seq}: " + "; ".join(bad))
            return False, None
        own_ok = record_hash(prev_hash, record_content(seq, when, kind, step, epoch, data)) \
            == digest
        if not own_ok:
            self._problem(seq, "hash", f"record {seq} ({kind}) does not match its hash: its "
                          "content (or seq, time, kind, step, epoch or prev_hash) was altered")
        if seq == 1 or kind == "genesis":
            self._genesis(seq, kind, data, prev_hash, meta)
        record = Record(seq, float(when), kind, step, epoch, data, prev_hash, digest)
        self.content.check(record)
        return own_ok, record

    def _genesis(self, seq: int, kind: str, data: dict[str, Any], prev_hash: str,
                 meta: dict[str, str]) -> None:
        if seq != 1:
            self._problem(seq, "chain", f"record {seq} is a second genesis record (inserted)")
            return
        run_id = meta.get("run_id") or str(data.get("run_id", ""))
        if kind != "genesis":
            self._problem(1, "chain", "record 1 is not the genesis record (the original "
                          "first record was deleted or replaced)")
        elif data.get("run_id") != run_id or data.get("format") != FORMAT:
            self._problem(1, "chain", "the genesis record names another run or format than "
                          "the file's meta (transplanted from another run?)")
        if prev_hash != genesis_hash(run_id):
            self._problem(1, "chain", f"record 1 does not start this run's chain (run "
                          f"{run_id!r:.80}): moved from another run or history")

    def _head(self, meta: dict[str, str]) -> HistoryDefect | None:
        """Does meta's head pointer name the last record? (The problem, not yet reported.)"""
        last = self.records[-1] if self.records else None
        if last is None:
            self._problem(1, "sequence", "the history has no readable records (record 1, "
                          "the genesis, is missing)")
        try:
            head_seq = int(meta.get("head_seq", ""))
        except ValueError:
            return HistoryDefect(None, "head", "meta's head pointer is missing or damaged")
        head_hash = meta.get("head_hash", "")
        last_seq = last.seq if last else 0
        if head_seq > last_seq:
            which = (f"record {head_seq} is" if head_seq == last_seq + 1
                     else f"records {last_seq + 1} to {head_seq} are")
            return HistoryDefect(last_seq + 1, "head", f"{which} missing from the end: the head "
                           f"pointer says the history ends at record {head_seq}")
        if head_seq < last_seq:
            return HistoryDefect(head_seq + 1, "head", f"record {head_seq + 1} and later were "
                           f"appended after the head (record {head_seq}) by something other "
                           "than fnforge")
        if last is not None and head_hash != last.hash:
            return HistoryDefect(last.seq, "head", f"record {last.seq} is not the record the head "
                           "points to: it was altered and re-hashed, or replaced")
        return None


class _ContentChecks:
    """What each record claims about code and verdicts, checked against what came before."""

    def __init__(self, problem: Callable[[int | None, str, str], None]) -> None:
        self.problem = problem
        self.proposed: set[tuple[str, str]] = set()  # (name, code_hash)
        self.proposed_specs: set[tuple[str, str]] = set()  # (name, spec_hash)
        self.passed: set[tuple[str, str]] = set()  # (name, code_hash)
        self.passed_specs: set[tuple[str, str, str]] = set()  # (name, code_hash, spec_hash)
        self.versions: dict[str, list[tuple[str, str]]] = {}  # name -> distinct (code, spec)

    def check(self, r: Record) -> None:
        handler = getattr(self, f"_{r.kind}", None)
        if handler is None:
            return
        try:
            handler(r)
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            self.problem(r.seq, "content", f"record {r.seq} ({r.kind}) is malformed: "
                         f"{type(exc).__name__}: {str(exc)[:200]}")

    def _proposal(self, r: Record) -> None:
        d = r.data
        name = d["name"]
        if not isinstance(name, str):
            raise TypeError("name is not a string")
        spec = d.get("spec")
        if spec is None:
            return
        code = spec["code"]
        if not isinstance(code, str):
            raise TypeError("spec.code is not a string")
        if sha256_hex(code) != d.get("code_hash"):
            self.problem(r.seq, "content", f"record {r.seq}: the proposal's code_hash is not "
                         "the hash of its stored code (the code or the hash was changed)")
        if spec.get("name") != name:
            self.problem(r.seq, "content", f"record {r.seq}: the proposal's spec is named "
                         "differently from the proposal")
        code_hash = sha256_hex(code)
        self.proposed.add((name, code_hash))
        self.proposed_specs.add((name, spec_hash(spec)))
        known = self.versions.setdefault(name, [])
        if (code_hash, spec_hash(spec)) not in known:
            known.append((code_hash, spec_hash(spec)))

    def _vet(self, r: Record) -> None:
        d = r.data
        name, code_hash, s_hash = d["name"], d["code_hash"], d["spec_hash"]
        report = d["report"]
        if (report["function"], report["code_hash"], report["spec_hash"],
                bool(report["passed"])) != (name, code_hash, s_hash, bool(d["passed"])):
            self.problem(r.seq, "content", f"record {r.seq}: the vet report does not match "
                         "its record (function, code hash, spec hash or verdict changed)")
        stages = report["stages"]
        derived = all(st["passed"] for st in stages if not st.get("skipped")) and not any(
            f.get("severity", "error") == "error" for st in stages for f in st["findings"])
        if derived != bool(d["passed"]):
            self.problem(r.seq, "content", f"record {r.seq}: the vet verdict "
                         f"({'passed' if d['passed'] else 'rejected'}) contradicts its own "
                         "stages and findings (the verdict was changed)")
        spec = d.get("spec")
        if isinstance(spec, dict):
            if sha256_hex(spec["code"]) != code_hash or spec_hash(spec) != s_hash:
                self.problem(r.seq, "content", f"record {r.seq}: the vetted spec's hashes "
                             "are not those recorded")
            self.proposed.add((name, code_hash))
            self.proposed_specs.add((name, s_hash))
        elif (name, code_hash) not in self.proposed:
            self.problem(r.seq, "content", f"record {r.seq}: vets code of {name!r:.80} that no "
                         "earlier proposal holds (the proposal was removed or changed)")
        elif (name, s_hash) not in self.proposed_specs:
            self.problem(r.seq, "content", f"record {r.seq}: vets a spec of {name!r:.80} that "
                         "no earlier proposal holds")
        if d["passed"]:
            self.passed.add((name, code_hash))
            self.passed_specs.add((name, code_hash, s_hash))

    def _applied(self, r: Record) -> None:
        d = r.data
        if d.get("action") not in ("add_function", "revise_function"):
            return
        if (d["name"], d["code_hash"]) not in self.passed:
            self.problem(r.seq, "content", f"record {r.seq}: applies code of "
                         f"{d['name']!r:.80} whose vetting passed nowhere earlier")
        elif "spec_hash" in d and (d["name"], d["code_hash"], d["spec_hash"]) \
                not in self.passed_specs:
            self.problem(r.seq, "content", f"record {r.seq}: applies a spec of "
                         f"{d['name']!r:.80} whose vetting passed nowhere earlier")

    def _llm_call(self, r: Record) -> None:
        d = r.data
        if "request_hash" in d or "response_hash" in d:
            expected = llm_hashes(d)
            if d.get("request_hash") != expected["request_hash"] or \
                    d.get("response_hash") != expected["response_hash"]:
                self.problem(r.seq, "content", f"record {r.seq}: the LLM request or response "
                             "text does not match its recorded hash")

    def _approval(self, r: Record) -> None:
        d = r.data
        name, version, code_hash = d["name"], d["version"], d["code_hash"]
        s_hash = d.get("spec_hash")
        if d.get("verdict") not in ("approve", "deny"):
            self.problem(r.seq, "content", f"record {r.seq}: an approval's verdict must be "
                         "approve or deny")
        if not (isinstance(d.get("who"), str) and d["who"].strip()
                and isinstance(d.get("why"), str) and d["why"].strip()):
            self.problem(r.seq, "content", f"record {r.seq}: an approval without who or why")
        known = self.versions.get(name, []) if isinstance(name, str) else []
        if isinstance(version, bool) or not isinstance(version, int) or \
                not 1 <= version <= len(known):
            self.problem(r.seq, "content", f"record {r.seq}: approval of {name!s:.80}@"
                         f"{version!s:.20}, a version no earlier proposal made")
        elif known[version - 1][0] != code_hash:
            self.problem(r.seq, "content", f"record {r.seq}: approval of {name}@{version} "
                         "names another code hash than that version's")
        elif s_hash is not None and known[version - 1][1] != s_hash:
            self.problem(r.seq, "content", f"record {r.seq}: approval of {name}@{version} "
                         "names another spec hash than that version's")
        elif d.get("verdict") == "approve" and \
                (name, code_hash, known[version - 1][1]) not in self.passed_specs:
            self.problem(r.seq, "content", f"record {r.seq}: approves {name}@{version}, which "
                         "never passed vetting")
