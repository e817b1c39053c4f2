"""cost: the session's estimated spend (sum of ``llm_call.cost_usd``) goes over ``max_dollars``."""

from __future__ import annotations

from .. import events as ev
from ..events import Event
from ..verdicts import detection


class CostLimitDetector:
    name = "cost"
    family = "cost"
    consumes = frozenset({ev.LLM_CALL})
    batch_lane = name   # keeps only its own state (Pipeline.emit_batch)

    def __init__(self, max_dollars: float = 10.0):
        self.max_dollars = max_dollars
        self.total = 0.0
        self._fired = False

    def feed(self, event: Event) -> list[Event] | None:
        if not event.cost_usd:
            return None
        self.total += event.cost_usd
        if self._fired or self.total <= self.max_dollars:
            return None
        self._fired = True
        return [detection(event, self.name, {"cost_usd": round(self.total, 6), "threshold_usd": self.max_dollars},
                          f"CostWatcher: ${self.total:.2f} (threshold: ${self.max_dollars:.2f})")]

    def tick(self, now: float) -> None:
        return None
