"""The health core: what one child's recorded events say about it. Pure: no I/O, no clock; every call takes
``now`` (the supervisor passes its monotonic clock at receipt, ``report`` passes each event's ``ts``).

Two heartbeats, as the Monitor defines them:

* **liveness**: ``heartbeat`` events (the Monitor's background tick, ``status`` idle|busy);
* **progress**: ``step_end`` and ``run_end`` events, ``heartbeat`` events with status ``progress``
  (``Monitor.heartbeat()``), and idle heartbeats (an idle agent is not stuck).

Findings:

* ``liveness_lost``: no heartbeat for ``liveness_timeout`` (or none within ``startup_timeout`` of the start);
* ``zombie``: heartbeats fresh, a session busy, and no progress in it for ``progress_timeout``;
* ``cost_spike``: the cost of one heartbeat cycle (LLM calls between two ticks) above
  ``cost_spike_factor`` × the rolling mean of recent active cycles (tokens when no call is priced).

Exits are classified by ``classify_exit``.
"""

from __future__ import annotations

import signal
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from .policy import HealthPolicy

LIVENESS_LOST = "liveness_lost"
ZOMBIE = "zombie"
COST_SPIKE = "cost_spike"
# exit kinds
CRASH = "crash"              # non-zero exit code
KILLED = "signal"            # ended by a signal we did not send
SILENT_EXIT = "silent_exit"  # exit 0 that was not expected
DONE = "done"                # expected exit (job mode, last run ok)
STOPPED = "stopped"          # ended after the supervisor asked it to stop


class Finding(NamedTuple):
    kind: str
    detail: dict


@dataclass
class CycleBaseline:
    """Rolling mean of the spend of recent *active* heartbeat cycles (cycles with no LLM call are left out,
    so an agent that works in bursts is not judged against its idle time). Spikes are not added, so a
    runaway loop does not teach the baseline that it is normal. Outlives a child: a restart keeps it."""

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


@dataclass
class _Session:
    """One Monitor in the child (a child may create several)."""

    last_heartbeat: float | None = None
    last_progress: float = 0.0
    busy: bool = False
    active_runs: set = field(default_factory=set)


class ChildHealth:
    """Health of one child process, fed with its events (as decoded dicts)."""

    def __init__(self, policy: HealthPolicy, started_at: float, baseline: CycleBaseline | None = None):
        self.policy = policy
        self.started_at = started_at
        self.baseline = baseline or CycleBaseline(policy.baseline_cycles, policy.min_cycles)
        self.sessions: dict[str, _Session] = {}
        self.last_heartbeat: float | None = None
        self.last_progress: float | None = None
        self.cycle_started: float | None = None
        self.cycle_cost = 0.0
        self.cycle_tokens = 0
        self.last_cycle_cost = 0.0
        self.last_run_status: str | None = None
        self.runs_ended = 0
        self.zombie_since: float | None = None
        self.quiet = False     # set while the child is being stopped: its shutdown burst is not a spike
        self.spiking = False   # in a spike episode: reported once, until a normal active cycle

    # -- input -------------------------------------------------------------------------------------------
    def feed(self, event: dict, now: float) -> Finding | None:
        """Take one event. Returns a cost-spike finding when this event closes a cycle that spiked."""
        kind = event.get("event_type")
        session = self.sessions.get(event.get("session_id") or "")
        if session is None:
            session = self.sessions[event.get("session_id") or ""] = _Session(last_progress=now)
        if kind == "heartbeat":
            session.last_heartbeat = self.last_heartbeat = now
            status = event.get("status")
            if status == "progress":  # Monitor.heartbeat(): progress marked by hand, busy state unchanged
                self._progress(session, now)
                return None
            session.busy = status == "busy"
            if not session.busy:
                self._progress(session, now)
            return self._close_cycle(now)
        if kind == "step_end":
            self._progress(session, now)
        elif kind == "run_start":
            session.active_runs.add(event.get("run_id"))
            session.busy = True
        elif kind == "run_end":
            session.active_runs.discard(event.get("run_id"))
            self.last_run_status = event.get("status")
            self.runs_ended += 1
            self._progress(session, now)
        elif kind == "llm_call":
            cost = event.get("cost_usd")
            if isinstance(cost, (int, float)):
                self.cycle_cost += cost
            tokens = event.get("token_count")
            if not isinstance(tokens, int):
                tokens = (event.get("input_tokens") or 0) + (event.get("output_tokens") or 0)
            self.cycle_tokens += tokens if isinstance(tokens, int) else 0
        return None

    def _progress(self, session: _Session, now: float) -> None:
        session.last_progress = now
        self.last_progress = now

    def _close_cycle(self, now: float) -> Finding | None:
        # Several Monitors tick together: one cycle per heartbeat_interval, not per heartbeat event.
        if self.cycle_started is not None and now - self.cycle_started < 0.5 * self.policy.heartbeat_interval:
            return None
        started, cost, tokens = self.cycle_started, self.cycle_cost, self.cycle_tokens
        self.cycle_started, self.cycle_cost, self.cycle_tokens = now, 0.0, 0
        if started is None:       # calls before the first tick belong to no full cycle
            return None
        self.last_cycle_cost = cost
        if self.quiet:
            return None
        spike = self.baseline.judge(cost, tokens, self.policy.cost_spike_factor)
        if spike is None:
            if cost > 0 or tokens > 0:
                self.spiking = False
            return None
        if self.spiking:
            return None
        self.spiking = True
        return Finding(COST_SPIKE, spike)

    # -- judgement ---------------------------------------------------------------------------------------
    def live(self, now: float) -> bool:
        """Heartbeats are fresh (or, before the first one, the start-up allowance has not run out)."""
        p = self.policy
        if self.last_heartbeat is None:
            return not p.startup_timeout or now - self.started_at <= p.startup_timeout
        return not p.liveness_timeout or now - self.last_heartbeat <= p.liveness_timeout

    def stalled_session(self, now: float) -> tuple[str, float] | None:
        """(session id, seconds without progress) of a busy session past ``progress_timeout``."""
        limit = self.policy.progress_timeout
        if not limit:
            return None
        for session_id, session in self.sessions.items():
            if session.busy and session.last_heartbeat is not None and now - session.last_progress > limit:
                return session_id, now - session.last_progress
        return None

    def progressing(self, now: float) -> bool:
        """Ready in the probe sense: heartbeats seen and fresh, and no busy session stalled."""
        return self.last_heartbeat is not None and self.live(now) and self.stalled_session(now) is None

    def check(self, now: float) -> list[Finding]:
        """Time-based findings. A zombie is reported once per stall (until progress resumes)."""
        if not self.live(now):
            since = self.last_heartbeat if self.last_heartbeat is not None else self.started_at
            return [Finding(LIVENESS_LOST, {"seconds_since_heartbeat": round(now - since, 3),
                                            "heartbeat_seen": self.last_heartbeat is not None})]
        stalled = self.stalled_session(now)
        if stalled is None:
            self.zombie_since = None
            return []
        if self.zombie_since is not None:
            return []
        self.zombie_since = now
        return [Finding(ZOMBIE, {"session_id": stalled[0], "seconds_without_progress": round(stalled[1], 3)})]


def classify_exit(returncode: int, mode: str, health: ChildHealth | None, stop_requested: bool) -> Finding:
    """Why the child ended. ``stop_requested``: the supervisor itself asked it to stop."""
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
