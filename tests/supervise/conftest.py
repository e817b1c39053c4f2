import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agentvigil.supervise import SupervisePolicy, Supervisor

HERE = Path(__file__).parent
CHILD = HERE / "child_agent.py"

# Time compressed: heartbeats every 0.1 s, everything else in seconds.
FAST = dict(port=0, poll_interval=0.05, heartbeat_interval=0.1, liveness_timeout=1.0, startup_timeout=5.0,
            progress_timeout=1.0, cooldown=0.2, max_restarts=2, restart_window=60.0, stop_grace=1.0,
            min_cycles=3, watchdog=False)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


class Running:
    """A Supervisor on a thread; joins (bounded) and kills leftovers at the end of the test."""

    def __init__(self, supervisor: Supervisor):
        self.supervisor = supervisor
        self.exit_code = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.exit_code = self.supervisor.run()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.supervisor.port}{path}"

    def metric(self, name: str, **labels) -> float:
        value = self.supervisor.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def journal(self) -> list[dict]:
        path = Path(self.supervisor.journal.path)
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def join(self, timeout: float) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"supervisor still running after {timeout}s"
        return self.exit_code


@pytest.fixture
def supervise(tmp_path):
    started: list[Running] = []
    env = dict(os.environ, AGENTVIGIL_PRICES_FILE=str(_prices(tmp_path)), OTEL_SDK_DISABLED="true")

    def start(behaviour: str, **overrides) -> Running:
        values = dict(FAST, record_dir=str(tmp_path / "rec"), agent="child-agent")
        values.update(overrides)
        policy = SupervisePolicy().with_values(values)
        running = Running(Supervisor([sys.executable, str(CHILD), behaviour], policy, registry=CollectorRegistry(),
                                     environ=env))
        started.append(running)
        return running

    yield start
    for running in started:
        running.supervisor.request_stop()
        running.supervisor.request_stop()      # second request: SIGKILL, no grace
        running.thread.join(10)
        running.supervisor.close()


def _prices(tmp_path: Path) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"fake-model": {"input": 1.0, "output": 2.0}}))
    return path


class WebhookReceiver:
    def __init__(self):
        self.bodies: list = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def webhook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.httpd.shutdown()
    receiver.httpd.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def alertmanager(tmp_path):
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.skip("needs the Debian package prometheus-alertmanager")
    config = tmp_path / "am.yml"
    config.write_text("route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n")
    port = free_port()
    storage = tempfile.mkdtemp(dir=tmp_path)
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.path={storage}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.poll() is None and http_get(url + "/-/ready")[0] == 200, 20, "alertmanager ready",
                   interval=0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
