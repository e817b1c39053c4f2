"""Environment variables read by the integrations. Read once, at ``instrument()`` time; explicit keyword
arguments to ``instrument()`` win over the environment. Invalid values are warned about, listing valid ones.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("agentvigil")

CAPTURE_MESSAGE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The OpenTelemetry GenAI switch. ``true`` (or ``span_only`` / ``span_and_event``) puts prompts and completions
on LLM spans as ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (JSON). Default: off, nothing is captured.
In ``gen_ai_latest_experimental`` mode it takes the spec's modes: ``no_content``, ``span_only``, ``event_only``,
``span_and_event`` (see ``content_destinations``)."""

AGENTVIGIL_CAPTURE_CONTENT = "AGENTVIGIL_CAPTURE_CONTENT"
"""agentvigil's own switch with the same meaning; when set it wins over the OpenTelemetry one."""

DISABLED_INSTRUMENTATIONS = "AGENTVIGIL_DISABLED_INSTRUMENTATIONS"
"""Comma-separated integrations ``agentvigil.instrument()`` must skip: ``openai,anthropic,langchain,crewai``."""

OPENAI_STREAM_USAGE = "AGENTVIGIL_OPENAI_STREAM_USAGE"
"""Chat-completion streams carry token usage only when the request sets ``stream_options.include_usage``.
``inject`` (default): when the caller did not set it, agentvigil asks for it and hides the extra usage-only chunk
from the caller, so streamed calls are costed. ``off``: the request is sent as is; a stream without usage is
recorded as a call with unknown tokens."""

MCP_SERVER = "AGENTVIGIL_MCP_SERVER"
"""``true``: ``MCPInstrumentor().instrument()`` (and ``agentvigil.instrument()``) also instruments MCP servers: each
``tools/call`` a server built with the ``mcp`` SDK handles is a run with one tool call. Default: off (client side
only). The ``server=`` keyword wins."""

_TRUE = ("1", "true", "yes", "on", "span_only", "span_and_event")
_FALSE = ("", "0", "false", "no", "off", "no_content", "event_only")

# every name of instrumentation._REGISTRY (a test keeps them equal)
INTEGRATIONS = ("openai", "anthropic", "langchain", "crewai", "mcp", "bedrock", "google_genai", "openai_agents",
                "litellm")


def _flag(name: str, default: bool) -> bool | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    log.warning("agentvigil: ignoring %s=%r; valid values: %s", name, raw, ", ".join(_TRUE + _FALSE[1:]))
    return default


def capture_content(explicit: bool | None = None) -> bool:
    if explicit is not None:
        return bool(explicit)
    own = _flag(AGENTVIGIL_CAPTURE_CONTENT, False)
    if own is not None:
        return own
    return bool(_flag(CAPTURE_MESSAGE_CONTENT, False))


_MODES = {"span_only": (True, False), "event_only": (False, True), "span_and_event": (True, True),
          "no_content": (False, False)}


def content_destinations(explicit: bool | None, latest: bool) -> tuple[bool, bool]:
    """Where captured content goes: (on the span, on the ``gen_ai.client.inference.operation.details`` event).
    The event modes exist only in ``gen_ai_latest_experimental``; elsewhere, and for ``true`` / the explicit
    keyword / ``AGENTVIGIL_CAPTURE_CONTENT``, content goes on the span or nowhere."""
    if not latest or explicit is not None or os.environ.get(AGENTVIGIL_CAPTURE_CONTENT) is not None:
        return capture_content(explicit), False
    raw = os.environ.get(CAPTURE_MESSAGE_CONTENT)
    mode = _MODES.get(raw.strip().lower()) if raw is not None else None
    if mode is not None:
        return mode
    return capture_content(None), False


def disabled_integrations() -> frozenset[str]:
    raw = os.environ.get(DISABLED_INSTRUMENTATIONS, "")
    names = {n.strip().lower() for n in raw.split(",") if n.strip()}
    unknown = names - set(INTEGRATIONS)
    if unknown:
        log.warning("agentvigil: unknown names in %s: %s; valid: %s", DISABLED_INSTRUMENTATIONS,
                    ", ".join(sorted(unknown)), ", ".join(INTEGRATIONS))
    return frozenset(names & set(INTEGRATIONS))


def openai_stream_usage(explicit: bool | None = None) -> bool:
    if explicit is not None:
        return bool(explicit)
    raw = os.environ.get(OPENAI_STREAM_USAGE)
    if raw is None:
        return True
    value = raw.strip().lower()
    if value in ("inject", "on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    log.warning("agentvigil: ignoring %s=%r; valid values: inject, off", OPENAI_STREAM_USAGE, raw)
    return True


def mcp_server(explicit: bool | None = None) -> bool:
    if explicit is not None:
        return bool(explicit)
    return bool(_flag(MCP_SERVER, False))
