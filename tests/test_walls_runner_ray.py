"""What a dead owner leaves behind, on Ray (issue 19): a node that owns a sandbox pool is lost
(its raylet and every worker killed without warning); none of its containers outlives it.

The same mechanism as for a SIGKILLed process (tests/test_walls_runner.py): the engine closes a
runner's input when its owner's stream goes, and removes the exited container. CI sets
FNFORGE_REQUIRE_RAY=1: without Ray installed this test fails instead of skipping.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from sandbox import Sandbox

from .test_walls_runner import _exists

if os.environ.get("FNFORGE_REQUIRE_RAY") == "1":
    import ray
    from ray.cluster_utils import Cluster
else:
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

pytestmark = pytest.mark.timeout(600)


class PoolOwner:
    """A Ray actor that owns a sandbox pool, as the Ray backend's node actors do."""

    def __init__(self, label_pid: int) -> None:
        # Its containers name the test's process as their owner, which stays alive: no pool
        # starting meanwhile removes them as a dead owner's, so only the engine can.
        os.getpid = lambda: label_pid
        self.sandbox = Sandbox(pool_size=2)
        self.sandbox.start()

    def container_ids(self) -> list[str]:
        return [worker.container.id for worker in self.sandbox._workers]


@pytest.fixture()
def cluster() -> Iterator[tuple[Cluster, Any]]:
    """A head and a worker node that alone offers the resource the owner needs."""
    head = Cluster(initialize_head=True, head_node_args={"num_cpus": 1,
                                                         "include_dashboard": False})
    node = head.add_node(num_cpus=1, resources={"pool_owner": 1})
    head.wait_for_nodes()
    ray.init(address=head.address)
    try:
        yield head, node
    finally:
        ray.shutdown()
        shutdown: Any = head.shutdown  # untyped in Ray: no ignore that Ray's absence leaves unused
        shutdown()


def test_a_lost_ray_node_leaves_no_container(cluster: tuple[Cluster, Any],
                                             docker_client: docker.DockerClient) -> None:
    head, node = cluster
    owner: Any = ray.remote(PoolOwner).options(resources={"pool_owner": 1}).remote(os.getpid())
    ids: list[str] = ray.get(owner.container_ids.remote(), timeout=240)
    assert len(ids) == 2
    for cid in ids:
        assert docker_client.containers.get(cid).status == "running"
    head.remove_node(node, allow_graceful=False)  # the node is lost: SIGKILL, no clean-up
    deadline = time.monotonic() + 60
    left = ids
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = [cid for cid in ids if _exists(docker_client, cid)]
    assert not left, f"containers outlived their node: {[c[:12] for c in left]}"
