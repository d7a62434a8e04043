"""The history store, verify, review, approvals, lock files and export: a specification.

The history is written by a real AgentOptimizer against the scripted LLM server and the real
sandbox (a rejected malicious proposal included), plus "call", "conversation" and "metrics"
records the training loop writes. Every tamper test changes a copy with sqlite3 and expects
verify to fail naming the first broken record.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from optimizer import AgentOptimizer, OptimizerSettings
from optimizer.events import Event, EventLog
from optimizer.history import (
    CODE_BLOCK,
    HistoryError,
    HistoryStore,
    LockError,
    LockFile,
    build_lock,
    build_review,
    call_data,
    export_jsonl,
    load_locked_library,
    parse_ref,
    render_html,
    review_command,
    verify_history,
)
from optimizer.history.canonical import (
    canonical_json,
    genesis_hash,
    record_content,
    record_hash,
    sha256_hex,
    spec_hash,
)
from sandbox import (
    AuditEvent,
    CallResult,
    ErrorInfo,
    ErrorKind,
    FunctionLibrary,
    FunctionSpec,
    Sandbox,
    VetReport,
)
from tests.scripted_llm import Reply, ScriptedLLM, client_for, tool_call

HOSTILE_TEXT = ("</script><script>document.title='PWNED'</script>"
                "\"><img src=x onerror=\"document.title='PWNED'\">[bold red]PASSED[/]\x1b[2J")
SHOUT_CODE = textwrap.dedent('''\
    def shout(n):
        """</script><script>document.title='PWNED'</script>"""
        tag = '"><img src=x onerror="document.title=\\'PWNED\\'">'
        return n  # <script>alert(1)</script>
    ''')
EVIL_CODE = "def helper(n):\n    return [c for c in ().__class__.__base__.__subclasses__()][n]\n"


def fn(name: str, body: str, expect: Any, *, code: str | None = None) -> dict[str, Any]:
    """The fields of an add_function/revise_function tool call for `def name(n): body`."""
    return {"name": name, "description": f"{name} of an integer n",
            "parameters": {"type": "object", "properties": {"n": {"type": "integer"}},
                           "required": ["n"]},
            "code": code or f"def {name}(n):\n    {body}\n",
            "tests": [{"args": {"n": 2}, "expect": expect}], "reason": f"{name} helps"}


def conversation(i: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"Problem {i}: what is 2 + {i}?"},
            {"role": "assistant", "content": f"\\boxed{{{2 + i}}}"}]


@dataclass
class Run:
    path: Path
    events: EventLog
    run_id: str


def make_run(root: Path, sandbox: Sandbox) -> Run:
    """Three epochs of a real optimizer: adds (two rejected, one hostile-looking but clean), a
    revise and a remove, an accepted step and a roll-back; calls, conversations, metrics."""
    server = ScriptedLLM().start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            client = client_for(server, mp)
            store = HistoryStore.open(root)
            events = EventLog()

            def tee(event: Event) -> None:
                events(event)
                store.sink(event)

            opt = AgentOptimizer(max_actions_per_step=3, client=client, sandbox=sandbox,
                                 settings=OptimizerSettings(), events=tee)
            store.record("run", {"event": "start", "config": {"epochs": 3, "seed": 0}})
            server.push(
                Reply(text=HOSTILE_TEXT,
                      tool_calls=[("add_function", fn("double", "return 2 * n", 4))]),
                tool_call("add_function",
                          fn("cwd_len", "import os\n    return len(os.getcwd()) + n", 3)),
                tool_call("add_function", fn("helper", "", 2, code=EVIL_CODE)),
                tool_call("add_function", fn("shout", "", 2, code=SHOUT_CODE)),
                tool_call("add_function", fn("plus_one", "return n + 1", 3)))
            _epoch(store, opt, 1, [True, False])
            _calls(store, sandbox, opt.library, 2)
            server.push(tool_call("revise_function", fn("double", "return n + n", 4)),
                        tool_call("remove_function", {"name": "plus_one", "reason": "unused"}),
                        tool_call("terminate", {"reason": "done"}))
            _epoch(store, opt, 2, [True, True])
            server.push(tool_call("terminate", {"reason": "done"}))
            _epoch(store, opt, 3, [False, False])
            store.record("run", {"event": "end"})
            run = Run(root, events, store.run_id)
            store.close()
            opt.client.close()
            return run
    finally:
        server.stop()


def _epoch(store: HistoryStore, opt: AgentOptimizer, epoch: int, labels: list[bool]) -> None:
    store.epoch = epoch
    for i, label in enumerate(labels):
        opt.record_one_conversation(conversation(i), is_satisfied=label)
        store.record("conversation", {"problem_id": f"p{i}", "correct": label,
                                      "outcome": "answered", "tokens": 120})
    store.record("metrics", {"epoch": epoch, "train_accuracy": sum(labels) / len(labels),
                             "validation_accuracy": None})
    opt.step()


def _calls(store: HistoryStore, sandbox: Sandbox, library: FunctionLibrary, epoch: int) -> None:
    double = library.get("double")
    result = sandbox.call(double, {"n": 5})
    store.record("call", call_data("double", {"n": 5}, result, problem_id="p0", epoch=epoch,
                                   code_hash=double.code_hash), epoch=epoch)
    code = "import os\nprint(os.listdir('/'))\nraise ValueError('no')\n"
    block = sandbox.run(code)
    store.record("call", call_data(CODE_BLOCK, code, block, problem_id="p1", epoch=epoch),
                 epoch=epoch)
    timed_out = CallResult(ok=False, error=ErrorInfo(ErrorKind.TIMEOUT, "Timeout", "deadline"),
                           timed_out=True, duration_ms=5012.5,
                           audit=[AuditEvent("socket.connect", "('10.0.0.1', 80)")])
    store.record("call", call_data("plus_one", {"n": 1}, timed_out, problem_id="p1",
                                   epoch=epoch), epoch=epoch)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, sandbox: Sandbox) -> Run:
    return make_run(tmp_path_factory.mktemp("run"), sandbox)


@pytest.fixture
def copy(run: Run, tmp_path: Path) -> Path:
    """A copy of the run to change."""
    target = tmp_path / "run"
    shutil.copytree(run.path, target)
    return target


def rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path / "history.sqlite") as db:
        return db.execute("SELECT * FROM records ORDER BY seq").fetchall()


def seq_of(path: Path, kind: str, nth: int = 0, **match: Any) -> int:
    found = [r[0] for r in rows(path) if r[2] == kind
             and all(json.loads(r[5]).get(k) == v for k, v in match.items())]
    return int(found[nth])


def sql(path: Path, *statements: str, params: tuple[Any, ...] = ()) -> None:
    db = sqlite3.connect(path / "history.sqlite", isolation_level=None)
    try:
        for statement in statements:
            db.execute(statement, params if "?" in statement else ())
    finally:
        db.close()


def broken_at(path: Path) -> int | None:
    report = verify_history(path)
    assert not report.ok, "verify passed a tampered history"
    first = report.first_broken
    assert first is not None
    return first.seq


def cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = review_command(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- the record ---------------------------------------------------------------------------------
def test_a_training_run_records_every_event_and_verifies(run: Run) -> None:
    report = verify_history(run.path)
    assert report.ok, report.summary()
    records = rows(run.path)
    kinds = [r[2] for r in records]
    assert kinds[0] == "genesis" and kinds.count("genesis") == 1
    for kind in ("proposal", "vet", "applied", "refused", "llm_call", "decision", "registered",
                 "removed", "step", "prompt", "terminate"):
        assert kinds.count(kind) == len(run.events.of(kind)), kind
    assert {"run", "call", "conversation", "metrics"} <= set(kinds)
    assert [r[0] for r in records] == list(range(1, len(records) + 1))
    llm = [json.loads(r[5]) for r in records if r[2] == "llm_call"]
    assert llm[0]["response"]["text"] == HOSTILE_TEXT and llm[0]["model"] == "scripted-model"
    assert all(len(d["request_hash"]) == 64 and d["prompt_tokens"] == 10 for d in llm)
    epochs = {json.loads(r[5])["problem_id"]: r[4] for r in records if r[2] == "call"}
    assert epochs == {"p0": 2, "p1": 2}


def test_the_chain_links_every_record_to_the_one_before(run: Run) -> None:
    records = rows(run.path)
    prev = genesis_hash(run.run_id)
    for seq, when, kind, step, epoch, data, prev_hash, digest in records:
        assert prev_hash == prev
        content = record_content(seq, when, kind, step, epoch, json.loads(data))
        assert digest == record_hash(prev_hash, content)
        assert canonical_json(json.loads(data)) == data
        prev = digest
    with sqlite3.connect(run.path / "history.sqlite") as db:
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_versions_final_library_and_calls_follow_the_run(run: Run) -> None:
    review = build_review(run.path)
    refs = {v.ref: v for v in review.versions}
    assert set(refs) == {"double@1", "double@2", "cwd_len@1", "helper@1", "shout@1",
                         "plus_one@1"}
    assert refs["cwd_len@1"].rejected and refs["helper@1"].rejected
    assert refs["double@2"].previous is refs["double@1"]
    # step 2 was accepted and revised double and removed plus_one; step 3 rolled that back
    assert {n: (v.ref if v else None) for n, v in review.last_trial.items()} == {
        "double": "double@1", "plus_one": "plus_one@1", "shout": "shout@1"}
    assert review.best == review.last_trial  # the roll-back restored the best set
    assert refs["double@1"].calls.calls == 1 and refs["double@1"].calls.failures == 0
    plus_one = refs["plus_one@1"]
    assert plus_one.calls.timeouts == 1 and "calls hit limits" in plus_one.flag_reasons
    assert "audit events" in plus_one.flag_reasons
    assert review.code_calls.calls == 1 and review.code_calls.failures == 1
    assert refs["cwd_len@1"].imports == ["os"]
    assert {p.model for p in review.proposals} == {"scripted-model"}
    outcomes = [(p.name, p.outcome) for p in review.proposals]
    assert outcomes == [("double", "applied"), ("cwd_len", "rejected"), ("helper", "rejected"),
                        ("shout", "applied"), ("plus_one", "applied"), ("double", "applied"),
                        ("plus_one", "applied")]
    assert "static" in json.dumps(refs["helper@1"].vets[0].stages)


def test_the_libraries_survive_roll_backs_and_a_resumed_step(tmp_path: Path) -> None:
    """Replayed from applied/decision/registered records, as the optimizer emits them, with a
    crash in the middle of step 3 and a resume from the checkpoint of step 2."""
    def proposal(store: HistoryStore, name: str, code: str) -> str:
        spec = {**fn(name, "", 1, code=code)}
        spec.pop("reason")
        digest = sha256_hex(code)
        store.record("proposal", {"action": "add_function", "name": name, "reason": "r",
                                  "spec": spec, "code_hash": digest, "parent": None})
        return digest

    with HistoryStore.open(tmp_path) as store:
        a1 = proposal(store, "a", "def a(n):\n    return n\n")
        store.record("applied", {"action": "add_function", "name": "a", "version": 1,
                                 "code_hash": a1})
        store.record("registered", {"names": ["a"]})
        store.record("decision", {"decision": "accepted", "library_version": 1})  # best: a1
        a2 = proposal(store, "a", "def a(n):\n    return n + 1\n")
        store.record("applied", {"action": "revise_function", "name": "a", "version": 2,
                                 "code_hash": a2})
        b1 = proposal(store, "b", "def b(n):\n    return n\n")
        store.record("applied", {"action": "add_function", "name": "b", "version": 3,
                                 "code_hash": b1})
        store.record("registered", {"names": ["a", "b"]})
        # step 3 starts: worse, rolled back to the best (a new library version, 4) ...
        store.record("decision", {"decision": "rolled_back", "library_version": 4})
        store.record("registered", {"names": ["a"]})
        store.record("run", {"event": "resume"})
        # ... crash; resumed from step 2's checkpoint (library version 3): a2 and b again
        store.record("decision", {"decision": "accepted", "library_version": 3})
        store.record("registered", {"names": ["a", "b"]})
    review = build_review(tmp_path)
    assert {n: v.ref if v else None for n, v in review.last_trial.items()} == {"a": "a@2",
                                                                               "b": "b@1"}
    assert review.best == review.last_trial  # resumed at the checkpoint that was accepted
    assert [v.ref for v in review.versions] == ["a@1", "a@2", "b@1"]


def test_the_review_names_the_best_library_apart_from_the_last_trial(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The default run's story: the empty library was scored (best), a step then added f, and
    the run stopped before f was scored. library.json, what eval and a deployment use, is the
    empty best set: the review and the lock say so, and f shows only as the last trial."""
    code = "def f(n):\n    return n\n"
    spec = {**fn("f", "", 1, code=code)}
    spec.pop("reason")
    with HistoryStore.open(tmp_path) as store:
        store.record("registered", {"names": []})
        store.record("decision", {"decision": "first", "library_version": 0})
        store.record("proposal", {"action": "add_function", "name": "f", "reason": "r",
                                  "spec": spec, "code_hash": sha256_hex(code), "parent": None})
        hashes = {"code_hash": sha256_hex(code), "spec_hash": spec_hash(spec), "passed": True}
        store.record("vet", {"name": "f", **hashes, "report": {
            "function": "f", **hashes, "stages": [], "audit": []}})
        store.record("applied", {"action": "add_function", "name": "f", "version": 1,
                                 "code_hash": sha256_hex(code)})
        store.record("registered", {"names": ["f"]})
    review = build_review(tmp_path)
    assert review.best == {} and [v.ref for v in review.last_trial.values() if v] == ["f@1"]
    f1 = review.versions[0]
    assert f1.in_last_trial and not f1.in_best
    assert build_lock(review).functions == [] and build_lock(review).excluded == []
    page = render_html(review)
    assert "Best library (library.json)" in page and "The best library is empty" in page
    assert "Last trial set" in page and "in the last trial set" in page
    assert review_command(["show", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "best library (library.json: what eval and a deployment use): empty" in out
    assert "last trial set (held when the run stopped; not deployed): f@1" in out


def test_with_no_step_scored_the_best_library_is_what_the_run_holds(tmp_path: Path) -> None:
    """AgentOptimizer.best_library() before any decision is the library as it stands."""
    code = "def g(n):\n    return n\n"
    spec = {**fn("g", "", 1, code=code)}
    spec.pop("reason")
    with HistoryStore.open(tmp_path) as store:
        store.record("proposal", {"action": "add_function", "name": "g", "reason": "r",
                                  "spec": spec, "code_hash": sha256_hex(code), "parent": None})
        store.record("applied", {"action": "add_function", "name": "g", "version": 1,
                                 "code_hash": sha256_hex(code)})
    review = build_review(tmp_path)
    assert review.best == review.last_trial and review.versions[0].in_best


def test_calls_in_the_flat_form_are_counted(tmp_path: Path) -> None:
    with HistoryStore.open(tmp_path) as store:
        store.record("call", {"function": "g", "args_hash": "0" * 64, "ok": False,
                              "duration_ms": 2.0, "error_kind": "timeout",
                              "error_type": "Timeout", "timed_out": True, "audit": []})
        store.record("call", {"function": CODE_BLOCK, "ok": True, "duration_ms": 1.0})
    review = build_review(tmp_path)
    stats = review.unattributed_calls["g"]
    assert (stats.calls, stats.failures, stats.timeouts, dict(stats.errors)) == \
        (1, 1, 1, {"Timeout": 1})
    assert review.code_calls.calls == 1


def test_parse_ref() -> None:
    assert parse_ref("double@2") == ("double", 2)
    for bad in ("double", "double@0", "double@x", "@1", "a b@1"):
        with pytest.raises(HistoryError, match="NAME@VERSION"):
            parse_ref(bad)


# -- durability and resumption ------------------------------------------------------------------
_WRITER = textwrap.dedent("""
    import sys, time
    from optimizer.history import HistoryStore
    store = HistoryStore.open(sys.argv[1])
    for i in range(100000):
        seq = store.record("metrics", {"i": i, "blob": "x" * 2000}, epoch=1)
        print(seq, flush=True)
""")


def test_a_crash_loses_nothing_reported_and_the_run_continues_the_chain(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    reported = 0
    for line in proc.stdout:
        reported = int(line)
        if reported >= 60:
            break
    os.kill(proc.pid, signal.SIGKILL)  # mid-write, without closing anything
    proc.wait()
    report = verify_history(tmp_path)
    assert report.ok, report.summary()
    assert report.head_seq is not None and report.head_seq >= reported
    with HistoryStore.open(tmp_path) as store:
        seq = store.record("run", {"event": "resume"})
        assert seq == report.head_seq + 1
        run_id = store.run_id
    assert verify_history(tmp_path).ok
    with pytest.raises(HistoryError, match="belongs to run"):
        HistoryStore.open(tmp_path, run_id="another-run")
    with HistoryStore.open(tmp_path, run_id=run_id) as store:
        assert store.head()[0] == seq


def test_concurrent_writers_keep_one_chain(tmp_path: Path) -> None:
    with HistoryStore.open(tmp_path) as store:
        def write(tag: str) -> None:
            for i in range(25):
                store.record("call", {"function": tag, "ok": True, "i": i})

        threads = [threading.Thread(target=write, args=(f"t{i}",)) for i in range(4)]
        other = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
            import sys
            from optimizer.history import HistoryStore
            with HistoryStore.open(sys.argv[1]) as s:
                for i in range(25):
                    s.record("approval", {"note": i}) if False else s.record("run", {"i": i})
        """), str(tmp_path)])
        verdicts: list[str] = []

        def read() -> None:  # verify is a consistent snapshot, even while others append
            while True:
                verdicts.append(verify_history(tmp_path).summary())
                if not any(t.is_alive() for t in threads) and other.poll() is not None:
                    return

        for t in threads:
            t.start()
        reader = threading.Thread(target=read)
        reader.start()
        for t in threads:
            t.join()
        reader.join()
        assert other.wait() == 0
        assert verdicts and all(v.startswith("history intact") for v in verdicts)
        assert store._conn is not None
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    report = verify_history(tmp_path)
    assert report.ok and report.records == 1 + 4 * 25 + 25


def test_record_checks_its_arguments_and_normalizes_values(tmp_path: Path) -> None:
    with HistoryStore.open(tmp_path) as store:
        for bad_kind in ("Proposal", "genesis", "", "a" * 40, "x;drop"):
            with pytest.raises(HistoryError):
                store.record(bad_kind, {})
        with pytest.raises(HistoryError, match="mapping"):
            store.record("run", ["not", "a", "dict"])  # type: ignore[arg-type]
        with pytest.raises(HistoryError, match="step"):
            store.record("run", {}, step=True)
        seq = store.record("metrics", {"nan": float("nan"), "inf": float("-inf"),
                                       "path": Path("/x"), 3: (1, 2),  # type: ignore[dict-item]
                                       "s": "\ud800"})
        data = next(r for r in store.records() if r.seq == seq).data
        assert data == {"nan": "nan", "inf": "-inf", "path": "/x", "3": [1, 2], "s": "\ud800"}
    assert verify_history(tmp_path).ok
    with pytest.raises(HistoryError, match="closed"):
        store.record("run", {})


def test_opening_something_else_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "history.sqlite") as db:
        db.execute("CREATE TABLE other (x)")
    with pytest.raises(HistoryError, match="not an fnforge history"):
        HistoryStore.open(tmp_path)
    with pytest.raises(HistoryError, match="no history"):
        HistoryStore.open(tmp_path / "missing", create=False)


def test_a_store_refuses_to_extend_an_altered_end(copy: Path) -> None:
    last = rows(copy)[-1][0]
    sql(copy, f"DELETE FROM records WHERE seq = {last}")
    with pytest.raises(HistoryError, match="cannot be continued"):
        HistoryStore.open(copy)


def test_write_cost_per_event(tmp_path: Path) -> None:
    """synchronous=FULL: every record is fsynced; it must stay cheap next to an LLM call."""
    event = Event("proposal", 1, {"action": "add_function", "name": "f", "reason": "r",
                                  "spec": fn("f", "return n", 2), "code_hash": "0" * 64})
    with HistoryStore.open(tmp_path) as store:
        sink = store.sink
        started = time.perf_counter()
        for _ in range(50):
            sink(event)
        per_event_ms = (time.perf_counter() - started) * 1000 / 50
    print(f"\nhistory write cost: {per_event_ms:.2f} ms per event (synchronous=FULL)")
    assert per_event_ms < 100


# -- tampering -----------------------------------------------------------------------------------
Tamper = Callable[[Path], int]  # changes the copy, returns the record verify must name


def _edit_proposal(path: Path) -> int:
    seq = seq_of(path, "proposal", name="helper")
    sql(path, f"UPDATE records SET data = replace(data, 'subclasses', 'subclassez') "
              f"WHERE seq = {seq}")
    return seq


def _edit_verdict(path: Path) -> int:
    seq = seq_of(path, "vet", name="helper")
    sql(path, f"UPDATE records SET data = replace(data, '\"passed\":false', '\"passed\":true') "
              f"WHERE seq = {seq}")
    return seq


def _edit_time(path: Path) -> int:
    sql(path, "UPDATE records SET time = time + 1 WHERE seq = 7")
    return 7


def _edit_kind(path: Path) -> int:
    seq = seq_of(path, "refused")
    sql(path, f"UPDATE records SET kind = 'applied' WHERE seq = {seq}")
    return seq


def _edit_step(path: Path) -> int:
    seq = seq_of(path, "applied")
    sql(path, f"UPDATE records SET step = 9 WHERE seq = {seq}")
    return seq


def _edit_hash(path: Path) -> int:
    sql(path, "UPDATE records SET hash = ? WHERE seq = 12", params=("0" * 64,))
    return 12


def _delete_middle(path: Path) -> int:
    seq = seq_of(path, "vet", name="cwd_len")
    sql(path, f"DELETE FROM records WHERE seq = {seq}")
    return seq


def _delete_first(path: Path) -> int:
    sql(path, "DELETE FROM records WHERE seq = 1")
    return 1


def _delete_last(path: Path) -> int:
    last = int(rows(path)[-1][0])
    sql(path, f"DELETE FROM records WHERE seq = {last}")
    return last


def _delete_last_three(path: Path) -> int:
    last = int(rows(path)[-1][0])
    sql(path, f"DELETE FROM records WHERE seq > {last - 3}")
    return last - 2


def _swap_seq(path: Path) -> int:
    a = seq_of(path, "proposal", name="cwd_len")
    b = a + 1
    sql(path, f"UPDATE records SET seq = -1 WHERE seq = {a}",
        f"UPDATE records SET seq = {a} WHERE seq = {b}",
        f"UPDATE records SET seq = {b} WHERE seq = -1")
    return a


def _swap_contents(path: Path) -> int:
    a = seq_of(path, "call", 0)
    b = seq_of(path, "call", 1)
    sql(path, "CREATE TEMP TABLE t AS SELECT * FROM records WHERE seq IN "
              f"({a}, {b})",
        f"UPDATE records SET data = (SELECT data FROM t WHERE seq = {b}), "
        f"hash = (SELECT hash FROM t WHERE seq = {b}) WHERE seq = {a}",
        f"UPDATE records SET data = (SELECT data FROM t WHERE seq = {a}), "
        f"hash = (SELECT hash FROM t WHERE seq = {a}) WHERE seq = {b}")
    return a


def _renumber_after_delete(path: Path) -> int:
    """Delete a row and close the gap, so the sequence looks whole."""
    seq = seq_of(path, "refused")
    sql(path, f"DELETE FROM records WHERE seq = {seq}",
        f"UPDATE records SET seq = seq - 1 WHERE seq > {seq}")
    return seq


def _insert_middle(path: Path) -> int:
    """Open a gap and insert a forged record that chains to its predecessor."""
    seq = seq_of(path, "applied")
    before = rows(path)[seq - 2]
    data = {"action": "add_function", "name": "backdoor", "version": 9, "code_hash": "f" * 64}
    content = record_content(seq, before[1], "applied", before[3], before[4], data)
    digest = record_hash(before[7], content)
    sql(path, "UPDATE records SET seq = seq + 1000000 WHERE seq >= " + str(seq),
        "UPDATE records SET seq = seq - 1000000 + 1 WHERE seq >= 1000000",
        "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        params=(seq, before[1], "applied", before[3], before[4], canonical_json(data),
                before[7], digest))
    return seq


def _append_forged(path: Path) -> int:
    last = rows(path)[-1]
    seq = int(last[0]) + 1
    data = {"name": "double", "version": 2, "verdict": "approve", "who": "eve", "why": "x",
            "code_hash": "0" * 64}
    digest = record_hash(last[7], record_content(seq, last[1], "approval", None, None, data))
    sql(path, "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        params=(seq, last[1], "approval", None, None, canonical_json(data), last[7], digest))
    return seq


def _change_code_and_rehash(path: Path) -> int:
    """Change the stored code and recompute this record's hash, every later link and the head:
    the chain is consistent again, but the code no longer matches its code_hash."""
    seq = seq_of(path, "proposal", name="double")
    _rewrite(path, lambda s, d: d["spec"].update(code="def double(n):\n    return 3 * n\n")
             if s == seq else None)
    return seq


def _forge_verdict_and_rehash(path: Path) -> int:
    """Turn a rejection into a pass, with every hash recomputed: the report contradicts itself."""
    seq = seq_of(path, "vet", name="helper")
    _rewrite(path, lambda s, d: (d.update(passed=True), d["report"].update(passed=True))
             if s == seq else None)
    return seq


def _rewrite(path: Path, change: Callable[[int, dict[str, Any]], Any]) -> None:
    """Rewrite every record with recomputed hashes (what an attacker with the file can do)."""
    db = sqlite3.connect(path / "history.sqlite", isolation_level=None)
    try:
        records = db.execute("SELECT * FROM records ORDER BY seq").fetchall()
        run_id = db.execute("SELECT value FROM meta WHERE key = 'run_id'").fetchone()[0]
        prev = genesis_hash(run_id)
        db.execute("BEGIN")
        for seq, when, kind, step, epoch, text, _, _ in records:
            data = json.loads(text)
            change(seq, data)
            digest = record_hash(prev, record_content(seq, when, kind, step, epoch, data))
            db.execute("UPDATE records SET data = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                       (canonical_json(data), prev, digest, seq))
            prev = digest
        db.execute("UPDATE meta SET value = ? WHERE key = 'head_hash'", (prev,))
        db.execute("COMMIT")
    finally:
        db.close()


def _transplant(path: Path) -> int:
    """Replace record 5 by record 5 of another run's history (a valid record, elsewhere)."""
    other = path.parent / "other"
    with HistoryStore.open(other) as store:
        for i in range(6):
            store.record("run", {"i": i})
    foreign = rows(other)[4]
    sql(path, "DELETE FROM records WHERE seq = 5")
    sql(path, "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)", params=tuple(foreign))
    return 5


TAMPERS: dict[str, Tamper] = {
    "edit code in a proposal": _edit_proposal,
    "flip a vet verdict": _edit_verdict,
    "edit a time": _edit_time,
    "edit a kind": _edit_kind,
    "edit a step": _edit_step,
    "edit a hash": _edit_hash,
    "delete a middle record": _delete_middle,
    "delete the genesis": _delete_first,
    "delete the last record": _delete_last,
    "delete the last three": _delete_last_three,
    "swap two sequence numbers": _swap_seq,
    "swap two records' contents": _swap_contents,
    "delete and renumber": _renumber_after_delete,
    "insert a forged record": _insert_middle,
    "append a forged approval": _append_forged,
    "change code, rehash the chain": _change_code_and_rehash,
    "forge a vet verdict, rehash the chain": _forge_verdict_and_rehash,
    "transplant a record from another run": _transplant,
}


@pytest.mark.parametrize("tamper", list(TAMPERS), ids=list(TAMPERS))
def test_verify_names_the_first_broken_record(copy: Path, tamper: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    expected = TAMPERS[tamper](copy)
    assert broken_at(copy) == expected
    code, out, _ = cli("verify", str(copy), capsys=capsys)
    assert code == 1 and f"BROKEN at record {expected}" in out


def test_the_sqlite3_tool_edits_are_caught(copy: Path) -> None:
    tool = shutil.which("sqlite3")
    assert tool, "install the sqlite3 tool: apt-get install -y sqlite3"
    seq = seq_of(copy, "proposal", name="cwd_len")
    db = str(copy / "history.sqlite")
    subprocess.run([tool, db, f"UPDATE records SET data = replace(data, 'getcwd', 'getpid') "
                              f"WHERE seq = {seq};"], check=True)
    assert broken_at(copy) == seq
    fresh = copy.parent / "fresh"
    shutil.copytree(copy.parent / "run", fresh, dirs_exist_ok=True)
    subprocess.run([tool, str(fresh / "history.sqlite"),
                    "DELETE FROM records WHERE seq = 3;"], check=True)
    assert broken_at(fresh) == 3


@pytest.mark.parametrize("keep", [0.5, 0.75, 0.98])
def test_a_truncated_file_fails_naming_the_first_lost_record(
        copy: Path, keep: float, capsys: pytest.CaptureFixture[str]) -> None:
    last = int(rows(copy)[-1][0])
    path = copy / "history.sqlite"
    with open(path, "r+b") as fh:
        fh.truncate(int(path.stat().st_size * keep))
    first = broken_at(copy)
    assert first is not None and 1 < first <= last
    code, out, _ = cli("verify", str(copy), capsys=capsys)
    assert code == 1 and f"BROKEN at record {first}" in out


def test_an_emptied_or_overwritten_file_fails_verification(copy: Path) -> None:
    path = copy / "history.sqlite"
    for content in (b"", b"not a database at all" * 100, path.read_bytes()[:4000]):
        path.write_bytes(content)
        report = verify_history(copy)
        assert not report.ok and report.problems


def test_schema_changes_fail_verification(copy: Path) -> None:
    sql(copy, "CREATE TRIGGER hide AFTER INSERT ON records BEGIN SELECT 1; END")
    report = verify_history(copy)
    assert not report.ok and report.problems[0].check == "schema"
    assert "trigger hide" in report.summary()


def test_a_wholesale_rewrite_passes_but_a_pinned_head_catches_it(
        copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What verify cannot detect without a pin, and how the pin detects it."""
    pinned = verify_history(copy).head_hash
    assert pinned is not None
    _rewrite(copy, lambda s, d: d.update(note="rewritten") if s == 3 else None)
    assert verify_history(copy).ok  # documented: the chain is not signed
    code, out, _ = cli("verify", str(copy), "--expect-head", pinned, capsys=capsys)
    assert code == 1 and "pinned head" in out


# -- review CLI ---------------------------------------------------------------------------------
def test_show_prints_a_summary_and_writes_the_report(copy: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(str(copy), capsys=capsys)
    assert code == 0
    assert "history intact" in out and "cwd_len@1" in out and "rejected" in out
    assert "static.import" in out
    html = (copy / "review.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "helper@1" in html
    assert "http://" not in html and "https://" not in html and "<script" not in html
    code, out, _ = cli("show", str(copy), "--out", str(copy / "r2.html"), capsys=capsys)
    assert code == 0 and (copy / "r2.html").is_file()
    assert (copy / "r2.html").stat().st_mode & 0o777 == 0o644
    module = subprocess.run([sys.executable, "-m", "optimizer.history", "verify", str(copy)],
                            capture_output=True, text=True, check=False)
    assert module.returncode == 0 and "history intact" in module.stdout


def test_hostile_text_is_inert_in_the_terminal(copy: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    name = "[bold green]PASSED[/]\x1b[2J\u202e"
    code = "def f(n):\n    return n\n"
    spec = {**fn("f", "", 1, code=code), "name": name}
    spec.pop("reason")
    with HistoryStore.open(copy) as store:
        store.record("proposal", {"action": "add_function", "name": name, "reason": HOSTILE_TEXT,
                                  "spec": spec, "code_hash": sha256_hex(code), "parent": None})
    rc, out, _ = cli(str(copy), capsys=capsys)
    assert rc == 0
    assert "\x1b" not in out and "\u202e" not in out
    assert "[bold green]PASSED[/]\\x1b[2J\\u202e@1" in out


def test_usage_errors_exit_2_with_one_message(run: Run,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli("verify", str(run.path / "nope"), capsys=capsys)
    assert code == 2 and "does not exist" in err
    code, _, err = cli("approve", str(run.path), "double@7", "--why", "x", capsys=capsys)
    assert code == 2 and "double@7" in err and "double@1" in err
    code, _, err = cli("approve", str(run.path), "nothing", "--why", "x", capsys=capsys)
    assert code == 2 and "NAME@VERSION" in err
    code, _, err = cli("approve", str(run.path), "double@1", capsys=capsys)
    assert code == 2
    code, _, err = cli("frobnicate", capsys=capsys)
    assert code == 2


def test_approvals_are_recorded_and_checked(copy: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = cli("approve", str(copy), "double@1", "--why", "reviewed: pure arithmetic",
                       "--by", "alice", capsys=capsys)
    assert code == 0 and "approve double@1 by alice" in out
    monkeypatch.setenv("FNFORGE_RUN", str(copy))
    monkeypatch.setenv("FNFORGE_REVIEWER", "bob")
    code, _, _ = cli("deny", "plus_one@1", "--why", "timed out calling out", capsys=capsys)
    assert code == 0
    code, _, err = cli("approve", "helper@1", "--why", "looks fine", capsys=capsys)
    assert code == 2 and "never passed vetting" in err
    review = build_review(copy)
    assert review.verify.ok
    double, plus_one = review.version("double", 1), review.version("plus_one", 1)
    assert double.approved and double.approval is not None and double.approval.who == "alice"
    assert not plus_one.approved and plus_one.approval is not None
    assert plus_one.approval.verdict == "deny" and plus_one.approval.who == "bob"
    assert "denied" in plus_one.flag_reasons
    # an approval that names another version's code is caught by verify
    seq = seq_of(copy, "approval", name="double")
    _rewrite(copy, lambda s, d: d.update(version=2) if s == seq else None)
    assert broken_at(copy) == seq


def test_lock_loads_only_approved_functions_with_their_exact_code(
        copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("approve", str(copy), "double@1", "--why", "ok", "--by", "alice",
               capsys=capsys)[0] == 0
    assert cli("deny", str(copy), "plus_one@1", "--why", "no", "--by", "alice",
               capsys=capsys)[0] == 0
    code, out, _ = cli("lock", str(copy), capsys=capsys)
    assert code == 0 and "locked   double@1" in out and "excluded plus_one@1" in out
    lock_path = copy / "library.lock.json"
    lock = LockFile.load(lock_path)
    assert [f.ref for f in lock.functions] == ["double@1"]
    assert lock.functions[0].approvals[0]["who"] == "alice"
    assert lock.head_hash == verify_history(copy).head_hash
    assert {x["name"]: x["why"][:10] for x in lock.excluded} == {
        "plus_one": "denied by ", "shout": "not review"}

    library = load_locked_library(lock_path, copy)
    assert library.names() == ["double"]
    assert library.get("double").code_hash == lock.functions[0].code_hash

    # a saved library whose double was changed is refused, naming the function
    review = build_review(copy)
    vet = review.version("double", 1).passing_vet
    assert vet is not None
    spec = FunctionSpec.from_dict({**review.version("double", 1).specs[vet.spec_hash]})
    good = FunctionLibrary()
    good.add(spec, VetReport.from_dict(vet.report))
    assert load_locked_library(lock_path, good).names() == ["double"]
    other = FunctionSpec.from_dict({**spec.to_dict(), "code": "def double(n):\n    return n*2\n"})
    changed = FunctionLibrary()
    changed.add(other, VetReport.from_dict({**vet.report, "code_hash": other.code_hash,
                                            "spec_hash": other.spec_hash}))
    changed.save(tmp_path / "changed.json")
    with pytest.raises(LockError, match="double@1: the library's code of 'double' differs"):
        load_locked_library(lock_path, tmp_path / "changed.json")
    with pytest.raises(LockError, match="no function 'double'"):
        load_locked_library(lock_path, FunctionLibrary())

    # the lock pins the history: a rewritten history is refused
    assert cli("verify", str(copy), "--lock", str(lock_path), capsys=capsys)[0] == 0
    _rewrite(copy, lambda s, d: d.update(note="x") if s == 2 else None)
    with pytest.raises(LockError, match="rewritten"):
        load_locked_library(lock_path, copy)
    assert cli("verify", str(copy), "--lock", str(lock_path), capsys=capsys)[0] == 1

    # an edited lock file is refused
    data = json.loads(lock_path.read_text())
    data["functions"][0]["code_hash"] = other.code_hash
    lock_path.write_text(json.dumps(data))
    with pytest.raises(LockError, match="edited"):
        load_locked_library(lock_path, tmp_path / "changed.json")


def test_no_lock_from_a_broken_history(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _edit_proposal(copy)
    code, _, err = cli("lock", str(copy), capsys=capsys)
    assert code == 1 and "does not verify" in err
    with pytest.raises(HistoryError):
        build_lock(build_review(copy))
    code, _, err = cli("approve", str(copy), "double@1", "--why", "x", capsys=capsys)
    assert code == 1 and "does not verify" in err


def test_export_is_jsonl_whose_chain_recomputes_without_fnforge(
        run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    buffer = io.StringIO()
    assert export_jsonl(run.path, buffer).ok
    lines = buffer.getvalue().splitlines()
    assert len(lines) == len(rows(run.path))
    prev = hashlib.sha256(f"fnforge-history/1\n{run.run_id}".encode()).hexdigest()
    for line in lines:
        item = json.loads(line)
        assert item["run_id"] == run.run_id and item["prev_hash"] == prev
        content = json.dumps({k: item[k] for k in ("seq", "time", "kind", "step", "epoch",
                                                    "data")},
                             sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        assert hashlib.sha256(f"{prev}\n{content}".encode()).hexdigest() == item["hash"]
        prev = item["hash"]
    code, _, err = cli("export", str(run.path), "--out", str(tmp_path / "h.jsonl"),
                       capsys=capsys)
    assert code == 0 and "intact" in err
    assert (tmp_path / "h.jsonl").read_text().splitlines() == lines


def test_verify_json_output(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli("verify", str(run.path), "--json", capsys=capsys)
    data = json.loads(out)
    assert code == 0 and data["ok"] and data["records"] == len(rows(run.path))
    assert data["head_hash"] == rows(run.path)[-1][7]


def test_spec_hash_matches_function_spec() -> None:
    spec = FunctionSpec.from_dict({k: v for k, v in fn("f", "return n", 2).items()
                                   if k != "reason"})
    assert spec_hash(spec.to_dict()) == spec.spec_hash
    assert sha256_hex(spec.code) == spec.code_hash
