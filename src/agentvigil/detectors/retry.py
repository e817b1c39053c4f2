"""retry: the same command (tool + arguments) fails ``max`` times in a run with no success in between."""

from __future__ import annotations

from .. import events as ev
from ..events import Event
from ..verdicts import detection
from ._fmt import command_of
from ._state import PerRun


class RetryDetector:
    name = "retry"
    family = "loop"      # a failing command retried is the loop symptom, seen from its errors
    consumes = frozenset({ev.TOOL_END, ev.RUN_END})
    batch_lane = name   # keeps only its own state (Pipeline.emit_batch)

    def __init__(self, max: int = 5):
        if max < 1:
            raise ValueError("max must be >= 1")
        self.max = max
        self._runs: PerRun[dict[tuple, int]] = PerRun(dict)
        self.retries = 0        # failures that repeated an earlier failure (status lines)

    def feed(self, event: Event) -> list[Event] | None:
        if event.event_type == ev.RUN_END:
            self._runs.pop(event)
            return None
        if event.status != "error":
            if not self._runs._states:   # no run has a failure on record: nothing to clear (the usual case)
                return None
            fails = self._runs.peek(event)   # a success clears the command's failures; most runs have none
            if fails:
                fails.pop((event.tool_name, event.args_hash or command_of(event.detail)), None)
            return None
        command = command_of(event.detail)
        key = (event.tool_name, event.args_hash or command)
        fails = self._runs.get(event)
        count = fails.get(key, 0) + 1
        fails[key] = count
        if len(fails) > 1000:
            fails.pop(next(iter(fails)))
        if count > 1:
            self.retries += 1
        if count != self.max:
            return None
        what = command or event.tool_name or "?"
        return [detection(event, self.name, {"tool": event.tool_name, "command": command, "failures": count,
                                             "threshold": self.max, "error_kind": event.error_kind},
                          f'RetryWatcher: "{what}" failed {count} times')]

    def tick(self, now: float) -> None:
        return None
