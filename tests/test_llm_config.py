"""Configuration: TOML + environment, provider choice, refused secrets, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from optimizer.errors import ConfigError
from optimizer.llm.config import config_from_dict, load_config

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "fnforge.toml"
    path.write_text(body)
    return path


def test_nothing_configured_means_local_model() -> None:
    cfg = config_from_dict({}, env={})
    assert cfg.provider == "local"
    assert cfg.role("optimizer").model == "qwen2.5-coder-1.5b"
    assert cfg.role("assistant").model == "qwen2.5-coder-1.5b"
    assert cfg.cache.mode == "off"


def test_example_file_loads() -> None:
    cfg = load_config(ROOT / "fnforge.example.toml", env={})
    assert cfg.provider == "local"
    assert cfg.role("optimizer").temperature == 0.7
    assert cfg.prices["gpt-4o-mini"].output_per_mtok == 0.60


def test_key_alone_means_openai() -> None:
    cfg = config_from_dict({}, env={"OPENAI_API_KEY": "sk-whatever-123456"})
    assert cfg.provider == "openai" and cfg.base_url is None
    assert cfg.role("optimizer").model == "gpt-4o-mini"
    assert "sk-whatever" not in repr(cfg)


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[llm]\nbase_url = "http://file:1/v1"\nmodel = "m1"\n'
                           '[llm.roles.optimizer]\nmodel = "m2"\n')
    cfg = load_config(path, env={"OPENAI_BASE_URL": "http://env:2/v1",
                                 "FNFORGE_ASSISTANT_MODEL": "m3"})
    assert cfg.provider == "openai" and cfg.base_url == "http://env:2/v1"
    assert cfg.role("optimizer").model == "m2"
    assert cfg.role("assistant").model == "m3"


def test_other_tables_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, '[train]\nepochs = 3\n[llm]\nprovider = "local"\n')
    assert load_config(path, env={}).provider == "local"


def test_fnforge_config_env(tmp_path: Path) -> None:
    path = write(tmp_path, '[llm.local]\nmodel = "smollm2-135m"\n')
    assert load_config(env={"FNFORGE_CONFIG": str(path)}).local.model == "smollm2-135m"
    with pytest.raises(ConfigError, match="FNFORGE_CONFIG names"):
        load_config(env={"FNFORGE_CONFIG": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize("body", [
    '[llm]\napi_key = "abc"\n',
    '[llm]\nbase_url = "http://x/v1"\n[llm.roles.optimizer]\ntoken = "abc"\n',
    '[other]\npassword = "hunter2"\n',
    '[llm]\nmodel = "sk-proj-abcdefghijklmnop"\n',
])
def test_secret_in_file_is_refused(tmp_path: Path, body: str) -> None:
    with pytest.raises(ConfigError, match="never holds keys") as info:
        load_config(write(tmp_path, body), env={})
    for secret in ("abc", "hunter2", "sk-proj-abcdefghijklmnop"):
        assert f'"{secret}"' not in str(info.value) and "abcdefghijklmnop" not in str(info.value)


def test_api_key_env_names_a_variable() -> None:
    cfg = config_from_dict({"api_key_env": "MY_KEY", "base_url": "http://h/v1", "model": "m"},
                           env={})
    assert cfg.api_key_env == "MY_KEY"
    with pytest.raises(ConfigError, match="must name an environment variable"):
        config_from_dict({"api_key_env": "not a name!"}, env={})


@pytest.mark.parametrize(("table", "env", "match"), [
    ({"colour": "red"}, {}, r"unknown key\(s\) in \[llm\]: colour"),
    ({"roles": {"optimizer": {"modle": "x"}}}, {}, r"llm.roles.optimizer.*modle"),
    ({"base_url": "http://h/v1"}, {}, "no model for role 'assistant'"),
    ({"provider": "azure"}, {}, "AZURE_OPENAI_ENDPOINT"),
    ({}, {"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com"}, "OPENAI_API_VERSION"),
    ({"provider": "openai"}, {}, "needs a key: set OPENAI_API_KEY"),
    ({"provider": "cloud"}, {}, "auto, openai, azure or local"),
    ({"timeout": "slow"}, {}, "llm.timeout must be a number"),
    ({"max_retries": -1}, {}, "llm.max_retries must be >= 0"),
    ({"max_retries": 1.5}, {}, "must be an integer"),
    ({"structured": "xml"}, {}, "auto, tools or json"),
    ({"cache": {"mode": "sometimes"}}, {}, "off, record or replay"),
    ({"local": {"model": "llama-70b"}}, {}, "qwen2.5-coder-1.5b, smollm2-135m"),
    ({"prices": {"m": {"input_per_mtok": 1}}}, {}, "output_per_mtok is required"),
])
def test_bad_config_says_what_to_fix(table: dict[str, object], env: dict[str, str],
                                     match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_dict(table, env=env)


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[llm\n"), env={})


def test_unknown_role_lookup() -> None:
    with pytest.raises(ConfigError, match="unknown LLM role 'critic'"):
        config_from_dict({}, env={}).role("critic")


def test_extra_roles_allowed() -> None:
    cfg = config_from_dict({"roles": {"critic": {"model": "c", "max_tokens": 10}}}, env={})
    assert cfg.role("critic").model == "c" and cfg.role("critic").max_tokens == 10


def test_streaming_and_the_in_flight_cap() -> None:
    """The embedded model is streamed and capped at its one slot; an endpoint is neither
    unless configured; limits are checked."""
    local = config_from_dict({}, env={})
    assert (local.streamed, local.in_flight_cap) == (True, 1)
    assert (local.silence_timeout, local.first_token_timeout) == (60.0, 120.0)
    remote = config_from_dict({"base_url": "http://127.0.0.1:1/v1", "model": "m"}, env={})
    assert (remote.streamed, remote.in_flight_cap) == (False, 0)
    tuned = config_from_dict({"base_url": "http://127.0.0.1:1/v1", "model": "m",
                              "stream": True, "max_in_flight": 4, "silence_timeout": 5,
                              "first_token_timeout": 30}, env={})
    assert (tuned.streamed, tuned.in_flight_cap, tuned.silence_timeout) == (True, 4, 5.0)
    assert config_from_dict({"stream": False, "max_in_flight": 0}, env={}).streamed is False
    for bad, match in (({"stream": "yes"}, "stream must be true or false"),
                       ({"max_in_flight": -1}, "max_in_flight must be >= 0"),
                       ({"silence_timeout": 0}, "silence_timeout must be >= 0.1")):
        with pytest.raises(ConfigError, match=match):
            config_from_dict(bad, env={})
