"""The fault-injection suite: what batch training meets, done for real.

- Containers: the engine kills one under a call, or every idle one; the runner loses its
  zygotes. Only the call that was running when its container died fails, saying how it ended;
  a call that never started goes to a healthy container.
- The engine: a dockerd of the test's own is stopped and restarted under a running pool and
  under a training run; one that stays away past the limit fails calls with what to do.
- The endpoint: 429 (with and without Retry-After), 500/502/503, a timeout, a reset, a truncated
  body, a non-JSON body and an empty choice list, each on cue in the middle of training.
- The machine: the run directory's disk fills up under a training process.
Every training run here must end with the same results as an undisturbed run of the same script.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from optimizer.runconfig import load_run_config
from optimizer.train import RunDirectory, train
from sandbox import EngineUnavailable, ErrorKind, Sandbox
from sandbox.image import find_image

from .scripted_llm import (
    TEST_KEY,
    Reply,
    ScriptedLLM,
    client_for,
    rate_limited,
    server_error,
)
from .test_isolation import _CONTAINER_ID, ECHO
from .test_train import respond, write_config

pytestmark = pytest.mark.timeout(600)


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


def test_idle_containers_killed_by_the_engine_fail_no_call(
        docker_client: docker.DockerClient) -> None:
    """Every container of the pool killed while idle: the calls that follow never see it."""
    with Sandbox(pool_size=2) as sb:
        for worker in list(sb._workers):
            docker_client.containers.get(worker.container.id).kill()
        results = [sb.call(ECHO, {"secret": "abcd"}) for _ in range(6)]
        assert [r.value for r in results] == [4] * 6, [r.error for r in results]


# -- a Docker engine of the test's own, to stop and restart -------------------------------------
class SpareEngine:
    """A second dockerd on its own socket, data and exec roots and network namespace, holding a
    copy of the sandbox image: restarting it is a real engine restart no other test shares."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "d.sock"
        self.url = f"unix://{self.socket}"
        (root / "daemon.json").write_text("{}")  # not the host's: its data-root would clash
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.root / "dockerd.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            # a network namespace of its own: with `--bridge none` dockerd deletes the
            # docker0 bridge of the namespace it runs in, which must not be the host's
            ["unshare", "--net", "dockerd", "--config-file", str(self.root / "daemon.json"),
             "--host", self.url,
             "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
             "--pidfile", str(self.root / "dockerd.pid"), "--bridge", "none",
             "--iptables=false", "--ip6tables=false", "--shutdown-timeout", "1"],
            stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                client = docker.DockerClient(base_url=self.url, timeout=10)
                client.ping()
                break
            except Exception:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the spare engine did not start: " + (
                        self.root / "dockerd.log").read_text()[-2000:]) from None
                time.sleep(0.1)
        client.close()

    def stop(self) -> None:
        """As `systemctl stop docker` would: the engine stops its containers and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)

    def restart_after(self, seconds: float) -> threading.Thread:
        def restart() -> None:
            self.stop()
            time.sleep(seconds)
            self.start()

        thread = threading.Thread(target=restart, daemon=True)
        thread.start()
        return thread


@pytest.fixture(scope="module")
def spare_engine(docker_client: docker.DockerClient) -> Iterator[SpareEngine]:
    if shutil.which("dockerd") is None or shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root, dockerd and unshare to run an engine of its own")
    for stale in Path("/tmp").glob("fnforge-engine-*"):  # left by a test process killed mid-way
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((stale / "dockerd.pid").read_text()), signal.SIGTERM)
            time.sleep(3)  # it stops its containerd and unmounts its data root
        shutil.rmtree(stale, ignore_errors=True)
    root = Path(tempfile.mkdtemp(prefix="fnforge-engine-", dir="/tmp"))
    engine = SpareEngine(root)
    engine.start()
    try:
        image = find_image(docker_client)
        spare = docker.DockerClient(base_url=engine.url, timeout=120)
        spare.images.load(b"".join(image.save(named=True)))
        spare.close()
        yield engine
    finally:
        engine.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_the_engine_restarting_is_waited_out_and_the_selftest_runs_again(
        spare_engine: SpareEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", spare_engine.url)
    with Sandbox(pool_size=2, engine_wait_s=120) as sb:
        assert sb.call(ECHO, {"secret": "ab"}).value == 2
        restart = threading.Timer(1.0, lambda: spare_engine.restart_after(2.0))
        restart.start()
        t0 = time.monotonic()
        running = sb.run("import time\ntime.sleep(30)\n", timeout=20)  # lost with the engine
        lost_after = time.monotonic() - t0
        assert running.error is not None and running.error.lost_to_engine, running.error
        t1 = time.monotonic()
        after = [sb.call(ECHO, {"secret": "abc"}) for _ in range(4)]  # waits for the engine
        back_after = time.monotonic() - t1
        assert [r.value for r in after] == [3] * 4, [r.error for r in after]
        assert sb.recoveries == 1
        print(f"engine restart: call lost after {lost_after:.1f}s, served again after "
              f"{back_after:.1f}s (restart, new containers, self-test)")
        spare_engine.restart_after(0.5).join()  # while the pool is idle: found out, verified
        assert sb.call(ECHO, {"secret": "abcd"}).value == 4
        assert sb.recoveries == 2


def test_an_engine_away_past_the_limit_fails_calls_with_what_to_do(
        spare_engine: SpareEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", spare_engine.url)
    try:
        with Sandbox(pool_size=1, engine_wait_s=3) as sb:
            spare_engine.stop()
            t0 = time.monotonic()
            with pytest.raises(EngineUnavailable, match=r"has not answered for 3 s.*start it"):
                sb.call(ECHO, {"secret": "ab"})
            assert time.monotonic() - t0 < 30
    finally:
        spare_engine.start()


# -- training through faults: the same results as an undisturbed run -----------------------------
def slow_respond(body: dict[str, Any]) -> Reply | None:
    """test_train's script, with every code block taking 2 s: long enough to be hit mid-run."""
    reply = respond(body)
    if reply is not None and reply.text and "```python\n" in reply.text:
        reply.text = reply.text.replace("```python\n", "```python\nimport time\ntime.sleep(2)\n")
    return reply


def outcomes(run: Path) -> dict[str, Any]:
    journal = RunDirectory(run).journal()
    keys = [(r["epoch"], r["phase"], r["result"]["problem_id"]) for r in journal]
    assert len(keys) == len(set(keys)), "a conversation was counted twice"
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "conversations": sorted((*k, r["result"]["correct"], r["result"]["answer"])
                                for k, r in zip(keys, journal, strict=True)),
        "epochs": [(m["epoch"], m["train_accuracy"], m["validation_accuracy"], m["decision"])
                   for m in metrics],
        "library": sorted(f["name"] for f in
                          json.loads((run / "library.json").read_text())["functions"]),
    }


def faults_of(run: Path) -> list[str]:
    return [f for r in RunDirectory(run).journal() for f in r["result"].get("faults", [])]


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The reference: the script run once with nothing going wrong."""
    tmp = tmp_path_factory.mktemp("undisturbed")
    server = ScriptedLLM(responder=slow_respond).start()
    monkeypatch = pytest.MonkeyPatch()
    try:
        config = load_run_config(write_config(tmp, server, epochs=2, concurrency=2))
        with Sandbox(pool_size=2) as sb:
            t0 = time.monotonic()
            train(config, tmp / "run", client=client_for(server, monkeypatch), sandbox=sb)
            print(f"undisturbed scripted run: {time.monotonic() - t0:.1f}s")
    finally:
        server.stop()
        monkeypatch.undo()
    return outcomes(tmp / "run")


LLM_FAULTS = [
    rate_limited(retry_after=0.05), rate_limited(), server_error(500), server_error(502),
    server_error(503), Reply(delay=2.5), Reply(hang_up=True), Reply(truncate=True),
    Reply(raw_body=b"<html>bad gateway</html>"), Reply(no_choices=True),
]


def test_training_through_endpoint_faults_and_killed_containers_equals_an_undisturbed_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_client: docker.DockerClient,
        undisturbed: dict[str, Any]) -> None:
    """Every kind of endpoint failure on cue, spread over the run, and every container of the
    pool killed by the engine while a code block runs: retried or run again, never counted."""
    server = ScriptedLLM(responder=slow_respond).start()
    for i, fault in enumerate(LLM_FAULTS):
        server.cue(3 + 3 * i, fault)
    with Sandbox(pool_size=2) as sb:
        killed = threading.Event()

        def kill_all() -> None:
            for worker in list(sb._workers):
                with contextlib.suppress(docker.errors.NotFound):
                    docker_client.containers.get(worker.container.id).kill()
            killed.set()

        def respond_and_kill(body: dict[str, Any]) -> Reply | None:
            reply = slow_respond(body)
            if reply is not None and "```python" in (reply.text or "") and not killed.is_set():
                threading.Timer(1.0, kill_all).start()  # mid-sleep in the container
                killed.set()
            return reply

        server.responder = respond_and_kill
        config = load_run_config(write_config(tmp_path, server, epochs=2, concurrency=2))
        try:
            t0 = time.monotonic()
            train(config, tmp_path / "run",
                  client=client_for(server, monkeypatch, timeout=1.5), sandbox=sb)
            seconds = time.monotonic() - t0
        finally:
            server.stop()
    assert server._cues == {}, "every cued fault was served"
    assert outcomes(tmp_path / "run") == undisturbed
    faults = faults_of(tmp_path / "run")
    assert faults and all("container lost" in f for f in faults), faults
    print(f"{len(LLM_FAULTS)} endpoint faults and a killed pool: {seconds:.1f}s, "
          f"{len(faults)} episode(s) run again")


def test_training_through_an_engine_restart_equals_an_undisturbed_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spare_engine: SpareEngine,
        undisturbed: dict[str, Any]) -> None:
    monkeypatch.setenv("DOCKER_HOST", spare_engine.url)
    server = ScriptedLLM(responder=slow_respond).start()
    restarted = threading.Event()

    def respond_and_restart(body: dict[str, Any]) -> Reply | None:
        reply = slow_respond(body)
        if reply is not None and "```python" in (reply.text or "") and not restarted.is_set():
            restarted.set()
            threading.Timer(0.5, lambda: spare_engine.restart_after(2.0)).start()
        return reply

    server.responder = respond_and_restart
    config = load_run_config(write_config(tmp_path, server, epochs=2, concurrency=2))
    try:
        with Sandbox(pool_size=2, engine_wait_s=120) as sb:
            t0 = time.monotonic()
            train(config, tmp_path / "run", client=client_for(server, monkeypatch), sandbox=sb)
            print(f"an engine restart mid-epoch: {time.monotonic() - t0:.1f}s")
            assert sb.recoveries == 1
    finally:
        server.stop()
    assert restarted.is_set()
    assert outcomes(tmp_path / "run") == undisturbed
    assert faults_of(tmp_path / "run")


def train_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "optimizer", "train", *args]


def cli_env() -> dict[str, str]:
    return {**os.environ, "OPENAI_API_KEY": TEST_KEY}


def resume(run: Path) -> None:
    resumed = subprocess.run(train_command("--resume", str(run)), env=cli_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_the_run_cleanly_and_it_resumes_to_the_same_results(
        tmp_path: Path, small_disk: Path, undisturbed: dict[str, Any]) -> None:
    server = ScriptedLLM(responder=slow_respond).start()
    run = small_disk / "run"
    try:
        config = write_config(tmp_path, server, epochs=2, concurrency=2)
        proc = subprocess.Popen(train_command("--config", str(config), "--run-dir", str(run)),
                                env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(RunDirectory(run).journal()) < 3:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        # the disk fills up under the run
        with contextlib.suppress(OSError), open(small_disk / "filler", "wb") as filler:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 2, err[-3000:]
        assert re.search(r"no space left|disk is full", err), err[-3000:]
        assert f"--resume {run}" in err
        verify = subprocess.run([sys.executable, "-m", "optimizer", "review", "verify",
                                 str(run)], capture_output=True, text=True, timeout=120)
        assert verify.returncode == 0, verify.stdout + verify.stderr  # still a valid chain
        (small_disk / "filler").unlink()
        resume(run)
    finally:
        server.stop()
    assert outcomes(run) == undisturbed


def test_an_endpoint_that_stays_down_stops_the_run_and_it_resumes_to_the_same_results(
        tmp_path: Path, undisturbed: dict[str, Any]) -> None:
    """Past its retries an outage is not a wrong answer: the run stops, saying how to go on,
    and nothing the outage touched is counted."""
    down = threading.Event()
    served = [0]

    def flaky(body: dict[str, Any]) -> Reply | None:
        served[0] += 1
        if served[0] == 12:
            down.set()  # the endpoint goes down mid-epoch and stays down
        return server_error(503) if down.is_set() else slow_respond(body)

    server = ScriptedLLM(responder=flaky).start()
    run = tmp_path / "run"
    try:
        config = write_config(tmp_path, server, epochs=2, concurrency=2)
        stopped = subprocess.run(train_command("--config", str(config), "--run-dir", str(run)),
                                 env=cli_env(), capture_output=True, text=True, timeout=300)
        assert stopped.returncode == 2, stopped.stderr[-3000:]
        assert "failed 2 time(s)" in stopped.stderr and f"--resume {run}" in stopped.stderr
        assert all(r["result"]["outcome"] != "llm_error" for r in RunDirectory(run).journal())
        down.clear()
        resume(run)
    finally:
        server.stop()
    assert outcomes(run) == undisturbed
