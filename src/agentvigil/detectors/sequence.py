"""loop: a sequence of ``sequence_length``+ distinct tool calls repeats ``max_repeats`` times back to back
in one run: read → edit → test → read → edit → test → ..."""

from __future__ import annotations

from collections import deque

from .. import events as ev
from ..events import Event
from ..verdicts import detection
from ._fmt import command_of
from ._state import PerRun


class _History:
    """A run's last calls, and for each candidate length L how many of the latest calls equal the call L
    before them: the last L × repeats calls are one sequence repeated iff that count reaches L × (repeats-1).
    Updated in O(lengths) per call instead of re-scanning the history."""

    __slots__ = ("calls", "matches", "seen", "count", "size")

    def __init__(self, size: int, longest: int):
        self.size = size
        self.calls: deque[tuple[str, str | None]] = deque(maxlen=size)
        self.matches = [0] * (longest + 1)
        # call -> its position in the run (``count`` calls so far): a call is in ``calls`` iff its last position
        # is among the last ``size``, so the usual new call costs one lookup instead of a scan of the history.
        # None once a call could not be hashed (an unhashable tool name from user code): then scanned.
        self.seen: dict[tuple[str, str | None], int] | None = {}
        self.count = 0

    def clear(self) -> None:
        self.calls.clear()
        if self.seen is not None:
            self.seen.clear()
        self.count = 0
        matches = self.matches
        for i in range(len(matches)):
            matches[i] = 0


class SequenceDetector:
    name = "loop"
    family = "loop"
    consumes = frozenset({ev.TOOL_END, ev.RUN_END})
    batch_lane = name   # keeps only its own state (Pipeline.emit_batch)

    def __init__(self, sequence_length: int = 3, max_repeats: int = 3, longest: int | None = None):
        if sequence_length < 2 or max_repeats < 2:
            raise ValueError("sequence_length >= 2 and max_repeats >= 2")
        self.sequence_length = sequence_length
        self.max_repeats = max_repeats
        self.longest = max(longest or 2 * sequence_length, sequence_length)
        self._lengths = range(sequence_length, self.longest + 1)
        self._zeros = [0] * (self.longest + 1)
        self._runs: PerRun[_History] = PerRun(lambda: _History(self.longest * self.max_repeats, self.longest),
                                              limit=1000)

    def feed(self, event: Event) -> list[Event] | None:
        runs = self._runs
        if event.event_type == ev.RUN_END or event.status == "rejected":
            runs.tool_result(event)   # forgets the run at its end
            return None
        state = runs._last   # PerRun.tool_result's shortcut, inlined: every tool result comes here
        if state is None or (event.run_id or event.task_id) != runs._rid or event.session_id != runs._sid:
            state = runs.get(event)
        calls, matches = state.calls, state.matches
        call = (event.tool_name or "?", event.args_hash or (command_of(event.detail) if event.detail else None))
        seen = state.seen
        if seen is not None:
            count = state.count
            state.count = count + 1
            try:
                last = seen.get(call, -1)
                seen[call] = count
            except TypeError:   # unhashable: scan the history from now on
                state.seen = seen = None
                recent = call in calls
            else:
                size = state.size
                recent = last >= 0 and count - last <= size
                if len(seen) > 4 * size:   # bounded: forget the calls that left the history
                    oldest = count - size
                    state.seen = {c: i for c, i in seen.items() if i > oldest}
        else:
            recent = call in calls
        if not recent:   # the usual new call: it equals none of the calls L before it, every count restarts
            calls.append(call)
            matches[:] = self._zeros
            return None
        calls.append(call)
        size = len(calls)
        n = self.max_repeats
        fire = 0
        for length in self._lengths:
            if size > length and calls[-1 - length] == call:
                count = matches[length] = matches[length] + 1
                # The smallest length that repeats (with 2+ distinct calls) is the one reported.
                if not fire and count >= length * (n - 1) and size >= length * n \
                        and len(set(list(calls)[-length:])) >= 2:
                    fire = length
            else:
                matches[length] = 0
        if not fire:
            return None
        names = [tool for tool, _ in list(calls)[-fire:]]
        state.clear()
        return [detection(event, self.name, {"sequence": names, "length": fire, "repeats": n},
                          f"LoopWatcher: detected loop ({'→'.join(names)}) × {n}")]

    def tick(self, now: float) -> None:
        return None
