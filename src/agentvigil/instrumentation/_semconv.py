"""GenAI semantic conventions for the SDK integrations: stability mode, attribute names, finish reasons and the
"parts" message schema of captured content (https://opentelemetry.io/docs/specs/semconv/gen-ai/).

``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`` selects the latest attribute names (as the
contrib instrumentations do); by default the older names are written too, so older backends keep working.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlparse

STABILITY_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"

SYSTEM = "gen_ai.system"                         # older name of the provider
PROVIDER_NAME = "gen_ai.provider.name"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
REQUEST_SEED = "gen_ai.request.seed"
REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
REQUEST_CHOICE_COUNT = "gen_ai.request.choice.count"
REQUEST_FREQUENCY_PENALTY = "gen_ai.request.frequency_penalty"
REQUEST_PRESENCE_PENALTY = "gen_ai.request.presence_penalty"
REQUEST_TOP_K = "gen_ai.request.top_k"
REQUEST_ENCODING_FORMATS = "gen_ai.request.encoding_formats"
EMBEDDINGS_DIMENSION_COUNT = "gen_ai.embeddings.dimension.count"
OUTPUT_TYPE = "gen_ai.output.type"
OLD_RESPONSE_FORMAT = "gen_ai.openai.request.response_format"
REQUEST_SERVICE_TIER = "openai.request.service_tier"
RESPONSE_SERVICE_TIER = "openai.response.service_tier"
OLD_REQUEST_SERVICE_TIER = "gen_ai.openai.request.service_tier"
OLD_RESPONSE_SERVICE_TIER = "gen_ai.openai.response.service_tier"
TOOL_DEFINITIONS = "gen_ai.tool.definitions"
TOKEN_TYPE = "gen_ai.token.type"
REASONING_TOKENS = "gen_ai.usage.reasoning.output_tokens"


def latest_experimental() -> bool:
    raw = os.environ.get(STABILITY_OPT_IN, "")
    return "gen_ai_latest_experimental" in {p.strip() for p in raw.split(",")}


def provider_attributes(provider: str, latest: bool) -> dict[str, Any]:
    """``gen_ai.provider.name`` in the latest mode; both names by default (old backends read ``gen_ai.system``)."""
    if latest:
        return {PROVIDER_NAME: provider}
    return {SYSTEM: provider, PROVIDER_NAME: provider}


def service_tier_keys(latest: bool) -> tuple[str, str]:
    return (REQUEST_SERVICE_TIER, RESPONSE_SERVICE_TIER) if latest else (OLD_REQUEST_SERVICE_TIER,
                                                                          OLD_RESPONSE_SERVICE_TIER)


def fingerprint_key(latest: bool) -> str:
    return "openai.response.system_fingerprint" if latest else "gen_ai.openai.response.system_fingerprint"


def server_attributes(instance: Any) -> dict[str, Any]:
    """``server.address`` / ``server.port`` from an SDK resource's client ``base_url`` (port left out when 443,
    the default for https, as the spec recommends)."""
    base = getattr(getattr(instance, "_client", None), "base_url", None)
    if base is None:   # google-genai keeps it in its api client's http options (a dict in early 1.x)
        options = getattr(getattr(instance, "_api_client", None), "_http_options", None)
        base = options.get("base_url") if isinstance(options, dict) else getattr(options, "base_url", None)
    if base is None:
        return {}
    host = getattr(base, "host", None)
    port = getattr(base, "port", None)
    if host is None and isinstance(base, str):
        parsed = urlparse(base)
        host, port = parsed.hostname, parsed.port
    out: dict[str, Any] = {}
    if host:
        out[SERVER_ADDRESS] = str(host)
    if isinstance(port, int) and port != 443:
        out[SERVER_PORT] = port
    return out


# ------------------------------------------------------------------------------------------ finish reasons ----

_RESPONSES_STATUS = {"completed": "stop", "incomplete": "length", "failed": "error", "cancelled": "error"}
_ANTHROPIC_STOP = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                   "refusal": "content_filter", "pause_turn": "stop"}


def responses_finish_reason(status: Any, output: Any) -> str | None:
    """The spec's finish reason for a Responses API result: ``tool_calls`` when it asks for a function call,
    else its status mapped (completed → stop, incomplete → length, failed/cancelled → error)."""
    for item in output or ():
        if _get(item, "type") == "function_call":
            return "tool_calls"
    return _RESPONSES_STATUS.get(str(status)) if status else None


def anthropic_finish_reason(stop_reason: Any) -> str | None:
    if not stop_reason:
        return None
    return _ANTHROPIC_STOP.get(str(stop_reason), str(stop_reason))


# ---------------------------------------------------------------------------------------------- messages ----


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """``obj[name]`` for a dict, ``obj.name`` otherwise: SDKs hand over pydantic objects or plain dicts."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _dump(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        try:
            return dump(exclude_none=True)
        except Exception:
            return str(obj)
    return obj


def _arguments(raw: Any) -> Any:
    """Tool-call arguments as an object when they are JSON (the spec's preferred form), else as given."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return _dump(raw)


def text_parts(content: Any) -> list[dict[str, Any]]:
    """A message ``content`` (a string or a list of typed blocks) as semconv parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    for block in content if isinstance(content, (list, tuple)) else [content]:
        block = _dump(block)
        if isinstance(block, str):
            parts.append({"type": "text", "content": block})
            continue
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind in ("text", "input_text", "output_text"):
            parts.append({"type": "text", "content": block.get("text", "")})
        elif kind == "tool_use":
            parts.append({"type": "tool_call", "id": block.get("id"), "name": block.get("name"),
                          "arguments": _dump(block.get("input"))})
        elif kind == "tool_result":
            parts.append({"type": "tool_call_response", "id": block.get("tool_use_id"),
                          "response": _dump(block.get("content"))})
        elif kind in ("thinking", "reasoning"):
            parts.append({"type": "reasoning", "content": block.get("thinking") or block.get("text") or ""})
        elif kind in ("image_url", "input_image", "image"):
            parts.append({"type": "uri" if kind != "image" else "blob", "modality": "image"})
        else:
            parts.append({"type": str(kind or "unknown"), "content": block})
    return parts


def _tool_call_parts(tool_calls: Any) -> list[dict[str, Any]]:
    out = []
    for call in tool_calls or ():
        fn = _get(call, "function")
        out.append({"type": "tool_call", "id": _get(call, "id"), "name": _get(fn, "name"),
                    "arguments": _arguments(_get(fn, "arguments"))})
    return out


def chat_input_messages(messages: Any) -> list[dict[str, Any]]:
    """OpenAI chat ``messages`` → ``gen_ai.input.messages``."""
    out = []
    for message in messages or ():
        role = _get(message, "role") or "user"
        if role == "tool":
            parts: list[dict[str, Any]] = [{"type": "tool_call_response", "id": _get(message, "tool_call_id"),
                                            "response": _dump(_get(message, "content"))}]
        else:
            parts = text_parts(_get(message, "content")) + _tool_call_parts(_get(message, "tool_calls"))
        out.append({"role": role, "parts": parts})
    return out


def chat_output_message(message: Any, finish_reason: Any) -> dict[str, Any]:
    parts = text_parts(_get(message, "content")) + _tool_call_parts(_get(message, "tool_calls"))
    return {"role": _get(message, "role") or "assistant", "parts": parts,
            "finish_reason": str(finish_reason) if finish_reason else "error"}


def responses_input_messages(value: Any) -> list[dict[str, Any]]:
    """Responses API ``input`` (a string or a list of items) → ``gen_ai.input.messages``."""
    if isinstance(value, str):
        return [{"role": "user", "parts": [{"type": "text", "content": value}]}]
    out = []
    for item in value or ():
        kind = _get(item, "type")
        if kind == "function_call_output":
            out.append({"role": "tool", "parts": [{"type": "tool_call_response", "id": _get(item, "call_id"),
                                                   "response": _dump(_get(item, "output"))}]})
        elif kind == "function_call":
            out.append({"role": "assistant", "parts": [{"type": "tool_call", "id": _get(item, "call_id"),
                                                        "name": _get(item, "name"),
                                                        "arguments": _arguments(_get(item, "arguments"))}]})
        else:
            out.append({"role": _get(item, "role") or "user", "parts": text_parts(_get(item, "content"))})
    return out


def responses_output_messages(response: Any) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for item in _get(response, "output") or ():
        kind = _get(item, "type")
        if kind == "message":
            parts.extend(text_parts(_get(item, "content")))
        elif kind == "function_call":
            parts.append({"type": "tool_call", "id": _get(item, "call_id"), "name": _get(item, "name"),
                          "arguments": _arguments(_get(item, "arguments"))})
        elif kind == "reasoning":
            for summary in _get(item, "summary") or ():
                parts.append({"type": "reasoning", "content": _get(summary, "text") or ""})
    if not parts:
        return []
    reason = responses_finish_reason(_get(response, "status"), _get(response, "output"))
    return [{"role": "assistant", "parts": parts, "finish_reason": reason or "error"}]


def system_instructions(value: Any) -> list[dict[str, Any]]:
    """``instructions`` (Responses) or ``system`` (Anthropic) → ``gen_ai.system_instructions``."""
    return text_parts(value)


def tool_definitions(tools: Any) -> list[dict[str, Any]]:
    """Request ``tools`` → ``gen_ai.tool.definitions`` (chat's nested ``function`` flattened, as in the spec)."""
    out = []
    for tool in tools or ():
        tool = _dump(tool)
        if not isinstance(tool, dict):
            continue
        inner = tool.get("function")
        fn: dict[str, Any] = inner if isinstance(inner, dict) else tool
        entry = {"type": tool.get("type") or "function", "name": fn.get("name")}
        if fn.get("description") is not None:
            entry["description"] = fn["description"]
        schema = fn.get("parameters", fn.get("input_schema"))
        if schema is not None:
            entry["parameters"] = schema
        out.append(entry)
    return out


def to_json(value: Any) -> str:
    return json.dumps(value, default=lambda o: _dump(o) if hasattr(o, "model_dump") else str(o), ensure_ascii=False)
