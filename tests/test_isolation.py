"""No call can see or leave anything for another, and what the host trusts is measured outside
the call's process.

The attacker here is the strongest one: a code block (`Sandbox.run`, audit off) is ordinary Python
with every in-process guard out of its way, so it stands for a function that escaped the Python
layer. Whatever it reaches (its frames, gc, its own memory through /proc/self/mem, every writable
path, message queues, its own result channel) must hold nothing of another call, and nothing it
writes may reach the next one or make the host misread the outcome.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator

import pytest

from sandbox import ErrorKind, FunctionSpec, Sandbox

from .conftest import make_spec

pytestmark = pytest.mark.timeout(300)

ECHO = make_spec("def echo(secret):\n    return len(secret)\n",
                 properties={"secret": {"type": "string"}})
ECHO_HEAVY = make_spec("import sympy\ndef echo_heavy(secret):\n    return len(secret)\n",
                       properties={"secret": {"type": "string"}})

SEARCH = r"""
import ctypes, gc, hashlib, json, os, sys
# The search never holds the secret itself (or it would find its own copy): only a prefix,
# the length and the sha256. A hit is a prefix followed by bytes with that hash.
found = []

def holds(data):
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    i = data.find(PREFIX)
    while i >= 0:
        if hashlib.sha256(data[i:i + LENGTH]).hexdigest() == DIGEST:
            return True
        i = data.find(PREFIX, i + 1)
    return False

# 1. frames, from this one up to whatever started the process
f = sys._getframe()
while f is not None:
    for k, v in list(f.f_locals.items()) + list(f.f_globals.items()):
        if holds(repr(v)):
            found.append(f"frame {f.f_code.co_name}: {k}")
    f = f.f_back

# 2. every object gc tracks
for o in gc.get_objects():
    try:
        if isinstance(o, (str, bytes, dict, list, tuple)) and holds(repr(o)):
            found.append("gc: " + type(o).__name__)
    except Exception:
        pass

# 3. this process's whole memory (/proc/self/mem is closed to a non-dumpable process: read it
#    directly, as code that escaped the Python layer would)
with open("/proc/self/maps") as maps:
    regions = [line.split() for line in maps]
for fields in regions:
    addr, perms = fields[:2]
    name = fields[5] if len(fields) > 5 else ""
    if "r" not in perms or name.startswith(("[vvar", "[vsyscall", "/")):
        continue  # file mappings hold no call data (and reading past a file's end is SIGBUS)
    lo, hi = (int(x, 16) for x in addr.split("-"))
    if holds(ctypes.string_at(lo, hi - lo)):
        found.append("memory: " + " ".join(fields)[:80])

# 4. every place one could write or read something left by another call
for root in ("/tmp", "/dev/shm", "/dev/mqueue", "/run", "/var/tmp", "/var/lock", "/dev"):
    for dirpath, dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.isfile(path) or os.path.islink(path):
                continue  # devices and fifos can block; links lead to files searched anyway
            try:
                with open(path, "rb") as fh:
                    if holds(fh.read(1 << 20)):
                        found.append("file " + path)
            except OSError:
                pass

# 5. other processes (runner, zygotes, spares): their memory and descriptors
for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) != os.getpid():
        for what in ("mem", "environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{what}", "rb") as fh:
                    if holds(fh.read(1 << 20)):
                        found.append(f"/proc/{pid}/{what}")
            except OSError:
                pass

# 6. message queues and SysV IPC
libc = ctypes.CDLL(None, use_errno=True)
if libc.mq_open(b"/fnforge-probe", 0) >= 0:  # open, not create: another call's queue
    found.append("an mqueue opened")
if libc.msgget(0x4242, 0) >= 0 or libc.shmget(0x4242, 0, 0) >= 0:
    found.append("a SysV object exists")
print(json.dumps(found))
"""


def _search(sandbox: Sandbox, secret: str) -> list[str]:
    r = sandbox.run(_header(secret) + SEARCH, audit=False, timeout=30)
    assert r.ok, (r.error, r.stderr[-2000:])
    found: list[str] = json.loads(r.stdout.strip().splitlines()[-1])
    return found


def test_the_search_finds_a_secret_where_there_is_one(one_container: Sandbox) -> None:
    """The search is real: a secret in its own process is found in memory, gc and a file."""
    secret = "own-" + secrets.token_hex(16)
    r = one_container.run(f"KEEP = {secret[:9]!r} + {secret[9:]!r}\n"
                          "open('/tmp/k', 'w').write(KEEP)\n" + _header(secret) + SEARCH,
                          audit=False, timeout=30)
    found = json.loads(r.stdout.strip().splitlines()[-1])
    assert any(f.startswith("memory") for f in found), found
    assert any(f.startswith("gc") for f in found) and "file /tmp/k" in found, found


def _header(secret: str) -> str:
    data = secret.encode()
    return (f"PREFIX = {data[:10]!r}\nLENGTH = {len(data)}\n"
            f"DIGEST = {hashlib.sha256(data).hexdigest()!r}\n")


@pytest.fixture()
def one_container() -> Iterator[Sandbox]:
    """Every call goes to the same container (unless it is replaced)."""
    with Sandbox(pool_size=1) as sb:
        yield sb


@pytest.mark.parametrize("spec", [ECHO, ECHO_HEAVY], ids=["light", "heavy"])
def test_the_next_call_finds_nothing_of_a_secret_argument(one_container: Sandbox,
                                                          spec: FunctionSpec) -> None:
    secret = "s3cret-" + secrets.token_hex(16)
    assert one_container.call(spec, {"secret": secret}).value == len(secret)
    assert _search(one_container, secret) == []


def test_the_next_call_finds_nothing_of_a_code_block_or_its_output(one_container: Sandbox
                                                                   ) -> None:
    secret = "blk-" + secrets.token_hex(16)
    r = one_container.run(f"x = {secret!r}\nprint(x)\nopen('/tmp/keep', 'w').write(x)\n")
    assert r.ok and secret in r.stdout
    assert _search(one_container, secret) == []


def test_the_next_call_finds_nothing_of_a_result(one_container: Sandbox) -> None:
    secret = "res-" + secrets.token_hex(16)
    spec = make_spec(f"def give():\n    return {secret!r}\n", properties={}, required=[])
    assert one_container.call(spec, {}).value == secret
    # the function's own code holds the secret too: the runner keeps compiled code of library
    # functions, never their arguments or values; a search that is not for the code itself
    # must come up empty in the next call process
    assert _search(one_container, secret) == []


COUNTER = r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
seen = {}
def bump(name, read, write):
    try:
        n = read()
    except Exception:
        n = 0
    try:
        write(n + 1)
        seen[name] = n + 1
    except Exception as exc:
        seen[name] = "refused " + type(exc).__name__

def rd(path):
    return lambda: int(open(path).read() or 0)
def wr(path):
    def w(n):
        with open(path, "w") as fh:
            fh.write(str(n))
    return w
for path in ("/tmp/count", "/dev/shm/count", "/dev/mqueue/count", "/var/tmp/count",
             "/run/count", "/var/lock/count"):
    bump(path, rd(path), wr(path))

def mq():
    fd = libc.mq_open(b"/count", os.O_RDWR | os.O_CREAT, 0o600, None)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "mq_open")
    return fd
def mq_read():
    buf = ctypes.create_string_buffer(8192)
    n = libc.mq_timedreceive(mq(), buf, 8192, None, None)
    if n < 0:
        raise OSError(ctypes.get_errno(), "receive")
    return int(buf.value)
def mq_write(n):
    if libc.mq_timedsend(mq(), str(n).encode(), len(str(n)), 0, None) < 0:
        raise OSError(ctypes.get_errno(), "send")
bump("mqueue", mq_read, mq_write)

def sysv_id():
    i = libc.msgget(0x4242, 0o1600)
    if i < 0:
        raise OSError(ctypes.get_errno(), "msgget")
    return i
bump("sysv", lambda: libc.msgctl(sysv_id(), 0, None) * 0 + 1, lambda n: sysv_id())
print(json.dumps(seen))
"""


def test_a_call_cannot_count_its_calls(one_container: Sandbox) -> None:
    """Ten runs of a counter that tries every writable place and every IPC channel: each run
    sees the same fresh state, so nothing can behave differently on the N-th call."""
    seen = []
    for _ in range(10):
        r = one_container.run(COUNTER, audit=False)
        assert r.ok, (r.error, r.stderr[-1000:])
        seen.append(json.loads(r.stdout.strip().splitlines()[-1]))
    assert all(s == seen[0] for s in seen), seen
    assert all(v == 1 or str(v).startswith("refused") for v in seen[0].values()), seen[0]
    assert str(seen[0]["mqueue"]).startswith("refused") and str(seen[0]["sysv"]).startswith(
        "refused")


# -- what the host trusts ------------------------------------------------------------------------
FIND_RESULT_FD = r"""
import os, sys
f = sys._getframe()
while f is not None and f.f_code.co_name != "child_main":
    f = f.f_back
RES = f.f_locals["res_w"]
def say(raw):
    os.write(RES, raw if isinstance(raw, bytes) else raw.encode())
"""


def test_a_forged_success_does_not_hide_the_real_exit_status(one_container: Sandbox) -> None:
    code = FIND_RESULT_FD + (
        "say('{\"result\": {\"ok\": true, \"value\": 42, \"error\": null}}\\n')\n"
        "os._exit(3)\n")
    r = one_container.run(code, audit=False)
    assert r.exit_code == 3 and not r.ok  # measured by the runner, not claimed


def test_a_forged_timeout_is_just_an_exception_name(one_container: Sandbox) -> None:
    spec = make_spec("def f():\n    return 1\n", properties={}, required=[])
    code = FIND_RESULT_FD + (
        "say('{\"result\": {\"ok\": false, \"value\": null, \"error\": {\"type\": \"Timeout\","
        " \"message\": \"forged\", \"traceback\": \"\"}}}\\n')\nos._exit(0)\n")
    r = one_container.run(code, functions=[spec], audit=False)
    assert r.error is not None and r.error.kind is ErrorKind.EXCEPTION
    assert not r.timed_out


HOSTILE_REPORTS = [
    "[" * 200_000 + "\n",
    "{\"result\": " + "[" * 5000 + "\n",
    "{\"result\": {\"ok\": true, \"value\": 1, \"error\": null, \"exit_code\": \"x\"}}\n",
    "{\"result\": {\"ok\": \"yes\", \"value\": 1, \"error\": null}}\n",
    "{\"result\": {\"ok\": false, \"value\": null, \"error\": {\"type\": 7}}}\n",
    "{\"result\": {\"ok\": false, \"value\": null, \"error\": \"boom\"}}\n",
    "{\"result\": {\"ok\": true, \"value\": NaN, \"error\": null}}\n",
    "{\"audit\": [1, 2, 3]}\n{\"result\": {\"ok\": true, \"value\": 1, \"error\": null}}\n",
    "{\"audit\": \"not a dict\"}\n",
    "\xff\xfe garbage\n",
    "{\"result\": {\"ok\": true, \"value\": 1, \"error\": null}}\n{\"result\": {}}\n",
    "{\"result\": {\"ok\": true, \"value\": 1e999, \"error\": null}}\n",
    "{\"audit\": {\"event\": \"x\", \"detail\": \"y\"}}\n" * 500,
]


@pytest.mark.parametrize("report", HOSTILE_REPORTS, ids=range(len(HOSTILE_REPORTS)))
def test_hostile_report_lines_never_break_the_host_or_the_runner(one_container: Sandbox,
                                                                  report: str) -> None:
    code = FIND_RESULT_FD + f"say({report!r})\nos._exit(0)\n"
    r = one_container.run(code, audit=False, timeout=10)
    assert not r.ok and r.error is not None
    assert r.error.kind in (ErrorKind.PROTOCOL, ErrorKind.RESULT_INVALID, ErrorKind.CRASHED,
                            ErrorKind.EXCEPTION), r.error
    assert one_container.call(ECHO, {"secret": "abc"}).value == 3  # the next call is served


def test_random_bytes_on_the_result_channel(one_container: Sandbox) -> None:
    import random

    rng = random.Random(7)
    for _ in range(25):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
        code = FIND_RESULT_FD + f"say({blob!r})\nos._exit({rng.randrange(3)})\n"
        r = one_container.run(code, audit=False, timeout=10)
        assert r.error is None or isinstance(r.error.kind, ErrorKind)
    assert one_container.call(ECHO, {"secret": "abcd"}).value == 4


# -- one call cannot break the next ---------------------------------------------------------------
_CONTAINER_ID = "import re\nprint(re.search('[0-9a-f]{64}', open('/proc/self/cgroup').read())[0])"

BREAKERS = {
    "deep directories": "import os\nfor i in range(1100):\n    os.mkdir('d')\n    os.chdir('d')",
    "long names deep": ("import os\nfor i in range(60):\n    os.mkdir('x' * 250)\n"
                        "    os.chdir('x' * 250)\nopen('f', 'w').write('1')"),
    "read-only directories": ("import os\nos.makedirs('/tmp/a/b/c')\nopen('/tmp/a/b/c/f', 'w')\n"
                              "for d in ('/tmp/a/b/c', '/tmp/a/b', '/tmp/a'):\n"
                              "    os.chmod(d, 0o500)"),
    "hard links": ("import os\nopen('/tmp/h', 'w').write('1')\n"
                   "for i in range(200):\n    os.link('/tmp/h', f'/tmp/h{i}')"),
    "files that reappear": ("import os, time\nif os.fork() == 0:\n    while True:\n"
                            "        open('/tmp/again', 'w').close()\n"),
    "many files": "for i in range(20000):\n    open(f'/tmp/{i}', 'w').close()",
    "symlink loops": ("import os\nos.symlink('/tmp/l2', '/tmp/l1')\nos.symlink('/tmp/l1', "
                      "'/tmp/l2')\nos.mkdir('/tmp/d')\nos.symlink('/tmp', '/tmp/d/up')"),
    "a fifo": "import os\nos.mkfifo('/tmp/fifo')",
    "closed stdio": "import os\nfor fd in range(3):\n    os.close(fd)",
}


@pytest.mark.parametrize("code", list(BREAKERS.values()), ids=list(BREAKERS))
def test_after_a_hostile_call_the_next_innocent_call_succeeds(one_container: Sandbox,
                                                              code: str) -> None:
    before = one_container.run(_CONTAINER_ID).stdout
    one_container.run(code, audit=False, timeout=10)
    r = one_container.run("import os\nprint(sorted(os.listdir('/tmp')))")
    assert r.ok and r.stdout == "[]\n", (r.error, r.stdout[:300])
    assert one_container.call(ECHO, {"secret": "xy"}).value == 2
    assert one_container.run(_CONTAINER_ID).stdout == before  # the same container served it


# -- channels the review found: kernel state that outlives a call --------------------------------
def test_no_network_socket_can_be_made_even_on_loopback(one_container: Sandbox) -> None:
    """A loopback TIME_WAIT socket outlives its process by a minute: a call could leave a port
    number for the next one. Call processes may make AF_UNIX sockets only (the kernel filter)."""
    code = ("import socket, json\nout = {}\n"
            "for fam in ('AF_INET', 'AF_INET6', 'AF_NETLINK', 'AF_PACKET'):\n"
            "    try:\n"
            "        socket.socket(getattr(socket, fam), socket.SOCK_DGRAM if fam != 'AF_PACKET'"
            " else socket.SOCK_RAW).close()\n"
            "        out[fam] = 'made'\n"
            "    except OSError as exc:\n"
            "        out[fam] = 'refused ' + str(exc.errno)\n"
            "a, b = socket.socketpair()\nout['AF_UNIX'] = 'made'\nprint(json.dumps(out))\n")
    r = one_container.run(code, audit=False)
    assert r.ok, r.stderr[-1000:]
    out = json.loads(r.stdout)
    assert out.pop("AF_UNIX") == "made"
    assert all(v == "refused 1" for v in out.values()), out


def test_tmp_itself_keeps_nothing_of_a_call(one_container: Sandbox) -> None:
    """/tmp's own mode, times and extended attributes survive emptying it: a call that picks
    when to write there could leave a number in them. The runner puts them back."""
    reader = ("import os\nst = os.stat('/tmp')\n"
              "print(oct(st.st_mode), st.st_atime_ns, st.st_mtime_ns, os.listxattr('/tmp'))\n")
    before = one_container.run(reader).stdout
    container = one_container.run(_CONTAINER_ID).stdout
    writer = ("import os, time\nwhile (time.time_ns() // 1_000_000) % 100 != 42:\n    pass\n"
              "open('/tmp/x', 'w').close()\nos.unlink('/tmp/x')\n"
              "os.setxattr('/tmp', 'user.n', b'42')\nos.chmod('/tmp', 0o700)\n"
              "os.utime('/tmp', ns=(42, 42))\n")
    assert one_container.run(writer, audit=False).ok
    assert one_container.run(reader).stdout == before
    assert one_container.run(_CONTAINER_ID).stdout == container  # the same container


def test_a_zombie_leader_with_a_live_thread_does_not_stall_the_next_call(
        one_container: Sandbox) -> None:
    code = ("import os, threading, ctypes, time\npid = os.fork()\nif pid == 0:\n"
            "    threading.Thread(target=lambda: time.sleep(1000)).start()\n"
            "    ctypes.CDLL(None).syscall(60, 0)  # SYS_exit: only the leader thread ends\n"
            "    time.sleep(1000)\ntime.sleep(0.3)\n")
    one_container.run(code, audit=False, timeout=10)
    r = one_container.run("print('innocent', 6 * 7)", timeout=1)
    assert r.ok and r.stdout == "innocent 42\n", r.error
