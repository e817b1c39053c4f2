"""runaway's state file: written at most once a second and on close, merged with what other processes wrote,
never waited for, and kept beside the recorder's sessions by default."""

import fcntl
import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest
from prometheus_client import REGISTRY

from agentvigil.detectors.runaway import SAVE_INTERVAL, RunawayDetector, RunawayHistory, RunawayPolicy

from .test_runaway import history, run


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def detector(path, clock=None, **policy):
    p = RunawayPolicy(min_runs=20, state_file=str(path), **policy)
    return RunawayDetector(p, RunawayHistory(p, clock or Clock()))


def stored(path, agent="a"):
    body = json.loads(path.read_text())["agents"][agent]
    return len(body["runs"]), len(body["outcomes"])


def written(det):
    """After the writer thread a run end started (the run's own thread does no I/O)."""
    det.history.wait_for_writer(10)
    return det


def test_a_run_end_writes_at_most_once_per_interval_and_close_writes_the_rest(tmp_path):
    path, clock = tmp_path / "runaway.json", Clock()
    det = detector(path, clock)
    run(det, "r0", 10)
    written(det)
    assert stored(path) == (1, 1)          # the first run end has it written: a process with one task has it saved
    for i in range(1, 5):
        run(det, f"r{i}", 10)
    assert stored(path) == (1, 1)          # within the interval: pending
    clock.now += SAVE_INTERVAL
    run(det, "r5", 10)
    written(det)
    assert stored(path) == (6, 6)
    run(det, "r6", 10)
    det.close()
    assert stored(path) == (7, 7)
    det.close()                            # nothing pending: nothing written twice
    assert stored(path) == (7, 7)


def test_a_run_end_leaves_the_write_to_a_thread_that_ends_when_done(tmp_path, monkeypatch):
    from agentvigil.detectors import runaway

    path, release, order = tmp_path / "runaway.json", threading.Event(), []
    real = runaway._write

    def slow_disk(target, data):
        order.append("write started")
        release.wait(30)
        real(target, data)
        order.append("write done")

    monkeypatch.setattr(runaway, "_write", slow_disk)
    det = detector(path)
    run(det, "r0", 10)                                 # returns while the disk is still busy
    order.append("run ended")
    writer = det.history._writer
    release.set()
    written(det)
    assert order.index("run ended") < order.index("write done") and stored(path) == (1, 1)
    assert det.history._writer is None and not writer.is_alive()   # nothing left to write: the thread is gone


def test_processes_sharing_the_file_keep_each_others_runs_and_learn_from_them(tmp_path):
    path = tmp_path / "runaway.json"
    one, two = detector(path), detector(path)        # two workers, started together
    for worker in (one, two):
        worker.history._saved_at = float("inf")      # both write at close only: which one writes first is fixed
    for i in range(12):
        run(one, f"one-{i}", 10)
        run(two, f"two-{i}", 10)
    one.close()
    two.close()                                      # re-reads the file: adds its own runs to the other's
    assert stored(path) == (24, 24)
    assert two.baseline_size("a") == 24              # and now judges with both workers' runs
    assert run(two, "long", 60)                      # 24 runs (min_runs 20): a baseline neither had alone
    assert detector(path).baseline_size("a") == 24


def test_a_run_end_never_waits_for_the_lock_and_close_gives_up(tmp_path):
    path = tmp_path / "runaway.json"
    det = detector(path)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)                   # another process is writing (or stopped while writing)
    try:
        run(det, "r0", 10)
        written(det)
        assert not path.exists() and len(det.history._pending) == 1   # skipped: the run stays pending
        det.close()                                  # waits CLOSE_WAIT at most, then leaves it
        assert not path.exists()
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    det.close()
    assert stored(path) == (1, 1)                    # the next write takes the pending run


def errors():
    return REGISTRY.get_sample_value("agentvigil_internal_errors_total", {"component": "runaway_state"}) or 0.0


def test_a_broken_file_is_counted_and_replaced_when_written(tmp_path):
    path = tmp_path / "runaway.json"
    det = detector(path)
    path.write_text("{not json")             # broken since this process loaded it
    before = errors()
    run(det, "r0", 10)
    written(det)
    assert stored(path) == (1, 1) and errors() == before + 1


def test_an_unwritable_file_is_counted_and_keeps_the_runs_pending(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    det = detector(blocker / "runaway.json")          # its directory is a file
    before = errors()
    history(det)
    det.close()
    assert len(det.history._pending) == 40 and errors() > before
    assert [v.detail["why"] for v in run(det, "r", 20, status="error")] == ["ends_unfinished"]   # judged as before


def test_a_forked_child_does_not_write_its_parents_runs(tmp_path):
    path = tmp_path / "runaway.json"
    det = detector(path)
    run(det, "written", 10)                          # in the file before the fork
    written(det)
    det.history._saved_at = float("inf")             # nothing more written until close
    run(det, "parent-run", 10)
    pid = os.fork()
    if pid == 0:   # the child: ends one run of its own, writes, exits
        try:
            run(det, "child-run", 10)
            det.close()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert stored(path) == (2, 2)                    # the child's run only
    det.close()
    assert stored(path) == (3, 3)                    # then the parent's, merged


AGENT = textwrap.dedent("""
    import sys
    import agentvigil
    task, steps, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    monitor = agentvigil.Monitor(agent="worker", heartbeat=False)
    for t in range(runs):
        with monitor.run(task_id=f"{task}-{t}") as r:
            for i in range(steps):
                with r.step():
                    with r.tool_call("bash", {"cmd": f"ls {i}"}) as call:
                        call.set_result(f"out {i}")
    monitor.close()
""")


def test_a_recording_agent_keeps_its_baseline_beside_the_sessions_across_processes(tmp_path):
    """One process per task: each process's run is in the state file beside the sessions for the next."""
    record = tmp_path / "sessions"
    env = {**os.environ, "AGENTVIGIL_RECORD_DIR": str(record)}
    env.pop("AGENTVIGIL_CONFIG", None)
    for i in range(3):
        subprocess.run([sys.executable, "-c", AGENT, f"t{i}", "6", "1"], env=env, check=True, timeout=120)
    state = record / "runaway-baseline.json"
    assert stored(state, "worker") == (3, 3)
    sessions = [p for p in record.iterdir() if p.is_dir()]
    assert len(sessions) == 3

    # "" turns it off
    config = tmp_path / "watch.json"
    config.write_text(json.dumps({"watchers": {"runaway": {"state_file": ""}}}))
    off = tmp_path / "off"
    subprocess.run([sys.executable, "-c", AGENT, "t", "6", "1"], env={**env, "AGENTVIGIL_RECORD_DIR": str(off),
                                                                    "AGENTVIGIL_CONFIG": str(config)},
                   check=True, timeout=120)
    assert not (off / "runaway-baseline.json").exists() and any(p.is_dir() for p in off.iterdir())

    # replaying the sessions reads the events, never the agents' state file
    before = state.read_text()
    subprocess.run([sys.executable, "-m", "agentvigil", "replay", str(record)], env=env, check=True,
                   capture_output=True, timeout=120)
    assert state.read_text() == before


def test_workers_ending_runs_at_once_lose_none(tmp_path):
    """Four one-process-per-task workers at the same time, five runs each, one record directory."""
    record = tmp_path / "sessions"
    env = {**os.environ, "AGENTVIGIL_RECORD_DIR": str(record)}
    env.pop("AGENTVIGIL_CONFIG", None)
    workers = [subprocess.Popen([sys.executable, "-c", AGENT, f"w{i}", "6", "5"], env=env) for i in range(4)]
    assert [w.wait(timeout=120) for w in workers] == [0] * 4
    assert stored(record / "runaway-baseline.json", "worker") == (20, 20)


# -- cost_over_baseline's window lives in the same history and file ---------------------------------------------


def cost_detector(path, **policy):
    from agentvigil.detectors.cost_baseline import CostBaselineDetector, CostPolicy

    p = RunawayPolicy(state_file=str(path))
    return CostBaselineDetector(CostPolicy(**policy), RunawayHistory(p, Clock()))


def cost_run(det, run_id, calls, cost=0.01, status="ok"):
    from agentvigil.events import Event

    out = []
    for _ in range(calls):
        out += det.feed(Event("llm_call", 1.0, agent_id="a", run_id=run_id, cost_usd=cost)) or []
    out += det.feed(Event("run_end", 2.0, agent_id="a", run_id=run_id, status=status)) or []
    return out


def test_one_process_per_task_has_a_cost_baseline_from_the_ended_runs_of_the_earlier_ones(tmp_path):
    path = tmp_path / "runaway.json"
    for i in range(5):                           # five processes, one run each ($0.03)
        det = cost_detector(path, min_runs=5)
        assert det.baseline("a") is None         # fewer than min_runs ended before it
        assert cost_run(det, f"r{i}", 3) == []
        det.close()
    det = cost_detector(path, min_runs=5)        # the sixth knows the median of the five
    assert det.baseline("a") == pytest.approx(0.03)
    [verdict] = cost_run(det, "spike", 12)       # $0.12 > 3 × $0.03, flagged in flight
    assert verdict.detail["baseline_usd"] == 0.03 and verdict.detail["in_flight"] is True
    assert cost_run(det, "failed", 1, status="error") == []
    det.close()
    assert json.loads(path.read_text())["agents"]["a"]["costs"] == pytest.approx([0.03] * 5)   # neither flagged nor failed


def test_workers_sharing_the_file_keep_each_others_run_costs(tmp_path):
    path = tmp_path / "runaway.json"
    one, two = cost_detector(path, min_runs=4), cost_detector(path, min_runs=4)
    for worker in (one, two):
        worker.history._saved_at = float("inf")      # both write at close only, one first
    for i in range(2):
        cost_run(one, f"one-{i}", 1, cost=0.01)
        cost_run(two, f"two-{i}", 1, cost=0.05)
    one.close()
    two.close()                                  # merged: four costs, the median of both workers' runs
    assert sorted(json.loads(path.read_text())["agents"]["a"]["costs"]) == [0.01, 0.01, 0.05, 0.05]
    assert two.baseline("a") == pytest.approx(0.03) == cost_detector(path, min_runs=4).baseline("a")


def test_a_file_without_costs_loads_and_a_bad_cost_is_counted(tmp_path):
    path = tmp_path / "runaway.json"
    det = detector(path)
    run(det, "r0", 10)
    det.close()
    data = json.loads(path.read_text())
    del data["agents"]["a"]["costs"]             # as written before the costs were kept
    path.write_text(json.dumps(data))
    assert detector(path).baseline_size("a") == 1 and cost_detector(path).baseline("a") is None
    for bad in (-1.0, "NaN", [1]):
        data["agents"]["a"]["costs"] = [0.01, bad]
        path.write_text(json.dumps(data))
        before = errors()
        assert cost_detector(path, min_runs=1).baseline("a") is None and errors() == before + 1
