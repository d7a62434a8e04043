"""The walls behind the call boundary, container side (issue 19): nothing a call does costs the
next one, nothing of a call's state reaches the next one, a memory kill is never hidden, and
nothing a sandbox's owner created outlives it.

- A request that never started is never failed: the runner does nothing for a call after its
  answer but clean up, and the host starts the next call's clock only once the runner says it is
  ready; a runner that is not ready in time is replaced and the request goes elsewhere. The
  runner never compiles or keeps a call's code, so no call's code grows it either.
- State that survives a call: /tmp's inode flags cannot be set from a call (the kernel filter),
  and every random generator a call process inherits from its zygote is reseeded from the kernel.
- A call during which the container's OOM killer killed any process is a memory error.
- A dead owner leaves nothing: the engine removes a container once its owner's stream is gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import docker
import docker.errors
import pytest

from sandbox import ErrorKind, Sandbox
from sandbox.container import container_options
from sandbox.image import find_image
from sandbox.limits import DEFAULT_LIMITS, Limits
from sandbox.runtime import _KILLED_FROM_OUTSIDE, _container_end, _Worker

from .conftest import make_spec
from .test_isolation import _CONTAINER_ID
from .test_selftest import _run_probes

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[1]
INNOCENT = make_spec("def innocent(n):\n    return n * 6\n")


@pytest.fixture()
def one_container() -> Iterator[Sandbox]:
    """Every call goes to the same container (unless it is replaced)."""
    with Sandbox(pool_size=1) as sb:
        yield sb


# -- a call that never started fails --------------------------------------------------------------
def _slow_to_compile(statements: int) -> str:
    """Valid code whose compile alone takes seconds (RestrictedPython, tens of thousands of
    statements, under the request size limit)."""
    body = "".join(f"    if x == {i}: return {i}\n" for i in range(statements))
    return f"def slow(x):\n{body}    return -1\n"


def test_a_slow_compile_costs_only_its_own_call(one_container: Sandbox) -> None:
    """The runner used to compile each call's code for its cache after answering, with no
    deadline: a slow compile made the next request on that container time out."""
    slow = make_spec(_slow_to_compile(30_000))
    same = one_container.run(_CONTAINER_ID).stdout
    # the compile takes 0.9 s on a fast 2-core machine, seconds on others: a deadline well
    # under it on any of them
    r = one_container.call(slow, {"x": 1}, timeout=0.3)
    assert r.timed_out and r.error is not None and r.error.kind is ErrorKind.TIMEOUT, r.error
    for n in range(3):
        r = one_container.call(INNOCENT, {"n": n}, timeout=1)
        assert r.ok and r.value == n * 6, r.error
    assert one_container.run(_CONTAINER_ID).stdout == same  # served by the same container


RUNNER_RSS = ("import re\nprint(re.search(r'VmRSS:\\s+(\\d+)', "
              "open('/proc/1/status').read()).group(1))\n")


def test_many_large_distinct_functions_do_not_grow_the_runner(one_container: Sandbox) -> None:
    """The runner kept up to 256 compiled functions whatever their size: large distinct ones
    grew it until an innocent call was killed for memory. It keeps no call's code now."""
    before = int(one_container.run(RUNNER_RSS).stdout)
    items = ", ".join(str(i) for i in range(40_000))  # ~300 kB of source, ~2 MB compiled
    for salt in range(30):
        big = make_spec(f"def big(n):\n    return n + {salt} + len(({items}))\n")
        r = one_container.call(big, {"n": 1}, restricted=False, timeout=10)
        assert r.ok and r.value == 40_001 + salt, r.error
    after = int(one_container.run(RUNNER_RSS).stdout)
    assert after - before < 16 * 1024, (before, after)  # kB: requests pass through, nothing kept
    assert one_container.call(INNOCENT, {"n": 7}).value == 42


FAKE_RUNNER = r"""
import json, os, sys, time
def line():
    return json.loads(sys.stdin.readline())
def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()
send({"id": line()["id"], "ok": True})
send({"id": None, "ready": True})
ANSWER = {"ok": True, "value": 42, "stdout": "", "stderr": "", "stdout_truncated": False,
          "stderr_truncated": False, "timed_out": False, "oom_killed": False,
          "duration_ms": 1.0, "audit": [], "error": None}
while True:
    send({**ANSWER, "id": line()["id"]})
    time.sleep(CLEAN_UP_S)  # the clean-up after a call, slow
    send({"id": None, "ready": True})
"""


def _swap_in_fake_runner(sb: Sandbox, clean_up_s: float) -> _Worker:
    """White box: the pool's one container swapped for one whose runner cleans up slowly."""
    real = sb._idle.get()
    script = FAKE_RUNNER.replace("CLEAN_UP_S", repr(clean_up_s))
    fake = _Worker(sb._client, {**sb._options, "entrypoint": ["/usr/bin/python3", "-c", script]},
                   sb.limits, sb._policy)
    sb._workers.add(fake)
    sb._idle.put(fake)
    return real


def test_the_runners_clean_up_is_never_charged_to_the_next_call() -> None:
    """A runner still cleaning up after its last answer (for longer than the next call's timeout
    and the host's grace): the next call waits for it and runs in full."""
    with Sandbox(pool_size=1) as sb:
        _swap_in_fake_runner(sb, clean_up_s=4.0)
        first = sb.call(INNOCENT, {"n": 1}, timeout=0.5)
        assert first.ok and first.value == 42  # the fake's answer
        t0 = time.monotonic()
        second = sb.call(INNOCENT, {"n": 1}, timeout=0.5)
        assert second.ok and second.value == 42, second.error
        assert time.monotonic() - t0 > 3.0  # it waited for the clean-up: that was the runner's


def test_a_runner_never_ready_again_fails_no_call() -> None:
    """A runner that does not say it is ready within the limit is replaced; the request, never
    started, goes to the replacement."""
    with Sandbox(pool_size=1, limits=Limits(ready_wait_s=1.0)) as sb:
        _swap_in_fake_runner(sb, clean_up_s=3600.0)
        assert sb.call(INNOCENT, {"n": 1}, timeout=1).value == 42  # the fake's answer
        for n in range(3):
            r = sb.call(INNOCENT, {"n": n}, timeout=1)
            assert r.ok and r.value == n * 6, r.error  # the real runner that replaced it


# -- state that survives a call -------------------------------------------------------------------
TMP_FLAGS = r"""
import fcntl, os, struct
fd = os.open('/tmp', os.O_RDONLY | os.O_DIRECTORY)
buf = bytearray(8)
fcntl.ioctl(fd, 0x80086601, buf)  # FS_IOC_GETFLAGS
print('flags', struct.unpack('i', buf[:4])[0])
"""
SET_TMP_FLAGS = TMP_FLAGS + r"""
for cmd, fmt in ((0x40086602, 'q'), (0x40046602, 'i')):  # FS_IOC_SETFLAGS, FS_IOC32_SETFLAGS
    try:
        fcntl.ioctl(fd, cmd, struct.pack(fmt, 0x40 | 0x80))  # no-dump, no-atime
        print('set')
    except OSError as exc:
        print('refused', exc.errno)
"""


def test_tmp_inode_flags_cannot_carry_bits_to_the_next_call(one_container: Sandbox) -> None:
    """The sandbox user owns /tmp, so it may set chattr's no-dump and no-atime on it, and /tmp
    outlives every call: the kernel filter refuses every call process the ioctls."""
    before = one_container.run(TMP_FLAGS, audit=False)
    assert before.ok, before.error
    r = one_container.run(SET_TMP_FLAGS, audit=False)
    assert r.stdout.splitlines()[1:] == ["refused 1", "refused 1"], r.stdout  # EPERM
    assert one_container.run(TMP_FLAGS, audit=False).stdout == before.stdout


def test_tmp_inode_flags_set_past_the_filter_are_put_back(one_container: Sandbox,
                                                        docker_client: docker.DockerClient
                                                        ) -> None:
    """Belt and braces: flags set on /tmp by a process without the call's filter (docker exec
    as the sandbox user, standing for a filter bypass) are put back by the runner's clean-up."""
    before = one_container.run(TMP_FLAGS, audit=False).stdout
    same = one_container.run(_CONTAINER_ID).stdout
    cid = next(iter(one_container._workers)).container.id
    setter = docker_client.containers.get(cid).exec_run(
        ["python3", "-c", SET_TMP_FLAGS], user=f"{10001}:{10001}")
    assert b"set" in setter.output, setter.output  # no filter: the owner may set them
    assert one_container.call(INNOCENT, {"n": 1}).value == 6  # the clean-up after this call...
    assert one_container.run(TMP_FLAGS, audit=False).stdout == before  # ...put them back
    assert one_container.run(_CONTAINER_ID).stdout == same  # in place: not retired


DRAW = ("import random, numpy, mpmath\nfrom sympy.core.random import rng\n"
        "print(random.random(), numpy.random.random(), rng.random(), mpmath.rand())\n")


def test_every_call_draws_its_own_random_numbers(one_container: Sandbox) -> None:
    """A call process is forked from a zygote that imported numpy, sympy and mpmath: without a
    reseed every call drew the zygote's numbers (numpy's global generator, sympy's own)."""
    draws = [one_container.run(DRAW).stdout.split() for _ in range(4)]
    assert all(len(d) == 4 for d in draws), draws
    for library in range(4):  # random, numpy, sympy, mpmath
        column = [d[library] for d in draws]
        assert len(set(column)) == len(column), (library, column)


def test_the_state_probes_pass_in_a_call_and_fail_outside_one(one_container: Sandbox) -> None:
    """The self-test's probes of both: confined in real call processes (light and heavy), not
    in a plain process in the same container (no kernel filter, generators as inherited)."""
    report = one_container.selftest()
    for name in ("random_reseeded", "tmp_inode_flags", "engine_removed_with_owner"):
        assert report[name]["confined"], report[name]
    client = docker.from_env()
    plain = _run_probes(client, one_container._options)
    assert not plain["tmp_inode_flags"]["confined"], plain["tmp_inode_flags"]
    assert not plain["random_reseeded"]["confined"], plain["random_reseeded"]


# -- a memory kill is never hidden ----------------------------------------------------------------
OOM_A_CHILD = r"""
import os
pid = os.fork()
if pid == 0:
    chunks = []
    while True:
        chunks.append(bytearray(b'x' * (16 << 20)))
_, status = os.waitpid(pid, 0)
print('child', status)
"""
OOM_WHOEVER_IS_LARGEST = r"""
import os, time
def stat(pid):
    return open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
zygotes = [p for p in os.listdir('/proc') if p.isdigit() and p != '1' and stat(p)[1] == '1']
children = []
for _ in range(14):  # each smaller than the heavy zygote: the kernel picks the zygote first
    pid = os.fork()
    if pid == 0:
        data = bytearray(40 << 20)
        data[::4096] = b'y' * len(data[::4096])  # resident, one copy
        time.sleep(2)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
print('zygotes killed', sum(stat(p)[0] == 'Z' for p in zygotes))
"""


@pytest.mark.parametrize("code", [OOM_A_CHILD, OOM_WHOEVER_IS_LARGEST],
                         ids=["a child of the call", "whoever is largest"])
def test_an_oom_kill_of_any_process_during_a_call_is_a_memory_error(code: str) -> None:
    """The call's own process survives and exits 0; the OOM killer killed another one (its child,
    or a zygote or spare of the runner): the call is a memory error, and the container goes."""
    with Sandbox(pool_size=1) as sb:
        container = sb.run(_CONTAINER_ID).stdout
        r = sb.run(code, audit=False, timeout=30)
        assert not r.ok and r.oom_killed, (r.stdout, r.error)
        assert r.error is not None and r.error.kind is ErrorKind.MEMORY_LIMIT, r.error
        if code is OOM_WHOEVER_IS_LARGEST:  # the example of the issue: the heavy zygote died
            assert "zygotes killed 0" not in r.stdout, r.stdout
        assert sb.call(INNOCENT, {"n": 2}).value == 12
        assert sb.run(_CONTAINER_ID).stdout != container  # replaced


# -- what a dead owner leaves behind --------------------------------------------------------------
OWNER = r"""
import json, os, sys, threading
from sandbox import Sandbox
# The containers name the test's process as their owner, which stays alive: no pool starting
# meanwhile (other tests, other users of the engine) removes them as a dead owner's, so what
# removes them is the engine alone.
os.getpid = lambda: int(sys.argv[1])
sb = Sandbox(pool_size=2)
sb.start()
ids = [w.container.id for w in sb._workers]
busy = threading.Thread(target=sb.run, args=("import time\ntime.sleep(5)\n",),
                        kwargs={"timeout": 10})
busy.start()  # one container is under a call when its owner dies
print(json.dumps(ids), flush=True)
threading.Event().wait()
"""


def test_an_owner_killed_with_sigkill_leaves_no_container(docker_client: docker.DockerClient
                                                         ) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(os.getpid())], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        ids = json.loads(owner.stdout.readline())
        assert len(ids) == 2
        for cid in ids:
            container = docker_client.containers.get(cid)
            assert container.status == "running"
            assert container.labels["fnforge.owner"] == str(os.getpid())
        time.sleep(0.5)  # the call is under way
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    finally:
        if owner.poll() is None:
            owner.kill()
    deadline = time.monotonic() + 30  # the call's own deadline (10 s) bounds it
    left = ids
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = [cid for cid in ids if _exists(docker_client, cid)]
    assert not left, f"containers outlived their owner: {[c[:12] for c in left]}"


def _exists(client: docker.DockerClient, cid: str) -> bool:
    try:
        client.containers.get(cid)
    except docker.errors.NotFound:
        return False
    return True


@pytest.mark.parametrize(("script", "end", "cause"), [
    ("x = b'x' * (1 << 30)", "oom", "the OOM killer ended it"),
    ("import time\ntime.sleep(60)", "engine", _KILLED_FROM_OUTSIDE),
], ids=["oom", "killed"])
def test_a_container_the_engine_removed_still_says_how_it_ended(
        docker_client: docker.DockerClient, script: str, end: str, cause: str) -> None:
    """Containers are removed by the engine when they exit; how one ended (its runner killed by
    the OOM killer, or from outside) is read from the engine's events once it is gone."""
    options = container_options(find_image(docker_client).id, DEFAULT_LIMITS)
    container = docker_client.containers.create(
        **{**options, "entrypoint": ["/usr/bin/python3", "-c", script]})
    worker = SimpleNamespace(container=container, client=docker_client, created=time.time())
    container.start()
    if end == "engine":
        time.sleep(0.5)
        container.kill()
    deadline = time.monotonic() + 30
    while _exists(docker_client, container.id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _exists(docker_client, container.id)  # removed by the engine
    assert _container_end(worker) == (end, cause)  # type: ignore[arg-type]
