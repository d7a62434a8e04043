"""What training and evaluation share: the run directory, the session (LLM client, sandbox
pool, grader, backend), the progress bar and the library-use counts.

One place opens these so both commands behave alike: the same sandbox settings, the same
backend choice, and the same things written for every episode (its left-out functions go to
`excluded.jsonl`, whichever command ran it).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sandbox import FunctionSpec, Sandbox, append_line, image_tag, write_json_atomic

from .backends import Backend, backend_for
from .conversation import ConversationResult, EpisodeSettings
from .errors import ConfigError
from .llm import LLMClient
from .llm.config import resolve_llm_config
from .math import Grader
from .runconfig import RunConfig

__all__ = ["RunDirectory", "Session", "episode_key", "library_digest", "library_use",
           "open_session", "progress_bar", "source_commit", "use_text"]

_LIBRARY_ONLY = ("library_as", "library_shown")  # episode settings a run without functions
# does not read
_HARNESS_SOURCES = ("conversation.py", "registration.py", "math/grading.py", "llm/serve.py")


@functools.cache
def harness_version() -> str:
    """What an episode is solved and graded with besides its settings: the prompts, the
    messages and formats of the conversation loop, how functions are shown, how the embedded
    model's server lays out a request, the grader (their sources, where every prompt string
    lives), and the sandbox image (its runner rewrites and runs every code block)."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in _HARNESS_SOURCES:
        digest.update((here / name).read_bytes())
    digest.update(image_tag().encode())
    return digest.hexdigest()[:16]


def episode_key(functions: Sequence[FunctionSpec], settings: EpisodeSettings,
                model: str) -> str:
    """What a journaled result was solved with: the exact specs, the episode settings, the
    harness and the assistant's model. Only a result of the same key is ever reused (a resumed
    evaluation, a baseline shared by two libraries, an epoch whose library did not change).
    Without functions, how a library would be shown is left out: a run with no library is
    solved the same whatever library it is compared with."""
    episode = asdict(settings)
    if not functions:
        for name in _LIBRARY_ONLY:
            episode.pop(name)
    data = json.dumps([[s.spec_hash for s in functions], episode, harness_version(), model],
                      sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def source_commit() -> str:
    """fnforge's own commit (with "-dirty" when tracked files differ from it), wherever it is
    run from: the checkout that holds this file, not the working directory's."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True, cwd=here)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10,
                               cwd=here).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def library_digest(specs: Iterable[FunctionSpec]) -> str:
    """One hash for a set of functions (order-free): which library a figure was measured with."""
    hashes = sorted(f"{spec.name}:{spec.spec_hash}" for spec in specs)
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


class RunDirectory:
    """The files of one run; every write is atomic or an fsync'ed append."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def append_journal(self, record: dict[str, Any], name: str = "journal.jsonl") -> None:
        append_line(self / name, json.dumps(record, default=str))

    def journal(self, name: str = "journal.jsonl") -> list[dict[str, Any]]:
        """Every complete line (a line cut short by a crash is ignored: it was never final)."""
        path = self / name
        if not path.exists():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def write_json(self, name: str, data: Any) -> None:
        write_json_atomic(self / name, data)

    def read_json(self, name: str) -> Any:
        try:
            return json.loads((self / name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise ConfigError(f"{self / name} is damaged ({exc}); the run cannot resume from "
                              "it") from None

    def record_left_out(self, result: ConversationResult, **where: Any) -> None:
        """Functions the episode's registration refused, and why (training and evaluation)."""
        for entry in result.left_out:
            self.append_journal({**where, "problem_id": result.problem_id, **entry},
                                "excluded.jsonl")


@dataclass
class Session:
    client: LLMClient
    sandbox: Sandbox
    grader: Grader
    backend: Backend


@contextlib.contextmanager
def open_session(config: RunConfig, *, client: LLMClient | None = None,
                 sandbox: Sandbox | None = None,
                 backend: Backend | None = None) -> Iterator[Session]:
    """The LLM client, sandbox pool, grader and backend a run configuration names; what the
    caller passes in is used as it is (and not closed here)."""
    if client is None:
        llm, key = resolve_llm_config(config.llm or None)
        client = LLMClient(llm, api_key=key)
    with contextlib.ExitStack() as stack:
        if sandbox is None:
            sandbox = stack.enter_context(Sandbox(
                pool_size=config.sandbox.pool_size, runtime=config.sandbox.runtime or None,
                engine_wait_s=config.sandbox.engine_wait_s))
        grader = stack.enter_context(Grader())
        if backend is None:
            backend = stack.enter_context(contextlib.closing(backend_for(
                config, client=client, sandbox=sandbox, grader=grader)))
        yield Session(client, sandbox, grader, backend)


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=console,
                    transient=False)


def library_use(results: Sequence[ConversationResult]) -> dict[str, Any]:
    """How often the assistant called its library where it was offered: conversations offered
    at least one function, those that called one (as a tool or by name in code), the rate, and
    per function the conversations that called it."""
    offered = [r for r in results if r.functions]
    used = [r for r in offered if r.used_library]
    per_function: dict[str, int] = {}
    for r in offered:
        for name, times in r.library_calls.items():
            if times:
                per_function[name] = per_function.get(name, 0) + 1
    return {"offered": len(offered), "used": len(used),
            "rate": round(len(used) / len(offered), 4) if offered else None,
            "per_function": dict(sorted(per_function.items()))}


def use_text(results: Sequence[ConversationResult]) -> str:
    """The progress line's part: `use 3/5` (nothing when no library was offered)."""
    use = library_use(results)
    return f"  use {use['used']}/{use['offered']}" if use["offered"] else ""
