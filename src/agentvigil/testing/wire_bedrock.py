"""The AWS Bedrock runtime wire format for the fake provider, so a real ``boto3`` ``bedrock-runtime`` client can
be exercised end to end on 127.0.0.1:

* ``POST /model/{modelId}/converse``: REST JSON (``output.message``, ``stopReason``, ``usage``).
* ``POST /model/{modelId}/converse-stream``: ``application/vnd.amazon.eventstream`` binary frames (prelude,
  headers, payload, CRC32s) with ``messageStart``, ``contentBlockStart``/``Delta``/``Stop``, ``messageStop`` and
  ``metadata`` (usage); a mid-stream failure is an exception frame (``modelStreamErrorException``).
* ``POST /model/{modelId}/invoke``: the model's own body: Anthropic Messages for ``anthropic.*`` models or an
  ``anthropic_version`` body, Amazon Nova, Titan text and Titan embeddings; anything else a body without usage.
  Token counts also go in the ``x-amzn-bedrock-*-token-count`` headers, as Bedrock sends them for every model.
* ``POST /model/{modelId}/invoke-with-response-stream``: ``chunk`` events whose ``bytes`` are the Anthropic
  stream events (the last one with ``amazon-bedrock-invocationMetrics``).
* Errors: the status, ``x-amzn-ErrorType: <Code>`` and a ``{"message": ...}`` body.

Token numbers follow :class:`~agentvigil.testing.fake_provider.Reply`: ``input_tokens`` is the whole prompt; Bedrock
reports ``inputTokens`` without the cache reads and writes, so they are subtracted. ``Reply.stream_usage=False``
drops usage everywhere (body, headers, stream metadata).
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from typing import Any, Iterator
from urllib.parse import unquote

from agentvigil.testing.reply import Reply, words
from agentvigil.testing.wire_anthropic import _anthropic_message, _anthropic_stream

__all__ = ["encode_event", "handle"]

_ERROR_CODES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_REQUEST_ID = "fake-bedrock-request"


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return struct.pack("!B", len(raw_name)) + raw_name + struct.pack("!BH", 7, len(raw_value)) + raw_value  # 7: string


def encode_event(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: total length, headers length, prelude CRC32, headers, payload, message CRC32."""
    head = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack("!II", total, len(head))
    prelude += struct.pack("!I", zlib.crc32(prelude) & 0xFFFFFFFF)
    body = prelude + head + payload
    return body + struct.pack("!I", zlib.crc32(body) & 0xFFFFFFFF)


def _event(kind: str, data: Any) -> bytes:
    return encode_event({":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
                        json.dumps(data, separators=(",", ":")).encode())


def _exception(kind: str, message: str) -> bytes:
    return encode_event({":exception-type": kind, ":content-type": "application/json",
                         ":message-type": "exception"}, json.dumps({"message": message}).encode())


def _uncached(reply: "Reply") -> int:
    return max(0, reply.input_tokens - reply.cache_read_tokens - reply.cache_write_tokens)


def _usage(reply: "Reply") -> dict[str, int]:
    usage = {"inputTokens": _uncached(reply), "outputTokens": reply.output_tokens,
             "totalTokens": reply.input_tokens + reply.output_tokens}
    if reply.cache_read_tokens:
        usage["cacheReadInputTokens"] = reply.cache_read_tokens
    if reply.cache_write_tokens:
        usage["cacheWriteInputTokens"] = reply.cache_write_tokens
    return usage


def _stop_reason(reply: "Reply") -> str:
    return reply.finish_reason or ("tool_use" if reply.tool_calls else "end_turn")


def _converse(reply: "Reply", n: int) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"text": reply.text}] if reply.text else []
    for i, tc in enumerate(reply.tool_calls):
        content.append({"toolUse": {"toolUseId": f"tooluse_fake_{n}_{i}", "name": tc["name"],
                                    "input": tc.get("arguments", {})}})
    out: dict[str, Any] = {"output": {"message": {"role": "assistant", "content": content}},
                           "stopReason": _stop_reason(reply), "metrics": {"latencyMs": 1}}
    if reply.stream_usage is not False:
        out["usage"] = _usage(reply)
    return out


def _converse_stream(reply: "Reply", n: int) -> Iterator[bytes]:

    yield _event("messageStart", {"role": "assistant"})
    index = 0
    if reply.text:
        for i, piece in enumerate(words(reply.text)):
            if reply.fail_after_chunks is not None and i >= reply.fail_after_chunks:
                yield _exception(reply.error_type or "modelStreamErrorException",
                                 reply.error_message or "The model stream failed")
                return
            yield _event("contentBlockDelta", {"delta": {"text": piece}, "contentBlockIndex": 0})
        yield _event("contentBlockStop", {"contentBlockIndex": 0})
        index = 1
    for i, tc in enumerate(reply.tool_calls):
        start = {"toolUse": {"toolUseId": f"tooluse_fake_{n}_{i}", "name": tc["name"]}}
        yield _event("contentBlockStart", {"start": start, "contentBlockIndex": index})
        yield _event("contentBlockDelta", {"delta": {"toolUse": {"input": json.dumps(tc.get("arguments", {}))}},
                                           "contentBlockIndex": index})
        yield _event("contentBlockStop", {"contentBlockIndex": index})
        index += 1
    yield _event("messageStop", {"stopReason": _stop_reason(reply)})
    if reply.stream_usage is not False:
        yield _event("metadata", {"usage": _usage(reply), "metrics": {"latencyMs": 1}})


def _is_anthropic(model_id: str, body: dict[str, Any]) -> bool:
    return "anthropic_version" in body or "anthropic." in model_id


def _invoke(reply: "Reply", model_id: str, body: dict[str, Any], n: int) -> dict[str, Any]:

    usage = reply.stream_usage is not False
    if _is_anthropic(model_id, body):
        out = _anthropic_message(reply, {"model": model_id}, n)
        if not usage:
            out.pop("usage")
        return out
    if "titan-embed" in model_id:
        out = {"embedding": [0.1] * reply.dimensions}
        if usage:
            out["inputTextTokenCount"] = reply.input_tokens
        return out
    if "amazon.nova" in model_id:
        out = {"output": {"message": {"role": "assistant", "content": [{"text": reply.text}]}},
               "stopReason": _stop_reason(reply)}
        if usage:
            out["usage"] = {"inputTokens": _uncached(reply), "outputTokens": reply.output_tokens,
                            "totalTokens": reply.input_tokens + reply.output_tokens,
                            "cacheReadInputTokenCount": reply.cache_read_tokens,
                            "cacheWriteInputTokenCount": reply.cache_write_tokens}
        return out
    if "titan-text" in model_id:
        result: dict[str, Any] = {"outputText": reply.text, "completionReason": "FINISH"}
        if usage:
            result["tokenCount"] = reply.output_tokens
        return {"inputTextTokenCount": reply.input_tokens, "results": [result]} if usage else {"results": [result]}
    return {"outputs": [{"text": reply.text, "stop_reason": "stop"}]}   # a Mistral-style body: no usage


def _count_headers(reply: "Reply", embeddings: bool = False) -> dict[str, str]:
    if reply.stream_usage is False:
        return {}
    out = {"X-Amzn-Bedrock-Input-Token-Count": str(_uncached(reply)), "X-Amzn-Bedrock-Invocation-Latency": "1"}
    if not embeddings:
        out["X-Amzn-Bedrock-Output-Token-Count"] = str(reply.output_tokens)
    if reply.cache_read_tokens:
        out["X-Amzn-Bedrock-Cache-Read-Input-Token-Count"] = str(reply.cache_read_tokens)
    if reply.cache_write_tokens:
        out["X-Amzn-Bedrock-Cache-Write-Input-Token-Count"] = str(reply.cache_write_tokens)
    return out


def _invoke_stream(reply: "Reply", model_id: str, n: int) -> Iterator[bytes]:
    """``chunk`` events carrying the Anthropic stream events, as Bedrock wraps them."""

    events = []
    for raw in _anthropic_stream(reply, {"model": model_id}, n):
        for line in raw.decode().splitlines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    for event in events:
        if event.get("type") == "error":
            yield _exception("modelStreamErrorException", event["error"]["message"])
            return
        if event.get("type") == "message_stop" and reply.stream_usage is not False:
            event["amazon-bedrock-invocationMetrics"] = {
                "inputTokenCount": _uncached(reply), "outputTokenCount": reply.output_tokens,
                "invocationLatency": 1, "firstByteLatency": 1,
                "cacheReadInputTokenCount": reply.cache_read_tokens,
                "cacheWriteInputTokenCount": reply.cache_write_tokens}
        data = base64.b64encode(json.dumps(event, separators=(",", ":")).encode()).decode()
        yield _event("chunk", {"bytes": data})


def _send_stream(handler: Any, frames: Iterator[bytes], reply: "Reply") -> None:
    head = ["HTTP/1.1 200 OK", "Content-Type: application/vnd.amazon.eventstream", "Transfer-Encoding: chunked",
            f"x-amzn-RequestId: {_REQUEST_ID}"]
    head += [f"{k}: {v}" for k, v in reply.headers.items()]
    handler.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode())
    for i, frame in enumerate(frames):
        if reply.chunk_delay_s and i and handler.server.stopping.wait(reply.chunk_delay_s):
            return
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
        handler.wfile.flush()
    handler.wfile.write(b"0\r\n\r\n")
    handler.wfile.flush()


def handle(handler: Any, reply: "Reply", body: dict[str, Any], path: str, n: int) -> None:
    """Answer one ``/model/{modelId}/<operation>`` request."""
    model_id, _, operation = unquote(path[len("/model/"):]).rpartition("/")
    headers = {"x-amzn-RequestId": _REQUEST_ID, **reply.headers}
    try:
        if reply.status >= 400:
            code = reply.error_type or _ERROR_CODES.get(reply.status, "InternalServerException"
                                                       if reply.status >= 500 else "ValidationException")
            message = reply.error_message or f"fake bedrock error {reply.status}"
            handler._send_json(reply.status, {"message": message}, {**headers, "x-amzn-ErrorType": code})
        elif operation == "converse":
            handler._send_json(200, _converse(reply, n), headers)
        elif operation == "converse-stream":
            _send_stream(handler, _converse_stream(reply, n), reply)
        elif operation == "invoke":
            counts = _count_headers(reply, embeddings="embed" in model_id)
            handler._send_json(200, _invoke(reply, model_id, body, n), {**headers, **counts})
        elif operation == "invoke-with-response-stream":
            _send_stream(handler, _invoke_stream(reply, model_id, n), reply)
        else:
            handler._send_json(404, {"message": f"no route {path}"},
                               {**headers, "x-amzn-ErrorType": "UnknownOperationException"})
    except (BrokenPipeError, ConnectionResetError):  # the client gave up: fine
        pass
