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

from ._context import current_run
from ._version import __version__
from .breaker import CircuitBreaker
from .budget import CostBudget, Reservation, TokenBudget
from .events import Event
from .exceptions import (
    BudgetExceeded,
    CircuitOpenError,
    GuardError,
    LoopDetected,
    RunKilled,
    RunLimitExceeded,
)
from .exposition import start_metrics_server
from .fingerprint import result_fingerprint
from .metrics import declare_labels
from .monitor import Monitor, Run, default_monitor, llm_call, start_llm_call, subscribe
from .rollback import IRREVERSIBLE, READ, WRITE, RollbackRegistry
from .signals.cost import ModelPrice, PriceBook

__all__ = [
    "IRREVERSIBLE", "READ", "RollbackRegistry", "WRITE",
    "BudgetExceeded", "CircuitBreaker", "CircuitOpenError", "CostBudget", "Event", "GuardError", "LoopDetected",
    "ModelPrice", "Monitor", "PriceBook", "Reservation", "Run", "RunKilled", "RunLimitExceeded", "TokenBudget",
    "__version__", "current_run", "declare_labels",
    "default_monitor", "instrument", "llm_call", "result_fingerprint",
    "start_llm_call", "start_metrics_server", "subscribe",
    "uninstrument",
]


def instrument(**kwargs):
    """Instrument every supported SDK that is installed (OpenAI, Anthropic, LangChain/LangGraph, CrewAI);
    returns the names instrumented. See docs/integrations/."""
    from .instrumentation import instrument as _instrument

    return _instrument(**kwargs)


def uninstrument():
    from .instrumentation import uninstrument as _uninstrument

    return _uninstrument()
