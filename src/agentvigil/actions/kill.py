"""The ``kill`` action: signal the agent process a session belongs to, only when the user asked for it.

The PID comes from the session's ``meta.json`` (or ``--pid``) and is verified before every signal: never pid 0
or 1; the same host; the process's uid equal to the uid that owns meta.json, and to our own uid unless
``allow_other_users``; and ``/proc/<pid>`` start time equal to the recorded ``process_start_time`` (a PID reused
by another process is never hit). SIGTERM first; an agent with ``AGENTVIGIL_KILL_SIGNAL=TERM`` then stops its
runs at the next boundary, flushes and exits. If it is still there after ``grace`` seconds: re-verify, SIGKILL.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..procfs import process_start_time, read_stat

START_TIME_TOLERANCE = 1.0   # /proc/stat btime can drift by a second; a reused PID starts much later


# -- kill --------------------------------------------------------------------------------------------------
def _proc_uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except (OSError, ValueError, OverflowError):
        return None


@dataclass(frozen=True)
class ProcessRef:
    """The agent process a session belongs to."""

    pid: int
    start_time: float | None
    host: str | None = None
    owner: int | None = None          # uid that wrote meta.json (the file's owner)
    allow_other_users: bool = False

    @classmethod
    def from_meta(cls, meta: dict, meta_path: str | None = None, allow_other_users: bool = False
                  ) -> ProcessRef | None:
        from ..sessions import meta_number, meta_pid, meta_str

        pid = meta_pid(meta)
        if pid is None:
            return None
        owner = None
        if meta_path is not None:
            try:
                owner = os.stat(meta_path).st_uid
            except OSError:
                owner = None
        return cls(pid, meta_number(meta, "process_start_time"), meta_str(meta, "host"), owner, allow_other_users)

    @classmethod
    def current(cls, pid: int) -> ProcessRef:
        """``--pid``: pin the process as it is now (a later reuse of the PID is then refused)."""
        return cls(pid, process_start_time(pid), socket.gethostname(), _proc_uid(pid), True)

    def verify(self) -> str | None:
        """None when ``pid`` is provably the recorded agent process; otherwise why not. Refused: pid 0/1,
        another host, a process whose uid is not the uid that wrote meta.json (or, unless
        ``allow_other_users``, not our own uid), a reused pid (start time differs)."""
        if self.pid <= 1:
            return f"pid {self.pid} is never signalled"
        if self.host and self.host != socket.gethostname():
            return f"pid {self.pid} is on host {self.host!r}, not this one"
        if self.host is None and self.owner is not None:
            return f"no host recorded for pid {self.pid}: cannot verify it"
        uid = _proc_uid(self.pid)
        if uid is not None:
            if self.owner is not None and uid != self.owner:
                return f"pid {self.pid} belongs to uid {uid}, but its meta.json was written by uid {self.owner}"
            if not self.allow_other_users and uid != os.getuid():
                return f"pid {self.pid} belongs to uid {uid}, not to us (pass --allow-other-users)"
        if self.start_time is None:
            return f"no process_start_time recorded for pid {self.pid}: cannot verify it"
        stat = read_stat(self.pid)   # one read: the start time and the state are of the same process
        actual = None if stat is None else stat.start_time
        if stat is None or actual is None:
            return f"pid {self.pid} is not running"
        if abs(actual - self.start_time) > START_TIME_TOLERANCE:
            return (f"pid {self.pid} now belongs to another process (started {actual:.2f}, recorded "
                    f"{self.start_time:.2f}): refusing to signal a reused PID")
        if stat.exited:
            return f"pid {self.pid} has exited"
        return None

    def alive(self) -> bool:
        return self.verify() is None


class Killer:
    """SIGTERM → ``grace`` seconds → SIGKILL, each signal preceded by ``verify()``. ``kill`` returns at once
    (the SIGTERM is sent on the caller's thread; the grace wait runs on a daemon thread). ``report(text,
    ok)`` is called with each outcome."""

    def __init__(self, grace: float = 5.0, report: Callable[[str, bool], None] | None = None,
                 poll: float = 0.005):
        self.grace = grace
        self.poll = poll
        self.report = report or (lambda text, ok: None)
        self._started: dict[int, threading.Thread | None] = {}
        self._lock = threading.Lock()
        self.outcomes: list[tuple[int, str]] = []   # (pid, "term" | "kill" | "gone" | "refused" | "error")

    def kill(self, proc: ProcessRef | None, reason: str) -> bool:
        """True if SIGTERM was sent (now or by an earlier call for the same process)."""
        if proc is None:
            self._outcome(0, "refused", f"kill refused: no agent PID known for this session ({reason}); "
                                        "agent-strace sessions record none: pass --pid", False)
            return False
        with self._lock:
            if proc.pid in self._started:
                return True
        problem = proc.verify()
        if problem is not None:
            self._outcome(proc.pid, "refused", f"kill refused: {problem}", False)
            return False
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except OSError as exc:
            self._outcome(proc.pid, "error", f"SIGTERM to pid {proc.pid} failed: {exc}", False)
            return False
        with self._lock:
            self._started[proc.pid] = None
        self._outcome(proc.pid, "term", f"sent SIGTERM to pid {proc.pid} ({reason}); SIGKILL in {self.grace:g}s "
                                        "if it is still running", True)
        thread = threading.Thread(target=self._finish, args=(proc,), name="agentvigil-watch-kill", daemon=True)
        with self._lock:
            self._started[proc.pid] = thread
        thread.start()
        return True

    def _finish(self, proc: ProcessRef) -> None:
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline:
            if not proc.alive():
                self._outcome(proc.pid, "gone", f"pid {proc.pid} exited after SIGTERM", True)
                return
            time.sleep(self.poll)
        problem = proc.verify()
        if problem is not None:   # exited (or was replaced) at the last moment
            self._outcome(proc.pid, "gone", f"pid {proc.pid} exited after SIGTERM", True)
            return
        try:
            os.kill(proc.pid, signal.SIGKILL)
            self._outcome(proc.pid, "kill", f"pid {proc.pid} ignored SIGTERM for {self.grace:g}s: sent SIGKILL",
                          True)
        except OSError as exc:
            self._outcome(proc.pid, "error", f"SIGKILL to pid {proc.pid} failed: {exc}", False)

    def _outcome(self, pid: int, what: str, text: str, ok: bool) -> None:
        with self._lock:
            self.outcomes.append((pid, what))
        try:
            self.report(text, ok)
        except Exception:  # reporting must not stop a kill
            pass

    @property
    def killed_any(self) -> bool:
        return any(what in ("term", "kill") for _, what in self.outcomes)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the grace threads, at most ``timeout`` seconds each (clamped to what a thread wait takes:
        a huge or non-finite grace must not raise here, after the kill was sent)."""
        if timeout is not None:
            timeout = min(timeout, threading.TIMEOUT_MAX) if timeout >= 0 else 0.0   # negative or NaN: no wait
        with self._lock:
            threads = [t for t in self._started.values() if t is not None]
        for thread in threads:
            thread.join(timeout)
