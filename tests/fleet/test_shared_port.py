"""Two workers asking for the same metrics port: one serves it (with both workers' series), the other stands
by and takes over when the first exits. Never an "Address already in use" crash."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fleet_support import HERE, env_with_src, free_port, scrape, stop, wait_for

WORKER = """
import sys
import agentvigil
from agentvigil import exposition
exposition.STANDBY_RETRY = 0.1
name, port = sys.argv[1], int(sys.argv[2])
server, _ = agentvigil.start_metrics_server(port=port)
monitor = agentvigil.Monitor(name, heartbeat=False)
with monitor.run():
    pass
print(type(server).__name__, flush=True)
sys.stdin.readline()  # until the test closes stdin
server.shutdown()
"""


def _worker(name: str, port: int, directory: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, name, str(port)], cwd=HERE, text=True,
                            env=env_with_src(PROMETHEUS_MULTIPROC_DIR=directory),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _runs(port: int) -> dict[str, float]:
    return {dict(labels)["agent"]: value for (name, labels), value in scrape(port).items()
            if name == "agent_runs_total" and dict(labels).get("status") == "ok"}


@pytest.mark.e2e
def test_second_worker_on_the_same_port_stands_by_and_takes_over(tmp_path):
    directory = tmp_path / "prom"
    directory.mkdir()
    port = free_port()
    first = _worker("first", port, str(directory))
    second = None
    try:
        assert first.stdout.readline().strip() == "AgentvigilHTTPServer"
        second = _worker("second", port, str(directory))
        assert second.stdout.readline().strip() == "StandbyServer"  # not an OSError
        # the holder serves both workers' series
        assert wait_for(lambda: _runs(port) == {"first": 1.0, "second": 1.0}, timeout=10)
        first.stdin.close()
        first.wait(10)
        assert first.returncode == 0, first.stderr.read()
        # the standby binds the freed port; the first worker's counters are still in the totals
        assert wait_for(lambda: _runs(port) == {"first": 1.0, "second": 1.0}, timeout=10)
        second.stdin.close()
        second.wait(10)
        assert second.returncode == 0, second.stderr.read()
    finally:
        for proc in (first, second):
            if proc is not None:
                stop(proc)
                for stream in (proc.stdin, proc.stdout, proc.stderr):
                    if stream and not stream.closed:
                        stream.close()


def test_single_process_mode_still_reports_a_taken_port(monkeypatch):
    """Without PROMETHEUS_MULTIPROC_DIR a taken port is an error the caller must see, as before."""
    import agentvigil

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    server, _ = agentvigil.start_metrics_server(port=0)
    try:
        with pytest.raises(OSError):
            agentvigil.start_metrics_server(port=server.server_port)
    finally:
        server.shutdown()
        server.server_close()
