"""The Ray backend on a real two-node Ray cluster started here (this machine, nothing external).

Training and evaluation on the cluster must give the local backend's results on the same
scripted conversations; a task worker killed and a node removed mid-epoch must cost only time.
CI sets FNFORGE_REQUIRE_RAY=1: without Ray installed these tests fail instead of skipping.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from optimizer.evaluate import evaluate
from optimizer.math import Split
from optimizer.runconfig import load_run_config
from optimizer.train import RunDirectory, train
from sandbox import FunctionLibrary, Sandbox, SandboxBroken
from sandbox.container import gc

from .scripted_llm import Reply, ScriptedLLM, client_for
from .test_faults import outcomes
from .test_train import respond, write_config

if os.environ.get("FNFORGE_REQUIRE_RAY") == "1":
    import ray
    from ray.cluster_utils import Cluster
else:
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Cluster, Any]]:
    """A head and one worker node, each its own raylet with its own worker processes."""
    head = Cluster(initialize_head=True, head_node_args={"num_cpus": 2,
                                                         "include_dashboard": False})
    worker = head.add_node(num_cpus=2)
    head.wait_for_nodes()
    try:
        yield head, worker
    finally:
        ray.shutdown()
        shutdown: Any = head.shutdown  # untyped in Ray: no `type: ignore` that Ray's absence
        shutdown()  # would leave unused (make lint runs with and without the Ray extra)
        gc(docker.from_env())  # containers of node actors that were killed with their node


def address(cluster: Cluster) -> str:
    return str(cluster.address)


def eval_rows(run: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads((run / "eval.json").read_text())["rows"]
    return rows


def test_training_and_evaluation_on_ray_equal_the_local_backend(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox,
        cluster: tuple[Cluster, Any]) -> None:
    from optimizer.backends.ray_backend import RayBackend

    server = ScriptedLLM(responder=respond).start()
    client = client_for(server, monkeypatch)
    try:
        config = load_run_config(write_config(tmp_path, server, epochs=2, concurrency=3))
        on_cluster = RayBackend(client, concurrency=3, address=address(cluster[0]))
        for run, backend in ((tmp_path / "local", None), (tmp_path / "ray", on_cluster)):
            train(config, run, client=client, sandbox=sandbox, backend=backend)
            split = Split.from_dict(RunDirectory(run).read_json("split.json"))
            evaluate(config, list(split.test), FunctionLibrary.load(run / "library.json"), run,
                     client=client, sandbox=sandbox, backend=backend)
        on_cluster.close()
    finally:
        server.stop()
    assert outcomes(tmp_path / "ray") == outcomes(tmp_path / "local")
    assert eval_rows(tmp_path / "ray") == eval_rows(tmp_path / "local")
    assert len(on_cluster.finished) == 2  # both nodes took work
    assert sum(on_cluster.finished.values()) == 2 * (2 + 4) + 2 * 2  # two epochs, two arms


def _pid_with_port(port: int) -> int | None:
    """The process holding the local TCP port (our worker's end of an LLM request)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in list(fh)[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}").removeprefix("socket:[").rstrip("]") \
                        in inodes:
                    return int(pid)
        except OSError:
            continue
    return None


def test_a_killed_worker_and_a_lost_node_cost_time_not_results(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox,
        cluster: tuple[Cluster, Any]) -> None:
    """The 4th LLM request's worker process is SIGKILLed while it waits for the answer; at the
    9th, the worker node leaves the cluster. Every conversation still counts exactly once."""
    from optimizer.backends.ray_backend import RayBackend

    head, worker_node = cluster
    killed: list[int] = []
    served = [-10_000]  # not counting yet: the reference run is not disturbed
    server = ScriptedLLM().start()

    def disturb(body: dict[str, Any]) -> Reply | None:
        served[0] += 1
        if served[0] == 4:
            pid = _pid_with_port(int(server.headers[-1][":peer"].rsplit(":", 1)[1]))
            if pid is not None and pid != os.getpid():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        if served[0] == 9:
            threading.Thread(target=head.remove_node, args=(worker_node,), daemon=True).start()
        return respond(body)

    server.responder = disturb
    try:
        config = load_run_config(write_config(tmp_path, server, epochs=2, concurrency=3))
        train(config, tmp_path / "local", client=client_for(server, monkeypatch),
              sandbox=sandbox)
        reference = outcomes(tmp_path / "local")
        served[0] = 0
        client = client_for(server, monkeypatch)
        backend = RayBackend(client, concurrency=3, address=address(head))
        train(config, tmp_path / "ray", client=client, sandbox=sandbox, backend=backend)
        backend.close()
    finally:
        server.stop()
    assert killed, "a worker process was killed"
    assert outcomes(tmp_path / "ray") == reference
    assert backend.resubmitted >= 1
    print(f"resubmitted {backend.resubmitted}, finished per node {dict(backend.finished)}, "
          f"dropped {backend.refused}")


def test_no_node_that_fails_its_checks_takes_work(cluster: tuple[Cluster, Any],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from optimizer.backends.ray_backend import RayBackend
    from optimizer.runconfig import SandboxConfig

    server = ScriptedLLM(responder=respond).start()
    try:
        with pytest.raises(SandboxBroken, match="no Ray node passed its sandbox checks"):
            RayBackend(client_for(server, monkeypatch), concurrency=2,
                       address=address(cluster[0]),
                       sandbox=SandboxConfig(runtime="no-such-runtime"))
    finally:
        server.stop()

