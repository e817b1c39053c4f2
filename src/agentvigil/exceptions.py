"""The only exceptions agentvigil raises into user code. Each is raised by a guard the user chose to use
(a breaker, a budget, a loop guard set to ``raise``, a kill switch); everything else is swallowed, counted in
``agentvigil_internal_errors_total`` and logged once."""

from __future__ import annotations


class GuardError(Exception):
    """Base class of the deliberate stops. Catch this to handle them all."""


class CircuitOpenError(GuardError):
    """The breaker is open (or half-open with its probe slots taken): the call was not made."""

    def __init__(self, breaker: str, retry_after: float):
        super().__init__(f"circuit breaker {breaker!r} is open; retry in {retry_after:.1f}s")
        self.breaker = breaker
        self.retry_after = retry_after


class BudgetExceeded(GuardError):
    """Reserving would take the budget (tokens, or dollars for a CostBudget) over its limit: the call was not
    made."""

    def __init__(self, budget: str, requested: float, available: float, unit: str = "tokens"):
        kind = "cost" if unit == "usd" else "token"
        super().__init__(f"{kind} budget {budget!r} exceeded: requested {requested}, available {available}"
                         + (" USD" if unit == "usd" else ""))
        self.unit = unit
        self.budget = budget
        self.requested = requested
        self.available = available


class LoopDetected(GuardError):
    """The loop guard (``loop_action="raise"``) stopped the run at the next step or tool boundary."""

    def __init__(self, detector: str, detail: dict):
        super().__init__(f"loop detected ({detector}): {detail}")
        self.detector = detector
        self.detail = detail


class RunKilled(GuardError):
    """The run was killed (``run.kill()``, ``Monitor.kill_all()`` or an external trigger); raised at the next
    step, tool or LLM-call boundary."""

    def __init__(self, reason: str):
        super().__init__(f"run killed: {reason}")
        self.reason = reason


class RunLimitExceeded(GuardError):
    """The run reached one of its own limits (``Monitor.run(max_steps=, max_seconds=, max_cost_usd=)``);
    raised at its next step, tool-call or LLM-call boundary. ``limit`` names it, ``value`` is what was used
    and ``threshold`` what was allowed."""

    def __init__(self, limit: str, value: float, threshold: float):
        super().__init__(f"run limit {limit} reached: {value:g} (limit {threshold:g})")
        self.limit = limit
        self.value = value
        self.threshold = threshold
