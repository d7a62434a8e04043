"""Adversarial suite: attack code against the real sandbox (real Docker engine, no mocks).

Every test does two things: it checks that the attack did not achieve anything, and it checks that
the sandbox is healthy afterwards (`_healthy`: the next calls answer quickly with ok=True, see an
empty /tmp and no process but the container's own). Attacks aimed at the in-container runner also
check that the runner survived: the same containers keep serving (`_container_ids` is unchanged).

Where the attack classes come from (described in our own words; no peer code is copied):
- epicbox (its own tests of resource limits): a CPU-bound loop past the time limit, a process
  that sleeps past the wall-clock limit, a memory hog under a container memory limit, a fork bomb
  under a pids limit, writing a file far bigger than allowed, output floods, and the claim that
  network access is off.
- openedx codejail (its self-test and its security tests): the fail-closed start-up probe set
  (network by IP and name, listing /, subprocesses, sockets), reading host files, ignoring SIGTERM,
  filling the temp directory, background processes that must not survive the call, and the
  checks that a jail cannot reach the jailing process.
- vndee llm-sandbox (its security/policy examples): host environment variables and API keys,
  /etc/passwd and /proc/1/cmdline snooping, Docker socket access, raw sockets and DNS, ctypes
  calling libc, unbounded reads of /dev/urandom.
- smolagents (its executor tests and advisories): code that tries to forge or tamper with what the
  executor reports back (printing result-like lines, writing to the protocol pipes directly,
  closing stdio), values that only make sense when unpickled on the host, enormous return values,
  and deep recursion that must end as an error, not a crash.
- AutoGen / OpenHands / E2B style container executors: daemons that outlive a call, symlinks out
  of the scratch directory, writes to /proc (sysrq-trigger, oom_score_adj, /proc/sys), ptrace,
  mount, unshare and keyctl, and signals aimed at the executor's own server process.
- Container escape folklore that none of the peers tests but that is specific to a fork server:
  F_SETOWN/SIGIO aimed at the runner (a signal without kill()), /proc/<pid>/fd of the runner or of
  docker-init (the protocol stream), and SIGSEGV raised through ctypes.

The session fixture `sandbox` (a `Sandbox(pool_size=2)`) comes from tests/conftest.py.

Every attack runs with `audit=False`: the in-process guard (runner/guards.py) is a filter that
would stop most of these scripts early; the container and the runner's per-call confinement are
the boundary under test here, so the attacks must meet them directly.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import FunctionSpec, Sandbox
from sandbox.errors import InvalidArguments

# Set before any Sandbox is created in this process (collection precedes fixtures): a host secret
# that must never be visible inside a container.
CANARY_VALUE = "canary-" + secrets.token_hex(12)
os.environ["FNFORGE_CANARY_SECRET"] = CANARY_VALUE

pytestmark = pytest.mark.timeout(240)

GRACE_S = 12.0  # timeout + host grace + slack for a container replacement under load

# --------------------------------------------------------------------------------------------
# helpers

_STATE = r"""
import json, os, re
procs = []
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            comm = open(f"/proc/{p}/comm").read().strip()
        except OSError:
            comm = "?"
        procs.append([int(p), comm])
cg = open("/proc/self/cgroup").read()
m = re.search(r"[0-9a-f]{64}", cg)
print(json.dumps({"tmp": sorted(os.listdir("/tmp")), "procs": procs, "me": os.getpid(),
                  "cid": m.group(0) if m else cg[:300]}))
"""


def _state(sb: Sandbox, timeout: float = 10.0) -> dict[str, Any]:
    t0 = time.monotonic()
    r = sb.run(_STATE, audit=False, timeout=timeout)
    elapsed = time.monotonic() - t0
    assert r.ok, f"trivial state call failed: {r.error} stdout={r.stdout[:500]!r}"
    assert r.exit_code == 0
    state: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    state["elapsed"] = elapsed
    return state


def _healthy(sb: Sandbox, calls: int = 4) -> set[str]:
    """Trivial calls (covering every container of the pool) answer fast and see nothing left
    behind by earlier calls. Returns the container ids seen."""
    ids = set()
    for i in range(calls):
        st = _state(sb)
        # the first call may wait for a replacement container; later ones must be fast
        assert st["elapsed"] < (GRACE_S * 3 if i == 0 else 5.0), st["elapsed"]
        assert st["tmp"] == [], f"/tmp not empty for the next call: {st['tmp']}"
        others = [p for p in st["procs"] if p[0] != st["me"]]
        assert len(others) <= 4, f"processes left behind: {others}"  # runner, 2 zygotes, a spare
        assert all(c in ("docker-init", "python3", "tini") for _, c in others), others
        ids.add(st["cid"])
    r = sb.call(_spec("def f(x):\n    return x + 1\n"), {"x": 41}, audit=False, timeout=10)
    assert r.ok and r.value == 42, r
    return ids


def _container_ids(sb: Sandbox, calls: int = 4) -> set[str]:
    return {_state(sb)["cid"] for _ in range(calls)}


def _spec(code: str, name: str = "f", params: dict[str, Any] | None = None) -> FunctionSpec:
    if params is None:
        params = {"type": "object", "properties": {"x": {"type": "integer"}}}
    return FunctionSpec.from_dict({"name": name, "description": "adversarial", "code": code,
                                   "parameters": params})


def _last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            found: dict[str, Any] = json.loads(line)
            return found
    raise AssertionError(f"no JSON line in stdout: {stdout[-1000:]!r}")


def _attack(sb: Sandbox, code: str, timeout: float = 10) -> dict[str, Any]:
    """Run an attack script (audit off: the container is what is under test) and return the
    JSON object it printed last: label -> outcome."""
    r = sb.run(code, audit=False, timeout=timeout)
    assert r.ok, r
    return _last_json(r.stdout)


def _refused(report: dict[str, Any]) -> None:
    bad = {k: v for k, v in report.items() if not str(v).startswith("refused")}
    assert report and not bad, bad


def _fnforge_containers(owner: int | None = None) -> list[str]:
    flt = ["--filter", "label=fnforge"]
    if owner is not None:
        flt += ["--filter", f"label=fnforge.owner={owner}"]
    out = subprocess.run(["docker", "ps", "-aq", "--no-trunc", *flt], capture_output=True,
                         text=True, check=True).stdout
    return out.split()


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="module", autouse=True)
def host_resources(sandbox: Sandbox) -> Iterator[None]:
    """Host fds and memory are back near where they were after the whole module."""
    # warm up: the pool exists, one replacement has happened (the docker client's connection
    # pool grows to its bounded size here, about ten sockets), lazily created objects exist
    sandbox.run("while True:\n    pass\n", audit=False, timeout=0.5)
    _healthy(sandbox)
    fds, rss = _fd_count(), _rss_kb()
    yield
    time.sleep(1.0)  # let replacements finish
    assert _fd_count() <= fds + 16, f"host fds grew from {fds} to {_fd_count()}"
    assert _rss_kb() <= rss + 200 * 1024, f"host RSS grew from {rss} kB to {_rss_kb()} kB"
    # replaced containers were removed: only the pool's own remain for this process
    deadline = time.monotonic() + 30
    while len(_fnforge_containers(os.getpid())) > sandbox.pool_size and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(_fnforge_containers(os.getpid())) <= sandbox.pool_size


@pytest.fixture
def pool_ids(sandbox: Sandbox) -> set[str]:
    return _container_ids(sandbox)


# --------------------------------------------------------------------------------------------
# resources


def test_fork_bomb(sandbox: Sandbox) -> None:
    code = r"""
import os
n = 0
try:
    while True:
        if os.fork() == 0:
            try:
                while True:
                    os.fork()
            except OSError:
                while True:
                    pass
        n += 1
except OSError as exc:
    print("stopped", n, exc.errno)
"""
    t0 = time.monotonic()
    r = sandbox.run(code, audit=False, timeout=4)
    assert time.monotonic() - t0 < 4 + GRACE_S
    if r.ok:
        n = int(r.stdout.split()[1])
        assert n < 200, r.stdout
    else:
        assert r.error is not None
    _healthy(sandbox)


def test_memory_bomb(sandbox: Sandbox) -> None:
    code = r"""
chunks = []
while True:
    b = bytearray(32 * 1024 * 1024)
    for i in range(0, len(b), 4096):
        b[i] = 1
    chunks.append(b)
"""
    t0 = time.monotonic()
    r = sandbox.run(code, audit=False, timeout=20)
    assert time.monotonic() - t0 < 20 + GRACE_S
    assert not r.ok
    assert r.oom_killed or (r.error and r.error.type in ("MemoryError", "MemoryLimit")), r
    _healthy(sandbox)


def test_busy_loop_times_out(sandbox: Sandbox) -> None:
    t0 = time.monotonic()
    r = sandbox.run("while True:\n    pass\n", audit=False, timeout=2)
    assert time.monotonic() - t0 < 2 + GRACE_S
    assert not r.ok and r.timed_out and r.error is not None and r.error.type == "Timeout", r
    _healthy(sandbox)


def test_sleep_with_signals_ignored(sandbox: Sandbox) -> None:
    code = r"""
import signal, time
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM, signal.SIGXCPU,
          signal.SIGUSR1, signal.SIGQUIT):
    signal.signal(s, signal.SIG_IGN)
time.sleep(120)
"""
    t0 = time.monotonic()
    r = sandbox.run(code, audit=False, timeout=2)
    assert time.monotonic() - t0 < 2 + GRACE_S
    assert not r.ok and r.timed_out, r
    _healthy(sandbox)


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
@pytest.mark.parametrize("how", ["print", "fd"])
def test_output_flood(sandbox: Sandbox, stream: str, how: str) -> None:
    fd = 1 if stream == "stdout" else 2
    if how == "print":
        code = (f"import sys\nline = 'A' * 100000 + '\\n'\n"
                f"while True:\n    sys.{stream}.write(line)\n")
    else:  # raw bytes, invalid UTF-8, no newline, straight to the descriptor
        code = f"import os\nchunk = b'\\xff\\xfe' * 50000\nwhile True:\n    os.write({fd}, chunk)\n"
    rss = _rss_kb()
    t0 = time.monotonic()
    r = sandbox.run(code, audit=False, timeout=10)
    assert time.monotonic() - t0 < 10 + GRACE_S
    assert not r.ok
    assert getattr(r, f"{stream}_truncated") is True
    assert len(getattr(r, stream).encode()) <= sandbox.limits.output_cap * 5  # escapes may grow
    assert _rss_kb() - rss < 100 * 1024, "host memory grew with the flood"
    _healthy(sandbox)


def test_output_just_over_cap_is_truncated_not_killed(sandbox: Sandbox) -> None:
    cap = sandbox.limits.output_cap
    r = sandbox.run(f"print('B' * {cap * 2})\nprint('done')\n", audit=False, timeout=10)
    assert r.ok and r.stdout_truncated and len(r.stdout) <= cap, (r.ok, len(r.stdout))
    _healthy(sandbox)


def test_fill_tmp_with_many_small_files(sandbox: Sandbox) -> None:
    code = r"""
import errno, os
n = 0
try:
    while n < 200000:
        with open(f"/tmp/f{n}", "wb") as f:
            f.write(b"x" * 4096)
        n += 1
    print("no limit", n)
except OSError as exc:
    print("stopped", n, errno.errorcode.get(exc.errno))
"""
    r = sandbox.run(code, audit=False, timeout=60)
    assert r.ok, r
    words = r.stdout.split()
    assert words[0] == "stopped" and words[2] in ("ENOSPC", "EDQUOT"), r.stdout
    _healthy(sandbox)  # the next calls see an empty /tmp


def test_one_huge_write(sandbox: Sandbox) -> None:
    code = r"""
import errno
try:
    with open("/tmp/huge", "wb") as f:
        block = b"\0" * (1 << 20)
        for i in range(1024):
            f.write(block)
    print("wrote 1 GiB")
except OSError as exc:
    print("stopped", errno.errorcode.get(exc.errno))
"""
    r = sandbox.run(code, audit=False, timeout=30)
    if r.ok:
        assert r.stdout.split()[1] in ("EFBIG", "ENOSPC"), r.stdout
    else:  # killed by SIGXFSZ is acceptable too
        assert r.error is not None
    _healthy(sandbox)


def test_unbounded_read_of_urandom(sandbox: Sandbox) -> None:
    r = sandbox.run("data = open('/dev/urandom', 'rb').read()\nprint(len(data))\n",
                    audit=False, timeout=5)
    assert not r.ok
    assert r.error is not None
    assert r.timed_out or r.oom_killed or (r.error.type in ("MemoryError", "MemoryLimit",
                                                           "OverflowError")), r
    _healthy(sandbox)


def test_deep_recursion_is_an_error(sandbox: Sandbox) -> None:
    spec = _spec("def f(x):\n    return f(x + 1)\n")
    r = sandbox.call(spec, {"x": 0}, audit=False, timeout=10)
    assert not r.ok and r.error is not None and r.error.type == "RecursionError", r
    # with the recursion limit lifted the C stack overflows: a clean crash report, not a hang
    r = sandbox.run("import sys\nsys.setrecursionlimit(10**7)\n"
                    "def g(n):\n    return g(n + 1)\ng(0)\n", audit=False, timeout=20)
    assert not r.ok and r.error is not None, r
    _healthy(sandbox)


def test_sigsegv_through_ctypes(sandbox: Sandbox, pool_ids: set[str]) -> None:
    r = sandbox.run("import ctypes\nctypes.string_at(0)\n", audit=False, timeout=10)
    assert not r.ok and r.error is not None
    assert r.exit_code != 0
    assert _healthy(sandbox) == pool_ids, "the runner died with its child"


def test_huge_return_value_is_refused(sandbox: Sandbox) -> None:
    big = sandbox.limits.max_value * 2
    r = sandbox.call(_spec(f"def f(x):\n    return 'x' * {big}\n"), {"x": 1},
                     audit=False, timeout=10)
    assert not r.ok and r.value is None, (r.ok, r.error)
    assert r.error is not None
    assert r.error.type in ("ResultTooLarge", "ResultNotJSON", "ProtocolError"), r.error
    r = sandbox.call(_spec("def f(x):\n    return [[i] * 100 for i in range(100000)]\n"),
                     {"x": 1}, audit=False, timeout=20)
    assert not r.ok and r.value is None
    _healthy(sandbox)


# --------------------------------------------------------------------------------------------
# snooping and escape


def test_host_files(sandbox: Sandbox) -> None:
    code = r"""
import json, os
out = {}
for path in ("/etc/shadow", "/root/.ssh/id_rsa", "/root/.bashrc", "/var/lib/docker",
             "/etc/hostname", "/proc/1/cmdline", "/etc/passwd"):
    try:
        with open(path, "rb") as f:
            out[path] = f.read(4096).decode(errors="replace")
    except OSError as exc:
        out[path] = "ERR " + type(exc).__name__
for d in ("/root", "/home", "/mnt", "/media", "/srv"):
    try:
        out[d] = sorted(os.listdir(d))
    except OSError as exc:
        out[d] = "ERR " + type(exc).__name__
print(json.dumps(out))
"""
    out = _attack(sandbox, code)
    assert out["/etc/shadow"].startswith("ERR") or "root:" not in out["/etc/shadow"]
    assert out["/root/.ssh/id_rsa"].startswith("ERR")
    assert out["/root/.bashrc"].startswith("ERR")
    assert out["/var/lib/docker"].startswith("ERR")
    assert out["/etc/hostname"].strip() != socket.gethostname()
    init = out["/proc/1/cmdline"].replace("\0", " ")
    host_init = Path("/proc/1/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert init != host_init and ("docker-init" in init or "server.py" in init or "python" in init)
    host_passwd = Path("/etc/passwd").read_text()
    assert out["/etc/passwd"] != host_passwd[:4096]
    for d in ("/root", "/home", "/mnt", "/media", "/srv"):
        assert out[d] in ([],) or str(out[d]).startswith("ERR"), (d, out[d])
    _healthy(sandbox)


_ENV_CODE = r"""
import json, os
seen = dict(os.environ)
for p in os.listdir("/proc"):
    if p.isdigit() or p == "self":
        try:
            seen[p] = open(f"/proc/{p}/environ", "rb").read().decode(errors="replace")
        except OSError:
            pass
print(json.dumps(seen))
"""


def test_host_environment_not_visible(sandbox: Sandbox) -> None:
    assert os.environ["FNFORGE_CANARY_SECRET"] == CANARY_VALUE
    r = sandbox.run(_ENV_CODE, audit=False, timeout=10)
    assert r.ok, r
    assert CANARY_VALUE not in r.stdout and "FNFORGE_CANARY_SECRET" not in r.stdout
    env = _last_json(r.stdout)
    for key in env:
        assert not any(w in key.upper() for w in ("KEY", "TOKEN", "SECRET", "OPENAI", "DOCKER",
                                                   "PROXY", "AWS")), key
    # and a Sandbox created after the canary was set, to be sure of the ordering
    with Sandbox(pool_size=1) as fresh:
        r = fresh.run(_ENV_CODE, audit=False, timeout=10)
        assert r.ok and CANARY_VALUE not in r.stdout, r.stdout[:2000]
    _healthy(sandbox)


def test_network(sandbox: Sandbox) -> None:
    code = r"""
import json, socket
out = {}
def tcp(label, family, addr):
    try:
        s = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:  # the kernel filter allows AF_UNIX sockets only
        out[label] = f"refused {exc.errno}"
        return
    s.settimeout(2)
    try:
        s.connect(addr)
        out[label] = "CONNECTED"
    except OSError as exc:
        out[label] = f"refused {exc.errno}"
    finally:
        s.close()
tcp("ip", socket.AF_INET, ("1.1.1.1", 53))
tcp("ip443", socket.AF_INET, ("8.8.8.8", 443))
tcp("gateway", socket.AF_INET, ("172.17.0.1", 2375))
tcp("metadata", socket.AF_INET, ("169.254.169.254", 80))
try:
    tcp("ipv6", socket.AF_INET6, ("2606:4700:4700::1111", 53, 0, 0))
except OSError as exc:
    out["ipv6"] = f"refused {exc.errno}"
for name in ("pypi.org", "example.com"):
    try:
        socket.getaddrinfo(name, 443)
        out["dns " + name] = "RESOLVED"
    except OSError as exc:
        out["dns " + name] = f"refused {exc}"
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    out["raw"] = "OPENED"
except OSError as exc:
    out["raw"] = f"refused {exc.errno}"
try:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"x", ("8.8.8.8", 53))
    out["udp"] = "SENT"
except OSError as exc:
    out["udp"] = f"refused {exc.errno}"
print(json.dumps(out))
"""
    out = _attack(sandbox, code, timeout=30)
    assert len(out) == 9, out
    for label, outcome in out.items():
        assert outcome.startswith("refused"), (label, outcome)
    _healthy(sandbox)


def test_privileged_syscalls_via_ctypes(sandbox: Sandbox) -> None:
    code = r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
out = {}
def rec(label, rc):
    succeeded = rc == 0 or (label == "add_key" and rc > 0)
    out[label] = "SUCCEEDED" if succeeded else f"refused {ctypes.get_errno()}"
os.makedirs("/tmp/m", exist_ok=True)
rec("mount", libc.mount(b"none", b"/tmp/m", b"tmpfs", 0, None))
rec("unshare_user", libc.unshare(0x10000000))
rec("unshare_ns", libc.unshare(0x00020000))
rec("unshare_net", libc.unshare(0x40000000))
rec("add_key", libc.syscall(248, b"user", b"k", b"v", 1, -2))
rec("keyctl", libc.syscall(250, 1, 0, 0, 0, 0))
rec("ptrace_traceme_parent", libc.ptrace(16, os.getppid(), None, None))  # PTRACE_ATTACH
rec("chroot", libc.chroot(b"/tmp"))
rec("setuid0", libc.setuid(0))
rec("bpf", libc.syscall(321, 0, 0, 0))
print(json.dumps(out))
"""
    _refused(_attack(sandbox, code))
    _healthy(sandbox)


def test_signals_to_every_other_process(sandbox: Sandbox, pool_ids: set[str]) -> None:
    code = r"""
import json, os, signal
me = os.getpid()
out = {}
for sig in (signal.SIGSTOP, signal.SIGTERM, signal.SIGKILL, signal.SIGSEGV, signal.SIGIO):
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) != me:
            try:
                os.kill(int(p), sig)
                out[f"{p}:{sig}"] = "DELIVERED"
            except OSError as exc:
                out[f"{p}:{sig}"] = f"refused {exc.errno}"
try:
    os.kill(-1, signal.SIGKILL)  # everyone we may signal (we are excluded)
    out["-1"] = "DELIVERED"
except OSError as exc:
    out["-1"] = f"refused {exc.errno}"
print(json.dumps(out))
"""
    _refused(_attack(sandbox, code))
    assert _healthy(sandbox) == pool_ids, "a container was replaced: the runner was hit"


def _gvisor(sandbox: Sandbox) -> bool:
    return sandbox.runtime == "runsc"


def test_ptrace_and_memory_of_the_runner(sandbox: Sandbox, pool_ids: set[str]) -> None:
    code = r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
me, out = os.getpid(), {}
for p in os.listdir("/proc"):
    if not p.isdigit() or int(p) == me:
        continue
    pid = int(p)
    rc = libc.ptrace(0x4206, pid, None, None)  # PTRACE_SEIZE
    out[f"seize {p}"] = "ATTACHED" if rc == 0 else f"refused {ctypes.get_errno()}"
    for name, mode in (("mem", os.O_RDWR), ("environ", os.O_RDONLY)):
        try:
            os.close(os.open(f"/proc/{p}/{name}", mode))
            out[f"{name} {p}"] = "OPENED"
        except OSError as exc:
            out[f"{name} {p}"] = f"refused {exc.errno}"
    try:
        out[f"fd {p}"] = "LISTED " + ",".join(os.listdir(f"/proc/{p}/fd"))
    except OSError as exc:
        out[f"fd {p}"] = f"refused {exc.errno}"
print(json.dumps(out))
"""
    out = _attack(sandbox, code)
    bad = {k: v for k, v in out.items() if not v.startswith("refused")}
    if _gvisor(sandbox):  # runsc 2022 lists /proc/<pid>/fd and opens an (empty) environ of
        # non-dumpable processes; ptrace and mem stay refused (fds: forging/stealing tests)
        bad = {k: v for k, v in bad.items() if not k.startswith(("fd ", "environ "))}
    assert not bad, f"other processes of the container are reachable: {bad}"
    assert _healthy(sandbox) == pool_ids


def test_sigio_aimed_at_the_runner(sandbox: Sandbox, pool_ids: set[str]) -> None:
    """F_SETOWN + O_ASYNC makes the kernel send SIGIO (or the F_SETSIG signal) without kill()."""
    code = r"""
import fcntl, json, os, signal
me, out = os.getpid(), {}
for p in os.listdir("/proc"):
    if not p.isdigit() or int(p) == me:
        continue
    r, w = os.pipe()
    try:
        fcntl.fcntl(r, fcntl.F_SETOWN, int(p))
        try:
            fcntl.fcntl(r, 10, signal.SIGKILL)  # F_SETSIG
        except OSError:
            pass
        fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC)
        os.write(w, b"x")
        out[p] = "ARMED"
    except OSError as exc:
        out[p] = f"refused {exc.errno}"
print(json.dumps(out))
"""
    r = sandbox.run(code, audit=False, timeout=10)
    after = _healthy(sandbox)
    assert r.ok, f"the call did not complete: {r.error}"
    out = _last_json(r.stdout)
    assert all(v.startswith("refused") for v in out.values()), out
    assert after == pool_ids, "a container was replaced: SIGIO reached the runner"


def test_writes_to_proc(sandbox: Sandbox) -> None:
    code = r"""
import json
out = {}
for path, data in (("/proc/sysrq-trigger", "h"), ("/proc/self/oom_score_adj", "-1000"),
                   ("/proc/sys/kernel/hostname", "pwned"), ("/proc/sys/vm/drop_caches", "1"),
                   ("/proc/sys/kernel/core_pattern", "|/tmp/x"),
                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "-1"),
                   ("/sys/fs/cgroup/pids/pids.max", "max")):
    try:
        with open(path, "w") as f:
            f.write(data)
        out[path] = "WRITTEN"
    except OSError as exc:
        out[path] = f"refused {exc.errno}"
print(json.dumps(out))
"""
    _refused(_attack(sandbox, code))
    _healthy(sandbox)


def test_writes_outside_tmp(sandbox: Sandbox) -> None:
    code = r"""
import json, os
out = {}
for d in ("/", "/etc", "/usr/lib/python3/dist-packages", "/opt/fnforge", "/opt/fnforge/runner",
          "/var/tmp", "/run/lock", "/dev/shm", "/home", "/root"):
    try:
        with open(os.path.join(d, "pwned.py"), "w") as f:
            f.write("x")
        out[d] = "WRITTEN"
    except OSError as exc:
        out[d] = f"refused {exc.errno}"
print(json.dumps(out))
"""
    _refused(_attack(sandbox, code))
    _healthy(sandbox)


def test_symlinks_pointing_out(sandbox: Sandbox) -> None:
    code = r"""
import json, os
out = {}
os.symlink("/etc/passwd", "/tmp/passwd")
out["passwd"] = open("/tmp/passwd").read()
for target in ("/var/lib/docker", "/root/.ssh/id_rsa", "/home", "/proc/1/root/etc/shadow",
               "/proc/1/cwd", "/var/run/docker.sock"):
    link = "/tmp/l" + str(len(out))
    os.symlink(target, link)
    try:
        out[target] = "READ " + (",".join(os.listdir(link)) if os.path.isdir(link)
                                 else open(link, "rb").read(64).decode(errors="replace"))
    except OSError as exc:
        out[target] = f"refused {exc.errno}"
try:
    os.link("/etc/passwd", "/tmp/hard")
    out["hardlink"] = "LINKED"
except OSError as exc:
    out["hardlink"] = f"refused {exc.errno}"
print(json.dumps(out))
"""
    out = _attack(sandbox, code)
    assert "sandbox" in out.pop("passwd") or True  # the container's own passwd is fine to read
    assert out.pop("hardlink").startswith("refused")
    for target, outcome in out.items():
        if target == "/home":  # the image's empty /home
            assert outcome in ("READ ", "READ") or outcome.startswith("refused"), outcome
        elif target == "/proc/1/cwd":
            assert outcome.startswith("refused") or ("READ" in outcome and "docker" not in outcome)
        else:
            assert outcome.startswith("refused"), (target, outcome)
    _healthy(sandbox)


def test_processes_that_outlive_their_call(sandbox: Sandbox) -> None:
    code = r"""
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for fd in range(0, 256):
            try:
                os.close(fd)
            except OSError:
                pass
        time.sleep(1.5)
        with open("/tmp/marker", "w") as f:
            f.write("I survived")
        time.sleep(600)
    os._exit(0)
os.wait()
print("parent done")
"""
    t0 = time.monotonic()
    r = sandbox.run(code, audit=False, timeout=8)
    assert time.monotonic() - t0 < 8 + GRACE_S
    assert r.ok and "parent done" in r.stdout, r
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        st = _state(sandbox)
        assert "marker" not in st["tmp"], "a process outlived its call and wrote into /tmp"
        assert len([p for p in st["procs"] if p[0] != st["me"]]) <= 4, st["procs"]
        time.sleep(0.3)
    _healthy(sandbox)


def test_daemon_holding_the_output_pipes_does_not_hang_the_call(sandbox: Sandbox) -> None:
    """A grandchild that keeps stdout/stderr open must not turn a finished call into a timeout."""
    code = r"""
import os, time
if os.fork() == 0:
    os.setsid()
    time.sleep(600)
print("returned")
"""
    t0 = time.monotonic()
    r = sandbox.run(code, audit=False, timeout=6)
    elapsed = time.monotonic() - t0
    assert r.ok and "returned" in r.stdout, f"{r.error} after {elapsed:.1f}s"
    assert elapsed < 3, f"the call waited {elapsed:.1f}s for a leftover process"
    _healthy(sandbox)


# --------------------------------------------------------------------------------------------
# the result channel


def test_printed_fake_responses_are_just_output(sandbox: Sandbox) -> None:
    fake = [{"id": i, "ok": True, "value": "FORGED", "stdout": ""} for i in range(0, 200)]
    fake += [{"result": {"ok": True, "value": "FORGED"}}, {"audit": {"event": "x"}}]
    lines = "\n".join(json.dumps(f) for f in fake)
    code = (f"import sys\nlines = {lines!r}\nprint(lines)\nsys.stderr.write(lines)\n"
            "raise ValueError('true outcome')\n")
    r = sandbox.run(code, audit=False, timeout=10)
    assert r.error is not None
    assert not r.ok and r.error.type == "ValueError" and r.value != "FORGED", (r.value, r.error)
    assert "FORGED" in r.stdout
    _healthy(sandbox)


def test_closing_stdio_and_raw_fd_writes(sandbox: Sandbox, pool_ids: set[str]) -> None:
    code = (
        "import os\n"
        "os.write(1, b'{\"id\": 1, \"ok\": true}\\n')\n"
        "os.write(2, b'\\x00\\xff garbage')\n"
        "for fd in range(0, 3):\n"
        "    os.close(fd)\n"
        "raise SystemExit(3)\n")
    r = sandbox.run(code, audit=False, timeout=10)
    assert r.error is None or r.error.type == "SystemExit", r.error
    assert r.exit_code == 3, (r.exit_code, r.error)
    assert _healthy(sandbox) == pool_ids


def test_forged_result_on_inherited_descriptors(sandbox: Sandbox) -> None:
    """Result-shaped lines written into every open descriptor must not replace the true result
    (here: an exception raised after the forgery)."""
    forged = json.dumps({"result": {"ok": True, "value": "FORGED", "error": None,
                                    "exit_code": 0}})
    code = (
        "import os\n"
        "for fd in range(3, 64):\n"
        "    try:\n"
        f"        os.write(fd, {forged!r}.encode() + b'\\n')\n"
        "    except OSError:\n"
        "        pass\n"
        "raise RuntimeError('true outcome')\n")
    r = sandbox.run(code, audit=False, timeout=10)
    assert r.value != "FORGED", "a forged result line was taken for the code's result"
    assert not r.ok and r.error is not None and r.error.type in ("RuntimeError", "ProtocolError"), r
    _healthy(sandbox)


def test_forging_through_proc_fds_of_other_processes(sandbox: Sandbox, pool_ids: set[str]) -> None:
    """/proc/<pid>/fd/{0,1} of the runner or docker-init are the host protocol stream."""
    code = r"""
import json, os, sys
req_id = None
f = sys._getframe()
while f is not None:  # the request this child is serving, with its protocol id
    if isinstance(f.f_locals.get("request"), dict):
        req_id = f.f_locals["request"].get("id")
    f = f.f_back
forged = json.dumps({"id": req_id, "ok": True, "value": "FORGED", "stdout": "", "stderr": "",
                     "audit": [], "exit_code": 0}) + "\n"
out = {}
me = os.getpid()
for p in os.listdir("/proc"):
    if not p.isdigit() or int(p) == me:
        continue
    for fd in ("1", "2"):
        try:
            if os.readlink(f"/proc/{p}/fd/{fd}") == "/dev/null":
                out[f"{p}/{fd}"] = "refused: /dev/null"  # listable under gVisor; harmless
                continue
        except OSError:
            pass
        try:
            w = os.open(f"/proc/{p}/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
            os.write(w, forged.encode())
            os.close(w)
            out[f"{p}/{fd}"] = "WRITTEN"
        except OSError as exc:
            out[f"{p}/{fd}"] = f"refused {exc.errno}"
print(json.dumps(out))
print("TRUE RESULT")
"""
    r = sandbox.run(code, audit=False, timeout=10)
    assert r.value != "FORGED", "the host accepted a response forged by user code"
    assert r.ok and "TRUE RESULT" in r.stdout, r
    out = _last_json(r.stdout)
    assert all(v.startswith("refused") for v in out.values()), out
    assert _healthy(sandbox) == pool_ids


def test_stealing_the_request_stream(sandbox: Sandbox, pool_ids: set[str]) -> None:
    """Reading the runner's or init's stdin would let a call see (or eat) later requests."""
    code = r"""
import json, os
me, out = os.getpid(), {}
for p in os.listdir("/proc"):
    if not p.isdigit() or int(p) == me:
        continue
    try:
        if os.readlink(f"/proc/{p}/fd/0") == "/dev/null":  # listable under gVisor; harmless
            out[p] = "refused: /dev/null"
            continue
    except OSError:
        pass
    try:
        fd = os.open(f"/proc/{p}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
        os.close(fd)
        out[p] = "OPENED"
    except OSError as exc:
        out[p] = f"refused {exc.errno}"
for fd in range(3, 256):  # anything inherited from the runner
    try:
        os.fstat(fd)
        out[f"fd{fd}"] = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        pass
print(json.dumps(out))
"""
    out = _attack(sandbox, code)
    opened = {k: v for k, v in out.items()
              if not k.startswith("fd") and not v.startswith("refused")}
    assert not opened, f"another process's stdin can be opened: {opened}"
    # the child holds only its own request/result pipes besides stdio: at most two
    assert len([k for k in out if k.startswith("fd")]) <= 2, out
    assert _healthy(sandbox) == pool_ids


# --------------------------------------------------------------------------------------------
# values


def test_pickle_bearing_return_value_is_never_unpickled(sandbox: Sandbox, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    code = (
        "class Evil:\n"
        "    def __reduce__(self):\n"
        "        import os\n"
        f"        return (os.system, ('touch {marker}',))\n"
        "    def __str__(self):\n"
        "        return 'Evil()'\n"
        "def f(x):\n"
        "    return Evil()\n")
    for restricted in (False, True):
        r = sandbox.call(_spec(code), {"x": 1}, audit=False, timeout=10, restricted=restricted)
        assert not marker.exists(), "the host unpickled a value from the sandbox"
        if r.ok:
            assert isinstance(r.value, str), r.value
        else:
            assert r.error is not None
    _healthy(sandbox)


class _Evil:
    def __reduce__(self) -> Any:  # pragma: no cover - must never run
        return (os.system, ("true",))


@pytest.mark.parametrize("bad", [{1, 2}, _Evil(), b"bytes", float("nan"), object(),
                                 {"nested": [1, {2, 3}]}])
def test_non_json_arguments_are_refused_before_running(sandbox: Sandbox, bad: Any) -> None:
    spec = _spec("def f(x):\n    return 1\n", params={"type": "object"})
    t0 = time.monotonic()
    with pytest.raises(InvalidArguments):
        sandbox.call(spec, {"x": bad}, audit=False, timeout=10)
    assert time.monotonic() - t0 < 0.5


# --------------------------------------------------------------------------------------------
# life cycle


def test_no_container_left_after_close() -> None:
    before = set(_fnforge_containers())
    with Sandbox(pool_size=1) as sb:
        r = sb.run("print('hi')", audit=False, timeout=10)
        assert r.ok
        mine = set(_fnforge_containers()) - before
        assert mine, "the sandbox container is not labelled fnforge"
        r = sb.run("while True:\n    pass\n", audit=False, timeout=1)  # forces a replacement
        assert r.timed_out
        sb.run("print('hi')", audit=False, timeout=10)
        mine = set(_fnforge_containers()) - before
    time.sleep(0.5)
    left = set(_fnforge_containers()) & mine
    assert not left, f"containers left after close: {left}"
