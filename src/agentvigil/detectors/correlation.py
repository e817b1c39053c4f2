"""correlated: verdicts of ``min_watchers`` different families within ``window`` seconds are one incident
(seed 002: two thresholds at once). Detectors of one family see one symptom (retry, repeat_call and the
sequence detector are all "loop"), so they never corroborate each other. Fires at most once per window."""

from __future__ import annotations

from .. import events as ev
from ..events import Event
from ..verdicts import detection

CORRELATED = "correlated"


class CorrelationDetector:
    name = CORRELATED
    family = CORRELATED
    consumes = frozenset({ev.DETECTION})

    def __init__(self, families: dict[str, str], window: float = 60.0, min_watchers: int = 2):
        self.families = families          # verdict name -> family
        self.window = window
        self.min_watchers = min_watchers
        self._last: dict[str, tuple[float, str]] = {}   # family -> (ts, message)
        self._fired_at: float | None = None

    def feed(self, event: Event) -> list[Event] | None:
        name = event.detector or "?"
        if name == CORRELATED:
            return None
        ts = event.ts
        self._last[self.families.get(name, name)] = (ts, event.reason or name)
        recent = {k: v for k, v in self._last.items() if ts - v[0] <= self.window}
        self._last = recent
        if len(recent) < self.min_watchers:
            return None
        if self._fired_at is not None and ts - self._fired_at < self.window:
            return None
        self._fired_at = ts
        kinds = sorted(recent)
        return [detection(event, CORRELATED, {"watchers": kinds, "window_seconds": self.window,
                                              "messages": [recent[k][1] for k in kinds]},
                          f"CorrelatedBreach: {' + '.join(kinds)} within {self.window:g}s — escalating")]

    def tick(self, now: float) -> None:
        return None
