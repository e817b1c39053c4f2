import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import agentvigil
from agentvigil import RunKilled, control

AGENT = textwrap.dedent("""
    import sys, time, agentvigil
    mon = agentvigil.Monitor("graceful", record_dir=sys.argv[1], heartbeat_interval=0.1)
    print("ready", flush=True)
    steps = 0
    try:
        while True:
            with mon.run() as run:
                for _ in range(1000):
                    with run.step():
                        time.sleep(0.05)
                        steps += 1
    except agentvigil.RunKilled as exc:
        print("killed", exc.reason, steps, flush=True)
        # the agent's own clean-up runs; starting a new run is refused
        try:
            mon.run().__enter__()
        except agentvigil.RunKilled:
            print("refused", flush=True)
        time.sleep(5)   # the agent lingers: the process must still exit ~1 s after its last run ended
""")


def test_kill_signal_finishes_the_step_flushes_and_exits(tmp_path):
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    env = dict(os.environ, AGENTVIGIL_KILL_SIGNAL="TERM")
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "rec")], env=env, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    elapsed = time.monotonic() - start
    assert proc.returncode == -signal.SIGTERM          # the signal's default action, after the run ended
    assert elapsed < 2.5                  # next step boundary + 1 s clean-up delay, not 1000 steps or the 5 s sleep
    assert "killed signal:SIGTERM" in out and "refused" in out   # clean-up ran; new runs were refused
    session = next((tmp_path / "rec").iterdir())
    lines = (session / "events.ndjson").read_text().splitlines()
    ends = [l for l in lines if '"event_type":"run_end"' in l]
    assert len(ends) == 1 and '"status":"killed"' in ends[0]    # the killed run was flushed to disk


def test_kill_signal_when_idle_exits_at_once(tmp_path):
    script = tmp_path / "idle.py"
    script.write_text("import time, agentvigil\nagentvigil.Monitor('idle')\nprint('ready', flush=True)\ntime.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, str(script)], env=dict(os.environ, AGENTVIGIL_KILL_SIGNAL="TERM"),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == -signal.SIGTERM


def test_kill_file_stops_runs_and_refuses_new_ones_until_removed(tmp_path, make_monitor):
    mon = make_monitor("kf")
    path = tmp_path / "STOP"
    control.watch_kill_file(str(path), interval=0.02)
    try:
        with pytest.raises(RunKilled) as info:
            with mon.run() as run:
                for _ in range(500):
                    with run.step():
                        time.sleep(0.01)
                        if not path.exists():
                            path.write_text("operator says stop\n")
        assert info.value.reason == "operator says stop"
        with pytest.raises(RunKilled):
            mon.start_run()
        path.unlink()
        deadline = time.monotonic() + 2
        while control.stop_reason is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        with mon.run():
            pass
    finally:
        if path.exists():
            path.unlink()
        control.resume()
