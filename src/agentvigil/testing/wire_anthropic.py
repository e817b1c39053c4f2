"""The Anthropic Messages wire format of the fake provider (also the body of Anthropic models on Bedrock's
InvokeModel, wire_bedrock.py)."""

from __future__ import annotations

import json
from typing import Any, Iterator

from agentvigil.testing.reply import Reply
from agentvigil.testing.reply import sse as _sse
from agentvigil.testing.reply import words as _words

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _anthropic_error(reply: Reply) -> dict[str, Any]:
    etype = reply.error_type or _ANTHROPIC_ERROR_TYPES.get(reply.status, "api_error" if reply.status >= 500
                                                            else "invalid_request_error")
    return {"type": "error", "error": {"type": etype, "message": reply.error_message or etype},
            "request_id": "req_fake"}


def _anthropic_usage(reply: Reply, *, output_tokens: int | None = None) -> dict[str, Any]:
    return {"input_tokens": max(0, reply.input_tokens - reply.cache_read_tokens - reply.cache_write_tokens),
            "cache_creation_input_tokens": reply.cache_write_tokens,
            "cache_read_input_tokens": reply.cache_read_tokens,
            "output_tokens": reply.output_tokens if output_tokens is None else output_tokens,
            "service_tier": "standard"}


def _anthropic_content(reply: Reply, n: int) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    for i, tc in enumerate(reply.tool_calls):
        content.append({"type": "tool_use", "id": f"toolu_fake_{n}_{i}", "name": tc["name"],
                        "input": tc.get("arguments", {})})
    return content


def _anthropic_message(reply: Reply, body: dict[str, Any], n: int) -> dict[str, Any]:
    return {"id": f"msg_fake_{n}", "type": "message", "role": "assistant",
            "model": reply.model or body.get("model", "fake-model"), "content": _anthropic_content(reply, n),
            "stop_reason": reply.finish_reason or ("tool_use" if reply.tool_calls else "end_turn"),
            "stop_sequence": None, "usage": _anthropic_usage(reply)}


def _anthropic_stream(reply: Reply, body: dict[str, Any], n: int) -> Iterator[bytes]:
    start = _anthropic_message(reply, body, n)
    start.update(content=[], stop_reason=None)
    start["usage"] = _anthropic_usage(reply, output_tokens=1)
    if reply.stream_usage is False:
        start["usage"] = {"input_tokens": 0, "output_tokens": 0}
    yield _sse({"type": "message_start", "message": start}, event="message_start")
    index = 0
    if reply.text:
        yield _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                   event="content_block_start")
        yield _sse({"type": "ping"}, event="ping")
        for i, piece in enumerate(_words(reply.text)):
            if reply.fail_after_chunks is not None and i >= reply.fail_after_chunks:
                err = _anthropic_error(Reply(status=529, error_type=reply.error_type or "overloaded_error",
                                             error_message=reply.error_message or "Overloaded"))
                yield _sse(err, event="error")
                return
            yield _sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
                       event="content_block_delta")
        yield _sse({"type": "content_block_stop", "index": 0}, event="content_block_stop")
        index = 1
    for i, tc in enumerate(reply.tool_calls):
        block = {"type": "tool_use", "id": f"toolu_fake_{n}_{i}", "name": tc["name"], "input": {}}
        yield _sse({"type": "content_block_start", "index": index, "content_block": block},
                   event="content_block_start")
        yield _sse({"type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": json.dumps(tc.get("arguments", {}))}},
                   event="content_block_delta")
        yield _sse({"type": "content_block_stop", "index": index}, event="content_block_stop")
        index += 1
    delta_usage = {"output_tokens": reply.output_tokens if reply.stream_usage is not False else 0}
    yield _sse({"type": "message_delta",
                "delta": {"stop_reason": reply.finish_reason or ("tool_use" if reply.tool_calls else "end_turn"),
                          "stop_sequence": None},
                "usage": delta_usage}, event="message_delta")
    yield _sse({"type": "message_stop"}, event="message_stop")


# ----------------------------------------------------------------------------------------------------- server ----
