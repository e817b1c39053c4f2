"""``/proc/<pid>/stat`` (Linux): the one reader of a process's state, parent, session and start time, for
everything that must tell whether a PID is still the process it was (kill, watch, supervise, the recorder).

The command name (field 2) may hold spaces, parentheses and any byte (``prctl(PR_SET_NAME)``,
``setproctitle``), so the fields are taken after the last ``)`` and the file is decoded with
``surrogateescape``: a process named in UTF-8, or in no encoding at all, is read like any other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_boot_time: float | None = None


@dataclass(frozen=True)
class Stat:
    pid: int
    state: str
    ppid: int
    sid: int
    start: int     # clock ticks after boot: with the pid, the identity of one process

    @property
    def exited(self) -> bool:
        """A zombie or dead task: it no longer runs, whatever its pid still shows."""
        return self.state in ("Z", "X", "x")

    @property
    def start_time(self) -> float | None:
        """``start`` as Unix time, or None where the boot time cannot be read."""
        boot = boot_time()
        return None if boot is None else boot + self.start / os.sysconf("SC_CLK_TCK")


def parse_stat(text: str) -> Stat:
    """One ``/proc/<pid>/stat`` line. Raises ValueError or IndexError on anything else."""
    head, _, tail = text.rpartition(")")
    fields = tail.split()
    return Stat(int(head.split("(", 1)[0]), fields[0], int(fields[1]), int(fields[3]), int(fields[19]))


def read_stat(pid: int) -> Stat | None:
    """The process's stat, or None: gone, not readable, or no ``/proc`` here."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="surrogateescape") as fh:
            return parse_stat(fh.read())
    except (OSError, ValueError, IndexError, OverflowError):
        return None


def boot_time() -> float | None:
    """``btime`` of ``/proc/stat``: fixed for the life of the machine, so read once."""
    global _boot_time
    if _boot_time is None:
        try:
            with open("/proc/stat", encoding="ascii", errors="surrogateescape") as fh:
                _boot_time = float(next(line.split()[1] for line in fh if line.startswith("btime ")))
        except (OSError, ValueError, IndexError, StopIteration):
            return None
    return _boot_time


def process_start_time(pid: int | None = None) -> float | None:
    """Start time of a process (this one by default) as Unix time, used to verify a PID before signalling it."""
    stat = read_stat(os.getpid() if pid is None else pid)
    return None if stat is None else stat.start_time
