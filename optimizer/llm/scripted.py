"""A scripted OpenAI-compatible server: real sockets for the real ``openai`` client.

It serves ``/v1/chat/completions`` (plain and streamed) and ``/v1/models`` on 127.0.0.1 (port 0)
from a thread, answers each chat request with the next scripted ``Reply`` (or a responder's) and
records every request. fnforge's tests and benchmarks use it instead of monkeypatched clients; a
user can test an agent offline with it the same way.

With ``slots`` it behaves like llama-cpp-python's server under load: it generates that many
replies at once and queues the rest; a streamed reply sends its headers at once, then waits for
a slot, "processes the prompt" (``latency`` + ``delay``), emits one piece per ``token_latency``
and stops at the next piece once the client has gone; a plain reply is generated to its end
whether or not anybody still waits for it. ``generations`` records what it did for each request.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Generation", "Reply", "ScriptedLLM", "completion", "error", "json_reply",
           "rate_limited", "server_error", "text", "tool_call"]



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
    stall_after: int = -1              # streamed: fall silent for `stall` s after this many pieces
    stall: float = 0.0


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


@dataclass
class Generation:
    """What the server did for one chat request (for tests of abandoned generations)."""

    number: int                 # the request's number, from 1, as `cue` counts
    stream: bool
    planned: int                # pieces of the full reply
    queued_s: float = 0.0       # waiting for a slot
    tokens: int = 0             # pieces generated
    finished: bool = False      # generated to the end
    client_gone: bool = False   # the client had hung up (a stream stops there; a plain reply
                                # is generated to its end anyway, as llama-cpp-python does)
    ended: float = 0.0          # time.monotonic() when it stopped generating


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
                 responder: Callable[[dict[str, Any]], Reply | None] | None = None,
                 slots: int | None = None, stream_usage: bool = True) -> None:
        """`responder`, when given, answers each request from its body (for conversations run
        concurrently, where a fixed order of replies cannot hold); None falls back to the
        pushed script. `slots`: replies generated at once (None: no limit). `stream_usage`:
        False leaves the usage out of streams even when asked for (llama-cpp-python does)."""
        self.models = models
        self.responder = responder
        self.latency = latency              # added to every chat reply (benchmarks)
        self.token_latency = token_latency  # between generated pieces
        self.slots = slots
        self.stream_usage = stream_usage
        self._slot = threading.BoundedSemaphore(slots) if slots else None
        self.generations: list[Generation] = []
        self.in_flight = 0                  # replies generating now
        self.max_in_flight = 0
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

    def _begin(self, generation: Generation) -> None:
        with self._lock:
            self.generations.append(generation)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _end(self, generation: Generation) -> None:
        generation.ended = time.monotonic()
        with self._lock:
            self.in_flight -= 1

    def _next(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[Reply, int]:
        """The reply to a request, and the request's number (from 1), cut at the request's
        first `stop` sequence as an OpenAI server cuts it."""
        reply, number = self._pick(body, headers)
        stops = body.get("stop") or []
        stops = [stops] if isinstance(stops, str) else stops
        text = reply.text or ""
        cuts = [text.find(s) for s in stops if isinstance(s, str) and s and s in text]
        if cuts:
            reply = replace(reply, text=text[:min(cuts)], finish_reason="stop")
        return reply, number

    def _pick(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[Reply, int]:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            number = len(self.requests)
            cued = self._cues.pop(number, None)
            if cued is not None:
                return cued, number
            if self.responder is not None:
                answer = self.responder(body)
                if answer is not None:
                    return answer, number
            if self._script:
                return self._script.popleft(), number
        return Reply(status=418, error="scripted server: script exhausted"), number

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: with Nagle's algorithm the body
            # waited for the client's delayed ACK, 40 ms on every reply "answered at once".
            disable_nagle_algorithm = True

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
                if path == "/extras/tokenize/count":  # llama-cpp-python's; a word a token here
                    count = len(list(_pieces(json.loads(raw).get("input", ""))))
                    self._send(200, json.dumps({"count": count}).encode())
                    return
                if not path.endswith("/chat/completions"):  # /v1/... or Azure's deployments
                    self._send(404, b'{"error": {"message": "no such path"}}')
                    return
                body = json.loads(raw)
                headers = {k.lower(): v for k, v in self.headers.items()}
                peer = f"{self.client_address[0]}:{self.client_address[1]}"
                reply, number = server._next(body, {**headers, ":path": self.path,
                                                    ":peer": peer})
                if body.get("stream") and reply.status == 200 and not (
                        reply.hang_up or reply.truncate or reply.raw_body is not None):
                    self._stream(body, reply, number)
                    return
                queued = self._take_slot()
                if queued is None:
                    return
                try:
                    time.sleep(server.latency + reply.delay)
                    if reply.status == 200 and reply.raw_body is None and not reply.hang_up:
                        self._generate_whole(reply, number, queued)
                finally:
                    if server._slot is not None:
                        server._slot.release()
                if reply.hang_up or reply.truncate:
                    self._hang_up(reply, body)
                elif reply.raw_body is not None:
                    self._send(reply.status, reply.raw_body, reply.headers)
                elif reply.status != 200:
                    err = {"error": {"message": reply.error, "type": "scripted",
                                     "code": reply.code}}
                    self._send(reply.status, json.dumps(err).encode(), reply.headers)
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

            def _take_slot(self) -> float | None:
                """Wait for a slot (seconds waited), or None if the client left meanwhile."""
                if server._slot is None:
                    return 0.0
                started = time.monotonic()
                while not server._slot.acquire(timeout=0.02):
                    if self._client_gone():
                        return None
                return time.monotonic() - started

            def _client_gone(self) -> bool:
                """The client hung up: its side of the socket reads as closed."""
                try:
                    readable, _, _ = select.select([self.connection], [], [], 0)
                    return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    return True

            def _generate_whole(self, reply: Reply, number: int, queued: float) -> None:
                """A plain reply's generation: it cannot be stopped, the client gone or not."""
                pieces = len(_reply_pieces(reply))
                gen = Generation(number, stream=False, planned=pieces, queued_s=queued)
                server._begin(gen)
                time.sleep(server.token_latency * max(pieces - 1, 0))
                gen.tokens, gen.finished = pieces, True
                gen.client_gone = self._client_gone()
                server._end(gen)

            def _stream(self, body: dict[str, Any], reply: Reply, number: int) -> None:
                """Headers at once, then a slot, the prompt, and one piece per token_latency,
                stopping at the first piece after the client hung up."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.flush()
                self.close_connection = True
                queued = self._take_slot()
                if queued is None:
                    server.generations.append(Generation(number, True, 0, client_gone=True,
                                                         ended=time.monotonic()))
                    return
                pieces = _reply_pieces(reply)
                gen = Generation(number, stream=True, planned=len(pieces), queued_s=queued)
                server._begin(gen)
                try:
                    time.sleep(server.latency + reply.delay)
                    self._emit(body, reply, pieces, gen)
                finally:
                    server._end(gen)
                    if server._slot is not None:
                        server._slot.release()

            def _emit(self, body: dict[str, Any], reply: Reply,
                      pieces: list[dict[str, Any]], gen: Generation) -> None:
                base = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk",
                        "created": int(time.time()), "model": body.get("model")}

                def send(chunk: dict[str, Any]) -> bool:
                    try:
                        self.wfile.write(f"data: {json.dumps({**base, **chunk})}\n\n".encode())
                        self.wfile.flush()
                    except OSError:
                        gen.client_gone = True
                    return not gen.client_gone

                for i, delta in enumerate(pieces):
                    if i:
                        time.sleep(server.token_latency)
                    if i == reply.stall_after:
                        time.sleep(reply.stall)
                    if self._client_gone():
                        gen.client_gone = True
                        return
                    gen.tokens += 1
                    if not send({"choices": [{"index": 0, "delta": delta,
                                              "finish_reason": None}]}):
                        return
                gen.finished = True
                finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
                if not send({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}):
                    return
                if server.stream_usage and (body.get("stream_options") or {}).get(
                        "include_usage"):
                    send({"choices": [], "usage": {
                        "prompt_tokens": reply.prompt_tokens, "completion_tokens": gen.tokens,
                        "total_tokens": reply.prompt_tokens + gen.tokens}})
                with contextlib.suppress(OSError):
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()

        return Handler


def _reply_pieces(reply: Reply) -> list[dict[str, Any]]:
    """The stream deltas of a reply, one per token: its text in words, then each tool call (its
    name first, then its arguments in pieces of 8 characters)."""
    deltas: list[dict[str, Any]] = [{"content": p} for p in _pieces(reply.text or "")]
    for i, (name, args) in enumerate(reply.tool_calls):
        raw = args if isinstance(args, str) else json.dumps(args)
        deltas.append({"tool_calls": [{"index": i, "id": f"call_{i}", "type": "function",
                                       "function": {"name": name, "arguments": ""}}]})
        deltas.extend({"tool_calls": [{"index": i, "function": {"arguments": raw[j:j + 8]}}]}
                      for j in range(0, len(raw), 8))
    return deltas


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
