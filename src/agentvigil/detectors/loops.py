"""Loop guard: repeat_call, same_result, repeated_sequence over a run's tool calls (``signals.loops``)."""

from __future__ import annotations

from .. import events as ev
from ..events import Event
from ..signals.loops import LoopPolicy, LoopState
from ..verdicts import detection
from ._state import PerRun


class LoopDetector:
    name = "loops"
    family = "loop"
    consumes = frozenset({ev.TOOL_END, ev.RUN_END})
    batch_lane = name   # keeps only its own state (Pipeline.emit_batch)

    def __init__(self, policy: LoopPolicy | None = None):
        self.policy = policy or LoopPolicy()
        self._runs: PerRun[LoopState] = PerRun(lambda: LoopState(self.policy))

    def feed(self, event: Event) -> list[Event] | None:
        runs = self._runs
        if event.event_type == ev.RUN_END or event.status == "rejected":
            runs.tool_result(event)   # forgets the run at its end
            return None
        state = runs._last   # PerRun.tool_result's shortcut, inlined: every tool result comes here
        if state is None or (event.run_id or event.task_id) != runs._rid or event.session_id != runs._sid:
            state = runs.get(event)
        found = state.observe(event.tool_name or "?", event.args_hash, event.result_hash)
        return [detection(event, name, detail) for name, detail in found] if found else None

    def tick(self, now: float) -> None:
        return None
