"""run_limit: a run reached one of the limits it declared (``Monitor.run(max_steps=, max_seconds=,
max_cost_usd=)``, recorded on ``run_start``). One verdict per run, ``detail.limit`` naming which. In process
the run then stops with ``RunLimitExceeded`` at its next boundary (``sinks/run_actions.py``).

Judged from the run's own events (steps ended, priced LLM calls, timestamps), so replay and watch reach the
same verdict; ``tick`` lets a run that sits in one long step reach its time limit in process too. Tool results
are not consumed: the limits never cost anything on the tool-call path.
"""

from __future__ import annotations

import sys

from .. import events as ev
from ..events import Event
from ..verdicts import detection
from ._state import MAX_OPEN_RUNS, PerRun

RUN_LIMIT = "run_limit"
_MAX_FLOAT = sys.float_info.max
LIMITS = ("max_steps", "max_seconds", "max_cost_usd")


class _Run:
    __slots__ = ("start", "limits", "steps", "cost", "fired", "cause")

    def __init__(self) -> None:
        self.start = 0.0
        self.limits: dict[str, float] = {}
        self.steps = 0
        self.cost = 0.0
        self.fired = False
        self.cause: Event | None = None   # the run_start, for verdicts found by the clock


class RunLimitDetector:
    name = RUN_LIMIT
    family = "limit"
    consumes = frozenset({ev.RUN_START, ev.STEP_END, ev.LLM_CALL, ev.RUN_END})
    batch_lane = name   # keeps only its own state (Pipeline.emit_batch)
    ticks = True

    def __init__(self) -> None:
        self._runs: PerRun[_Run] = PerRun(_Run)
        self._timed: dict[int, _Run] = {}   # runs with max_seconds still unjudged, for tick

    def feed(self, event: Event) -> list[Event] | None:
        kind = event.event_type
        if kind == ev.RUN_START:
            limits = _limits(event.detail)
            if limits:
                state = self._runs.get(event)
                state.start, state.limits, state.cause = event.ts, limits, event
                if "max_seconds" in limits:
                    self._timed[id(state)] = state
                    if len(self._timed) > MAX_OPEN_RUNS:   # runs that never end: oldest first, as PerRun
                        self._timed.pop(next(iter(self._timed)))
            return None
        if not self._runs._states:   # no run declared a limit (the usual case): nothing to judge
            return None
        found = self._runs.peek(event)
        if found is None:
            return None
        state = found
        if kind == ev.RUN_END:
            self._runs.pop(event)
            self._timed.pop(id(state), None)
            if state.fired:
                return None
        elif kind == ev.STEP_END:
            state.steps += 1
        elif event.cost_usd:
            state.cost += event.cost_usd
        if state.fired:
            return None
        return self._judge(state, event, event.ts)

    def _judge(self, state: _Run, cause: Event, now: float) -> list[Event] | None:
        limits = state.limits
        for limit, value in (("max_steps", state.steps), ("max_cost_usd", state.cost),
                             ("max_seconds", now - state.start)):
            threshold = limits.get(limit)
            if threshold is not None and value >= threshold:
                state.fired = True
                self._timed.pop(id(state), None)
                return [detection(cause, RUN_LIMIT,
                                  {"limit": limit, "value": round(value, 6), "threshold": threshold},
                                  f"run limit {limit}: {value:g} >= {threshold:g}")]
        return None

    def tick(self, now: float) -> list[Event] | None:
        found: list[Event] = []
        for state in list(self._timed.values()):
            if state.cause is not None and now - state.start >= state.limits["max_seconds"]:
                for verdict in self._judge(state, state.cause, now) or ():
                    verdict.ts = now
                    found.append(verdict)
        return found or None


def _limits(detail: dict | None) -> dict[str, float]:
    if not detail:
        return {}
    out = {}
    for key in LIMITS:
        value = detail.get(key)
        # at most the largest float: an int beyond it (10**400) would overflow float(); no limit, as for inf
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= _MAX_FLOAT:
            out[key] = float(value)
    return out
