"""Follow the sessions one child process records (``<dir>/<session_id>/events.ndjson``).

A session belongs to the child when its ``meta.json`` names the child's pid and was started after the
child was spawned (so an old session of a reused pid is never taken). Files are followed with the shared
``agentvigil.tail.Tailer`` (partial lines, truncation, rotation) and decoded with ``agentvigil.codec``, as
in ``watch`` and ``replay``; lines that are not valid events are skipped and counted by reason
(``skipped_by_reason``, with the tailer's ``line_too_long``).

What the child does to its files never stops supervision: each file is read ``MAX_READ`` bytes per poll at
most (a huge backlog or a line without its newline cannot hold up the loop), and an ``events.ndjson`` or
``meta.json`` that is, or becomes, a FIFO, device or directory (or cannot be read) is refused: counted in
``errors_by_reason``, logged once, and that session is no longer followed.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import Counter

from ..codec import decode
from ..events import Event, InvalidEvent
from ..files import NOT_REGULAR_FILE
from ..sessions import EVENTS_FILE, META_FILE, meta_number, meta_pid, read_meta
from ..tail import Tailer

log = logging.getLogger("agentvigil.supervise")

MAX_READ = 16 << 20      # bytes read per followed file per poll
FINAL_READ = 64 << 20    # bytes still read, per file, after the child is gone; what is left is counted


class SessionTail:
    def __init__(self, directory: str, pid: int, spawned_at: float):
        self.directory = directory
        self.pid = pid
        self.spawned_at = spawned_at
        self._followed: dict[str, Tailer] = {}
        self._rejected: set[str] = set()
        self.skipped_by_reason: Counter = Counter()
        self.errors_by_reason: Counter = Counter()   # files refused or unreadable (the session not followed)

    @property
    def skipped(self) -> int:
        return sum(self.skipped_by_reason.values())

    @property
    def errors(self) -> int:
        return sum(self.errors_by_reason.values())

    def poll(self, final: bool = False) -> list[Event]:
        """New events of the child's sessions since the last poll, in file order per session. ``final``: the
        child is gone; a last line without its newline is judged too (counted as ``truncated`` if broken)."""
        self._discover()
        events: list[Event] = []
        for name, tailer in list(self._followed.items()):
            events.extend(self._read(name, tailer, final))
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
            meta_path = os.path.join(entry.path, META_FILE)
            try:
                mode = os.stat(meta_path).st_mode
            except OSError:
                continue          # not written yet (or not a session): look again next poll
            if not stat.S_ISREG(mode):
                self._rejected.add(name)
                self._refuse(name, f"{meta_path}: not a regular file, not read", NOT_REGULAR_FILE)
                continue
            meta = read_meta(entry.path)
            if meta is None:
                continue          # not written yet (or not a session): look again next poll
            started = meta_number(meta, "started_at")
            if meta_pid(meta) == self.pid and started is not None and started >= self.spawned_at - 1:
                self._followed[name] = Tailer(os.path.join(entry.path, EVENTS_FILE), max_read=MAX_READ)
            else:
                self._rejected.add(name)

    def _read(self, name: str, tailer: Tailer, final: bool) -> list[Event]:
        """New events of one followed file; ``final``: read on (up to FINAL_READ) and judge the last line."""
        out: list[Event] = []
        budget = FINAL_READ if final else 0
        while True:
            try:
                lines = tailer.read()
            except OSError as exc:   # refused (a FIFO, device or directory now), or unreadable: stop following
                del self._followed[name]
                self._rejected.add(name)
                out.extend(self._decode(tailer.rest(), tailer))
                tailer.close()
                self._refuse(name, f"{tailer.path}: {exc}", getattr(exc, "reason", "read_error"))
                return out
            out.extend(self._decode(lines, tailer))
            if not (tailer.more and budget > 0):
                break
            budget -= MAX_READ
        if final:
            if tailer.more:
                self.skipped_by_reason["unread_at_exit"] += 1
                log.warning("agentvigil supervise: %s: more than %d MiB left unread after the child exited",
                            tailer.path, FINAL_READ >> 20)
            out.extend(self._decode(tailer.rest(), tailer))
        return out

    def _refuse(self, name: str, message: str, reason: str) -> None:
        self.errors_by_reason[reason] += 1
        log.warning("agentvigil supervise: not following session %s: %s", name, message)

    def _decode(self, lines: list[bytes], tailer: Tailer | None = None) -> list[Event]:
        if tailer is not None and tailer.skipped:   # dropped by the tailer (line_too_long): counted here too
            self.skipped_by_reason.update(tailer.skipped)
            tailer.skipped.clear()
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
