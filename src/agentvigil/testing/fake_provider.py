"""A local fake LLM provider: one stdlib HTTP server on 127.0.0.1 that speaks the OpenAI and Anthropic wire formats.

It exists so that the real ``openai`` and ``anthropic`` client libraries (and LangChain, CrewAI, ... on top of them)
can be exercised end to end without a network, an API key or a mock of the SDK:

* OpenAI: ``POST /v1/chat/completions`` (JSON, or SSE when ``stream=true``; the usage chunk is sent only when the
  request asks for it with ``stream_options.include_usage``, as the real API does), ``POST /v1/responses`` (JSON or
  the typed SSE event stream ending in ``response.completed``), ``POST /v1/embeddings`` (float or base64).
* Anthropic: ``POST /v1/messages`` (JSON, or SSE ``message_start`` ... ``message_delta`` ... ``message_stop``).
* Errors in each provider's JSON error shape with any status (429 + ``retry-after``, 401, 400, 500, 529 ...), slow
  responses (``delay_s``) for client timeouts, and streams that fail half-way.

Replies are scripted per request with :class:`Reply` objects (a FIFO queue; ``default`` answers when it is empty).
Token counts in a :class:`Reply` are provider neutral: ``input_tokens`` is the whole prompt *including* cached
tokens. The Anthropic renderer subtracts ``cache_read_tokens`` and ``cache_write_tokens`` to produce Anthropic's
``input_tokens`` (which excludes them); the OpenAI renderer reports ``cache_read_tokens`` as
``prompt_tokens_details.cached_tokens`` and ignores ``cache_write_tokens`` (OpenAI does not report writes).

From another process (docs examples, benchmarks) run ``python -m agentvigil.testing.fake_provider --port 8787``
and script it with ``POST /_fake/enqueue`` (a JSON list of :class:`Reply` fields). Only loopback addresses are
served.
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

from agentvigil.testing import wire_gemini
from agentvigil.testing.reply import Reply
from agentvigil.testing.reply import sse as _sse
from agentvigil.testing.reply import words as _words
from agentvigil.testing.wire_anthropic import _anthropic_error, _anthropic_message, _anthropic_stream

__all__ = ["FakeProvider", "RecordedRequest", "Reply"]

_OPENAI_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout", None),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_error", None),
}

@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and bool(self.body.get("stream"))



class _Counter:
    def __init__(self) -> None:
        self._n = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._n += 1
            return self._n


# --------------------------------------------------------------------------------------------------- OpenAI ----


def _openai_error(reply: Reply) -> dict[str, Any]:
    etype, code = _OPENAI_ERROR_TYPES.get(reply.status, ("server_error" if reply.status >= 500 else
                                                         "invalid_request_error", None))
    return {"error": {"message": reply.error_message or f"fake provider error {reply.status}",
                      "type": reply.error_type or etype, "param": None, "code": code}}


def _openai_usage(reply: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.input_tokens + reply.output_tokens,
        "prompt_tokens_details": {"cached_tokens": reply.cache_read_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reply.reasoning_tokens, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


def _openai_tool_calls(reply: Reply, n: int) -> list[dict[str, Any]]:
    return [{"id": f"call_fake_{n}_{i}", "type": "function",
             "function": {"name": tc["name"], "arguments": _arguments_text(tc)}}
            for i, tc in enumerate(reply.tool_calls)]


def _arguments_text(tool_call: dict[str, Any]) -> str:
    """The arguments as the model writes them: JSON, or a string given as is (a model's malformed JSON)."""
    arguments = tool_call.get("arguments", {})
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def _openai_chat(reply: Reply, body: dict[str, Any], n: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text if not reply.tool_calls else
                               (reply.text or None), "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = _openai_tool_calls(reply, n)
    return {
        "id": f"chatcmpl-fake-{n}", "object": "chat.completion", "created": int(time.time()),
        "model": reply.model or body.get("model", "fake-model"),
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")}],
        "usage": _openai_usage(reply), "service_tier": "default", "system_fingerprint": "fp_fake",
    }


def _openai_chat_stream(reply: Reply, body: dict[str, Any], n: int) -> Iterator[bytes]:
    include_usage = reply.stream_usage
    if include_usage is None:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    base = {"id": f"chatcmpl-fake-{n}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": reply.model or body.get("model", "fake-model"), "system_fingerprint": "fp_fake",
            "service_tier": "default"}
    extra = {"usage": None} if include_usage else {}
    n_requested = body.get("n")
    choices: int = n_requested if isinstance(n_requested, int) and 1 <= n_requested <= 8 else 1

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        # with n > 1 the choices interleave, one chunk per choice, as the real API sends them
        return b"".join(_sse({**base, "choices": [{"index": i, "delta": delta, "logprobs": None,
                                                   "finish_reason": finish}], **extra}) for i in range(choices))

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for i, piece in enumerate(_words(reply.text)):
        if reply.fail_after_chunks is not None and i >= reply.fail_after_chunks:
            yield _sse({"error": {"message": reply.error_message or "The server had an error while processing "
                                  "your request.", "type": "server_error", "param": None, "code": None}})
            return
        yield chunk({"content": piece})
    for i, tc in enumerate(_openai_tool_calls(reply, n)):
        yield chunk({"tool_calls": [{"index": i, **tc}]})
    yield chunk({}, reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop"))
    if include_usage:
        yield _sse({**base, "choices": [], "usage": _openai_usage(reply)})
    yield _sse("[DONE]")


def _responses_usage(reply: Reply) -> dict[str, Any]:
    return {"input_tokens": reply.input_tokens, "input_tokens_details": {"cached_tokens": reply.cache_read_tokens},
            "output_tokens": reply.output_tokens,
            "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
            "total_tokens": reply.input_tokens + reply.output_tokens}


def _responses_output(reply: Reply, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if reply.text:
        out.append({"type": "message", "id": f"msg_fake_{n}", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}]})
    for i, tc in enumerate(reply.tool_calls):
        out.append({"type": "function_call", "id": f"fc_fake_{n}_{i}", "call_id": f"call_fake_{n}_{i}",
                    "name": tc["name"], "arguments": _arguments_text(tc), "status": "completed"})
    return out


def _responses_obj(reply: Reply, body: dict[str, Any], n: int, *, done: bool) -> dict[str, Any]:
    return {
        "id": f"resp_fake_{n}", "object": "response", "created_at": int(time.time()),
        "status": "completed" if done else "in_progress", "model": reply.model or body.get("model", "fake-model"),
        "output": _responses_output(reply, n) if done else [], "usage": _responses_usage(reply) if done else None,
        "error": None, "incomplete_details": None, "instructions": None, "metadata": {},
        "parallel_tool_calls": True, "temperature": 1.0, "top_p": 1.0, "tool_choice": "auto", "tools": [],
        "text": {"format": {"type": "text"}}, "truncation": "disabled", "service_tier": "default",
    }


def _responses_stream(reply: Reply, body: dict[str, Any], n: int) -> Iterator[bytes]:
    seq = iter(range(1_000_000))

    def ev(kind: str, **data: Any) -> bytes:
        return _sse({"type": kind, "sequence_number": next(seq), **data}, event=kind)

    yield ev("response.created", response=_responses_obj(reply, body, n, done=False))
    yield ev("response.in_progress", response=_responses_obj(reply, body, n, done=False))
    item_id = f"msg_fake_{n}"
    if reply.text:
        yield ev("response.output_item.added", output_index=0,
                 item={"type": "message", "id": item_id, "status": "in_progress", "role": "assistant",
                       "content": []})
        yield ev("response.content_part.added", item_id=item_id, output_index=0, content_index=0,
                 part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})
        for i, piece in enumerate(_words(reply.text)):
            if reply.fail_after_chunks is not None and i >= reply.fail_after_chunks:
                yield ev("error", code="server_error", message=reply.error_message or "stream failed", param=None)
                return
            yield ev("response.output_text.delta", item_id=item_id, output_index=0, content_index=0, delta=piece,
                     logprobs=[])
        yield ev("response.output_text.done", item_id=item_id, output_index=0, content_index=0, text=reply.text,
                 logprobs=[])
        part = {"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}
        yield ev("response.content_part.done", item_id=item_id, output_index=0, content_index=0, part=part)
        yield ev("response.output_item.done", output_index=0,
                 item={"type": "message", "id": item_id, "status": "completed", "role": "assistant",
                       "content": [part]})
    final = _responses_obj(reply, body, n, done=True)
    if reply.stream_usage is False:
        final["usage"] = None
    yield ev("response.completed", response=final)


def _embeddings(reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
    inputs = body.get("input")
    count = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
    b64 = body.get("encoding_format") == "base64"
    data = []
    for i in range(count):
        vec = [round(0.01 * (i + 1) * (j + 1), 4) for j in range(int(body.get("dimensions") or reply.dimensions))]
        emb: Any = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode() if b64 else vec
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return {"object": "list", "data": data, "model": reply.model or body.get("model", "fake-embedding"),
            "usage": {"prompt_tokens": reply.input_tokens, "total_tokens": reply.input_tokens}}


# ------------------------------------------------------------------------------------------------ Anthropic ----



class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def setup(self) -> None:
        super().setup()
        try:  # one write per response plus no Nagle: no 40 ms delayed-ACK stalls on loopback
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    # -- plumbing
    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('Error',))[0]}",
                 "Content-Type: application/json", f"Content-Length: {len(data)}",
                 "request-id: req_fake", "x-request-id: req_fake"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        self.wfile.flush()

    def _send_sse(self, events: Iterator[bytes], reply: Reply) -> None:
        head = ["HTTP/1.1 200 OK", "Content-Type: text/event-stream", "Cache-Control: no-cache",
                "Transfer-Encoding: chunked", "request-id: req_fake", "x-request-id: req_fake"]
        head += [f"{k}: {v}" for k, v in reply.headers.items()]
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode())
        for i, event in enumerate(events):
            if reply.chunk_delay_s and i:
                if self.server.stopping.wait(reply.chunk_delay_s):
                    return
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")

    # -- routes
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if self.path in ("/", "/health", "/_fake/health"):
            self._send_json(200, {"ok": True, "requests": len(self.server.provider.requests)})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        provider = self.server.provider
        body = self._read_body()
        path = self.path.split("?", 1)[0]
        if path == "/_fake/enqueue":
            items = body if isinstance(body, list) else [body]
            provider.enqueue(*(Reply.from_dict(item) for item in items if isinstance(item, dict)))
            self._send_json(200, {"queued": len(provider._queue)})
            return
        if path == "/_fake/reset":
            provider.reset()
            self._send_json(200, {"ok": True})
            return
        provider._record(RecordedRequest("POST", path, {k.lower(): v for k, v in self.headers.items()}, body))
        body = body if isinstance(body, dict) else {}
        reply = provider._next_reply()
        n = provider._ids.next()
        is_anthropic = path.endswith("/messages")
        if reply.delay_s and self.server.stopping.wait(reply.delay_s):
            return
        if path.startswith("/model/"):   # the AWS Bedrock runtime wire format
            from agentvigil.testing import wire_bedrock

            wire_bedrock.handle(self, reply, body, path, n)
            return
        if wire_gemini.handles(path):  # the Gemini API: its own module
            wire_gemini.respond(self, path, body, reply, n)
            return
        try:
            if reply.status >= 400:
                err = _anthropic_error(reply) if is_anthropic else _openai_error(reply)
                self._send_json(reply.status, err, reply.headers)
                return
            stream = bool(body.get("stream"))
            if path.endswith("/chat/completions"):
                if stream:
                    self._send_sse(_openai_chat_stream(reply, body, n), reply)
                else:
                    self._send_json(200, _openai_chat(reply, body, n), reply.headers)
            elif path.endswith("/responses"):
                if stream:
                    self._send_sse(_responses_stream(reply, body, n), reply)
                else:
                    self._send_json(200, _responses_obj(reply, body, n, done=True), reply.headers)
            elif path.endswith("/embeddings"):
                self._send_json(200, _embeddings(reply, body), reply.headers)
            elif is_anthropic:
                if stream:
                    self._send_sse(_anthropic_stream(reply, body, n), reply)
                else:
                    self._send_json(200, _anthropic_message(reply, body, n), reply.headers)
            else:
                self._send_json(404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}})
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test): fine
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    provider: "FakeProvider"
    stopping: threading.Event

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # clients that time out or drop keep-alive connections are expected, not errors
        super().handle_error(request, client_address)


class FakeProvider:
    """A scriptable OpenAI + Anthropic compatible server on ``127.0.0.1`` (port 0 picks a free port).

    >>> with FakeProvider() as fake:
    ...     fake.enqueue(Reply(text="hi", input_tokens=1200, cache_read_tokens=1000, output_tokens=80))
    ...     client = openai.OpenAI(base_url=fake.openai_base_url, api_key="test")
    """

    def __init__(self, port: int = 0, *, host: str = "127.0.0.1", default: Reply | None = None) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the fake provider only listens on loopback")
        self.host = host
        self._port = port
        self.default = default or Reply()
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._ids = _Counter()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> "FakeProvider":
        if self._server is not None:
            return self
        server = _Server((self.host, self._port), _Handler)
        server.provider = self
        server.stopping = threading.Event()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="agentvigil-fake-provider", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeProvider":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeProvider is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``base_url`` for ``openai.OpenAI`` (includes ``/v1``)."""
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """``base_url`` for ``anthropic.Anthropic`` (the SDK adds ``/v1/messages``)."""
        return self.url

    # -- scripting
    def enqueue(self, *replies: Reply) -> None:
        """Queue replies; each request takes the next one, then falls back to ``default``."""
        with self._lock:
            self._queue.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.requests.clear()

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m agentvigil.testing.fake_provider",
                                     description="Local fake OpenAI + Anthropic server for demos and tests.")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--text", default=Reply.text)
    parser.add_argument("--input-tokens", type=int, default=Reply.input_tokens)
    parser.add_argument("--output-tokens", type=int, default=Reply.output_tokens)
    parser.add_argument("--cache-read-tokens", type=int, default=0)
    args = parser.parse_args(argv)
    fake = FakeProvider(args.port, default=Reply(text=args.text, input_tokens=args.input_tokens,
                                                 output_tokens=args.output_tokens,
                                                 cache_read_tokens=args.cache_read_tokens))
    fake.start()
    print(f"fake provider on {fake.url}  (OpenAI base_url {fake.openai_base_url}, "
          f"Anthropic base_url {fake.anthropic_base_url}); Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
