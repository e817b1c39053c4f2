"""cost_spike: the cost of one heartbeat cycle (the LLM calls between two ticks of a supervised child) above
``factor`` × the rolling mean of recent *active* cycles (tokens when no call is priced). Cycles with no call are
left out of the baseline (an agent that works in bursts is not judged against its idle time); spikes are not
added (a runaway loop does not teach the baseline that it is normal). One verdict per spike episode, until a
normal active cycle. Built only for ``supervise`` (``DetectorContext.health``): in-process the per-run
``cost_over_baseline`` judges cost.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from .. import events as ev
from ..events import Event
from ..verdicts import detection

COST_SPIKE = "cost_spike"


@dataclass
class CycleBaseline:
    """Rolling mean of the spend of recent active cycles. Outlives a child: a restart keeps it."""

    size: int = 50
    min_cycles: int = 5
    costs: deque = field(default_factory=deque)
    tokens: deque = field(default_factory=deque)

    def judge(self, cost: float, tokens: int, factor: float) -> dict | None:
        """Detail of a spike, or None (and the cycle joins the baseline)."""
        if cost <= 0 and tokens <= 0:
            return None
        spike = None
        if factor > 0 and len(self.costs) >= self.min_cycles:
            mean_cost = sum(self.costs) / len(self.costs)
            mean_tokens = sum(self.tokens) / len(self.tokens)
            if mean_cost > 0:
                if cost > factor * mean_cost:
                    spike = {"unit": "usd", "cycle": round(cost, 6), "baseline": round(mean_cost, 6),
                             "ratio": round(cost / mean_cost, 1)}
            elif mean_tokens > 0 and tokens > factor * mean_tokens:
                spike = {"unit": "tokens", "cycle": tokens, "baseline": round(mean_tokens, 1),
                         "ratio": round(tokens / mean_tokens, 1)}
        if spike is None:
            self.costs.append(cost)
            self.tokens.append(tokens)
            if len(self.costs) > self.size:
                self.costs.popleft()
                self.tokens.popleft()
        return spike

    @property
    def mean_cost(self) -> float:
        return sum(self.costs) / len(self.costs) if self.costs else 0.0


class CycleCost:
    """Accumulates one cycle's spend and judges it when the next heartbeat closes it."""

    def __init__(self, factor: float, heartbeat_interval: float, baseline: CycleBaseline):
        self.factor = factor
        self.heartbeat_interval = heartbeat_interval
        self.baseline = baseline
        self.cycle_started: float | None = None
        self.cycle_cost = 0.0
        self.cycle_tokens = 0
        self.last_cycle_cost = 0.0
        self.quiet = False     # set while the child is being stopped: its shutdown burst is not a spike
        self.spiking = False   # in a spike episode: reported once, until a normal active cycle

    def add_call(self, cost: object, tokens: object, input_tokens: object, output_tokens: object) -> None:
        if isinstance(cost, (int, float)) and not isinstance(cost, bool) and cost == cost and cost >= 0:
            self.cycle_cost += cost
        if not isinstance(tokens, int) or isinstance(tokens, bool):
            parts = [t for t in (input_tokens, output_tokens) if isinstance(t, int) and not isinstance(t, bool)]
            tokens = sum(parts)
        self.cycle_tokens += max(0, tokens)

    def close(self, now: float) -> dict | None:
        """A heartbeat at ``now``: the detail of a spike when the cycle it closes spiked."""
        # Several Monitors tick together: one cycle per heartbeat_interval, not per heartbeat event.
        if self.cycle_started is not None and now - self.cycle_started < 0.5 * self.heartbeat_interval:
            return None
        started, cost, tokens = self.cycle_started, self.cycle_cost, self.cycle_tokens
        self.cycle_started, self.cycle_cost, self.cycle_tokens = now, 0.0, 0
        if started is None:       # calls before the first tick belong to no full cycle
            return None
        self.last_cycle_cost = cost
        if self.quiet:
            return None
        spike = self.baseline.judge(cost, tokens, self.factor)
        if spike is None:
            if cost > 0 or tokens > 0:
                self.spiking = False
            return None
        if self.spiking:
            return None
        self.spiking = True
        return spike


class CycleCostDetector:
    name = COST_SPIKE
    family = "cost"
    consumes = frozenset({ev.HEARTBEAT, ev.LLM_CALL})

    def __init__(self, factor: float, heartbeat_interval: float, baseline: CycleBaseline | None = None,
                 clock: Callable[[], float] | None = None):
        self.clock = clock
        self.cycle = CycleCost(factor, heartbeat_interval, baseline or CycleBaseline())

    def reset(self) -> None:
        """A new child started: its first cycle starts at its first heartbeat; the baseline is kept."""
        c = self.cycle
        self.cycle = CycleCost(c.factor, c.heartbeat_interval, c.baseline)

    def feed(self, event: Event) -> list[Event] | None:
        if event.event_type == ev.LLM_CALL:
            self.cycle.add_call(event.cost_usd, event.token_count, event.input_tokens, event.output_tokens)
            return None
        if event.status == "progress":    # Monitor.heartbeat(): not the background tick
            return None
        now = self.clock() if self.clock is not None else event.ts
        spike = self.cycle.close(now)
        if spike is None:
            return None
        verdict = detection(event, COST_SPIKE, spike, f"CostSpike: heartbeat cycle {spike['cycle']} {spike['unit']}"
                                                      f" is {spike['ratio']:g}x the baseline {spike['baseline']}")
        verdict.ts = event.ts if self.clock is None else time.time()
        verdict.run_id, verdict.step_index, verdict.tool_name = None, None, None
        return [verdict]

    def tick(self, now: float) -> None:
        return None
