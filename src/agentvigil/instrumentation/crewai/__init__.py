"""CrewAI integration: a run per ``Crew.kickoff``, a step per task and a tool call per tool use (event bus),
LLM calls through the OpenAI / Anthropic instrumentation (CrewAI's native providers use those SDKs).

    from agentvigil.instrumentation.crewai import CrewAIInstrumentor
    CrewAIInstrumentor().instrument(monitor=agentvigil.Monitor("research-crew"))

or, without patching, the callbacks adapter::

    cb = CrewCallbacks(monitor)
    crew = Crew(agents=..., tasks=..., step_callback=cb.step_callback, task_callback=cb.task_callback)
"""

from __future__ import annotations

import importlib
from typing import Any, Collection

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from agentvigil.instrumentation.crewai.package import _instruments
from agentvigil.instrumentation.crewai.patch import (
    CrewCallbacks,
    EventBridge,
    kickoff_wrapper,
    task_wrapper,
)

__all__ = ["CrewAIInstrumentor", "CrewCallbacks"]

_KICKOFFS = (("kickoff", False), ("kickoff_async", True), ("akickoff", True))
_TASK_RUNNERS = (("_execute_core", False), ("_aexecute_core", True))
_EVENTS = (
    ("ToolUsageStartedEvent", "on_tool_started"), ("ToolUsageFinishedEvent", "on_tool_finished"),
    ("ToolUsageErrorEvent", "on_tool_finished"),
)


class CrewAIInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Options: ``monitor`` (runs are started on it; default ``agentvigil.default_monitor()``)."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        from crewai import Crew, Task

        monitor = kwargs.get("monitor")
        self._wrapped: list[tuple[Any, str]] = []
        for method, is_async in _KICKOFFS:
            if hasattr(Crew, method):
                wrap_function_wrapper("crewai", f"Crew.{method}", kickoff_wrapper(monitor, is_async))
                self._wrapped.append((Crew, method))
        for method, is_async in _TASK_RUNNERS:
            if hasattr(Task, method):
                wrap_function_wrapper("crewai", f"Task.{method}", task_wrapper(is_async))
                self._wrapped.append((Task, method))
        self._bridge = EventBridge()
        self._handlers: list[tuple[Any, Any]] = []
        try:
            from crewai.events import crewai_event_bus

            events = importlib.import_module("crewai.events")
            for event_name, method in _EVENTS:
                event_type = getattr(events, event_name, None)
                if event_type is None:
                    continue
                handler = getattr(self._bridge, method)
                crewai_event_bus.on(event_type)(handler)
                self._handlers.append((event_type, handler))
        except ImportError:  # older CrewAI without the event bus: runs only
            pass

    def _uninstrument(self, **kwargs: Any) -> None:
        for klass, method in getattr(self, "_wrapped", []):
            unwrap(klass, method)
        self._wrapped = []
        bridge = getattr(self, "_bridge", None)
        if bridge is not None:
            bridge.active = False
        try:
            from crewai.events import crewai_event_bus

            for event_type, handler in getattr(self, "_handlers", []):
                crewai_event_bus.off(event_type, handler)
        except Exception:
            pass
        self._handlers = []
