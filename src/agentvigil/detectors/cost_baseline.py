"""cost_over_baseline: a run (in flight or finished) costing more than spike_factor × the agent's rolling
median of finished runs. Flagged runs do not feed the baseline, so a runaway does not teach it to be normal.

The window lives in the ``RunawayHistory`` the runaway detector keeps too: carried from one pipeline of a
command to the next (replay's sessions) and, with its state file, across processes, so a harness that starts
one process per task has a baseline once ``min_runs`` runs have ended, not never."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import events as ev
from ..events import Event
from ..verdicts import detection
from ._state import PerRun
from .runaway import CLOSE_WAIT, RunawayHistory, RunawayPolicy

COST_OVER_BASELINE = "cost_over_baseline"


@dataclass(frozen=True, slots=True)
class CostPolicy:
    spike_factor: float = 3.0   # a run costing more than this × the baseline is a spike
    baseline_runs: int = 50     # completed runs in the rolling median
    min_runs: int = 5           # no verdicts before this many runs completed


class _Run:
    __slots__ = ("cost", "flagged")

    def __init__(self) -> None:
        self.cost = 0.0
        self.flagged = False


class CostBaselineDetector:
    name = COST_OVER_BASELINE
    family = "cost"
    consumes = frozenset({ev.LLM_CALL, ev.RUN_END})
    batch_lane = "runaway_history"   # shares RunawayHistory with runaway (Pipeline.emit_batch)

    def __init__(self, policy: CostPolicy | None = None, history: RunawayHistory | None = None):
        self.policy = policy or CostPolicy()
        self._runs: PerRun[_Run] = PerRun(_Run)
        self.history = history if history is not None else RunawayHistory(RunawayPolicy())
        self.history.use_cost_window(self.policy.baseline_runs, self.policy.min_runs)
        self.baseline = self.history.cost_baseline   # the agent's baseline, or None (also read by the metrics)

    def feed(self, event: Event) -> list[Event] | None:
        if event.event_type == ev.LLM_CALL:
            if not event.cost_usd or (event.run_id is None and event.task_id is None):
                return None   # calls outside any run belong to no run: nothing to compare
            state = self._runs.get(event)
            state.cost += event.cost_usd
            return self._check(event, state, state.cost, in_flight=True)
        state = self._runs.pop(event) or _Run()
        cost = event.cost_usd if event.cost_usd is not None else state.cost
        out = self._check(event, state, cost, in_flight=False)
        # Failed runs stop early and cheap (they would drag the baseline down); flagged runs would lift it; a run
        # without a priced call has no cost to compare (an unpriced agent keeps no window, and writes none).
        if event.status == "ok" and not state.flagged and 0 < cost < math.inf:
            self.history.learn_cost(event.agent_id, cost)
        return out

    def _check(self, event: Event, state: _Run, cost: float, in_flight: bool) -> list[Event] | None:
        if state.flagged:
            return None
        baseline = self.baseline(event.agent_id)
        if not baseline or cost <= self.policy.spike_factor * baseline:
            return None
        state.flagged = True
        detail = {"cost_usd": round(cost, 6), "baseline_usd": round(baseline, 6),
                  "ratio": round(cost / baseline, 2), "in_flight": in_flight}
        return [detection(event, COST_OVER_BASELINE, detail,
                          f"run cost ${cost:.4f} is {cost / baseline:.1f}x the baseline ${baseline:.4f}")]

    def close(self) -> None:
        """Write what is not yet in the state file (as runaway does; whichever closes first writes it)."""
        self.history.save(CLOSE_WAIT)

    def tick(self, now: float) -> None:
        return None
