"""Kill the right target, only when asked (issue: safe by default).

A forged meta.json never aims a signal at pid 1, at another user's process, at a reused PID or at another
host's process; a plain ``watch`` (no kill asked) never kills; the kill file can name one agent or one run;
the kill signal is handled on a normal thread; internal errors are counted in the Monitor's own registry.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from prometheus_client import CollectorRegistry

import agentvigil
from agentvigil import RunKilled, control
from agentvigil.actions.kill import Killer, ProcessRef
from agentvigil.cli import main
from agentvigil.metrics import default_metrics
from agentvigil.sinks.recorder import process_start_time

NOBODY = 65534


def wait_for(predicate, timeout=10.0, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def write_meta(directory, pid, start, host=None, agent="bot"):
    os.makedirs(directory, exist_ok=True)
    meta = {"schema_version": 1, "session_id": os.path.basename(str(directory)), "agent": agent, "pid": pid,
            "process_start_time": start, "host": host or socket.gethostname(), "started_at": time.time()}
    path = os.path.join(directory, "meta.json")
    with open(path, "w") as fh:
        json.dump(meta, fh)
    return meta, path


def failing_session(directory, agent="bot", failures=4, run="r1", end=True):
    """Events of one run in which the same command fails ``failures`` times (seed 004's failing command)."""
    t = time.time() - 60
    lines = [{"event_type": "run_start", "ts": t, "agent_id": agent, "run_id": run}]
    for i in range(failures):
        lines.append({"event_type": "tool_end", "ts": t + 1 + i, "agent_id": agent, "run_id": run,
                      "tool_name": "bash", "args_hash": "npm-test", "status": "error", "error_kind": "exit_1",
                      "detail": {"command": "npm test"}})
    if end:
        lines.append({"event_type": "run_end", "ts": t + 10, "agent_id": agent, "run_id": run, "status": "error"})
    with open(os.path.join(directory, "events.ndjson"), "w") as fh:
        fh.writelines(json.dumps(x) + "\n" for x in lines)


def sleeper(**popen):
    child = subprocess.Popen(["sleep", "60"], **popen)
    assert wait_for(lambda: process_start_time(child.pid) is not None)
    return child


@pytest.fixture
def signals(monkeypatch):
    """Every real signal (not the 0 probe) agentvigil sends, recorded; the call still goes through."""
    sent = []
    real = os.kill

    def kill(pid, sig):
        if sig != 0:
            sent.append((pid, sig))
        return real(pid, sig)

    monkeypatch.setattr(os, "kill", kill)
    return sent


def test_forged_meta_naming_pid_1_is_never_signalled(tmp_path, signals, capsys):
    session = tmp_path / "forged"
    _, meta_path = write_meta(session, 1, process_start_time(1))    # pid 1's real start time is public
    failing_session(session, end=False)
    meta = json.loads(open(meta_path).read())
    reports = []
    killer = Killer(grace=0.1, report=lambda text, ok: reports.append((text, ok)))
    assert ProcessRef.from_meta(meta, meta_path) is None        # the session reader does not even take it
    assert not killer.kill(ProcessRef(1, process_start_time(1), socket.gethostname(), 0), "loop")
    assert "never signalled" in reports[-1][0]                   # nor would the killer, given one
    rc = main(["watch", str(session), "--max-retries", "3", "--on-violation", "kill", "--no-follow",
               "--status-every", "0"])
    assert rc == 3                                              # breach reported, nothing killed
    assert [pid for pid, _ in signals if pid <= 1] == [] and signals == []


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a process as another uid")
def test_another_users_process_is_refused_without_allow_other_users(tmp_path, signals):
    child = sleeper(preexec_fn=lambda: os.setuid(NOBODY))
    try:
        assert os.stat(f"/proc/{child.pid}").st_uid == NOBODY
        meta, meta_path = write_meta(tmp_path / "s", child.pid, process_start_time(child.pid))   # owned by root
        reports = []
        killer = Killer(grace=0.1, report=lambda text, ok: reports.append(text))
        assert not killer.kill(ProcessRef.from_meta(meta, meta_path), "loop")
        assert f"uid {NOBODY}" in reports[-1] and "written by uid 0" in reports[-1]
        # even when other users are allowed, only the uid that wrote meta.json may be aimed at
        assert not killer.kill(ProcessRef.from_meta(meta, meta_path, allow_other_users=True), "loop")
        os.chown(meta_path, NOBODY, NOBODY)                       # now the file is nobody's own claim
        assert not killer.kill(ProcessRef.from_meta(meta, meta_path), "loop")
        assert "--allow-other-users" in reports[-1]
        assert signals == [] and child.poll() is None
        assert ProcessRef.from_meta(meta, meta_path, allow_other_users=True).verify() is None   # allowed: ok
    finally:
        child.kill()
        child.wait()


def test_start_time_and_host_mismatch_are_refused(tmp_path, signals):
    child = sleeper()
    try:
        start = process_start_time(child.pid)
        reports = []
        killer = Killer(grace=0.1, report=lambda text, ok: reports.append(text))
        meta, path = write_meta(tmp_path / "reused", child.pid, start - 3600)
        assert not killer.kill(ProcessRef.from_meta(meta, path), "loop") and "reused PID" in reports[-1]
        meta, path = write_meta(tmp_path / "elsewhere", child.pid, start, host="other-host.example")
        assert not killer.kill(ProcessRef.from_meta(meta, path), "loop") and "host" in reports[-1]
        assert signals == [] and child.poll() is None
    finally:
        child.kill()
        child.wait()


def test_watch_all_no_follow_over_finished_sessions_kills_nothing(tmp_path, signals, capsys):
    children = [sleeper() for _ in range(3)]
    try:
        for i, child in enumerate(children):   # each session names a live process, its real start time
            session = tmp_path / f"s{i}"
            write_meta(session, child.pid, process_start_time(child.pid), agent=f"bot{i}")
            failing_session(session, agent=f"bot{i}", failures=6 if i == 0 else 1)
        rc = main(["watch", str(tmp_path), "--all", "--no-follow", "--status-every", "0"])
        err = capsys.readouterr().err
        assert rc == 3 and "RetryWatcher" in err                # the failing one is reported ...
        assert "kill" not in err.lower() and "SIGTERM" not in err    # ... and nothing is killed
        assert signals == [] and all(c.poll() is None for c in children)
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_seed_004_example_flags_alert_and_never_kill(tmp_path, signals, capsys):
    child = sleeper()
    try:
        session = tmp_path / "s"
        write_meta(session, child.pid, process_start_time(child.pid))
        failing_session(session, failures=5, end=False)          # the agent is still there, in its run
        rc = main(["watch", str(session), "--max-retries", "3", "--max-cost", "5", "--max-duration", "10m",
                   "--alert", "terminal", "--no-follow", "--status-every", "0"])
        err = capsys.readouterr().err
        assert rc == 3                                           # EXIT_BREACH, not EXIT_KILLED (4)
        assert "RetryWatcher" in err and "killing" not in err
        assert signals == [] and child.poll() is None            # the agent is alive
    finally:
        child.kill()
        child.wait()


# -- a scoped kill in a process with several Monitors ----------------------------------------------------------
def test_kill_file_naming_an_agent_stops_only_that_agents_runs(tmp_path):
    mon_a = agentvigil.Monitor("agent-a", registry=CollectorRegistry(), heartbeat=False)
    mon_b = agentvigil.Monitor("agent-b", registry=CollectorRegistry(), heartbeat=False)
    path = tmp_path / "kill"
    control.watch_kill_file(str(path), interval=0.01)
    run_a, run_b = mon_a.start_run("a1"), mon_b.start_run("b1")
    path.write_text("agent=agent-a\n")
    assert wait_for(lambda: run_a.killed)
    with pytest.raises(RunKilled):
        run_a.check()
    run_b.check()                                                # the other agent carries on
    late_a = mon_a.start_run("a2")                               # started while the file exists
    assert wait_for(lambda: late_a.killed)
    late_b = mon_b.start_run("b2")
    assert control.stop_reason is None and not run_b.killed      # nothing global was set
    path.unlink()
    for run in (run_a, late_a, run_b, late_b):
        run.end()
    assert not late_b.killed


def test_kill_file_naming_a_run_stops_only_that_run(tmp_path):
    mon = agentvigil.Monitor("agent-c", registry=CollectorRegistry(), heartbeat=False)
    path = tmp_path / "kill"
    control.watch_kill_file(str(path), interval=0.01)
    target, other = mon.start_run("t"), mon.start_run("o")
    path.write_text(f"run={target.run_id}\n")
    assert wait_for(lambda: target.killed)
    assert not other.killed and target._kill_reason == f"kill_file:run={target.run_id}"
    path.unlink()
    target.end()
    other.end()


def test_kill_file_parsing():
    assert control.parse_kill_file("agent=bot\n") == ("agent", "bot", "kill_file:agent=bot")
    assert control.parse_kill_file("run=abc") == ("run", "abc", "kill_file:run=abc")
    assert control.parse_kill_file("maintenance window\n") == (None, None, "maintenance window")
    assert control.parse_kill_file("") == (None, None, "kill_file")
    assert control.parse_kill_file("agent=") == (None, None, "agent=")     # no target: everything, as before


HOLDS_LOCK = textwrap.dedent("""
    import os, signal, sys, time, agentvigil
    mon = agentvigil.Monitor("locked", heartbeat=False)
    with mon._lock:                       # the main thread holds the Monitor lock when the signal lands
        os.kill(os.getpid(), signal.SIGTERM)
        print("handler returned", flush=True)
        time.sleep(0.3)
    time.sleep(30)                        # idle: the control thread ends the process
""")


def test_kill_signal_handler_takes_no_lock(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDS_LOCK], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, AGENTVIGIL_KILL_SIGNAL="TERM"))
    try:
        out, _ = proc.communicate(timeout=20)             # a handler taking the lock would deadlock here
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "handler returned" in out
    assert proc.returncode == -signal.SIGTERM


# -- internal errors go to the registry the Monitor was given ---------------------------------------------
class _BrokenSink:
    consumes = frozenset({"heartbeat", "run_start", "run_end"})

    def handle(self, event):
        raise RuntimeError("broken sink")


class _BrokenPrices:
    def cost(self, *args):
        raise RuntimeError("broken prices")


def _count(registry, component):
    return registry.get_sample_value("agentvigil_internal_errors_total", {"component": component}) or 0.0


def test_internal_errors_are_counted_in_the_monitors_registry():
    registry = CollectorRegistry()
    default = default_metrics().registry
    before_default = _count(default, "sink")
    mon = agentvigil.Monitor("own-registry", registry=registry, heartbeat=False, prices=_BrokenPrices())
    mon.pipeline.add_sink(_BrokenSink())
    with mon.run() as run:
        run.llm_usage("p", "m", input_tokens=10, output_tokens=1)
    assert _count(registry, "sink") == 2                         # run_start and run_end
    assert _count(registry, "pricing") == 1
    assert _count(default, "sink") == before_default             # nothing leaked into the default registry
