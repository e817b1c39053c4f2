"""The detectors that judge the event stream. The in-process Monitor, ``agentvigil replay`` and
``agentvigil watch`` all feed events through ``Judge.feed``: one code path, one set of verdicts.

A verdict is itself an Event (``event_type="detection"``) so it can be recorded, exported and replayed.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from . import events as ev
from .events import Event
from .signals.cost import CostBaseline
from .signals.loops import LoopPolicy, LoopState

COST_OVER_BASELINE = "cost_over_baseline"


@dataclass(frozen=True, slots=True)
class CostPolicy:
    spike_factor: float = 3.0   # a run costing more than this × the baseline is a spike
    baseline_runs: int = 50     # completed runs in the rolling median
    min_runs: int = 5           # no verdicts before this many runs completed


class _RunState:
    __slots__ = ("loops", "cost", "flagged_cost", "agent")

    def __init__(self, agent: str | None, loop_policy: LoopPolicy):
        self.agent = agent
        self.loops = LoopState(loop_policy)
        self.cost = 0.0
        self.flagged_cost = False


class Judge:
    """Stateful detectors over events of many runs and agents. Not thread-safe: callers serialise feeds
    (the Monitor holds its lock only for this bookkeeping, never across user code)."""

    def __init__(self, loop_policy: LoopPolicy | None = None, cost_policy: CostPolicy | None = None,
                 max_open_runs: int = 10_000):
        self.loop_policy = loop_policy or LoopPolicy()
        self.cost_policy = cost_policy or CostPolicy()
        self._runs: OrderedDict[str, _RunState] = OrderedDict()
        self._baselines: dict[str | None, CostBaseline] = {}
        self._max_open_runs = max_open_runs

    def baseline(self, agent: str | None) -> float | None:
        b = self._baselines.get(agent)
        return None if b is None else b.value

    def _run(self, event: Event) -> _RunState:
        key = event.run_id or f"{event.session_id}:{event.task_id}"
        state = self._runs.get(key)
        if state is None:
            state = self._runs[key] = _RunState(event.agent_id, self.loop_policy)
            if len(self._runs) > self._max_open_runs:  # runs that never ended (crash, truncated log)
                self._runs.popitem(last=False)
        return state

    def feed(self, event: Event) -> list[Event]:
        """Judge one event; returns the detections it triggers (a new list, usually empty)."""
        kind = event.event_type
        if kind == ev.TOOL_END:
            found = self._run(event).loops.observe(event.tool_name or "?", event.args_hash, event.result_hash)
            return [self._detection(event, name, detail) for name, detail in found] if found else []
        if kind == ev.LLM_CALL:
            if event.cost_usd:
                state = self._run(event)
                state.cost += event.cost_usd
                return self._check_cost(event, state, state.cost, in_flight=True)
            return []
        if kind == ev.RUN_END:
            key = event.run_id or f"{event.session_id}:{event.task_id}"
            state = self._runs.pop(key, None)
            cost = event.cost_usd if event.cost_usd is not None else (state.cost if state else 0.0)
            out: list[Event] = []
            if state is not None and not state.flagged_cost:
                out = self._check_cost(event, state, cost, in_flight=False)
            elif state is None:
                out = self._check_cost(event, _RunState(event.agent_id, self.loop_policy), cost, in_flight=False)
            baseline = self._baselines.get(event.agent_id)
            if baseline is None:
                policy = self.cost_policy
                baseline = self._baselines[event.agent_id] = CostBaseline(policy.baseline_runs, policy.min_runs)
            if event.status == "ok":  # failed runs stop early and cheap: they would drag the baseline down
                baseline.add(cost)
            return out
        return []

    def _check_cost(self, event: Event, state: _RunState, cost: float, in_flight: bool) -> list[Event]:
        if state.flagged_cost:
            return []
        baseline = self.baseline(event.agent_id)
        if not baseline or cost <= self.cost_policy.spike_factor * baseline:
            return []
        state.flagged_cost = True
        detail = {"cost_usd": round(cost, 6), "baseline_usd": round(baseline, 6),
                  "ratio": round(cost / baseline, 2), "in_flight": in_flight}
        return [self._detection(event, COST_OVER_BASELINE, detail)]

    @staticmethod
    def _detection(event: Event, detector: str, detail: dict) -> Event:
        return Event(ev.DETECTION, event.ts, agent_id=event.agent_id, session_id=event.session_id,
                     run_id=event.run_id, task_id=event.task_id, correlation_id=event.correlation_id,
                     step_index=event.step_index, tool_name=event.tool_name, detector=detector, detail=detail)
