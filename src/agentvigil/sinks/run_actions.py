"""In-process actions on verdicts: the verdict's run raises ``LoopDetected`` at its next boundary (loop
verdicts with ``loop_action="raise"``, or a watcher whose actions include ``raise``), or is killed
(``RunKilled``) when its watcher's actions include ``kill``. Only the verdict's own run: never another run,
never the process. Other actions (terminal, file, webhook, alertmanager) belong to ``watch``/``supervise``."""

from __future__ import annotations

from typing import Any

from .. import events as ev
from ..events import Event
from ..exceptions import LoopDetected, RunLimitExceeded
from ..policy import WatchConfig


class RunActionSink:
    consumes = frozenset({ev.DETECTION})

    def __init__(self, policy: WatchConfig, families: dict[str, str], loop_action: str = "record"):
        from ..detectors import spec_of

        self._actions: dict[str, tuple[str, ...]] = {}
        for verdict, family in families.items():
            spec = policy.watchers.get(spec_of(verdict))
            actions = tuple(spec.actions) if spec is not None else ()
            if family == "loop" and loop_action == "raise":
                actions = (*actions, "raise")
            self._actions[verdict] = actions
        self._spec_of = spec_of
        self._policy = policy

    def actions_for(self, verdict: str) -> tuple[str, ...]:
        found = self._actions.get(verdict)
        if found is None:
            spec = self._policy.watchers.get(self._spec_of(verdict))
            found = self._actions[verdict] = tuple(spec.actions) if spec is not None else ()
        return found

    def handle(self, event: Event) -> None:
        if event.detector == "run_limit":   # the run asked for its limits: always enforced
            run_ = _run_of(event.scope)
            detail = event.detail or {}
            if run_ is not None and not isinstance(run_._pending, RunLimitExceeded):
                run_._pending = RunLimitExceeded(str(detail.get("limit")), float(detail.get("value") or 0.0),
                                                 float(detail.get("threshold") or 0.0))
            return
        actions = self.actions_for(event.detector or "")
        if "kill" not in actions and "raise" not in actions:
            return
        run: Any = _run_of(event.scope)
        if run is None:
            return
        if "kill" in actions:
            run.kill(event.detector or "detection")
        elif run._pending is None:
            run._pending = LoopDetected(event.detector or "loop", event.detail or {})


def _run_of(scope: Any) -> Any:
    if scope is None:
        return None
    run = getattr(scope, "run", scope)
    return run if hasattr(run, "_pending") else None
