"""The Monitor API the integrations call, taken from the modules that define it: instrumentation never
imports the package root (a layer pointing up, and the root's import cost on every patched call site)."""

from .._context import current_run
from ..breaker import CircuitBreaker
from ..budget import TokenBudget
from ..monitor import default_monitor, start_llm_call

__all__ = ["CircuitBreaker", "TokenBudget", "current_run", "default_monitor", "start_llm_call"]
