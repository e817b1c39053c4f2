"""The supervisor's own series. The child's health goes on the existing metric contract through the
pipeline's Prometheus sink (the same events → metrics writer as in-process, ``replay`` and ``watch``).

Counters keep counting across restarts of the child (the registry belongs to the supervisor), so
``increase()`` in Prometheus sees no reset when the agent restarts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

STATES = ("starting", "running", "stopping", "backoff", "gave_up", "done")
INCIDENT_KINDS = ("liveness_lost", "zombie", "cost_spike", "crash", "signal", "silent_exit")


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
