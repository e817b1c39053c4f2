"""breaker: a circuit breaker opened (its provider is failing)."""

from __future__ import annotations

from .. import events as ev
from ..events import Event
from ..verdicts import detection


class BreakerDetector:
    name = "breaker"
    family = "breaker"
    consumes = frozenset({ev.BREAKER_TRANSITION})
    batch_lane = name   # keeps only its own state (Pipeline.emit_batch)

    def feed(self, event: Event) -> list[Event] | None:
        if event.state != "open":
            return None
        return [detection(event, self.name, {"breaker": event.name, "reason": event.reason},
                          f"Detector breaker: {event.name!r} opened ({event.reason or '-'})")]

    def tick(self, now: float) -> None:
        return None
