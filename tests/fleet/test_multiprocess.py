"""Multiprocess metrics: real gunicorn workers and a multiprocessing pool behind one /metrics."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import urllib.request

import pytest
from fleet_support import HERE, env_with_src, free_port, scrape, stop, wait_for

pytest.importorskip("gunicorn")


def _get(port: int, path: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return int(response.read())


def _value(samples: dict, name: str, **labels: str) -> float | None:
    for (sample_name, sample_labels), value in samples.items():
        if sample_name == name and all(dict(sample_labels).get(k) == v for k, v in labels.items()):
            return value
    return None


def _pids_serving(app_port: int, want: int) -> set[int]:
    """Hit the app until ``want`` distinct workers answered (sync workers take requests one by one)."""
    pids: set[int] = set()

    def enough() -> bool:
        pids.add(_get(app_port, "/run"))
        return len(pids) >= want
    wait_for(enough, timeout=30, interval=0.01)
    return pids


@pytest.fixture
def gunicorn(tmp_path):
    metrics_dir = tmp_path / "prom"
    app_port, metrics_port = free_port(), free_port()
    env = env_with_src(FLEET_METRICS_DIR=str(metrics_dir), FLEET_APP_PORT=str(app_port),
                       FLEET_METRICS_PORT=str(metrics_port), FLEET_WORKERS="3")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(HERE / "gunicorn_conf.py"),
                             "--chdir", str(HERE), "gunicorn_app:app"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: _get(app_port, "/run"), timeout=30)
        wait_for(lambda: scrape(metrics_port), timeout=30)
        yield proc, app_port, metrics_port, metrics_dir
    finally:
        stop(proc)
        if proc.stderr:
            proc.stderr.close()


@pytest.mark.e2e
def test_gunicorn_workers_share_one_metrics_endpoint(gunicorn):
    proc, app_port, metrics_port, metrics_dir = gunicorn
    pids = _pids_serving(app_port, 3)
    runs_before = _value(scrape(metrics_port), "agent_runs_total", agent="web-agent", status="ok") or 0
    for _ in range(30):
        _get(app_port, "/run")
    samples = scrape(metrics_port)
    # counters of all workers add up: every request was one run and one tool call, whoever served it
    assert _value(samples, "agent_runs_total", agent="web-agent", status="ok") == runs_before + 30
    assert _value(samples, "agent_tool_calls_total", agent="web-agent", tool="search", status="ok") == runs_before + 30
    # one series per gauge, not one per pid
    assert not [key for key in samples if dict(key[1]).get("pid")], "gauges must not be split by pid"
    assert _value(samples, "agent_active_runs", agent="web-agent") == 0  # livesum of idle workers
    assert _value(samples, "agentvigil_multiprocess_dir_free_bytes") > 0
    assert len(pids) == 3 and {p.name for p in metrics_dir.iterdir()}  # files of several workers exist


@pytest.mark.e2e
def test_gunicorn_killed_worker_live_gauges_removed_counters_kept(gunicorn):
    proc, app_port, metrics_port, metrics_dir = gunicorn
    pids = _pids_serving(app_port, 3)
    # each worker sets the breaker gauge to its own value; livemax shows the worst live worker
    seen: dict[int, float] = {}  # the last value each worker set
    calls = iter(range(1, 10_000))

    def every_worker_set() -> bool:
        value = next(calls) / 1000
        seen[_get(app_port, f"/gauge?v={value}")] = value
        return len(seen) == 3
    wait_for(every_worker_set, timeout=30, interval=0.01)
    assert _value(scrape(metrics_port), "agent_circuit_breaker_state", breaker="shared") == max(seen.values())
    runs = _value(scrape(metrics_port), "agent_runs_total", agent="web-agent", status="ok")

    # kill the worker holding the highest value that does not serve /metrics (any, if unknown)
    victim = max(seen, key=seen.get)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: not list(metrics_dir.glob(f"gauge_live*_{victim}.db")), timeout=30)
    samples = wait_for(lambda: scrape(metrics_port), timeout=30)  # a standby took the port over if needed
    remaining = sorted(v for pid, v in seen.items() if pid != victim)
    assert _value(samples, "agent_circuit_breaker_state", breaker="shared") == remaining[-1]
    # the dead worker's runs are still in the total: counters never go backwards
    assert _value(samples, "agent_runs_total", agent="web-agent", status="ok") >= runs
    assert victim in pids


def _pool_task(n: int) -> int:
    import agentvigil
    from agentvigil.metrics import default_metrics

    monitor = agentvigil.Monitor("pool-agent", heartbeat=False)
    for _ in range(n):
        with monitor.run() as run:
            with run.tool_call("fetch", {}):
                pass
    default_metrics().budget_limit.labels("pool").set(100 + os.getpid() % 7)
    return os.getpid()


def _pool_main(metrics_dir: str, port: int, out: str) -> None:
    from agentvigil import multiprocess

    multiprocess.prepare(metrics_dir)
    import agentvigil

    server, _ = agentvigil.start_metrics_server(port=port)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4, maxtasksperchild=1) as pool:  # every task in a fresh worker that then exits
        pids = pool.map(_pool_task, [5] * 8)
    live = multiprocess.remove_dead_workers()
    samples_text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    with open(out, "w") as fh:
        json.dump({"pids": pids, "removed": live, "text": samples_text,
                   "files": sorted(os.listdir(metrics_dir))}, fh)
    server.shutdown()


@pytest.mark.e2e
def test_pool_workers_aggregate_and_dead_workers_are_cleaned(tmp_path):
    out = tmp_path / "out.json"
    port = free_port()
    code = ("import sys, test_multiprocess as t; t._pool_main(sys.argv[1], int(sys.argv[2]), sys.argv[3])")
    env = env_with_src()
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "prom"), str(port), str(out)],
                            env=env, cwd=HERE, capture_output=True, text=True, timeout=50)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    from prometheus_client.parser import text_string_to_metric_families

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(data["text"]) for s in f.samples}
    assert samples[("agent_runs_total", (("agent", "pool-agent"), ("status", "ok")))] == 40.0
    assert samples[("agent_tool_calls_total", (("agent", "pool-agent"), ("status", "ok"), ("tool", "fetch")))] == 40
    # the pool's workers are gone: no live-gauge file of theirs is left, their counters are
    assert not [f for f in data["files"]
                if f.startswith("gauge_live") and int(f[:-3].rsplit("_", 1)[1]) in data["pids"]]
    assert [f for f in data["files"] if f.startswith("counter_")]
    assert not [key for key in samples if key[0] == "agent_budget_limit_tokens"], "livemax of dead workers is gone"
