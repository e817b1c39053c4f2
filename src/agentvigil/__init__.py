"""agentvigil: is your LLM agent healthy right now? Prometheus metrics, OpenTelemetry GenAI spans, and the
detectors and guards that stop a broken agent.

Quick start::

    import agentvigil
    mon = agentvigil.Monitor("support-bot")
    agentvigil.start_metrics_server(port=9464)
    with mon.run(task_id="t-1") as run:
        with run.step():
            with run.tool_call("search", {"q": "cats"}) as call:
                call.set_result(result)
            run.llm_usage(provider="openai", model="gpt-4o-mini", input_tokens=1200, output_tokens=80,
                          cache_read_tokens=1000)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:  # the names below are imported on first use (PEP 562), so `import agentvigil` stays cheap
    from ._context import current_run
    from .breaker import CircuitBreaker
    from .budget import CostBudget, Reservation, TokenBudget
    from .events import Event
    from .exceptions import BudgetExceeded, CircuitOpenError, GuardError, LoopDetected, RunKilled, RunLimitExceeded
    from .exposition import start_metrics_server
    from .fingerprint import result_fingerprint
    from .metrics import declare_labels
    from .monitor import Monitor, Run, default_monitor, llm_call, start_llm_call, subscribe
    from .rollback import IRREVERSIBLE, READ, WRITE, RollbackRegistry
    from .scopes import LLMCall, Step, ToolCall
    from .signals.cost import ModelPrice, PriceBook

__all__ = [
    "IRREVERSIBLE", "READ", "RollbackRegistry", "WRITE",
    "BudgetExceeded", "CircuitBreaker", "CircuitOpenError", "CostBudget", "Event", "GuardError", "LLMCall",
    "LoopDetected", "ModelPrice", "Monitor", "PriceBook", "Reservation", "Run", "RunKilled", "RunLimitExceeded",
    "Step", "TokenBudget", "ToolCall",
    "__version__", "current_run", "declare_labels",
    "default_monitor", "instrument", "llm_call", "result_fingerprint",
    "start_llm_call", "start_metrics_server", "subscribe",
    "uninstrument",
]

# public name -> the submodule that defines it
_LAZY: dict[str, str] = {
    "current_run": "._context",
    "CircuitBreaker": ".breaker",
    "CostBudget": ".budget", "Reservation": ".budget", "TokenBudget": ".budget",
    "Event": ".events",
    "BudgetExceeded": ".exceptions", "CircuitOpenError": ".exceptions", "GuardError": ".exceptions",
    "LoopDetected": ".exceptions", "RunKilled": ".exceptions", "RunLimitExceeded": ".exceptions",
    "declare_labels": ".metrics",
    "LLMCall": ".scopes", "Step": ".scopes", "ToolCall": ".scopes",
    "start_metrics_server": ".exposition",
    "result_fingerprint": ".fingerprint",
    "Monitor": ".monitor", "Run": ".monitor", "default_monitor": ".monitor", "llm_call": ".monitor",
    "start_llm_call": ".monitor", "subscribe": ".monitor",
    "IRREVERSIBLE": ".rollback", "READ": ".rollback", "WRITE": ".rollback", "RollbackRegistry": ".rollback",
    "ModelPrice": ".signals.cost", "PriceBook": ".signals.cost",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentvigil' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def instrument(**kwargs: Any) -> list[str]:
    """Instrument every supported SDK that is installed (OpenAI, Anthropic, LangChain/LangGraph, CrewAI);
    returns the names instrumented. See docs/integrations/."""
    from .instrumentation import instrument as _instrument

    return _instrument(**kwargs)


def uninstrument() -> None:
    from .instrumentation import uninstrument as _uninstrument

    return _uninstrument()
