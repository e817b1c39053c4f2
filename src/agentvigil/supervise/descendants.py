"""The child's descendants that left its process group (``setsid``, ``setpgid``, daemons): found, stopped with
the child, reaped. Linux ``/proc`` only; elsewhere nothing is tracked and the process group is all there is.

A process is signalled only when it is proven to descend from the child we started:

* **parent chain**: ``/proc/<p>/task/*/children`` of a process already proven ours lists ``q``,
  ``/proc/<q>/stat`` names ``p`` as its parent, and ``p``'s start time is the same after that read (so ``p``
  was the same process throughout). ``q`` is then remembered as (pid, start time), which keeps it proven
  after its parent dies and it re-parents elsewhere.
* **re-parented orphan**: with ``PR_SET_CHILD_SUBREAPER`` on the supervise process, an orphan re-parents to
  its nearest subreaper ancestor. A process whose parent is us, that we did not spawn (``spawn`` registers
  every child), and that is not in our session (the child starts a new session, and a session can never be
  joined from outside) descends from one of our children. Only claimed when this process spawns nothing else
  (``agentvigil supervise`` with one replica).

Every signal re-reads the start time first, through a pidfd where the platform has one, so the check and
the signal hit the same process and a recycled pid is never hit. Orphans are reaped with ``waitpid`` on
their own pid (never ``-1``): the child's exit status stays with its ``Popen``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from ..procfs import Stat, read_stat

log = logging.getLogger("agentvigil.supervise")

COMPONENT = "supervise_descendants"   # agentvigil_internal_errors_total{component}
PR_SET_CHILD_SUBREAPER = 36
MAX_DESCENDANTS = 1024    # processes tracked per child; more are counted once and left untracked
MAX_SCAN_READS = 4 * MAX_DESCENDANTS   # /proc/<pid>/stat reads per scan of one tree (a process may have many)
MAX_TASKS = 4096          # threads of one process whose children are listed
MAX_PROC_SCAN = 65536     # /proc entries read per scan where the kernel has no children files
KILL_WAIT = 5.0           # after SIGKILL, how long to wait for descendants to go before giving up on them
SCAN_INTERVAL = 1.0       # while the child runs, how often its tree is re-read

_lock = threading.Lock()   # spawning, claiming and reaping orphans: a pid seen as an orphan cannot become a child
_spawned: set[int] = set()
_subreaper = False


def live(pid: int, start: int) -> bool:
    """The process that had this start time still runs (not gone, not a zombie, not a recycled pid)."""
    stat = read_stat(pid)
    return stat is not None and stat.start == start and not stat.exited


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux); False where that is unavailable."""
    global _subreaper
    if _subreaper:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)   # not find_library: that runs a subprocess
        prctl = libc.prctl
        prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        prctl.restype = ctypes.c_int
        if prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log.warning("agentvigil supervise: PR_SET_CHILD_SUBREAPER refused: %s", os.strerror(ctypes.get_errno()))
            return False
    except (OSError, AttributeError) as exc:
        log.warning("agentvigil supervise: no prctl: %s; orphans of the child are not adopted", exc)
        return False
    _subreaper = True
    return True


def spawn(start: Callable[[], subprocess.Popen]) -> subprocess.Popen:
    """Start a child and register its pid, atomically with respect to orphan claiming and reaping."""
    with _lock:
        proc = start()
        _spawned.add(proc.pid)
        return proc


def forget(pid: int) -> None:
    """The child was reaped by its Popen."""
    with _lock:
        _spawned.discard(pid)


def _children_files_work() -> bool:
    return os.path.exists(f"/proc/self/task/{threading.get_native_id()}/children")


_HAS_CHILDREN_FILES = sys.platform.startswith("linux") and _children_files_work()


def _listed_children(pid: int, table: dict[int, list[int]] | None, limit: int = MAX_SCAN_READS) -> list[int]:
    if table is not None:
        return table.get(pid, [])[:limit]
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")[:MAX_TASKS]
    except OSError:
        return found
    for tid in tasks:
        if len(found) >= limit:
            break
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as fh:
                found += [int(child) for child in fh.read().split()]
        except (OSError, ValueError):
            continue
    return found[:limit]


def _parent_table() -> dict[int, list[int]]:
    """ppid -> pids from one bounded pass over /proc, for kernels without the children files."""
    table: dict[int, list[int]] = {}
    with os.scandir("/proc") as entries:
        for count, entry in enumerate(entries):
            if count >= MAX_PROC_SCAN:
                break
            if entry.name.isdigit():
                stat = read_stat(int(entry.name))
                if stat is not None:
                    table.setdefault(stat.ppid, []).append(stat.pid)
    return table


def proven_children(pid: int, start: int, table: dict[int, list[int]] | None = None,
                    limit: int = MAX_SCAN_READS) -> list[Stat]:
    """The children of the process (pid, start), at most ``limit`` read, each checked against /proc: [] if
    that process is gone."""
    found = [s for s in map(read_stat, _listed_children(pid, table, limit))
             if s is not None and s.ppid == pid and s.start >= start]
    again = read_stat(pid)
    if again is None or again.start != start:
        return []   # replaced while we read: those may be another process's children
    return found


def _orphans() -> list[Stat]:
    """Processes re-parented to us (the subreaper), caller holding ``_lock``."""
    me, my_session = os.getpid(), os.getsid(0)
    return [s for s in map(read_stat, _listed_children(me, None if _HAS_CHILDREN_FILES else _parent_table()))
            if s is not None and s.ppid == me and s.pid not in _spawned and s.sid != my_session]


def reap_orphans() -> int:
    """``waitpid`` (non-blocking) each re-parented orphan that has exited; how many were reaped."""
    if not _subreaper:
        return 0
    reaped = 0
    with _lock:
        for orphan in _orphans():
            if orphan.state != "Z":
                continue
            try:
                if os.waitpid(orphan.pid, os.WNOHANG)[0] == orphan.pid:
                    reaped += 1
            except ChildProcessError:
                continue
    return reaped


def signal_process(pid: int, start: int, signum: int) -> bool:
    """Send ``signum`` to the process (pid, start) only if it still is that process; True when sent.
    PermissionError (it became another user's, e.g. through a setuid program) is raised."""
    if pid <= 1:
        return False
    pidfd = None
    pidfd_open = getattr(os, "pidfd_open", None)
    send = getattr(signal, "pidfd_send_signal", None)
    if pidfd_open is not None and send is not None:
        try:
            pidfd = pidfd_open(pid)
        except ProcessLookupError:
            return False
        except OSError:
            pidfd = None   # an old kernel: check, then kill (a narrow window, the same as everywhere else)
    try:
        if not live(pid, start):   # checked after the pidfd is open: the pidfd is then this very process
            return False
        if pidfd is not None and send is not None:
            send(pidfd, signum)
        else:
            os.kill(pid, signum)
        return True
    except ProcessLookupError:
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)


class Descendants:
    """The processes proven to descend from one child (``root``), as {pid: start ticks}.

    ``root=None``: no child, only orphans re-parented to us (the last sweep of ``--replicas``).
    ``adopt_orphans``: also claim every orphan re-parented to this process (see the module docstring).
    """

    def __init__(self, root: int | None, adopt_orphans: bool = False,
                 on_error: Callable[[str, BaseException | None], None] | None = None):
        self.root = root
        root_stat = read_stat(root) if root is not None else None
        self.root_start = root_stat.start if root_stat is not None else None
        self.enabled = (root_stat is not None) if root is not None else sys.platform.startswith("linux")
        self.adopt = adopt_orphans and self.enabled
        self.known: dict[int, int] = {}
        self._sent: set[tuple[int, int, int]] = set()   # (pid, start, signal) already sent
        self.refused: list[int] = []   # could not be signalled (another user's now): reported, not waited for
        self.overflow = False
        self._on_error = on_error

    def scan(self) -> None:
        """Re-read the tree: drop what ended, add what was born (parent chain, then orphans if adopted)."""
        if not self.enabled:
            return
        self.known = {pid: start for pid, start in self.known.items() if live(pid, start)}
        table = None if _HAS_CHILDREN_FILES else _parent_table()
        roots = list(self.known.items())
        if self.root is not None and self.root_start is not None:
            roots.append((self.root, self.root_start))
        if self.adopt and _subreaper:
            with _lock:
                for orphan in _orphans():
                    if orphan.state not in ("Z", "X") and self._add(orphan):
                        roots.append((orphan.pid, orphan.start))
        seen = set(self.known)
        budget = MAX_SCAN_READS
        while roots:
            if budget <= 0:
                self._overflowed(f"more than {MAX_SCAN_READS} processes read in one scan of pid {self.root}'s "
                                 "descendants: the rest are not tracked")
                break
            pid, start = roots.pop()
            children = proven_children(pid, start, table, budget)
            budget -= len(children) + 1
            for child in children:
                if child.pid not in seen and child.state not in ("Z", "X"):
                    seen.add(child.pid)
                    if self._add(child):
                        roots.append((child.pid, child.start))

    def _add(self, stat: Stat) -> bool:
        if stat.pid in self.known or stat.pid == self.root or stat.pid in self.refused:
            return False
        if len(self.known) >= MAX_DESCENDANTS:
            self._overflowed(f"more than {MAX_DESCENDANTS} descendants of pid {self.root}: the rest are not tracked")
            return False
        self.known[stat.pid] = stat.start
        return True

    def _overflowed(self, why: str) -> None:
        """Counted once per tree: a limit, not a failure that repeats every scan."""
        if not self.overflow:
            self.overflow = True
            if self._on_error is not None:
                self._on_error(COMPONENT, ValueError(why))

    def alive(self) -> list[int]:
        self.known = {pid: start for pid, start in self.known.items() if live(pid, start)}
        return sorted(self.known)

    def signal_all(self, signum: int) -> int:
        """Send ``signum`` to every tracked descendant still running that has not had it from us yet (a
        process finishing its SIGTERM handler is not interrupted by another); how many were signalled."""
        sent = 0
        for pid, start in list(self.known.items()):
            if (pid, start, signum) in self._sent:
                continue
            try:
                if not signal_process(pid, start, signum):
                    continue
            except PermissionError:
                log.warning("agentvigil supervise: descendant %d of pid %s can no longer be signalled (it "
                            "runs as another user now); not stopped", pid, self.root)
                del self.known[pid]
                self.refused.append(pid)
                continue
            except OSError as exc:   # one process must not keep the others from being signalled
                if self._on_error is not None:
                    self._on_error(COMPONENT, exc)
                continue
            self._sent.add((pid, start, signum))
            sent += 1
        return sent

    @property
    def stopped(self) -> int:
        """Descendants we signalled."""
        return len({(pid, start) for pid, start, _ in self._sent})

    @property
    def sigkilled(self) -> int:
        return sum(1 for *_, signum in self._sent if signum == signal.SIGKILL)


class Drain:
    """Stopping what is left of one child's descendants once the child is gone: SIGTERM (unless already
    sent), SIGKILL at ``kill_at`` (the child's own ``--stop-grace`` deadline), then wait at most ``KILL_WAIT``
    (a process in uninterruptible sleep may outlast SIGKILL; supervision does not wait for it forever)."""

    def __init__(self, tree: Descendants, now: float, kill_at: float, killed: bool = False):
        self.tree = tree
        self.kill_at = kill_at
        self.killed = False
        self.give_up_at = kill_at + KILL_WAIT
        self.left: list[int] = []
        if killed:
            self.kill_now(now)
        else:
            tree.signal_all(signal.SIGTERM)

    def kill_now(self, now: float) -> None:
        if not self.killed:
            self.killed = True
            self.give_up_at = now + KILL_WAIT
        self.tree.signal_all(signal.SIGKILL)

    def step(self, now: float) -> bool:
        """Advance; True once nothing is left (or it is no longer waited for)."""
        self.tree.scan()              # what survivors spawned meanwhile is stopped too
        reap_orphans()
        if not self.tree.alive():
            return True
        if self.killed or now >= self.kill_at:
            self.kill_now(now)
        else:
            self.tree.signal_all(signal.SIGTERM)
        if now >= self.give_up_at:
            self.left = self.tree.alive()
            return True
        return False

    @property
    def unstopped(self) -> list[int]:
        """Still running when we stopped waiting, or refused to us."""
        return sorted(set(self.left) | set(self.tree.refused))


def stop_orphans(grace: float, poll: float = 0.05) -> Drain | None:
    """The last sweep of a process whose supervisors are all done: every orphan still re-parented to it
    descends from one of its children. SIGTERM, SIGKILL after ``grace``; blocks at most grace + KILL_WAIT.
    None when there was nothing to stop."""
    if not _subreaper:
        return None
    tree = Descendants(None, adopt_orphans=True)
    tree.scan()
    if not tree.alive():
        reap_orphans()
        return None
    log.info("agentvigil supervise: stopping orphaned descendants %s", tree.alive())
    now = time.monotonic()
    drain = Drain(tree, now, now + grace)
    while not drain.step(time.monotonic()):
        time.sleep(poll)
    return drain
