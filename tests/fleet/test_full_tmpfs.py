"""A full multiprocess tmpfs must not kill the agent: prometheus_client alone dies of SIGBUS there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import pytest
from fleet_support import env_with_src


@pytest.fixture
def full_tmpfs(tmp_path):
    """A 2 MiB tmpfs filled up but for a few KiB (needs mount rights; skipped without them)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        (mnt / "raw").mkdir()
        (mnt / "ours").mkdir()
        with open(mnt / "filler", "wb", buffering=0) as fh:
            try:
                for _ in range(10_000):  # bounded: 40 MiB would be far past the 2 MiB size
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


AGENT = """
import agentvigil
from agentvigil import multiprocess
from agentvigil.metrics import default_metrics
print("has-room", multiprocess.check_space(), flush=True)
monitor = agentvigil.Monitor("tmpfs-agent", heartbeat=False)
for i in range(200):  # a new tool series each time: the files must grow
    with monitor.run() as run:
        with run.tool_call(f"tool-{i}", {}):
            pass
print("survived", flush=True)
"""

RAW = """
from prometheus_client import Counter
c = Counter("raw", "raw", ["k"])
for i in range(20000):
    c.labels(str(i) * 4).inc()
print("survived", flush=True)
"""


def _run(code: str, directory: str) -> subprocess.CompletedProcess:
    env = env_with_src(PROMETHEUS_MULTIPROC_DIR=directory)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=50)


@pytest.mark.e2e
def test_full_tmpfs_is_reported_and_the_agent_survives(full_tmpfs):
    raw_dir, our_dir = full_tmpfs / "raw", full_tmpfs / "ours"
    # the control: prometheus_client's sparse mmap files on the same full tmpfs kill the process
    raw = _run(RAW, str(raw_dir))
    assert raw.returncode == -signal.SIGBUS, (raw.returncode, raw.stderr[-500:])
    for name in os.listdir(raw_dir):
        os.remove(raw_dir / name)

    ours = _run(AGENT, str(our_dir))
    assert ours.returncode == 0, ours.stderr[-2000:]
    assert "has-room False" in ours.stdout and "survived" in ours.stdout
    assert "has" in ours.stderr and "bytes free" in ours.stderr  # reported, naming the directory's free space
    assert str(our_dir) in ours.stderr


def test_check_space_counts_a_nearly_full_directory(tmp_path, monkeypatch, caplog):
    from agentvigil import multiprocess
    from agentvigil.metrics import default_metrics

    errors = default_metrics().internal_errors.labels("multiprocess")
    before = errors._value.get()
    monkeypatch.setattr(multiprocess, "free_bytes", lambda path: 1024)
    directory = str(tmp_path / uuid.uuid4().hex)
    os.mkdir(directory)
    assert multiprocess.check_space(directory) is False
    assert errors._value.get() == before + 1
    assert any("1024 bytes free" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(multiprocess, "free_bytes", lambda path: 10 * multiprocess.MIN_FREE_BYTES)
    assert multiprocess.check_space(directory) is True
