"""Follow the sessions one child process records (``<dir>/<session_id>/events.ndjson``).

A session belongs to the child when its ``meta.json`` names the child's pid and was started after the
child was spawned (so an old session of a reused pid is never taken). Only complete lines are read; a
line still being written is kept until its newline arrives. Lines that are not JSON objects are skipped.
"""

from __future__ import annotations

import json
import os

EVENTS_FILE = "events.ndjson"
META_FILE = "meta.json"
MAX_READ = 4 * 1024 * 1024   # per file per poll: a flood cannot stall the supervisor loop


class _Followed:
    __slots__ = ("path", "offset", "partial")

    def __init__(self, path: str):
        self.path = path
        self.offset = 0
        self.partial = b""


class SessionTail:
    def __init__(self, directory: str, pid: int, spawned_at: float):
        self.directory = directory
        self.pid = pid
        self.spawned_at = spawned_at
        self._followed: dict[str, _Followed] = {}
        self._rejected: set[str] = set()
        self.skipped = 0

    def poll(self) -> list[dict]:
        """New events of the child's sessions since the last poll, in file order per session."""
        self._discover()
        events: list[dict] = []
        for followed in self._followed.values():
            events.extend(self._read(followed))
        if len(self._followed) > 1:
            events.sort(key=lambda e: e.get("ts") if isinstance(e.get("ts"), (int, float)) else 0.0)
        return events

    def _discover(self) -> None:
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return
        for entry in entries:
            name = entry.name
            if name in self._followed or name in self._rejected or not entry.is_dir():
                continue
            meta = _read_meta(os.path.join(entry.path, META_FILE))
            if meta is None:
                continue          # not written yet (or not a session): look again next poll
            started = meta.get("started_at")
            if meta.get("pid") == self.pid and isinstance(started, (int, float)) and started >= self.spawned_at - 1:
                self._followed[name] = _Followed(os.path.join(entry.path, EVENTS_FILE))
            else:
                self._rejected.add(name)

    def _read(self, followed: _Followed) -> list[dict]:
        try:
            with open(followed.path, "rb") as fh:
                fh.seek(followed.offset)
                chunk = fh.read(MAX_READ)
        except OSError:
            return []
        if not chunk:
            return []
        followed.offset += len(chunk)
        data = followed.partial + chunk
        lines = data.split(b"\n")
        followed.partial = lines.pop()          # b"" when the chunk ended with a newline
        out = []
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                self.skipped += 1
                continue
            if isinstance(event, dict):
                out.append(event)
            else:
                self.skipped += 1
        return out


def _read_meta(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None
