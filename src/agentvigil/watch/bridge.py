"""Events → the ``AgentMetrics`` contract (docs/metrics.md), for ``watch --metrics-port``.

An agent in any language that writes our NDJSON (or agent-strace's) gets the same series as an instrumented
Python agent, so the shipped alert rules and dashboards work unchanged. What an event stream cannot carry is
left out: budget limit/reserved gauges (only overruns are events), OTel exemplars, self-metrics of the
agent's process. ``agent_heartbeat_timestamp_seconds`` follows recorded heartbeats (the agent's liveness, not
ours). Single-threaded: the runner applies events from its loop.
"""

from __future__ import annotations

import threading

from .. import events as ev
from ..breaker import STATE_VALUE
from ..detect import COST_OVER_BASELINE
from ..errors import ERROR_KINDS, TOOL_ERROR, UNKNOWN
from ..events import Event
from ..metrics import AgentMetrics

_KINDS = frozenset(ERROR_KINDS)


class MetricsBridge:
    def __init__(self, metrics: AgentMetrics):
        self.m = metrics
        self._open: dict[tuple[str | None, str | None], list] = {}   # (session, run) -> [agent, cost]
        self._lock = threading.Lock()   # ModelSeries.observe_cache wants its caller to hold a lock

    def apply(self, event: Event, baseline: float | None = None) -> None:
        m = self.m
        agent = event.agent_id or "unknown"
        kind = event.event_type
        series = m.agent(agent)
        if kind == ev.TOOL_END:
            tool = m.tool(agent, event.tool_name or "unknown")
            if event.status == "error":
                tool.error.inc()
                error_kind = event.error_kind or TOOL_ERROR
                if error_kind not in _KINDS:
                    error_kind = TOOL_ERROR
                tool.error_kind(error_kind).inc()
            else:
                tool.ok.inc()
            if event.duration_ms is not None:
                tool.duration.observe(event.duration_ms / 1000.0)
        elif kind == ev.LLM_CALL:
            model = m.model(agent, event.provider or "unknown", event.model or "unknown")
            if event.status == "error":
                model.error.inc()
                error_kind = event.error_kind or UNKNOWN
                if error_kind not in _KINDS:
                    error_kind = UNKNOWN
                model.error_kind(error_kind).inc()
            else:
                model.ok.inc()
            if event.duration_ms is not None:
                model.duration.observe(event.duration_ms / 1000.0)
            inp, out = event.input_tokens or 0, event.output_tokens or 0
            read, write = event.cache_read_tokens or 0, event.cache_write_tokens or 0
            if inp or out or read or write:
                model.input.inc(inp)
                model.output.inc(out)
                if read:
                    model.cache_read.inc(read)
                if write:
                    model.cache_write.inc(write)
                if event.cost_usd is None:
                    model.unpriced.inc()
                else:
                    model.cost.inc(event.cost_usd)
                if inp:
                    with self._lock:
                        model.observe_cache(read, inp)
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
            series.cost_baseline.set(baseline or 0.0)
            self._active_cost(agent)
        elif kind == ev.HEARTBEAT:
            series.heartbeat.set(event.ts)
            if event.status == "idle":
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
