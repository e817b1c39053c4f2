"""The demo's own Prometheus and Alertmanager (Debian's ``prometheus`` and ``prometheus-alertmanager``), on
127.0.0.1, loading the compressed-time rule profile ``alert_rules/profiles/demo.yaml`` and scraping the demo's
/metrics every second. Started and stopped by the demo, each process by its own PID; data in a temporary
directory removed at the end. When a binary, the rule file or a port is missing, ``start`` returns None and
the reason, and the demo runs embedded (its /metrics only)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

RULES_PROFILE = Path("alert_rules") / "profiles" / "demo.yaml"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

# Signal family -> the alerts that show it (the demo's promise: every family fires, healthy agents never).
FAMILIES: dict[str, tuple[str, ...]] = {
    "cost": ("AgentRunCostAboveBaseline", "AgentInFlightRunCostAboveBaseline", "AgentCostRateSpike"),
    "cache": ("AgentCacheHitRatioLow",),
    "breaker": ("AgentCircuitBreakerOpen", "AgentCircuitBreakerFlapping"),
    "budget": ("AgentBudgetUtilizationHigh", "AgentBudgetExhaustionForecast"),
    "loop": ("AgentLoopDetected", "AgentRunStuck"),
    "tool errors": ("AgentToolAuthErrors", "AgentToolRateLimited", "AgentToolErrorRatioHigh"),
    "zombie": ("AgentZombie",),
}


def find_binary(*names: str) -> str | None:
    for name in names:
        path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
        if path:
            return path
    return None


def find_rules(explicit: str | None = None) -> Path | None:
    """The demo profile: ``explicit``, else ./alert_rules/profiles/demo.yaml, else next to the source tree."""
    candidates = [Path(explicit)] if explicit else [RULES_PROFILE, Path(__file__).resolve().parents[2] / RULES_PROFILE]
    return next((p.resolve() for p in candidates if p.is_file()), None)


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as Prometheus binds: a port left in TIME_WAIT by the last run is free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Stack:
    """A running Prometheus + Alertmanager pair."""

    def __init__(self, workdir: str, prometheus_port: int, alertmanager_port: int):
        self.workdir = workdir
        self.prometheus_port = prometheus_port
        self.alertmanager_port = alertmanager_port
        self.processes: list[subprocess.Popen[bytes]] = []
        self.notes: list[str] = []      # ports moved because the asked one was taken
        self.rules: Path | None = None

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.alertmanager_port}"

    def spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = open(os.path.join(self.workdir, f"{name}.log"), "wb")  # noqa: SIM115 (owned by the child)
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=self.workdir)
        log.close()
        self.processes.append(process)
        return process

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def log_tail(self, name: str, lines: int = 5) -> str:
        try:
            text = Path(self.workdir, f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def firing(self) -> list[dict]:
        """Firing alerts from Prometheus's API ([] when it does not answer)."""
        return firing_alerts(self.prometheus_url)


def firing_alerts(prometheus_url: str, timeout: float = 2.0) -> list[dict]:
    return fetch_firing(prometheus_url, timeout) or []


API_MAX_BYTES = 4 * 1024 * 1024   # an /api/v1/alerts or /api/v1/query answer: at most this many bytes
API_DEADLINE = 5.0                # seconds for a whole /api/v1/alerts fetch (connect, headers, body)
_CHUNK = 65536


def _read_capped(url: str, timeout: float, max_bytes: int, end: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        read = getattr(response, "read1", response.read)   # read1: one socket read, so the deadline is seen
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() > end:
                raise TimeoutError("no complete answer in time")
            chunk = read(_CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > max_bytes:
                raise ValueError(f"answer larger than {max_bytes} bytes")
            chunks.append(chunk)


def bounded_get(url: str, timeout: float, max_bytes: int, deadline: float) -> bytes:
    """GET ``url``: at most ``max_bytes`` of body (more is a ValueError) within ``deadline`` seconds in all
    (a TimeoutError past it, whatever the server drips); ``timeout`` bounds each socket operation. The fetch
    runs in a daemon thread, so even a server dripping its headers cannot hold the caller past ``deadline``;
    that thread stops at its next read after the deadline."""
    end = time.monotonic() + deadline
    result: dict[str, object] = {}

    def work() -> None:
        try:
            result["body"] = _read_capped(url, min(timeout, deadline), max_bytes, end)
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            result["error"] = exc

    worker = threading.Thread(target=work, name="agentvigil-fetch", daemon=True)
    worker.start()
    worker.join(deadline + 0.5)
    if worker.is_alive():
        raise TimeoutError(f"no complete answer within {deadline:g} s")
    error = result.get("error")
    if isinstance(error, (OSError, ValueError)):
        raise error
    if error is not None:   # http.client's own errors (a bad status line, too many headers): not OSError
        raise ValueError(f"bad answer: {type(error).__name__}: {error}")
    body = result.get("body")
    return body if isinstance(body, bytes) else b""


def fetch_firing(prometheus_url: str, timeout: float = 2.0, deadline: float = API_DEADLINE) -> list[dict] | None:
    """Firing alerts from Prometheus's API; None when it does not answer or answers nonsense (not JSON,
    nested too deeply, over API_MAX_BYTES, not complete within ``deadline`` seconds)."""
    try:
        body = json.loads(bounded_get(prometheus_url.rstrip("/") + "/api/v1/alerts", timeout, API_MAX_BYTES,
                                      deadline))
        alerts = body["data"]["alerts"]
    except (OSError, ValueError, KeyError, TypeError, IndexError, RecursionError):
        return None
    if not isinstance(alerts, list):
        return None
    return [a for a in alerts if isinstance(a, dict) and a.get("state") == "firing"
            and isinstance(a.get("labels"), dict)]


def _port(asked: int, stack: Stack, what: str) -> int:
    if asked and port_free(asked):
        return asked
    port = free_port()
    if asked:
        stack.notes.append(f"port {asked} is taken, {what} uses {port}")
    return port


def start(metrics_port: int, prometheus_port: int = 9090, alertmanager_port: int = 9093,
          rules: str | None = None) -> tuple[Stack | None, str]:
    """Start Alertmanager then Prometheus; wait (bounded) until both answer. Returns (stack, "") or
    (None, why not)."""
    prometheus = find_binary("prometheus")
    alertmanager = find_binary("prometheus-alertmanager", "alertmanager")
    if prometheus is None or alertmanager is None:
        missing = [pkg for pkg, path in (("prometheus", prometheus), ("prometheus-alertmanager", alertmanager))
                   if path is None]
        return None, f"{' and '.join(missing)} not installed (Debian: apt-get install {' '.join(missing)})"
    rule_file = find_rules(rules)
    if rule_file is None:
        return None, f"no rule file {rules or RULES_PROFILE} (python alert_rules/generate.py --profile demo)"
    stack = Stack(tempfile.mkdtemp(prefix="agentvigil-demo-stack-"), 0, 0)
    stack.rules = rule_file
    try:
        stack.alertmanager_port = _port(alertmanager_port, stack, "Alertmanager")
        am_config = {"route": {"receiver": "demo", "group_by": ["alertname", "agent"], "group_wait": "1s",
                               "group_interval": "5s", "repeat_interval": "1h"},
                     "receivers": [{"name": "demo"}]}  # no notifications leave the machine
        Path(stack.workdir, "alertmanager.yml").write_text(json.dumps(am_config))  # JSON is YAML: no pyyaml
        stack.spawn("alertmanager", [alertmanager, "--config.file=alertmanager.yml", "--storage.path=am-data",
                                     f"--web.listen-address=127.0.0.1:{stack.alertmanager_port}",
                                     "--cluster.listen-address=", "--log.level=warn"])
        stack.prometheus_port = _port(prometheus_port, stack, "Prometheus")
        prom_config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rule_file)],
            "alerting": {"alertmanagers": [
                {"static_configs": [{"targets": [f"127.0.0.1:{stack.alertmanager_port}"]}]}]},
            "scrape_configs": [{"job_name": "agentvigil",
                                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
        }
        Path(stack.workdir, "prometheus.yml").write_text(json.dumps(prom_config))
        stack.spawn("prometheus", [prometheus, "--config.file=prometheus.yml", "--storage.tsdb.path=prom-data",
                                   f"--web.listen-address=127.0.0.1:{stack.prometheus_port}",
                                   "--rules.alert.resend-delay=1s", "--log.level=warn"])
        deadline = time.monotonic() + READY_TIMEOUT
        for name, url in (("alertmanager", stack.alertmanager_url + "/-/ready"),
                          ("prometheus", stack.prometheus_url + "/-/ready")):
            while not _ready(url):
                dead = [p for p in stack.processes if p.poll() is not None]
                if dead or time.monotonic() > deadline:
                    why = stack.log_tail(name, 2).replace("\n", " | ") or "no answer"
                    stack.stop()
                    return None, f"{name} did not start ({why})"
                time.sleep(0.2)
    except OSError as exc:
        stack.stop()
        return None, f"cannot start Prometheus/Alertmanager: {exc}"
    return stack, ""
