"""budget: a recorded ``budget_exceeded`` (a TokenBudget refused or overran), or the session's tokens going
over ``max_tokens`` (for agents without an in-process budget)."""

from __future__ import annotations

import math
from typing import TypeGuard

from .. import events as ev
from ..events import Event
from ..verdicts import detection


class BudgetDetector:
    name = "budget"
    family = "budget"
    consumes = frozenset({ev.BUDGET_EXCEEDED, ev.LLM_CALL})
    batch_lane = name   # keeps only its own state (Pipeline.emit_batch)

    def __init__(self, max_tokens: int | None = None):
        self.max_tokens = max_tokens
        self.tokens = 0
        self._fired_tokens = False
        self._fired_budgets: set[str | None] = set()

    def feed(self, event: Event) -> list[Event] | None:
        if event.event_type == ev.BUDGET_EXCEEDED:
            if event.name in self._fired_budgets or len(self._fired_budgets) > 1000:
                return None
            self._fired_budgets.add(event.name)
            detail = dict(event.detail or {})
            limit, committed, reserved = detail.get("limit"), detail.get("committed"), detail.get("reserved")
            if _number(limit) and limit > 0:
                utilization = _utilization(committed, reserved, limit)
                if utilization is not None:
                    detail["utilization"] = utilization
            detail.update(budget=event.name, tokens=event.token_count, how=event.reason)
            return [detection(event, self.name, detail,
                              f"BudgetWatcher: budget {event.name!r} exceeded ({event.reason or '-'})")]
        if not self.max_tokens:
            return None
        used = event.token_count if event.token_count is not None else (
            (event.input_tokens or 0) + (event.output_tokens or 0))
        self.tokens += used
        if self._fired_tokens or self.tokens <= self.max_tokens:
            return None
        self._fired_tokens = True
        return [detection(event, self.name, {"tokens": self.tokens, "threshold_tokens": self.max_tokens,
                                             "utilization": round(self.tokens / self.max_tokens, 4)},
                          f"BudgetWatcher: {self.tokens} tokens (threshold: {self.max_tokens})")]

    def tick(self, now: float) -> None:
        return None


def _utilization(committed: object, reserved: object, limit: float) -> float | None:
    """(committed + reserved) / limit, rounded; None when it is no finite number (a recorded 10**400 or 1e308
    over a tiny limit: the verdict stands, without a utilization JSON could not write)."""
    try:
        held = (committed if _number(committed) else 0) + (reserved if _number(reserved) else 0)
        value = round(held / limit, 4)
    except (OverflowError, ValueError):   # an int beyond float range, in the sum or the division
        return None
    return value if math.isfinite(value) else None


def _number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
