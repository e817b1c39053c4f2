"""Follow the sessions one child process records (``<dir>/<session_id>/events.ndjson``).

A session belongs to the child when its ``meta.json`` names the child's pid and was started after the
child was spawned (so an old session of a reused pid is never taken). Files are followed with the shared
``agentvigil.tail.Tailer`` (partial lines, truncation, rotation) and decoded with ``agentvigil.codec``, as
in ``watch`` and ``replay``; lines that are not valid events are skipped and counted by reason.
"""

from __future__ import annotations

import os
from collections import Counter

from ..codec import decode
from ..events import Event, InvalidEvent
from ..sessions import EVENTS_FILE, META_FILE, meta_number, meta_pid, read_meta
from ..tail import Tailer


class SessionTail:
    def __init__(self, directory: str, pid: int, spawned_at: float):
        self.directory = directory
        self.pid = pid
        self.spawned_at = spawned_at
        self._followed: dict[str, Tailer] = {}
        self._rejected: set[str] = set()
        self.skipped_by_reason: Counter = Counter()

    @property
    def skipped(self) -> int:
        return sum(self.skipped_by_reason.values())

    def poll(self, final: bool = False) -> list[Event]:
        """New events of the child's sessions since the last poll, in file order per session. ``final``: the
        child is gone; a last line without its newline is judged too (counted as ``truncated`` if broken)."""
        self._discover()
        events: list[Event] = []
        for tailer in self._followed.values():
            events.extend(self._read(tailer))
            if final:
                events.extend(self._decode(tailer.rest()))
        if len(self._followed) > 1:
            events.sort(key=lambda e: e.ts)
        return events

    def close(self) -> None:
        for tailer in self._followed.values():
            tailer.close()

    def _discover(self) -> None:
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return
        for entry in entries:
            name = entry.name
            if name in self._followed or name in self._rejected or not entry.is_dir():
                continue
            meta = read_meta(entry.path) if os.path.exists(os.path.join(entry.path, META_FILE)) else None
            if meta is None:
                continue          # not written yet (or not a session): look again next poll
            started = meta_number(meta, "started_at")
            if meta_pid(meta) == self.pid and started is not None and started >= self.spawned_at - 1:
                self._followed[name] = Tailer(os.path.join(entry.path, EVENTS_FILE))
            else:
                self._rejected.add(name)

    def _read(self, tailer: Tailer) -> list[Event]:
        return self._decode(tailer.read())

    def _decode(self, lines: list[bytes]) -> list[Event]:
        out = []
        for line in lines:
            if line.startswith(b"\xef\xbb\xbf"):   # as replay: a BOM is not data
                line = line[3:]
            if not line.strip():
                continue
            try:
                out.append(decode(line))
            except InvalidEvent as exc:
                self.skipped_by_reason[exc.reason] += 1
        return out
