"""Anthropic SDK wrappers: ``messages.create`` (JSON or ``stream=True``) and the ``messages.stream()`` helper,
sync and async, plus the beta namespace when present.

Token accounting: Anthropic's ``input_tokens`` EXCLUDES cached tokens; ``cache_read_input_tokens`` and
``cache_creation_input_tokens`` come separately. We pass them to the core with ``input_excludes_cache=True``,
so ``agent_tokens_total{type="input"}`` is the whole prompt (input + cache read + cache write) and the cache hit
ratio is ``cache_read / whole prompt``, the same definition as for OpenAI.

Streams: ``message_start`` carries the model, input and cache usage; ``message_delta`` carries the final
(cumulative) ``output_tokens`` (and, in newer API versions, cumulative input/cache numbers, which win).
"""

from __future__ import annotations

import json
from typing import Any

from wrapt import ObjectProxy

from agentvigil.instrumentation import _semconv as sc
from agentvigil.instrumentation._common import (
    _IN_CALL,
    INPUT_MESSAGES,
    OUTPUT_MESSAGES,
    REQUEST_MAX_TOKENS,
    REQUEST_STREAM,
    REQUEST_TEMPERATURE,
    REQUEST_TOP_P,
    RESPONSE_FINISH_REASONS,
    RESPONSE_ID,
    SYSTEM_INSTRUCTIONS,
    AsyncStreamProxy,
    CallSpec,
    Invocation,
    Options,
    StreamRecorder,
    SyncStreamProxy,
    _close,
    _on_error,
    _prepare,
    internal_error,
    is_given,
)
from agentvigil.instrumentation._semconv import _get

PROVIDER = "anthropic"

# ``error.type`` in Anthropic's error body. Errors sent inside a 200 stream (``event: error``) reach the caller
# as a plain APIStatusError with status 200, so the body is the only way to classify them.
_BODY_KINDS = {
    "overloaded_error": "server_error",
    "api_error": "server_error",
    "rate_limit_error": "rate_limit",
    "authentication_error": "auth",
    "permission_error": "auth",
    "not_found_error": "not_found",
    "request_too_large": "context_length",
    "invalid_request_error": "invalid_request",
    "timeout_error": "timeout",
}


def error_kind(exc: BaseException) -> str | None:
    status = getattr(exc, "status_code", None)
    if status is not None and status >= 400:
        return None  # the core classifies by class name and status (429, 529, ...)
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error")
        err = inner if isinstance(inner, dict) else body
        kind = _BODY_KINDS.get(str(err.get("type")))
        if kind == "invalid_request":
            return None  # let the core look for context-length markers in the message
        return kind
    return None


def messages_request(kwargs: dict[str, Any], opts: Options,
                     recording: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    if not recording:
        return kwargs, {}
    attrs: dict[str, Any] = {
        REQUEST_MAX_TOKENS: kwargs.get("max_tokens"),
        REQUEST_TEMPERATURE: kwargs.get("temperature"),
        REQUEST_TOP_P: kwargs.get("top_p"),
        REQUEST_STREAM: True if kwargs.get("stream") is True else None,
    }
    stop = kwargs.get("stop_sequences")
    attrs[sc.REQUEST_STOP_SEQUENCES] = list(stop) if isinstance(stop, (list, tuple)) else None
    attrs[sc.REQUEST_TOP_K] = kwargs.get("top_k")
    if opts.capture_content:
        attrs[INPUT_MESSAGES] = sc.to_json(input_messages(kwargs.get("messages")))
        if is_given(kwargs.get("system")):
            attrs[SYSTEM_INSTRUCTIONS] = sc.to_json(sc.system_instructions(kwargs.get("system")))
        if is_given(kwargs.get("tools")):
            attrs[sc.TOOL_DEFINITIONS] = sc.to_json(sc.tool_definitions(kwargs.get("tools")))
    return kwargs, attrs


def input_messages(messages: Any) -> list[dict[str, Any]]:
    """Anthropic ``messages`` → ``gen_ai.input.messages`` (a user turn of tool results becomes role ``tool``)."""
    out = []
    for message in messages if isinstance(messages, (list, tuple)) else ():
        parts = sc.text_parts(_get(message, "content"))
        role = _get(message, "role") or "user"
        if parts and all(p["type"] == "tool_call_response" for p in parts):
            role = "tool"
        out.append({"role": role, "parts": parts})
    return out


def _output(content: Any, stop_reason: Any) -> str:
    return sc.to_json([{"role": "assistant", "parts": sc.text_parts(content),
                        "finish_reason": sc.anthropic_finish_reason(stop_reason) or "error"}])


def _legacy_message(role: str, content: Any) -> list[dict[str, Any]]:
    """An Anthropic message as the older events' messages (OpenAI's shape, which ``LegacyEvents`` reads): text
    joined, ``tool_use`` blocks as ``tool_calls``, each ``tool_result`` block a ``tool`` message of its own."""
    parts = sc.text_parts(content)
    text = "".join(p["content"] for p in parts if p["type"] == "text") or None
    calls = [{"id": p["id"], "type": "function", "function": {"name": p["name"], "arguments": p["arguments"]}}
             for p in parts if p["type"] == "tool_call"]
    out: list[dict[str, Any]] = [{"role": "tool", "tool_call_id": p["id"], "content": p["response"]}
                                 for p in parts if p["type"] == "tool_call_response"]
    if text is not None or calls or not out:
        out.append({"role": role, "content": text, "tool_calls": calls})
    return out


def legacy_messages(kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's ``system`` and ``messages`` for the ``gen_ai.<role>.message`` events."""
    out: list[dict[str, Any]] = []
    if is_given(kwargs.get("system")):
        out.extend(_legacy_message("system", kwargs.get("system")))
    messages = kwargs.get("messages")
    for message in messages if isinstance(messages, (list, tuple)) else ():
        out.extend(_legacy_message(str(_get(message, "role") or "user"), _get(message, "content")))
    return out


def _legacy_events(inv: Invocation, opts: Options, content: Any, stop_reason: Any) -> None:
    events = opts.events
    if events is None or not inv.own_span:
        return
    events.messages(inv.span, legacy_messages(inv.kwargs), opts.capture_content)
    message = _legacy_message("assistant", content)[-1]
    events.choice(inv.span, 0, sc.anthropic_finish_reason(stop_reason), message, opts.capture_content)


def _record_usage(inv: Invocation, usage: Any) -> None:
    if usage is None:
        return
    inv.set_usage(_get(usage, "input_tokens"), _get(usage, "output_tokens"),
                  _get(usage, "cache_read_input_tokens") or 0, _get(usage, "cache_creation_input_tokens") or 0,
                  input_excludes_cache=True)


def _unwrap_raw(result: Any) -> Any:
    if type(result).__name__ == "LegacyAPIResponse":
        return result.parse()
    return result


def messages_response(result: Any, inv: Invocation, opts: Options) -> None:
    result = _unwrap_raw(result)
    _record_usage(inv, _get(result, "usage"))
    inv.set_response_model(_get(result, "model"))
    stop = _get(result, "stop_reason")
    _legacy_events(inv, opts, _get(result, "content"), stop)
    if not inv.recording:
        return
    reason = sc.anthropic_finish_reason(stop)
    attrs: dict[str, Any] = {RESPONSE_ID: _get(result, "id"), RESPONSE_FINISH_REASONS: [reason] if reason else None}
    if opts.capture_content:
        attrs[OUTPUT_MESSAGES] = _output(_get(result, "content"), stop)
    inv.set_attributes(attrs)


class MessagesStreamRecorder(StreamRecorder):
    """Reads raw stream events (``RawMessageStreamEvent``); never hides one."""

    _USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.capture = opts.capture_content
        self.track = self.capture or opts.events is not None   # the events carry tool-call ids and names always
        self.usage: dict[str, int] = {}
        self.model: Any = None
        self.id: Any = None
        self.stop_reason: Any = None
        self.blocks: dict[int, dict[str, Any]] = {}   # content blocks by index, rebuilt from the deltas

    def _merge(self, usage: Any) -> None:
        for name in self._USAGE_FIELDS:
            value = _get(usage, name)
            if isinstance(value, int):
                self.usage[name] = value

    def feed(self, event: Any) -> bool:
        kind = _get(event, "type")
        if kind == "message_start":
            message = _get(event, "message")
            self.model, self.id = _get(message, "model"), _get(message, "id")
            self._merge(_get(message, "usage"))
        elif kind == "message_delta":
            self._merge(_get(event, "usage"))
            self.stop_reason = _get(_get(event, "delta"), "stop_reason") or self.stop_reason
        elif kind == "content_block_start" and self.track:
            block = _get(event, "content_block")
            btype = _get(block, "type")
            self.blocks[_get(event, "index") or 0] = {"type": btype, "text": _get(block, "text") or "",
                                                      "id": _get(block, "id"), "name": _get(block, "name"),
                                                      "json": ""}
        elif kind == "content_block_delta" and self.capture:   # text and arguments: only when capturing
            delta = _get(event, "delta")
            block = self.blocks.setdefault(_get(event, "index") or 0, {"type": "text", "text": "", "json": ""})
            block["text"] += _get(delta, "text") or _get(delta, "thinking") or ""
            block["json"] += _get(delta, "partial_json") or ""
        return True

    def _content(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for _, block in sorted(self.blocks.items()):
            if block["type"] == "tool_use":
                try:
                    args = json.loads(block["json"]) if block["json"] else {}
                except ValueError:
                    args = block["json"]
                out.append({"type": "tool_use", "id": block["id"], "name": block["name"], "input": args})
            elif block["type"] == "thinking":
                out.append({"type": "thinking", "thinking": block["text"]})
            else:
                out.append({"type": "text", "text": block["text"]})
        return out

    def close(self, inv: Invocation) -> None:
        if self.usage:
            _record_usage(inv, self.usage)
        inv.set_response_model(self.model)
        if self.track:
            _legacy_events(inv, self.opts, self._content(), self.stop_reason)
        reason = sc.anthropic_finish_reason(self.stop_reason)
        attrs: dict[str, Any] = {RESPONSE_ID: self.id, RESPONSE_FINISH_REASONS: [reason] if reason else None}
        if self.capture:
            attrs[OUTPUT_MESSAGES] = _output(self._content(), self.stop_reason)
        inv.set_attributes(attrs)

    def error_kind(self, exc: BaseException) -> str | None:
        return error_kind(exc)


def messages_stream_recorder(kwargs: dict[str, Any], opts: Options, injected: bool) -> StreamRecorder:
    return MessagesStreamRecorder(opts)


def _is_stream(kwargs: dict[str, Any], result: Any) -> bool:
    return kwargs.get("stream") is True and (hasattr(result, "__next__") or hasattr(result, "__anext__"))


MESSAGES = CallSpec(PROVIDER, "chat", messages_request, messages_response, messages_stream_recorder, error_kind,
                    _is_stream)


# ------------------------------------------------------------------------------- the .stream() helper ----
# ``messages.stream()`` builds the request lazily and sends it in the manager's ``__enter__``; it does not go
# through ``create``. We return the manager behind a proxy whose ``__enter__`` starts the LLM call, sends the
# request, and swaps the MessageStream's ``_raw_stream`` for our stream proxy (the MessageStream reads it lazily,
# so every way of consuming it: iteration, ``text_stream``, ``get_final_message()``, ``until_done()`` goes
# through the proxy). If a future SDK renames ``_raw_stream`` the call is still counted, without usage.


def _attach(stream: Any, inv: Invocation, opts: Options, is_async: bool) -> StreamRecorder | None:
    try:
        raw = stream._raw_stream
        recorder = MessagesStreamRecorder(opts)
        stream._raw_stream = (AsyncStreamProxy if is_async else SyncStreamProxy)(raw, inv, recorder)
        return recorder
    except Exception as exc:
        internal_error("instrumentation.anthropic", exc)
        return None


class _StreamManagerProxy(ObjectProxy):  # type: ignore[misc]
    def __init__(self, wrapped: Any, kwargs: dict[str, Any], opts: Options, instance: Any = None) -> None:
        super().__init__(wrapped)
        self._self_instance = instance
        self._self_kwargs = kwargs
        self._self_opts = opts
        self._self_inv: Invocation | None = None
        self._self_recorder: StreamRecorder | None = None

    def _begin(self) -> Invocation:
        inv = Invocation.begin(PROVIDER, "chat", self._self_kwargs.get("model"), self._self_kwargs,
                               self._self_opts, instance=self._self_instance)
        _, attrs, _ = _prepare(MESSAGES, {**self._self_kwargs, "stream": True}, self._self_opts, inv.recording)
        inv.set_attributes(attrs)
        self._self_inv = inv
        return inv

    def _attach(self, stream: Any, inv: Invocation, is_async: bool) -> None:
        try:
            self._self_recorder = _attach(stream, inv, self._self_opts, is_async)
        except Exception as exc:  # finished without usage at exit
            internal_error("instrumentation.anthropic", exc)

    def _finish(self, exc: BaseException | None) -> None:
        inv = self._self_inv
        if inv is None or inv.done:
            return
        if self._self_recorder is not None:
            _close(self._self_recorder, inv, exc)
        else:
            inv.finish(exc, error_kind=error_kind(exc) if exc is not None else None)

    def __enter__(self) -> Any:
        inv = self._begin()
        token = _IN_CALL.set(True)
        try:
            stream = self.__wrapped__.__enter__()
        except BaseException as exc:
            _on_error(MESSAGES, inv, exc)
            raise
        finally:
            _IN_CALL.reset(token)
        self._attach(stream, inv, is_async=False)
        return stream

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(exc_type, exc, tb)
        finally:
            self._finish(exc)


class _AsyncStreamManagerProxy(_StreamManagerProxy):
    async def __aenter__(self) -> Any:
        inv = self._begin()
        token = _IN_CALL.set(True)
        try:
            stream = await self.__wrapped__.__aenter__()
        except BaseException as exc:
            _on_error(MESSAGES, inv, exc)
            raise
        finally:
            _IN_CALL.reset(token)
        self._attach(stream, inv, is_async=True)
        return stream

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(exc_type, exc, tb)
        finally:
            self._finish(exc)


def stream_helper_wrapper(opts: Options, is_async: bool) -> Any:
    proxy_cls = _AsyncStreamManagerProxy if is_async else _StreamManagerProxy

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        manager = wrapped(*args, **kwargs)  # argument errors are the caller's and propagate unchanged
        if _IN_CALL.get():
            return manager
        try:
            return proxy_cls(manager, dict(kwargs), opts, instance)
        except Exception as exc:
            internal_error("instrumentation.anthropic", exc)
            return manager

    return wrapper


TARGETS: tuple[tuple[str, str, str, CallSpec], ...] = (
    ("anthropic.resources.messages", "Messages", "create", MESSAGES),
    ("anthropic.resources.messages", "AsyncMessages", "create", MESSAGES),
    ("anthropic.resources.beta.messages", "Messages", "create", MESSAGES),
    ("anthropic.resources.beta.messages", "AsyncMessages", "create", MESSAGES),
)

#: ``stream()`` helpers: (module, class, is_async)
STREAM_HELPERS: tuple[tuple[str, str, bool], ...] = (
    ("anthropic.resources.messages", "Messages", False),
    ("anthropic.resources.messages", "AsyncMessages", True),
    ("anthropic.resources.beta.messages", "Messages", False),
    ("anthropic.resources.beta.messages", "AsyncMessages", True),
)

__all__ = ["MESSAGES", "STREAM_HELPERS", "TARGETS", "error_kind", "is_given", "stream_helper_wrapper"]
