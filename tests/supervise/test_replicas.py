"""supervise --replicas N: N children, each with the same restart policy, health and probes of its own."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import CHILD, http_get, wait_until


def test_replicas_each_have_a_child_probes_and_journal(tmp_path):
    record = tmp_path / "rec"
    env = dict(os.environ, OTEL_SDK_DISABLED="true")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentvigil", "supervise", "--replicas", "2", "--port", "0", "--agent", "fleet",
         "--record-dir", str(record), "--heartbeat-interval", "0.1", "--poll-interval", "0.05",
         "--liveness-timeout", "5s", "--startup-timeout", "20s", "--watchdog", "false", "--",
         sys.executable, str(CHILD), "healthy"],
        stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while len([line for line in lines if "replica" in line]) < 2 and time.monotonic() < deadline:
            line = proc.stderr.readline()   # type: ignore[union-attr]
            if not line:
                break
            lines.append(line)
        ports = [int(m.group(1)) for line in lines if (m := re.search(r"replica \d+\): .*:(\d+)$", line.strip()))]
        assert len(ports) == 2 and ports[0] != ports[1], lines
        for port in ports:
            wait_until(lambda port=port: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 30,
                       f"replica on {port} ready")
            status, body = http_get(f"http://127.0.0.1:{port}/metrics")
            assert status == 200 and 'agent_supervisor_child_up{agent="fleet"} 1.0' in body
        journals = sorted(p.name for p in record.glob("supervisor-*.ndjson"))
        assert journals == ["supervisor-fleet-0.ndjson", "supervisor-fleet-1.ndjson"]
        pids = set()
        for name in journals:
            for line in Path(record / name).read_text().splitlines():
                record_ = json.loads(line)
                if record_.get("type") == "start":
                    pids.add(record_.get("pid"))
        assert len(pids) >= 2            # two different children
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0
