"""A run's configuration (optimizer/runconfig.py) and `train --resume`, which must use the
configuration the run saved for everything, the embedded model's server included.

No Docker, no model: the training loop and the model server are replaced by recorders.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from optimizer import cli
from optimizer.errors import ConfigError
from optimizer.runconfig import (
    DataConfig,
    RunConfig,
    SandboxConfig,
    TrainConfig,
    load_run_config,
    run_config_from_dict,
    saved_run_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.toml")))
def test_the_shipped_configs_load(name: str) -> None:
    config = load_run_config(CONFIGS / name)
    assert config.train.epochs >= 1 and config.sandbox.pool_size >= 1


def test_no_tables_is_the_defaults_and_the_saved_form_reads_back() -> None:
    config = run_config_from_dict({})
    assert config == RunConfig()
    assert run_config_from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_values_are_converted_as_the_dataclasses_say() -> None:
    config = run_config_from_dict({"data": {"subjects": ["Algebra"], "levels": [1, 2]},
                                   "sandbox": {"engine_wait_s": 30},
                                   "llm": {"provider": "openai"}})
    assert config.data == DataConfig(subjects=("Algebra",), levels=(1, 2))
    assert config.sandbox == SandboxConfig(engine_wait_s=30.0)
    assert config.llm == {"provider": "openai"}


@pytest.mark.parametrize(("data", "message"), [
    ({"trian": {}}, "unknown table"),
    ({"train": {"epoch": 3}}, r"unknown key\(s\) in \[train\]: epoch"),
    ({"train": {"epochs": "3"}}, "train.epochs must be int"),
    ({"train": {"epochs": True}}, "train.epochs must be int"),
    ({"data": {"levels": 3}}, "data.levels must be a list"),
    ({"train": "fast"}, r"\[train\] must be a table"),
    ({"llm": ["x"]}, r"\[llm\] must be a table"),
    ({"train": {"epochs": 0}}, "train.epochs must be >= 1"),
    ({"train": {"backend": "spark"}}, "train.backend must be local or ray"),
    ({"data": {"dataset": "jsonl"}}, "data.file must name"),
    ({"data": {"val_per_type": 0}}, "needs data.val_per_type > 0"),
    ({"sandbox": {"runtime": "kata"}}, "sandbox: pool_size"),
])
def test_every_mistake_is_an_error_naming_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run_config_from_dict(data, "run.toml")


def test_a_config_file_that_is_not_toml_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_run_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_run_config(tmp_path / "missing.toml")


# -- the saved configuration, and --resume ------------------------------------------------------
ENDPOINT = {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "remote-model"}


def saved_run(tmp_path: Path, llm: dict[str, Any]) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    config = RunConfig(train=TrainConfig(epochs=2), llm=llm)
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    return run


def test_saved_run_config_reads_what_the_run_saved(tmp_path: Path) -> None:
    run = saved_run(tmp_path, ENDPOINT)
    assert saved_run_config(run) == RunConfig(train=TrainConfig(epochs=2), llm=ENDPOINT)


@pytest.mark.parametrize(("content", "message"), [
    (None, "not a run directory to resume"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not an object"),
    ('{"train": {"epochs": 1}, "train": {"epochs": 2}}', "appears twice"),
])
def test_a_missing_or_damaged_saved_config_is_a_config_error(
        tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "config.json").write_text(content)
    with pytest.raises(ConfigError, match=message):
        saved_run_config(tmp_path)


class _Recorder:
    """Stands in for the training loop and the model server: records what it was asked."""

    def __init__(self) -> None:
        self.trained: list[tuple[RunConfig, Path, bool]] = []
        self.servers_started = 0


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[_Recorder]:
    import optimizer.llm.local as local
    import optimizer.train as train

    rec = _Recorder()

    def fake_train(config: RunConfig, run_dir: Path, *, resume: bool = False,
                   backend_choice: Any = None) -> None:
        rec.trained.append((config, run_dir, resume))

    class FakeServer:
        def status(self) -> None:
            return None  # no server runs: one would be started if the provider is local

        def start(self, *_: Any, **__: Any) -> None:
            rec.servers_started += 1

        def stop(self) -> bool:
            return True

    monkeypatch.setattr(train, "train", fake_train)
    monkeypatch.setattr(local, "LocalServer", FakeServer)
    for name in ("FNFORGE_CONFIG", "FNFORGE_LLM_PROVIDER", "OPENAI_BASE_URL",
                 "AZURE_OPENAI_ENDPOINT", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no fnforge.toml: today's defaults would be the local model
    yield rec


def test_resume_uses_the_saved_endpoint_and_starts_no_local_model(
        tmp_path: Path, recorder: _Recorder) -> None:
    run = saved_run(tmp_path, ENDPOINT)
    assert cli.main(["train", "--resume", str(run)]) == 0
    [(config, run_dir, resume)] = recorder.trained
    assert resume and run_dir == run and config.llm == ENDPOINT
    assert recorder.servers_started == 0


def test_resume_of_a_run_on_the_embedded_model_starts_it(tmp_path: Path,
                                                          recorder: _Recorder) -> None:
    run = saved_run(tmp_path, {"provider": "local"})
    assert cli.main(["train", "--resume", str(run)]) == 0
    assert recorder.servers_started == 1


def test_resume_refuses_a_config_of_today_and_a_directory_that_is_no_run(
        tmp_path: Path, recorder: _Recorder, capsys: pytest.CaptureFixture[str]) -> None:
    run = saved_run(tmp_path, ENDPOINT)
    assert cli.main(["train", "--resume", str(run), "--config", "configs/small.toml"]) == 2
    assert "leave out --config" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert recorder.trained == [] and recorder.servers_started == 0
