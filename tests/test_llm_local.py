"""The local model's plumbing that needs no model: assembly, hashes, ports, pid files, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optimizer.cli import main
from optimizer.errors import LocalModelError as LocalLLMError
from optimizer.llm import local as local_llm
from optimizer.llm.local import LocalServer, assemble, choose_port


def parts(tmp_path: Path) -> tuple[list[Path], bytes]:
    paths = []
    for i, chunk in enumerate([b"abc" * 1000, b"def" * 2000, b"g"]):
        path = tmp_path / f"part{i:02d}.bin"
        path.write_bytes(chunk)
        paths.append(path)
    return paths, b"".join(p.read_bytes() for p in paths)


def test_assemble_checks_the_hash(tmp_path: Path) -> None:
    paths, whole = parts(tmp_path)
    dest = tmp_path / "cache" / "model.gguf"
    good = hashlib.sha256(whole).hexdigest()
    assert assemble(paths, dest, len(whole), good, show=False) == dest
    assert dest.read_bytes() == whole
    assert local_llm.sha256_file(dest, show=False) == good


def test_assemble_refuses_a_bad_hash(tmp_path: Path) -> None:
    paths, whole = parts(tmp_path)
    dest = tmp_path / "cache" / "model.gguf"
    with pytest.raises(LocalLLMError, match=r"expected 0000.*reinstall"):
        assemble(paths, dest, len(whole), "0" * 64, show=False)
    assert not dest.exists() and list(dest.parent.iterdir()) == []  # no partial file left
    with pytest.raises(LocalLLMError, match="hold 9001 bytes, expected 9002"):
        assemble(paths, dest, len(whole) + 1, "0" * 64, show=False)


def test_busy_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        with pytest.raises(LocalLLMError, match=f"port {busy} on 127.0.0.1 is in use"):
            choose_port(busy, strict=True)
        other = choose_port(busy, strict=False)
        assert other != busy and local_llm.port_free(other)
    assert choose_port(0) > 0


def test_stale_pid_file_is_cleaned(tmp_path: Path) -> None:
    server = LocalServer(tmp_path)
    server.pid_file.write_text("999999\n")
    server.state_file.write_text(json.dumps({
        "pid": 999999, "port": 1, "model": "smollm2-135m", "base_url": "http://127.0.0.1:1/v1",
        "log": "x", "started_at": 0.0}))
    assert server.status() is None
    assert not server.pid_file.exists() and not server.state_file.exists()
    assert server.stop() is False


def test_an_older_fnforges_server_is_recognised_stopped_and_replaced(tmp_path: Path) -> None:
    """Started as llama_cpp.server itself (no tool handler): still ours to stop, and start()
    replaces it rather than reuse it."""
    old = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                            "llama_cpp.server"], start_new_session=True)
    try:
        for _ in range(100):  # until it has exec'd
            if b"llama_cpp.server" in Path(f"/proc/{old.pid}/cmdline").read_bytes():
                break
            time.sleep(0.05)
        server = LocalServer(tmp_path)
        server.pid_file.write_text(f"{old.pid}\n")
        server.state_file.write_text(json.dumps({
            "pid": old.pid, "port": 1, "model": "smollm2-135m",
            "base_url": "http://127.0.0.1:1/v1", "log": "x", "started_at": 0.0}))
        assert local_llm._server_module(old.pid) == b"llama_cpp.server"
        assert server.status() is not None
        assert local_llm._server_module(os.getpid()) is None  # any other process: not ours
        assert server.stop() is True and old.wait(10) is not None
    finally:
        old.kill()
        old.wait()


def test_unknown_model_and_missing_parts() -> None:
    with pytest.raises(LocalLLMError, match="unknown local model 'gpt'"):
        local_llm.get_model("gpt")
    assert local_llm.MODELS["qwen2.5-coder-1.5b"].size == 1_117_320_768
    assert len(local_llm.part_requirements()) == 22


def test_cli_status_and_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FNFORGE_CACHE", str(tmp_path))
    assert main(["llm", "status"]) == 1
    assert main(["llm", "stop"]) == 0
    out = capsys.readouterr().out
    assert "no local model server running" in out


def test_cli_bad_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[llm]\napi_key = "x"\n')
    monkeypatch.setenv("FNFORGE_CACHE", str(tmp_path))
    assert main(["llm", "start", "--config", str(bad)]) == 2
    assert "never holds keys" in capsys.readouterr().err
