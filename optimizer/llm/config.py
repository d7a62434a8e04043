"""LLM configuration: one TOML file (the ``[llm]`` table) plus environment variables.

Secrets come from the environment only; a config file that holds one is refused, so config files
can be committed, copied into run records and shown in reviews without leaking anything.

Where the model comes from (``provider = "auto"``, the default), first match wins:
  1. an Azure endpoint (``AZURE_OPENAI_ENDPOINT`` or ``llm.azure_endpoint``) -> Azure OpenAI;
  2. a base URL (``OPENAI_BASE_URL`` or ``llm.base_url``) -> any OpenAI-compatible server;
  3. ``OPENAI_API_KEY`` set -> api.openai.com;
  4. nothing configured -> the embedded local model (see ``optimizer.llm.local``).
Environment variables override the file.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from sandbox import cache_dir

from ..errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "DEFAULT_OPENAI_MODEL",
    "LOCAL_MODELS",
    "LOCAL_SLOTS",
    "ROLES",
    "CacheConfig",
    "LLMConfig",
    "LocalConfig",
    "Price",
    "RoleConfig",
    "config_from_dict",
    "find_config_file",
    "load_config",
    "resolve_llm_config",
]


ROLES: tuple[str, ...] = ("assistant", "optimizer")
Provider = Literal["openai", "azure", "local"]
Structured = Literal["auto", "tools", "json"]
CacheModeName = Literal["off", "record", "replay"]

DEFAULT_CONFIG_NAME = "fnforge.toml"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
LOCAL_MODELS: tuple[str, ...] = ("qwen2.5-coder-1.5b", "smollm2-135m")
LOCAL_SLOTS = 1  # requests llama-cpp-python's server generates at once (it has no slots)

# Key names that would hold a secret; a config file must never carry one.
_SECRET_KEY = re.compile(r"(^|_)(api_?key|key|token|secret|password|passwd|bearer)$", re.I)
# Values that look like a key whatever the field is called (OpenAI, Anthropic, bearer-ish blobs).
_SECRET_VALUE = re.compile(r"^(sk-|sk_|az-|Bearer\s)\S{8,}$")


@dataclass(frozen=True)
class RoleConfig:
    """The model one role talks to, and its default sampling."""

    model: str
    temperature: float | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class Price:
    """USD per million tokens, for cost accounting."""

    input_per_mtok: float
    output_per_mtok: float


@dataclass(frozen=True)
class LocalConfig:
    """The embedded llama.cpp server used when no endpoint is configured."""

    model: str = "qwen2.5-coder-1.5b"
    port: int = 8765
    n_ctx: int = 8192
    threads: int = 2  # generating (measured, README "LLM": 12.7 tokens/s quiet, 3.7 beside
    # two CPU hogs; with 1 thread 7.5 and 8.1: on a machine busy with other work, use 1)
    threads_batch: int = 2  # reading the prompt
    startup_timeout: float = 180.0


@dataclass(frozen=True)
class CacheConfig:
    mode: CacheModeName = "off"
    dir: Path = field(default_factory=lambda: cache_dir() / "llm-responses")


@dataclass(frozen=True)
class LLMConfig:
    """Everything the client needs except the key, which stays in the environment."""

    provider: Provider
    roles: Mapping[str, RoleConfig]
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    azure_endpoint: str | None = None
    api_version: str | None = None
    timeout: float = 120.0
    max_retries: int = 4
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    structured: Structured = "auto"
    prices: Mapping[str, Price] = field(default_factory=dict)
    cache: CacheConfig = field(default_factory=CacheConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    # Streaming (the embedded model's default): a request is given up only when the server
    # falls silent, never for a fixed total, and closing the stream stops its generation.
    stream: bool | None = None          # None: streamed for the embedded model only
    max_in_flight: int | None = None    # None: the embedded server's slots; 0: no cap
    silence_timeout: float = 60.0       # streamed: seconds without a token, once one came
    first_token_timeout: float = 120.0  # streamed: seconds to the first token, plus the
    # prompt's own share (see client.PROMPT_CHARS_PER_S)

    @property
    def streamed(self) -> bool:
        """Whether chat requests are streamed (the embedded model unless configured)."""
        return self.provider == "local" if self.stream is None else self.stream

    @property
    def in_flight_cap(self) -> int:
        """Requests in flight to the endpoint at most (0: no cap): the embedded server answers
        LOCAL_SLOTS at a time, and a request queued inside it would look like a slow one."""
        if self.max_in_flight is not None:
            return self.max_in_flight
        return LOCAL_SLOTS if self.provider == "local" else 0

    def role(self, name: str) -> RoleConfig:
        try:
            return self.roles[name]
        except KeyError:
            raise ConfigError(
                f"unknown LLM role {name!r}; configured roles: {', '.join(sorted(self.roles))}"
            ) from None

    def api_key(self) -> str | None:
        """The key from the environment, read at the moment of use (never stored here)."""
        value = os.environ.get(self.api_key_env, "").strip()
        return value or None


_TOP_KEYS = {"provider", "model", "base_url", "api_key_env", "azure_endpoint", "api_version",
             "deployment", "timeout", "max_retries", "backoff_base", "backoff_max", "structured",
             "roles", "prices", "cache", "local", "stream", "max_in_flight", "silence_timeout",
             "first_token_timeout"}
_ROLE_KEYS = {"model", "temperature", "max_tokens"}
_PRICE_KEYS = {"input_per_mtok", "output_per_mtok"}
_CACHE_KEYS = {"mode", "dir"}
_LOCAL_KEYS = {"model", "port", "n_ctx", "threads", "threads_batch", "startup_timeout"}


def find_config_file(env: Mapping[str, str] | None = None) -> Path | None:
    """``$FNFORGE_CONFIG`` if set (it must exist), else ``./fnforge.toml`` if present."""
    env = os.environ if env is None else env
    named = env.get("FNFORGE_CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"FNFORGE_CONFIG names {path}, which is not a file")
        return path
    default = Path(DEFAULT_CONFIG_NAME)
    return default if default.is_file() else None


def load_config(path: str | Path | None = None,
                env: Mapping[str, str] | None = None) -> LLMConfig:
    """Read the ``[llm]`` table of a TOML file (other tables are left to their owners)."""
    env = os.environ if env is None else env
    file = Path(path).expanduser() if path is not None else find_config_file(env)
    table: dict[str, Any] = {}
    where = "defaults"
    if file is not None:
        where = str(file)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
        _reject_secrets(data, where, "")
        raw = data.get("llm", {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: [llm] must be a table")
        table = raw
    return config_from_dict(table, env=env, where=where)


def config_from_dict(table: Mapping[str, Any], env: Mapping[str, str] | None = None,
                     where: str = "config") -> LLMConfig:
    """Build an LLMConfig from the ``[llm]`` table's contents and the environment."""
    env = os.environ if env is None else env
    _reject_secrets(table, where, "llm")
    _check_keys(table, _TOP_KEYS, where, "llm")

    def env_or(name: str, key: str) -> str | None:
        value = env.get(name, "").strip() or _opt_str(table, key, where, "llm")
        return value or None

    azure_endpoint = env_or("AZURE_OPENAI_ENDPOINT", "azure_endpoint")
    base_url = env_or("OPENAI_BASE_URL", "base_url")
    api_version = env_or("OPENAI_API_VERSION", "api_version")
    deployment = env_or("AZURE_OPENAI_DEPLOYMENT", "deployment")
    api_key_env = _opt_str(table, "api_key_env", where, "llm") or (
        "AZURE_OPENAI_API_KEY" if azure_endpoint else "OPENAI_API_KEY")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", api_key_env):
        raise ConfigError(f"{where}: llm.api_key_env must name an environment variable, "
                          "not hold the key itself")

    provider_raw = env.get("FNFORGE_LLM_PROVIDER", "").strip() or _opt_str(
        table, "provider", where, "llm") or "auto"
    if provider_raw not in ("auto", "openai", "azure", "local"):
        raise ConfigError(f"{where}: llm.provider must be auto, openai, azure or local, "
                          f"not {provider_raw!r}")
    provider: Provider
    if provider_raw == "auto":
        if azure_endpoint:
            provider = "azure"
        elif base_url or env.get(api_key_env, "").strip():
            provider = "openai"
        else:
            provider = "local"
    else:
        provider = provider_raw  # type: ignore[assignment]

    if provider == "azure":
        if not azure_endpoint:
            raise ConfigError("provider azure needs an endpoint: set AZURE_OPENAI_ENDPOINT "
                              f"or llm.azure_endpoint in {where}")
        if not api_version:
            raise ConfigError("Azure OpenAI needs an API version: set OPENAI_API_VERSION "
                              f"or llm.api_version in {where} (e.g. 2024-10-21)")
    if provider == "openai" and not base_url and not env.get(api_key_env, "").strip():
        raise ConfigError(f"provider openai (api.openai.com) needs a key: set {api_key_env} in "
                          "the environment, or set OPENAI_BASE_URL for another endpoint")

    local = _local(table.get("local", {}), where)
    roles = _roles(table.get("roles", {}), env, where, provider, deployment, local,
                   official=provider == "openai" and not base_url,
                   default_model=_opt_str(table, "model", where, "llm"))
    structured = _opt_str(table, "structured", where, "llm") or "auto"
    if structured not in ("auto", "tools", "json"):
        raise ConfigError(f"{where}: llm.structured must be auto, tools or json")

    return LLMConfig(
        provider=provider,
        roles=roles,
        base_url=base_url if provider == "openai" else None,
        api_key_env=api_key_env,
        azure_endpoint=azure_endpoint if provider == "azure" else None,
        api_version=api_version,
        timeout=_num(table, "timeout", 120.0, where, "llm", minimum=0.1),
        max_retries=int(_num(table, "max_retries", 4, where, "llm", minimum=0, integer=True)),
        backoff_base=_num(table, "backoff_base", 1.0, where, "llm", minimum=0.0),
        backoff_max=_num(table, "backoff_max", 30.0, where, "llm", minimum=0.0),
        structured=structured,  # type: ignore[arg-type]
        stream=_opt_bool(table, "stream", where, "llm"),
        max_in_flight=(None if table.get("max_in_flight") is None else int(
            _num(table, "max_in_flight", None, where, "llm", minimum=0, integer=True))),
        silence_timeout=_num(table, "silence_timeout", LLMConfig.silence_timeout, where, "llm",
                             minimum=0.1),
        first_token_timeout=_num(table, "first_token_timeout", LLMConfig.first_token_timeout,
                                 where, "llm", minimum=0.1),
        prices=_prices(table.get("prices", {}), where),
        cache=_cache(table.get("cache", {}), env, where),
        local=local,
    )


def _roles(raw: Any, env: Mapping[str, str], where: str, provider: Provider,
           deployment: str | None, local: LocalConfig,
           official: bool, default_model: str | None) -> dict[str, RoleConfig]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: llm.roles must be a table of [llm.roles.NAME] tables")
    names = list(ROLES) + [n for n in raw if n not in ROLES]
    roles: dict[str, RoleConfig] = {}
    for name in names:
        sub = raw.get(name, {})
        path = f"llm.roles.{name}"
        if not isinstance(sub, dict):
            raise ConfigError(f"{where}: {path} must be a table")
        _check_keys(sub, _ROLE_KEYS, where, path)
        model = (env.get(f"FNFORGE_{name.upper()}_MODEL", "").strip()
                 or _opt_str(sub, "model", where, path) or default_model)
        if not model:
            if provider == "local":
                model = local.model
            elif provider == "azure" and deployment:
                model = deployment
            elif official:
                model = DEFAULT_OPENAI_MODEL
            else:
                hint = ("set AZURE_OPENAI_DEPLOYMENT or " if provider == "azure" else "")
                raise ConfigError(f"no model for role {name!r}: {hint}set llm.model or "
                                  f"{path}.model in {where}, or FNFORGE_{name.upper()}_MODEL")
        temperature = sub.get("temperature")
        if temperature is not None and not isinstance(temperature, int | float):
            raise ConfigError(f"{where}: {path}.temperature must be a number")
        max_tokens = sub.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens <= 0):
            raise ConfigError(f"{where}: {path}.max_tokens must be a positive integer")
        roles[name] = RoleConfig(model=model,
                                 temperature=None if temperature is None else float(temperature),
                                 max_tokens=max_tokens)
    return roles


def _prices(raw: Any, where: str) -> dict[str, Price]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: llm.prices must be a table of [llm.prices.\"MODEL\"] tables")
    prices = {}
    for model, sub in raw.items():
        path = f'llm.prices."{model}"'
        if not isinstance(sub, dict):
            raise ConfigError(f"{where}: {path} must be a table")
        _check_keys(sub, _PRICE_KEYS, where, path)
        prices[model] = Price(
            input_per_mtok=_num(sub, "input_per_mtok", None, where, path, minimum=0.0),
            output_per_mtok=_num(sub, "output_per_mtok", None, where, path, minimum=0.0))
    return prices


def _cache(raw: Any, env: Mapping[str, str], where: str) -> CacheConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: llm.cache must be a table")
    _check_keys(raw, _CACHE_KEYS, where, "llm.cache")
    mode = env.get("FNFORGE_LLM_CACHE", "").strip() or _opt_str(raw, "mode", where,
                                                                 "llm.cache") or "off"
    if mode not in ("off", "record", "replay"):
        raise ConfigError(f"llm.cache.mode (or FNFORGE_LLM_CACHE) must be off, record or replay, "
                          f"not {mode!r}")
    directory = env.get("FNFORGE_LLM_CACHE_DIR", "").strip() or _opt_str(raw, "dir", where,
                                                                         "llm.cache")
    if directory:
        return CacheConfig(mode=mode, dir=Path(directory).expanduser())  # type: ignore[arg-type]
    return CacheConfig(mode=mode)  # type: ignore[arg-type]


def _local(raw: Any, where: str) -> LocalConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: llm.local must be a table")
    _check_keys(raw, _LOCAL_KEYS, where, "llm.local")
    model = _opt_str(raw, "model", where, "llm.local") or LocalConfig.model
    if model not in LOCAL_MODELS:
        raise ConfigError(f"{where}: llm.local.model must be one of {', '.join(LOCAL_MODELS)}, "
                          f"not {model!r}")
    return LocalConfig(
        model=model,
        port=int(_num(raw, "port", LocalConfig.port, where, "llm.local", minimum=0,
                      integer=True)),
        n_ctx=int(_num(raw, "n_ctx", LocalConfig.n_ctx, where, "llm.local", minimum=256,
                       integer=True)),
        threads=int(_num(raw, "threads", LocalConfig.threads, where, "llm.local", minimum=1,
                         integer=True)),
        threads_batch=int(_num(raw, "threads_batch", LocalConfig.threads_batch, where,
                               "llm.local", minimum=1, integer=True)),
        startup_timeout=_num(raw, "startup_timeout", LocalConfig.startup_timeout, where,
                             "llm.local", minimum=1.0),
    )


def _reject_secrets(node: Any, where: str, path: str) -> None:
    """Refuse any key-like field or key-like value anywhere in the file."""
    if isinstance(node, dict):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else str(key)
            if _SECRET_KEY.search(str(key)) and key != "api_key_env":
                raise ConfigError(
                    f"{where}: {sub} looks like a secret; a config file never holds keys. "
                    "Remove it and export the key in the environment instead "
                    "(OPENAI_API_KEY, or AZURE_OPENAI_API_KEY for Azure).")
            _reject_secrets(value, where, sub)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _reject_secrets(value, where, f"{path}[{i}]")
    elif isinstance(node, str) and _SECRET_VALUE.match(node.strip()):
        raise ConfigError(f"{where}: the value of {path} looks like an API key; a config file "
                          "never holds keys. Remove it and set it in the environment instead.")


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str, path: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) in [{path}]: {', '.join(unknown)}; "
                          f"allowed: {', '.join(sorted(allowed))}")


def _opt_str(table: Mapping[str, Any], key: str, where: str, path: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {path}.{key} must be a string")
    return value.strip() or None


def _opt_bool(table: Mapping[str, Any], key: str, where: str, path: str) -> bool | None:
    value = table.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise ConfigError(f"{where}: {path}.{key} must be true or false, not {value!r}")


def _num(table: Mapping[str, Any], key: str, default: float | None, where: str, path: str,
         minimum: float, integer: bool = False) -> float:
    value = table.get(key, default)
    if value is None:
        raise ConfigError(f"{where}: {path}.{key} is required")
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{where}: {path}.{key} must be {kind}, not {value!r}")
    if value < minimum:
        raise ConfigError(f"{where}: {path}.{key} must be >= {minimum}, not {value!r}")
    return float(value)


def resolve_llm_config(llm_config: Any, model: str | None = None,
                       env: Mapping[str, str] | None = None) -> tuple[LLMConfig, str | None]:
    """(config, a key handed over in code) from whatever a caller passes as `llm_config`:
    None (fnforge.toml or the environment), an LLMConfig, a loaded fnforge.toml (a dict with an
    "llm" table, or that table itself), or AutoGen's `{"config_list": [{"model", "base_url",
    "api_key", "api_type", "api_version"}, ...]}`. `model`, when given, must be served by that
    config: it becomes the optimizer's model, or picks the config_list entry whose "model" it is.
    """
    key: str | None = None
    autogen = isinstance(llm_config, Mapping) and "config_list" in llm_config
    if llm_config is None:
        config = load_config(env=env)
    elif isinstance(llm_config, LLMConfig):
        config = llm_config
    elif autogen:
        config, key = _from_autogen(llm_config, model, env)
    elif isinstance(llm_config, Mapping):
        table = llm_config.get("llm", llm_config)
        if not isinstance(table, Mapping):
            raise ConfigError("llm_config: its 'llm' entry must be a table")
        config = config_from_dict(table, env=env, where="llm_config")
    else:
        raise ConfigError(f"llm_config must be None, an LLMConfig, a loaded fnforge.toml or "
                          f"AutoGen's {{'config_list': [...]}}, not {type(llm_config).__name__}")
    if model is not None and not autogen:
        roles = dict(config.roles)
        roles["optimizer"] = RoleConfig(model=model,
                                        temperature=roles["optimizer"].temperature,
                                        max_tokens=roles["optimizer"].max_tokens)
        config = replace(config, roles=roles)
    return config, key


def _from_autogen(llm_config: Mapping[str, Any], model: str | None,
                  env: Mapping[str, str] | None) -> tuple[LLMConfig, str | None]:
    entries = llm_config["config_list"]
    if not isinstance(entries, list) or not entries or not all(
            isinstance(e, Mapping) and isinstance(e.get("model"), str) for e in entries):
        raise ConfigError("llm_config['config_list'] must be a non-empty list of entries, each "
                          "with a 'model'")
    chosen = entries[0] if model is None else next(
        (e for e in entries if e["model"] == model), None)
    if chosen is None:
        served = ", ".join(sorted({str(e["model"]) for e in entries}))
        raise ConfigError(f"no entry of llm_config['config_list'] serves model {model!r} "
                          f"(it has: {served}); pass optimizer_model= one of those, or add an "
                          "entry for it")
    unknown = set(chosen) - {"model", "base_url", "api_key", "api_type", "api_version",
                             "azure_endpoint", "price", "tags"}
    if unknown:
        raise ConfigError(f"llm_config config_list entry for {chosen['model']!r} has keys "
                          f"fnforge does not know: {', '.join(sorted(unknown))}")
    api_type = str(chosen.get("api_type") or "openai")
    table: dict[str, Any] = {"model": chosen["model"]}
    if api_type == "azure":
        table.update(provider="azure",
                     azure_endpoint=chosen.get("azure_endpoint") or chosen.get("base_url"),
                     api_version=chosen.get("api_version"), deployment=chosen["model"])
    elif api_type == "openai":
        table["provider"] = "openai"
        if chosen.get("base_url"):
            table["base_url"] = chosen["base_url"]
    else:
        raise ConfigError(f"llm_config api_type {api_type!r} is not supported; use 'openai' "
                          "(any OpenAI-compatible endpoint) or 'azure'")
    key = chosen.get("api_key")
    if key is not None and not isinstance(key, str):
        raise ConfigError("llm_config config_list api_key must be a string")
    quiet_env = dict(os.environ if env is None else env)
    if key:  # the key comes with the entry: the environment's must not decide the provider
        quiet_env.setdefault("OPENAI_API_KEY", "set-in-code")
    for name in ("OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT", "FNFORGE_LLM_PROVIDER",
                 "FNFORGE_OPTIMIZER_MODEL", "FNFORGE_ASSISTANT_MODEL"):
        quiet_env.pop(name, None)  # the entry says where: the environment may not redirect it
    config = config_from_dict(table, env=quiet_env, where="llm_config['config_list']")
    return config, key or None
