"""watch and the processes of its sessions: whose PID a breach signals (--pid vs a recorded PID), what
"the process exited" means (alive, not "killable"), and --all releasing ended sessions. Real `sleep`
decoys, started and stopped here by PID."""

import io
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time

import pytest

from agentvigil.actions import ProcessRef
from agentvigil.sinks.recorder import process_start_time
from agentvigil.watch.runner import EXIT_BREACH, Watch, process_liveness
from agentvigil.watch.sources import resolve

from .conftest import append, line, wait_for, write_meta
from .test_runner import config_for, records, run_in_thread


def decoy(*prefix):
    proc = subprocess.Popen([*prefix, "sleep", "300"])
    assert wait_for(lambda: process_start_time(proc.pid) is not None)
    if prefix:   # setpriv execs sleep in place: wait until it has dropped to the other uid
        assert wait_for(lambda: os.stat(f"/proc/{proc.pid}").st_uid != os.getuid())
    return proc


def stop(*procs):
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def meta(directory, **fields):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "meta.json"), "w") as fh:
        json.dump({"schema_version": 1, "session_id": os.path.basename(directory), "agent": "bot",
                   "started_at": time.time(), **fields}, fh)


def seen(out, kind):
    """The records of ``kind`` written so far (whole lines only: the watch thread is still writing)."""
    text = out.getvalue()
    return [r for r in (json.loads(x) for x in text[:text.rfind("\n") + 1].splitlines()) if r["type"] == kind]


def failures(n=4):
    return "".join(line("tool_end", run_id="r1", tool_name="bash", args_hash="h", status="error", step_index=i)
                   for i in range(n))


# -- 1. --pid is for sessions that record no PID -----------------------------------------------------------
def test_all_with_pid_kills_the_breaching_sessions_own_agent_not_the_pid_override(tmp_path):
    named, own = decoy(), decoy()
    try:
        root = tmp_path / "sessions"
        meta(root / "a")                                    # records no pid (agent-strace style): --pid
        write_meta(root / "b", pid=own.pid)                 # records its own agent
        append(root / "a" / "events.ndjson", "")
        append(root / "b" / "events.ndjson", "")
        out = io.StringIO()
        watch = Watch(resolve(str(root)), config_for("--max-retries", "3", "--on-violation", "kill",
                                                     "--kill-grace", "1s"),
                      all_sessions=True, json_out=True, out=out, timeout=30, status_every=0, pid=named.pid)
        thread, _ = run_in_thread(watch)
        try:
            assert wait_for(lambda: len(seen(out, "start")) == 2)
            append(root / "b" / "events.ndjson", failures())
            assert wait_for(lambda: own.poll() is not None, timeout=10)   # b's own agent got the SIGTERM
        finally:
            watch.follow = False     # the loop stops after its current round
        thread.join(35)
        assert named.poll() is None                         # the --pid process was never signalled
        starts = {r["session_id"]: r["pid"] for r in records(out) if r["type"] == "start"}
        assert starts == {"a": named.pid, "b": own.pid}
        terms = [r for r in records(out) if r["type"] == "action" and "sent SIGTERM" in r["message"]]
        assert terms and all(f"pid {own.pid} " in r["message"] for r in terms)
    finally:
        stop(named, own)


def test_pid_applies_only_when_the_session_records_none(tmp_path):
    named, own = decoy(), decoy()
    try:
        config = config_for()
        no_pid, with_pid, not_yet = tmp_path / "none", tmp_path / "own", tmp_path / "later"
        meta(no_pid)
        write_meta(with_pid, pid=own.pid)
        not_yet.mkdir()
        for target in (no_pid, with_pid):
            append(target / "events.ndjson", "")
        append(not_yet / "events.ndjson", "")
        procs = {}
        for target in (no_pid, with_pid, not_yet):                # single-session watches, as documented
            watch = Watch(resolve(str(target)), config, out=io.StringIO(), pid=named.pid, status_every=0)
            try:
                watch._discover(time.time(), force=True)
                (watched,) = watch.sessions.values()
                procs[target.name] = watched.proc.pid
                if target is not_yet:                              # meta.json arrives, recording its own pid
                    write_meta(not_yet, pid=own.pid)
                    watched.source._meta_tried_at = 0.0
                    watch._pump(watched, time.time() + 1)
                    procs["later+meta"] = watched.proc.pid
            finally:
                watch.close()
        assert procs == {"none": named.pid, "own": own.pid, "later": named.pid, "later+meta": own.pid}
    finally:
        stop(named, own)


# -- 2. liveness is "the process exists", not "it may be killed" -------------------------------------------
def test_liveness_is_not_the_kill_check():
    proc = decoy()
    try:
        start = process_start_time(proc.pid)
        no_host = ProcessRef(proc.pid, start, None, os.getuid())
        assert no_host.verify() is not None                 # cannot be proven: never killed ...
        assert process_liveness(no_host) is True            # ... but it has not exited
        assert process_liveness(ProcessRef(proc.pid, start, socket.gethostname())) is True
        assert process_liveness(ProcessRef(proc.pid, None, None)) is True
        assert process_liveness(ProcessRef(proc.pid, start - 1000, socket.gethostname())) is False   # reused
        assert process_liveness(ProcessRef(proc.pid, start, "elsewhere.example")) is None            # unknown
    finally:
        stop(proc)
    assert process_liveness(ProcessRef(proc.pid, start, socket.gethostname())) is False


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_liveness_of_another_users_agent():
    proc = decoy("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    try:
        ref = ProcessRef(proc.pid, process_start_time(proc.pid), socket.gethostname(), 65534)
        assert "not to us" in (ref.verify() or "")
        assert process_liveness(ref) is True
    finally:
        stop(proc)


def test_unverifiable_live_agent_is_still_watched(tmp_path):
    """meta.json without `host`: the PID cannot be verified for a kill, but the process runs: its session
    does not "end (process exited)", and a later breach is reported."""
    proc = decoy()
    try:
        session = tmp_path / "s"
        meta(session, pid=proc.pid, process_start_time=process_start_time(proc.pid))   # no host
        append(session / "events.ndjson", "")
        out = io.StringIO()
        watch = Watch(resolve(str(session)), config_for("--max-retries", "3"), json_out=True, out=out,
                      timeout=30, status_every=0)
        thread, result = run_in_thread(watch)
        try:
            assert wait_for(lambda: seen(out, "start"))
            for _ in range(5):                                  # several liveness checks pass
                checked = next(iter(watch.sessions.values())).checked_at
                assert wait_for(lambda c=checked: next(iter(watch.sessions.values())).checked_at != c)
            append(session / "events.ndjson", failures())
            assert wait_for(lambda: seen(out, "breach"))
        finally:
            watch.follow = False
        thread.join(35)
        recs = records(out)
        assert result["rc"] == EXIT_BREACH
        assert any(r["type"] == "breach" and r["watcher"] == "retry" for r in recs)
        assert [r["reason"] for r in recs if r["type"] == "end"] == ["stopped watching"]
    finally:
        stop(proc)


# -- 3. --all releases ended sessions ------------------------------------------------------------------------
def _open_under(directory):
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(directory)):
                found += 1
        except OSError:
            pass
    return found


def test_all_releases_ended_sessions_and_does_not_rediscover_them(tmp_path):
    dead = decoy()
    dead_start = process_start_time(dead.pid)
    stop(dead)
    live = decoy()
    try:
        root = tmp_path / "sessions"
        for i in range(40):
            write_meta(root / f"old{i:02d}", pid=dead.pid, start=dead_start)
            append(root / f"old{i:02d}" / "events.ndjson", line("heartbeat", status="idle"))
        out = io.StringIO()
        watch = Watch(resolve(str(root)), config_for("--max-retries", "3"), all_sessions=True, json_out=True,
                      out=out, timeout=30, status_every=0)
        thread, result = run_in_thread(watch)
        try:
            assert wait_for(lambda: len(seen(out, "end")) == 40, timeout=20)
            assert wait_for(lambda: not watch.sessions)            # every ended session is released ...
            assert _open_under(root) == 0                          # ... with its file descriptor
            write_meta(root / "zz_live", pid=live.pid)
            append(root / "zz_live" / "events.ndjson", failures())
            assert wait_for(lambda: seen(out, "breach"))
            shutil.rmtree(root / "old00")                          # a removed directory is forgotten
            gone = str(root / "old00" / "events.ndjson")
            assert wait_for(lambda: gone not in watch._released)
            assert len(watch._released) == 39
        finally:
            watch.follow = False
        thread.join(35)
        recs = records(out)
        assert result["rc"] == EXIT_BREACH
        starts = [r["session_id"] for r in recs if r["type"] == "start"]
        assert sorted(starts) == sorted({*(f"old{i:02d}" for i in range(40)), "zz_live"})   # each once
        assert [r["session_id"] for r in recs if r["type"] == "breach"][0] == "zz_live"
    finally:
        stop(live)


SUBPROCESS_LIMIT = 64


def test_all_at_a_low_fd_limit_still_reports_a_new_sessions_breach(tmp_path):
    """More ended sessions than file descriptors: a new live session's breach is still reported."""
    dead = decoy()
    dead_start = process_start_time(dead.pid)
    stop(dead)
    live = decoy()
    try:
        root = tmp_path / "sessions"
        for i in range(SUBPROCESS_LIMIT + 20):
            write_meta(root / f"old{i:03d}", pid=dead.pid, start=dead_start, started_at=1000.0 + i)
            append(root / f"old{i:03d}" / "events.ndjson", line("heartbeat", status="idle"))
        write_meta(root / "zz_live", pid=live.pid)            # the newest: opened after all the old ones
        append(root / "zz_live" / "events.ndjson", failures())

        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (SUBPROCESS_LIMIT, SUBPROCESS_LIMIT))

        done = subprocess.run([sys.executable, "-m", "agentvigil", "watch", str(root), "--all", "--json",
                               "--max-retries", "3", "--timeout", "3s", "--status-every", "0"],
                              capture_output=True, preexec_fn=limit, timeout=60)
        recs = [json.loads(x) for x in done.stdout.splitlines()]
        assert done.returncode == EXIT_BREACH, done.stderr.decode()[-2000:]
        assert any(r["type"] == "breach" and r["session_id"] == "zz_live" for r in recs)
    finally:
        stop(live)
