"""Token budget: reserve before a call, commit the actual usage after, release on failure.

utilization = (committed + reserved) / limit. Thread- and task-safe: the lock guards arithmetic only and
is never held across an await or the user's call.

``backend=`` (a ``redis://`` URL or a backend object, see ``agentvigil.backends``) keeps the counters in a
store shared by every worker and host, so one limit holds for the whole fleet; ``committed`` and
``reserved`` then mirror the fleet's totals as of this process's last operation.
"""

from __future__ import annotations

import math
import numbers
import time
from typing import Any

from . import events as ev
from ._safety import fork_safe_lock, internal_error
from .exceptions import BudgetExceeded


class Reservation:
    """Tokens held for one call. Exactly one of ``commit`` / ``release`` takes effect; later calls are
    no-ops. As a context manager: released on an exception, committed (at the reserved amount unless
    ``commit`` was called) on success.

    ``commit(actual)`` never raises: an ``actual`` that is not a finite number >= 0 commits the reserved amount
    instead and is counted in ``agentvigil_internal_errors_total{component="budget"}``."""

    __slots__ = ("budget", "tokens", "done", "rid")

    def __init__(self, budget: "TokenBudget", tokens: int, rid: str | None = None):
        self.budget = budget
        self.tokens = tokens
        self.done = False
        self.rid = rid  # its id in a shared backend

    def commit(self, actual: int | None = None) -> None:
        if not self.done:
            self.done = True
            tokens = self.tokens
            if actual is not None:
                try:
                    tokens = self.budget._units(actual, "actual")
                except ValueError as exc:  # bad usage data from a provider: charge what was reserved
                    internal_error("budget", exc)
            self.budget._settle(self.tokens, tokens, self.rid)

    def release(self) -> None:
        if not self.done:
            self.done = True
            self.budget._settle(self.tokens, 0, self.rid)

    def __enter__(self) -> "Reservation":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.commit()
        else:
            self.release()

    async def __aenter__(self) -> "Reservation":
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)


class TokenBudget:
    unit = "tokens"

    def __init__(self, name: str, limit: int, *, monitor: Any = None, registry: Any = None, backend: Any = None):
        if self._units(limit, "limit") <= 0:
            raise ValueError(f"{type(self).__name__} limit must be positive, got {limit!r}")
        self.name = name
        self.limit = self._units(limit, "limit")
        self._monitor = monitor
        self._lock = fork_safe_lock()
        self.committed = 0
        self.reserved = 0
        self._registry = registry
        self._backend = None
        if backend is not None:
            from .backends import budget_backend

            self._backend = budget_backend(backend)
            shared = self._backend.read(self)
            if shared is not None:
                self.committed, self.reserved = shared.committed, shared.reserved
        self._update_gauges(self.committed, self.reserved, outside_run=True)

    @property
    def utilization(self) -> float:
        return (self.committed + self.reserved) / self.limit

    @property
    def remaining(self) -> int:
        return max(self.limit - self.committed - self.reserved, 0)

    def reserve(self, tokens: int) -> Reservation:
        """Hold ``tokens`` for a call. Raises BudgetExceeded (and counts it) if that would pass the limit.

        Raises ValueError if ``tokens`` is not a finite number >= 0: that is a bug at the call site, and
        guessing an amount would either block the agent or let it spend unchecked."""
        tokens = self._units(tokens, "tokens")
        if self._backend is not None:
            return self._reserve_shared(tokens)
        with self._lock:
            available = self.limit - self.committed - self.reserved
            if tokens > available:
                committed, reserved = self.committed, self.reserved
                refused = True
            else:
                self.reserved += tokens
                committed, reserved = self.committed, self.reserved
                refused = False
        if refused:
            self._exceeded_event(tokens, committed, reserved, "reserve")
            raise self._refusal(tokens, max(available, 0))
        self._update_gauges(committed, reserved)
        return Reservation(self, tokens)

    def _reserve_shared(self, tokens: int) -> Reservation:
        decision = self._backend.reserve(self, tokens)  # type: ignore[union-attr]
        self.committed, self.reserved = decision.committed, decision.reserved
        if not decision.granted:
            self._exceeded_event(tokens, decision.committed, decision.reserved, "reserve")
            raise self._refusal(tokens, max(self.limit - decision.committed - decision.reserved, 0))
        self._update_gauges(decision.committed, decision.reserved)
        return Reservation(self, tokens, decision.rid)

    def reset(self) -> None:
        """Start a new budget period (outstanding reservations still settle against it)."""
        if self._backend is not None:
            shared = self._backend.reset(self)
            if shared is not None:
                self.committed, self.reserved = shared.committed, shared.reserved
                self._update_gauges(shared.committed, shared.reserved)
            return
        with self._lock:
            self.committed = 0
            committed, reserved = self.committed, self.reserved
        self._update_gauges(committed, reserved)

    def _settle(self, reserved: int, actual: int, rid: str | None = None) -> None:
        if self._backend is not None:
            shared = self._backend.settle(self, rid, actual)
            if shared is None:
                return  # counted by the backend; the reservation expires in the store
            self.committed, self.reserved = shared.committed, shared.reserved
            self._update_gauges(shared.committed, shared.reserved)
            if actual and shared.committed > self.limit >= shared.before:
                self._exceeded_event(actual, shared.committed, shared.reserved, "commit")
            return
        with self._lock:
            self.reserved = max(self.reserved - reserved, 0)
            before = self.committed
            self.committed += actual
            committed, reserved_now = self.committed, self.reserved
        self._update_gauges(committed, reserved_now)
        if actual and committed > self.limit >= before:
            self._exceeded_event(actual, committed, reserved_now, "commit")

    # -- units: whole tokens here; CostBudget counts micro-dollars so the same (integer) backends serve both
    @staticmethod
    def _units(value: Any, name: str) -> int:
        return _whole_tokens(value, name)

    def _refusal(self, requested: int, available: int) -> BudgetExceeded:
        return BudgetExceeded(self.name, requested, available)

    def _detail(self, committed: int, reserved: int, **extra: Any) -> dict:
        return {"limit": self.limit, "committed": committed, "reserved": reserved, **extra}

    def _update_gauges(self, committed: int, reserved: int, outside_run: bool = False) -> None:
        """Guards only build events: ``guard_state`` carries what the budget gauges show."""
        self._emit(ev.Event(ev.GUARD_STATE, time.time(), name=self.name,
                            detail=self._detail(committed, reserved, guard="budget")), outside_run)

    def _exceeded_event(self, tokens: int, committed: int, reserved: int, how: str) -> None:
        self._emit(ev.Event(ev.BUDGET_EXCEEDED, time.time(), name=self.name,
                            token_count=tokens if self.unit == "tokens" else None, reason=how,
                            detail=self._detail(committed, reserved)))

    def _emit(self, event: ev.Event, outside_run: bool = False) -> None:
        try:
            # imported on first publish: routing brings in prometheus_client, which a guard may never need
            from .pipeline.routing import publish_guard

            publish_guard(event, self._monitor, self._registry, outside_run)
        except Exception as exc:
            internal_error("budget", exc)

    def __repr__(self) -> str:
        return f"TokenBudget({self.name!r}, committed={self.committed}, reserved={self.reserved}, limit={self.limit})"


MICRO = 1_000_000


class CostBudget(TokenBudget):
    """A budget in US dollars: ``CostBudget("daily", usd_limit=50.0)``; ``reserve(usd)`` before a call,
    ``commit(actual_usd)`` after (e.g. ``call.cost_usd``). Same semantics, thread safety and shared
    ``backend=`` as TokenBudget; amounts are kept in whole micro-dollars so the counters stay exact integers.
    ``committed``/``reserved``/``limit`` are in micro-dollars; ``*_usd`` give dollars. Its events carry
    ``detail.unit="usd"``: it is counted in ``agent_budget_exceeded_total`` and
    ``agent_budget_utilization_ratio`` and left out of the token gauges."""

    unit = "usd"

    def __init__(self, name: str, usd_limit: float, *, monitor: Any = None, registry: Any = None,
                 backend: Any = None):
        super().__init__(name, usd_limit, monitor=monitor, registry=registry, backend=backend)  # type: ignore[arg-type]

    @staticmethod
    def _units(value: Any, name: str) -> int:
        micro = float(value) * MICRO if _finite_amount(value) else math.inf   # 1e303 USD is finite, its µUSD not
        if not math.isfinite(micro):
            raise ValueError(f"{name} must be a finite amount of USD >= 0 (at most 1.7e302), got {value!r}"[:200])
        return int(round(micro))

    @property
    def limit_usd(self) -> float:
        return self.limit / MICRO

    @property
    def spent_usd(self) -> float:
        return self.committed / MICRO

    @property
    def remaining_usd(self) -> float:
        return self.remaining / MICRO

    def _refusal(self, requested: int, available: int) -> BudgetExceeded:
        return BudgetExceeded(self.name, requested / MICRO, available / MICRO, unit="usd")

    def _detail(self, committed: int, reserved: int, **extra: Any) -> dict:
        return {"limit": self.limit, "committed": committed, "reserved": reserved, "unit": "usd", **extra}

    def __repr__(self) -> str:
        return (f"CostBudget({self.name!r}, spent_usd={self.spent_usd:.6f}, reserved_usd={self.reserved / MICRO:.6f}, "
                f"usd_limit={self.limit_usd:.6f})")


def _whole_tokens(value: Any, name: str) -> int:
    """``value`` as a whole number of tokens; ValueError naming ``name`` unless it is a finite number >= 0."""
    if not _finite_amount(value):
        raise ValueError(f"{name} must be a finite number of tokens >= 0, got {value!r}"[:200])
    return int(value)


def _finite_amount(value: Any) -> bool:
    """A real number >= 0 that a float can hold (an int past 1.8e308 cannot: float() of it overflows)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        number = float(value)
        return math.isfinite(number) and number >= 0
    except (OverflowError, ValueError, TypeError):
        return False
