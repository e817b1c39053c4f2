"""Loop guard: repeat_call, same_result, repeated_sequence over a run's tool calls (``signals.loops``)."""

from __future__ import annotations

from .. import events as ev
from ..events import Event
from ..pipeline import detection
from ..signals.loops import LoopPolicy, LoopState
from ._state import PerRun


class LoopDetector:
    name = "loops"
    family = "loop"
    consumes = frozenset({ev.TOOL_END, ev.RUN_END})

    def __init__(self, policy: LoopPolicy | None = None):
        self.policy = policy or LoopPolicy()
        self._runs: PerRun[LoopState] = PerRun(lambda: LoopState(self.policy))

    def feed(self, event: Event) -> list[Event] | None:
        state = self._runs.tool_result(event)
        if state is None:
            return None
        found = state.observe(event.tool_name or "?", event.args_hash, event.result_hash)
        return [detection(event, name, detail) for name, detail in found] if found else None

    def tick(self, now: float) -> None:
        return None
