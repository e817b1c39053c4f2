"""One reader of ``/proc/<pid>/stat`` for kill, watch, supervise and the recorder: the command name can hold any
byte, and a process named outside ASCII is verified (and so killable, and watched) like any other."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from agentvigil.actions.kill import Killer, ProcessRef
from agentvigil.procfs import parse_stat, process_start_time, read_stat
from agentvigil.watch.sources import process_liveness

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="Linux /proc")

# A UTF-8 name ("agent-é") cut by the kernel's 15-byte limit is fine; this one is not UTF-8 at all.
NAMES = [b"agent-\xc3\xa9", b"a(b) \xff\xfe) Z"]


def named_child(name: bytes) -> subprocess.Popen:
    """A sleeping child that renamed itself (as setproctitle or prctl(PR_SET_NAME) do) and says when."""
    code = textwrap.dedent(f"""
        import sys, time
        with open("/proc/self/comm", "wb") as fh:
            fh.write({name!r})
        print("ready", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    return child


def test_stat_fields_are_read_after_the_last_parenthesis():
    fields = ["S", "7", "8", "9"] + ["0"] * 15 + ["12345"] + ["0"] * 30
    stat = parse_stat("4242 (a) S 1 (evil) Z) " + " ".join(fields))
    assert (stat.pid, stat.state, stat.ppid, stat.sid, stat.start) == (4242, "S", 7, 9, 12345)
    assert not stat.exited and parse_stat("1 (x) Z " + " ".join(fields[1:])).exited


@pytest.mark.parametrize("name", NAMES)
def test_a_process_named_outside_ascii_has_a_start_time_and_is_killed_when_asked(name):
    before = time.time()
    child = named_child(name)
    try:
        with open(f"/proc/{child.pid}/comm", "rb") as fh:
            assert fh.read().rstrip(b"\n") == name[:15]          # the kernel kept the bytes as written
        stat = read_stat(child.pid)
        assert stat is not None and stat.ppid == os.getpid() and not stat.exited
        start = process_start_time(child.pid)
        assert start is not None and before - 2 <= start <= time.time() + 2
        ref = ProcessRef(child.pid, start, socket.gethostname(), os.getuid())
        assert ref.verify() is None and process_liveness(ref) is True
        reports: list[tuple[str, bool]] = []
        killer = Killer(grace=0.1, report=lambda text, ok: reports.append((text, ok)))
        assert killer.kill(ref, "test")
        assert child.wait(timeout=10) == -signal.SIGTERM
        killer.join(5)
        assert reports and reports[0][1], reports
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


def test_a_reused_pid_is_refused_whatever_the_name():
    child = named_child(NAMES[1])
    try:
        start = process_start_time(child.pid)
        assert start is not None
        stale = ProcessRef(child.pid, start - 3600, socket.gethostname(), os.getuid())
        assert "another process" in (stale.verify() or "")
        assert process_liveness(stale) is False
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def test_an_exited_process_is_not_running():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    start = None
    for _ in range(200):   # it exits quickly; catch its start time while it runs, if we can
        start = start or process_start_time(child.pid)
        if child.poll() is not None:
            break
        time.sleep(0.005)
    child.wait()
    assert read_stat(child.pid) is None                          # reaped: gone
    ref = ProcessRef(child.pid, start or time.time(), socket.gethostname(), os.getuid())
    assert ref.verify() is not None and not Killer(grace=0.1).kill(ref, "test")
