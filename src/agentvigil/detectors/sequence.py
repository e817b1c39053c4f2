"""loop: a sequence of ``sequence_length``+ distinct tool calls repeats ``max_repeats`` times back to back
in one run: read → edit → test → read → edit → test → ..."""

from __future__ import annotations

from collections import deque

from .. import events as ev
from ..events import Event
from ..pipeline import detection
from ._fmt import command_of
from ._state import PerRun


class SequenceDetector:
    name = "loop"
    family = "loop"
    consumes = frozenset({ev.TOOL_END, ev.RUN_END})

    def __init__(self, sequence_length: int = 3, max_repeats: int = 3, longest: int | None = None):
        if sequence_length < 2 or max_repeats < 2:
            raise ValueError("sequence_length >= 2 and max_repeats >= 2")
        self.sequence_length = sequence_length
        self.max_repeats = max_repeats
        self.longest = max(longest or 2 * sequence_length, sequence_length)
        self._runs: PerRun[deque] = PerRun(lambda: deque(maxlen=self.longest * self.max_repeats), limit=1000)

    def feed(self, event: Event) -> list[Event] | None:
        if event.event_type == ev.RUN_END:
            self._runs.pop(event)
            return None
        if event.status == "rejected":
            return None
        history = self._runs.get(event)
        history.append((event.tool_name or "?", event.args_hash or command_of(event.detail)))
        items = list(history)
        n = self.max_repeats
        for length in range(self.sequence_length, self.longest + 1):
            if len(items) < length * n:
                break
            tail = items[-length:]
            if len(set(tail)) < 2:
                continue
            if all(items[-length * (k + 1):len(items) - length * k] == tail for k in range(1, n)):
                history.clear()
                names = [tool for tool, _ in tail]
                return [detection(event, self.name, {"sequence": names, "length": length, "repeats": n},
                                  f"LoopWatcher: detected loop ({'→'.join(names)}) × {n}")]
        return None

    def tick(self, now: float) -> None:
        return None
