"""OpenAI SDK instrumentation: every chat completion, Responses API call and embedding becomes an agentvigil LLM
call (metrics + a GenAI span), sync, async and streaming.

    from agentvigil.instrumentation.openai import OpenAIInstrumentor
    OpenAIInstrumentor().instrument()          # or agentvigil.instrumentation.instrument()

Options (keyword arguments to ``instrument``): ``capture_content`` (default from
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``, off), ``breaker`` (a ``CircuitBreaker`` checked before
each call), ``budget`` (a ``TokenBudget`` reserved before and committed after each call), ``budget_estimate``,
``monitor`` (the Monitor for calls made outside any run), ``stream_usage`` (default from
``AGENTVIGIL_OPENAI_STREAM_USAGE``: ask chat streams for their usage chunk and hide it from the caller).
"""

from __future__ import annotations

from typing import Any

from agentvigil.instrumentation import _env
from agentvigil.instrumentation._base import SDKInstrumentor, build_options
from agentvigil.instrumentation._common import Options
from agentvigil.instrumentation.openai.package import _instruments
from agentvigil.instrumentation.openai.patch import TARGETS

__all__ = ["OpenAIInstrumentor"]


class OpenAIInstrumentor(SDKInstrumentor):
    """Instruments ``openai.resources`` chat completions, responses and embeddings (sync and async)."""

    _instruments = _instruments
    _targets = TARGETS

    def _options(self, kwargs: dict[str, Any]) -> Options:
        return build_options(kwargs, events_provider="openai",
                             stream_usage=_env.openai_stream_usage(kwargs.get("stream_usage")))
