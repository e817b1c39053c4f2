"""Per-run detector state, bounded: runs that never end (a crash, a truncated log) are evicted oldest first."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Generic, TypeVar

from ..events import RUN_END, Event

T = TypeVar("T")
MAX_OPEN_RUNS = 10_000


def run_key(event: Event) -> tuple[str | None, str | None]:
    """Runs are identified within their session (run ids are random, sessions make replays unambiguous)."""
    return (event.session_id, event.run_id or event.task_id)


class PerRun(Generic[T]):
    __slots__ = ("_make", "_limit", "_states", "_sid", "_rid", "_last")

    def __init__(self, make: Callable[[], T], limit: int = MAX_OPEN_RUNS):
        self._make = make
        self._limit = limit
        self._states: OrderedDict[tuple[str | None, str | None], T] = OrderedDict()
        # The run of the last lookup and its state: consecutive events of one run (the usual case) skip the key
        # tuple and the dict. Forgotten whenever a state is removed.
        self._sid: str | None = None
        self._rid: str | None = None
        self._last: T | None = None

    def get(self, event: Event) -> T:
        sid, rid = event.session_id, event.run_id or event.task_id   # run_key, inlined: once per detector per call
        last = self._last
        if last is not None and rid == self._rid and sid == self._sid:
            return last
        state = self._states.get((sid, rid))
        if state is None:
            state = self._states[(sid, rid)] = self._make()
            if len(self._states) > self._limit:
                self._states.popitem(last=False)
        self._sid, self._rid, self._last = sid, rid, state
        return state

    def tool_result(self, event: Event) -> T | None:
        """For detectors of ``tool_end`` and ``run_end``: the run's state for a tool result that ran; None for
        a rejected action (it never ran) and at the run's end (its state is forgotten then)."""
        if event.event_type == RUN_END:
            self._last = None
            self._states.pop((event.session_id, event.run_id or event.task_id), None)
            return None
        if event.status == "rejected":
            return None
        last = self._last   # get's shortcut, inlined: three detectors call this per tool result
        if last is not None and (event.run_id or event.task_id) == self._rid and event.session_id == self._sid:
            return last
        return self.get(event)

    def peek(self, event: Event) -> T | None:
        last = self._last
        if last is not None and (event.run_id or event.task_id) == self._rid and event.session_id == self._sid:
            return last
        return self._states.get(run_key(event))

    def pop(self, event: Event) -> T | None:
        self._last = None
        return self._states.pop(run_key(event), None)

    def __len__(self) -> int:
        return len(self._states)
