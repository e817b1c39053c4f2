"""Google GenAI SDK wrappers: ``models.generate_content`` and ``generate_content_stream`` (sync and async, the
``client.aio`` twins), and ``embed_content``. Chats (``client.chats``) call ``models.generate_content`` and are
covered through it.

Provider: ``gcp.gemini`` for the Gemini API, ``gcp.vertex_ai`` for a ``vertexai=True`` client (the semconv
values), decided per call from the client. Operation ``generate_content`` (``embeddings`` for ``embed_content``).

Token accounting (``usage_metadata``): ``prompt_token_count`` already INCLUDES ``cached_content_token_count``
(input inclusive, as OpenAI); ``tool_use_prompt_token_count`` (search results and the like fed back to the
model) is billed as input and added to it. Output is ``candidates_token_count + thoughts_token_count``: Gemini
reports thinking apart from the answer but bills it as output, so output includes reasoning, as OpenAI's does;
``thoughts_token_count`` also goes on the span as ``gen_ai.usage.reasoning.output_tokens``.

Streams: every chunk carries the (cumulative) usage so far; the last one reported wins.

Function calls in a response are the model's tool *requests*: they appear as ``tool_call`` parts of the
output messages (when content is captured) and as the ``tool_calls`` finish reason, never as tool executions.
"""

from __future__ import annotations

import json
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
)
from agentvigil.instrumentation._semconv import _get

GEMINI = "gcp.gemini"
VERTEX = "gcp.vertex_ai"
OPERATION = "generate_content"

# google.rpc status names, for an APIError without an HTTP status in ``code`` (e.g. one rebuilt from a
# websocket close or a replay record). With a status the core classifies by it (429, 5xx, 400 + markers, ...).
_STATUS_KINDS = {
    "RESOURCE_EXHAUSTED": "rate_limit",
    "UNAVAILABLE": "server_error",
    "INTERNAL": "server_error",
    "DEADLINE_EXCEEDED": "timeout",
    "UNAUTHENTICATED": "auth",
    "PERMISSION_DENIED": "auth",
    "NOT_FOUND": "not_found",
    "INVALID_ARGUMENT": "invalid_request",
    "FAILED_PRECONDITION": "invalid_request",
}

# FinishReason names → the spec's values (the others are passed on lower-cased)
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
           "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
           "IMAGE_SAFETY": "content_filter", "IMAGE_PROHIBITED_CONTENT": "content_filter",
           "IMAGE_RECITATION": "content_filter", "MODEL_ARMOR": "content_filter",
           "MALFORMED_FUNCTION_CALL": "error", "MALFORMED_RESPONSE": "error"}


def error_kind(exc: BaseException) -> str | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int) and 400 <= code < 600:
        return None
    return _STATUS_KINDS.get(str(getattr(exc, "status", None)))


def is_vertex(instance: Any) -> bool:
    return bool(getattr(getattr(instance, "_api_client", None), "vertexai", False))


def _enum_name(value: Any) -> str | None:
    if value is None:
        return None
    name = getattr(value, "name", None)
    return str(name if isinstance(name, str) else value)


def finish_reason(candidate: Any, has_calls: bool) -> str | None:
    name = _enum_name(_get(candidate, "finish_reason"))
    if name is None:
        return None
    if name == "STOP" and has_calls:
        return "tool_calls"   # Gemini ends a function-call turn with STOP
    return _FINISH.get(name, name.lower())


# ------------------------------------------------------------------------------------------ parts ----


def _dump(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        try:
            return dump(exclude_none=True, mode="json")
        except Exception:
            return str(obj)
    return obj


def _modality(mime: Any) -> str:
    return str(mime).split("/", 1)[0] if mime else "unknown"


def part(p: Any) -> dict[str, Any] | None:
    """One Gemini ``Part`` (object, dict or string) as a semconv part; media as a reference, never its bytes."""
    if isinstance(p, str):
        return {"type": "text", "content": p}
    call = _get(p, "function_call")
    if call is not None:
        return {"type": "tool_call", "id": _get(call, "id"), "name": _get(call, "name"),
                "arguments": _dump(_get(call, "args"))}
    result = _get(p, "function_response")
    if result is not None:
        return {"type": "tool_call_response", "id": _get(result, "id"), "response": _dump(_get(result, "response"))}
    text = _get(p, "text")
    if text is not None:
        return {"type": "reasoning" if _get(p, "thought") else "text", "content": text}
    blob = _get(p, "inline_data")
    if blob is not None:
        return {"type": "blob", "modality": _modality(_get(blob, "mime_type")), "mime_type": _get(blob, "mime_type")}
    ref = _get(p, "file_data")
    if ref is not None:
        return {"type": "uri", "modality": _modality(_get(ref, "mime_type")), "mime_type": _get(ref, "mime_type"),
                "uri": _get(ref, "file_uri")}
    if isinstance(p, (dict,)) or hasattr(p, "model_dump"):
        dumped = _dump(p)
        if isinstance(dumped, dict) and dumped:
            kind = next(iter(dumped))
            return {"type": str(kind), "content": dumped[kind]}
    return None


def parts(items: Any) -> list[dict[str, Any]]:
    out = []
    for p in items if isinstance(items, (list, tuple)) else [items] if items is not None else []:
        converted = part(p)
        if converted is not None:
            out.append(converted)
    return out


def _role(role: Any, converted: list[dict[str, Any]]) -> str:
    if converted and all(p["type"] == "tool_call_response" for p in converted):
        return "tool"
    return "assistant" if role == "model" else str(role or "user")


def _is_content(item: Any) -> bool:
    return _get(item, "parts") is not None or (isinstance(item, dict) and "role" in item)


def input_messages(contents: Any) -> list[dict[str, Any]]:
    """``contents`` (a string, a Part, a Content, or a list of them) → ``gen_ai.input.messages``; loose parts in a
    row form one user turn, as the SDK sends them."""
    items = contents if isinstance(contents, (list, tuple)) else [contents]
    out: list[dict[str, Any]] = []
    loose: list[Any] = []

    def flush() -> None:
        if loose:
            converted = parts(loose)
            out.append({"role": _role("user", converted), "parts": converted})
            loose.clear()

    for item in items:
        if item is None:
            continue
        if _is_content(item):
            flush()
            converted = parts(_get(item, "parts"))
            out.append({"role": _role(_get(item, "role"), converted), "parts": converted})
        else:
            loose.append(item)
    flush()
    return out


def system_instructions(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if _is_content(value):
        return parts(_get(value, "parts"))
    return parts(value)


def tool_definitions(tools: Any) -> list[dict[str, Any]]:
    """``config.tools``: function declarations flattened (Python callables by name), other tools by kind."""
    out: list[dict[str, Any]] = []
    for tool in tools or ():
        if callable(tool) and not hasattr(tool, "model_dump"):
            entry = {"type": "function", "name": getattr(tool, "__name__", str(tool))}
            doc = getattr(tool, "__doc__", None)
            if doc:
                entry["description"] = doc.strip()
            out.append(entry)
            continue
        declarations = _get(tool, "function_declarations")
        for fn in declarations or ():
            decl = {"type": "function", "name": _get(fn, "name")}
            if _get(fn, "description") is not None:
                decl["description"] = _get(fn, "description")
            schema = _get(fn, "parameters_json_schema") or _get(fn, "parameters")
            if schema is not None:
                decl["parameters"] = _dump(schema)
            out.append(decl)
        if not declarations:
            dumped = _dump(tool)
            kinds = [k for k, v in dumped.items() if v is not None] if isinstance(dumped, dict) else []
            out.extend({"type": k} for k in kinds)
    return out


def output_messages(candidates: Any) -> list[dict[str, Any]]:
    out = []
    for c in candidates or ():
        converted = parts(_get(_get(c, "content"), "parts"))
        has_calls = any(p["type"] == "tool_call" for p in converted)
        out.append({"role": "assistant", "parts": converted, "finish_reason": finish_reason(c, has_calls) or "error"})
    return out


# ------------------------------------------------------------------------------------------ request ----


def _mime_output_type(mime: Any) -> str | None:
    if not mime:
        return None
    return {"application/json": "json", "text/plain": "text"}.get(str(mime), str(mime))


def _request(kwargs: dict[str, Any], opts: Options, recording: bool,
             stream: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    if not recording:
        return kwargs, {}
    config = kwargs.get("config")
    attrs: dict[str, Any] = {
        REQUEST_MAX_TOKENS: _get(config, "max_output_tokens"),
        REQUEST_TEMPERATURE: _get(config, "temperature"),
        REQUEST_TOP_P: _get(config, "top_p"),
        sc.REQUEST_TOP_K: _get(config, "top_k"),
        sc.REQUEST_SEED: _get(config, "seed"),
        sc.REQUEST_FREQUENCY_PENALTY: _get(config, "frequency_penalty"),
        sc.REQUEST_PRESENCE_PENALTY: _get(config, "presence_penalty"),
        sc.OUTPUT_TYPE: _mime_output_type(_get(config, "response_mime_type")),
        REQUEST_STREAM: True if stream else None,
    }
    stop = _get(config, "stop_sequences")
    if isinstance(stop, (list, tuple)):
        attrs[sc.REQUEST_STOP_SEQUENCES] = [str(s) for s in stop]
    n = _get(config, "candidate_count")
    if isinstance(n, int) and n != 1:
        attrs[sc.REQUEST_CHOICE_COUNT] = n
    if opts.capture_content:
        attrs[INPUT_MESSAGES] = sc.to_json(input_messages(kwargs.get("contents")))
        system = system_instructions(_get(config, "system_instruction"))
        if system:
            attrs[SYSTEM_INSTRUCTIONS] = sc.to_json(system)
        tools = tool_definitions(_get(config, "tools"))
        if tools:
            attrs[sc.TOOL_DEFINITIONS] = sc.to_json(tools)
    return kwargs, attrs


def generate_request(kwargs: dict[str, Any], opts: Options,
                     recording: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    return _request(kwargs, opts, recording, stream=False)


def stream_request(kwargs: dict[str, Any], opts: Options,
                   recording: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    return _request(kwargs, opts, recording, stream=True)


def estimate(kwargs: dict[str, Any]) -> int:
    """Tokens to reserve for a call when a budget is set: request chars / 4 plus the output cap (or 1024)."""
    try:
        size = len(json.dumps(kwargs.get("contents"), default=lambda o: _dump(o) if hasattr(o, "model_dump")
                              else str(o)))
    except Exception:
        size = 4000
    cap = _get(kwargs.get("config"), "max_output_tokens")
    return size // 4 + (cap if isinstance(cap, int) and cap > 0 else 1024)


# ------------------------------------------------------------------------------ the older GenAI events ----


def legacy_message(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A semconv message as the older events' messages (OpenAI's shape, which ``LegacyEvents`` reads): text
    joined, ``tool_call`` parts as ``tool_calls``, each ``tool_call_response`` part a ``tool`` message."""
    parts_ = message.get("parts") or []
    text = "".join(p["content"] for p in parts_ if p["type"] == "text") or None
    calls = [{"id": p.get("id"), "type": "function", "function": {"name": p.get("name"),
                                                                 "arguments": p.get("arguments")}}
             for p in parts_ if p["type"] == "tool_call"]
    out: list[dict[str, Any]] = [{"role": "tool", "tool_call_id": p.get("id"), "content": p.get("response")}
                                 for p in parts_ if p["type"] == "tool_call_response"]
    if text is not None or calls or not out:
        role = message.get("role")
        out.append({"role": "user" if role == "tool" else role, "content": text, "tool_calls": calls})
    return out


def legacy_events(inv: Invocation, opts: Options, output: list[dict[str, Any]]) -> None:
    """``gen_ai.{system,user,assistant,tool}.message`` and ``gen_ai.choice`` (default stability mode, a
    LoggerProvider present); content and arguments only when capturing, ids and names always."""
    events = opts.events
    if events is None or not inv.own_span:
        return
    messages: list[dict[str, Any]] = []
    system = system_instructions(_get(inv.kwargs.get("config"), "system_instruction"))
    if system:
        messages.append({"role": "system", "content": "".join(p.get("content") or "" for p in system
                                                              if p["type"] == "text") or None})
    for message in input_messages(inv.kwargs.get("contents")):
        messages.extend(legacy_message(message))
    events.messages(inv.span, messages, opts.capture_content)
    for index, message in enumerate(output):
        events.choice(inv.span, index, message["finish_reason"], legacy_message(message)[-1], opts.capture_content)


# ------------------------------------------------------------------------------------------ response ----


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def record_usage(inv: Invocation, usage: Any) -> int | None:
    """Usage onto the call; returns the reasoning (thoughts) token count when reported."""
    prompt = _get(usage, "prompt_token_count")
    candidates = _get(usage, "candidates_token_count")
    thoughts = _get(usage, "thoughts_token_count")
    if prompt is None and candidates is None:
        return None
    cached = _get(usage, "cached_content_token_count")
    inv.set_usage(_int(prompt) + _int(_get(usage, "tool_use_prompt_token_count")),
                  _int(candidates) + _int(thoughts), cached, 0, input_excludes_cache=False)
    return thoughts if isinstance(thoughts, int) and thoughts > 0 else None


def _finish_reasons(candidates: Any, prompt_feedback: Any) -> list[str] | None:
    reasons = []
    for c in candidates or ():
        has_calls = any(_get(p, "function_call") is not None for p in _get(_get(c, "content"), "parts") or ())
        reason = finish_reason(c, has_calls)
        if reason:
            reasons.append(reason)
    if not reasons and _get(prompt_feedback, "block_reason") is not None:
        reasons.append("content_filter")   # the prompt itself was blocked: no candidates
    return reasons or None


def generate_response(result: Any, inv: Invocation, opts: Options) -> None:
    reasoning = record_usage(inv, _get(result, "usage_metadata"))
    inv.set_response_model(_get(result, "model_version"))
    candidates = _get(result, "candidates")
    if opts.events is not None:
        legacy_events(inv, opts, output_messages(candidates))
    if not inv.recording:
        return
    attrs: dict[str, Any] = {RESPONSE_ID: _get(result, "response_id"),
                             RESPONSE_FINISH_REASONS: _finish_reasons(candidates, _get(result, "prompt_feedback")),
                             sc.REASONING_TOKENS: reasoning}
    if opts.capture_content:
        attrs[OUTPUT_MESSAGES] = sc.to_json(output_messages(candidates))
    inv.set_attributes(attrs)


class _Candidate:
    """One streamed candidate rebuilt from its chunks: text pieces merged, function calls kept whole."""

    __slots__ = ("parts", "finish")

    def __init__(self) -> None:
        self.parts: list[dict[str, Any]] = []
        self.finish: Any = None

    def add(self, converted: dict[str, Any]) -> None:
        last = self.parts[-1] if self.parts else None
        if last is not None and converted["type"] in ("text", "reasoning") and last["type"] == converted["type"]:
            last["content"] += converted["content"]
        else:
            self.parts.append(dict(converted))


class GenerateStreamRecorder(StreamRecorder):
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.capture = opts.capture_content
        self.track = self.capture or opts.events is not None   # the events carry tool-call ids and names always
        self.usage: Any = None
        self.model: Any = None
        self.id: Any = None
        self.prompt_feedback: Any = None
        self.has_calls: dict[int, bool] = {}
        self.finish: dict[int, Any] = {}
        self.candidates: dict[int, _Candidate] = {}

    def feed(self, chunk: Any) -> bool:
        self.usage = _get(chunk, "usage_metadata") or self.usage
        self.model = _get(chunk, "model_version") or self.model
        self.id = _get(chunk, "response_id") or self.id
        self.prompt_feedback = _get(chunk, "prompt_feedback") or self.prompt_feedback
        for i, c in enumerate(_get(chunk, "candidates") or ()):
            index = _get(c, "index")
            index = index if isinstance(index, int) else i
            chunk_parts = _get(_get(c, "content"), "parts") or ()
            if any(_get(p, "function_call") is not None for p in chunk_parts):
                self.has_calls[index] = True
            if _get(c, "finish_reason") is not None:
                self.finish[index] = c
            if self.track:
                buf = self.candidates.setdefault(index, _Candidate())
                for p in chunk_parts:
                    converted = part(p)
                    if converted is not None and (self.capture or converted["type"] == "tool_call"):
                        buf.add(converted)
        return True

    def close(self, inv: Invocation) -> None:
        reasoning = record_usage(inv, self.usage)
        inv.set_response_model(self.model)
        reasons = [r for i, c in sorted(self.finish.items())
                   if (r := finish_reason(c, self.has_calls.get(i, False)))]
        if not reasons and _get(self.prompt_feedback, "block_reason") is not None:
            reasons = ["content_filter"]
        attrs: dict[str, Any] = {RESPONSE_ID: self.id, RESPONSE_FINISH_REASONS: reasons or None,
                                 sc.REASONING_TOKENS: reasoning}
        if self.track:
            messages = []
            for i, buf in sorted(self.candidates.items()):
                reason = finish_reason(self.finish.get(i), self.has_calls.get(i, False))
                messages.append({"role": "assistant", "parts": buf.parts, "finish_reason": reason or "error"})
            legacy_events(inv, self.opts, messages)
            if self.capture and messages:
                attrs[OUTPUT_MESSAGES] = sc.to_json(messages)
        inv.set_attributes(attrs)

    def error_kind(self, exc: BaseException) -> str | None:
        return error_kind(exc)


def stream_recorder(kwargs: dict[str, Any], opts: Options, injected: bool) -> StreamRecorder:
    return GenerateStreamRecorder(opts)


def _is_iterator(kwargs: dict[str, Any], result: Any) -> bool:
    return hasattr(result, "__next__") or hasattr(result, "__anext__")


# ------------------------------------------------------------------------------------------ embeddings ----


def embed_request(kwargs: dict[str, Any], opts: Options,
                  recording: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    if not recording:
        return kwargs, {}
    return kwargs, {sc.EMBEDDINGS_DIMENSION_COUNT: _get(kwargs.get("config"), "output_dimensionality")}


def embed_response(result: Any, inv: Invocation, opts: Options) -> None:
    # Only Vertex AI reports tokens (per embedding, in ``statistics.token_count``); the Gemini API reports none.
    counts = [_get(_get(e, "statistics"), "token_count") for e in _get(result, "embeddings") or ()]
    if counts and all(isinstance(c, (int, float)) for c in counts):
        inv.set_usage(int(sum(counts)), None, None, input_excludes_cache=False)


def specs(provider: str) -> dict[str, CallSpec]:
    """method name → CallSpec, for one provider value."""
    return {
        "generate_content": CallSpec(provider, OPERATION, generate_request, generate_response, None, error_kind),
        "generate_content_stream": CallSpec(provider, OPERATION, stream_request, generate_response, stream_recorder,
                                            error_kind, _is_iterator),
        "embed_content": CallSpec(provider, "embeddings", embed_request, embed_response, None, error_kind),
    }


#: (module, class, method) for every method we wrap; missing ones are skipped at instrument time.
TARGETS: tuple[tuple[str, str, str], ...] = tuple(
    ("google.genai.models", klass, method)
    for klass in ("Models", "AsyncModels")
    for method in ("generate_content", "generate_content_stream", "embed_content")
)

__all__ = ["GEMINI", "TARGETS", "VERTEX", "error_kind", "estimate", "is_vertex", "specs"]
