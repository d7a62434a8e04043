"""The same guarantees under gVisor (runsc), Debian's 2022 build, registered with the engine by
images/setup-gvisor.sh. CI sets FNFORGE_REQUIRE_GVISOR=1 and runs the setup: there a missing
runsc fails these tests instead of skipping them.

gVisor implements its own kernel: /proc, pipes, tmpfs and the pids cgroup behave differently
(README, "Trust model"; sandbox/container.py and sandbox/runner/server.py say where). These tests
check the guarantees themselves, not Linux's way of giving them.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator

import docker
import pytest

from sandbox import ErrorKind, Sandbox

from .test_isolation import ECHO, ECHO_HEAVY, _search

pytestmark = pytest.mark.timeout(900)


def _runsc_registered() -> bool:
    try:
        return "runsc" in (docker.from_env().info().get("Runtimes") or {})
    except Exception:
        return False


if not _runsc_registered():
    if os.environ.get("FNFORGE_REQUIRE_GVISOR") == "1":
        pytest.fail("runsc is not registered with the engine: run images/setup-gvisor.sh",
                    pytrace=False)
    pytest.skip("runsc is not registered with the engine (images/setup-gvisor.sh)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def gvisor() -> Iterator[Sandbox]:
    with Sandbox(pool_size=1, runtime="runsc") as sb:
        yield sb


def test_the_self_test_passes_under_gvisor() -> None:
    proc = subprocess.run([sys.executable, "-m", "sandbox", "selftest", "--runtime", "runsc"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["passed"] and report["runtime"] == "runsc"


def test_calls_runs_and_limits_work_under_gvisor(gvisor: Sandbox) -> None:
    assert gvisor.call(ECHO, {"secret": "abcd"}).value == 4
    assert gvisor.call(ECHO_HEAVY, {"secret": "ab"}).value == 2
    r = gvisor.run("import sympy\nprint(sympy.factorint(360))")
    assert r.ok and r.stdout == "{2: 3, 3: 2, 5: 1}\n"
    slow = gvisor.run("while True:\n    pass\n", timeout=1.0)
    assert slow.error is not None and slow.error.kind is ErrorKind.TIMEOUT
    assert gvisor.call(ECHO, {"secret": "x"}).value == 1


def test_nothing_crosses_calls_under_gvisor(gvisor: Sandbox) -> None:
    secret = "gv-" + secrets.token_hex(16)
    assert gvisor.call(ECHO, {"secret": secret}).value == len(secret)
    r = gvisor.run(f"open('/tmp/left', 'w').write({secret!r})")
    assert r.ok
    assert _search(gvisor, secret) == []
    assert gvisor.run("import os\nprint(os.listdir('/tmp'))").stdout == "[]\n"


def test_no_result_can_be_forged_through_proc_under_gvisor(gvisor: Sandbox) -> None:
    """Debian's runsc leaves /proc/<pid>/fd of non-dumpable processes listable: the runner's
    protocol stream has mode 0 and every call channel is a socket, so nothing can be reopened."""
    code = r"""
import os
opened = []
for p in os.listdir("/proc"):
    if not p.isdigit() or int(p) == os.getpid():
        continue
    try:
        names = os.listdir(f"/proc/{p}/fd")
    except OSError:
        continue
    for n in names:
        try:
            if os.readlink(f"/proc/{p}/fd/{n}") == "/dev/null":
                continue
            fd = os.open(f"/proc/{p}/fd/{n}", os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, b'{"id": 1, "ok": true, "value": "FORGED"}\n')
            opened.append(f"{p}/{n}")
        except OSError:
            pass
print(opened)
"""
    r = gvisor.run(code, audit=False)
    assert r.ok and r.stdout == "[]\n", r.stdout
    assert gvisor.call(ECHO, {"secret": "abc"}).value == 3
