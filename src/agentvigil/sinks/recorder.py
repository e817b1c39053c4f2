"""The flight recorder: NDJSON sessions on disk, written by a background thread.

Layout: ``<dir>/<session_id>/meta.json`` and ``<dir>/<session_id>/events.ndjson``. The agent's thread only
appends to a bounded in-memory queue; when the queue is full the event is dropped and counted in
``agentvigil_events_dropped_total{sink="recorder"}``. Each batch is flushed as soon as it is written, so
``agentvigil watch`` sees events within milliseconds.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import re
import socket
import threading
import time
import uuid
import weakref
from collections import deque

from .._safety import internal_error
from .._version import __version__
from ..events import SCHEMA_VERSION

DEFAULT_DIR = ".agentvigil/sessions"
DEFAULT_QUEUE_SIZE = 10_000
_live: "weakref.WeakSet[Recorder]" = weakref.WeakSet()


def process_start_time(pid: int | None = None) -> float | None:
    """Start time of a process as Unix time (Linux /proc), used to verify a PID before signalling it."""
    pid = os.getpid() if pid is None else pid
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            stat = fh.read()
        ticks = int(stat[stat.rindex(")") + 2:].split()[19])
        with open("/proc/stat", encoding="ascii") as fh:
            btime = next(int(line.split()[1]) for line in fh if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration, IndexError):
        return None


def new_session_id(agent: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", agent)[:40].strip("-") or "agent"
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{slug}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Recorder:
    """One session directory, one writer thread."""

    def __init__(self, directory: str, agent: str, session_id: str | None = None,
                 max_queue: int = DEFAULT_QUEUE_SIZE):
        self.session_id = session_id or new_session_id(agent)
        self.path = os.path.join(directory, self.session_id)
        os.makedirs(self.path, exist_ok=True)
        self.events_path = os.path.join(self.path, "events.ndjson")
        meta = {
            "schema_version": SCHEMA_VERSION,
            "session_id": self.session_id,
            "agent": agent,
            "pid": os.getpid(),
            "process_start_time": process_start_time(),
            "host": socket.gethostname(),
            "started_at": time.time(),
            "agentvigil_version": __version__,
        }
        tmp = os.path.join(self.path, "meta.json.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=1)
        os.replace(tmp, os.path.join(self.path, "meta.json"))
        self._file = open(self.events_path, "a", encoding="utf-8")
        self._queue: deque = deque()
        self._max_queue = max_queue
        self._wake = threading.Event()
        self._closed = False
        self.dropped = 0     # this recorder's drops (the metric sums all recorders)
        self._seq = itertools.count(1)
        self._enqueued = 0   # sequence number of the last queued event (next() on a count is atomic)
        self._written = 0    # events the writer has written (or failed to write); writer thread only
        from ..metrics import default_metrics

        self._dropped = default_metrics().events_dropped.labels("recorder")
        self._thread = threading.Thread(target=self._run, name=f"agentvigil-recorder-{agent}", daemon=True)
        self._thread.start()
        _live.add(self)

    def write(self, event) -> None:
        """Queue an event; never blocks. Called on the agent's thread."""
        queue = self._queue
        if self._closed:
            return
        if len(queue) >= self._max_queue:
            self.dropped += 1
            self._dropped.inc()
            return
        was_empty = not queue
        self._enqueued = next(self._seq)
        queue.append(event)
        if was_empty:
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(1.0)
            self._wake.clear()
            self._drain()
            if self._closed and not self._queue:
                return

    def _drain(self) -> None:
        queue = self._queue
        lines = []
        count = 0
        while True:
            try:
                event = queue.popleft()
            except IndexError:
                break
            count += 1
            try:
                lines.append(event.to_json())
            except Exception as exc:
                internal_error("recorder", exc)
        if lines:
            try:
                self._file.write("\n".join(lines) + "\n")
                self._file.flush()
            except Exception as exc:  # disk full, file gone: count and go on
                self.dropped += len(lines)
                self._dropped.inc(len(lines))
                internal_error("recorder", exc)
        self._written += count

    def flush(self, timeout: float = 2.0) -> None:
        """Wait (bounded) until queued events are on disk."""
        deadline = time.monotonic() + timeout
        target = self._enqueued
        self._wake.set()
        while self._written < target and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.001)

    def close(self, timeout: float = 2.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)
        try:
            self._file.close()
        except Exception as exc:
            internal_error("recorder", exc)


@atexit.register
def _close_all() -> None:
    for recorder in list(_live):
        recorder.close(1.0)
