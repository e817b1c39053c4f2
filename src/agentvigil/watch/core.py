"""The decision core of ``watch``: events in, breaches out. No I/O, no clock of its own (``now`` is passed),
so it is tested with hand-built events and a fake time.

``SessionJudge`` is one session's pipeline (``agentvigil.pipeline.build``: the same detectors the
in-process Monitor, ``replay`` and ``supervise`` run, correlation included) plus the watchers policy that
says which actions each verdict takes. A ``Breach`` is a verdict with its actions, as watch reports it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .. import events as ev
from ..detectors import spec_of
from ..detectors.correlation import CORRELATED
from ..detectors.retry import RetryDetector
from ..detectors.scope import ScopePolicy
from ..detectors.silence import SilenceDetector
from ..events import Event
from ..metrics import AgentMetrics
from ..pipeline.build import build_pipeline
from ..policy import ConfigError, WatchConfig
from ..settings import Settings
from ..sinks.prometheus import PrometheusSink

MAX_OPEN_RUNS = 10_000   # run ids kept as "started, not ended" per session (a file of run_starts stays bounded)


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
    detector: str | None = None
    step_index: int | None = None

    def to_record(self) -> dict:
        return {"type": "breach", "ts": self.ts, "watcher": self.watcher, "detector": self.detector,
                "severity": self.severity, "session_id": self.session_id, "agent_id": self.agent_id,
                "run_id": self.run_id, "step_index": self.step_index, "message": self.message,
                "detail": self.detail, "actions": list(self.actions)}


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
    """One session's pipeline. Not thread-safe: the runner feeds it from one thread."""

    def __init__(self, config: WatchConfig, session_id: str | None = None, agent_id: str | None = None,
                 started_at: float | None = None, scope_policy: ScopePolicy | None = None,
                 settings: Settings | None = None, metrics: AgentMetrics | None = None):
        self.config = config
        self.session_id = session_id
        self.agent_id = agent_id
        self.pipeline, _ = build_pipeline(settings or Settings.from_env(), config, metrics=metrics,
                                          started_at=started_at, scope_policy=scope_policy)
        self._timed = [d for d in self.pipeline.detectors if hasattr(d, "live")]
        silence = self.pipeline.detector("silence")
        self._silence = silence if isinstance(silence, SilenceDetector) else None
        retry = self.pipeline.detector("retry")
        self._retry = retry if isinstance(retry, RetryDetector) else None
        self.events = 0
        self.breaches = 0
        self.cost = 0.0
        self.open_runs: set[str | None] = set()

    def touch(self, now: float) -> None:
        """A line was read (valid or not): the session is not silent."""
        if self._silence is not None:
            self._silence.activity(now)

    def feed(self, event: Event, now: float) -> list[Breach]:
        self.events += 1
        if event.agent_id and not self.agent_id:
            self.agent_id = event.agent_id
        if event.session_id and not self.session_id:
            self.session_id = event.session_id
        kind = event.event_type
        if kind == ev.LLM_CALL and event.cost_usd:
            self.cost += event.cost_usd
        elif kind == ev.RUN_START and len(self.open_runs) < MAX_OPEN_RUNS:
            self.open_runs.add(event.run_id)
        elif kind == ev.RUN_END:
            self.open_runs.discard(event.run_id)
        if kind == ev.DETECTION:
            return []   # recorded verdicts: the detectors re-derive them from the same events (as replay does)
        verdicts = self.pipeline.emit(event)
        return self._breaches(verdicts, now) if verdicts else []

    def tick(self, now: float, live: bool) -> list[Breach]:
        for detector in self._timed:
            detector.live = live   # type: ignore[attr-defined]
        verdicts = self.pipeline.tick(now)
        return self._breaches(verdicts, now) if verdicts else []

    @contextmanager
    def replaying(self) -> Iterator[None]:
        """Events judged once already (a released session read again up to where it was left): the detectors
        learn them again, the sinks (metrics) are not given them twice."""
        sinks = list(self.pipeline.sinks)
        for sink in sinks:
            self.pipeline.remove_sink(sink)
        try:
            yield
        finally:
            for sink in sinks:
                self.pipeline.add_sink(sink)

    def forget_runs(self) -> None:
        """The session is released: nothing will end its open runs here, so they no longer count in flight."""
        if not self.open_runs:
            return
        self.open_runs.clear()
        for sink in self.pipeline.sinks:
            if isinstance(sink, PrometheusSink):
                sink.reset_runs()

    @property
    def retries(self) -> int:
        return self._retry.retries if self._retry is not None else 0

    def _breaches(self, verdicts: list[Event], now: float) -> list[Breach]:
        out = [self._breach(v, now) for v in verdicts]
        self.breaches += len(out)
        return out

    def _breach(self, verdict: Event, now: float) -> Breach:
        name = verdict.detector or "unknown"
        spec = spec_of(name)
        actions = self.config.watchers[spec].actions if spec in self.config.watchers else ("terminal",)
        severity = "critical" if name == CORRELATED or "kill" in actions else "warning"
        detail: dict[str, Any] = dict(verdict.detail or {})
        if spec == "detectors":
            detail["detector"] = name
        return Breach(spec, verdict.reason or name, detail, verdict.ts if verdict.ts is not None else now,
                      verdict.session_id or self.session_id, verdict.agent_id or self.agent_id, verdict.run_id,
                      tuple(actions), severity, name, verdict.step_index)
