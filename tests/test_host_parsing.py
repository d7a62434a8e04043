"""The host never raises on any bytes a container sends.

Two layers: the check of a runner's answer (`_checked`) fuzzed with random and mutated answers,
and a real container whose "runner" is a hostile script answering every call with garbage,
through the real pool, stream and parser. Either way the caller gets a result saying the
container broke, and the pool keeps serving.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox import ErrorKind, Sandbox, SandboxBroken
from sandbox.limits import DEFAULT_LIMITS
from sandbox.runtime import _checked, _Worker

from .conftest import make_spec

VALID: dict[str, Any] = {
    "id": 1, "ok": True, "value": [1, {"a": 2}], "stdout": "out", "stderr": "",
    "stdout_truncated": False, "stderr_truncated": False, "timed_out": False,
    "oom_killed": False, "duration_ms": 1.5, "audit": [{"event": "open", "detail": "/x"}],
    "error": None, "exit_code": 0, "calls": {"power_mod": 2},
}
NASTY: list[Any] = [None, True, -1, 2**70, 1.5, "", "x" * 70000, [], {}, [[[]]], {"kind": 1},
                    {"kind": "exception", "type": 5}, {"kind": "nope", "type": "", "message": ""},
                    ["a"] * 200, [{"event": 1}], float("inf")]


def _mutations(rng: random.Random) -> Iterator[dict[str, Any]]:
    for _ in range(3000):
        answer = json.loads(json.dumps(VALID))
        for _ in range(rng.randrange(1, 4)):
            key = rng.choice([*VALID, "extra"])
            if rng.random() < 0.2:
                answer.pop(key, None)
            else:
                answer[key] = rng.choice(NASTY)
        yield answer


@pytest.mark.parametrize("op", ["call", "run"])
def test_mutated_answers_are_accepted_or_refused_never_crash(op: str) -> None:
    rng = random.Random(11)
    accepted = refused = 0
    for answer in _mutations(rng):
        try:
            fields = _checked(answer, op, DEFAULT_LIMITS)
        except SandboxBroken:
            refused += 1
            continue
        accepted += 1
        assert isinstance(fields["ok"], bool) and isinstance(fields["stdout"], str)
        assert fields["error"] is None or isinstance(fields["error"].kind, ErrorKind)
    assert refused > 1000 and accepted > 10  # both paths were exercised
    assert _checked(VALID, op, DEFAULT_LIMITS)["value"] == [1, {"a": 2}]


@pytest.mark.parametrize("calls", [[], {"a b": 1}, {"f": -1}, {"f": True}, {"f": 1.0},
                                   {"f": 10 ** 10}, {f"f{i}": 1 for i in range(65)}])
def test_a_code_blocks_library_calls_are_only_a_bounded_map_of_names_to_counts(
        calls: Any) -> None:
    assert _checked(VALID, "run", DEFAULT_LIMITS)["calls"] == {"power_mod": 2}
    with pytest.raises(SandboxBroken, match="calls"):
        _checked({**VALID, "calls": calls}, "run", DEFAULT_LIMITS)


FAKE_RUNNER = r"""
import json, sys
req = json.loads(sys.stdin.readline())
sys.stdout.write(json.dumps({"id": req["id"], "ok": True}) + "\n")
sys.stdout.write(json.dumps({"id": None, "ready": True}) + "\n")
sys.stdout.flush()
req = json.loads(sys.stdin.readline())
sys.stdout.buffer.write(PAYLOAD.replace(b"@ID@", str(req["id"]).encode()))
sys.stdout.flush()
sys.stdin.read()
"""

UNKNOWN_KIND = json.dumps({**VALID, "ok": False, "error": {
    "kind": "escape", "type": "X", "message": "", "traceback": ""}})
UNKNOWN_KIND = UNKNOWN_KIND.replace('"id": 1', '"id": @ID@')
ANSWERS: dict[str, str] = {  # Python expressions of the bytes the fake runner answers with
    "garbage": "b'\\x00\\xff not json at all\\n'",
    "deep nesting": "b'[' * 200_000 + b'\\n'",
    "huge line": "b'{\"id\": @ID@, \"stdout\": \"' + b'x' * (5 << 20) + b'\"}\\n'",
    "wrong id": "b'{\"id\": 999999, \"ok\": true}\\n'",
    "not an object": "b'[1, 2, 3]\\n'",
    "missing fields": "b'{\"id\": @ID@, \"ok\": true}\\n'",
    "NaN": "b'{\"id\": @ID@, \"ok\": true, \"duration_ms\": NaN}\\n'",
    "unknown kind": repr(UNKNOWN_KIND.encode() + b"\n"),
    "stream closed": "b''",
    "no newline then silence": "b'{\"id\": @ID@, \"ok\": tr'",
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("payload", list(ANSWERS.values()), ids=list(ANSWERS))
def test_a_hostile_runner_gets_a_crashed_result_not_an_exception(payload: str) -> None:
    spec = make_spec("def f(x):\n    return x\n")
    with Sandbox(pool_size=1) as sb:
        real = sb._idle.get()  # white box: swap the pool's one container for a hostile one
        script = FAKE_RUNNER.replace("PAYLOAD", f"({payload})")
        hostile = _Worker(sb._client, {**sb._options,
                                       "entrypoint": ["/usr/bin/python3", "-c", script]},
                          sb.limits, sb._policy)
        sb._workers.add(hostile)
        sb._idle.put(hostile)
        r = sb.call(spec, {"x": 1}, timeout=2)
        assert not r.ok and r.error is not None
        assert r.error.kind in (ErrorKind.CRASHED, ErrorKind.TIMEOUT), r.error
        sb._idle.put(real)
        assert sb.call(spec, {"x": 5}).value == 5  # the pool goes on
