"""silence: no event at all (heartbeats included) for ``max_seconds`` while the process is alive: the agent
is hung so hard that even its heartbeat thread stopped, or its recorder is wedged."""

from __future__ import annotations

from .. import events as ev
from ..events import Event
from ..verdicts import ACTIVITY, detection
from ._fmt import seconds


class SilenceDetector:
    name = "silence"
    family = "silence"
    consumes = ACTIVITY
    batch_lane = name   # keeps only its own state (Pipeline.emit_batch)
    ticks = True

    def __init__(self, max_seconds: float = 30.0):
        self.max_seconds = max_seconds
        self.last_activity: float | None = None
        self.live = True          # watch sets it from /proc; judged only while the process is alive
        self._fired = False
        self._last: Event | None = None

    def activity(self, now: float) -> None:
        """Something arrived (even a line that was not a valid event)."""
        self.last_activity = now
        self._fired = False

    def feed(self, event: Event) -> None:
        self._last = event
        return None

    def tick(self, now: float) -> list[Event] | None:
        if not self.live or self._fired:
            return None
        if self.last_activity is None:
            self.last_activity = now
            return None
        quiet = now - self.last_activity
        if quiet <= self.max_seconds:
            return None
        self._fired = True
        base = self._last or Event(ev.DETECTION, now)
        verdict = detection(base, self.name, {"silent_seconds": round(quiet, 3), "threshold_seconds": self.max_seconds},
                            f"SilenceWatcher: no events for {seconds(quiet)} while the process is alive")
        verdict.ts, verdict.run_id, verdict.step_index, verdict.tool_name = now, None, None, None
        return [verdict]
