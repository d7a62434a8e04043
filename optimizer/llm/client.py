"""The one client wrapper over the official ``openai`` package (OpenAI and Azure OpenAI clients).

Why a wrapper: every call in fnforge must get the same timeouts, bounded retries, usage/cost
accounting per role and per run, record/replay caching and plain-spoken errors, and no call may
leak the API key. The key is read from the environment when the client is built, handed to the
``openai`` client and otherwise only used to scrub text; it is in no repr, log line, exception
or cache record.

The embedded model's server generates one reply at a time and, asked for a whole reply, goes on
generating it after its client gave up. So requests to it are streamed (``LLMConfig.streamed``):
no more are in flight than it has slots (a wait for a slot is nobody's failure), and a request
is given up only when the server falls silent (no token for ``silence_timeout`` s, or none yet
after ``first_token_timeout`` s plus the prompt's share) or the caller's deadline passes; giving
up closes the stream, and the server stops generating at its next token. Other endpoints keep
whole replies with a fixed timeout and the same retries. The usage report counts what was
wasted: tokens generated against tokens used, requests abandoned, and retries sent while the
server may still have been working on the previous attempt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import json
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
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
from .serve import render

__all__ = ["ChatResult", "DeadlineExceeded", "LLMClient", "ToolCall", "Usage", "safe_url"]

log = logging.getLogger("fnforge.llm")

# Limits of streamed requests (the config holds the ones a user tunes).
PROMPT_CHARS_PER_S = 40.0   # slowest prompt processing waited for before a first token: about
                            # 10 tokens/s, the 1.5B model on 2 busy cores
CONNECT_TIMEOUT_S = 10.0
WATCH_TICK_S = 1.0          # a stream's watchdog re-reads the clock at least this often

_KEYLIKE = re.compile(r"(sk-[A-Za-z0-9_\-*.]{6,}|Bearer\s+[A-Za-z0-9_\-.=]{6,})")
_CONTEXT_RE = re.compile(
    r"context[ _](length|window)|maximum context|too many tokens|prompt is too long|"
    r"exceeds? (the )?(model'?s? )?(max|context)", re.I)
_MODEL_RE = re.compile(
    r"model[^.]{0,80}(not found|does not exist|not exist|unknown|no such)|"
    r"(unknown|invalid) model|no such model|deployment[^.]{0,80}(not found|does not exist)", re.I)


class DeadlineExceeded(LLMRequestError):
    """The caller's time budget (an episode's) ran out before the reply came: the request's own
    failure (HTTP 408, like a client timeout), not the endpoint's, so a run goes on."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 408)


@dataclass
class Waste:
    """What one call cost beyond its reply (kept per call, then added to the usage)."""

    queue_wait_s: float = 0.0          # waiting for a free slot of the server
    tokens_generated: int = 0          # completion tokens the server produced, every attempt
    abandoned: int = 0                 # attempts given up before the server finished them
    left_running: int = 0              # of those, ones the server could not be told to stop
    retried_while_generating: int = 0  # retries sent while it may still have been working


@dataclass
class Usage:
    """Token accounting; cached calls are counted apart because they cost nothing."""

    calls: int = 0
    cached_calls: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0  # tokens of the replies returned: the tokens used
    cost_usd: float | None = None
    queue_wait_s: float = 0.0
    tokens_generated: int = 0
    abandoned: int = 0
    left_running: int = 0
    retried_while_generating: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def generated_per_used(self) -> float | None:
        """Tokens generated per token used (1.0: nothing wasted; None: none used yet)."""
        if not self.completion_tokens:
            return None
        return round(self.tokens_generated / self.completion_tokens, 4)

    def add_waste(self, waste: Waste) -> None:
        self.queue_wait_s = round(self.queue_wait_s + waste.queue_wait_s, 3)
        self.tokens_generated += waste.tokens_generated
        self.abandoned += waste.abandoned
        self.left_running += waste.left_running
        self.retried_while_generating += waste.retried_while_generating

    def add(self, prompt: int, completion: int, cost: float | None, retries: int) -> None:
        self.calls += 1
        self.retries += retries
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        if cost is not None:
            self.cost_usd = (self.cost_usd or 0.0) + cost

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_tokens": self.total_tokens,
                "generated_per_used": self.generated_per_used}


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
    queue_wait_s: float = 0.0  # of latency_s, waiting for a free slot of the server

    def assistant_message(self) -> dict[str, Any]:
        """This reply as a message to append to the conversation. Its content is a string
        even beside tool calls: llama-cpp-python's server refuses a null content (OpenAI takes
        either)."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.text or ""}
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
        self._lock = threading.Lock()  # conversations on several threads share the counts

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
             stop: Sequence[str] | None = None, deadline: float | None = None) -> ChatResult:
        """One chat completion for ``role``; retried, accounted, cached per the config.

        ``deadline`` (a ``time.monotonic()`` value, e.g. an episode's end) bounds the whole
        call, waits for a slot and retries included: past it the request is given up (the
        server stops generating a streamed one) and DeadlineExceeded is raised.
        """
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
        waste = Waste()
        try:
            data, attempts = self._create(request, deadline, waste)
        finally:
            with self._lock:
                self._usage(role).add_waste(waste)
                self.run_usage.add_waste(waste)
        if self.cache is not None:
            self.cache.put(request, data)
        result = dataclasses.replace(
            self._result(data, role, request["model"], cached=False, attempts=attempts,
                         latency=time.monotonic() - started),
            queue_wait_s=round(waste.queue_wait_s, 3))
        with self._lock:
            for usage in (self._usage(role), self.run_usage):
                usage.add(result.prompt_tokens, result.completion_tokens, result.cost_usd,
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
        waste = Waste()
        with self._slot(None, waste, request):
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
                waste.tokens_generated = pieces
                cost = self._cost(request["model"], 0, pieces)
                with self._lock:
                    for usage in (self._usage(role), self.run_usage):
                        usage.add(0, pieces, cost, 0)
                        usage.add_waste(waste)

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

    def _first_token_budget(self, request: Mapping[str, Any]) -> float:
        """Seconds a streamed request may wait for its first token: the configured wait plus
        the prompt's processing at the slowest rate we wait for."""
        chars = len(json.dumps(request.get("messages", []))) + len(
            json.dumps(request.get("tools") or []))
        return self.config.first_token_timeout + chars / PROMPT_CHARS_PER_S

    @contextlib.contextmanager
    def _slot(self, deadline: float | None, waste: Waste,
              request: Mapping[str, Any]) -> Iterator[None]:
        """Hold one of the server's slots (config.in_flight_cap) for one attempt: a request
        waits here, not in the server's queue, where its wait would look like a slow server."""
        cap = self.config.in_flight_cap
        if cap <= 0:
            yield
            return
        slots = _server_slots(self._endpoint, cap)
        started = time.monotonic()
        got = slots.acquire(timeout=None if deadline is None else max(0.0, deadline - started))
        waste.queue_wait_s += time.monotonic() - started
        if not got:
            raise DeadlineExceeded(
                f"the time budget ran out while request for model {request['model']!r} waited "
                f"for a free slot of {self._endpoint} ({cap} at a time)")
        try:
            yield
        finally:
            slots.release()

    def _check_deadline(self, deadline: float | None, request: Mapping[str, Any]) -> None:
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded(f"the time budget ran out before model {request['model']!r}"
                                   f" at {self._endpoint} answered")

    def _create(self, request: dict[str, Any], deadline: float | None,
                waste: Waste) -> tuple[dict[str, Any], int]:
        """The reply (whole, or streamed when ``config.streamed``) and the attempts it took: 429,
        5xx, connection failures, broken answers and timeouts (for streams: silence) are
        retried with bounded backoff, each attempt in a slot of the server."""
        client = self._connect()
        once = self._stream_once if self.config.streamed else self._whole_once
        attempts = self.config.max_retries + 1
        last = ""
        for attempt in range(1, attempts + 1):
            self._check_deadline(deadline, request)
            with self._slot(deadline, waste, request):
                try:
                    return once(client, request, deadline, waste), attempt
                except _AttemptFailed as failed:
                    last, retry_after, busy = failed.why, failed.retry_after, failed.busy
            self._check_deadline(deadline, request)
            if attempt == attempts:
                break
            if busy:
                waste.retried_while_generating += 1
            self._retry_pause(attempt, attempts, last, retry_after)
        raise self._unavailable(attempts, request, last)

    def _whole_once(self, client: openai.OpenAI, request: dict[str, Any],
                    deadline: float | None, waste: Waste) -> dict[str, Any]:
        """One attempt at a whole reply, or _AttemptFailed; a deadline shortens the wait."""
        timeout = self.config.timeout
        wait = timeout if deadline is None else min(timeout, deadline - time.monotonic())
        try:
            response = client.chat.completions.create(**request, timeout=max(wait, 0.01))
            data: dict[str, Any] = response.model_dump(mode="json", exclude_none=True)
        except openai.APIStatusError as exc:
            raise self._status_failure(exc, request) from None
        except openai.APITimeoutError:
            # the server may go on generating a whole reply nobody waits for
            waste.abandoned += 1
            waste.left_running += 1
            self._check_deadline(deadline, request)
            raise _AttemptFailed(f"no answer within {wait:g} s (timeout)", busy=True) from None
        except openai.APIConnectionError as exc:
            raise _AttemptFailed(
                f"connection failed: {self.redact(str(exc.__cause__ or exc))}") from None
        except ValueError as exc:  # a 200 whose body is not JSON (proxies, broken servers)
            raise _AttemptFailed(f"malformed response ({type(exc).__name__}: "
                                 f"{self.redact(str(exc))[:200]})") from None
        waste.tokens_generated += int((data.get("usage") or {}).get("completion_tokens") or 0)
        if not data.get("choices"):
            raise _AttemptFailed("an answer with no choices")  # overloaded proxies do this
        return data

    def _status_failure(self, exc: openai.APIStatusError,
                        request: Mapping[str, Any]) -> _AttemptFailed | LLMError:
        """An HTTP error as a failed attempt to retry (429 but for quota, 5xx) or the error
        to raise."""
        code = _error_code(exc)
        if (exc.status_code == 429 and code != "insufficient_quota") or exc.status_code >= 500:
            return _AttemptFailed(f"HTTP {exc.status_code}: {self.redact(_error_message(exc))}",
                                  _retry_after(exc.response.headers))
        return self._translate(exc, request)

    def _stream_once(self, client: openai.OpenAI, request: dict[str, Any],
                     deadline: float | None, waste: Waste) -> dict[str, Any]:
        """One streamed attempt: the reply as a chat.completion dict, or _AttemptFailed."""
        watch = _Watch(self._first_token_budget(request), self.config.silence_timeout,
                       deadline)
        # The socket's read timeout is a backstop (it is also what bounds the wait for the
        # headers); the watchdog gives up on time once they came.
        read = watch.first_s + watch.silence_s
        if deadline is not None:
            read = min(read, max(deadline - time.monotonic(), 0.01))
        timeout = httpx.Timeout(read, connect=CONNECT_TIMEOUT_S)
        try:
            stream = client.chat.completions.create(
                **request, stream=True, stream_options={"include_usage": True},
                timeout=timeout)
        except openai.APIStatusError as exc:
            raise self._status_failure(exc, request) from None
        except openai.APITimeoutError:
            waste.abandoned += 1
            self._check_deadline(deadline, request)
            raise _AttemptFailed(f"no response within {read:.0f} s (timeout)",
                                 busy=True) from None
        except openai.APIConnectionError as exc:
            raise _AttemptFailed(
                f"connection failed: {self.redact(str(exc.__cause__ or exc))}") from None
        reply = _Reply()
        broken = ""
        watch.start(stream.response)
        try:
            for chunk in stream:
                if reply.add(chunk):
                    watch.token()
                if deadline is not None and watch.gave_up is None and (
                        time.monotonic() >= deadline and reply.finish_reason is None):
                    watch.gave_up = "deadline"  # also without a watchdog (no socket to shut)
                    break
        except (httpx.HTTPError, openai.APIError, ValueError) as exc:
            broken = self.redact(str(exc) or type(exc).__name__)[:200]
        finally:
            watch.stop()
            stream.close()  # the server sees the client gone and stops at its next token
        waste.tokens_generated += reply.tokens
        if reply.finish_reason is not None and not broken:
            if reply.usage is None and self.config.provider == "local":
                reply.usage = {"prompt_tokens": self._local_prompt_tokens(client, request),
                               "completion_tokens": reply.tokens}
            return reply.completion(request["model"])
        if watch.gave_up is not None:
            waste.abandoned += 1
            if watch.gave_up == "deadline":
                raise DeadlineExceeded(
                    f"the time budget ran out while model {request['model']!r} at "
                    f"{self._endpoint} was answering ({reply.tokens} tokens so far); the "
                    "request was given up and its generation stopped")
            if watch.gave_up == "first token":
                raise _AttemptFailed(f"no first token within {watch.first_s:.0f} s",
                                     busy=True)
            raise _AttemptFailed(f"no token for {watch.silence_s:g} s after {reply.tokens}")
        if broken:
            raise _AttemptFailed(f"the stream broke after {reply.tokens} tokens ({broken})")
        raise _AttemptFailed(f"the stream ended after {reply.tokens} tokens without finishing "
                             "(the server interrupted it)")

    def _local_prompt_tokens(self, client: openai.OpenAI, request: Mapping[str, Any]) -> int:
        """The prompt's tokens as the embedded server counts them, for a stream that ended
        without usage (fnforge's handler sends it; llama-cpp-python's own handlers do not): its
        tokenizer counts the prompt as the server lays it out (serve.render). 0 if it cannot
        say."""
        root = str(client.base_url).rstrip("/").removesuffix("/v1")
        prompt = render(request.get("messages", []), request.get("tools") or [])
        try:
            response = httpx.post(f"{root}/extras/tokenize/count", json={"input": prompt},
                                  timeout=CONNECT_TIMEOUT_S)
            return int(response.json()["count"]) if response.status_code == 200 else 0
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return 0

    def _retry_pause(self, attempt: int, attempts: int, last: str,
                     retry_after: float | None) -> None:
        delay = self._delay(attempt, retry_after)
        log.warning("llm call to %s failed (%s); retry %d/%d in %.1fs", self._endpoint, last,
                    attempt, attempts - 1, delay)
        self._sleep(delay)

    def _unavailable(self, attempts: int, request: Mapping[str, Any],
                     last: str) -> EndpointUnavailable:
        hint = (" Is the local model server up? Try `make llm`."
                if self.config.provider == "local" else " Check the endpoint and try later.")
        return EndpointUnavailable(
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


_SLOTS_LOCK = threading.Lock()
_SLOTS: dict[str, threading.BoundedSemaphore] = {}


def _server_slots(endpoint: str, cap: int) -> threading.BoundedSemaphore:
    """The one semaphore of a server in this process, whichever client asks (the first cap
    asked for stays)."""
    with _SLOTS_LOCK:
        if endpoint not in _SLOTS:
            _SLOTS[endpoint] = threading.BoundedSemaphore(cap)
        return _SLOTS[endpoint]


class _AttemptFailed(Exception):
    """A streamed attempt failed in a way worth retrying. ``busy``: the server may still have
    been working on it (no first token yet), so a retry queues behind that work."""

    def __init__(self, why: str, retry_after: float | None = None, busy: bool = False) -> None:
        super().__init__(why)
        self.why, self.retry_after, self.busy = why, retry_after, busy


class _Watch:
    """Gives up on a stream from beside it: when the first token is late, the server has been
    silent too long, or the deadline passed, it shuts the stream's socket. The reader then sees
    the stream end, and the server sees its client gone and stops generating."""

    def __init__(self, first_s: float, silence_s: float, deadline: float | None) -> None:
        self.first_s, self.silence_s, self.deadline = first_s, silence_s, deadline
        self.started = time.monotonic()
        self.last: float | None = None
        self.gave_up: str | None = None  # "first token" | "silence" | "deadline"
        self._done = threading.Event()
        self._socket: socket.socket | None = None

    def token(self) -> None:
        self.last = time.monotonic()

    def start(self, response: httpx.Response) -> None:
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            self._socket = sock
            threading.Thread(target=self._run, daemon=True, name="fnforge-llm-watch").start()

    def stop(self) -> None:
        self._done.set()

    def _due(self) -> tuple[float, str]:
        when, why = ((self.started + self.first_s, "first token") if self.last is None
                     else (self.last + self.silence_s, "silence"))
        if self.deadline is not None and self.deadline <= when:
            return self.deadline, "deadline"
        return when, why

    def _run(self) -> None:
        while not self._done.is_set():
            when, why = self._due()
            left = when - time.monotonic()
            if left <= 0:
                self.gave_up = why
                with contextlib.suppress(OSError):
                    assert self._socket is not None
                    self._socket.shutdown(socket.SHUT_RDWR)
                return
            self._done.wait(min(left, WATCH_TICK_S))


class _Reply:
    """A streamed reply put back together: text, tool calls from their deltas, usage."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.finish_reason: str | None = None
        self.tokens = 0
        self.usage: dict[str, int] | None = None

    def add(self, chunk: Any) -> bool:
        """Take one chunk; True if it carried a token (llama.cpp sends one token a chunk)."""
        token = False
        if getattr(chunk, "usage", None) is not None:
            self.usage = {"prompt_tokens": int(chunk.usage.prompt_tokens or 0),
                          "completion_tokens": int(chunk.usage.completion_tokens or 0)}
        for choice in chunk.choices or []:
            if choice.index:
                continue
            delta = choice.delta
            if delta is not None and delta.content:
                self.text.append(delta.content)
                token = True
            for call in (delta.tool_calls if delta is not None else None) or []:
                # llama-cpp-python repeats the id and name in every delta; OpenAI sends them once
                entry = self.calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] = entry["id"] or (call.id or "")
                fn = call.function
                if fn is not None:
                    entry["name"] = entry["name"] or (fn.name or "")
                    entry["arguments"] += fn.arguments or ""
                    token = token or bool(fn.name or fn.arguments)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        self.tokens += token
        return token

    def completion(self, model: str) -> dict[str, Any]:
        """As the whole chat.completion object a plain request returns."""
        message: dict[str, Any] = {"role": "assistant",
                                   "content": "".join(self.text) if self.text or not self.calls
                                   else None}
        if self.calls:
            message["tool_calls"] = [
                {"id": c["id"] or f"call_{i}", "type": "function",
                 "function": {"name": c["name"], "arguments": c["arguments"]}}
                for i, c in sorted(self.calls.items())]
        usage = self.usage or {"prompt_tokens": 0, "completion_tokens": self.tokens}
        return {"object": "chat.completion", "model": model,
                "choices": [{"index": 0, "message": message,
                             "finish_reason": self.finish_reason}],
                "usage": {**usage, "total_tokens": usage["prompt_tokens"]
                          + usage["completion_tokens"]}}


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
