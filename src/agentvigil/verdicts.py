"""What a detector is and what it returns: the detector protocol and its verdicts (detection events).

Below the pipeline and the detectors alike, so that every detector module needs only the event model and this.
"""

from __future__ import annotations

from typing import Iterable, Protocol, runtime_checkable

from . import events as ev
from .events import Event

# What time-based detectors count as activity: enough to date a session without the per-call start events.
ACTIVITY = frozenset({ev.RUN_START, ev.RUN_END, ev.STEP_END, ev.TOOL_END, ev.LLM_CALL, ev.HEARTBEAT,
                      ev.BREAKER_TRANSITION, ev.BUDGET_EXCEEDED, ev.KILL})


@runtime_checkable
class Detector(Protocol):
    """Judges events. ``name`` is the detector name written on its verdicts; ``family`` groups detectors
    that see the same symptom (they must not corroborate each other in correlation); ``consumes`` the
    event types it wants. ``feed`` and ``tick`` return verdicts (detection Events) or None."""

    name: str
    family: str
    consumes: frozenset[str]

    def feed(self, event: Event) -> Iterable[Event] | None: ...

    def tick(self, now: float) -> Iterable[Event] | None: ...


def detection(cause: Event, detector: str, detail: dict, reason: str | None = None) -> Event:
    """A verdict about ``cause``: a detection event carrying its identity (agent, session, run, step)."""
    return Event(ev.DETECTION, cause.ts, agent_id=cause.agent_id, session_id=cause.session_id,
                 run_id=cause.run_id, task_id=cause.task_id, correlation_id=cause.correlation_id,
                 step_index=cause.step_index, tool_name=cause.tool_name, detector=detector, reason=reason,
                 detail=detail, scope=cause.scope)
