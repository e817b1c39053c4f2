"""OpenAI SDK wrappers: request kwargs → span attributes, responses and stream items → usage.

Wrapped (when present in the installed SDK): ``chat.completions.create`` / ``parse``, ``responses.create`` /
``parse``, ``embeddings.create``, each sync and async. The ``.stream()`` helpers call ``create(stream=True)``
and are covered through it; the nested call is recorded once.

Token accounting: ``prompt_tokens`` / ``input_tokens`` already include cached tokens (input inclusive), cached
tokens come from ``prompt_tokens_details.cached_tokens`` (chat) or ``input_tokens_details.cached_tokens``
(Responses API).
"""

from __future__ import annotations

from typing import Any

from agentvigil.instrumentation._common import (
    INPUT_MESSAGES,
    OUTPUT_MESSAGES,
    REQUEST_MAX_TOKENS,
    REQUEST_STREAM,
    REQUEST_TEMPERATURE,
    REQUEST_TOP_P,
    RESPONSE_FINISH_REASONS,
    RESPONSE_ID,
    SYSTEM_INSTRUCTIONS,
    CallSpec,
    Invocation,
    Options,
    StreamRecorder,
    content_attributes,
    is_given,
    to_json,
)

PROVIDER = "openai"
_RAW_RESPONSE_HEADER = "x-stainless-raw-response"

# Error "type"/"code" values OpenAI puts in a streamed error body, which the SDK raises as a bare APIError
# (no status code, so class name and status cannot classify it).
_BODY_KINDS = {
    "server_error": "server_error",
    "rate_limit_exceeded": "rate_limit",
    "insufficient_quota": "rate_limit",
    "tokens": "rate_limit",
    "requests": "rate_limit",
    "invalid_request_error": "invalid_request",
    "context_length_exceeded": "context_length",
    "content_filter": "content_filter",
    "invalid_api_key": "auth",
}


def error_kind(exc: BaseException) -> str | None:
    """SDK-specific refinement; ``None`` lets the core classify by class name and status."""
    if getattr(exc, "status_code", None) is not None:
        return None
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        for key in ("code", "type"):
            kind = _BODY_KINDS.get(str(body.get(key)))
            if kind:
                return kind
    return None


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _is_raw(kwargs: dict[str, Any]) -> bool:
    headers = kwargs.get("extra_headers")
    if not isinstance(headers, dict):
        return False
    return any(str(k).lower() == _RAW_RESPONSE_HEADER for k in headers)


def _common_request_attrs(kwargs: dict[str, Any], max_tokens_keys: tuple[str, ...],
                          recording: bool) -> dict[str, Any]:
    if not recording:
        return {}
    max_tokens = next((kwargs[k] for k in max_tokens_keys if is_given(kwargs.get(k))), None)
    return {
        REQUEST_MAX_TOKENS: max_tokens,
        REQUEST_TEMPERATURE: kwargs.get("temperature"),
        REQUEST_TOP_P: kwargs.get("top_p"),
        REQUEST_STREAM: True if kwargs.get("stream") is True else None,
    }


def _unwrap_raw(result: Any) -> Any:
    """``with_raw_response`` returns a LegacyAPIResponse; its ``parse()`` is cached, so reading it is free."""
    if type(result).__name__ == "LegacyAPIResponse":
        return result.parse()
    return result


# ------------------------------------------------------------------------------------- chat completions ----


def chat_request(kwargs: dict[str, Any], opts: Options,
                 recording: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    attrs = _common_request_attrs(kwargs, ("max_completion_tokens", "max_tokens"), recording)
    if recording:
        attrs.update(content_attributes(opts, **{INPUT_MESSAGES: kwargs.get("messages")}))
    send = kwargs
    if kwargs.get("stream") is True and opts.extra.get("stream_usage", True) and not _is_raw(kwargs):
        stream_options = kwargs.get("stream_options")
        if not is_given(stream_options):
            send = {**kwargs, "stream_options": {"include_usage": True}}
        elif isinstance(stream_options, dict) and "include_usage" not in stream_options:
            send = {**kwargs, "stream_options": {**stream_options, "include_usage": True}}
    return send, attrs


def _chat_usage(inv: Invocation, usage: Any) -> None:
    if usage is None:
        return
    details = _get(usage, "prompt_tokens_details")
    inv.set_usage(_get(usage, "prompt_tokens"), _get(usage, "completion_tokens"),
                  _get(details, "cached_tokens") or 0, _get(details, "cache_write_tokens") or 0,
                  input_excludes_cache=False)


def chat_response(result: Any, inv: Invocation, opts: Options) -> None:
    result = _unwrap_raw(result)
    _chat_usage(inv, _get(result, "usage"))
    inv.set_response_model(_get(result, "model"))
    if not inv.recording:
        return
    choices = _get(result, "choices") or []
    attrs: dict[str, Any] = {RESPONSE_ID: _get(result, "id"),
                             RESPONSE_FINISH_REASONS: [str(_get(c, "finish_reason")) for c in choices
                                                       if _get(c, "finish_reason")] or None}
    attrs.update(content_attributes(opts, **{OUTPUT_MESSAGES: [_get(c, "message") for c in choices] or None}))
    inv.set_attributes(attrs)


class ChatStreamRecorder(StreamRecorder):
    def __init__(self, opts: Options, hide_usage_chunk: bool) -> None:
        self.capture = opts.capture_content
        self.hide_usage_chunk = hide_usage_chunk
        self.usage: Any = None
        self.model: Any = None
        self.id: Any = None
        self.finish_reasons: list[str] = []
        self.text: list[str] = []

    def feed(self, chunk: Any) -> bool:
        self.model = _get(chunk, "model") or self.model
        self.id = _get(chunk, "id") or self.id
        choices = _get(chunk, "choices") or []
        for choice in choices:
            reason = _get(choice, "finish_reason")
            if reason:
                self.finish_reasons.append(str(reason))
            if self.capture:
                piece = _get(_get(choice, "delta"), "content")
                if piece:
                    self.text.append(piece)
        usage = _get(chunk, "usage")
        if usage is not None:
            self.usage = usage
            if self.hide_usage_chunk and not choices:
                return False  # the usage-only chunk we asked for; the caller did not
        return True

    def close(self, inv: Invocation) -> None:
        _chat_usage(inv, self.usage)
        inv.set_response_model(self.model)
        attrs: dict[str, Any] = {RESPONSE_ID: self.id, RESPONSE_FINISH_REASONS: self.finish_reasons or None}
        if self.capture:
            attrs[OUTPUT_MESSAGES] = to_json([{"role": "assistant", "content": "".join(self.text)}])
        inv.set_attributes(attrs)

    def error_kind(self, exc: BaseException) -> str | None:
        return error_kind(exc)


def chat_stream_recorder(kwargs: dict[str, Any], opts: Options, injected: bool) -> StreamRecorder:
    return ChatStreamRecorder(opts, hide_usage_chunk=injected)


# ----------------------------------------------------------------------------------------- Responses API ----


def responses_request(kwargs: dict[str, Any], opts: Options,
                      recording: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    if not recording:
        return kwargs, {}
    attrs = _common_request_attrs(kwargs, ("max_output_tokens",), recording)
    attrs.update(content_attributes(opts, **{INPUT_MESSAGES: kwargs.get("input"),
                                             SYSTEM_INSTRUCTIONS: kwargs.get("instructions")}))
    return kwargs, attrs


def _responses_record(inv: Invocation, response: Any, opts: Options) -> None:
    usage = _get(response, "usage")
    if usage is not None:
        details = _get(usage, "input_tokens_details")
        inv.set_usage(_get(usage, "input_tokens"), _get(usage, "output_tokens"),
                      _get(details, "cached_tokens") or 0, _get(details, "cache_write_tokens") or 0,
                      input_excludes_cache=False)
    inv.set_response_model(_get(response, "model"))
    if not inv.recording:
        return
    status = _get(response, "status")
    attrs: dict[str, Any] = {RESPONSE_ID: _get(response, "id"),
                             RESPONSE_FINISH_REASONS: [str(status)] if status else None}
    if opts.capture_content:
        attrs.update(content_attributes(opts, **{OUTPUT_MESSAGES: _get(response, "output")}))
    inv.set_attributes(attrs)


def responses_response(result: Any, inv: Invocation, opts: Options) -> None:
    _responses_record(inv, _unwrap_raw(result), opts)


class ResponsesStreamRecorder(StreamRecorder):
    _FINAL = ("response.completed", "response.incomplete", "response.failed")

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.final: Any = None
        self.model: Any = None

    def feed(self, event: Any) -> bool:
        kind = _get(event, "type")
        if kind in self._FINAL:
            self.final = _get(event, "response")
        elif kind == "response.created":
            self.model = _get(_get(event, "response"), "model")
        return True

    def close(self, inv: Invocation) -> None:
        if self.final is not None:
            _responses_record(inv, self.final, self.opts)
        else:
            inv.set_response_model(self.model)

    def error_kind(self, exc: BaseException) -> str | None:
        return error_kind(exc)


def responses_stream_recorder(kwargs: dict[str, Any], opts: Options, injected: bool) -> StreamRecorder:
    return ResponsesStreamRecorder(opts)


# ------------------------------------------------------------------------------------------- embeddings ----


def embeddings_request(kwargs: dict[str, Any], opts: Options,
                       recording: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    return kwargs, (content_attributes(opts, **{INPUT_MESSAGES: kwargs.get("input")}) if recording else {})


def embeddings_response(result: Any, inv: Invocation, opts: Options) -> None:
    result = _unwrap_raw(result)
    usage = _get(result, "usage")
    if usage is not None:
        inv.set_usage(_get(usage, "prompt_tokens"), 0, input_excludes_cache=False)
    inv.set_response_model(_get(result, "model"))


def _is_stream(kwargs: dict[str, Any], result: Any) -> bool:
    return kwargs.get("stream") is True and (hasattr(result, "__next__") or hasattr(result, "__anext__"))


CHAT = CallSpec(PROVIDER, "chat", chat_request, chat_response, chat_stream_recorder, error_kind, _is_stream)
RESPONSES = CallSpec(PROVIDER, "chat", responses_request, responses_response, responses_stream_recorder,
                     error_kind, _is_stream)
EMBEDDINGS = CallSpec(PROVIDER, "embeddings", embeddings_request, embeddings_response, None, error_kind)

#: (module, class, method, spec) for every method we wrap; missing ones are skipped at instrument time.
TARGETS: tuple[tuple[str, str, str, CallSpec], ...] = (
    ("openai.resources.chat.completions", "Completions", "create", CHAT),
    ("openai.resources.chat.completions", "Completions", "parse", CHAT),
    ("openai.resources.chat.completions", "AsyncCompletions", "create", CHAT),
    ("openai.resources.chat.completions", "AsyncCompletions", "parse", CHAT),
    ("openai.resources.responses", "Responses", "create", RESPONSES),
    ("openai.resources.responses", "Responses", "parse", RESPONSES),
    ("openai.resources.responses", "AsyncResponses", "create", RESPONSES),
    ("openai.resources.responses", "AsyncResponses", "parse", RESPONSES),
    ("openai.resources.embeddings", "Embeddings", "create", EMBEDDINGS),
    ("openai.resources.embeddings", "AsyncEmbeddings", "create", EMBEDDINGS),
)
