"""Record/replay cache of chat completions, one JSON file per request.

Reruns of an evaluation cost nothing, and a recorded training run can be replayed exactly (mode
``replay`` never calls the endpoint) for a security review. The key is the sha256 of the canonical
JSON of everything that shapes the answer: model, messages, tools and sampling parameters.
Files hold the request and the response, never credentials (the client never passes them here).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..errors import CacheMiss

__all__ = ["KEY_FIELDS", "CacheMode", "ResponseCache", "request_key"]


# Request fields that change the answer; transport details (timeouts, headers) do not.
KEY_FIELDS: tuple[str, ...] = (
    "model", "messages", "tools", "tool_choice", "response_format", "temperature", "top_p",
    "max_tokens", "seed", "stop", "n", "presence_penalty", "frequency_penalty",
)


class CacheMode(StrEnum):
    OFF = "off"
    RECORD = "record"    # answer hits from the cache, call the endpoint on a miss and store it
    REPLAY = "replay"    # answer only from the cache; a miss is an error, the endpoint is not used


def request_key(request: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the answer-shaping fields of a request."""
    subset = {k: request[k] for k in KEY_FIELDS if request.get(k) is not None}
    canonical = json.dumps(subset, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """A directory of ``<key[:2]>/<key>.json`` files."""

    def __init__(self, directory: str | Path, mode: CacheMode | str = CacheMode.RECORD) -> None:
        self.directory = Path(directory).expanduser()
        self.mode = CacheMode(mode)
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.directory)!r}, mode={self.mode.value!r})"

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, request: Mapping[str, Any]) -> dict[str, Any] | None:
        """The recorded response, None on a miss (CacheMiss instead in replay mode)."""
        if self.mode is CacheMode.OFF:
            return None
        key = request_key(request)
        path = self._path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.misses += 1
            if self.mode is CacheMode.REPLAY:
                raise CacheMiss(
                    f"replay mode: no recorded response for request {key[:16]} "
                    f"(model {request.get('model')!r}) in {self.directory}; record it first "
                    "with cache mode 'record', or turn replay off (FNFORGE_LLM_CACHE=off)"
                ) from None
            return None
        except (OSError, ValueError) as exc:
            raise CacheMiss(f"cache entry {path} is unreadable ({exc}); delete it") from None
        self.hits += 1
        response = entry.get("response")
        if not isinstance(response, dict):
            raise CacheMiss(f"cache entry {path} has no response object; delete it")
        return response

    def put(self, request: Mapping[str, Any], response: Mapping[str, Any]) -> Path | None:
        """Store a response atomically (record mode only)."""
        if self.mode is not CacheMode.RECORD:
            return None
        key = request_key(request)
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "key": key,
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "request": {k: request[k] for k in KEY_FIELDS if request.get(k) is not None},
            "response": dict(response),
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(entry, fh, ensure_ascii=False, indent=1, sort_keys=True, default=str)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
