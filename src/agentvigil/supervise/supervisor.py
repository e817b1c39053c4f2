"""``agentvigil supervise``: run an agent as a child process, watch it, restart it by policy, escalate.

The state machine (one supervisor, one child at a time)::

    starting ──first heartbeat──▶ running
    starting|running ──finding with action "restart"──▶ stopping      (SIGTERM; SIGKILL after stop_grace)
    starting|running|stopping ──child exit──▶ backoff | gave_up | done   (its descendants drained first)
    backoff ──cooldown over──▶ starting
    any ──SIGTERM/SIGINT to the supervisor──▶ stopping ──exit──▶ done

Decisions come from verdicts: the child's events go through one pipeline (the same detectors as everywhere,
plus the child-health detectors ``liveness_lost``/``zombie`` and ``cost_spike``, built from the policy's
thresholds), and its exit is classified by the pure ``health.classify_exit`` and published as a detection
event on the same pipeline (journal, ``agent_detections_total``, actions). The supervisor reacts to those
verdict events with the restart policy (``policy.RestartPolicy``: when to start again or give up). This
module does the I/O: the process, the event tail, the journal, notifications, metrics and probes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from prometheus_client import CollectorRegistry

from .. import events as ev
from .._safety import internal_error
from ..detectors.cycle_cost import COST_SPIKE, CycleCostDetector
from ..detectors.liveness import LIVENESS_LOST, ZOMBIE, Liveness, LivenessDetector
from ..events import Event
from ..metrics import metrics_for
from ..pipeline.build import build_pipeline
from ..replay import detection_record
from ..settings import Settings
from ..verdicts import detection
from . import descendants as desc
from . import health as h
from .descendants import Descendants, Drain
from .health import EXIT_VERDICTS, Finding, classify_exit
from .metrics import SupervisorMetrics
from .notify import Notice, Notifier
from .policy import SupervisePolicy
from .sdnotify import SdNotify
from .server import Probe, ProbeServer
from .tail import SessionTail

log = logging.getLogger("agentvigil.supervise")

STARTING, RUNNING, STOPPING, BACKOFF, GAVE_UP, DONE = "starting", "running", "stopping", "backoff", "gave_up", "done"

EXIT_OK = 0          # the child finished as expected (job mode), or the supervisor was asked to stop
EXIT_ERROR = 1       # internal error
EXIT_USAGE = 2       # bad options or config, or the command cannot be started
EXIT_GAVE_UP = 3     # the restart policy is exhausted: escalated, needs a human

JOURNAL_PREFIX = "supervisor-"


def default_agent_name(argv: list[str]) -> str:
    """The command's name; for ``python script.py`` / ``python -m module``, the script or module."""
    name = os.path.basename(argv[0])
    if name.startswith("python") and len(argv) > 1:
        rest = argv[1:]
        if rest[0] == "-m" and len(rest) > 1:
            return rest[1]
        if not rest[0].startswith("-"):
            return os.path.splitext(os.path.basename(rest[0]))[0]
    return name or "agent"


class StartError(OSError):
    """The command could not be started at all (not found, not executable)."""


class Child:
    """One spawned process in its own session and process group (signals reach its helpers too), and in
    ``tree`` its descendants that left the group, as far as they are proven its own (``descendants``)."""

    def __init__(self, argv: list[str], env: dict[str, str], adopt_orphans: bool = False,
                 on_error: Callable[[str, BaseException | None], None] | None = None):
        self.spawned_at = time.time()
        try:
            self.proc = desc.spawn(lambda: subprocess.Popen(argv, env=env, start_new_session=True))
        except OSError as exc:
            raise StartError(f"cannot start {shlex.join(argv)}: {exc.strerror or exc}") from exc
        self.pid = self.proc.pid
        self.returncode: int | None = None
        self.tree = Descendants(self.pid, adopt_orphans, on_error)

    def poll(self) -> int | None:
        if self.returncode is None:
            exited = self._exited()
            if exited:
                self._signal_group(signal.SIGKILL)   # before reaping: until then the group id cannot be reused
            self.returncode = self.proc.poll()
            if self.returncode is not None:
                desc.forget(self.pid)
                if not exited:
                    self._signal_group(signal.SIGKILL)   # stray helpers of the child do not outlive it
        return self.returncode

    def _exited(self) -> bool:
        """Whether the child has exited, leaving it unreaped (its Popen collects the status)."""
        waitid = getattr(os, "waitid", None)
        if waitid is None:
            return False
        try:
            return waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except OSError:
            return False

    def signal(self, signum: int) -> None:
        if self.poll() is None:
            self._signal_group(signum)

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)     # the group id is the child's pid (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass


class Journal:
    """The supervisor's own NDJSON log (``<record_dir>/supervisor-<agent>.ndjson``), read by ``report``."""

    def __init__(self, directory: str, agent: str, replica: int | None = None):
        os.makedirs(directory, exist_ok=True)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", agent)[:60].strip("-") or "agent"
        suffix = "" if replica is None else f"-{replica}"
        self.path = os.path.join(directory, f"{JOURNAL_PREFIX}{slug}{suffix}.ndjson")
        self.agent = agent

    def write(self, record_type: str, /, **fields: Any) -> None:
        record = {"ts": round(time.time(), 3), "agent": self.agent, "type": record_type, **fields}
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        except OSError as exc:
            log.warning("agentvigil supervise: cannot write journal %s: %s", self.path, exc)


class Supervisor:
    def __init__(self, argv: list[str], policy: SupervisePolicy, registry: CollectorRegistry | None = None,
                 environ: dict[str, str] | None = None, serve: bool = True, replica: int | None = None,
                 adopt_orphans: bool = False):
        """``adopt_orphans``: make this process a subreaper (Linux) and stop every orphan re-parented to it
        with the child. Only for a process that spawns nothing but this one supervisor's children (the CLI
        with one replica): such orphans are then provably the child's descendants."""
        if not argv:
            raise ValueError("no command to supervise")
        self.argv = list(argv)
        self.policy = policy
        self.agent = policy.agent or default_agent_name(argv)
        self.environ = dict(os.environ if environ is None else environ)
        self.record_dir = os.path.abspath(policy.record_dir)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = SupervisorMetrics(self.registry, self.agent)
        # One pipeline for the child's whole life (restarts included): the same detectors and metric writer
        # as in-process, so /metrics here shows what the agent's own /metrics would; plus the child-health
        # detectors, judged on our monotonic clock at receipt (cost_spike keeps its baseline across restarts).
        self._agent_metrics = metrics_for(self.registry)
        self._agent_metrics.internal_errors.labels(desc.COMPONENT)   # at 0 from the start, for increase()
        self.pipeline, _ = build_pipeline(Settings.from_env(), metrics=self._agent_metrics,
                                          health=policy.health, clock=time.monotonic)
        # Always built when health thresholds are given.
        self._liveness = cast(LivenessDetector, self.pipeline.detector(LIVENESS_LOST))
        cycle = self.pipeline.detector(COST_SPIKE)
        self._cycle = cycle if isinstance(cycle, CycleCostDetector) else None
        self._metric_sink = next(s for s in self.pipeline.sinks if hasattr(s, "reset_runs"))
        self.notifier = Notifier(policy.webhook_url, policy.alertmanager_url, policy.alert_ttl)
        self.replica = replica   # index among --replicas copies (None: the only one)
        self.journal = Journal(self.record_dir, self.agent, replica)
        self.sd = SdNotify(self.environ) if policy.watchdog else SdNotify({})
        stale_after = max(10 * policy.poll_interval, 5.0)
        self.server = (ProbeServer(self.registry, policy.addr, policy.port, stale_after=stale_after,
                                   web_config_file=policy.web_config_file or None) if serve else None)

        self.state = STARTING
        self.child: Child | None = None
        self.tail: SessionTail | None = None
        self.starts: list[float] = []          # monotonic times of every start
        self.restarts = 0
        self.stop_reason: str | None = None    # why we are stopping the child (a finding kind or "shutdown")
        self.kill_at = 0.0
        self.sigkilled = False
        self.next_start = 0.0
        self.restart_reason = ""
        self.last_incident: str | None = None
        self.firing: set[str] = set()          # incident kinds notified and not yet resolved
        self.exit_code = EXIT_OK
        self.adopt_orphans = adopt_orphans and desc.become_subreaper()
        self._drain: Drain | None = None       # descendants of the last child still being stopped
        self._next_scan = 0.0
        self._shutdown = threading.Event()
        self._force = False
        self._wake = threading.Event()
        self._sd_ready = False

    @property
    def port(self) -> int | None:
        return self.server.port if self.server else None

    def close(self) -> None:
        """Stop serving the probes (after ``run``)."""
        if self.server is not None:
            self.server.close()
            self.server = None

    # -- control from outside (signal handlers, tests) ---------------------------------------------------
    def request_stop(self) -> None:
        """Stop the child gracefully and end supervision (exit code 0). A second call kills at once."""
        if self._shutdown.is_set():
            self._force = True
        self._shutdown.set()
        self._wake.set()

    # -- the loop ----------------------------------------------------------------------------------------
    def run(self) -> int:
        """Supervise until done or given up; returns the exit code. Raises StartError if the very first
        start fails (a usage problem, not an agent failure)."""
        self.journal.write("supervise", argv=self.argv, pid=os.getpid(), policy=_policy_summary(self.policy))
        try:
            self._start(time.monotonic())
            while self.state not in (GAVE_UP, DONE) or self._drain is not None:
                self._tick(time.monotonic())
                self._wake.wait(self.policy.poll_interval)
                self._wake.clear()
        finally:
            self._finish()
        return self.exit_code

    def _tick(self, now: float) -> None:
        if self._shutdown.is_set():
            self._on_shutdown_request(now)
        if self.state in (STARTING, RUNNING, STOPPING):
            self._watch_child(now)
        if self._drain is not None:
            self._drain_step(now)
        if self.state == BACKOFF and now >= self.next_start and self._drain is None:   # never two copies
            self._restart(now)
        if now >= self._next_scan:
            self._next_scan = now + desc.SCAN_INTERVAL
            if self.child is not None and self.state in (STARTING, RUNNING, STOPPING):
                self._safely(self.child.tree.scan)   # keeps descendants proven after their parent dies
            self._safely(desc.reap_orphans)
        self._publish(now)

    @property
    def health(self) -> Liveness:
        """What the child's events say about it (heartbeats, progress, runs)."""
        return self._liveness.state

    def _watch_child(self, now: float) -> None:
        child, health = cast(Child, self.child), self.health   # set by _start() before the first tick
        self._read_events(now)
        returncode = child.poll()
        if returncode is not None:
            self._read_events(now, final=True)      # whatever it flushed on the way out
            stopping = self.state == STOPPING
            self._on_exit(now, returncode)
            self._begin_drain(now, stopping)
            return
        if self.state == STOPPING:
            if not self.sigkilled and now >= self.kill_at:
                log.warning("agentvigil supervise: %s did not stop within %gs; SIGKILL", self.agent,
                            self.policy.stop_grace)
                self.sigkilled = True
                self._signal_child(signal.SIGKILL)
            return
        if self.state == STARTING and health.last_heartbeat is not None:
            self._set_state(RUNNING)
        for verdict in self._liveness.tick(now) or ():
            self._on_verdict(now, verdict)
        if self.state == RUNNING and self.firing and health.last_progress is not None \
                and health.progressing(now):
            self._resolve()

    def _read_events(self, now: float, final: bool = False) -> None:
        tail = cast(SessionTail, self.tail)  # set by _start()
        for event in tail.poll(final):
            if event.event_type == ev.DETECTION:   # recorded verdicts are re-derived
                continue
            verdicts = self.pipeline.emit(event)
            for verdict in verdicts:
                self.journal.write("detection", **detection_record(verdict))
            if event.event_type == ev.HEARTBEAT and self._cycle is not None:
                self.metrics.cycle_cost.labels(self.agent).set(self._cycle.cycle.last_cycle_cost)
                self.metrics.cycle_baseline.labels(self.agent).set(self._cycle.cycle.baseline.mean_cost)
            for verdict in verdicts:
                self._on_verdict(now, verdict, journaled=True)

    def _publish_verdict(self, verdict: Event) -> None:
        """A verdict made here (tick, exit) goes through the pipeline like any other: correlation, metrics,
        actions; the journal records it and what it led to."""
        self.journal.write("detection", **detection_record(verdict))
        for more in self.pipeline.emit(verdict):
            self.journal.write("detection", **detection_record(more))

    def _on_verdict(self, now: float, verdict: Event, journaled: bool = False) -> None:
        """React to a child-health verdict with its policy action (restart | alert | ignore)."""
        if not journaled:
            self._publish_verdict(verdict)
        kind = verdict.detector or ""
        if kind in (LIVENESS_LOST, ZOMBIE, COST_SPIKE) and self.state in (STARTING, RUNNING):
            self._on_finding(now, Finding(kind, dict(verdict.detail or {})))

    # -- transitions -------------------------------------------------------------------------------------
    def _start(self, now: float) -> None:
        env = dict(self.environ)
        env["AGENTVIGIL_RECORD_DIR"] = self.record_dir
        env["AGENTVIGIL_HEARTBEAT_INTERVAL"] = f"{self.policy.heartbeat_interval:g}"
        env["AGENTVIGIL_KILL_SIGNAL"] = "TERM"
        if self.replica is not None:
            env["AGENTVIGIL_REPLICA"] = str(self.replica)
        if self.policy.agent:
            env["AGENTVIGIL_AGENT"] = self.policy.agent
        self.child = Child(self.argv, env, self.adopt_orphans, self._count_error)   # StartError: first start
        self.starts.append(now)
        self._liveness.reset(now)
        if self._cycle is not None:
            self._cycle.reset()
        self.tail = SessionTail(self.record_dir, self.child.pid, self.child.spawned_at)
        self._metric_sink.reset_runs()
        self.stop_reason = None
        self.sigkilled = False
        self.metrics.child_up.labels(self.agent).set(1)
        self.journal.write("start", pid=self.child.pid, attempt=len(self.starts))
        self._set_state(STARTING)

    def _restart(self, now: float) -> None:
        self.restarts += 1
        self.metrics.restarts.labels(self.agent, self.restart_reason).inc()
        self.journal.write("restart", reason=self.restart_reason, restarts=self.restarts)
        try:
            self._start(now)
        except StartError as exc:
            self.starts.append(now)
            self._after_failure(now, Finding(h.CRASH, {"error": str(exc)}))

    def _on_finding(self, now: float, finding: Finding) -> None:
        action = self.policy.action_for(finding.kind)
        self._incident(finding, action)
        if action == "restart" and self.state in (STARTING, RUNNING):
            self._begin_stop(now, finding.kind)

    def _incident(self, finding: Finding, action: str) -> None:
        self.last_incident = finding.kind
        self.metrics.incidents.labels(self.agent, finding.kind).inc()
        self.journal.write("incident", kind=finding.kind, action=action, pid=self.child.pid if self.child else None,
                           detail=finding.detail)
        log.warning("agentvigil supervise: %s: %s %s -> %s", self.agent, finding.kind, finding.detail, action)
        if action != "ignore" and self.policy.notify_incidents:
            self.firing.add(finding.kind)
            self.notifier.send(Notice(finding.kind, self.agent, "warning", finding.detail, action, time.time()))

    def _begin_stop(self, now: float, reason: str) -> None:
        child = cast(Child, self.child)  # set by _start()
        self.stop_reason = reason
        if self._cycle is not None:
            self._cycle.cycle.quiet = True   # the shutdown burst is not a cost spike
        self.kill_at = now + self.policy.stop_grace
        self._signal_child(signal.SIGTERM)
        self.journal.write("stop", reason=reason, pid=child.pid, grace=self.policy.stop_grace)
        self._set_state(STOPPING)

    def _on_exit(self, now: float, returncode: int) -> None:
        self.metrics.child_up.labels(self.agent).set(0)
        outcome = classify_exit(returncode, self.policy.mode, self.health, self.stop_reason is not None)
        self.journal.write("exit", pid=cast(Child, self.child).pid, kind=outcome.kind, sigkilled=self.sigkilled,
                           **outcome.detail)
        if outcome.kind in EXIT_VERDICTS and not self._shutdown.is_set():
            self._publish_verdict(self._exit_verdict(outcome))
        if self._shutdown.is_set() or outcome.kind == h.DONE:
            self.exit_code = EXIT_OK
            self._set_state(DONE)
            return
        if outcome.kind == h.STOPPED:               # we stopped it because of a finding
            self._schedule_restart(now, self.stop_reason or "unknown")
            return
        self._after_failure(now, outcome)

    def _exit_verdict(self, outcome: Finding) -> Event:
        base = Event(ev.DETECTION, time.time(), agent_id=self.agent)
        what = ", ".join(f"{k} {v}" for k, v in outcome.detail.items())
        return detection(base, outcome.kind, dict(outcome.detail), f"ChildExit: {outcome.kind} ({what})")

    def _after_failure(self, now: float, outcome: Finding) -> None:
        self._incident(outcome, "restart")
        self._schedule_restart(now, outcome.kind)

    def _schedule_restart(self, now: float, reason: str) -> None:
        next_start = self.policy.restart.next_start(now, self.starts)
        if next_start is None:
            self._give_up(reason)
            return
        self.restart_reason = reason
        self.next_start = next_start
        self.journal.write("backoff", reason=reason, wait=round(next_start - now, 3))
        self._set_state(BACKOFF)

    def _give_up(self, reason: str) -> None:
        p = self.policy
        detail = {"last_reason": reason, "restarts": self.restarts,
                  "policy": f"max {p.max_restarts} restarts in {p.restart_window:g}s, cooldown {p.cooldown:g}s"}
        self.journal.write("gave_up", **detail)
        log.error("agentvigil supervise: %s: giving up after %d restarts (last: %s)", self.agent, self.restarts,
                  reason)
        self.notifier.send(Notice("gave_up", self.agent, "critical", detail, "stop", time.time()))
        self.exit_code = EXIT_GAVE_UP
        self._set_state(GAVE_UP)

    def _resolve(self) -> None:
        for kind in sorted(self.firing):
            self.notifier.send(Notice(kind, self.agent, "warning", {}, "", time.time(), resolved=True))
        self.journal.write("recovered", kinds=sorted(self.firing))
        self.firing.clear()

    def _on_shutdown_request(self, now: float) -> None:
        if self.state in (STARTING, RUNNING):
            self._begin_stop(now, "shutdown")
        elif self.state == BACKOFF:
            self.exit_code = EXIT_OK
            self._set_state(DONE)
        if self._force and self.state == STOPPING and not self.sigkilled:
            self.sigkilled = True
            self._signal_child(signal.SIGKILL)  # STOPPING: a child is running
        if self._force and self._drain is not None:
            self._safely(self._drain.kill_now, now)

    # -- the child's descendants outside its process group ------------------------------------------------
    def _count_error(self, component: str, exc: BaseException | None = None) -> None:
        internal_error(component, exc, self._agent_metrics)

    def _safely(self, fn: Callable[..., Any], *args: Any, default: Any = None) -> Any:
        """Process bookkeeping never takes supervision down: a failure is counted and logged once."""
        try:
            return fn(*args)
        except Exception as exc:
            self._count_error(desc.COMPONENT, exc)
            return default

    def _signal_child(self, signum: int) -> None:
        """The child's process group, then its proven descendants outside it (re-read first)."""
        child = cast(Child, self.child)
        self._safely(child.tree.scan)
        child.signal(signum)
        self._safely(child.tree.signal_all, signum)

    def _begin_drain(self, now: float, stopping: bool) -> None:
        """The child is gone: stop what is left of its descendants (SIGTERM unless sent, SIGKILL at the same
        deadline as the child's), before a new copy is started or supervision ends."""
        child = cast(Child, self.child)
        self._safely(child.tree.scan)        # orphans it left are ours now (subreaper)
        if not self._safely(child.tree.alive, default=[]):
            self._descendants_done(child.tree, child.tree.refused)
            return
        kill_at = self.kill_at if stopping else now + self.policy.stop_grace
        self._drain = self._safely(Drain, child.tree, now, kill_at, self.sigkilled or self._force)
        if self._drain is not None:
            log.info("agentvigil supervise: %s exited; stopping its descendants %s", self.agent,
                     child.tree.alive())

    def _drain_step(self, now: float) -> None:
        drain = cast(Drain, self._drain)
        if self._safely(drain.step, now, default=True):
            self._drain = None
            self._descendants_done(drain.tree, drain.unstopped)

    def _descendants_done(self, tree: Descendants, left: list[int]) -> None:
        if not tree.stopped and not left:
            return
        self.journal.write("descendants", pid=tree.root, stopped=tree.stopped, sigkilled=tree.sigkilled,
                           left=left[:20])
        if left:
            log.warning("agentvigil supervise: %s: descendants not stopped (still running %gs after SIGKILL, "
                        "or another user's): %s", self.agent, desc.KILL_WAIT, left[:20])

    def _set_state(self, state: str) -> None:
        if state == self.state and state != STARTING:
            return
        self.state = state
        self.metrics.set_state(state)
        status = f"{self.agent}: {state}" + (f" (restarts {self.restarts})" if self.restarts else "")
        if state == RUNNING and not self._sd_ready:
            self._sd_ready = True
            self.sd.ready(status)
        else:
            self.sd.status(status)

    def _publish(self, now: float) -> None:
        health = self.health
        live = self.child is not None and self.state in (STARTING, RUNNING) and health.live(now) \
            and health.last_heartbeat is not None
        progressing = live and health.progressing(now)
        if self.server is not None:
            self.server.probe = Probe(self.state, self.child.pid if self.child and self.child.returncode is None
                                      else None, live, progressing, self.restarts, self.last_incident, now)
        self.sd.watchdog(now)

    def _finish(self) -> None:
        if self.child is not None and self.child.poll() is None:    # an exception got us here: do not orphan
            self._signal_child(signal.SIGKILL)
            deadline = time.monotonic() + 5
            while self.child.poll() is None and time.monotonic() < deadline:   # poll: the group is hit unreaped
                time.sleep(0.02)
        if self._drain is not None:       # likewise its descendants: no grace left
            self._safely(self._drain.kill_now, time.monotonic())
        self._safely(desc.reap_orphans)
        self.sd.stopping()
        self.journal.write("end", state=self.state, exit_code=self.exit_code, restarts=self.restarts)
        self.notifier.close()
        if self.server is not None:
            self._publish(time.monotonic())


def _policy_summary(policy: SupervisePolicy) -> dict:
    keep = ("mode", "heartbeat_interval", "liveness_timeout", "progress_timeout", "cost_spike_factor", "cooldown",
            "max_restarts", "restart_window", "stop_grace")
    return {key: getattr(policy, key) for key in keep}
