"""PATH → the sessions to watch.

* an ``events.ndjson`` (or any ``*.ndjson`` file), existing or not yet;
* a session directory (``meta.json`` and/or ``events.ndjson``; ours or agent-strace's);
* a directory of sessions (ours: ``.agentvigil/sessions``; agent-strace: ``.agent-traces``): the newest
  (agent-strace's ``.active-session`` first, then the newest whose recorded process is still running by
  ``process_liveness``, the test the runner ends a session by, then by ``meta.json`` ``started_at``, then
  mtime), or all of them and every new one with ``--all``. An empty or
  not yet existing directory waits for its first session.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from ..actions.kill import START_TIME_TOLERANCE
from ..files import read_regular
from ..procfs import read_stat
from ..sessions import (
    DEFAULT_DIR,
    EVENTS_FILE,
    META_FILE,
    meta_number,
    meta_str,
    read_meta,
)
from .actions import ProcessRef
from .strace import is_strace_meta

STRACE_ACTIVE = ".active-session"
MAX_ACTIVE_BYTES = 4096   # .active-session holds one session directory's name; larger (or not a file): ignored


@dataclass
class SessionSource:
    events_path: str
    session_id: str
    directory: str | None = None
    meta: dict | None = None
    _meta_tried_at: float = field(default=0.0, repr=False)

    def load_meta(self, now: float = 0.0) -> dict | None:
        """meta.json, read once it exists (retried at most every 0.5 s until then)."""
        if self.meta is not None or self.directory is None or now - self._meta_tried_at < 0.5 and now:
            return self.meta
        self._meta_tried_at = now
        if os.path.exists(os.path.join(self.directory, META_FILE)):
            self.meta = read_meta(self.directory) or {}
        return self.meta

    @property
    def is_strace(self) -> bool:
        return self.meta is not None and is_strace_meta(self.meta)

    @property
    def agent(self) -> str | None:
        return meta_str(self.meta, "agent", "agent_name")

    @property
    def started_at(self) -> float | None:
        return meta_number(self.meta, "started_at")

    def process(self, allow_other_users: bool = False) -> ProcessRef | None:
        if not self.meta or self.directory is None:
            return None
        return ProcessRef.from_meta(self.meta, os.path.join(self.directory, META_FILE), allow_other_users)


def _session(directory: str) -> SessionSource:
    directory = os.path.abspath(directory)
    return SessionSource(os.path.join(directory, EVENTS_FILE), os.path.basename(directory), directory)


def is_session_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, EVENTS_FILE)) or os.path.isfile(os.path.join(path, META_FILE))


def list_sessions(root: str) -> list[SessionSource]:
    """Session directories under ``root``, oldest first."""
    found = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return []
    for entry in entries:
        if entry.is_dir() and not entry.name.startswith(".") and is_session_dir(entry.path):
            source = _session(entry.path)
            source.load_meta()
            found.append(source)
    return sorted(found, key=_start_key)


def _start_key(source: SessionSource) -> tuple[float, str]:
    started = source.started_at
    if started is None:
        try:
            started = os.path.getmtime(source.directory) if source.directory else 0.0
        except OSError:
            started = 0.0
    return started, source.session_id


def process_liveness(proc: ProcessRef) -> bool | None:
    """Whether the session's process still runs: True, False (gone, a zombie, or its PID now belongs to a
    process started at another time), or None when that cannot be observed from here (recorded on another
    host). This is not the kill check (``ProcessRef.verify``): a process that exists but cannot be proven to
    be the agent (no host recorded, another user's without ``--allow-other-users``) is alive, only not
    killable, and its session is followed on. Without a recorded start time a reused PID cannot be told from
    the agent: it counts as alive."""
    pid = proc.pid
    if pid <= 0 or (proc.host and proc.host != socket.gethostname()):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass                      # it exists (another user's)
    except (OSError, OverflowError, ValueError):
        return None
    stat = read_stat(pid)
    if stat is None:
        return True               # no /proc, or it exited just now: the next check sees it
    if stat.exited:
        return False
    actual = stat.start_time
    if proc.start_time is not None and actual is not None and abs(actual - proc.start_time) > START_TIME_TOLERANCE:
        return False              # the recorded process is gone; another one has its PID
    return True


def is_live(source: SessionSource) -> bool:
    """The session's recorded process is seen running: ``process_liveness`` is True (a PID recorded on another
    host is unknown, not live)."""
    ref = source.process()
    return ref is not None and process_liveness(ref) is True


def choose_session(root: str) -> tuple[SessionSource | None, str]:
    """The session ``watch`` follows by default, and why (for the announce line)."""
    active = _active_session(root)
    if active is not None:
        return active, f"named by {STRACE_ACTIVE}"
    sessions = list_sessions(root)
    live = [s for s in sessions if is_live(s)]
    if live:
        return live[-1], f"the newest of {len(live)} live session(s)"
    if sessions:
        return sessions[-1], f"no live session: the newest of {len(sessions)} finished session(s)"
    return None, "no session yet"


def newest_session(root: str) -> SessionSource | None:
    return choose_session(root)[0]


def _active_session(root: str) -> SessionSource | None:
    active = os.path.join(root, STRACE_ACTIVE)
    try:   # a regular file of at most MAX_ACTIVE_BYTES (a FIFO or device is refused, never read)
        name = read_regular(active, MAX_ACTIVE_BYTES).decode("utf-8", "replace").strip()
        if name and is_session_dir(os.path.join(root, name)):
            source = _session(os.path.join(root, name))
            source.load_meta()
            return source
    except OSError:
        pass
    return None


@dataclass
class Target:
    """What PATH names: ``kind`` is "file", "session" or "root"."""

    kind: str
    path: str

    def initial(self, all_sessions: bool) -> list[SessionSource]:
        if self.kind == "file":
            directory = os.path.dirname(os.path.abspath(self.path))
            source = SessionSource(os.path.abspath(self.path), os.path.basename(directory) or "session",
                                   directory if os.path.basename(self.path) == EVENTS_FILE else None)
            source.load_meta()
            return [source]
        if self.kind == "session":
            source = _session(self.path)
            source.load_meta()
            return [source]
        if all_sessions:
            return list_sessions(self.path)
        newest = newest_session(self.path)
        return [newest] if newest else []


def resolve(path: str | None) -> Target:
    """Classify PATH (default: the recorder's default directory). Never raises for a missing path: a file
    or directory that does not exist yet is waited for."""
    path = path or DEFAULT_DIR
    if os.path.isfile(path):
        return Target("file", path)
    if os.path.isdir(path):
        return Target("session" if is_session_dir(path) else "root", path)
    if path.endswith(".ndjson"):
        return Target("file", path)
    return Target("root", path)
