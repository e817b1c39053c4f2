"""MCP (Model Context Protocol, the ``mcp`` Python SDK) integration. Client side: each
``ClientSession.call_tool`` made inside a run is a tool call of that run, and ``list_tools`` a tool call
named ``tools/list``. Server side (opt-in: ``server=True`` or
``AGENTVIGIL_MCP_SERVER=true``): each ``tools/call`` a server handles is a run with one tool call
(docs/integrations/mcp.md).

    from agentvigil.instrumentation.mcp import MCPInstrumentor
    MCPInstrumentor().instrument()      # or agentvigil.instrument()
    with mon.run(task_id="t-1"):
        result = await session.call_tool("search", {"q": "cats"})

    MCPInstrumentor().instrument(server=True, monitor=agentvigil.Monitor("search-server"))
"""

from __future__ import annotations

import logging
from typing import Any, Collection

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from agentvigil.instrumentation import _env
from agentvigil.instrumentation._base import unwrap_ours, wrap
from agentvigil.instrumentation.mcp import server as _server
from agentvigil.instrumentation.mcp.package import _instruments
from agentvigil.instrumentation.mcp.patch import call_tool_wrapper, list_tools_wrapper

__all__ = ["MCPInstrumentor"]

log = logging.getLogger("agentvigil")

_TARGETS = (("call_tool", call_tool_wrapper), ("list_tools", list_tools_wrapper))


class MCPInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Client side: tool calls go to the current run (``agentvigil.current_run()``), whichever Monitor owns it.

    Options: ``server`` (default ``AGENTVIGIL_MCP_SERVER``, else off): also instrument MCP servers;
    ``monitor``: the Monitor server runs are started on (default ``agentvigil.default_monitor()``)."""

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
        if _env.mcp_server(kwargs.get("server")):
            self._instrument_server(kwargs.get("monitor"))

    def _instrument_server(self, monitor: Any) -> None:
        try:
            from mcp.server.runner import ServerRunner  # 2.x: every transport dispatches through it

            target: tuple[Any, str, Any] = (ServerRunner, "_on_request", _server.on_request_wrapper)
        except ImportError:
            from mcp.server.lowlevel.server import Server  # 1.x

            target = (Server, "call_tool", _server.call_tool_wrapper)
        klass, method, wrapper = target
        if not hasattr(klass, method):
            log.warning("agentvigil: MCP server side not instrumented: %s.%s not in this SDK", klass.__name__,
                        method)
            return
        wrap(klass, method, _own(wrapper))
        self._wrapped.append((klass, method))
        _server.state.monitor = monitor
        _server.state.on = True

    def _uninstrument(self, **kwargs: Any) -> None:
        _server.state.on = False
        _server.state.monitor = None
        for klass, method in reversed(getattr(self, "_wrapped", [])):
            unwrap_ours(klass, method)
        self._wrapped = []


def _own(wrapper: Any) -> Any:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return wrapper(*args, **kwargs)

    return wrapped
