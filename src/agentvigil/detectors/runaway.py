"""runaway: the run is on course to exhaust its budget or limits (docs/detection.md).

Compared with the agent's own completed, healthy runs (status ok, never flagged by this detector), and with
how its runs ended:

* length — more tool results than ``length_factor`` × the ``quantile`` of completed runs' lengths;
* ends unfinished — of the agent's last ``baseline_runs`` ended runs, flagged or not, those that got this far
  (at least ``unfinished_runs``) ended unfinished (``error``) at least ``unfinished_share`` of the time; runs this
  library stopped (``killed``, ``LoopDetected``) are left out, so no verdict feeds itself. "This far" is
  measured twice: in steps (``ends_unfinished``) and in total spend (``spent_unfinished``: cost, or tokens when
  nothing is priced), which catches a cost limit nobody declared: runs it stops are no longer than healthy
  ones, they cost more;
* spend at the same step index — cumulative cost (or tokens, when nothing is priced) at a checkpoint step,
  less the run's single largest call (one long reply is not a course), above ``spend_factor`` × the
  ``quantile`` of what completed runs had spent by that step, at ``hold`` checkpoints in a row;
* limits — when the run declared ``max_steps`` / ``max_cost_usd`` (``Monitor.run(...)``, recorded on
  ``run_start``): past ``limit_fraction`` of either while going over the same ground (at most
  ``limit_distinct`` of its tool results distinct (tool, arguments, result) triples);
* context growth — the Theil–Sen slope of the input tokens of the run's last ``slope_window`` calls, either
  above ``slope_factor`` × the ``quantile`` of completed runs' slopes at the same checkpoint step, at ``hold``
  checkpoints in a row (``context_slope``: one large result that raises the context once is a step, not a
  slope), or projected over the next ``slope_horizon`` calls past the model's ``context_window``
  (``context_limit``).

The baseline keeps the last ``baseline_runs`` runs per agent, checkpointed at geometric step indices, so
memory is bounded and each event costs O(1) (quantiles are recomputed as runs complete, every 5 % of the
baseline once it is full enough; the slope costs O(``slope_window``²), computed only at a checkpoint or when
the run has a window or cost limit to project to). What ended runs teach lives in a ``RunawayHistory``: shared
by the pipelines of one command (replay's sessions), and with ``state_file`` (by default beside a recording
Monitor's sessions) across processes, so a harness that starts one process per task has a baseline from its
second run, and workers sharing the file share one baseline.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
import weakref
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from statistics import median

try:
    import fcntl
except ImportError:   # not on Windows: writes there are not locked (last writer wins)
    fcntl = None  # type: ignore[assignment]

from .. import events as ev
from .._safety import internal_error
from ..events import Event
from ..files import FileTooLarge, NotRegularFile, read_regular
from ..verdicts import detection
from ._state import PerRun

RUNAWAY = "runaway"
# ends_unfinished never fires earlier: when nearly every run fails within a few steps (a provider outage), the
# runs are failing, not running away
FIRST_STEP = 5
# error kinds of runs this library stopped itself (a loop guard set to raise): not an outcome to learn from
STOPPED_BY_US = frozenset({"LoopDetected", "RunKilled"})
CHECKPOINTS = (5, 10, 15, 20, 30, 40, 60, 80, 120, 160, 240, 320, 480, 640, 960, 1280)
_CHECKPOINT_SET = frozenset(CHECKPOINTS)
STATE_VERSION = 1
MAX_AGENTS = 1000
MAX_COSTS = 200   # run costs kept per agent for cost_over_baseline (its window is at most this)
MAX_DISTINCT_CALLS = 256    # triples remembered per run; past this, every further one counts as new (bounded)


@dataclass(frozen=True, slots=True)
class RunawayPolicy:
    quantile: float = 0.95        # of the completed runs' lengths / spend at the same step
    length_factor: float = 2.5    # longer than this × the length quantile
    spend_factor: float = 2.0     # spent more than this × the spend quantile at the same step
    min_runs: int = 20            # completed runs needed (reaching the step, for spend) before judging
    baseline_runs: int = 200      # completed runs kept per agent
    limit_fraction: float = 0.8   # of the run's declared max_steps / max_cost_usd, for a run repeating itself
    limit_distinct: float = 0.75  # "repeating itself": at most this share of (tool, args, result) distinct
    state_file: str | None = None
    hold: int = 2                 # checkpoints in a row over the spend / slope threshold before the verdict
    slope_window: int = 8         # last calls' input tokens the context-growth slope is fitted on
    slope_factor: float = 2.0     # slope above this × the slope quantile at the same step
    min_slope: float = 500.0      # input tokens per call: flatter growth is never flagged against the baseline
    slope_horizon: int = 10       # calls ahead the slope is projected to the context window
    context_window: int | None = None   # the model's context window in tokens (or run_start detail)
    unfinished_share: float = 0.95  # of the runs that reached a step, the share that ended unfinished (above 1: off)
    unfinished_runs: int = 10       # ended runs that reached the step needed before judging by it


MIN_SLOPE_POINTS = 4   # calls needed before a slope means anything


def theil_sen(values: deque[int]) -> float:
    """Median of the pairwise slopes of ``values`` against their index: robust to a few noisy calls."""
    n = len(values)
    slopes = [(values[j] - values[i]) / (j - i) for i in range(n) for j in range(i + 1, n)]
    slopes.sort()
    mid = len(slopes) // 2
    return slopes[mid] if len(slopes) % 2 else (slopes[mid - 1] + slopes[mid]) / 2


def quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile of an ascending list (numpy's default)."""
    n = len(sorted_values)
    if n == 1:
        return sorted_values[0]
    pos = q * (n - 1)
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class _Baseline:
    """One agent's completed runs, and the thresholds derived from them (recomputed per completed run).

    The values the quantiles are taken of (lengths, spend and slope at each checkpoint) are also kept sorted as
    runs come and go (bisect), so a refresh reads them instead of collecting and sorting them again: the same
    multiset of floats, sorted, hence the same quantiles. A NaN (only a state file can bring one) has no place
    in a sorted list: from then on the lists are dropped and each refresh collects and sorts, as before."""

    __slots__ = ("runs", "length_limit", "spend_limits", "slope_limits", "stale", "_lengths", "_spend", "_slopes",
                 "_sorted", "outcomes", "unfinished_from", "unfinished_share", "unfinished_above",
                 "unfinished_spend_share", "_outcomes_stale", "costs", "cost_median")

    def __init__(self, keep: int) -> None:
        # (length, spend by checkpoint, context slope by checkpoint)
        self.runs: deque[tuple[int, dict[int, float], dict[int, float]]] = deque(maxlen=keep)
        self.length_limit: float | None = None
        self.spend_limits: dict[int, float] = {}
        self.slope_limits: dict[int, float] = {}
        self.stale = 0   # runs added since the thresholds were computed
        self._lengths: list[float] = []   # ints, sorted
        self._spend: dict[int, list[float]] = {cp: [] for cp in CHECKPOINTS}
        self._slopes: dict[int, list[float]] = {cp: [] for cp in CHECKPOINTS}
        self._sorted = True   # the three above hold exactly the values of ``runs``, sorted
        # every ended run the library did not stop itself, flagged or not: (length, ended unfinished, spend)
        self.outcomes: deque[tuple[int, bool, float]] = deque(maxlen=keep)
        self.unfinished_from: int | None = None   # the first step from which runs mostly ended unfinished
        self.unfinished_share = 0.0                # ... and the share of them that did
        self.unfinished_above: float | None = None   # the spend past which runs mostly ended unfinished
        self.unfinished_spend_share = 0.0
        self._outcomes_stale = 0
        # cost_over_baseline's window: the cost of the last runs that ended ok and were not flagged by it
        self.costs: deque[float] = deque(maxlen=MAX_COSTS)
        self.cost_median: float | None = None

    def forget_spend(self, p: RunawayPolicy) -> None:
        """Drop what the runs spent (the agent's spend changed unit: tokens then, dollars now); keep the rest."""
        runs = list(self.runs)
        self.runs.clear()
        self._lengths, self._sorted = [], True
        self._spend = {cp: [] for cp in CHECKPOINTS}
        self._slopes = {cp: [] for cp in CHECKPOINTS}
        for steps, _, slopes in runs:
            self.push(steps, {}, slopes)
        self.refresh(p)
        self.outcomes = deque(((steps, failed, 0.0) for steps, failed, _ in self.outcomes), maxlen=self.outcomes.maxlen)
        self.refresh_outcomes(p)

    def add_cost(self, cost: float, window: int, min_runs: int) -> None:
        self.costs.append(cost)
        self.refresh_cost(window, min_runs)

    def refresh_cost(self, window: int, min_runs: int) -> None:
        """The median of the last ``window`` costs, or None until ``min_runs`` (50 values at most: cheap)."""
        kept = len(self.costs)
        recent = list(self.costs)[max(0, kept - window):] if window > 0 else []
        self.cost_median = median(recent) if recent and len(recent) >= min_runs else None

    def add_outcome(self, steps: int, unfinished: bool, spend: float, p: RunawayPolicy) -> None:
        self.outcomes.append((steps, unfinished, spend))
        self._outcomes_stale += 1
        if len(self.outcomes) <= p.unfinished_runs or self._outcomes_stale * 20 >= len(self.outcomes):
            self.refresh_outcomes(p)

    def refresh_outcomes(self, p: RunawayPolicy) -> None:
        """The smallest step k such that, of the kept runs that reached k (at least ``unfinished_runs``), at least
        ``unfinished_share`` ended unfinished; and the same over total spend, of the runs at least ``FIRST_STEP``
        long with a spend recorded."""
        self._outcomes_stale = 0
        self.unfinished_from, self.unfinished_share = None, 0.0
        self.unfinished_above, self.unfinished_spend_share = None, 0.0
        if len(self.outcomes) < p.unfinished_runs or not 0.0 < p.unfinished_share <= 1.0:
            return
        found = _survival([(steps, failed) for steps, failed, _ in self.outcomes], p, FIRST_STEP)
        if found is not None:
            self.unfinished_from, self.unfinished_share = max(int(found[0]) + 1, FIRST_STEP), found[1]
        # only runs that got as far as a run is first judged: an outage that fails every run within two steps
        # makes runs fail, not run away
        found = _survival([(spend, failed) for steps, failed, spend in self.outcomes
                           if spend > 0 and steps >= FIRST_STEP], p, 0.0)
        if found is not None:
            self.unfinished_above, self.unfinished_spend_share = found

    def push(self, steps: int, spend: dict[int, float], slopes: dict[int, float]) -> None:
        """Keep a completed run (the oldest goes when full), without recomputing the thresholds."""
        runs = self.runs
        if runs.maxlen == 0:   # keeps nothing (as appending to it does)
            return
        if self._sorted:
            if len(runs) == runs.maxlen:
                old_steps, old_spend, old_slopes = runs[0]
                del self._lengths[bisect_left(self._lengths, old_steps)]
                _discard(self._spend, old_spend)
                _discard(self._slopes, old_slopes)
            if _insert(self._spend, spend) and _insert(self._slopes, slopes):
                insort(self._lengths, steps)
            else:
                self._sorted = False
                self._lengths, self._spend, self._slopes = [], {}, {}
        runs.append((steps, spend, slopes))

    def add(self, steps: int, spend: dict[int, float], slopes: dict[int, float], p: RunawayPolicy) -> None:
        self.push(steps, spend, slopes)
        self.stale += 1
        # Quantiles move slowly: recompute after each run while the baseline is small, then every 5 % of it,
        # which keeps the per-event cost O(1) amortised.
        if len(self.runs) <= p.min_runs or self.stale * 20 >= len(self.runs):
            self.refresh(p)

    def refresh(self, p: RunawayPolicy) -> None:
        self.stale = 0
        if len(self.runs) < p.min_runs:
            self.length_limit, self.spend_limits, self.slope_limits = None, {}, {}
            return
        if self._sorted:
            self.length_limit = p.length_factor * quantile(self._lengths, p.quantile)
            self.spend_limits = _limits_from_sorted(self._spend, p.spend_factor, p, 0.0)
            self.slope_limits = _limits_from_sorted(self._slopes, p.slope_factor, p, p.min_slope)
            return
        self.length_limit = p.length_factor * quantile(sorted(r[0] for r in self.runs), p.quantile)
        self.spend_limits = _limits_by_checkpoint((r[1] for r in self.runs), p.spend_factor, p, 0.0)
        self.slope_limits = _limits_by_checkpoint((r[2] for r in self.runs), p.slope_factor, p, p.min_slope)


def _survival(outcomes: list[tuple[float, bool]], p: RunawayPolicy, least: float) -> tuple[float, float] | None:
    """The smallest x (and the share) such that, of the runs that went further than x (at least
    ``unfinished_runs``), at least ``unfinished_share`` ended unfinished; runs reaching no more than ``least``
    are never judged. The share only changes just past a run's final value, so only those are tried, the
    largest first: the runs further than any x in [below, value) are exactly those counted so far."""
    ordered = sorted(outcomes, reverse=True)
    found = None
    reached = unfinished = 0
    for i, (value, failed) in enumerate(ordered):
        reached += 1
        unfinished += failed
        below = ordered[i + 1][0] if i + 1 < len(ordered) else 0
        if below == value:   # the runs of the same value join together
            continue
        if value < least:
            break
        if reached >= p.unfinished_runs and unfinished >= p.unfinished_share * reached:
            found = below, unfinished / reached
    return found


def _insert(sorted_by_checkpoint: dict[int, list[float]], values_at: dict[int, float]) -> bool:
    """Insert a run's checkpoint values into the sorted lists; False (nothing inserted) if one is NaN."""
    for value in values_at.values():
        if value != value:
            return False
    for cp, value in values_at.items():
        values = sorted_by_checkpoint.get(cp)
        if values is not None:   # a state file may carry other steps: no threshold reads them
            insort(values, value)
    return True


def _discard(sorted_by_checkpoint: dict[int, list[float]], values_at: dict[int, float]) -> None:
    for cp, value in values_at.items():
        values = sorted_by_checkpoint.get(cp)
        if values is not None:
            del values[bisect_left(values, value)]   # an equal float: the same multiset either way


def _limits_from_sorted(sorted_by_checkpoint: dict[int, list[float]], factor: float, p: RunawayPolicy,
                        floor: float) -> dict[int, float]:
    limits = {}
    for cp in CHECKPOINTS:
        values = sorted_by_checkpoint[cp]
        if len(values) < p.min_runs:
            break
        limits[cp] = max(floor, factor * quantile(values, p.quantile))
    return limits


def _limits_by_checkpoint(series: Iterable[dict[int, float]], factor: float, p: RunawayPolicy,
                          floor: float) -> dict[int, float]:
    # One pass over the runs' checkpoints instead of one per checkpoint: each list holds the values in the
    # runs' order, as the per-checkpoint scan did, so the sorted lists are the same.
    by_checkpoint: dict[int, list[float]] = {}
    for values_at in series:
        for cp, value in values_at.items():
            values = by_checkpoint.get(cp)
            if values is None:
                by_checkpoint[cp] = [value]
            else:
                values.append(value)
    limits = {}
    for cp in CHECKPOINTS:
        values = by_checkpoint.get(cp, [])
        if len(values) < p.min_runs:
            break
        values.sort()
        limits[cp] = max(floor, factor * quantile(values, p.quantile))
    return limits


class _Run:
    __slots__ = ("steps", "cost", "tokens", "top_cost", "top_tokens", "spend", "max_steps", "max_cost", "flagged",
                 "inputs", "slopes", "window", "calls", "new_calls", "spend_over", "slope_over")

    def __init__(self) -> None:
        self.steps = 0
        self.cost = 0.0
        self.tokens = 0
        self.top_cost = 0.0     # the run's largest single call, by cost and by tokens
        self.top_tokens = 0
        self.spend_over = 0     # checkpoints in a row over the spend threshold
        self.slope_over = 0     # ... over the context-slope threshold
        self.spend: dict[int, float] = {}
        self.max_steps: float | None = None
        self.max_cost: float | None = None
        self.flagged = False
        self.inputs: deque[int] | None = None   # the last slope_window calls' input tokens (made on the first)
        self.slopes: dict[int, float] = {}       # context slope at each checkpoint step
        self.window: float | None = None         # context window declared on run_start
        # hashes of the distinct (tool, arguments, result) triples, only for runs that declared a limit
        self.calls: set[int] | None = None
        self.new_calls = 0   # distinct triples so far (counting every one past the set's bound)


class RunawayDetector:
    name = RUNAWAY
    family = "cost"
    consumes = frozenset({ev.RUN_START, ev.LLM_CALL, ev.TOOL_END, ev.RUN_END})
    batch_lane = "runaway_history"   # shares RunawayHistory with cost_over_baseline (Pipeline.emit_batch)

    def __init__(self, policy: RunawayPolicy | None = None, history: RunawayHistory | None = None):
        self.policy = policy or RunawayPolicy()
        self._runs: PerRun[_Run] = PerRun(_Run)
        # what ended runs taught: shared by the pipelines of one command (replay's sessions), and with
        # state_file across processes. Its dicts are updated in place, so these references stay valid.
        self.history = history if history is not None else RunawayHistory(self.policy)
        self._baselines = self.history.baselines
        self._priced = self.history.priced   # agent -> its runs carry cost (else tokens are the spend)

    # -- events ------------------------------------------------------------------------------------------
    def feed(self, event: Event) -> list[Event] | None:
        kind = event.event_type
        if event.run_id is None and event.task_id is None:
            return None
        if kind == ev.TOOL_END:
            runs = self._runs   # PerRun.get's shortcut, inlined: every tool result comes here
            state = runs._last
            if state is None or (event.run_id or event.task_id) != runs._rid or event.session_id != runs._sid:
                state = runs.get(event)
            steps = state.steps = state.steps + 1
            calls = state.calls
            if calls is not None:
                call = hash((event.tool_name, event.args_hash, event.result_hash))
                if call not in calls:
                    state.new_calls += 1
                    if len(calls) < MAX_DISTINCT_CALLS:
                        calls.add(call)
            if state.flagged:
                return None
            if not state.max_steps and steps not in _CHECKPOINT_SET:   # only the length can be judged
                baseline = self._baselines.get(event.agent_id)
                if baseline is None or not (
                        baseline.length_limit is not None and steps > baseline.length_limit
                        or baseline.unfinished_from is not None and steps >= baseline.unfinished_from
                        or baseline.unfinished_above is not None and steps >= FIRST_STEP and not state.max_cost
                        and self._total(event.agent_id, state) > baseline.unfinished_above):
                    return None
            return self._check(event, state)
        if kind == ev.LLM_CALL:
            state = self._runs.get(event)
            cost = event.cost_usd
            if cost:
                state.cost += cost
                if cost > state.top_cost:
                    state.top_cost = cost
            tokens = event.token_count if event.token_count is not None else (
                (event.input_tokens or 0) + (event.output_tokens or 0))
            state.tokens += tokens
            if tokens > state.top_tokens:
                state.top_tokens = tokens
            if event.input_tokens is not None and event.input_tokens >= 0:
                if state.inputs is None:
                    state.inputs = deque(maxlen=max(2, self.policy.slope_window))
                state.inputs.append(event.input_tokens)
            if state.flagged:
                return None
            if state.max_cost and self._near_limit(state, state.cost, state.max_cost):
                return self._fire(event, state, "cost_limit", state.cost, state.max_cost)
            return self._project(event, state)
        if kind == ev.RUN_START:
            state = self._runs.get(event)
            detail = event.detail or {}
            state.max_steps = _positive(detail.get("max_steps"))
            state.max_cost = _positive(detail.get("max_cost_usd"))
            if state.max_steps or state.max_cost:
                state.calls = set()
            state.window = _positive(detail.get("context_window"))
            return None
        state = self._runs.pop(event) or _Run()   # run_end
        if state.steps and (event.status == "ok" or event.status == "error" and event.error_kind not in STOPPED_BY_US):
            self._learn(event.agent_id, state, unfinished=event.status != "ok")
        return None

    def _slope(self, state: _Run) -> float | None:
        inputs = state.inputs
        if inputs is None or len(inputs) < MIN_SLOPE_POINTS:
            return None
        return theil_sen(inputs)

    def _project(self, event: Event, state: _Run) -> list[Event] | None:
        """Context growing toward the model's window within ``slope_horizon`` calls.

        A projection of cost toward ``max_cost_usd`` is not made: measured on runs cut by a cost limit, it
        flagged more healthy runs than runs the limit stopped (docs/detection.md)."""
        p = self.policy
        window = state.window or (float(p.context_window) if p.context_window else None)
        if window is None or state.inputs is None:
            return None
        slope = self._slope(state)
        if slope is None or slope <= 0:
            return None
        ahead = p.slope_horizon
        if state.max_steps:
            ahead = min(ahead, max(0, int(state.max_steps) - state.steps))
        if ahead <= 0:
            return None
        last = state.inputs[-1]
        if last + slope * ahead >= window:
            return self._fire(event, state, "context_limit", last + slope * ahead, window, slope)
        return None

    def _total(self, agent: str | None, state: _Run) -> float:
        """What the run has spent: its cost, or its tokens for an agent whose calls carry no cost (none for an
        unpriced run of a priced agent: its tokens are not dollars)."""
        if state.cost:
            return state.cost
        return 0.0 if self._priced.get(agent) else float(state.tokens)

    def _note_priced(self, agent: str | None, state: _Run) -> None:
        """A run whose calls carry a cost makes its agent priced (its token spend so far is forgotten)."""
        if state.cost and not self._priced.get(agent):
            self.history.mark_priced(agent)

    def _spend(self, agent: str | None, state: _Run) -> float:
        self._note_priced(agent, state)
        if self._priced.get(agent):
            return state.cost - state.top_cost
        return float(state.tokens - state.top_tokens)

    def _repeating(self, state: _Run) -> bool:
        # A run near its limit that still gets new results mostly finishes, or cannot be told early from one
        # that will not (measured: docs/detection.md); one going over the same calls and getting the same
        # results again will not. The result counts: a coding agent re-runs the same test after each edit.
        return state.steps > 0 and state.new_calls <= self.policy.limit_distinct * state.steps

    def _near_limit(self, state: _Run, used: float, limit: float) -> bool:
        return used >= self.policy.limit_fraction * limit and self._repeating(state)

    def _check(self, event: Event, state: _Run) -> list[Event] | None:
        p = self.policy
        steps = state.steps
        if state.max_steps and self._near_limit(state, steps, state.max_steps):
            return self._fire(event, state, "step_limit", steps, state.max_steps)
        baseline = self._baselines.get(event.agent_id)
        if steps in _CHECKPOINT_SET:
            spend = state.spend[steps] = self._spend(event.agent_id, state)
            limit = baseline.spend_limits.get(steps) if baseline is not None else None
            if limit is not None and spend > limit > 0:
                state.spend_over += 1
                if state.spend_over >= p.hold:
                    return self._fire(event, state, "spend_at_step", spend, limit)
            else:
                state.spend_over = 0
            slope = self._slope(state)
            if slope is not None:
                state.slopes[steps] = slope
            limit = baseline.slope_limits.get(steps) if baseline is not None and slope is not None else None
            if slope is not None and limit is not None and slope > limit > 0:
                state.slope_over += 1
                if state.slope_over >= p.hold:
                    return self._fire(event, state, "context_slope", slope, limit, slope)
            else:
                state.slope_over = 0
        if baseline is not None and baseline.length_limit is not None and steps > baseline.length_limit:
            return self._fire(event, state, "length", steps, baseline.length_limit)
        if baseline is not None and baseline.unfinished_from is not None and steps >= baseline.unfinished_from:
            share = baseline.unfinished_share
            return self._fire(event, state, "ends_unfinished", share, p.unfinished_share, message=(
                f"run past the step ({baseline.unfinished_from}) after which {share:.0%} of this agent's runs "
                f"ended unfinished ({steps} steps)"))
        # A declared budget has its own warnings (cost_limit above, the budget's utilisation, run_limit): the
        # spend curve stands in for a limit nobody declared
        if (baseline is not None and baseline.unfinished_above is not None and steps >= FIRST_STEP
                and not state.max_cost):
            total = self._total(event.agent_id, state)
            if total > baseline.unfinished_above:
                share = baseline.unfinished_spend_share
                return self._fire(event, state, "spent_unfinished", total, baseline.unfinished_above, message=(
                    f"run past the spend ({baseline.unfinished_above:.4g}) after which {share:.0%} of this agent's "
                    f"runs ended unfinished ({total:.4g} spent)"))
        return None

    def _fire(self, event: Event, state: _Run, why: str, value: float, limit: float,
              slope: float | None = None, message: str | None = None) -> list[Event]:
        state.flagged = True
        detail = {"why": why, "value": round(value, 6), "threshold": round(limit, 6), "steps": state.steps,
                  "cost_usd": round(state.cost, 6), "tokens": state.tokens}
        if slope is not None:
            detail["input_tokens_per_call"] = round(slope, 3)
        return [detection(event, RUNAWAY, detail, message or (
            f"run on course to exhaust its budget: {why} {value:.4g} over {limit:.4g} after {state.steps} steps"))]

    def _learn(self, agent: str | None, state: _Run, unfinished: bool = False) -> None:
        """An ended run: its outcome, and (healthy and unflagged) its course for the baseline."""
        self._note_priced(agent, state)
        self.history.learn(agent, state.steps, state.spend, state.slopes, unfinished,
                           healthy=not unfinished and not state.flagged, total=self._total(agent, state))

    def baseline_size(self, agent: str | None) -> int:
        b = self._baselines.get(agent)
        return 0 if b is None else len(b.runs)

    def close(self) -> None:
        """Write what is not yet in the state file (the pipeline's close, the Monitor's close), waiting up to
        ``CLOSE_WAIT`` for the writer thread's write and as long for another process's."""
        self.history.save(CLOSE_WAIT)

    def tick(self, now: float) -> None:
        return None


# A run end has the state file written at most this often (seconds), by a thread of its own; close() writes
# the rest. Each write merges what other processes wrote since, so workers sharing the file share one baseline.
SAVE_INTERVAL = 1.0
CLOSE_WAIT = 1.0       # seconds close() waits for a write in progress and for the lock (a run end never waits)
MAX_PENDING = 10_000   # ended runs waiting for a write (bounded while the file cannot be written)
MAX_STATE_BYTES = 64 << 20   # a state file larger than this is not read (nor replaced); 1000 agents take ~30 MB
_HISTORIES: weakref.WeakSet[RunawayHistory] = weakref.WeakSet()


class RunawayHistory:
    """Each agent's baseline and run outcomes, and cost_over_baseline's window. With ``state_file`` it is loaded
    at start and written (temp file and rename) at most once per ``SAVE_INTERVAL`` after a run ends, and on
    ``save()``. A write re-reads the file under a lock, adds the runs this process ended since its last write
    and keeps the result, so processes sharing the file learn from each other's runs and none overwrites the
    others'. A run end never waits for the disk: the write after it runs in a short-lived thread (one at a
    time; it ends when nothing is left to write), and if another process holds the lock the runs stay pending
    for the next write; close waits ``CLOSE_WAIT`` at most."""

    def __init__(self, policy: RunawayPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.baselines: dict[str | None, _Baseline] = {}
        self.priced: dict[str | None, bool] = {}
        self.cost_window = (50, 5)   # cost_over_baseline's (baseline_runs, min_runs): ``use_cost_window``
        self._pending: deque[tuple] = deque(maxlen=MAX_PENDING)
        self._clock = clock
        self._saved_at = -math.inf
        self._seen: tuple[int, int, int] | None = None   # the file as this process last read or wrote it
        self._init_locks()
        if policy.state_file:
            seen = _signature(policy.state_file)
            loaded = self._read(policy.state_file)
            if loaded is not None:
                self.baselines.update(loaded[0])
                self.priced.update(loaded[1])
                self._seen = seen
            _HISTORIES.add(self)

    def _init_locks(self) -> None:
        self._state = threading.Lock()   # what a write copies against what a run end adds (never held for I/O)
        self._io = threading.Lock()      # one write at a time in this process
        self._spawn = threading.Lock()   # the writer thread's life
        self._writer: threading.Thread | None = None
        self._wanted = False             # a write was asked for since the writer last started one

    def learn(self, agent: str | None, steps: int, spend: dict[int, float], slopes: dict[int, float],
              unfinished: bool, healthy: bool, total: float = 0.0) -> None:
        self._learned((agent, steps, spend, slopes, unfinished, healthy, total))

    def _learned(self, learned: tuple) -> None:
        """Keep what an ended run taught, queue it for the state file, and have the file written when due."""
        with self._state:
            kept = self._apply(self.baselines, learned)
            if kept and self.policy.state_file:
                self._pending.append(learned)
        if kept:
            self._write_soon()

    def mark_priced(self, agent: str | None) -> None:
        """The agent's calls carry a cost from now on: what its runs spent so far was counted in tokens, which
        are not dollars, so it is forgotten (kept as unknown), not compared with what it spends from now on."""
        with self._state:
            self.priced[agent] = True
            baseline = self.baselines.get(agent)
            if baseline is not None:
                baseline.forget_spend(self.policy)
            self._pending = deque((_unpriced(learned) if learned[0] == agent and len(learned) > 2 else learned
                                   for learned in self._pending), maxlen=MAX_PENDING)

    def use_cost_window(self, window: int, min_runs: int) -> None:
        """cost_over_baseline's settings: its median is of the last ``window`` costs, from ``min_runs`` on."""
        with self._state:
            self.cost_window = (min(window, MAX_COSTS), min_runs)
            for baseline in self.baselines.values():
                baseline.refresh_cost(*self.cost_window)

    def cost_baseline(self, agent: str | None) -> float | None:
        """cost_over_baseline's baseline for the agent: the median cost of its recent runs, or None."""
        baseline = self.baselines.get(agent)
        return None if baseline is None else baseline.cost_median

    def learn_cost(self, agent: str | None, cost: float) -> None:
        """A run that ended ok and that cost_over_baseline did not flag: its cost joins the agent's window."""
        self._learned((agent, cost))

    def _add_cost(self, baselines: dict[str | None, _Baseline], agent: str | None, cost: float) -> bool:
        baseline = self._agent(baselines, agent)
        if baseline is None:
            return False
        baseline.add_cost(cost, *self.cost_window)
        return True

    def _agent(self, baselines: dict[str | None, _Baseline], agent: str | None) -> _Baseline | None:
        """The agent's entry, made if new; None when ``MAX_AGENTS`` are known already (bounded memory)."""
        baseline = baselines.get(agent)
        if baseline is None and len(baselines) < MAX_AGENTS:
            baseline = baselines[agent] = _Baseline(self.policy.baseline_runs)
        return baseline

    def _write_soon(self) -> None:
        """Have the pending runs written if the last write is ``SAVE_INTERVAL`` old: by the writer thread,
        started if none is running, so the thread that ended the run does no I/O."""
        if not self.policy.state_file or self._clock() - self._saved_at < SAVE_INTERVAL:
            return
        self._saved_at = self._clock()   # this interval's write is taken (a failed one waits for the next)
        with self._spawn:
            self._wanted = True
            if self._writer is not None:
                return   # it writes again before it ends
            writer = threading.Thread(target=self._write_loop, name="agentvigil-runaway-state", daemon=True)
            try:
                writer.start()
            except RuntimeError as exc:   # no new thread (interpreter shutting down): close writes them
                internal_error("runaway_state", exc)
                return
            self._writer = writer

    def _write_loop(self) -> None:
        while True:
            with self._spawn:
                if not self._wanted:
                    self._writer = None
                    return
                self._wanted = False
            try:
                self.save()
            except Exception as exc:   # save catches what the disk raises; anything else is a bug: counted
                internal_error("runaway_state", exc)

    def wait_for_writer(self, timeout: float | None = None) -> None:
        """Until the writer thread has ended (a write it started is done), or ``timeout`` seconds."""
        writer = self._writer
        if writer is not None and writer is not threading.current_thread():
            writer.join(timeout)

    def _add(self, baselines: dict[str | None, _Baseline], agent: str | None, steps: int,
             spend: dict[int, float], slopes: dict[int, float], unfinished: bool, healthy: bool,
             total: float = 0.0) -> bool:
        baseline = self._agent(baselines, agent)
        if baseline is None:
            return False
        baseline.add_outcome(steps, unfinished, total, self.policy)
        if healthy:
            baseline.add(steps, spend, slopes, self.policy)
        return True

    def save(self, wait: float = 0.0) -> None:
        """Write the runs ended since the last write into the state file (merged with it). ``wait``: seconds to
        wait for a write of this process in progress and for the lock another process holds (close waits
        briefly; the writer thread never). Never raises."""
        path = self.policy.state_file
        if not path or not self._pending:
            return
        if not (self._io.acquire(timeout=wait) if wait > 0 else self._io.acquire(blocking=False)):
            return   # a write of ours is under way: it takes these runs, or the next one does
        try:
            self._save(path, wait)
        finally:
            self._io.release()

    def _save(self, path: str, wait: float) -> None:
        batch: deque[tuple] | None = None
        try:
            directory = os.path.dirname(path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            with _try_lock(f"{path}.lock", wait) as locked:
                if not locked:
                    return   # another process is writing: ours go with the next write
                with self._state:   # what this write carries, and (unmerged) a copy of what we hold
                    batch, self._pending = self._pending, deque(maxlen=MAX_PENDING)
                    merged = self._seen is None or _signature(path) != self._seen
                    data = None if merged else _snapshot(self.baselines, dict(self.priced))
                if data is not None:   # nobody wrote since we read or wrote it: the file plus our runs is what we hold
                    _write(path, data)
                else:   # the file as it is now (none yet, or broken: counted, and replaced), plus our runs
                    baselines, priced = self._read(path, keep=True) or ({}, {})   # refused: OSError
                    ours = dict(self.priced)
                    self._price_as(baselines, priced, ours)
                    for learned in batch:
                        self._apply(baselines, _in_units_of(learned, priced, ours))
                    _write(path, _snapshot(baselines, priced))
                    with self._state:   # in place, never emptied (the detectors read these dicts meanwhile)
                        self._price_as(baselines, priced, self.priced)   # priced while this wrote
                        for learned in self._pending:   # ended while this wrote: held, written next time
                            self._apply(baselines, _in_units_of(learned, priced, self.priced))
                        self.baselines.update(baselines)
                        self.priced.update(priced)
                self._seen = _signature(path)
        except OSError as exc:
            internal_error("runaway_state", exc)
            if batch is not None:   # not written: first in line for the next write
                with self._state:
                    self._pending.extendleft(reversed(batch))
            return
        self._saved_at = self._clock()

    def _apply(self, baselines: dict[str | None, _Baseline], learned: tuple) -> bool:
        """A learned entry: a run's course and outcome, or a run's cost (two fields). False: no room for its
        agent."""
        if len(learned) == 2:
            return self._add_cost(baselines, *learned)
        return self._add(baselines, *learned)

    def _price_as(self, baselines: dict[str | None, _Baseline], priced: dict[str | None, bool],
                  ours: dict[str | None, bool]) -> None:
        """The agents ``ours`` prices and the merged file did not: priced from now, and what the file says
        they spent (tokens) forgotten."""
        for agent in [a for a, flag in ours.items() if flag and not priced.get(a)]:
            priced[agent] = True
            if agent in baselines:
                baselines[agent].forget_spend(self.policy)

    def _read(self, path: str, keep: bool = False
              ) -> tuple[dict[str | None, _Baseline], dict[str | None, bool]] | None:
        """The file's baselines, or None (missing; unreadable or invalid: counted). Only a regular file of at
        most ``MAX_STATE_BYTES`` is read (opened without blocking: a FIFO or device is never read from); a larger
        one, or a FIFO, device or directory, is refused and counted like an unreadable file. ``keep`` (a write
        about to merge into it): a refused file raises its OSError instead, so it is not replaced by a write."""
        try:
            data = json.loads(read_regular(path, MAX_STATE_BYTES).decode("utf-8"))
        except FileNotFoundError:
            return None
        except (NotRegularFile, FileTooLarge) as exc:
            if keep:
                raise
            internal_error("runaway_state", exc)
            return None
        except (OSError, ValueError, RecursionError) as exc:
            internal_error("runaway_state", exc)
            return None
        baselines: dict[str | None, _Baseline] = {}
        priced: dict[str | None, bool] = {}
        try:
            if data.get("version") != STATE_VERSION:
                return None
            for agent, body in list(data.get("agents", {}).items())[:MAX_AGENTS]:
                baseline = _Baseline(self.policy.baseline_runs)
                for steps, spend, *rest in body.get("runs", []):
                    # files written before the context slope have two fields per run
                    slopes = rest[0] if rest else {}
                    baseline.push(int(steps), {int(k): float(v) for k, v in spend.items()},
                                  {int(k): float(v) for k, v in slopes.items()})
                baseline.refresh(self.policy)
                # files written before outcomes were kept have none: the signal starts from this process's runs;
                # before the spend was kept, an outcome has two fields (its spend unknown: 0)
                for steps, unfinished, *total in body.get("outcomes", []):
                    spent = float(total[0]) if total else 0.0
                    baseline.outcomes.append((int(steps), unfinished is True, spent if 0 < spent < math.inf else 0.0))
                baseline.refresh_outcomes(self.policy)
                # files written before cost_over_baseline's window was kept have none
                costs = [float(c) for c in body.get("costs", [])]
                if not all(0 <= c < math.inf for c in costs):
                    raise ValueError(f"agent {agent!r}: a cost is negative or not finite")
                baseline.costs.extend(costs)
                baseline.refresh_cost(*self.cost_window)
                key = None if agent == "" else agent
                baselines[key] = baseline
                priced[key] = bool(body.get("priced"))
        except (AttributeError, TypeError, ValueError, OverflowError) as exc:
            internal_error("runaway_state", exc)
            return None
        return baselines, priced

def _unpriced(learned: tuple) -> tuple:
    """A pending run learned before its agent was priced: its spend (tokens) unknown, as in memory."""
    agent, steps, _, slopes, unfinished, healthy, _ = learned
    return agent, steps, {}, slopes, unfinished, healthy, 0.0


def _in_units_of(learned: tuple, file_priced: dict[str | None, bool], ours: dict[str | None, bool]) -> tuple:
    """A run of ours as the merged file counts it: one learned in tokens joins a file that prices the agent
    with its spend unknown."""
    if len(learned) > 2 and file_priced.get(learned[0]) and not ours.get(learned[0]):
        return _unpriced(learned)
    return learned


def _snapshot(baselines: dict[str | None, _Baseline], priced: dict[str | None, bool]) -> dict:
    """The state file's content: copies of what it holds, so it can be encoded while runs go on ending."""
    return {"version": STATE_VERSION, "agents": {
        "" if agent is None else agent: {"priced": priced.get(agent, False),
                                         "runs": [list(run) for run in b.runs],
                                         "outcomes": [list(o) for o in b.outcomes],
                                         "costs": list(b.costs)}
        for agent, b in list(baselines.items())}}


def _write(path: str, data: dict) -> None:
    text = json.dumps(data, separators=(",", ":"))   # dumps, not dump: the C encoder, ~5x faster
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _signature(path: str) -> tuple[int, int, int] | None:
    """Which version of the file this is: each write renames a new file into place (a new inode)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


@contextmanager
def _try_lock(path: str, wait: float = 0.0) -> Iterator[bool]:
    """An exclusive lock on ``path`` (True) if it is free now or within ``wait`` seconds, else False; True where
    there is no flock."""
    if fcntl is None:
        yield True
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.01)
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _forget_pending_in_child() -> None:
    # a forked child inherits its parent's unwritten runs: the parent writes those. Its memory holds them
    # too, so its first write merges into the file rather than writing what it holds. The parent's writer
    # thread is not in the child, and may have held a lock at the fork: the child starts with fresh ones.
    for history in list(_HISTORIES):
        history._pending.clear()
        history._seen = None
        history._init_locks()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pending_in_child)



def _positive(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= sys.float_info.max:
        return float(value)   # a limit past the largest float (10**400) is none, as an infinite one
    return None
