"""The flight recorder: NDJSON sessions on disk, written by a background thread.

Layout: ``<dir>/<session_id>/meta.json`` and ``<dir>/<session_id>/events.ndjson``. Session directories
(and the recording directory, when the recorder creates it) are ``0o700``, files ``0o600``, whatever the
umask: events name tools and tasks, and meta.json names a PID that ``watch`` may signal.

The agent's thread only appends to a bounded in-memory queue (``max_queue`` events). The writer thread
takes at most ``BATCH_EVENTS`` events or ``BATCH_BYTES`` of encoded lines at a time, encodes them
``CHUNK_EVENTS`` at a time in one call each and appends them with one ``write`` per batch, so the file grows
while a producer is still running and memory stays bounded however fast events arrive. Producer and writer
share the GIL: while the queue is more than half full, each ``write`` yields the GIL once (``time.sleep(0)``),
so a flood from a tight loop is paced to the writer's speed instead of being dropped; this never waits on
the disk (a writer blocked in a write holds no GIL). Nothing is lost silently: every event not written is counted in
``agentvigil_events_dropped_total{sink="recorder"}`` and, per recorder, in ``Recorder.dropped_by_reason``:

* ``queue_full``: the writer is behind by ``max_queue`` events;
* ``encode_error``: the event could not be serialised (it is skipped; the rest of its batch is written);
* ``write_error``: the disk refused the batch (full, gone, read-only);
* ``closed``: written after ``close()``.

Fork (``gunicorn --preload``, Celery prefork, ``multiprocessing`` with "fork"): the child has no writer
thread and must not share the parent's session, so every open recorder reopens itself in the child as a
new session (new session id with the child's PID, meta.json with the child's PID and start time, its own
file, queue, locks and writer thread). The directory is created on the child's first event, so a child
that only execs leaves nothing behind. ``Recorder.session_id`` is updated, and each callable in
``Recorder.on_reopen`` is called with the new session id, so whoever stamps session ids on events (the
Monitor) can follow. Events queued in the parent before the fork stay the parent's.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import socket
import threading
import time
import uuid
import weakref
from collections import Counter, deque
from collections.abc import Callable

from .._safety import internal_error
from .._version import __version__
from ..codec import encode_bytes as _encode
from ..codec import encode_lines as _encode_lines
from ..events import SCHEMA_VERSION, Event
from ..procfs import process_start_time

DEFAULT_DIR = ".agentvigil/sessions"
DEFAULT_QUEUE_SIZE = 65_536    # about 0.3 s of a tight single-threaded producer; a few tens of MB at most
BATCH_EVENTS = 8192            # per write: bounds the writer's memory and keeps the file growing; large
BATCH_BYTES = 2 << 20          # enough that encoding a batch outlasts the GIL switch interval (see write)
CHUNK_EVENTS = 1024            # encoded in one call; the byte bound is checked between chunks
IDLE_WAIT = 1.0                # writer re-checks the queue at least this often
_live: weakref.WeakSet[Recorder] = weakref.WeakSet()
_yield_gil = time.sleep


def _one_directory_name(name: object) -> bool:
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\0" not in name
            and (os.sep == "/" or os.sep not in name) and (os.altsep is None or os.altsep not in name))


def new_session_id(agent: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", agent)[:40].strip("-") or "agent"
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{slug}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _private_dirs(path: str) -> None:
    """Create ``path`` and any missing parents as 0o700 (mkdir's mode is filtered by the umask, hence the
    chmod); directories that already exist are left as they are."""
    missing = []
    head = os.path.abspath(path)
    while not os.path.isdir(head) and head != os.path.dirname(head):
        missing.append(head)
        head = os.path.dirname(head)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue
        os.chmod(directory, 0o700)


def _private_file(path: str, flags: int) -> int:
    """Open ``path`` for writing; a file we create is 0o600 whatever the umask."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return os.open(path, flags)
    os.fchmod(fd, 0o600)
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Recorder:
    """One session directory, one writer thread."""

    def __init__(self, directory: str, agent: str, session_id: str | None = None,
                 max_queue: int = DEFAULT_QUEUE_SIZE) -> None:
        self.directory = directory
        self.agent = agent
        self._max_queue = max_queue
        self._high_water = max_queue // 2
        self.on_reopen: list[Callable[[str], None]] = []  # called with the new session id after a fork
        self.parent_session_id: str | None = None          # set in a forked child
        from ..metrics import default_metrics

        self._dropped = default_metrics().events_dropped.labels("recorder")
        self._closed = False
        self._fd: int | None = None
        if session_id is not None and not _one_directory_name(session_id):
            # it names a directory under ``directory``: "../x" or "/etc/x" would write elsewhere
            raise ValueError("session_id must be one directory name (no '/', not '.' or '..'), "
                             f"got {session_id!r}"[:200])
        self._reset(session_id or new_session_id(agent))
        self._open()  # on the caller's thread, so a bad directory fails the constructor (the Monitor logs it)
        self._start_writer()
        _live.add(self)

    def _reset(self, session_id: str) -> None:
        """Fresh per-session state: also what a forked child needs, since the parent's locks may have been
        held by its writer at the moment of the fork."""
        self.session_id = session_id
        self.path = os.path.join(self.directory, session_id)
        self.events_path = os.path.join(self.path, "events.ndjson")
        self._queue: deque[Event] = deque()
        self._wake = threading.Event()
        self._idle = True                  # the writer is (about to be) waiting for _wake, or not started
        self._lock = threading.Lock()      # drop counts, writer start, batch take vs flush; never held across I/O
        self._thread: threading.Thread | None = None
        self._open_failed = False
        self._partial = False              # a failed write may have left half a line: start the next on a new one
        self._taken = 0                    # events the writer has taken off the queue (under _lock)
        self._written = 0                  # of those, events it is done with (written, skipped or dropped)
        self.peak_queue = 0                # longest queue the writer has seen (benchmarks)
        self.dropped = 0                   # this recorder's drops (the metric sums all recorders)
        self.dropped_by_reason: Counter[str] = Counter()

    def _open(self) -> None:
        _private_dirs(self.directory)
        try:
            os.mkdir(self.path, 0o700)
        except FileExistsError:
            pass  # an explicit session id reused: append to it
        else:
            os.chmod(self.path, 0o700)
        meta = {
            "schema_version": SCHEMA_VERSION,
            "session_id": self.session_id,
            "agent": self.agent,
            "pid": os.getpid(),
            "uid": os.getuid() if hasattr(os, "getuid") else None,
            "process_start_time": process_start_time(),
            "host": socket.gethostname(),
            "started_at": time.time(),
            "agentvigil_version": __version__,
        }
        if self.parent_session_id is not None:
            meta["parent_session_id"] = self.parent_session_id
        tmp = os.path.join(self.path, f"meta.json.{os.getpid()}.tmp")
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        fd = _private_file(tmp, os.O_WRONLY)
        try:
            _write_all(fd, json.dumps(meta, indent=1).encode("utf-8"))
        finally:
            os.close(fd)
        os.replace(tmp, os.path.join(self.path, "meta.json"))
        self._fd = _private_file(self.events_path, os.O_WRONLY | os.O_APPEND)

    def _start_writer(self) -> None:
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name=f"agentvigil-recorder-{self.agent}", daemon=True)
                thread.start()
                self._thread = thread

    def write(self, event: Event) -> None:
        """Queue an event; never waits on the disk, never raises. Called on the agent's thread.

        The usual case costs one length check and one append (deque.append is atomic): ``close`` sets the
        high-water mark below zero, so a closed recorder takes the slow path too."""
        queue = self._queue
        if len(queue) < self._high_water:
            queue.append(event)
            if self._idle:  # the writer sets it before its last look at the queue: no lost wake-up
                self._wake_writer()
            return
        self._write_behind(event)

    def _write_behind(self, event: Event) -> None:
        queue = self._queue
        if self._closed:
            self._drop("closed")
            return
        if len(queue) >= self._max_queue:
            self._drop("queue_full")
            return
        # Behind: let the writer have the GIL rather than outrun it into drops. A writer stuck in a write
        # holds no GIL, so this never waits on a dead disk; the full queue still drops.
        _yield_gil(0)
        queue.append(event)
        if self._idle:
            self._wake_writer()

    def _wake_writer(self) -> None:
        self._wake.set()
        if self._thread is None:  # first event in a forked child
            try:
                self._start_writer()
            except Exception as exc:  # e.g. interpreter shutdown: the queue fills and drops are counted
                internal_error("recorder", exc)

    def _drop(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self.dropped += count
            self.dropped_by_reason[reason] += count
        self._dropped.inc(count)

    def _run(self) -> None:
        if self._fd is None and not self._open_failed:  # a forked child opens its session here, off the agent
            try:
                self._open()
            except Exception as exc:
                self._open_failed = True
                internal_error("recorder", exc)
        queue = self._queue
        try:
            while True:
                self._idle = True  # before the look at the queue: a producer appending after it wakes us
                if not queue:
                    if self._closed:
                        return
                    self._wake.wait(IDLE_WAIT)
                self._idle = False
                self._wake.clear()
                while queue:
                    self._write_batch(queue)
        finally:
            fd, self._fd = self._fd, None
            if fd is not None:
                try:
                    os.close(fd)
                except OSError as exc:
                    internal_error("recorder", exc)

    def _write_batch(self, queue: deque[Event]) -> None:
        self.peak_queue = max(self.peak_queue, len(queue))
        lines: list[bytes] = []
        size = taken = 0
        popleft = queue.popleft
        while taken < BATCH_EVENTS and size < BATCH_BYTES:
            with self._lock:  # so that flush sees each event either queued or taken
                count = min(len(queue), CHUNK_EVENTS, BATCH_EVENTS - taken)  # only the writer pops
                if not count:
                    break
                chunk = [popleft() for _ in range(count)]
                self._taken += count
            taken += count
            try:
                encoded = _encode_lines(chunk)
            except Exception:  # one event needs the slow path or cannot be encoded: one by one
                encoded = self._encode_each(chunk)
            lines += encoded
            size += sum(map(len, encoded))
        if lines:
            self._append(lines)
        self._written += taken

    def _encode_each(self, events: list[Event]) -> list[bytes]:
        lines = []
        for event in events:
            try:
                lines.append(_encode(event))
            except Exception as exc:
                self._drop("encode_error")
                internal_error("recorder", exc)
        return lines

    def _append(self, lines: list[bytes]) -> None:
        prefix = b"\n" if self._partial else b""
        data = prefix + b"\n".join(lines) + b"\n"
        done = 0
        try:
            if self._fd is None:
                raise OSError(f"recorder session {self.path} could not be opened")
            view = memoryview(data)
            while done < len(data):
                done += os.write(self._fd, view[done:])
            self._partial = False
        except Exception as exc:  # disk full, file gone: count what did not reach the file and go on
            self._partial = done > 0 and data[done - 1:done] != b"\n"
            on_disk = max(0, data.count(b"\n", 0, done) - len(prefix))
            self._drop("write_error", len(lines) - on_disk)
            internal_error("recorder", exc)

    def flush(self, timeout: float = 2.0) -> None:
        """Wait (bounded) until queued events are on disk."""
        thread = self._thread
        if thread is None:
            return
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._taken + len(self._queue)
        self._wake.set()
        while self._written < target and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.001)

    def close(self, timeout: float = 2.0) -> None:
        """Stop accepting events and wait (bounded) for the queued ones; the writer closes the file itself
        when done, so a slow disk never has its descriptor closed (and reused) under it."""
        if self._closed:
            return
        self._closed = True
        self._high_water = -1  # every write takes the slow path, which drops as "closed"
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _reopen_in_child(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)  # the parent's file; its own descriptor is unaffected
            except OSError:
                pass
        if self._closed:
            self._reset(self.session_id)
            return
        self.parent_session_id = self.session_id
        self._reset(new_session_id(self.agent))
        for callback in list(self.on_reopen):
            try:
                callback(self.session_id)
            except Exception as exc:
                internal_error("recorder", exc)


_flush_at_thread_exit = False


def _after_fork_in_child() -> None:
    for recorder in list(_live):
        try:
            recorder._reopen_in_child()
        except Exception as exc:
            internal_error("recorder", exc)
    # multiprocessing children end with os._exit, skipping atexit; threading's exit hooks still run there
    global _flush_at_thread_exit
    register = getattr(threading, "_register_atexit", None)
    if register is not None and _live and not _flush_at_thread_exit:
        try:
            register(_flush_all)
            _flush_at_thread_exit = True  # inherited by grandchildren, like the registration itself
        except Exception as exc:
            internal_error("recorder", exc)


def _flush_all() -> None:
    for recorder in list(_live):
        recorder.flush(1.0)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _close_all() -> None:
    for recorder in list(_live):
        recorder.close(1.0)
