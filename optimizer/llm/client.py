"""The one client wrapper over the official ``openai`` package (OpenAI and Azure OpenAI clients).

Why a wrapper: every call in fnforge must get the same timeouts, bounded retries, usage/cost
accounting per role and per run, record/replay caching and plain-spoken errors, and no call may
leak the API key. The key is read from the environment when the client is built, handed to the
``openai`` client and otherwise only used to scrub text; it is in no repr, log line, exception
or cache record.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai

from ..errors import (
    ConfigError,
    ContextTooLong,
    EndpointUnavailable,
    KeyRejected,
    LLMError,
    LLMRequestError,
    ModelNotFound,
)
from .cache import CacheMode, ResponseCache
from .config import LLMConfig, RoleConfig

__all__ = ["ChatResult", "LLMClient", "ToolCall", "Usage", "safe_url"]

log = logging.getLogger("fnforge.llm")

_KEYLIKE = re.compile(r"(sk-[A-Za-z0-9_\-*.]{6,}|Bearer\s+[A-Za-z0-9_\-.=]{6,})")
_CONTEXT_RE = re.compile(
    r"context[ _](length|window)|maximum context|too many tokens|prompt is too long|"
    r"exceeds? (the )?(model'?s? )?(max|context)", re.I)
_MODEL_RE = re.compile(
    r"model[^.]{0,80}(not found|does not exist|not exist|unknown|no such)|"
    r"(unknown|invalid) model|no such model|deployment[^.]{0,80}(not found|does not exist)", re.I)


@dataclass
class Usage:
    """Token accounting; cached calls are counted apart because they cost nothing."""

    calls: int = 0
    cached_calls: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, prompt: int, completion: int, cost: float | None, retries: int) -> None:
        self.calls += 1
        self.retries += retries
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        if cost is not None:
            self.cost_usd = (self.cost_usd or 0.0) + cost

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_tokens": self.total_tokens}


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # raw JSON text as the model produced it; parsing is the caller's business


@dataclass(frozen=True)
class ChatResult:
    text: str | None
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str | None
    model: str
    role: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    cached: bool
    attempts: int
    latency_s: float
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)

    def assistant_message(self) -> dict[str, Any]:
        """This reply as a message to append to the conversation."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            msg["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls]
        return msg


def safe_url(url: str | None) -> str:
    """A URL with any user:password part removed, for messages."""
    if not url:
        return "api.openai.com"
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class LLMClient:
    """Chat completions for named roles (``assistant``, ``optimizer``) with the config's policy."""

    def __init__(self, config: LLMConfig, *, cache: ResponseCache | None = None,
                 use_config_cache: bool = True, base_url: str | None = None,
                 api_key: str | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """`api_key` is for keys handed over in code (an AutoGen config_list); otherwise the key
        is read from the environment variable the config names. Either way it is kept only to
        authenticate and to scrub text: it is in no repr, log, record or container."""
        self.config = config
        self._given_key = api_key
        if cache is None and use_config_cache and config.cache.mode != "off":
            cache = ResponseCache(config.cache.dir, CacheMode(config.cache.mode))
        self.cache = cache
        self._base_url_override = base_url
        self._sleep = sleep
        self._client: openai.OpenAI | None = None
        self._secrets: tuple[str, ...] = ()
        self._endpoint = "(not connected)"
        self.tools_unsupported = False  # set when the endpoint refused a tools request
        self.usage_by_role: dict[str, Usage] = {}
        self.run_usage = Usage()

    def __repr__(self) -> str:
        return (f"LLMClient(provider={self.config.provider!r}, endpoint={self._endpoint!r}, "
                f"roles={ {k: v.model for k, v in self.config.roles.items()} })")

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # ---- connection -------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        self._connect()
        return self._endpoint

    def _connect(self) -> openai.OpenAI:
        """Build the openai client on first use (the local server may need starting)."""
        if self._client is not None:
            return self._client
        cfg = self.config
        key = self._given_key or cfg.api_key()
        self._secrets = (key,) if key else ()
        if cfg.provider == "azure":
            if not key:
                raise ConfigError(f"Azure OpenAI needs a key: export {cfg.api_key_env}")
            self._endpoint = safe_url(cfg.azure_endpoint)
            self._client = openai.AzureOpenAI(
                api_key=key, azure_endpoint=cfg.azure_endpoint or "",
                api_version=cfg.api_version, timeout=cfg.timeout, max_retries=0)
            return self._client
        base_url = self._base_url_override or cfg.base_url
        if cfg.provider == "local" and base_url is None:
            from .local import ensure_server  # lazy: tests and remote users never need it

            base_url = ensure_server(cfg.local).base_url
        self._endpoint = safe_url(base_url)
        self._client = openai.OpenAI(
            api_key=key or "no-key-needed", base_url=base_url, timeout=cfg.timeout,
            max_retries=0)
        return self._client

    def worker_settings(self) -> tuple[LLMConfig, str | None]:
        """(config, base URL) for a client of the same endpoint in another process (the Ray
        backend's nodes, which read the key from their own environment). The embedded
        model's server is resolved here, so every node talks to the one the driver started."""
        base_url = self._base_url_override or self.config.base_url
        if self.config.provider == "local" and base_url is None:
            from .local import ensure_server

            base_url = ensure_server(self.config.local).base_url
        return self.config, base_url

    def redact(self, text: str) -> str:
        """Remove the key (and anything key-shaped) from text bound for a log or an error."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _KEYLIKE.sub("***", text)

    # ---- calls ------------------------------------------------------------------------------

    def request_for(self, role: str, messages: Sequence[Mapping[str, Any]], *,
                    tools: Sequence[Mapping[str, Any]] | None = None,
                    tool_choice: Any = None, response_format: Mapping[str, Any] | None = None,
                    temperature: float | None = None, max_tokens: int | None = None,
                    seed: int | None = None, stop: Sequence[str] | None = None,
                    ) -> dict[str, Any]:
        """The request body a chat call would send (also the cache key's input)."""
        rc: RoleConfig = self.config.role(role)
        request: dict[str, Any] = {"model": rc.model, "messages": [dict(m) for m in messages]}
        optional: dict[str, Any] = {
            "tools": [dict(t) for t in tools] if tools else None,
            "tool_choice": tool_choice if tools else None,
            "response_format": dict(response_format) if response_format else None,
            "temperature": temperature if temperature is not None else rc.temperature,
            "max_tokens": max_tokens if max_tokens is not None else rc.max_tokens,
            "seed": seed,
            "stop": list(stop) if stop else None,
        }
        request.update({k: v for k, v in optional.items() if v is not None})
        return request

    def chat(self, role: str, messages: Sequence[Mapping[str, Any]], *,
             tools: Sequence[Mapping[str, Any]] | None = None, tool_choice: Any = None,
             response_format: Mapping[str, Any] | None = None, temperature: float | None = None,
             max_tokens: int | None = None, seed: int | None = None,
             stop: Sequence[str] | None = None) -> ChatResult:
        """One chat completion for ``role``; retried, accounted, cached per the config."""
        request = self.request_for(role, messages, tools=tools, tool_choice=tool_choice,
                                   response_format=response_format, temperature=temperature,
                                   max_tokens=max_tokens, seed=seed, stop=stop)
        started = time.monotonic()
        if self.cache is not None:
            hit = self.cache.get(request)  # raises CacheMiss in replay mode
            if hit is not None:
                self._usage(role).cached_calls += 1
                self.run_usage.cached_calls += 1
                log.debug("llm %s: cache hit for %s", role, request["model"])
                return self._result(hit, role, request["model"], cached=True, attempts=0,
                                    latency=time.monotonic() - started)
        data, attempts = self._create(request)
        if self.cache is not None:
            self.cache.put(request, data)
        result = self._result(data, role, request["model"], cached=False, attempts=attempts,
                              latency=time.monotonic() - started)
        self._usage(role).add(result.prompt_tokens, result.completion_tokens, result.cost_usd,
                              attempts - 1)
        self.run_usage.add(result.prompt_tokens, result.completion_tokens, result.cost_usd,
                           attempts - 1)
        log.debug("llm %s: %s, %d+%d tokens, %.2fs, %d attempt(s)", role, request["model"],
                  result.prompt_tokens, result.completion_tokens, result.latency_s, attempts)
        return result

    def stream_text(self, role: str, messages: Sequence[Mapping[str, Any]], *,
                    max_tokens: int | None = None,
                    temperature: float | None = None) -> Iterator[str]:
        """Yield content pieces as they arrive (benchmarks: time to first token).

        Not cached, not retried; the call is counted with one piece per completion token,
        which is exact for llama.cpp's server and close elsewhere.
        """
        request = self.request_for(role, messages, max_tokens=max_tokens,
                                   temperature=temperature)
        client = self._connect()
        error: LLMError | None = None
        try:
            stream = client.chat.completions.create(**request, stream=True)
        except openai.APIError as exc:
            error = self._translate(exc, request)
        if error is not None:
            raise error
        pieces = 0
        try:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces += 1
                    yield chunk.choices[0].delta.content
        finally:
            stream.close()
            cost = self._cost(request["model"], 0, pieces)
            self._usage(role).add(0, pieces, cost, 0)
            self.run_usage.add(0, pieces, cost, 0)

    def list_models(self) -> list[str]:
        """Model ids the endpoint serves ([] if it cannot say)."""
        client = self._connect()
        try:
            return sorted(m.id for m in client.models.list(timeout=10.0))
        except (openai.APIError, ValueError, TypeError):
            return []

    def usage_report(self) -> dict[str, Any]:
        """Per-role and per-run usage, ready for a run record."""
        return {"run": self.run_usage.as_dict(),
                "roles": {r: u.as_dict() for r, u in sorted(self.usage_by_role.items())}}

    # ---- internals --------------------------------------------------------------------------

    def _usage(self, role: str) -> Usage:
        return self.usage_by_role.setdefault(role, Usage())

    def _cost(self, model: str, prompt: int, completion: int) -> float | None:
        price = self.config.prices.get(model)
        if price is None:
            return None
        return (prompt * price.input_per_mtok + completion * price.output_per_mtok) / 1e6

    def _create(self, request: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Call the endpoint, retrying 429/5xx/connection failures with bounded backoff."""
        client = self._connect()
        attempts = self.config.max_retries + 1
        last = ""
        for attempt in range(1, attempts + 1):
            error: LLMError | None = None
            retry_after: float | None = None
            try:
                response = client.chat.completions.create(**request)
                data: dict[str, Any] = response.model_dump(mode="json", exclude_none=True)
                if data.get("choices"):
                    return data, attempt
                last = "an answer with no choices"  # overloaded proxies do this; try again
            except openai.APIStatusError as exc:
                code = _error_code(exc)
                if (exc.status_code == 429 and code != "insufficient_quota") or (
                        exc.status_code >= 500):
                    last = f"HTTP {exc.status_code}: {self.redact(_error_message(exc))}"
                    retry_after = _retry_after(exc.response.headers)
                else:
                    error = self._translate(exc, request)
            except openai.APITimeoutError:
                last = f"no answer within {self.config.timeout:g} s (timeout)"
            except openai.APIConnectionError as exc:
                last = f"connection failed: {self.redact(str(exc.__cause__ or exc))}"
            except ValueError as exc:  # a 200 whose body is not JSON (proxies, broken servers)
                last = f"malformed response ({type(exc).__name__}: {self.redact(str(exc))[:200]})"
            if error is not None:
                raise error
            if attempt == attempts:
                break
            delay = self._delay(attempt, retry_after)
            log.warning("llm call to %s failed (%s); retry %d/%d in %.1fs", self._endpoint, last,
                        attempt, attempts - 1, delay)
            self._sleep(delay)
        hint = (" Is the local model server up? Try `make llm`."
                if self.config.provider == "local" else " Check the endpoint and try later.")
        raise EndpointUnavailable(
            f"{self._endpoint} failed {attempts} time(s) for model {request['model']!r}; "
            f"last error: {last}.{hint}")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        cap = self.config.backoff_max
        if retry_after is not None:
            return max(0.0, min(retry_after, cap))
        base: float = min(self.config.backoff_base * 2 ** (attempt - 1), cap)
        return base / 2 + random.uniform(0, base / 2)

    def _translate(self, exc: openai.APIError, request: Mapping[str, Any]) -> LLMError:
        """Turn an openai exception into one of ours, scrubbed, saying what to do."""
        model = request.get("model")
        where = self._endpoint
        if not isinstance(exc, openai.APIStatusError):
            return EndpointUnavailable(f"{where}: {self.redact(str(exc))}")
        status = exc.status_code
        message = self.redact(_error_message(exc))
        code = _error_code(exc) or ""
        if status in (401, 403):
            what = "rejected the API key" if status == 401 else "refused the API key's access"
            return KeyRejected(
                f"{where} {what} (HTTP {status}) read from ${self.config.api_key_env}: "
                f"{message}. Check the key is current and meant for this endpoint "
                f"(and, for 403, allowed to use model {model!r}); keys come from the "
                "environment only.")
        if code == "context_length_exceeded" or (status in (400, 413, 422)
                                                  and _CONTEXT_RE.search(message)):
            local = (" or raise llm.local.n_ctx" if self.config.provider == "local" else "")
            chars = sum(len(str(m.get("content") or "")) for m in request.get("messages", []))
            return ContextTooLong(
                f"the prompt ({len(request.get('messages', []))} messages, {chars} characters) "
                f"is too long for model {model!r} at {where}: {message}. Shorten the "
                f"conversation or the function library in the prompt{local}.")
        if code in ("model_not_found", "DeploymentNotFound") or (
                status in (400, 404) and _MODEL_RE.search(message)) or (
                status == 404 and "model" in message.lower()):
            available = self.list_models()
            listing = (f" The endpoint serves: {', '.join(available[:20])}." if available
                       else "")
            return ModelNotFound(
                f"model {model!r} is not served by {where} (HTTP {status}): {message}."
                f"{listing} Set the model for this role in fnforge.toml "
                "([llm.roles.NAME] model) or FNFORGE_<ROLE>_MODEL"
                + (" (on Azure: the deployment name)." if self.config.provider == "azure"
                   else "."))
        if code == "insufficient_quota":
            return LLMRequestError(f"{where}: quota exhausted (HTTP 429 insufficient_quota): "
                                   f"{message}. Check the account's billing.", status)
        if status == 404:
            return LLMRequestError(
                f"{where} answered HTTP 404 for chat completions: {message}. Check the base "
                "URL (OpenAI-compatible servers usually end in /v1).", status)
        return LLMRequestError(f"{where} refused the request for model {model!r} "
                               f"(HTTP {status}): {message}", status)

    def _result(self, data: Mapping[str, Any], role: str, model: str, *, cached: bool,
                attempts: int, latency: float) -> ChatResult:
        choices = data.get("choices") or []
        if not choices:
            raise LLMRequestError(f"{self._endpoint} returned no choices for model {model!r}")
        choice = choices[0]
        message = choice.get("message") or {}
        calls: list[ToolCall] = []
        for raw in message.get("tool_calls") or []:
            fn = raw.get("function") or {}
            args = fn.get("arguments")
            calls.append(ToolCall(id=str(raw.get("id") or f"call_{len(calls)}"),
                                  name=str(fn.get("name") or ""),
                                  arguments=args if isinstance(args, str) else json.dumps(args)))
        usage = data.get("usage") or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        return ChatResult(
            text=message.get("content"), tool_calls=tuple(calls),
            finish_reason=choice.get("finish_reason"), model=model, role=role,
            prompt_tokens=prompt, completion_tokens=completion,
            cost_usd=self._cost(model, prompt, completion), cached=cached, attempts=attempts,
            latency_s=latency, raw=data)


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
        return json.dumps(body)[:500]
    if isinstance(body, str) and body:
        return body[:500]
    return exc.response.reason_phrase or f"HTTP {exc.status_code}"


def _error_code(exc: openai.APIStatusError) -> str | None:
    code = getattr(exc, "code", None)
    if code:
        return str(code)
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("code"):
            return str(inner["code"])
    return None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from Retry-After (seconds or HTTP date) or retry-after-ms, if given."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
