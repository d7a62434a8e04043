"""The sandbox runtime, as its users see it: calls, code blocks, results and clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from sandbox import (
    EngineUnavailable,
    ErrorKind,
    FunctionSpec,
    InvalidArguments,
    InvalidSpec,
    Sandbox,
)

from .conftest import make_spec

ADD = make_spec("def add(a, b):\n    return a + b\n",
                properties={"a": {"type": "integer"}, "b": {"type": "integer"}})


def test_a_call_returns_the_functions_value(sandbox: Sandbox) -> None:
    result = sandbox.call(ADD, {"a": 2, "b": 40})
    assert result.ok and result.value == 42
    assert result.error is None and not result.timed_out and not result.oom_killed
    assert result.image_id == sandbox.image_id and result.image_id.startswith("sha256:")
    assert result.duration_ms > 0


def test_each_name_runs_its_own_code(sandbox: Sandbox) -> None:
    """Upstream binds every name to the last function; here each spec runs its own code."""
    double = make_spec("def double(x):\n    return 2 * x\n")
    square = make_spec("def square(x):\n    return x * x\n")
    assert sandbox.call(double, {"x": 5}).value == 10
    assert sandbox.call(square, {"x": 5}).value == 25


def test_sympy_values_follow_the_documented_conversion(sandbox: Sandbox) -> None:
    spec = make_spec(
        "import sympy\n"
        "def f(n):\n"
        "    x = sympy.Symbol('x')\n"
        "    return [sympy.Integer(n), sympy.Rational(1, n), sympy.sqrt(2) * x, (1, 2), {3},"
        " float('nan'), sympy.Float(0.5)]\n")
    result = sandbox.call(spec, {"n": 4})
    assert result.ok, result.error
    assert result.value == [4, "1/4", "sqrt(2)*x", [1, 2], [3], "nan", 0.5]


def test_numpy_values_become_lists_and_numbers(sandbox: Sandbox) -> None:
    spec = make_spec("import numpy as np\ndef f(n):\n    return np.arange(n) * 2, np.int64(7)\n")
    assert sandbox.call(spec, {"n": 3}).value == [[0, 2, 4], 7]


def test_an_exception_in_user_code_is_a_result_not_an_error(sandbox: Sandbox) -> None:
    spec = make_spec("def f(x):\n    return 1 / x\n")
    result = sandbox.call(spec, {"x": 0})
    assert not result.ok
    assert result.error is not None and result.error.kind is ErrorKind.EXCEPTION
    assert result.error.type == "ZeroDivisionError"
    assert "division by zero" in result.error.message
    assert "ZeroDivisionError" in result.error.traceback


def test_output_is_captured_and_capped(sandbox: Sandbox) -> None:
    spec = make_spec("def f(n):\n    print('x' * n)\n    return n\n")
    small = sandbox.call(spec, {"n": 10})
    assert small.stdout == "x" * 10 + "\n" and not small.stdout_truncated
    big = sandbox.call(spec, {"n": sandbox.limits.output_cap * 2})
    assert big.ok and big.value == sandbox.limits.output_cap * 2
    assert big.stdout_truncated and len(big.stdout) == sandbox.limits.output_cap


def test_run_executes_a_block_with_functions_by_name(sandbox: Sandbox) -> None:
    result = sandbox.run("import sympy\nprint(add(2, 3), sympy.factorint(12))\n", [ADD])
    assert result.ok and result.exit_code == 0
    assert result.stdout == "5 {2: 2, 3: 1}\n"


def test_run_reports_the_exit_code_and_traceback(sandbox: Sandbox) -> None:
    failing = sandbox.run("print('before')\nraise ValueError('bad input')\n")
    assert not failing.ok and failing.exit_code == 1
    assert failing.stdout == "before\n"
    assert failing.error is not None and failing.error.type == "ValueError"
    assert "ValueError: bad input" in failing.stderr
    # only the block's own frames, with its lines: the runner's frames tell the model nothing
    assert "line 2, in <module>\n    raise ValueError('bad input')" in failing.stderr
    assert "child.py" not in failing.stderr and "runner" not in failing.stderr
    typo = sandbox.run("x = 1\nn = 7 * k + 3 for k in range(10)\n")
    assert "SyntaxError" in typo.stderr and "child.py" not in typo.stderr
    assert "n = 7 * k + 3 for k in range(10)" in typo.stderr
    sabotage = sandbox.run("import linecache\nlinecache.cache['<code>'] = 5\n"
                           "raise ValueError('x')\n")  # what the traceback reads, broken
    assert sabotage.error is not None and sabotage.error.type == "ValueError"  # still reported
    exited = sandbox.run("import sys\nsys.exit(3)\n")
    assert exited.exit_code == 3 and not exited.ok
    assert sandbox.run("raise SystemExit(0)").exit_code == 0


def test_a_block_ending_in_an_expression_prints_its_value_like_a_notebook(
        sandbox: Sandbox) -> None:
    assert sandbox.run("x = 6\nx * 7\n").stdout == "42\n"
    assert sandbox.run("print('once')\n").stdout == "once\n"  # print's None is not shown
    assert sandbox.run("import math\nmath.gcd(12, 18)  # the answer\n").stdout == "6\n"
    assert sandbox.run("y = 1\n").stdout == "" and sandbox.run("None").stdout == ""
    # a block that prints for itself is not followed by a stray value its answer is taken for
    main = "def main():\n    print(45)\n    return 0\n\nmain()\n"
    assert sandbox.run(main).stdout == "45\n"
    assert sandbox.run("import sys\nsys.stdout.write('24\\n')").stdout == "24\n"
    failing = sandbox.run("1 / 0\n")
    assert "line 1, in <module>\n    1 / 0" in failing.stderr  # its own line, not the wrapper's


def test_a_timeout_is_enforced_and_reported(sandbox: Sandbox) -> None:
    result = sandbox.run("while True:\n    pass\n", timeout=1.0)
    assert result.timed_out and not result.ok
    assert result.error is not None and result.error.kind is ErrorKind.TIMEOUT
    assert sandbox.call(ADD, {"a": 1, "b": 1}).value == 2  # the pool recovered


def test_state_never_carries_over_between_calls(sandbox: Sandbox) -> None:
    writer = "import builtins\nopen('/tmp/left-behind', 'w').write('x')\nbuiltins.leak = 1\n"
    assert sandbox.run(writer).ok
    for _ in range(2 * sandbox.pool_size):  # whichever container serves the next call
        reader = sandbox.run("import os, builtins\n"
                             "print(os.listdir('/tmp'), hasattr(builtins, 'leak'))\n")
        assert reader.stdout == "[] False\n"


def test_the_environment_is_empty(sandbox: Sandbox) -> None:
    result = sandbox.run("import os\nprint(sorted(os.environ))\n")
    assert result.stdout == "[]\n"


def test_non_json_arguments_are_refused_before_anything_runs(sandbox: Sandbox) -> None:
    spec = make_spec("def f(x):\n    return x\n")
    with pytest.raises(InvalidArguments, match="not JSON-serialisable"):
        sandbox.call(spec, {"x": object()})
    with pytest.raises(InvalidArguments, match="not JSON-serialisable"):
        sandbox.call(spec, {"x": float("inf")})


def test_arguments_must_match_the_schema(sandbox: Sandbox) -> None:
    with pytest.raises(InvalidArguments, match="'b' is a required property"):
        sandbox.call(ADD, {"a": 1})
    with pytest.raises(InvalidArguments, match="a: 'one' is not of type 'integer'"):
        sandbox.call(ADD, {"a": "one", "b": 2})


def test_an_invalid_spec_is_refused_with_the_field_named() -> None:
    with pytest.raises(InvalidSpec, match="'code' must be a non-empty string"):
        FunctionSpec.from_dict({"name": "f", "parameters": {"type": "object"}})
    with pytest.raises(InvalidSpec, match="exactly one of 'expect' or 'expect_error'"):
        FunctionSpec.from_dict({"name": "f", "code": "def f(): pass", "tests": [{"args": {}}]})


def test_no_engine_gives_one_clear_message(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    code = tmp_path / "block.py"
    code.write_text("print(1)\n")
    nowhere = "unix:///nonexistent/docker.sock"
    env = {**os.environ, "DOCKER_HOST": nowhere}
    proc = subprocess.run([sys.executable, "-m", "sandbox", "run", str(code)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"Docker engine not reachable at {nowhere}: start it or set DOCKER_HOST" in proc.stderr
    assert "Traceback" not in proc.stderr
    monkeypatch.setenv("DOCKER_HOST", nowhere)
    with pytest.raises(EngineUnavailable, match="start it or set DOCKER_HOST"):
        Sandbox().start()


def test_cli_call_prints_one_json_object(tmp_path: Path) -> None:
    spec_file = tmp_path / "add.json"
    spec_file.write_text(json.dumps(ADD.to_dict()))
    proc = subprocess.run([sys.executable, "-m", "sandbox", "call", str(spec_file),
                           "--args", '{"a": 20, "b": 22}'], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["value"] == 42


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = subprocess.run([sys.executable, "-m", "sandbox", "call", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "is not valid JSON" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "sandbox", "call", str(bad.with_name("none"))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "cannot read spec file" in proc.stderr


def test_cli_run_with_a_failing_block_still_exits_0(tmp_path: Path) -> None:
    code = tmp_path / "block.py"
    code.write_text("raise RuntimeError('user bug')\n")
    proc = subprocess.run([sys.executable, "-m", "sandbox", "run", str(code)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["exit_code"] == 1 and result["error"]["type"] == "RuntimeError"


def test_ctrl_c_removes_every_container(docker_client: docker.DockerClient) -> None:
    script = ("import sys, time\nfrom sandbox import Sandbox\n"
              "with Sandbox(pool_size=2) as sb:\n"
              "    print('ready', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    owner = {"label": f"fnforge.owner={proc.pid}"}
    assert len(docker_client.containers.list(all=True, filters=owner)) == 2
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert docker_client.containers.list(all=True, filters=owner) == []


def test_code_blocks_may_use_files_but_not_processes_or_sockets(sandbox: Sandbox) -> None:
    files = sandbox.run("open('/tmp/x', 'w').write('1')\nprint(open('/tmp/x').read())\n")
    assert files.ok and files.stdout == "1\n"
    assert {e.event for e in files.audit} == {"open"}  # recorded for reviewers, allowed
    assert {e.reported_by for e in files.audit} == {"child"}
    for code in ("import os\nos.system('true')\n",
                 "import subprocess\nsubprocess.run(['true'])\n",
                 "import socket\nsocket.socket()\n"):
        blocked = sandbox.run(code)
        assert not blocked.ok and blocked.error is not None
        assert blocked.error.type == "PermissionError", code
        assert blocked.audit, code


def test_a_revised_function_runs_its_new_code(sandbox: Sandbox) -> None:
    """The runner caches compiled code by source: a revision under the same name is new code."""
    first = make_spec("def answer(x):\n    return x + 1\n")
    revised = make_spec("def answer(x):\n    return x + 2\n")
    for _ in range(2 * sandbox.pool_size):  # every container has seen (and cached) the first
        assert sandbox.call(first, {"x": 1}).value == 2
    assert sandbox.call(revised, {"x": 1}).value == 3
    assert sandbox.call(first, {"x": 1}).value == 2


def test_no_host_configuration_shows_through_etc(sandbox: Sandbox) -> None:
    """Docker writes resolv.conf, hosts and hostname: none may carry the host's own values."""
    import socket

    result = sandbox.run("print(open('/etc/resolv.conf').read(), open('/etc/hostname').read())")
    assert result.ok
    with open("/etc/resolv.conf") as f:
        host_resolvers = [line for line in f if line.startswith("nameserver")]
    for line in host_resolvers:
        if "127.0.0.1" not in line:
            assert line.strip() not in result.stdout
    assert socket.gethostname() not in result.stdout
