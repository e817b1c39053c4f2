"""The older GenAI event model (``gen_ai.<role>.message`` and ``gen_ai.choice`` log events), emitted in the default
stability mode as the contrib instrumentations do, for backends that read content from events. Emitted only when a
LoggerProvider is there to receive them (``instrument(logger_provider=...)`` or a configured global one); message
text and tool arguments only when content capture is on. In ``gen_ai_latest_experimental`` mode content goes on
the span (``gen_ai.input.messages`` / ``gen_ai.output.messages``) and these events are not emitted; there, the
content modes ``EVENT_ONLY`` / ``SPAN_AND_EVENT`` emit ``gen_ai.client.inference.operation.details`` instead.
"""

from __future__ import annotations

from typing import Any

from agentvigil.instrumentation._semconv import _get

DETAILS_EVENT = "gen_ai.client.inference.operation.details"


def _logger(logger_provider: Any) -> Any:
    """Our logger from the given provider, else the global one; None when nobody would receive the events."""
    from opentelemetry import _logs

    from agentvigil._version import __version__

    if logger_provider is None:
        current = _logs.get_logger_provider()
        if type(current).__name__ in ("ProxyLoggerProvider", "NoOpLoggerProvider"):
            return None   # nobody would receive them: build nothing
        logger_provider = current
    return logger_provider.get_logger("agentvigil", __version__)


class DetailsEvent:
    """The latest-mode ``gen_ai.client.inference.operation.details`` event: one per model call, the span's GenAI
    attributes plus the captured content (``EVENT_ONLY`` / ``SPAN_AND_EVENT``), in the span's context."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    @classmethod
    def build(cls, logger_provider: Any) -> "DetailsEvent | None":
        logger = _logger(logger_provider)
        return cls(logger) if logger is not None else None

    def emit(self, span: Any, attributes: dict[str, Any]) -> None:
        from opentelemetry import trace
        from opentelemetry._logs import LogRecord

        self.logger.emit(LogRecord(event_name=DETAILS_EVENT, attributes=attributes,
                                   context=trace.set_span_in_context(span)))


class LegacyEvents:
    def __init__(self, logger: Any, provider: str) -> None:
        self.logger = logger
        self.attributes = {"gen_ai.system": provider}

    @classmethod
    def build(cls, logger_provider: Any, provider: str) -> "LegacyEvents | None":
        logger = _logger(logger_provider)
        return cls(logger, provider) if logger is not None else None

    def _emit(self, span: Any, name: str, body: Any) -> None:
        from opentelemetry import trace
        from opentelemetry._logs import LogRecord

        self.logger.emit(LogRecord(event_name=name, attributes=self.attributes, body=body or None,
                                   context=trace.set_span_in_context(span)))

    def messages(self, span: Any, messages: Any, capture: bool) -> None:
        for message in messages if isinstance(messages, (list, tuple)) else ():
            role = _get(message, "role")
            content = _get(message, "content")
            body: dict[str, Any] = {"content": content} if capture and content else {}
            if role == "assistant":
                calls = _tool_calls(_get(message, "tool_calls"), capture)
                if calls:
                    body = {"tool_calls": calls}
            elif role == "tool" and _get(message, "tool_call_id"):
                body["id"] = _get(message, "tool_call_id")
            self._emit(span, f"gen_ai.{role}.message", body)

    def choice(self, span: Any, index: int, finish_reason: Any, message: Any, capture: bool) -> None:
        body: dict[str, Any] = {"index": index, "finish_reason": finish_reason or "error"}
        if message is not None:
            out: dict[str, Any] = {"role": _get(message, "role") or "assistant"}
            calls = _tool_calls(_get(message, "tool_calls"), capture)
            if calls:
                out["tool_calls"] = calls
            content = _get(message, "content")
            if capture and content:
                out["content"] = content
            body["message"] = out
        self._emit(span, "gen_ai.choice", body)


def _tool_calls(tool_calls: Any, capture: bool) -> list[dict[str, Any]] | None:
    if not tool_calls:
        return None
    calls = []
    for call in tool_calls:
        entry: dict[str, Any] = {}
        if _get(call, "id"):
            entry["id"] = _get(call, "id")
        if _get(call, "type"):
            entry["type"] = _get(call, "type")
        fn = _get(call, "function")
        if fn is not None:
            entry["function"] = {}
            if _get(fn, "name"):
                entry["function"]["name"] = _get(fn, "name")
            arguments = _get(fn, "arguments")
            if capture and arguments:
                entry["function"]["arguments"] = arguments.replace("\n", "") if isinstance(arguments, str) \
                    else arguments
        calls.append(entry)
    return calls
