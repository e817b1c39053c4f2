"""`agentvigil top`: rows from a real /metrics exposition, alerts from a Prometheus-shaped alerts API, the
live view redrawn in place under tmux (capture-pane), plain lines when not on a terminal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import CollectorRegistry
from rules_support import wait_until

import agentvigil
from agentvigil.exposition import start_metrics_server
from agentvigil.top import HEADER, attach_alerts, parse_metrics, snapshot

from .conftest import cli_env


class FakePrometheus:
    """/api/v1/alerts answering whatever ``alerts`` holds."""

    def __init__(self) -> None:
        self.alerts: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                body = json.dumps({"status": "success", "data": {"alerts": list(fake.alerts)}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def firing(name: str, **labels: str) -> dict:
    return {"state": "firing", "labels": {"alertname": name, **labels}}


@pytest.fixture
def fleet() -> Iterator[tuple[str, CollectorRegistry]]:
    """Two agents on a private registry served on a free loopback port: support-bot healthy, billing-agent
    with an open breaker on its provider, a budget named after it and a loop detection."""
    registry = CollectorRegistry()
    support = agentvigil.Monitor("support-bot", registry=registry, heartbeat=False)
    billing = agentvigil.Monitor("billing-agent", registry=registry, heartbeat=False, loop_max_repeats=2)
    breaker = agentvigil.CircuitBreaker("azure-openai", failure_threshold=1, recovery_timeout=3600, monitor=billing)
    budget = agentvigil.TokenBudget("billing-agent", limit=1000, monitor=billing)
    for _ in range(6):
        with support.run() as run, run.step():
            run.llm_usage(provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=50,
                          cache_read_tokens=800)
    with billing.run() as run, run.step():
        run.llm_usage(provider="azure-openai", model="gpt-4o", input_tokens=500, output_tokens=20)
        for _ in range(3):
            with run.tool_call("crm_lookup", {"id": 1}) as call:
                call.set_result("same")
    with budget.reserve(900) as reservation:
        reservation.commit(900)

    def fail() -> None:
        raise ConnectionError("503")

    with pytest.raises(ConnectionError):
        breaker.call(fail)
    server, _ = start_metrics_server(port=0, registry=registry)
    yield f"http://127.0.0.1:{server.server_port}/metrics", registry
    server.shutdown()
    support.close()
    billing.close()


def test_rows_carry_every_column(fleet: tuple[str, CollectorRegistry]) -> None:
    from urllib.request import urlopen

    url, _ = fleet
    rows = parse_metrics(urlopen(url, timeout=5).read().decode())
    assert set(rows) == {"support-bot", "billing-agent"}
    support, billing = rows["support-bot"], rows["billing-agent"]
    assert support.runs == 6 and support.baseline > 0 and support.cache is not None and support.cache > 0.7
    assert support.breaker == "-" and support.budget is None and support.loops == 0
    assert billing.breaker == "open"                       # breaker named after the provider it calls
    assert billing.budget == pytest.approx(0.9)            # budget named after the agent
    assert billing.loops >= 1 and billing.progress
    others = attach_alerts(rows, [firing("AgentCircuitBreakerOpen", breaker="azure-openai"),
                                  firing("AgentBudgetUtilizationHigh", budget="billing-agent"),
                                  firing("AgentFleetUnhealthy", job="agentvigil")])
    assert sorted(billing.alerts) == ["AgentBudgetUtilizationHigh", "AgentCircuitBreakerOpen"]
    assert support.alerts == [] and support.health == "ok" and billing.health == "ALERT"
    assert others == ["AgentFleetUnhealthy"]


def test_snapshot_without_prometheus_and_with_a_dead_endpoint(fleet: tuple[str, CollectorRegistry]) -> None:
    url, _ = fleet
    lines = snapshot(url, None)
    assert lines[1] == HEADER and "no Prometheus" in lines[0] and len(lines) == 4
    dead = snapshot("http://127.0.0.1:9/metrics", None)
    assert len(dead) == 1 and "no answer" in dead[0]
    no_prometheus = snapshot(url, "http://127.0.0.1:9")
    assert "alerts from http://127.0.0.1:9: no answer" in no_prometheus[0] and len(no_prometheus) == 4


def test_plain_lines_when_not_a_tty(fleet: tuple[str, CollectorRegistry]) -> None:
    url, _ = fleet
    prom = FakePrometheus()
    prom.alerts = [firing("AgentLoopDetected", agent="billing-agent")]
    try:
        result = subprocess.run([sys.executable, "-m", "agentvigil", "top", "--metrics", url, "--prometheus",
                                 prom.url, "--once"], capture_output=True, text=True, timeout=60, env=cli_env())
    finally:
        prom.close()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "\x1b" not in result.stdout                    # no terminal control sequences in a pipe
    assert lines[1] == HEADER
    billing = next(line for line in lines if line.startswith("billing-agent"))
    assert " ALERT " in billing and "AgentLoopDetected" in billing and "open" in billing
    assert next(line for line in lines if line.startswith("support-bot")).split()[1] == "ok"


@pytest.mark.e2e
def test_live_view_redraws_in_place_under_tmux(fleet: tuple[str, CollectorRegistry], tmp_path) -> None:
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux not found: install the Debian package 'tmux' (CI does)")
    url, _ = fleet
    prom = FakePrometheus()
    prom.alerts = [firing("AgentLoopDetected", agent="billing-agent")]
    socket_name = f"agentvigil-top-{os.getpid()}"   # a private tmux server, never the user's
    base = [tmux, "-L", socket_name]
    env = cli_env()
    command = " ".join([f"PYTHONPATH={env['PYTHONPATH']}", sys.executable, "-m", "agentvigil", "top", "--metrics",
                        url, "--prometheus", prom.url, "--interval", "0.3"])
    subprocess.run(base + ["new-session", "-d", "-s", "top", "-x", "200", "-y", "20", command], check=True,
                   timeout=30, env=env)

    def pane() -> str:
        return subprocess.run(base + ["capture-pane", "-p", "-t", "top"], capture_output=True, text=True,
                              timeout=10).stdout

    try:
        first = wait_until(lambda: (lambda text: text if "AgentLoopDetected" in text else None)(pane()), 30,
                           "the first screen")
        assert first.count("AGENT ") == 1 and "q quits" in first
        assert "billing-agent" in first and "support-bot" in first
        prom.alerts = [firing("AgentToolAuthErrors", agent="support-bot")]
        second = wait_until(lambda: (lambda text: text if "AgentToolAuthErrors" in text else None)(pane()), 30,
                            "the screen to show the new alert")
        # redrawn in place: one header, the old alert gone, not a scrolled log of screens
        assert second.count("AGENT ") == 1 and "AgentLoopDetected" not in second
        support = next(line for line in second.splitlines() if line.startswith("support-bot"))
        assert " ALERT " in support
        subprocess.run(base + ["send-keys", "-t", "top", "q"], check=True, timeout=10)
        wait_until(lambda: subprocess.run(base + ["has-session", "-t", "top"], capture_output=True,
                                          timeout=10).returncode != 0, 20, "q to end the view")
    finally:
        subprocess.run(base + ["kill-server"], capture_output=True, timeout=10)
        prom.close()


@pytest.mark.e2e
def test_demo_on_a_terminal_shows_the_top_view(tmp_path) -> None:
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux not found: install the Debian package 'tmux' (CI does)")
    base = [tmux, "-L", f"agentvigil-demo-{os.getpid()}"]
    env = cli_env()
    log = tmp_path / "after.txt"
    command = (f"PYTHONPATH={env['PYTHONPATH']} {sys.executable} -m agentvigil demo --duration 6 --speed 10 "
               f"--port 0 --no-record; echo exit=$? > {log}; sleep 30")
    subprocess.run(base + ["new-session", "-d", "-s", "demo", "-x", "200", "-y", "20", command], check=True,
                   timeout=30, env=env, cwd=tmp_path)

    def pane() -> str:
        return subprocess.run(base + ["capture-pane", "-p", "-t", "demo"], capture_output=True, text=True,
                              timeout=10).stdout

    try:
        live = wait_until(lambda: (lambda text: text if "ops-agent" in text and "q quits" in text else None)(pane()),
                          30, "the demo's live view")
        assert live.count("AGENT ") == 1 and "no Prometheus" in live
        assert not [line for line in live.splitlines() if line.startswith("[t=")]   # no status lines under it
        wait_until(log.exists, 30, "the demo to end")
        assert log.read_text().strip() == "exit=0"
        after = pane()
        assert "done after" in after and "research-agent" in after                  # the last screen is kept
    finally:
        subprocess.run(base + ["kill-server"], capture_output=True, timeout=10)
