"""runaway's state file is read only if it is a regular file of at most MAX_STATE_BYTES: a FIFO or device is
never opened for a blocking read (watch used to hang before its first event), a larger file is not read into
memory. Either is counted as an unreadable state file and is not replaced by the next write."""

import os
import stat
import subprocess
import sys
import textwrap

from agentvigil.detectors.runaway import MAX_STATE_BYTES

from .test_runaway import run
from .test_runaway_state import detector, errors, written

TIMEOUT = 60


def test_a_fifo_state_file_is_refused_counted_and_left_in_place(tmp_path):
    path = tmp_path / "runaway.json"
    os.mkfifo(path)
    code = """
        import os, stat, sys
        from prometheus_client import REGISTRY
        from agentvigil.detectors.runaway import RunawayDetector, RunawayHistory, RunawayPolicy
        sys.path.insert(0, sys.argv[2])
        from detection.test_runaway import run
        p = RunawayPolicy(min_runs=20, state_file=sys.argv[1])
        det = RunawayDetector(p, RunawayHistory(p))
        run(det, "r0", 10)
        det.close()
        print(REGISTRY.get_sample_value("agentvigil_internal_errors_total", {"component": "runaway_state"}),
              stat.S_ISFIFO(os.stat(sys.argv[1]).st_mode), len(det.history._pending))
    """
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(path), tests_dir],
                          capture_output=True, text=True, timeout=TIMEOUT)   # killed (by its pid) if it hangs
    assert proc.returncode == 0, proc.stderr
    count, still_fifo, pending = proc.stdout.split()
    assert float(count) >= 2 and still_fifo == "True" and pending == "1"   # read and write both refused
    assert "not a regular file (a FIFO)" in proc.stderr


def test_a_state_file_over_the_bound_is_not_read_nor_replaced(tmp_path):
    path = tmp_path / "runaway.json"
    with open(path, "wb") as fh:
        fh.truncate(MAX_STATE_BYTES + 1)          # sparse: no disk, and never read into memory
    before = errors()
    det = detector(path)
    assert errors() == before + 1 and det.history.baselines == {}
    run(det, "r0", 10)
    written(det)
    det.close()
    assert os.path.getsize(path) == MAX_STATE_BYTES + 1 and stat.S_ISREG(os.stat(path).st_mode)
    assert errors() > before + 1 and len(det.history._pending) == 1    # kept for a write that can merge


def test_a_state_file_at_the_bound_is_still_read(tmp_path):
    path = tmp_path / "runaway.json"
    with open(path, "wb") as fh:
        fh.write(b'{"version":0}')
        fh.write(b" " * (MAX_STATE_BYTES - 13))
    before = errors()
    det = detector(path)
    assert errors() == before and det.history.baselines == {}   # read (an old version: ignored, not an error)
    det.close()
