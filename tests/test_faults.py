"""Faults from outside: the engine kills a container under a call; the runner loses a zygote.

Only the call that was running when its container died fails, saying how it ended; a call that
never started goes to a healthy container.
"""

from __future__ import annotations

import threading
import time

import docker
import pytest

from sandbox import ErrorKind, Sandbox

from .test_isolation import _CONTAINER_ID, ECHO

pytestmark = pytest.mark.timeout(300)


def test_a_container_killed_by_the_engine_mid_call(docker_client: docker.DockerClient) -> None:
    with Sandbox(pool_size=1) as sb:
        cid = next(iter(sb._workers)).container.id
        killer = threading.Timer(1.0, lambda: docker_client.containers.get(cid).kill())
        killer.start()
        t0 = time.monotonic()
        r = sb.run("import time\ntime.sleep(30)\n", timeout=20)
        killer.join()
        assert time.monotonic() - t0 < 15  # noticed at once, not at the deadline
        assert r.error is not None and r.error.kind is ErrorKind.CRASHED
        assert "killed (SIGKILL) from outside" in r.error.message
        for _ in range(3):  # the next calls get the replacement
            assert sb.call(ECHO, {"secret": "ab"}).value == 2


KILL_ZYGOTES = ("import os, signal\n"
                "for p in os.listdir('/proc'):\n"
                "    if p.isdigit() and p != '1':\n"
                "        stat = open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()\n"
                "        if stat[1] == '1':  # a child of the runner: a zygote\n"
                "            os.kill(int(p), signal.SIGKILL)\n")


def test_a_runner_that_lost_a_zygote_retires_without_failing_a_call(
        docker_client: docker.DockerClient) -> None:
    """Kill both zygotes from outside (as the engine or the OOM killer might): the runner can no
    longer fork clean processes, so it retires; the calls that follow go to a new container
    and all succeed."""
    with Sandbox(pool_size=1) as sb:
        cid = next(iter(sb._workers)).container.id
        before = sb.run(_CONTAINER_ID).stdout
        docker_client.containers.get(cid).exec_run(["python3", "-c", KILL_ZYGOTES],
                                                   user="10001")
        for _ in range(3):
            assert sb.call(ECHO, {"secret": "abc"}).value == 3
        assert sb.run(_CONTAINER_ID).stdout != before  # served by the replacement
