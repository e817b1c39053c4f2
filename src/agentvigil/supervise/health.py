"""What one child's recorded events say about it, as plain values (``report`` reads sessions with it) and the
exit classification. The judging itself lives in the detectors the supervisor's pipeline runs:
``detectors/liveness.py`` (``liveness_lost``, ``zombie``) and ``detectors/cycle_cost.py`` (``cost_spike`` per
heartbeat cycle); ``ChildHealth`` feeds the same state with decoded dicts and an explicit ``now``.

``classify_exit`` is pure: the supervisor publishes its verdict (crash, signal, silent_exit) as a detection
event through its pipeline, so the journal, ``agent_detections_total`` and the actions see it.
"""

from __future__ import annotations

import signal
from typing import NamedTuple, Protocol

from ..detectors.cycle_cost import COST_SPIKE, CycleBaseline, CycleCost
from ..detectors.liveness import LIVENESS_LOST, ZOMBIE, Liveness, SessionState
from .policy import HealthPolicy

__all__ = ["COST_SPIKE", "CRASH", "DONE", "EXIT_VERDICTS", "KILLED", "LIVENESS_LOST", "SILENT_EXIT", "STOPPED",
           "ZOMBIE", "ChildHealth", "CycleBaseline", "Finding", "classify_exit"]

# exit kinds
CRASH = "crash"              # non-zero exit code
KILLED = "signal"            # ended by a signal we did not send
SILENT_EXIT = "silent_exit"  # exit 0 that was not expected
DONE = "done"                # expected exit (job mode, last run ok)
STOPPED = "stopped"          # ended after the supervisor asked it to stop
EXIT_VERDICTS = (CRASH, KILLED, SILENT_EXIT)   # the exits that are incidents (published as detections)


class Finding(NamedTuple):
    kind: str
    detail: dict


class _Runs(Protocol):
    runs_ended: int
    last_run_status: str | None
    sessions: dict[str, SessionState]


class ChildHealth:
    """Health of one child process, fed with its events as decoded dicts and the time of receipt."""

    def __init__(self, policy: HealthPolicy, started_at: float, baseline: CycleBaseline | None = None):
        self.policy = policy
        self.started_at = started_at
        self.baseline = baseline or CycleBaseline(policy.baseline_cycles, policy.min_cycles)
        self.state = Liveness(policy.liveness_timeout, policy.startup_timeout, policy.progress_timeout, started_at)
        self.cycle = CycleCost(policy.cost_spike_factor, policy.heartbeat_interval, self.baseline)

    # the state, read through
    sessions = property(lambda self: self.state.sessions)
    last_heartbeat = property(lambda self: self.state.last_heartbeat)
    last_progress = property(lambda self: self.state.last_progress)
    last_run_status = property(lambda self: self.state.last_run_status)
    runs_ended = property(lambda self: self.state.runs_ended)
    last_cycle_cost = property(lambda self: self.cycle.last_cycle_cost)

    def feed(self, event: dict, now: float) -> Finding | None:
        """Take one event. Returns a cost-spike finding when this event closes a cycle that spiked."""
        kind = event.get("event_type")
        status = event.get("status")
        self.state.observe(kind, event.get("session_id"), event.get("run_id"), status, now)
        if kind == "llm_call":
            self.cycle.add_call(event.get("cost_usd"), event.get("token_count"), event.get("input_tokens"),
                                event.get("output_tokens"))
        elif kind == "heartbeat" and status != "progress":
            spike = self.cycle.close(now)
            if spike is not None:
                return Finding(COST_SPIKE, spike)
        return None

    def live(self, now: float) -> bool:
        return self.state.live(now)

    def stalled_session(self, now: float) -> tuple[str, float] | None:
        return self.state.stalled_session(now)

    def progressing(self, now: float) -> bool:
        return self.state.progressing(now)

    def check(self, now: float) -> list[Finding]:
        """Time-based findings. A zombie is reported once per stall (until progress resumes)."""
        return [Finding(kind, detail) for kind, detail in self.state.check(now)]


def classify_exit(returncode: int, mode: str, health: _Runs | ChildHealth | None, stop_requested: bool) -> Finding:
    """Why the child ended. ``stop_requested``: the supervisor itself asked it to stop. ``health``: what its
    events said about its runs (a ``ChildHealth`` or the liveness detector's state)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        detail: dict[str, object] = {"signal": name}
    else:
        detail = {"exit_code": returncode}
    if stop_requested:
        return Finding(STOPPED, detail)
    if returncode < 0:
        return Finding(KILLED, detail)
    if returncode > 0:
        return Finding(CRASH, detail)
    if mode == "job" and health is not None and health.runs_ended and health.last_run_status == "ok" \
            and not any(s.active_runs for s in health.sessions.values()):
        return Finding(DONE, detail)
    detail["runs_ended"] = health.runs_ended if health is not None else 0
    return Finding(SILENT_EXIT, detail)
