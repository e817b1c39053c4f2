"""The Gemini API wire format (``generativelanguage.googleapis.com``) for the fake provider.

Routes, under any API version prefix (``/v1beta/models/{model}:...``, what ``google-genai`` sends with
``HttpOptions(base_url=fake.url)``):

* ``:generateContent``: one JSON ``GenerateContentResponse``.
* ``:streamGenerateContent?alt=sse``: SSE ``data:`` chunks, one per text piece, the last with ``finishReason``
  and the final ``usageMetadata``; ``Reply.fail_after_chunks`` sends Google's error object as a chunk (the SDK
  raises it as ``APIError`` mid-stream).
* ``:batchEmbedContents`` / ``:embedContent``: float vectors.
* Errors: Google's JSON error shape ``{"error": {"code", "message", "status"}}``; ``Reply.error_type`` overrides
  the canonical status string (``RESOURCE_EXHAUSTED`` for 429, ``INTERNAL`` for 500, ...).

Token counts follow :class:`~agentvigil.testing.fake_provider.Reply`'s neutral meaning: ``promptTokenCount`` is
the whole prompt (Gemini's count includes cached tokens too), ``cachedContentTokenCount`` the cache reads;
``output_tokens`` includes reasoning, so ``candidatesTokenCount`` is ``output_tokens - reasoning_tokens`` and
``thoughtsTokenCount`` the reasoning (Gemini reports them apart). Gemini reports no cache writes.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from agentvigil.testing.reply import Reply, words

_ACTIONS = (":generateContent", ":streamGenerateContent", ":batchEmbedContents", ":embedContent")

#: google.rpc.Code names by HTTP status, as the API sends them
_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}


def handles(path: str) -> bool:
    """True for a Gemini API model method (``.../models/{model}:{action}``)."""
    return "/models/" in path and path.endswith(_ACTIONS)


def _model(path: str) -> str:
    return path.rsplit("/models/", 1)[1].split(":", 1)[0]


def error_body(reply: "Reply") -> dict[str, Any]:
    status = reply.error_type or _STATUS.get(reply.status, "INTERNAL" if reply.status >= 500 else "UNKNOWN")
    return {"error": {"code": reply.status, "message": reply.error_message or status, "status": status}}


def usage(reply: "Reply", *, final: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"promptTokenCount": reply.input_tokens}
    if reply.cache_read_tokens:
        out["cachedContentTokenCount"] = reply.cache_read_tokens
    if final:
        candidates = max(0, reply.output_tokens - reply.reasoning_tokens)
        out["candidatesTokenCount"] = candidates
        if reply.reasoning_tokens:
            out["thoughtsTokenCount"] = reply.reasoning_tokens
        out["totalTokenCount"] = reply.input_tokens + reply.output_tokens
    else:
        out["totalTokenCount"] = reply.input_tokens
    return out


def _finish_reason(reply: "Reply") -> str:
    return reply.finish_reason or "STOP"   # Gemini ends a function-call turn with STOP too


def _calls(reply: "Reply", n: int) -> list[dict[str, Any]]:
    return [{"functionCall": {"id": f"call_fake_{n}_{i}", "name": tc["name"], "args": tc.get("arguments", {})}}
            for i, tc in enumerate(reply.tool_calls)]


def response(reply: "Reply", model: str, n: int) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": reply.text}] if reply.text else []
    parts += _calls(reply, n)
    return {"candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": _finish_reason(reply),
                            "index": 0}],
            "usageMetadata": usage(reply), "modelVersion": reply.model or model, "responseId": f"resp_fake_{n}"}


def stream(reply: "Reply", model: str, n: int) -> Iterator[bytes]:

    def chunk(parts: list[dict[str, Any]], final: bool) -> bytes:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if final:
            candidate["finishReason"] = _finish_reason(reply)
        body: dict[str, Any] = {"candidates": [candidate], "modelVersion": reply.model or model,
                                "responseId": f"resp_fake_{n}"}
        if reply.stream_usage is not False:
            body["usageMetadata"] = usage(reply, final=final)
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\r\n\r\n"

    pieces: list[list[dict[str, Any]]] = [[{"text": w}] for w in words(reply.text)]
    if reply.tool_calls:
        pieces.append(_calls(reply, n))
    if not pieces:
        pieces = [[{"text": ""}]]
    for i, parts in enumerate(pieces):
        if reply.fail_after_chunks is not None and i >= reply.fail_after_chunks:
            err = error_body(_failure(reply))
            yield b"data: " + json.dumps(err, separators=(",", ":")).encode() + b"\r\n\r\n"
            return
        yield chunk(parts, final=i == len(pieces) - 1)


def _failure(reply: "Reply") -> "Reply":

    return Reply(status=503, error_type=reply.error_type or "UNAVAILABLE",
                 error_message=reply.error_message or "The model is overloaded. Please try again later.")


def embeddings(reply: "Reply", body: dict[str, Any], batch: bool) -> dict[str, Any]:
    count = len(body.get("requests") or []) if batch else 1
    size = reply.dimensions
    vectors = [{"values": [round(0.01 * (i + 1) * (j + 1), 4) for j in range(size)]} for i in range(max(count, 1))]
    return {"embeddings": vectors} if batch else {"embedding": vectors[0]}


def respond(handler: Any, path: str, body: dict[str, Any], reply: "Reply", n: int) -> None:
    """Answer one Gemini API request on the fake provider's ``handler`` (its ``_send_json`` / ``_send_sse``)."""
    try:
        if reply.status >= 400:
            handler._send_json(reply.status, error_body(reply), reply.headers)
            return
        model = _model(path)
        if path.endswith(":streamGenerateContent"):
            handler._send_sse(stream(reply, model, n), reply)
        elif path.endswith(":generateContent"):
            handler._send_json(200, response(reply, model, n), reply.headers)
        else:
            handler._send_json(200, embeddings(reply, body, path.endswith(":batchEmbedContents")), reply.headers)
    except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test): fine
        pass
