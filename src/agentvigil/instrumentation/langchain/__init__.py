"""LangChain / LangGraph integration.

Zero-code::

    from agentvigil.instrumentation.langchain import LangChainInstrumentor
    LangChainInstrumentor().instrument(monitor=agentvigil.Monitor("research-agent"))

Explicit::

    handler = AgentVigilCallbackHandler(monitor)
    chain.invoke(inputs, config={"callbacks": [handler]})
    graph = instrument_graph(builder.compile(), monitor)      # LangGraph: every node is a step
    @monitored_node("research")                               # or per node
    def research(state): ...
"""

from __future__ import annotations

from typing import Any, Collection

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from agentvigil.instrumentation.langchain.callback import AgentVigilCallbackHandler
from agentvigil.instrumentation.langchain.langgraph import (
    instrument_graph,
    monitored_node,
)
from agentvigil.instrumentation.langchain.package import _instruments
from agentvigil.instrumentation.langchain.patch import TARGET, CallbackManagerInit

__all__ = ["AgentVigilCallbackHandler", "LangChainInstrumentor", "instrument_graph", "monitored_node"]


class LangChainInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Adds an :class:`AgentVigilCallbackHandler` to every LangChain callback manager.

    Options: ``monitor`` (runs are started on it; default ``agentvigil.default_monitor()``),
    ``record_llm_calls`` (see the handler).
    """

    handler: AgentVigilCallbackHandler | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        self.handler = AgentVigilCallbackHandler(kwargs.get("monitor"),
                                                 record_llm_calls=kwargs.get("record_llm_calls"))
        module, name = TARGET
        wrap_function_wrapper(module, name, CallbackManagerInit(self.handler))

    def _uninstrument(self, **kwargs: Any) -> None:
        import langchain_core.callbacks

        unwrap(langchain_core.callbacks.BaseCallbackManager, "__init__")
        self.handler = None
