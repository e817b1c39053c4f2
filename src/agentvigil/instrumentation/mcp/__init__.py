"""MCP (Model Context Protocol, the ``mcp`` Python SDK) integration, client side: each
``ClientSession.call_tool`` made inside a run is a tool call of that run, and ``list_tools`` a tool call
named ``tools/list`` (docs/integrations/mcp.md).

    from agentvigil.instrumentation.mcp import MCPInstrumentor
    MCPInstrumentor().instrument()      # or agentvigil.instrument()
    with mon.run(task_id="t-1"):
        result = await session.call_tool("search", {"q": "cats"})
"""

from __future__ import annotations

from typing import Any, Collection

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from agentvigil.instrumentation._base import unwrap_ours, wrap
from agentvigil.instrumentation.mcp.package import _instruments
from agentvigil.instrumentation.mcp.patch import call_tool_wrapper, list_tools_wrapper

__all__ = ["MCPInstrumentor"]

_TARGETS = (("call_tool", call_tool_wrapper), ("list_tools", list_tools_wrapper))


class MCPInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """No options: tool calls go to the current run (``agentvigil.current_run()``), whichever Monitor owns it."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        from mcp.client.session import ClientSession

        self._wrapped: list[tuple[Any, str]] = []
        for method, wrapper in _TARGETS:
            if hasattr(ClientSession, method):
                # a fresh function per method: wrap() marks it as ours
                wrap(ClientSession, method, _own(wrapper))
                self._wrapped.append((ClientSession, method))

    def _uninstrument(self, **kwargs: Any) -> None:
        for klass, method in reversed(getattr(self, "_wrapped", [])):
            unwrap_ours(klass, method)
        self._wrapped = []


def _own(wrapper: Any) -> Any:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return wrapper(*args, **kwargs)

    return wrapped
