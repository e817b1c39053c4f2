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

from agentvigil.instrumentation import _semconv as sc
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
    is_given,
)
from agentvigil.instrumentation._semconv import _get

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


def _given(kwargs: dict[str, Any], key: str) -> Any:
    value = kwargs.get(key)
    return value if is_given(value) else None


def _service_tier(kwargs: dict[str, Any]) -> Any:
    tier = _given(kwargs, "service_tier")
    if tier is None and isinstance(kwargs.get("extra_body"), dict):
        tier = kwargs["extra_body"].get("service_tier")
    return None if tier == "auto" else tier   # "auto" is the default: not a meaningful request


def _chat_request_attrs(kwargs: dict[str, Any], opts: Options) -> dict[str, Any]:
    latest = opts.latest
    attrs: dict[str, Any] = {
        sc.REQUEST_SEED: _given(kwargs, "seed"),
        sc.REQUEST_FREQUENCY_PENALTY: _given(kwargs, "frequency_penalty"),
        sc.REQUEST_PRESENCE_PENALTY: _given(kwargs, "presence_penalty"),
    }
    n = _given(kwargs, "n")
    if isinstance(n, int) and n != 1:
        attrs[sc.REQUEST_CHOICE_COUNT] = n
    stop = _given(kwargs, "stop")
    if stop is not None:
        attrs[sc.REQUEST_STOP_SEQUENCES] = [stop] if isinstance(stop, str) else list(stop)
    fmt = _given(kwargs, "response_format")
    fmt = fmt.get("type") if isinstance(fmt, dict) else fmt if isinstance(fmt, str) else None
    if fmt is not None:
        attrs[sc.OUTPUT_TYPE if latest else sc.OLD_RESPONSE_FORMAT] = fmt
    attrs[sc.service_tier_keys(latest)[0]] = _service_tier(kwargs)
    return attrs


def _unwrap_raw(result: Any) -> Any:
    """``with_raw_response`` returns a LegacyAPIResponse; its ``parse()`` is cached, so reading it is free."""
    if type(result).__name__ == "LegacyAPIResponse":
        return result.parse()
    return result


def _capture(opts: Options, key: str, value: Any) -> dict[str, Any]:
    """One captured-content attribute (JSON), only when capture is on and there is something to capture."""
    if not opts.capture_content or not value:
        return {}
    return {key: sc.to_json(value)}


# ------------------------------------------------------------------------------------- chat completions ----


def chat_request(kwargs: dict[str, Any], opts: Options,
                 recording: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    attrs = _common_request_attrs(kwargs, ("max_completion_tokens", "max_tokens"), recording)
    if recording:
        attrs.update(_chat_request_attrs(kwargs, opts))
        if opts.capture_content:
            attrs.update(_capture(opts, INPUT_MESSAGES, sc.chat_input_messages(_given(kwargs, "messages"))))
            attrs.update(_capture(opts, sc.TOOL_DEFINITIONS, sc.tool_definitions(_given(kwargs, "tools"))))
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
                  _get(details, "cached_tokens"), _get(details, "cache_write_tokens") or 0,
                  input_excludes_cache=False)


def chat_response(result: Any, inv: Invocation, opts: Options) -> None:
    result = _unwrap_raw(result)
    _chat_usage(inv, _get(result, "usage"))
    inv.set_response_model(_get(result, "model"))
    choices = _get(result, "choices") or []
    if opts.events is not None and inv.own_span:
        opts.events.messages(inv.span, inv.kwargs.get("messages"), opts.capture_content)
        for i, c in enumerate(choices):
            opts.events.choice(inv.span, _get(c, "index") or i, _get(c, "finish_reason"), _get(c, "message"),
                               opts.capture_content)
    if not inv.recording:
        return
    attrs: dict[str, Any] = {RESPONSE_ID: _get(result, "id"),
                             RESPONSE_FINISH_REASONS: [str(_get(c, "finish_reason") or "error") for c in choices]
                             or None,
                             sc.service_tier_keys(opts.latest)[1]: _get(result, "service_tier"),
                             sc.fingerprint_key(opts.latest): _get(result, "system_fingerprint")}
    if opts.capture_content:
        attrs.update(_capture(opts, OUTPUT_MESSAGES, [sc.chat_output_message(_get(c, "message"),
                                                                           _get(c, "finish_reason"))
                                                      for c in choices]))
    inv.set_attributes(attrs)


class _Choice:
    """One choice of a streamed chat completion, rebuilt from its deltas (choices interleave when n > 1)."""

    __slots__ = ("text", "tool_calls", "finish_reason", "role")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.role = "assistant"

    def message(self) -> dict[str, Any]:
        calls = [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": "".join(c["args"])}}
                 for _, c in sorted(self.tool_calls.items())]
        return {"role": self.role, "content": "".join(self.text) or None, "tool_calls": calls}


class ChatStreamRecorder(StreamRecorder):
    def __init__(self, opts: Options, hide_usage_chunk: bool) -> None:
        self.capture = opts.capture_content
        self.latest = opts.latest
        self.events = opts.events
        self.hide_usage_chunk = hide_usage_chunk
        self.usage: Any = None
        self.model: Any = None
        self.id: Any = None
        self.service_tier: Any = None
        self.fingerprint: Any = None
        self.choices: dict[int, _Choice] = {}

    def feed(self, chunk: Any) -> bool:
        self.model = _get(chunk, "model") or self.model
        self.id = _get(chunk, "id") or self.id
        self.service_tier = _get(chunk, "service_tier") or self.service_tier
        self.fingerprint = _get(chunk, "system_fingerprint") or self.fingerprint
        choices = _get(chunk, "choices") or []
        for choice in choices:
            index = _get(choice, "index") or 0
            buf = self.choices.get(index)
            if buf is None:
                buf = self.choices[index] = _Choice()
            reason = _get(choice, "finish_reason")
            if reason:
                buf.finish_reason = str(reason)
            delta = _get(choice, "delta")
            if delta is not None:
                self._delta(buf, delta, self.capture)
        usage = _get(chunk, "usage")
        if usage is not None:
            self.usage = usage
            if self.hide_usage_chunk and not choices:
                return False  # the usage-only chunk we asked for; the caller did not
        return True

    @staticmethod
    def _delta(buf: _Choice, delta: Any, capture: bool) -> None:
        """Text only when capturing; tool-call ids and names always (the legacy events carry them)."""
        if capture:
            buf.role = _get(delta, "role") or buf.role
            piece = _get(delta, "content")
            if piece:
                buf.text.append(piece)
        for call in _get(delta, "tool_calls") or ():
            slot = buf.tool_calls.setdefault(_get(call, "index") or 0, {"id": None, "name": None, "args": []})
            slot["id"] = _get(call, "id") or slot["id"]
            fn = _get(call, "function")
            slot["name"] = _get(fn, "name") or slot["name"]
            if capture and _get(fn, "arguments"):
                slot["args"].append(_get(fn, "arguments"))

    def close(self, inv: Invocation) -> None:
        _chat_usage(inv, self.usage)
        inv.set_response_model(self.model)
        ordered = [c for _, c in sorted(self.choices.items())]
        events = self.events
        if events is not None and inv.own_span:
            events.messages(inv.span, inv.kwargs.get("messages"), self.capture)
            for index, c in sorted(self.choices.items()):
                events.choice(inv.span, index, c.finish_reason, c.message(), self.capture)
        reasons = [c.finish_reason for c in ordered if c.finish_reason]
        attrs: dict[str, Any] = {RESPONSE_ID: self.id, RESPONSE_FINISH_REASONS: reasons or None,
                                 sc.service_tier_keys(self.latest)[1]: self.service_tier,
                                 sc.fingerprint_key(self.latest): self.fingerprint}
        if self.capture and ordered:
            attrs[OUTPUT_MESSAGES] = sc.to_json([sc.chat_output_message(c.message(), c.finish_reason)
                                                 for c in ordered])
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
    attrs[sc.service_tier_keys(opts.latest)[0]] = _service_tier(kwargs)
    fmt = _get(_get(_given(kwargs, "text"), "format"), "type")
    if fmt is not None:
        attrs[sc.OUTPUT_TYPE if opts.latest else sc.OLD_RESPONSE_FORMAT] = fmt
    if opts.capture_content:
        attrs.update(_capture(opts, INPUT_MESSAGES, sc.responses_input_messages(_given(kwargs, "input"))))
        attrs.update(_capture(opts, SYSTEM_INSTRUCTIONS, sc.system_instructions(_given(kwargs, "instructions"))))
        attrs.update(_capture(opts, sc.TOOL_DEFINITIONS, sc.tool_definitions(_given(kwargs, "tools"))))
    return kwargs, attrs


def _responses_record(inv: Invocation, response: Any, opts: Options) -> None:
    usage = _get(response, "usage")
    if usage is not None:
        details = _get(usage, "input_tokens_details")
        inv.set_usage(_get(usage, "input_tokens"), _get(usage, "output_tokens"),
                      _get(details, "cached_tokens"), _get(details, "cache_write_tokens") or 0,
                      input_excludes_cache=False)
    inv.set_response_model(_get(response, "model"))
    if not inv.recording:
        return
    reason = sc.responses_finish_reason(_get(response, "status"), _get(response, "output"))
    attrs: dict[str, Any] = {RESPONSE_ID: _get(response, "id"), RESPONSE_FINISH_REASONS: [reason] if reason else None,
                             sc.service_tier_keys(opts.latest)[1]: _get(response, "service_tier")}
    reasoning = _get(_get(usage, "output_tokens_details"), "reasoning_tokens")
    if reasoning:
        attrs[sc.REASONING_TOKENS] = reasoning
    if opts.capture_content:
        attrs.update(_capture(opts, OUTPUT_MESSAGES, sc.responses_output_messages(response)))
    inv.set_attributes(attrs)


def responses_response(result: Any, inv: Invocation, opts: Options) -> None:
    _responses_record(inv, _unwrap_raw(result), opts)


class ResponsesStreamRecorder(StreamRecorder):
    _FINAL = ("response.completed", "response.incomplete", "response.failed")

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.final: Any = None
        self.model: Any = None
        self.id: Any = None

    def feed(self, event: Any) -> bool:
        kind = _get(event, "type")
        if kind in self._FINAL:
            self.final = _get(event, "response")
        elif kind == "response.created":
            response = _get(event, "response")
            self.model, self.id = _get(response, "model"), _get(response, "id")
        return True

    def close(self, inv: Invocation) -> None:
        if self.final is not None:
            _responses_record(inv, self.final, self.opts)
        else:
            inv.set_response_model(self.model)
            inv.set_attributes({RESPONSE_ID: self.id})

    def error_kind(self, exc: BaseException) -> str | None:
        return error_kind(exc)


def responses_stream_recorder(kwargs: dict[str, Any], opts: Options, injected: bool) -> StreamRecorder:
    return ResponsesStreamRecorder(opts)


# ------------------------------------------------------------------------------------------- embeddings ----


def embeddings_request(kwargs: dict[str, Any], opts: Options,
                       recording: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    if not recording:
        return kwargs, {}
    attrs: dict[str, Any] = {sc.EMBEDDINGS_DIMENSION_COUNT: _given(kwargs, "dimensions")}
    fmt = _given(kwargs, "encoding_format")
    if fmt is not None:
        attrs[sc.REQUEST_ENCODING_FORMATS] = [fmt]
    return kwargs, attrs


def embeddings_response(result: Any, inv: Invocation, opts: Options) -> None:
    result = _unwrap_raw(result)
    usage = _get(result, "usage")
    if usage is not None:
        inv.set_usage(_get(usage, "prompt_tokens"), None, input_excludes_cache=False)  # no output tokens
    inv.set_response_model(_get(result, "model"))


_RAW_RESPONSES = frozenset({"LegacyAPIResponse", "APIResponse", "AsyncAPIResponse"})


def _is_stream(kwargs: dict[str, Any], result: Any) -> bool:
    """A stream, or a raw response (``with_raw_response``, ``with_streaming_response``: the OpenAI Agents SDK
    streams through the latter) whose ``parse()`` will return one."""
    return kwargs.get("stream") is True and (hasattr(result, "__next__") or hasattr(result, "__anext__")
                                             or type(result).__name__ in _RAW_RESPONSES)


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
