"""What the fake provider answers to one request (:class:`Reply`), and how a reply's text becomes stream deltas:
shared by every wire format (fake_provider.py, wire_gemini.py, wire_bedrock.py)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["Reply", "sse", "words"]


@dataclass
class Reply:
    """What the fake provider answers to one request. Every field has a sensible default."""

    text: str = "Hello from the fake provider."
    #: Response model. ``None`` echoes the request's ``model``.
    model: str | None = None
    #: Whole prompt, INCLUDING cached tokens (see the module docstring for the per-provider rendering).
    input_tokens: int = 12
    output_tokens: int = 5
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    #: Tool calls to return instead of (or besides) text: ``[{"name": "search", "arguments": {"q": "cats"}}]``
    #: (OpenAI wire formats: a str of ``arguments`` is sent as is, e.g. malformed JSON).
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    #: ``None``: natural stop reason ("stop"/"end_turn", or the tool-call one when tool_calls are present).
    finish_reason: str | None = None
    #: HTTP status. Anything >= 400 sends the provider's JSON error body instead of a completion.
    status: int = 200
    error_type: str | None = None
    error_message: str | None = None
    #: Extra response headers, e.g. ``{"retry-after": "2"}``.
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before answering (use it with a short client timeout to provoke timeouts).
    delay_s: float = 0.0
    #: Seconds to wait between SSE events.
    chunk_delay_s: float = 0.0
    #: OpenAI chat streams: ``None`` follows the request (``stream_options.include_usage``); ``False`` never sends
    #: the usage chunk; ``True`` always does. Anthropic streams: ``False`` drops usage from the stream events.
    stream_usage: bool | None = None
    #: Streams only: after this many content deltas, send an error event (Anthropic ``overloaded_error`` style /
    #: OpenAI ``{"error": ...}`` chunk) and end the stream.
    fail_after_chunks: int | None = None
    #: Embeddings: vector length.
    dimensions: int = 8

    @classmethod
    def error(cls, status: int, message: str | None = None, *, error_type: str | None = None,
              retry_after: float | None = None, **kw: Any) -> "Reply":
        headers = dict(kw.pop("headers", {}) or {})
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
            headers["retry-after-ms"] = str(int(retry_after * 1000))
        return cls(status=status, error_message=message, error_type=error_type, headers=headers, **kw)

    @classmethod
    def rate_limited(cls, retry_after: float = 1.0, **kw: Any) -> "Reply":
        return cls.error(429, "Rate limit reached for requests", retry_after=retry_after, **kw)

    @classmethod
    def overloaded(cls, **kw: Any) -> "Reply":
        """Anthropic's 529 ``overloaded_error``."""
        return cls.error(529, "Overloaded", error_type="overloaded_error", **kw)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Reply":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def words(text: str) -> list[str]:
    """Split text into a few deltas that concatenate back to the text."""
    if not text:
        return []
    parts = text.split(" ")
    return [p + (" " if i < len(parts) - 1 else "") for i, p in enumerate(parts)]


def sse(data: Any, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()
