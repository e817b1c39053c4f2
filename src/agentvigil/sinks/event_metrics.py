"""Events → the ``AgentMetrics`` contract (docs/metrics.md), for ``watch --metrics-port`` and the
supervisor's ``/metrics``: one translation for every consumer of recorded events.

An agent in any language that writes our NDJSON (or agent-strace's) gets the same series as an instrumented
Python agent, so the shipped alert rules and dashboards work unchanged. What an event stream cannot carry is
left out: budget limit/reserved gauges (only overruns are events), OTel exemplars, self-metrics of the
agent's process. ``agent_heartbeat_timestamp_seconds`` follows recorded heartbeats (the agent's liveness, not
ours). Single-threaded: each consumer applies events from its own loop.
"""

from __future__ import annotations

import threading

from .. import events as ev
from ..breaker import STATE_VALUE
from ..detect import COST_OVER_BASELINE
from ..errors import TOOL_ERROR, UNKNOWN
from ..events import Event, InvalidEvent, event_from_dict
from ..metrics import AgentMetrics



def _seconds(event: Event) -> float | None:
    return None if event.duration_ms is None else event.duration_ms / 1000.0


class EventMetrics:
    def __init__(self, metrics: AgentMetrics):
        self.m = self.metrics = metrics
        self._open: dict[tuple[str | None, str | None], list] = {}   # (session, run) -> [agent, cost]
        self._lock = threading.Lock()   # ModelSeries.observe_cache wants its caller to hold a lock
        self.invalid = 0                # decoded events that failed validation (feed)

    def feed(self, data: dict) -> None:
        """Apply a decoded JSON event; an invalid one is counted in ``invalid`` and skipped."""
        try:
            event = event_from_dict(data)
        except InvalidEvent:
            self.invalid += 1
            return
        self.apply(event)

    def reset_runs(self) -> None:
        """The process behind the events restarted: its runs in flight are gone."""
        agents = {agent for agent, _ in self._open.values()}
        for (agent, _cost) in list(self._open.values()):
            self.m.agent(agent).active_runs.dec()
        self._open.clear()
        for agent in agents:
            self._active_cost(agent)

    def apply(self, event: Event, baseline: float | None = None) -> None:
        m = self.m
        agent = event.agent_id or "unknown"
        kind = event.event_type
        series = m.agent(agent)
        if kind == ev.TOOL_END:
            m.tool(agent, event.tool_name or "unknown").record(
                (event.error_kind or TOOL_ERROR) if event.status == "error" else None, _seconds(event))
        elif kind == ev.LLM_CALL:
            m.model(agent, event.provider or "unknown", event.model or "unknown").record(
                (event.error_kind or UNKNOWN) if event.status == "error" else None, _seconds(event),
                event.input_tokens or 0, event.output_tokens or 0, event.cache_read_tokens or 0,
                event.cache_write_tokens or 0, event.cost_usd, self._lock)
            run = self._open.get((event.session_id, event.run_id))
            if run is not None and event.cost_usd:
                run[1] += event.cost_usd
                self._active_cost(agent)
        elif kind == ev.STEP_END:
            series.steps.inc()
            series.progress.set(event.ts)
        elif kind == ev.RUN_START:
            if (event.session_id, event.run_id) not in self._open:
                self._open[(event.session_id, event.run_id)] = [agent, 0.0]
                series.active_runs.inc()
        elif kind == ev.RUN_END:
            if self._open.pop((event.session_id, event.run_id), None) is not None:
                series.active_runs.dec()
            status = event.status or "ok"
            (series.runs_ok if status == "ok" else series.runs_killed if status == "killed"
             else series.runs_error).inc()
            cost = event.cost_usd or 0.0
            if event.duration_ms is not None:
                series.run_duration.observe(event.duration_ms / 1000.0)
            series.run_cost.observe(cost)
            series.run_steps.observe(event.step_index or 0)
            series.last_run_cost.set(cost)
            series.progress.set(event.ts)
            if baseline is not None:
                series.cost_baseline.set(baseline)
            self._active_cost(agent)
        elif kind == ev.HEARTBEAT:
            series.heartbeat.set(event.ts)
            if event.status in ("idle", "progress"):
                series.progress.set(event.ts)
        elif kind == ev.DETECTION:
            if event.detector == COST_OVER_BASELINE:
                series.cost_spikes.inc()
            else:
                counter = series.loop.get(event.detector or "")
                if counter is not None:
                    counter.inc()
        elif kind == ev.KILL:
            m.kills.labels(series.agent, m.cap["reason"](event.reason or "kill_switch")).inc()
        elif kind == ev.BREAKER_TRANSITION:
            label = m.cap["breaker"](event.name or "unknown")
            if event.state in STATE_VALUE:
                m.breaker_state.labels(label).set(STATE_VALUE[event.state])
            m.breaker_transitions.labels(label, event.state or "unknown", event.reason or "unknown").inc()
        elif kind == ev.BUDGET_EXCEEDED:
            label = m.cap["budget"](event.name or "unknown")
            m.budget_exceeded.labels(label).inc()
            detail = event.detail or {}
            limit = detail.get("limit")
            if isinstance(limit, (int, float)) and limit > 0:
                m.budget_limit.labels(label).set(limit)
                held = (detail.get("committed") or 0) + (detail.get("reserved") or 0)
                m.budget_utilization.labels(label).set(held / limit)

    def _active_cost(self, agent: str) -> None:
        top = max((cost for a, cost in self._open.values() if a == agent), default=0.0)
        self.m.agent(agent).active_run_cost.set(top)
