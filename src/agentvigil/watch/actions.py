"""What ``watch`` does about a breach, besides printing it: append it to an NDJSON alerts log, POST it to a
webhook (on a background thread: a slow or dead receiver never delays detection), or kill the agent.

Kill: the PID comes from the session's ``meta.json`` (or ``--pid``) and is verified before every signal:
same host, and ``/proc/<pid>`` start time equal to the recorded ``process_start_time`` (so a PID reused by
another process is never hit). SIGTERM first; an agent with ``AGENTVIGIL_KILL_SIGNAL=TERM`` then stops its
runs at the next boundary, flushes and exits. If it is still there after ``grace`` seconds: re-verify, SIGKILL.
"""

from __future__ import annotations

import ipaddress
import json
import os
import queue
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO
from urllib.parse import urlsplit

from ..sinks.recorder import process_start_time

START_TIME_TOLERANCE = 1.0   # /proc/stat btime can drift by a second; a reused PID starts much later


# -- alerts log --------------------------------------------------------------------------------------------
class FileLog:
    """Append one JSON object per line; flushed per record (``tail -f`` friendly)."""

    def __init__(self, path: str):
        self.path = path
        self._fh: TextIO | None = None
        self._lock = threading.Lock()

    def write(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            if self._fh is None:
                directory = os.path.dirname(self.path)
                if directory:
                    os.makedirs(directory, exist_ok=True)
                self._fh = open(self.path, "a", encoding="utf-8")
            self._fh.write(line)
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


# -- webhook -----------------------------------------------------------------------------------------------
def slack_payload(record: dict) -> dict:
    """Slack incoming-webhook body (also accepted by Mattermost, Rocket.Chat, Discord's /slack endpoint)."""
    icon = ":rotating_light:" if record.get("severity") == "critical" else ":warning:"
    who = f"agent `{record.get('agent_id') or '-'}` session `{record.get('session_id') or '-'}`"
    return {"text": f"{icon} *{record.get('watcher')}* {record.get('message')} ({who})"}


def generic_payload(record: dict) -> dict:
    return {"source": "agentvigil", "text": record.get("message"), **record}


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebhookSender:
    """POST JSON from a background thread. ``send`` never blocks: a full queue drops (and counts) the
    alert. Each alert is tried ``1 + retries`` times with exponential backoff (``backoff``, ×2, capped at
    5 s); a 2xx answer is success."""

    def __init__(self, url: str, *, slack: bool = False, timeout: float = 5.0, retries: int = 3,
                 backoff: float = 0.2, max_queue: int = 1000):
        self.url = url
        self.slack = slack
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._queue: queue.Queue = queue.Queue(max_queue)
        # Loopback receivers bypass any *_proxy environment (a proxy cannot reach our 127.0.0.1).
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(url) else []
        self._open = urllib.request.build_opener(*handlers).open
        self._thread = threading.Thread(target=self._run, name="agentvigil-watch-webhook", daemon=True)
        self._thread.start()

    def send(self, record: dict) -> bool:
        body = slack_payload(record) if self.slack else generic_payload(record)
        try:
            self._queue.put_nowait(json.dumps(body, separators=(",", ":"), default=str).encode("utf-8"))
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def _run(self) -> None:
        while True:
            data = self._queue.get()
            if data is None:
                self._queue.task_done()
                return
            try:
                self._post(data)
            finally:
                self._queue.task_done()

    def _post(self, data: bytes) -> None:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=data, method="POST",
                                             headers={"Content-Type": "application/json",
                                                      "User-Agent": "agentvigil-watch"})
            try:
                with self._open(request, timeout=self.timeout) as response:
                    response.read(1024)
                    if 200 <= response.status < 300:
                        self.sent += 1
                        return
                    self.last_error = f"HTTP {response.status}"
            except Exception as exc:   # HTTPError (4xx/5xx), URLError, timeout: retry
                self.last_error = f"{type(exc).__name__}: {exc}"
            if attempt < self.retries:
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.failed += 1

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (bounded by ``timeout``), then stop the thread."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(max(0.0, deadline - time.monotonic()))


# -- kill --------------------------------------------------------------------------------------------------
def _proc_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            stat = fh.read()
        return stat[stat.rindex(")") + 2]
    except (OSError, ValueError, IndexError):
        return None


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
        actual = process_start_time(self.pid)
        if actual is None:
            return f"pid {self.pid} is not running"
        if abs(actual - self.start_time) > START_TIME_TOLERANCE:
            return (f"pid {self.pid} now belongs to another process (started {actual:.2f}, recorded "
                    f"{self.start_time:.2f}): refusing to signal a reused PID")
        if _proc_state(self.pid) in ("Z", "X"):
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
        with self._lock:
            threads = [t for t in self._started.values() if t is not None]
        for thread in threads:
            thread.join(timeout)
