"""The decision core of ``watch``: events in, breaches out. No I/O, no clock of its own (``now`` is passed),
so it is tested with hand-built events and a fake time.

``SessionJudge`` runs, for one session: every enabled watcher, the same ``Judge.feed`` the in-process
Monitor and ``replay`` use (its verdicts go to the ``detectors`` watcher), and the correlated-breach rule:
when breaches of ``min_watchers`` different kinds fall within ``window_seconds``, it adds a ``correlated``
breach with its own (escalated) actions: seed 002's "two thresholds at once are an incident".
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .. import events as ev
from ..config import Settings
from ..events import Event
from ..replay import judge_for
from .config import ConfigError, WatchConfig
from .watchers import (
    BudgetWatcher,
    CostWatcher,
    DetectorWatcher,
    DurationWatcher,
    Finding,
    LoopWatcher,
    RetryWatcher,
    ScopePolicy,
    ScopeWatcher,
    SilenceWatcher,
    family,
)

_JUDGED = frozenset({ev.TOOL_END, ev.LLM_CALL, ev.RUN_END})


@dataclass
class Breach:
    watcher: str
    message: str
    detail: dict
    ts: float
    session_id: str | None
    agent_id: str | None
    run_id: str | None
    actions: tuple[str, ...]
    severity: str = "warning"     # "critical" for correlated breaches and anything that kills

    def to_record(self) -> dict:
        return {"type": "breach", "ts": self.ts, "watcher": self.watcher, "severity": self.severity,
                "session_id": self.session_id, "agent_id": self.agent_id, "run_id": self.run_id,
                "message": self.message, "detail": self.detail, "actions": list(self.actions)}


class Correlator:
    """Breaches of ``min_watchers`` different families within ``window`` seconds → one correlated finding.
    Fires at most once per window."""

    def __init__(self, window: float = 60.0, min_watchers: int = 2):
        self.window = window
        self.min_watchers = min_watchers
        self._last: dict[str, tuple[float, str]] = {}   # family -> (ts, message)
        self._fired_at: float | None = None

    def observe(self, kind: str, ts: float, message: str) -> Finding | None:
        self._last[kind] = (ts, message)
        recent = {k: v for k, v in self._last.items() if ts - v[0] <= self.window}
        self._last = recent
        if len(recent) < self.min_watchers:
            return None
        if self._fired_at is not None and ts - self._fired_at < self.window:
            return None
        self._fired_at = ts
        kinds = sorted(recent)
        return Finding("correlated", f"CorrelatedBreach: {' + '.join(kinds)} within {self.window:g}s — escalating",
                       {"watchers": kinds, "window_seconds": self.window,
                        "messages": [recent[k][1] for k in kinds]}, ts)


def load_scope_policy(config: WatchConfig) -> ScopePolicy | None:
    """The scope policy, or None when the watcher is off. A policy that was asked for explicitly but is
    missing or broken is a ConfigError; the default ``.agent-scope.json`` is simply optional."""
    spec = config.watchers["scope"]
    if not spec.enabled:
        return None
    path = spec.params["policy"]
    if not os.path.exists(path):
        if spec.explicit:
            raise ConfigError("watchers.scope.policy", f"policy file not found: {path}")
        return None
    try:
        return ScopePolicy.load(path)
    except (OSError, ValueError) as exc:
        raise ConfigError("watchers.scope.policy", f"{path}: {exc}") from None


class SessionJudge:
    """All watchers of one session. Not thread-safe: the runner feeds it from one thread."""

    def __init__(self, config: WatchConfig, session_id: str | None = None, agent_id: str | None = None,
                 started_at: float | None = None, scope_policy: ScopePolicy | None = None,
                 settings: Settings | None = None):
        self.config = config
        self.session_id = session_id
        self.agent_id = agent_id
        self.judge = judge_for(settings or Settings.from_env())
        w = config.watchers
        p = {name: spec.params for name, spec in w.items()}
        duration = p["duration"]["max_seconds"] or p["duration"]["max_minutes"] * 60.0
        candidates = {
            "retry": lambda: RetryWatcher(p["retry"]["max"]),
            "cost": lambda: CostWatcher(p["cost"]["max_dollars"]),
            "scope": lambda: ScopeWatcher(scope_policy) if scope_policy is not None else None,
            "duration": lambda: DurationWatcher(duration, started_at),
            "loop": lambda: LoopWatcher(p["loop"]["sequence_length"], p["loop"]["max_repeats"]),
            "silence": lambda: SilenceWatcher(p["silence"]["max_seconds"]),
            "budget": lambda: BudgetWatcher(p["budget"]["max_tokens"]),
        }
        self.watchers = [x for name, make in candidates.items() if w[name].enabled and (x := make()) is not None]
        self.by_name = {x.name: x for x in self.watchers}
        self.detectors = DetectorWatcher() if w["detectors"].enabled else None
        corr = w["correlated"]
        self.correlator = (Correlator(corr.params["window_seconds"], corr.params["min_watchers"])
                           if corr.enabled else None)
        self.events = 0
        self.breaches = 0
        self.cost = 0.0
        self.on_detection = None   # optional callable(detection Event), e.g. the metrics bridge

    def touch(self, now: float) -> None:
        """A line was read (valid or not): the session is not silent."""
        silence = self.by_name.get("silence")
        if silence is not None:
            silence.activity(now)

    def feed(self, event: Event, now: float) -> list[Breach]:
        self.events += 1
        if event.agent_id and not self.agent_id:
            self.agent_id = event.agent_id
        if event.session_id and not self.session_id:
            self.session_id = event.session_id
        kind = event.event_type
        if kind == ev.LLM_CALL and event.cost_usd:
            self.cost += event.cost_usd
        if kind == ev.DETECTION:
            return []   # recorded verdicts: our own Judge re-derives them from the same events (as replay does)
        findings: list[Finding] = []
        for watcher in self.watchers:
            findings.extend(watcher.feed(event, now))
        if kind in _JUDGED:
            for detection in self.judge.feed(event):
                if self.on_detection is not None:
                    self.on_detection(detection)
                if self.detectors is not None:
                    findings.extend(self.detectors.feed(detection, now))
        elif kind == ev.BREAKER_TRANSITION and self.detectors is not None:
            findings.extend(self.detectors.feed(event, now))
        return self._breaches(findings, now) if findings else []

    def tick(self, now: float, live: bool) -> list[Breach]:
        findings: list[Finding] = []
        for watcher in self.watchers:
            findings.extend(watcher.tick(now, live))
        return self._breaches(findings, now) if findings else []

    @property
    def retries(self) -> int:
        retry = self.by_name.get("retry")
        return retry.retries if retry is not None else 0

    def _breaches(self, findings: list[Finding], now: float) -> list[Breach]:
        out = []
        for finding in findings:
            out.append(self._breach(finding, now))
            if self.correlator is not None:
                escalation = self.correlator.observe(family(finding), out[-1].ts, finding.message)
                if escalation is not None:
                    out.append(self._breach(escalation._replace(run_id=finding.run_id), now, "critical"))
        self.breaches += len(out)
        return out

    def _breach(self, finding: Finding, now: float, severity: str | None = None) -> Breach:
        actions = self.config.watchers[finding.watcher].actions
        severity = severity or ("critical" if "kill" in actions else "warning")
        return Breach(finding.watcher, finding.message, finding.detail,
                      finding.ts if finding.ts is not None else now, self.session_id, self.agent_id,
                      finding.run_id, actions, severity)
