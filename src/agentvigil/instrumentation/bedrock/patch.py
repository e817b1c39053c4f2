"""AWS Bedrock runtime through botocore: ``Converse``, ``ConverseStream``, ``InvokeModel`` and
``InvokeModelWithResponseStream`` become agentvigil LLM calls (provider ``aws.bedrock``).

The hook is one ``wrapt`` wrapper on ``botocore.client.BaseClient._make_api_call``, the method every generated
client operation goes through: it sees clients created before ``instrument()`` and from any session, and lets
every other service through after one string comparison. (botocore's event system is per client, copied from
its session when the client is created, so hooking it would miss existing clients and other sessions.) One
``_make_api_call`` is one logical call: botocore's retries happen inside it.

Token accounting: Bedrock's ``inputTokens`` EXCLUDES the cache reads and writes (``cacheReadInputTokens``,
``cacheWriteInputTokens``), as Anthropic's does; they are passed with ``input_excludes_cache=True`` so
``agent_tokens_total{type="input"}`` is the whole prompt.

Bodies: an ``InvokeModel`` JSON body (up to ``MAX_BODY`` bytes) is read and replaced by a new ``StreamingBody``
over the same bytes, so the caller reads exactly what it would have; event streams are wrapped in a proxy that
yields every event unchanged and finishes the call at the end of the stream, on ``close()`` or on an error.
"""

from __future__ import annotations

import io
import json
from typing import Any, Callable, Iterator

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
    Invocation,
    Options,
    StreamRecorder,
    _close,
    _feed,
    internal_error,
)

PROVIDER = "aws.bedrock"
SERVICE = "bedrock-runtime"
#: InvokeModel bodies larger than this are left unread (usage then comes from the response headers only)
MAX_BODY = 1 << 20

_STOP = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
         "guardrail_intervened": "content_filter", "content_filtered": "content_filter",
         "model_context_window_exceeded": "length", "FINISH": "stop", "LENGTH": "length",
         "CONTENT_FILTERED": "content_filter"}
_MEDIA = ("image", "document", "video", "audio")


def finish_reason(stop: Any) -> str | None:
    if not stop:
        return None
    return _STOP.get(str(stop)) or sc.anthropic_finish_reason(stop)


# ------------------------------------------------------------------------------------------------ errors ----


class _Coded(Exception):
    """A ClientError with its code capitalised, for the core classifier."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.response = {"Error": {"Code": code}}


def error_kind(exc: BaseException) -> str | None:
    """Errors inside an event stream carry the stream member's name as their code (``throttlingException``,
    ``modelStreamErrorException``); the core knows the capitalised AWS codes. Other errors: the core decides."""
    response = getattr(exc, "response", None)
    error = response.get("Error") if isinstance(response, dict) else None
    code = error.get("Code") if isinstance(error, dict) else None
    if isinstance(code, str) and code[:1].islower():
        from agentvigil.errors import classify_exception

        return classify_exception(_Coded(str(exc), code[0].upper() + code[1:]))
    return None


# ----------------------------------------------------------------------------------------------- content ----


def _scrub(value: Any) -> Any:
    """Content for a span: raw bytes (images, documents) replaced by their size."""
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": len(value)}
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


def parts(content: Any) -> list[dict[str, Any]]:
    """Converse content blocks (``{"text"}``, ``{"toolUse"}``, ``{"toolResult"}``, ...) as semconv parts."""
    out: list[dict[str, Any]] = []
    for block in content if isinstance(content, (list, tuple)) else ():
        if not isinstance(block, dict):
            continue
        if "text" in block:
            out.append({"type": "text", "content": block["text"]})
        elif "toolUse" in block:
            use = block["toolUse"] or {}
            out.append({"type": "tool_call", "id": use.get("toolUseId"), "name": use.get("name"),
                        "arguments": _scrub(use.get("input"))})
        elif "toolResult" in block:
            res = block["toolResult"] or {}
            out.append({"type": "tool_call_response", "id": res.get("toolUseId"),
                        "response": _scrub(res.get("content"))})
        elif "reasoningContent" in block:
            text = ((block["reasoningContent"] or {}).get("reasoningText") or {}).get("text")
            out.append({"type": "reasoning", "content": text or ""})
        else:
            kind = next((k for k in _MEDIA if k in block), None)
            if kind is not None:
                out.append({"type": "blob", "modality": kind})
            elif block:
                out.append({"type": str(next(iter(block)))})
    return out


def input_messages(messages: Any) -> list[dict[str, Any]]:
    out = []
    for message in messages if isinstance(messages, (list, tuple)) else ():
        if not isinstance(message, dict):
            continue
        message_parts = parts(message.get("content"))
        role = message.get("role") or "user"
        if message_parts and all(p["type"] == "tool_call_response" for p in message_parts):
            role = "tool"
        out.append({"role": role, "parts": message_parts})
    return out


def tool_definitions(tool_config: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    tools = tool_config.get("tools") if isinstance(tool_config, dict) else None
    for tool in tools if isinstance(tools, list) else ():
        spec = tool.get("toolSpec") if isinstance(tool, dict) else None
        if not isinstance(spec, dict):
            continue
        entry: dict[str, Any] = {"type": "function", "name": spec.get("name")}
        if spec.get("description") is not None:
            entry["description"] = spec["description"]
        schema = (spec.get("inputSchema") or {}).get("json")
        if schema is not None:
            entry["parameters"] = schema
        out.append(entry)
    return out


def _output(message_parts: list[dict[str, Any]], stop: Any) -> str:
    return sc.to_json([{"role": "assistant", "parts": message_parts, "finish_reason": finish_reason(stop) or "error"}])


# ----------------------------------------------------------------------------------------------- requests ----


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


class Request:
    """One Bedrock call's request, normalised: the gen_ai operation, what the budget estimate reads (``messages``,
    ``system``, ``tools``, ``max_tokens`` and the API params) and the span attributes."""

    __slots__ = ("operation", "params", "body")

    def __init__(self, operation: str, params: dict[str, Any], body: dict[str, Any] | None) -> None:
        self.operation = operation
        self.params = params
        self.body = body

    @classmethod
    def converse(cls, params: dict[str, Any]) -> "Request":
        return cls("chat", params, None)

    @classmethod
    def invoke(cls, params: dict[str, Any]) -> "Request":
        raw = params.get("body")
        model = str(params.get("modelId") or "")
        if "embed" in model:
            operation = "embeddings"
        elif isinstance(raw, (bytes, bytearray, str)) and ('"messages"' in raw if isinstance(raw, str)
                                                           else b'"messages"' in raw):
            operation = "chat"
        else:
            operation = "text_completion"
        return cls(operation, params, None)

    def parsed_body(self) -> dict[str, Any]:
        """An InvokeModel request body as JSON (parsed at most once, only when something reads it)."""
        if self.body is None:
            self.body = {}
            raw = self.params.get("body")
            if isinstance(raw, (bytes, bytearray, str)) and len(raw) <= MAX_BODY:
                try:
                    value = json.loads(raw)
                    self.body = value if isinstance(value, dict) else {}
                except ValueError:
                    pass
        return self.body

    def estimate_kwargs(self) -> dict[str, Any]:
        p = self.params
        if "messages" in p:   # Converse
            config = p.get("inferenceConfig") or {}
            return {**p, "system": p.get("system"), "tools": p.get("toolConfig"),
                    "max_tokens": config.get("maxTokens") if isinstance(config, dict) else None}
        body = self.parsed_body()
        cap = body.get("max_tokens") or (body.get("inferenceConfig") or {}).get("max_new_tokens") \
            or (body.get("textGenerationConfig") or {}).get("maxTokenCount")
        return {**p, **body, "prompt": body.get("prompt") or body.get("inputText"), "max_tokens": cap}

    def attributes(self, opts: Options, stream: bool) -> dict[str, Any]:
        p = self.params
        if "messages" in p:   # Converse
            config: dict[str, Any] = p["inferenceConfig"] if isinstance(p.get("inferenceConfig"), dict) else {}
            stop = config.get("stopSequences")
            attrs: dict[str, Any] = {REQUEST_MAX_TOKENS: config.get("maxTokens"),
                                     REQUEST_TEMPERATURE: config.get("temperature"),
                                     REQUEST_TOP_P: config.get("topP"),
                                     sc.REQUEST_STOP_SEQUENCES: list(stop) if isinstance(stop, list) else None}
            if opts.capture_content:
                attrs[INPUT_MESSAGES] = sc.to_json(input_messages(p.get("messages")))
                system = [{"type": "text", "content": b["text"]} for b in p.get("system") or ()
                          if isinstance(b, dict) and "text" in b]
                if system:
                    attrs[SYSTEM_INSTRUCTIONS] = sc.to_json(system)
                tools = tool_definitions(p.get("toolConfig"))
                if tools:
                    attrs[sc.TOOL_DEFINITIONS] = sc.to_json(tools)
        else:
            body = self.parsed_body()
            stop = body.get("stop_sequences")
            attrs = {REQUEST_MAX_TOKENS: body.get("max_tokens"), REQUEST_TEMPERATURE: body.get("temperature"),
                     REQUEST_TOP_P: body.get("top_p"), sc.REQUEST_TOP_K: body.get("top_k"),
                     sc.REQUEST_STOP_SEQUENCES: list(stop) if isinstance(stop, list) else None}
            if opts.capture_content and "messages" in body:   # the Anthropic Messages body
                from agentvigil.instrumentation.anthropic.patch import input_messages as anthropic_input

                attrs[INPUT_MESSAGES] = sc.to_json(anthropic_input(body.get("messages")))
                if body.get("system"):
                    attrs[SYSTEM_INSTRUCTIONS] = sc.to_json(sc.system_instructions(body.get("system")))
        if stream:
            attrs[REQUEST_STREAM] = True
        return attrs


class _Endpoint:
    """What ``_semconv.server_attributes`` reads (``_client.base_url``), from a botocore client."""

    __slots__ = ("_client", "base_url")

    def __init__(self, client: Any) -> None:
        self._client = self
        self.base_url = client.meta.endpoint_url


# ---------------------------------------------------------------------------------------------- responses ----


def _usage(inv: Invocation, inp: Any, out: Any, read: Any, write: Any) -> bool:
    inp, out = _int(inp), _int(out)
    if inp is None and out is None:
        return False
    inv.set_usage(inp, out, _int(read), _int(write) or 0, input_excludes_cache=True)
    return True


def converse_response(result: dict[str, Any], inv: Invocation, opts: Options) -> None:
    usage = result.get("usage") or {}
    _usage(inv, usage.get("inputTokens"), usage.get("outputTokens"), usage.get("cacheReadInputTokens"),
           usage.get("cacheWriteInputTokens"))
    if not inv.recording:
        return
    stop = result.get("stopReason")
    reason = finish_reason(stop)
    attrs: dict[str, Any] = {RESPONSE_FINISH_REASONS: [reason] if reason else None}
    if opts.capture_content:
        message = (result.get("output") or {}).get("message") or {}
        attrs[OUTPUT_MESSAGES] = _output(parts(message.get("content")), stop)
    inv.set_attributes(attrs)


class _FailedBody(io.RawIOBase):
    """Stands in for a response body whose read failed: the caller's read fails the same way."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self._exc = exc

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        raise self._exc


def _buffer_body(result: dict[str, Any], inv: Invocation) -> bytes | None:
    """Read a small InvokeModel body and put an identical ``StreamingBody`` back in its place."""
    body = result.get("body")
    headers = (result.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    length = _int(headers.get("content-length"))
    if body is None or not hasattr(body, "read") or length is None or length > MAX_BODY:
        return None
    try:
        data = body.read()
    except Exception as exc:   # the caller would have hit it reading: it is the call's failure, seen later
        result["body"] = _FailedBody(exc)
        inv.finish(exc, error_kind=error_kind(exc))
        return None
    from botocore.response import StreamingBody

    result["body"] = StreamingBody(io.BytesIO(data), len(data))
    return bytes(data)


def invoke_response(result: dict[str, Any], inv: Invocation, opts: Options) -> None:
    data = _buffer_body(result, inv)
    parsed: Any = None
    if data:
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
    found = isinstance(parsed, dict) and _invoke_body(parsed, inv, opts)
    if not found:
        headers = (result.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
        _usage(inv, headers.get("x-amzn-bedrock-input-token-count"),
               headers.get("x-amzn-bedrock-output-token-count"),
               headers.get("x-amzn-bedrock-cache-read-input-token-count"),
               headers.get("x-amzn-bedrock-cache-write-input-token-count"))


def _invoke_body(body: dict[str, Any], inv: Invocation, opts: Options) -> bool:
    """Usage and finish reason from the bodies we know; False when the body has no usage we can read."""
    attrs: dict[str, Any] = {}
    found = False
    if body.get("type") == "message" or "stop_reason" in body and "content" in body:   # Anthropic Messages
        usage = body.get("usage") or {}
        found = _usage(inv, usage.get("input_tokens"), usage.get("output_tokens"),
                       usage.get("cache_read_input_tokens"), usage.get("cache_creation_input_tokens"))
        inv.set_response_model(body.get("model"))
        stop = body.get("stop_reason")
        attrs[RESPONSE_ID] = body.get("id")
        if opts.capture_content:
            attrs[OUTPUT_MESSAGES] = _output(sc.text_parts(body.get("content")), stop)
    elif isinstance(body.get("usage"), dict) and "inputTokens" in body["usage"]:   # Amazon Nova
        usage = body["usage"]
        found = _usage(inv, usage.get("inputTokens"), usage.get("outputTokens"),
                       usage.get("cacheReadInputTokenCount"), usage.get("cacheWriteInputTokenCount"))
        stop = body.get("stopReason")
        if opts.capture_content:
            message = (body.get("output") or {}).get("message") or {}
            attrs[OUTPUT_MESSAGES] = _output(parts(message.get("content")), stop)
    elif "inputTextTokenCount" in body:   # Titan text and embeddings
        results = body.get("results") if isinstance(body.get("results"), list) else None
        out = sum(_int(r.get("tokenCount")) or 0 for r in results if isinstance(r, dict)) if results else None
        found = _usage(inv, body.get("inputTextTokenCount"), out, None, None)
        stop = results[0].get("completionReason") if results and isinstance(results[0], dict) else None
    else:
        return False
    reason = finish_reason(stop)
    if reason:
        attrs[RESPONSE_FINISH_REASONS] = [reason]
    inv.set_attributes(attrs)
    return found


# ------------------------------------------------------------------------------------------------ streams ----


class ConverseStreamRecorder(StreamRecorder):
    """Reads ConverseStream events; never hides one. The ``metadata`` event carries the usage."""

    def __init__(self, opts: Options) -> None:
        self.capture = opts.capture_content
        self.usage: dict[str, Any] | None = None
        self.stop: Any = None
        self.blocks: dict[int, dict[str, Any]] = {}

    def feed(self, event: Any) -> bool:
        if not isinstance(event, dict):
            return True
        if "metadata" in event:
            self.usage = (event["metadata"] or {}).get("usage")
        elif "messageStop" in event:
            self.stop = (event["messageStop"] or {}).get("stopReason")
        elif self.capture and "contentBlockStart" in event:
            start = event["contentBlockStart"] or {}
            use = (start.get("start") or {}).get("toolUse")
            if isinstance(use, dict):
                self.blocks[start.get("contentBlockIndex") or 0] = {"tool": use, "json": "", "text": ""}
        elif self.capture and "contentBlockDelta" in event:
            delta_event = event["contentBlockDelta"] or {}
            block = self.blocks.setdefault(delta_event.get("contentBlockIndex") or 0,
                                           {"tool": None, "json": "", "text": ""})
            delta = delta_event.get("delta") or {}
            block["text"] += delta.get("text") or ((delta.get("reasoningContent") or {}).get("text") or "")
            block["json"] += (delta.get("toolUse") or {}).get("input") or ""
        return True

    def _parts(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for _, block in sorted(self.blocks.items()):
            if block["tool"] is not None:
                try:
                    args: Any = json.loads(block["json"]) if block["json"] else {}
                except ValueError:
                    args = block["json"]
                out.append({"type": "tool_call", "id": block["tool"].get("toolUseId"),
                            "name": block["tool"].get("name"), "arguments": args})
            else:
                out.append({"type": "text", "content": block["text"]})
        return out

    def close(self, inv: Invocation) -> None:
        usage = self.usage or {}
        _usage(inv, usage.get("inputTokens"), usage.get("outputTokens"), usage.get("cacheReadInputTokens"),
               usage.get("cacheWriteInputTokens"))
        reason = finish_reason(self.stop)
        attrs: dict[str, Any] = {RESPONSE_FINISH_REASONS: [reason] if reason else None}
        if self.capture:
            attrs[OUTPUT_MESSAGES] = _output(self._parts(), self.stop)
        inv.set_attributes(attrs)

    def error_kind(self, exc: BaseException) -> str | None:
        return error_kind(exc)


class InvokeStreamRecorder(StreamRecorder):
    """Reads InvokeModelWithResponseStream ``chunk`` events: the Anthropic stream events inside them, and the
    ``amazon-bedrock-invocationMetrics`` Bedrock adds to the last chunk for every model."""

    def __init__(self, opts: Options) -> None:
        self.capture = opts.capture_content
        self.metrics: dict[str, Any] | None = None
        self.anthropic: dict[str, Any] = {}
        self.model: Any = None
        self.id: Any = None
        self.stop: Any = None
        self.text: list[str] = []

    def feed(self, event: Any) -> bool:
        raw = ((event or {}).get("chunk") or {}).get("bytes") if isinstance(event, dict) else None
        if not raw:
            return True
        data = json.loads(raw)
        if not isinstance(data, dict):
            return True
        metrics = data.get("amazon-bedrock-invocationMetrics")
        if isinstance(metrics, dict):
            self.metrics = metrics
        kind = data.get("type")
        if kind == "message_start":
            message = data.get("message") or {}
            self.model, self.id = message.get("model"), message.get("id")
            self.anthropic.update({k: v for k, v in (message.get("usage") or {}).items() if isinstance(v, int)})
        elif kind == "message_delta":
            self.anthropic.update({k: v for k, v in (data.get("usage") or {}).items() if isinstance(v, int)})
            self.stop = (data.get("delta") or {}).get("stop_reason") or self.stop
        elif kind == "content_block_delta" and self.capture:
            self.text.append((data.get("delta") or {}).get("text") or "")
        elif "messageStop" in data:   # Nova
            self.stop = (data["messageStop"] or {}).get("stopReason")
        return True

    def close(self, inv: Invocation) -> None:
        m, a = self.metrics or {}, self.anthropic
        if a.get("input_tokens") is not None:
            _usage(inv, a.get("input_tokens"), a.get("output_tokens"), a.get("cache_read_input_tokens"),
                   a.get("cache_creation_input_tokens"))
        else:
            _usage(inv, m.get("inputTokenCount"), m.get("outputTokenCount"), m.get("cacheReadInputTokenCount"),
                   m.get("cacheWriteInputTokenCount"))
        inv.set_response_model(self.model)
        reason = finish_reason(self.stop)
        attrs: dict[str, Any] = {RESPONSE_ID: self.id, RESPONSE_FINISH_REASONS: [reason] if reason else None}
        if self.capture and self.text:
            attrs[OUTPUT_MESSAGES] = _output([{"type": "text", "content": "".join(self.text)}], self.stop)
        inv.set_attributes(attrs)

    def error_kind(self, exc: BaseException) -> str | None:
        return error_kind(exc)


class EventStreamProxy(ObjectProxy):  # type: ignore[misc]
    """Wraps a botocore ``EventStream``: the caller iterates it exactly as before; the call is finished when the
    stream ends, fails, is closed, or the iteration is abandoned (its generator closed)."""

    def __init__(self, wrapped: Any, inv: Invocation, recorder: StreamRecorder) -> None:
        super().__init__(wrapped)
        self._self_inv = inv
        self._self_recorder = recorder

    def __iter__(self) -> Iterator[Any]:
        inv, recorder = self._self_inv, self._self_recorder
        error: BaseException | None = None
        try:
            for event in self.__wrapped__:
                _feed(recorder, event)
                yield event
        except GeneratorExit:   # the caller stopped early: the call ends with what was read
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            _close(recorder, inv, error)

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        except BaseException as exc:
            _close(self._self_recorder, self._self_inv, exc)
            raise
        _close(self._self_recorder, self._self_inv, None)


# ------------------------------------------------------------------------------------------------- the hook ----

#: operation -> (request builder, is a stream)
OPERATIONS: dict[str, tuple[Callable[[dict[str, Any]], Request], bool]] = {
    "Converse": (Request.converse, False),
    "ConverseStream": (Request.converse, True),
    "InvokeModel": (Request.invoke, False),
    "InvokeModelWithResponseStream": (Request.invoke, True),
}


def _service(client: Any) -> Any:
    return client.meta.service_model.service_name


def _begin(client: Any, operation: Any, params: Any, opts: Options) -> Invocation:
    build, stream = OPERATIONS[operation]
    request = build(params)
    estimate = request.estimate_kwargs() if opts.budget is not None else params
    endpoint: Any = None
    try:
        endpoint = _Endpoint(client)
    except Exception as exc:
        internal_error("instrumentation.bedrock", exc)
    inv = Invocation.begin(PROVIDER, request.operation, params.get("modelId"), estimate, opts, instance=endpoint)
    if inv.recording:
        try:
            inv.set_attributes(request.attributes(opts, stream))
        except Exception as exc:
            internal_error("instrumentation.bedrock", exc)
    return inv


def _on_result(operation: Any, result: Any, inv: Invocation, opts: Options) -> Any:
    try:
        if operation == "ConverseStream" and isinstance(result, dict) and result.get("stream") is not None:
            result["stream"] = EventStreamProxy(result["stream"], inv, ConverseStreamRecorder(opts))
            return result
        if operation == "InvokeModelWithResponseStream" and isinstance(result, dict) \
                and result.get("body") is not None:
            result["body"] = EventStreamProxy(result["body"], inv, InvokeStreamRecorder(opts))
            return result
        if operation == "Converse" and isinstance(result, dict):
            converse_response(result, inv, opts)
        elif operation == "InvokeModel" and isinstance(result, dict):
            invoke_response(result, inv, opts)
    except Exception as exc:
        internal_error("instrumentation.bedrock", exc)
    inv.finish(None)
    return result


def make_api_call_wrapper(opts: Options) -> Callable[..., Any]:
    """The ``wrapt`` wrapper for ``BaseClient._make_api_call(operation_name, api_params)``."""

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        try:
            operation = args[0] if args else kwargs.get("operation_name")
            params = args[1] if len(args) > 1 else kwargs.get("api_params")
            ours = operation in OPERATIONS and isinstance(params, dict) and _service(instance) == SERVICE
        except Exception:
            ours = False
        if not ours or _IN_CALL.get():
            return wrapped(*args, **kwargs)
        try:
            inv = _begin(instance, operation, params, opts)
        except Exception as exc:
            from agentvigil.exceptions import GuardError

            if isinstance(exc, GuardError):
                raise
            internal_error("instrumentation.bedrock", exc)
            return wrapped(*args, **kwargs)
        token = _IN_CALL.set(True)
        inv.attach()
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            inv.detach()
            try:
                kind = error_kind(exc)
            except Exception:
                kind = None
            inv.finish(exc, error_kind=kind)
            raise
        finally:
            inv.detach()
            _IN_CALL.reset(token)
        return _on_result(operation, result, inv, opts)

    return wrapper


__all__ = ["OPERATIONS", "PROVIDER", "EventStreamProxy", "error_kind", "make_api_call_wrapper"]
