"""OpenAI Agents SDK (``openai-agents``) integration: a tracing processor that maps the SDK's traces onto
agentvigil runs, steps, tool calls and LLM calls (docs/integrations/openai_agents.md).

    from agentvigil.instrumentation.openai_agents import OpenAIAgentsInstrumentor
    OpenAIAgentsInstrumentor().instrument(monitor=agentvigil.Monitor("support-bot"))   # or agentvigil.instrument()
    result = await Runner.run(agent, "question")

Options (keyword arguments to ``instrument``): ``monitor`` (runs are started on it; default
``agentvigil.default_monitor()``), ``max_cost_usd`` / ``max_steps`` / ``max_seconds`` (limits of the runs the
integration starts, docs/limits.md). The SDK's own exporters stay registered; ``uninstrument()`` removes only ours.
"""

from __future__ import annotations

import logging
from typing import Any, Collection

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from agentvigil.instrumentation.openai_agents.package import _instruments

__all__ = ["OpenAIAgentsInstrumentor"]

log = logging.getLogger("agentvigil")

_LIMITS = ("max_cost_usd", "max_steps", "max_seconds")


class OpenAIAgentsInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Registers one ``AgentsProcessor`` with the SDK's trace provider; ``uninstrument()`` removes it."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        from agents.tracing import add_trace_processor

        from agentvigil.instrumentation.openai_agents.processor import AgentsProcessor

        self._processor: Any = AgentsProcessor(kwargs.get("monitor"), {k: kwargs.get(k) for k in _LIMITS})
        add_trace_processor(self._processor)   # after the SDK's exporters: theirs keep working as before

    def _uninstrument(self, **kwargs: Any) -> None:
        processor = getattr(self, "_processor", None)
        if processor is None:
            return
        processor.active = False   # inert even if the SDK keeps a reference (a provider we cannot edit)
        self._processor = None
        try:
            from agents.tracing import set_trace_processors

            current = trace_processors()
            if current is None:
                log.warning("agentvigil: this Agents SDK trace provider does not list its processors; "
                            "ours stays registered but inert")
                return
            set_trace_processors([p for p in current if p is not processor])
        except Exception as exc:
            log.warning("agentvigil: could not remove the Agents SDK trace processor (left inert): %r", exc)


def trace_processors() -> tuple[Any, ...] | None:
    """The processors registered with the SDK's trace provider, or None when it does not list them. The SDK
    has no public getter: ``uninstrument()`` reads the list to put back every processor but ours."""
    provider: Any
    try:
        from agents.tracing import get_trace_provider  # 0.1+: the provider is created on first use

        provider = get_trace_provider()
    except ImportError:   # earlier releases: a module-level provider
        from agents.tracing import setup

        provider = setup.GLOBAL_TRACE_PROVIDER
    current = getattr(getattr(provider, "_multi_processor", None), "_processors", None)
    return tuple(current) if current is not None else None
