"""Command output a person can read: `replay` prints a short table (detections per detector per session) and
its summary on stdout, one line per detection only with -v or --json; `watch` with no path follows the newest
live session and says which."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import agentvigil
from agentvigil.demo import run_demo
from agentvigil.watch.sources import choose_session

from .conftest import cli_env


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("sessions")
    run_demo(duration=6, port=None, speed=10, record_dir=str(directory), seed=7, status_every=0)
    return directory


def replay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentvigil", "replay", *args], capture_output=True, text=True,
                          timeout=120, env=cli_env())


def test_replay_prints_a_table_by_default(sessions: Path) -> None:
    result = replay(str(sessions))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = lines[0].split()
    assert header[:2] == ["session", "agent"] and "repeat_call" in header and "breaker" in header
    rows = {line.split()[1]: dict(zip(header[2:], map(int, line.split()[2:]), strict=True)) for line in lines[1:-1]}
    assert rows["research-agent"]["repeat_call"] >= 1 and rows["billing-agent"]["breaker"] >= 1
    assert "support-bot" not in rows and "triage-bot" not in rows    # sessions without detections left out
    total = sum(sum(row.values()) for row in rows.values())
    assert lines[-1].startswith("agentvigil replay: 6 session(s)") and f", {total} detections" in lines[-1]
    assert len(lines) <= 8                                          # one line per session with detections


def test_replay_verbose_and_json_list_every_detection(sessions: Path) -> None:
    table = replay(str(sessions)).stdout.splitlines()
    total = int(table[-1].split(" detections")[0].rsplit(" ", 1)[1])
    verbose = replay(str(sessions), "-v").stdout.splitlines()
    assert len(verbose) == total + len(table)                       # each detection, then the same table
    assert verbose[total:] == table
    as_json = replay(str(sessions), "--json")
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert len(records) == total and all("detector" in r for r in records)
    assert "agentvigil replay: 6 session(s)" in as_json.stderr     # stdout stays pure NDJSON


def test_watch_follows_the_newest_live_session_and_says_which(tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    monitor = agentvigil.Monitor("live-agent", record_dir=str(root), heartbeat=False)
    try:
        with monitor.run():
            pass
        monitor.flush()
        (live,) = list(root.iterdir())
        # a newer session whose process has exited (a finished `true`)
        finished = root / "20990101T000000-finished-agent-1"
        shutil.copytree(live, finished)
        meta = json.loads((finished / "meta.json").read_text())
        probe = subprocess.Popen(["true"])
        probe.wait()
        meta.update(agent="finished-agent", session_id=finished.name, pid=probe.pid,
                    started_at=meta["started_at"] + 60)
        (finished / "meta.json").write_text(json.dumps(meta))

        chosen, why = choose_session(str(root))
        assert chosen is not None and chosen.session_id == live.name and "newest of 1 live" in why
        result = subprocess.run([sys.executable, "-m", "agentvigil", "watch", str(root), "--no-follow"],
                                capture_output=True, text=True, timeout=60, env=cli_env())
        announce = [line for line in result.stderr.splitlines() if "following" in line]
        assert announce == [f"agentvigil watch: following {live.name} (agent live-agent; the newest of 1 live "
                            "session(s); --all for every session)"], result.stderr
    finally:
        monitor.close()
    # once nothing is live, the newest finished session, saying so
    meta = json.loads((live / "meta.json").read_text())
    meta["pid"] = probe.pid
    (live / "meta.json").write_text(json.dumps(meta))
    chosen, why = choose_session(str(root))
    assert chosen is not None and chosen.session_id == finished.name and why.startswith("no live session")
