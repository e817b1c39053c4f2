"""duration: the session has been running longer than ``max_seconds`` (from its start, or first event)."""

from __future__ import annotations

from .. import events as ev
from ..events import Event
from ..verdicts import ACTIVITY, detection
from ._fmt import seconds


class DurationDetector:
    name = "duration"
    family = "duration"
    consumes = ACTIVITY
    batch_lane = name   # keeps only its own state (Pipeline.emit_batch)
    ticks = True

    def __init__(self, max_seconds: float = 1800.0, started_at: float | None = None):
        self.max_seconds = max_seconds
        self.started_at = started_at
        self.live = True          # set by the command that knows (watch: the process is verified alive)
        self._fired = False
        self._last: Event | None = None

    def _check(self, at: float, cause: Event | None) -> list[Event] | None:
        if self._fired or self.started_at is None or at - self.started_at <= self.max_seconds:
            return None
        self._fired = True
        elapsed = at - self.started_at
        base = cause or self._last or Event(ev.DETECTION, at)
        verdict = detection(base, self.name, {"elapsed_seconds": round(elapsed, 3),
                                              "threshold_seconds": self.max_seconds},
                            f"DurationWatcher: running {seconds(elapsed)} (threshold: {seconds(self.max_seconds)})")
        verdict.ts = at
        return [verdict]

    def feed(self, event: Event) -> list[Event] | None:
        started = self.started_at
        if started is None:
            started = self.started_at = event.ts
        self._last = event
        if self._fired or event.ts - started <= self.max_seconds:   # _check's quick exit, on every event
            return None
        return self._check(event.ts, event)

    def tick(self, now: float) -> list[Event] | None:
        return self._check(now, None) if self.live else None
