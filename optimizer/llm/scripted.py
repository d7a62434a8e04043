"""A scripted OpenAI-compatible server: real sockets for the real ``openai`` client.

It serves ``/v1/chat/completions`` (plain and streamed) and ``/v1/models`` on 127.0.0.1 (port 0)
from a thread, answers each chat request with the next scripted ``Reply`` (or a responder's) and
records every request. fnforge's tests and benchmarks use it instead of monkeypatched clients; a
user can test an agent offline with it the same way.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Reply", "ScriptedLLM", "completion", "error", "json_reply", "rate_limited",
           "server_error", "text", "tool_call"]



@dataclass
class Reply:
    """One scripted answer. ``status`` != 200 sends an OpenAI-style error body."""

    status: int = 200
    text: str | None = None
    tool_calls: list[tuple[str, Any]] = field(default_factory=list)  # (name, args or raw str)
    error: str = ""
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0                 # seconds before answering (slow replies, timeouts)
    raw_body: bytes | None = None      # sent as is (malformed JSON responses)
    prompt_tokens: int = 10
    completion_tokens: int = 5
    finish_reason: str | None = None
    hang_up: bool = False              # close the connection without answering (a reset)
    truncate: bool = False             # announce the whole body, send half of it, hang up
    no_choices: bool = False           # a 200 whose choice list is empty


def text(content: str, **kw: Any) -> Reply:
    return Reply(text=content, **kw)


def tool_call(name: str, args: Any, **kw: Any) -> Reply:
    return Reply(tool_calls=[(name, args)], **kw)


def json_reply(obj: Any, **kw: Any) -> Reply:
    """A JSON-mode answer: the object serialized as the message content."""
    return Reply(text=json.dumps(obj), **kw)


def rate_limited(retry_after: float | None = None, **kw: Any) -> Reply:
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
    return Reply(status=429, error="Rate limit reached", code="rate_limit_exceeded",
                 headers=headers, **kw)


def server_error(status: int = 500, **kw: Any) -> Reply:
    return Reply(status=status, error="internal error", **kw)


def error(status: int, message: str, code: str | None = None, **kw: Any) -> Reply:
    return Reply(status=status, error=message, code=code, **kw)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that time out hang up on slow replies; that is expected here."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class ScriptedLLM:
    """The server. ``push`` replies, point a client at ``base_url``, inspect ``requests``."""

    def __init__(self, models: tuple[str, ...] = ("scripted-model",),
                 latency: float = 0.0, token_latency: float = 0.0,
                 responder: Callable[[dict[str, Any]], Reply | None] | None = None) -> None:
        """`responder`, when given, answers each request from its body (for conversations run
        concurrently, where a fixed order of replies cannot hold); None falls back to the
        pushed script."""
        self.models = models
        self.responder = responder
        self.latency = latency              # added to every chat reply (benchmarks)
        self.token_latency = token_latency  # between streamed pieces
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._script: deque[Reply] = deque()
        self._cues: dict[int, Reply] = {}
        self._lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True)

    @property
    def port(self) -> int:
        port: int = self._httpd.server_address[1]
        return port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ScriptedLLM:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()

    def push(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def cue(self, request_number: int, reply: Reply) -> None:
        """The `request_number`-th chat request (from 1, retries included) gets `reply`
        instead of its answer: faults on cue, in the middle of a run."""
        with self._lock:
            self._cues[request_number] = reply

    @property
    def remaining(self) -> int:
        return len(self._script)

    def _next(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            cued = self._cues.pop(len(self.requests), None)
            if cued is not None:
                return cued
            if self.responder is not None:
                answer = self.responder(body)
                if answer is not None:
                    return answer
            if self._script:
                return self._script.popleft()
        return Reply(status=418, error="scripted server: script exhausted")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None,
                      content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    data = {"object": "list", "data": [
                        {"id": m, "object": "model", "owned_by": "scripted", "created": 0}
                        for m in server.models]}
                    self._send(200, json.dumps(data).encode())
                else:
                    self._send(404, b'{"error": {"message": "no such path"}}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                path = self.path.split("?", 1)[0].rstrip("/")
                if not path.endswith("/chat/completions"):  # /v1/... or Azure's deployments
                    self._send(404, b'{"error": {"message": "no such path"}}')
                    return
                body = json.loads(raw)
                headers = {k.lower(): v for k, v in self.headers.items()}
                peer = f"{self.client_address[0]}:{self.client_address[1]}"
                reply = server._next(body, {**headers, ":path": self.path, ":peer": peer})
                time.sleep(server.latency + reply.delay)
                if reply.hang_up or reply.truncate:
                    self._hang_up(reply, body)
                elif reply.raw_body is not None:
                    self._send(reply.status, reply.raw_body, reply.headers)
                elif reply.status != 200:
                    err = {"error": {"message": reply.error, "type": "scripted",
                                     "code": reply.code}}
                    self._send(reply.status, json.dumps(err).encode(), reply.headers)
                elif body.get("stream"):
                    self._stream(body, reply)
                else:
                    answer = completion(body, reply)
                    if reply.no_choices:
                        answer["choices"] = []
                    self._send(200, json.dumps(answer).encode(), reply.headers)

            def _hang_up(self, reply: Reply, body: dict[str, Any]) -> None:
                if reply.truncate:
                    whole = json.dumps(completion(body, reply)).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(whole)))
                    self.end_headers()
                    self.wfile.write(whole[:len(whole) // 2])
                    self.wfile.flush()
                # SO_LINGER 0: closing sends a reset, as a crashed proxy would
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.close_connection = True

            def _stream(self, body: dict[str, Any], reply: Reply) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                base = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk",
                        "created": int(time.time()), "model": body.get("model")}
                for i, piece in enumerate(_pieces(reply.text or "")):
                    if i:
                        time.sleep(server.token_latency)
                    chunk = {**base, "choices": [{"index": 0, "delta": {"content": piece},
                                                  "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                end = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
                self.wfile.flush()
                self.close_connection = True

        return Handler


def _pieces(content: str) -> Iterator[str]:
    """Split text into word-sized pieces, like tokens."""
    start = 0
    for i, ch in enumerate(content):
        if ch == " " and i > start:
            yield content[start:i]
            start = i
    if start < len(content):
        yield content[start:]


def completion(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """A chat.completion object for a reply."""
    calls = [{"id": f"call_{i}", "type": "function",
              "function": {"name": name,
                           "arguments": args if isinstance(args, str) else json.dumps(args)}}
             for i, (name, args) in enumerate(reply.tool_calls)]
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model"),
        "choices": [{"index": 0, "message": message,
                     "finish_reason": reply.finish_reason or ("tool_calls" if calls else "stop")}],
        "usage": {"prompt_tokens": reply.prompt_tokens,
                  "completion_tokens": reply.completion_tokens,
                  "total_tokens": reply.prompt_tokens + reply.completion_tokens},
    }
