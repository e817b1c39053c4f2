"""LiteLLM integration through LiteLLM's own callback interface: every ``litellm.completion`` /
``acompletion`` (streaming or not), ``text_completion`` and ``embedding`` — whatever the provider behind it —
becomes an agentvigil LLM call of the current run (metrics, cost from agentvigil's price data, a GenAI span).

    from agentvigil.instrumentation.litellm import LiteLLMInstrumentor
    LiteLLMInstrumentor().instrument()          # or agentvigil.instrument()

Options (keyword arguments to ``instrument``): ``breaker``, ``budget``, ``budget_estimate``, ``monitor``,
``tracer_provider``, ``meter_provider`` — as for the OpenAI instrumentor, except that the guards can only
*refuse* async calls: LiteLLM swallows exceptions raised by the callbacks of sync calls
(docs/integrations/litellm.md#guards).
"""

from __future__ import annotations

from typing import Any, Collection

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from agentvigil.instrumentation.litellm.package import _instruments

__all__ = ["LiteLLMInstrumentor"]

#: the module-level lists LiteLLM copies ``litellm.callbacks`` into when a call is set up
_CALLBACK_LISTS = ("callbacks", "input_callback", "success_callback", "failure_callback", "_async_input_callback",
                   "_async_success_callback", "_async_failure_callback", "service_callback")


class LiteLLMInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Appends an ``AgentVigilLogger`` to ``litellm.callbacks``; ``uninstrument()`` removes it from every list
    LiteLLM copied it into and finishes any call still open."""

    logger: Any = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        import litellm

        from agentvigil.instrumentation._base import build_options
        from agentvigil.instrumentation.litellm.callback import AgentVigilLogger

        self.logger = AgentVigilLogger(build_options(kwargs))
        litellm.callbacks.append(self.logger)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until LiteLLM has delivered the result of every call started so far (short scripts, tests):
        LiteLLM reports a sync call's success from a logging thread after the call returns. Bounded by
        ``timeout``; True when nothing is left open. Call it from sync code: in a coroutine it would block the
        event loop that delivers async calls' results."""
        logger = self.logger
        return True if logger is None else bool(logger.wait_idle(timeout))

    def _uninstrument(self, **kwargs: Any) -> None:
        import litellm

        logger, self.logger = self.logger, None
        if logger is None:
            return
        for name in _CALLBACK_LISTS:
            callbacks = getattr(litellm, name, None)
            if isinstance(callbacks, list):
                callbacks[:] = [c for c in callbacks if c is not logger]   # in place: LiteLLM holds these lists
        logger.close_all()
