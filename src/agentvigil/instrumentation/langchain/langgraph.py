"""LangGraph helpers: a graph-level hook (every invoke is a run, every node a step) and a node decorator.

    graph = instrument_graph(builder.compile(), monitor=mon)     # graph-level: no node code changes
    # or, per node:
    @monitored_node("research")
    def research(state): ...

``monitored_node`` opens a step named after the node in the current agentvigil run. Outside any run it marks
progress on the monitor instead (the "heartbeat per node" of the seed examples). When the callback handler
already opened a step for the node (``instrument_graph`` or ``LangChainInstrumentor``), the decorator does
nothing, so using both never double-counts.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, TypeVar

from agentvigil.exceptions import GuardError
from agentvigil.instrumentation._common import internal_error
from agentvigil.instrumentation.langchain.callback import (
    NODE_STEP,
    AgentVigilCallbackHandler,
)

F = TypeVar("F", bound=Callable[..., Any])


def instrument_graph(graph: Any, monitor: Any = None, **handler_kwargs: Any) -> Any:
    """Return ``graph`` bound to an agentvigil callback handler (``graph.with_config(callbacks=[...])``)."""
    handler = AgentVigilCallbackHandler(monitor, **handler_kwargs)
    return graph.with_config(callbacks=[handler])


def _open_step(name: str, monitor: Any) -> Any:
    """The step to close after the node, or None. Raises only GuardError (kill switch / loop guard)."""
    if NODE_STEP.get() is not None:
        return None
    try:
        from agentvigil.instrumentation import _api as agentvigil

        run = agentvigil.current_run()
        if run is None:
            (monitor or agentvigil.default_monitor()).heartbeat()
            return None
    except Exception as exc:
        internal_error("instrumentation.langgraph", exc)
        return None
    run.check()
    try:
        return run.start_step(name)
    except Exception as exc:
        internal_error("instrumentation.langgraph", exc)
        return None


def _close_step(step: Any, error: BaseException | None) -> None:
    if step is None:
        return
    if error is not None and type(error).__name__ in ("GraphInterrupt", "NodeInterrupt", "GraphBubbleUp",
                                                      "ParentCommand"):
        error = None
    try:
        step.end(error)
    except Exception as exc:
        internal_error("instrumentation.langgraph", exc)


def monitored_node(name: str | Callable[..., Any] | None = None, *, monitor: Any = None) -> Any:
    """Decorate a LangGraph node function (sync or async) so each execution is a step."""

    def decorate(fn: F) -> F:
        step_name = name if isinstance(name, str) else getattr(fn, "__name__", "node")

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_node(*args: Any, **kwargs: Any) -> Any:
                step = _open_step(step_name, monitor)
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    _close_step(step, exc)
                    raise
                _close_step(step, None)
                return result

            return async_node  # type: ignore[return-value]

        @functools.wraps(fn)
        def node(*args: Any, **kwargs: Any) -> Any:
            step = _open_step(step_name, monitor)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                _close_step(step, exc)
                raise
            _close_step(step, None)
            return result

        return node  # type: ignore[return-value]

    if callable(name) and not isinstance(name, str):
        return decorate(name)  # used bare: @monitored_node
    return decorate


__all__ = ["GuardError", "instrument_graph", "monitored_node"]
