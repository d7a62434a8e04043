"""The fail-closed self-test: it passes on the real hardened sandbox, and each probe really fails
when the confinement it checks is taken away (a probe that cannot fail is worthless).

The weakened runs start the sandbox image with docker directly, with the hardened option set of
sandbox/container.py minus one knob, and run the image's probes (sandbox/runner/probes/) in a plain
python3 process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import pytest

from sandbox.runner.probes import PROBE_NAMES

ROOT = Path(__file__).resolve().parents[1]
RUN_PROBES = ("import json, sys\nsys.path.insert(0, '/opt/fnforge/runner')\nimport probes\n"
              "print(json.dumps({'probes': probes.run_probes()}))\n")

pytestmark = pytest.mark.timeout(600)


def _find_probe_table(obj: Any) -> dict[str, Any] | None:
    """The dict {probe: {"confined": ..., ...}} somewhere in the CLI's JSON."""
    if isinstance(obj, dict):
        if set(PROBE_NAMES) <= set(obj) and all(isinstance(obj[n], dict) for n in PROBE_NAMES):
            return obj
        for v in obj.values():
            found = _find_probe_table(v)
            if found is not None:
                return found
    return None


def test_cli_selftest_passes_and_names_every_probe() -> None:
    proc = subprocess.run([sys.executable, "-m", "sandbox", "selftest"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"selftest failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    report = json.loads(proc.stdout)
    table = _find_probe_table(report)
    assert table is not None, f"not every probe is named in the output: {proc.stdout[:3000]}"
    not_confined = {n: table[n].get("detail") for n in PROBE_NAMES if not table[n]["confined"]}
    assert not not_confined, not_confined


def test_probe_names_are_stable_and_unique() -> None:
    assert len(PROBE_NAMES) == len(set(PROBE_NAMES)) >= 40


# --------------------------------------------------------------------------------------------
# each probe detects the unconfined case


@pytest.fixture(scope="module")
def docker_env() -> tuple[docker.DockerClient, dict[str, Any], Any]:
    docker = pytest.importorskip("docker")
    from sandbox import container, image

    client = container.connect()
    img = image.find_image(client)
    from sandbox.limits import DEFAULT_LIMITS

    base = container.container_options(img.id, DEFAULT_LIMITS, runtime=None)
    return client, base, docker


def _run_probes(client: docker.DockerClient, options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    opts = dict(options)
    opts.pop("stdin_open", None)
    opts["labels"] = {**opts.get("labels", {}), "fnforge.test": "selftest"}
    opts["log_config"] = {"type": "json-file", "config": {}}  # to read the report back
    opts["auto_remove"] = False  # ...after it has exited (removed below)
    opts["entrypoint"] = ["python3", "-I", "-c", RUN_PROBES]
    opts["command"] = []
    c = client.containers.create(**opts)
    try:
        c.start()
        c.wait(timeout=120)
        out = c.logs(stdout=True, stderr=False).decode()
    finally:
        c.remove(force=True)
    probes: dict[str, dict[str, Any]] = json.loads(out)["probes"]
    return probes


@pytest.fixture(scope="module")
def hardened_report(docker_env: tuple[docker.DockerClient, dict[str, Any], Any]
                    ) -> dict[str, dict[str, Any]]:
    client, base, _ = docker_env
    return _run_probes(client, base)


def _weaken(docker: Any, base: dict[str, Any], how: str) -> dict[str, Any]:
    o = dict(base)
    if how == "network_bridge":
        o["network_mode"] = "bridge"
    elif how == "env_secret":
        o["environment"] = {"OPENAI_API_KEY": "sk-" + "x" * 40, "FNFORGE_CANARY_SECRET": "y"}
    elif how == "writable_root":
        o["read_only"] = False
    elif how == "docker_socket":
        o["mounts"] = [docker.types.Mount("/var/run/docker.sock", "/var/run/docker.sock",
                                          type="bind", read_only=True)]
    elif how == "no_pids_limit":
        o["pids_limit"] = -1
    elif how == "caps_kept":
        o.pop("cap_drop", None)
    elif how == "new_privs_allowed":
        o["security_opt"] = [s for s in o.get("security_opt", []) if "no-new-privileges" not in s]
    elif how == "root_user":
        o["user"] = "0:0"
    elif how == "no_memory_limit":
        o.pop("mem_limit", None)
        o.pop("memswap_limit", None)
    elif how == "exec_tmp":
        o["tmpfs"] = {"/tmp": "rw,exec,size=64m,mode=1777"}
    elif how == "no_seccomp":
        o["security_opt"] = [*o.get("security_opt", []), "seccomp=unconfined"]
    elif how == "host_dir_mounted":
        o["mounts"] = [docker.types.Mount("/hostetc", "/etc", type="bind", read_only=True)]
    elif how == "no_ulimits":
        o.pop("ulimits", None)
    else:
        raise AssertionError(how)
    return o


WEAKENINGS = {
    "network_bridge": ["net_egress_ipv4", "net_udp_egress", "net_interfaces", "net_host_gateway"],
    "env_secret": ["env_empty"],
    "writable_root": ["write_outside_tmp", "host_mounts"],
    "docker_socket": ["docker_socket", "host_mounts"],
    "no_pids_limit": ["fork_limit", "pids_limit"],
    "caps_kept": ["capabilities"],
    "new_privs_allowed": ["no_new_privs"],
    "root_user": ["uid", "setuid", "write_outside_tmp"],
    "no_memory_limit": ["memory_limit"],
    "exec_tmp": ["tmp_noexec", "writable_mounts_noexec"],
    "no_seccomp": ["unshare", "keyctl"],
    "host_dir_mounted": ["host_mounts"],
    "no_ulimits": ["rlimits"],
}


@pytest.mark.parametrize("how", sorted(WEAKENINGS))
def test_probe_flags_the_unconfined_container(
        docker_env: tuple[docker.DockerClient, dict[str, Any], Any],
        hardened_report: dict[str, dict[str, Any]], how: str) -> None:
    client, base, docker = docker_env
    probes = WEAKENINGS[how]
    for name in probes:  # the same probe passes on the hardened option set...
        assert hardened_report[name]["confined"], (name, hardened_report[name])
    report = _run_probes(client, _weaken(docker, base, how))
    missed = {n: report[n]["detail"] for n in probes if report[n]["confined"]}
    assert not missed, f"{how}: probes did not notice: {missed}"  # ...and fails without the knob
