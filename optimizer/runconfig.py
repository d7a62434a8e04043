"""A training or evaluation run's configuration: the [data], [train], [episode] and [sandbox]
tables of a TOML file (its [llm] table is optimizer/llm/config.py's).

Every key is checked (unknown keys and wrong types are errors naming the key), so a typo never
silently falls back to a default for a run that takes hours.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from sandbox import JsonLimits, read_json_file

from .conversation import EpisodeSettings
from .errors import ConfigError, DatasetError
from .math.families import family_rule

__all__ = ["DataConfig", "RunConfig", "SandboxConfig", "TrainConfig", "load_run_config",
           "run_config_from_dict", "saved_run_config"]

_MAX_SAVED_BYTES = 1 << 20  # a resolved configuration is a few KiB
_SAVED_JSON_LIMITS = JsonLimits(max_depth=16, max_values=100_000, max_chars=_MAX_SAVED_BYTES,
                                max_string_chars=_MAX_SAVED_BYTES)


@dataclass(frozen=True)
class DataConfig:
    """Which problems: train and validation come from the dataset's training file, test from
    its test file (MATH); per subject and level, sampled with the seed."""

    dataset: Literal["math", "math500", "gsm8k", "jsonl"] = "math"
    file: str = ""  # the JSONL file (CRAFT format) for dataset = "jsonl"
    subjects: tuple[str, ...] = ()  # empty: every subject
    levels: tuple[int, ...] = ()  # empty: every level
    family: str = ""  # a problem family by type (optimizer/math/families.py), e.g. "number-theory"
    pattern: str = ""  # or a rule of your own: a regular expression over the problem text
    train_per_type: int = 20
    val_per_type: int = 10
    test_per_type: int = 80
    seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    max_actions_per_step: int = 3
    candidates: int = 1  # replies sampled per proposal, the best by the answer check applied
    concurrency: int = 4  # conversations in flight
    patience: int = 10
    ties: Literal["accept", "reject"] = "accept"
    score: Literal["validation", "train"] = "validation"  # what roll-back and early stop read
    max_prompt_tokens: int = 6000
    backend: str = "local"  # "local" or "ray": where conversations run (README, "Scaling")
    address: str = ""  # the Ray cluster (backend "ray"): "" = RAY_ADDRESS or a local one


@dataclass(frozen=True)
class SandboxConfig:
    pool_size: int = 2
    runtime: str = ""  # "" (the engine's runc) or "runsc" (gVisor)
    engine_wait_s: float = 300.0  # an engine away longer than this stops the run (resumable)


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    episode: EpisodeSettings = field(default_factory=EpisodeSettings)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    llm: dict[str, Any] = field(default_factory=dict)  # the [llm] table, as written

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_run_config(path: str | Path) -> RunConfig:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return run_config_from_dict(data, str(path))


def saved_run_config(run_dir: str | Path) -> RunConfig:
    """The configuration a run saved when it started (its config.json). A resumed run uses it
    for everything, the [llm] table and so whether the embedded model's server is started
    included: never the defaults, nor a config file or an environment of today's."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory to resume (no config.json); start "
                          "a run with --config FILE")
    data = read_json_file(path, "run configuration", _MAX_SAVED_BYTES, _SAVED_JSON_LIMITS,
                          ConfigError)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path} is damaged (not an object); the run cannot resume from it")
    return run_config_from_dict(data, str(path))


def run_config_from_dict(data: Mapping[str, Any], where: str = "config") -> RunConfig:
    unknown = sorted(set(data) - {"data", "train", "episode", "sandbox", "llm"})
    if unknown:
        raise ConfigError(f"{where}: unknown table(s) {', '.join(unknown)}; known: data, train, "
                          "episode, sandbox, llm")
    llm = data.get("llm", {})
    if not isinstance(llm, Mapping):
        raise ConfigError(f"{where}: [llm] must be a table")
    config = RunConfig(
        data=_table(DataConfig, data.get("data", {}), where, "data"),
        train=_table(TrainConfig, data.get("train", {}), where, "train"),
        episode=_table(EpisodeSettings, data.get("episode", {}), where, "episode"),
        sandbox=_table(SandboxConfig, data.get("sandbox", {}), where, "sandbox"),
        llm=dict(llm))
    _check(config, where)
    return config


def _table(cls: type[Any], raw: Any, where: str, name: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: [{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) in [{name}]: {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(known))}")
    default = cls()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        current = getattr(default, key)
        if value is None and "None" in str(known[key].type):
            pass
        elif isinstance(current, tuple):
            if not isinstance(value, list):
                raise ConfigError(f"{where}: {name}.{key} must be a list")
            value = tuple(value)
        elif isinstance(current, bool) or current is None:
            pass
        elif isinstance(current, float) and isinstance(value, int) and not isinstance(value,
                                                                                        bool):
            value = float(value)
        elif not isinstance(value, type(current)) or isinstance(value, bool) != isinstance(
                current, bool):
            raise ConfigError(f"{where}: {name}.{key} must be {type(current).__name__}, not "
                              f"{value!r}")
        values[key] = value
    return cls(**values)


def _check(config: RunConfig, where: str) -> None:
    d, t, e, s = config.data, config.train, config.episode, config.sandbox
    problems = []
    if d.dataset not in ("math", "math500", "gsm8k", "jsonl"):
        problems.append("data.dataset must be math, math500, gsm8k or jsonl")
    if d.dataset == "jsonl" and not d.file:
        problems.append("data.file must name the JSONL file when data.dataset = \"jsonl\"")
    for key in ("train_per_type", "val_per_type", "test_per_type"):
        if getattr(d, key) < 0:
            problems.append(f"data.{key} must be >= 0")
    for key, low in (("epochs", 1), ("max_actions_per_step", 1), ("candidates", 1),
                     ("concurrency", 1),
                     ("patience", 1), ("max_prompt_tokens", 1000)):
        if getattr(t, key) < low:
            problems.append(f"train.{key} must be >= {low}")
    if t.backend not in ("local", "ray"):
        problems.append("train.backend must be local or ray")
    if t.ties not in ("accept", "reject"):
        problems.append("train.ties must be accept or reject")
    if t.score not in ("validation", "train"):
        problems.append("train.score must be validation or train")
    if t.score == "validation" and d.val_per_type == 0:
        problems.append("train.score = \"validation\" needs data.val_per_type > 0")
    try:
        family_rule(d.family, d.pattern)
    except DatasetError as exc:
        problems.append(f"data: {exc}")
    if e.library_as not in ("code", "tools"):
        problems.append("episode.library_as must be code or tools")
    if e.library_shown < 0:
        problems.append("episode.library_shown must be >= 0 (0 shows every function)")
    if e.max_turns < 1 or e.seconds <= 0 or e.call_timeout <= 0:
        problems.append("episode: max_turns >= 1, seconds and call_timeout > 0")
    if s.pool_size < 1 or s.runtime not in ("", "runc", "runsc") or s.engine_wait_s < 0:
        problems.append("sandbox: pool_size >= 1, runtime \"\", \"runc\" or \"runsc\", "
                        "engine_wait_s >= 0")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
