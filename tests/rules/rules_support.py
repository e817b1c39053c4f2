"""Shared helpers for the alert-rule, dashboard, deploy and end-to-end tests.

Binaries come from Debian packages: `prometheus` (prometheus, promtool) and `prometheus-alertmanager`
(prometheus-alertmanager, amtool). A test that needs one is skipped, with the package to install, when it
is missing; CI installs both.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALERT_RULES = ROOT / "alert_rules"
DASHBOARDS = ROOT / "grafana" / "dashboards"
DEPLOY = ROOT / "deploy"
HERE = Path(__file__).resolve().parent

PACKAGES = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "amtool": "prometheus-alertmanager",
    "prometheus-alertmanager": "prometheus-alertmanager",
}


def binary(name: str) -> str:
    """Path of a Debian-packaged binary, or skip the test saying which package provides it."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None and name == "prometheus-alertmanager":
        path = shutil.which("alertmanager")
    if path is None:
        pytest.skip(f"{name} not found: install the Debian package {PACKAGES[name]!r} (CI does)")
    return path


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def generate_rules(out: Path, *configs: Path) -> list[Path]:
    """Run alert_rules/generate.py with the given override configs into `out`."""
    cmd = [sys.executable, str(ALERT_RULES / "generate.py"), "--out", str(out)]
    for config in configs:
        cmd += ["--config", str(config)]
    result = run(cmd)
    assert result.returncode == 0, result.stderr
    return [out / "agentvigil_rules.yaml", out / "agentvigil_alerts.yaml"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5):
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except (OSError, urllib.error.URLError, ValueError) as exc:  # not up yet
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


def http_json(url: str, payload=None, timeout: float = 5):
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                     method="POST" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else None


class Process:
    """A subprocess with its output in a log file, stopped (terminate, then kill) by `stop()`."""

    def __init__(self, name: str, cmd: list[str], workdir: Path):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=workdir)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 10) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def dashboard_targets(dashboard: dict) -> list[tuple[str, str, dict]]:
    """(panel title, refId, target) for every query target of every panel, rows included."""
    out = []
    for panel in dashboard["panels"]:
        for sub in [panel] + panel.get("panels", []):
            for target in sub.get("targets", []):
                out.append((sub.get("title", ""), target.get("refId", ""), target))
    return out


def substitute(expr: str, *, job: str = "agentvigil", agent: str = ".+", rate_interval: str = "1m") -> str:
    """Replace the dashboard variables the way Grafana would for one selection."""
    return (expr.replace("$__rate_interval", rate_interval)
                .replace("${job}", job).replace("$job", job)
                .replace("${agent}", agent).replace("$agent", agent))


def load_dashboards() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}
