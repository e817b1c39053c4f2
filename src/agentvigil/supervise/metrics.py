"""The supervisor's /metrics: the child's health on the existing metric contract (``AgentMetrics``), fed
from its recorded events, plus the supervisor's own series.

Counters keep counting across restarts of the child (the registry belongs to the supervisor), so
``increase()`` in Prometheus sees no reset when the agent restarts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from ..metrics import AgentMetrics, metrics_for

STATES = ("starting", "running", "stopping", "backoff", "gave_up", "done")
INCIDENT_KINDS = ("liveness_lost", "zombie", "cost_spike", "crash", "signal", "silent_exit")
_BREAKER_VALUE = {"closed": 0.0, "half_open": 0.5, "open": 1.0}


class SupervisorMetrics:
    def __init__(self, registry: CollectorRegistry, agent: str):
        self.agent = agent
        self.restarts = Counter("agent_restarts", "Restarts of the agent by the supervisor, by reason.",
                                ["agent", "reason"], registry=registry)
        self.incidents = Counter("agent_supervisor_incidents", "Health incidents seen by the supervisor "
                                 "(liveness_lost, zombie, cost_spike, crash, signal, silent_exit).",
                                 ["agent", "kind"], registry=registry)
        self.state = Gauge("agent_supervisor_state", "Supervisor state: 1 for the current state, 0 for the "
                           "others.", ["agent", "state"], registry=registry)
        self.child_up = Gauge("agent_supervisor_child_up", "1 while the child process is running.", ["agent"],
                              registry=registry)
        self.cycle_cost = Gauge("agent_supervisor_cycle_cost_usd", "Cost of the last heartbeat cycle of the "
                                "child (LLM calls between two ticks), USD.", ["agent"], registry=registry)
        self.cycle_baseline = Gauge("agent_supervisor_cycle_cost_baseline_usd", "Rolling mean cost of recent "
                                    "active heartbeat cycles, USD (0 until enough cycles).", ["agent"],
                                    registry=registry)
        for kind in INCIDENT_KINDS:
            self.incidents.labels(agent, kind)
            self.restarts.labels(agent, kind)
        self.set_state("starting")

    def set_state(self, state: str) -> None:
        for name in STATES:
            self.state.labels(self.agent, name).set(1.0 if name == state else 0.0)


class EventMetrics:
    """Replays the child's events onto ``AgentMetrics``: the same series the child would export itself."""

    def __init__(self, registry: CollectorRegistry):
        self.metrics: AgentMetrics = metrics_for(registry)
        self._run_cost: dict[str, float] = {}
        self._seen: dict[str, object] = {}     # agent name -> AgentSeries fed so far

    def child_started(self) -> None:
        """A new child: runs in flight of the previous one are gone."""
        for series in self._seen.values():
            series.active_runs.set(0)
            series.active_run_cost.set(0)
        self._run_cost.clear()

    def feed(self, event: dict) -> None:
        handler = self._HANDLERS.get(event.get("event_type"))
        if handler is not None:
            try:
                handler(self, event)
            except (TypeError, ValueError, AttributeError):
                pass   # a badly typed field in one event must not stop the supervisor

    def _agent(self, event: dict):
        name = str(event.get("agent_id") or "unknown")
        series = self._seen.get(name)
        if series is None:
            series = self._seen[name] = self.metrics.agent(name)
        return series

    def _heartbeat(self, event: dict) -> None:
        series = self._agent(event)
        series.heartbeat.set(event["ts"])
        if event.get("status") == "idle":
            series.progress.set(event["ts"])

    def _run_start(self, event: dict) -> None:
        self._agent(event).active_runs.inc()
        self._run_cost[event.get("run_id")] = 0.0

    def _run_end(self, event: dict) -> None:
        series = self._agent(event)
        status = event.get("status")
        (series.runs_ok if status == "ok" else series.runs_killed if status == "killed" else series.runs_error).inc()
        if self._run_cost.pop(event.get("run_id"), None) is not None:
            series.active_runs.dec()
        cost = float(event.get("cost_usd") or 0.0)
        series.run_duration.observe(float(event.get("duration_ms") or 0.0) / 1000.0)
        series.run_cost.observe(cost)
        series.run_steps.observe(int(event.get("step_index") or 0))
        series.last_run_cost.set(cost)
        series.progress.set(event["ts"])
        series.active_run_cost.set(max(self._run_cost.values(), default=0.0))

    def _step_end(self, event: dict) -> None:
        series = self._agent(event)
        series.steps.inc()
        series.progress.set(event["ts"])

    def _tool_end(self, event: dict) -> None:
        tool = self.metrics.tool(str(event.get("agent_id") or "unknown"), str(event.get("tool_name") or "unknown"))
        if event.get("status") == "error":
            tool.error.inc()
            tool.error_kind(str(event.get("error_kind") or "unknown")).inc()
        else:
            tool.ok.inc()
        if event.get("duration_ms") is not None:
            tool.duration.observe(float(event["duration_ms"]) / 1000.0)

    def _llm_call(self, event: dict) -> None:
        model = self.metrics.model(str(event.get("agent_id") or "unknown"), str(event.get("provider") or "unknown"),
                                   str(event.get("model") or "unknown"))
        if event.get("status") == "error":
            model.error.inc()
            model.error_kind(str(event.get("error_kind") or "unknown")).inc()
        else:
            model.ok.inc()
        for key, counter in (("input_tokens", model.input), ("output_tokens", model.output),
                             ("cache_read_tokens", model.cache_read), ("cache_write_tokens", model.cache_write)):
            if event.get(key):
                counter.inc(int(event[key]))
        cost = event.get("cost_usd")
        if cost is None:
            if event.get("input_tokens") or event.get("output_tokens"):
                model.unpriced.inc()
        else:
            model.cost.inc(float(cost))
            run_id = event.get("run_id")
            if run_id in self._run_cost:
                self._run_cost[run_id] += float(cost)
                self._agent(event).active_run_cost.set(max(self._run_cost.values()))
        if event.get("duration_ms") is not None:
            model.duration.observe(float(event["duration_ms"]) / 1000.0)

    def _detection(self, event: dict) -> None:
        series = self._agent(event)
        detector = event.get("detector")
        if detector == "cost_over_baseline":
            series.cost_spikes.inc()
        elif detector in series.loop:
            series.loop[detector].inc()

    def _breaker(self, event: dict) -> None:
        m, cap = self.metrics, self.metrics.cap
        name = cap["breaker"](event.get("name") or "unknown")
        state = str(event.get("state") or "")
        if state in _BREAKER_VALUE:
            m.breaker_state.labels(name).set(_BREAKER_VALUE[state])
            m.breaker_transitions.labels(name, state, cap["reason"](event.get("reason") or "unknown")).inc()

    def _budget(self, event: dict) -> None:
        self.metrics.budget_exceeded.labels(self.metrics.cap["budget"](event.get("name") or "unknown")).inc()

    def _kill(self, event: dict) -> None:
        self.metrics.kills.labels(self._agent(event).agent, self.metrics.cap["reason"](event.get("reason") or
                                                                                         "kill_switch")).inc()

    _HANDLERS = {"heartbeat": _heartbeat, "run_start": _run_start, "run_end": _run_end, "step_end": _step_end,
                 "tool_end": _tool_end, "llm_call": _llm_call, "detection": _detection,
                 "breaker_transition": _breaker, "budget_exceeded": _budget, "kill": _kill}
