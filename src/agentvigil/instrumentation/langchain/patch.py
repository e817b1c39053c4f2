"""Zero-code LangChain: add one shared AgentVigilCallbackHandler to every callback manager LangChain builds
(the approach of the OpenTelemetry-ecosystem LangChain instrumentations). Managers that already carry an
AgentVigilCallbackHandler (passed by the user) are left alone."""

from __future__ import annotations

from typing import Any

from agentvigil.instrumentation._common import internal_error
from agentvigil.instrumentation.langchain.callback import AgentVigilCallbackHandler


class CallbackManagerInit:
    """``wrapt`` wrapper for ``BaseCallbackManager.__init__``."""

    def __init__(self, handler: AgentVigilCallbackHandler) -> None:
        self.handler = handler

    def __call__(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        wrapped(*args, **kwargs)
        try:
            for existing in instance.inheritable_handlers:
                if isinstance(existing, AgentVigilCallbackHandler):
                    return
            instance.add_handler(self.handler, True)
        except Exception as exc:
            internal_error("instrumentation.langchain", exc)


TARGET = ("langchain_core.callbacks", "BaseCallbackManager.__init__")
