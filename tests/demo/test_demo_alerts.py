"""`agentvigil demo --prometheus`, as `bash scripts/demo.sh` runs it: the demo starts Debian's Prometheus and
Alertmanager on loopback with alert_rules/profiles/demo.yaml, at real speed. Every signal family fires within
3 minutes of the start (about 70 s on an idle machine), the healthy agents never, and SIGTERM stops the demo
and both servers. Bounded: the demo stops itself after DEMO_MAX_SECONDS whatever happens here.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rules_support import ROOT, binary, free_port, http_json, wait_until

from agentvigil.demostack import FAMILIES

from .conftest import cli_env

pytestmark = pytest.mark.e2e

DEMO_MAX_SECONDS = 220
FIRE_TIMEOUT = 180     # the promise: every family within 3 minutes of the start
HEALTHY = {"support-bot", "triage-bot"}


def subject(labels: dict) -> str:
    return labels.get("agent") or labels.get("budget") or ""


def family_of(alertname: str) -> str | None:
    return next((family for family, names in FAMILIES.items() if alertname in names), None)


def test_demo_fires_every_family_and_stops_its_servers(tmp_path: Path) -> None:
    binary("prometheus"), binary("prometheus-alertmanager")
    ports = {"--port": free_port(), "--prometheus-port": free_port(), "--alertmanager-port": free_port()}
    log_path = tmp_path / "demo.log"
    cmd = [sys.executable, "-m", "agentvigil", "demo", "--prometheus", "--duration", str(DEMO_MAX_SECONDS),
           "--no-record", "--view", "lines", "--status-every", "5",
           "--rules", str(ROOT / "alert_rules" / "profiles" / "demo.yaml")]
    for flag, port in ports.items():
        cmd += [flag, str(port)]
    started = time.monotonic()
    with log_path.open("w") as log:
        demo = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=cli_env())
    try:
        try:
            announce = wait_until(lambda: re.search(r"\(pids (\d+) (\d+)\)", log_path.read_text()), 40,
                                  "the demo to announce its Prometheus and Alertmanager")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log_path.read_text()[-3000:]}") from None
        pids = [int(p) for p in announce.groups()]
        prometheus = f"http://127.0.0.1:{ports['--prometheus-port']}"
        assert f"Prometheus {prometheus}/alerts" in log_path.read_text()

        first_fired: dict[str, tuple[str, str, float]] = {}
        healthy_alerts: list[tuple[str, str]] = []

        def poll() -> bool:
            for alert in http_json(f"{prometheus}/api/v1/alerts")["data"]["alerts"]:
                if alert["state"] != "firing":
                    continue
                labels = alert["labels"]
                if subject(labels) in HEALTHY:
                    healthy_alerts.append((labels["alertname"], subject(labels)))
                family = family_of(labels["alertname"])
                if family and family not in first_fired:
                    first_fired[family] = (labels["alertname"], subject(labels) or labels.get("breaker", ""),
                                           round(time.monotonic() - started))
            return first_fired.keys() == FAMILIES.keys()

        try:
            wait_until(poll, FIRE_TIMEOUT - (time.monotonic() - started), "every signal family to fire", interval=1)
        except AssertionError:
            pass  # reported below with what did fire
        print("\nfirst alert per family (alert, subject, seconds since the demo started):")
        for family, (name, who, seconds) in sorted(first_fired.items(), key=lambda item: item[1][2]):
            print(f"  {family:<12} {name:<36} {who:<16} {seconds:4d} s")
        missing = sorted(FAMILIES.keys() - first_fired.keys())
        assert not missing, f"never fired: {missing}; fired: {first_fired}\n{log_path.read_text()[-3000:]}"
        assert not healthy_alerts, healthy_alerts
        # the plain status view reports the firing alerts too
        wait_until(lambda: re.search(r"Prometheus: [1-9]\d* alert\(s\) firing: .*AgentZombie\{ops-agent\}",
                                     log_path.read_text()), 20, "the status view to list the firing alerts")

        demo.send_signal(signal.SIGTERM)
        assert demo.wait(30) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
    assert "done after" in log_path.read_text()
    # both servers were stopped with the demo: their PIDs are gone and nothing listens on their ports
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    for flag in ("--prometheus-port", "--alertmanager-port"):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", ports[flag])) != 0, f"something still listens on {flag}"


def test_without_prometheus_the_demo_runs_embedded_and_says_so_once(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "agentvigil", "demo", "--prometheus", "--rules",
                             str(tmp_path / "missing.yaml"), "--duration", "2", "--speed", "10", "--port", "0",
                             "--no-record", "--view", "lines", "--status-every", "1"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path, env=cli_env())
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "embedded mode" in line]
    assert len(lines) == 1, result.stdout
    # the rules file is missing; on a machine without Prometheus that is said first, naming the packages
    from agentvigil.demostack import find_binary
    have_prometheus = bool(find_binary("prometheus") and find_binary("prometheus-alertmanager", "alertmanager"))
    assert "/metrics only" in lines[0] and ("missing.yaml" if have_prometheus else "apt-get install") in lines[0]
    assert "Prometheus:" not in result.stdout     # no alert lines without a Prometheus
    assert "support-bot" in result.stdout         # the fleet ran


def test_missing_binaries_name_the_debian_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from agentvigil import demo, demostack

    monkeypatch.setattr(demostack, "find_binary", lambda *names: None)
    out = io.StringIO()
    assert demo.start_stack(9464, 0, 0, None, out) is None
    assert out.getvalue().count("\n") == 1
    assert "apt-get install prometheus prometheus-alertmanager" in out.getvalue()
