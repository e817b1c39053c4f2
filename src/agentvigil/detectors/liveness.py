"""liveness_lost and zombie: the two heartbeats of a supervised child (``agentvigil supervise``).

* **liveness**: ``heartbeat`` events (the Monitor's background tick, ``status`` idle|busy);
* **progress**: ``step_end`` and ``run_end`` events, heartbeats with status ``progress``
  (``Monitor.heartbeat()``), and idle heartbeats (an idle agent is not stuck).

``liveness_lost``: no heartbeat for ``liveness_timeout`` (or none within ``startup_timeout`` of the start).
``zombie``: heartbeats fresh, a session busy, and no progress in it for ``progress_timeout``; once per stall.
A threshold of 0 turns its check off. Time is the supervisor's clock at receipt (``clock``), or the event's
``ts`` without one (replay). Built only when thresholds are given (``DetectorContext.health``): in-process
there is no child to watch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from .. import events as ev
from ..events import Event
from ..verdicts import detection

LIVENESS_LOST = "liveness_lost"
ZOMBIE = "zombie"


@dataclass
class SessionState:
    """One Monitor in the child (a child may create several)."""

    last_heartbeat: float | None = None
    last_progress: float = 0.0
    busy: bool = False
    active_runs: set = field(default_factory=set)


class Liveness:
    """The state behind both verdicts, fed with plain values (the detector and ``supervise``'s report use it)."""

    def __init__(self, liveness_timeout: float, startup_timeout: float, progress_timeout: float, started_at: float):
        self.liveness_timeout = liveness_timeout
        self.startup_timeout = startup_timeout
        self.progress_timeout = progress_timeout
        self.started_at = started_at
        self.sessions: dict[str, SessionState] = {}
        self.last_heartbeat: float | None = None
        self.last_progress: float | None = None
        self.last_run_status: str | None = None
        self.runs_ended = 0
        self.zombie_since: float | None = None

    def observe(self, kind: str | None, session_id: str | None, run_id: str | None, status: str | None,
                now: float) -> None:
        session = self.sessions.get(session_id or "")
        if session is None:
            if len(self.sessions) >= 1000:   # bounded: a child does not run a thousand Monitors
                self.sessions.pop(next(iter(self.sessions)))
            session = self.sessions[session_id or ""] = SessionState(last_progress=now)
        if kind == ev.HEARTBEAT:
            session.last_heartbeat = self.last_heartbeat = now
            if status == "progress":   # Monitor.heartbeat(): progress marked by hand, busy state unchanged
                self._progress(session, now)
                return
            session.busy = status == "busy"
            if not session.busy:
                self._progress(session, now)
        elif kind == ev.STEP_END:
            self._progress(session, now)
        elif kind == ev.RUN_START:
            if len(session.active_runs) < 10_000:
                session.active_runs.add(run_id)
            session.busy = True
        elif kind == ev.RUN_END:
            session.active_runs.discard(run_id)
            self.last_run_status = status
            self.runs_ended += 1
            self._progress(session, now)

    def _progress(self, session: SessionState, now: float) -> None:
        session.last_progress = now
        self.last_progress = now

    def live(self, now: float) -> bool:
        """Heartbeats are fresh (or, before the first one, the start-up allowance has not run out)."""
        if self.last_heartbeat is None:
            return not self.startup_timeout or now - self.started_at <= self.startup_timeout
        return not self.liveness_timeout or now - self.last_heartbeat <= self.liveness_timeout

    def stalled_session(self, now: float) -> tuple[str, float] | None:
        """(session id, seconds without progress) of a busy session past ``progress_timeout``."""
        limit = self.progress_timeout
        if not limit:
            return None
        for session_id, session in self.sessions.items():
            if session.busy and session.last_heartbeat is not None and now - session.last_progress > limit:
                return session_id, now - session.last_progress
        return None

    def progressing(self, now: float) -> bool:
        """Ready in the probe sense: heartbeats seen and fresh, and no busy session stalled."""
        return self.last_heartbeat is not None and self.live(now) and self.stalled_session(now) is None

    def check(self, now: float) -> list[tuple[str, dict]]:
        """(verdict, detail) pairs judged on the clock."""
        if not self.live(now):
            since = self.last_heartbeat if self.last_heartbeat is not None else self.started_at
            return [(LIVENESS_LOST, {"seconds_since_heartbeat": round(now - since, 3),
                                     "heartbeat_seen": self.last_heartbeat is not None})]
        stalled = self.stalled_session(now)
        if stalled is None:
            self.zombie_since = None
            return []
        if self.zombie_since is not None:
            return []
        self.zombie_since = now
        return [(ZOMBIE, {"session_id": stalled[0], "seconds_without_progress": round(stalled[1], 3)})]


_REASONS = {LIVENESS_LOST: "LivenessLost: no heartbeat for {seconds_since_heartbeat:g}s",
            ZOMBIE: "Zombie: busy with no progress for {seconds_without_progress:g}s"}


class LivenessDetector:
    name = LIVENESS_LOST
    family = "liveness"
    consumes = frozenset({ev.HEARTBEAT, ev.STEP_END, ev.RUN_START, ev.RUN_END})
    ticks = True

    def __init__(self, liveness_timeout: float, startup_timeout: float, progress_timeout: float,
                 started_at: float | None = None, clock: Callable[[], float] | None = None):
        self.clock = clock
        start = started_at if started_at is not None else (clock() if clock is not None else 0.0)
        self.state = Liveness(liveness_timeout, startup_timeout, progress_timeout, start)
        self._started = started_at is not None or clock is not None
        self._last: Event | None = None

    def reset(self, started_at: float) -> None:
        """A new child started: its sessions and heartbeats start from nothing."""
        s = self.state
        self.state = Liveness(s.liveness_timeout, s.startup_timeout, s.progress_timeout, started_at)
        self._started, self._last = True, None

    def feed(self, event: Event) -> None:
        now = self.clock() if self.clock is not None else event.ts
        if not self._started:   # replay without a start: the first event dates the session
            self.state.started_at, self._started = now, True
        self._last = event
        self.state.observe(event.event_type, event.session_id, event.run_id, event.status, now)
        return None

    def tick(self, now: float) -> list[Event] | None:
        if not self._started:
            return None
        found = self.state.check(now)
        if not found:
            return None
        out = []
        base = self._last or Event(ev.DETECTION, now)
        for verdict, detail in found:
            event = detection(base, verdict, detail, _REASONS[verdict].format(**detail))
            if verdict == ZOMBIE:
                event.session_id = detail["session_id"] or base.session_id
            # Verdicts carry wall time like every event (the supervisor's clock is monotonic).
            event.ts = now if self.clock is None else time.time() - (self.clock() - now)
            event.run_id, event.step_index, event.tool_name = None, None, None
            out.append(event)
        return out
