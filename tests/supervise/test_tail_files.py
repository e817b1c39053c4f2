"""What the child does to its own session files never stops supervision: an events.ndjson replaced by a
directory, a FIFO or device for events.ndjson or meta.json, or a line without its newline far past the line
cap are counted (once), logged, and supervision goes on. What could hang runs in a subprocess with a timeout."""

import json
import os
import subprocess
import sys
import textwrap
import time

from agentvigil.supervise.tail import MAX_READ, SessionTail
from agentvigil.tail import MAX_LINE_BYTES

TIMEOUT = 60


def session(root, name="s1", pid=None):
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "meta.json").write_text(json.dumps({"pid": pid or os.getpid(), "started_at": time.time(),
                                                     "agent": "a"}))
    return directory


def heartbeat(ts=1.0):
    return json.dumps({"event_type": "heartbeat", "ts": ts, "status": "idle"}) + "\n"


def test_events_file_replaced_by_a_directory_is_counted_once_and_polling_goes_on(tmp_path, caplog):
    directory = session(tmp_path)
    events = directory / "events.ndjson"
    events.write_text(heartbeat(1.0))
    tail = SessionTail(str(tmp_path), os.getpid(), time.time() - 10)
    assert [e.ts for e in tail.poll()] == [1.0]
    with open(events, "a") as fh:
        fh.write(heartbeat(2.0))
    os.unlink(events)
    os.mkdir(events)
    assert [e.ts for e in tail.poll()] == [2.0]       # what the old file still had
    assert tail.poll() == [] and tail.poll(final=True) == []   # no IsADirectoryError, ever
    assert tail.errors_by_reason == {"not_regular_file": 1}
    assert sum("not following session s1" in r.getMessage() for r in caplog.records) == 1
    other = session(tmp_path, "s2")                   # a later session of the child is still followed
    (other / "events.ndjson").write_text(heartbeat(3.0))
    assert [e.ts for e in tail.poll()] == [3.0]
    tail.close()


def test_a_fifo_events_or_meta_file_does_not_block_the_poll(tmp_path):
    events_fifo = session(tmp_path, "s1")
    os.mkfifo(events_fifo / "events.ndjson")
    meta_fifo = tmp_path / "s2"
    meta_fifo.mkdir()
    os.mkfifo(meta_fifo / "meta.json")
    (meta_fifo / "events.ndjson").write_text(heartbeat())
    code = """
        import os, sys, time
        from agentvigil.supervise.tail import SessionTail
        tail = SessionTail(sys.argv[1], int(sys.argv[2]), time.time() - 10)   # the pid meta.json names
        tail.poll(); tail.poll(); tail.poll(final=True)
        print(dict(tail.errors_by_reason))
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(tmp_path), str(os.getpid())],
                          capture_output=True,
                          text=True, timeout=TIMEOUT)   # killed (by its pid) if it hangs
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "{'not_regular_file': 2}"
    assert "not following session s1" in proc.stderr and "not following session s2" in proc.stderr


def test_a_huge_unterminated_line_is_read_in_bounded_steps_and_counted(tmp_path):
    directory = session(tmp_path)
    events = directory / "events.ndjson"
    with open(events, "wb") as fh:
        fh.write(heartbeat(1.0).encode() + b'{"event_type":"heartbeat","ts":2,"status":"')
        for _ in range(MAX_READ // (1 << 20) + MAX_LINE_BYTES // (1 << 20) + 4):
            fh.write(b"x" * (1 << 20))
    tail = SessionTail(str(tmp_path), os.getpid(), time.time() - 10)
    assert [e.ts for e in tail.poll()] == [1.0]
    tailer = next(iter(tail._followed.values()))
    assert tailer.more and tailer.offset <= MAX_READ + (1 << 20)      # one poll read one bounded step
    assert len(tailer._part.buf) == 0 and tail.skipped_by_reason == {"line_too_long": 1}
    with open(events, "ab") as fh:
        fh.write(b'"}\n' + heartbeat(3.0).encode())
    got = []
    for _ in range(10):
        got.extend(e.ts for e in tail.poll())
        if not tailer.more:
            break
    assert got == [3.0] and tail.skipped_by_reason == {"line_too_long": 1}
    tail.close()


def test_after_the_child_exits_the_rest_is_read_beyond_one_step(tmp_path):
    directory = session(tmp_path)
    line = heartbeat(5.0).encode()
    count = (MAX_READ * 2) // len(line) + 10
    with open(directory / "events.ndjson", "wb") as fh:
        fh.write(line * count)
    tail = SessionTail(str(tmp_path), os.getpid(), time.time() - 10)
    assert len(tail.poll(final=True)) == count and tail.skipped == 0
    tail.close()
