"""The tailer's bounds: a line that never gets its newline is not buffered whole (line_too_long, counted), a
read can be bounded per call, and only regular files are read: a FIFO, device or directory where
events.ndjson, meta.json or .active-session should be is refused at once instead of blocking or reading
forever. What could hang runs in a subprocess with a timeout."""

import json
import os
import random
import subprocess
import sys
import textwrap

import pytest

from agentvigil import tail
from agentvigil.tail import MAX_LINE_BYTES, NotRegularFile, Tailer

from .conftest import append, write_meta

TIMEOUT = 60   # seconds a guarded subprocess gets (a hang before the fix; a fraction of a second after)


def run_guarded(code: str, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter; subprocess.run kills that one process (by its pid) on timeout."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=timeout)


def test_a_line_longer_than_the_cap_is_dropped_up_to_its_newline_and_counted(tmp_path):
    path = tmp_path / "e.ndjson"
    with open(path, "wb") as fh:
        fh.write(b'{"a":1}\n{"huge":"')
    t = Tailer(str(path))
    assert t.read() == [b'{"a":1}']
    with open(path, "ab") as fh:
        for _ in range(MAX_LINE_BYTES // (1 << 20) + 2):       # past the cap, still no newline
            fh.write(b"x" * (1 << 20))
    assert t.read() == []
    assert t.skipped["line_too_long"] == 1
    assert len(t._part.buf) == 0 and t._part.dropping           # nothing of it kept
    with open(path, "ab") as fh:
        fh.write(b"x" * 1000 + b'"}\n{"b":2}\n{"c":')
    assert t.read() == [b'{"b":2}']                             # its end dropped, the next line whole
    assert t.skipped["line_too_long"] == 1                      # counted once
    append(path, "3}\n")
    assert t.read() == [b'{"c":3}']
    assert t.rest() == []


def test_a_line_of_exactly_the_cap_is_kept_and_one_byte_more_is_not(tmp_path):
    path = tmp_path / "e.ndjson"
    exact = b"y" * MAX_LINE_BYTES
    with open(path, "wb") as fh:
        fh.write(exact + b"\n" + b"z" * (MAX_LINE_BYTES + 1) + b"\nok\n")
    t = Tailer(str(path))
    assert t.read() == [exact, b"ok"]
    assert t.skipped == {"line_too_long": 1}


def test_an_unterminated_line_past_the_cap_is_not_handed_over_at_the_end(tmp_path):
    path = tmp_path / "e.ndjson"
    with open(path, "wb") as fh:
        fh.write(b"a\n" + b"q" * (MAX_LINE_BYTES + 10))
    t = Tailer(str(path))
    assert t.read() == [b"a"] and t.rest() == [] and t.skipped["line_too_long"] == 1


def test_lines_are_the_same_whatever_the_chunk_boundaries(tmp_path, monkeypatch):
    rng = random.Random(7)
    lines = [b"x" * rng.choice([0, 1, 5, 40, 300, 5000]) + str(i).encode() for i in range(400)]
    data = b"\n".join(lines) + b"\ntail"
    for chunk in (1, 7, 64, 4096):
        monkeypatch.setattr(tail, "_CHUNK", chunk)
        path = tmp_path / f"e{chunk}.ndjson"
        t = Tailer(str(path))
        got, pos = [], 0
        while pos < len(data):
            step = rng.randint(1, 3000)
            with open(path, "ab") as fh:
                fh.write(data[pos:pos + step])
            pos += step
            got.extend(t.read())
        assert got == lines and t.rest() == [b"tail"] and not t.skipped


def test_max_read_bounds_one_read_and_more_says_data_is_left(tmp_path):
    path = tmp_path / "e.ndjson"
    with open(path, "wb") as fh:
        fh.write(b"".join(b'{"n":%d}\n' % i for i in range(300_000)))   # ~3.2 MB
    t = Tailer(str(path), max_read=1 << 20)
    first = t.read()
    assert t.more and 0 < len(first) < 300_000
    got = list(first)
    reads = 1
    while t.more:
        got.extend(t.read())
        reads += 1
        assert reads < 100
    assert got == [b'{"n":%d}' % i for i in range(300_000)]
    unbounded = Tailer(str(path))
    assert len(unbounded.read()) == 300_000 and not unbounded.more


def test_a_fifo_events_file_is_refused_not_opened_for_a_blocking_read(tmp_path):
    path = tmp_path / "events.ndjson"
    os.mkfifo(path)
    proc = run_guarded("""
        import sys
        from agentvigil.tail import Tailer, NotRegularFile
        t = Tailer(sys.argv[1])
        for _ in range(2):   # refused for good: the same error every time
            try:
                t.read()
            except NotRegularFile as exc:
                print(exc.reason, exc)
    """, str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["not_regular_file not a regular file (a FIFO); not followed"] * 2


def test_events_file_symlinked_to_dev_zero_is_refused(tmp_path):
    path = tmp_path / "events.ndjson"
    os.symlink("/dev/zero", path)
    proc = run_guarded("""
        import sys
        from agentvigil.tail import Tailer, NotRegularFile
        try:
            Tailer(sys.argv[1]).read()
        except NotRegularFile as exc:
            print(exc)
    """, str(path))
    assert proc.stdout.strip() == "not a regular file (a character device); not followed", proc.stderr


def test_a_file_replaced_by_a_directory_hands_over_its_lines_then_is_refused(tmp_path):
    path = tmp_path / "events.ndjson"
    append(path, "a\n")
    t = Tailer(str(path))
    assert t.read() == [b"a"]
    append(path, "b\n")
    os.unlink(path)
    os.mkdir(path)
    assert t.read() == [b"b"]                 # what the old file still had
    with pytest.raises(NotRegularFile, match="a directory"):
        t.read()
    t.close()


@pytest.mark.parametrize("what", ["events", "meta", "active"])
def test_watch_does_not_hang_on_a_fifo_session_file(tmp_path, what):
    root = tmp_path / "sessions"
    session = root / "s1"
    write_meta(str(session))
    (session / "events.ndjson").write_text("")
    target = str(root if what == "active" else session)
    if what == "events":
        os.unlink(session / "events.ndjson")
        os.mkfifo(session / "events.ndjson")
    elif what == "meta":
        os.unlink(session / "meta.json")
        os.mkfifo(session / "meta.json")
    else:
        os.mkfifo(root / ".active-session")
    proc = subprocess.run([sys.executable, "-m", "agentvigil", "watch", target, "--timeout", "1s",
                           "--status-every", "0"], capture_output=True, text=True, timeout=TIMEOUT)
    if what == "events":
        assert proc.returncode == 1
        assert "events.ndjson: not a regular file (a FIFO); not followed" in proc.stderr
    else:                                      # read as a missing / broken file: the session is still watched
        assert proc.returncode == 0, proc.stderr
        assert "ended (stopped watching)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_read_meta_and_active_session_refuse_fifos_and_oversized_files(tmp_path):
    root = tmp_path / "root"
    (root / "s1").mkdir(parents=True)
    os.mkfifo(root / "s1" / "meta.json")
    (root / "s1" / "events.ndjson").write_text("")
    os.mkfifo(root / ".active-session")
    proc = run_guarded("""
        import sys
        from agentvigil.sessions import read_meta
        from agentvigil.watch.sources import _active_session
        print(read_meta(sys.argv[1] + "/s1"), _active_session(sys.argv[1]))
    """, str(root))
    assert proc.stdout.split() == ["None", "None"], proc.stderr
    from agentvigil.watch.sources import MAX_ACTIVE_BYTES, _active_session
    os.unlink(root / ".active-session")
    (root / ".active-session").write_text("s1" + " " * MAX_ACTIVE_BYTES)     # over the bound: ignored
    assert _active_session(str(root)) is None
    (root / ".active-session").write_text("s1\n")
    assert _active_session(str(root)) is not None


def test_watch_counts_a_line_too_long_among_the_sessions_skips(tmp_path):
    session = tmp_path / "s1"
    write_meta(str(session))
    good = json.dumps({"event_type": "heartbeat", "ts": 1.7e9, "agent_id": "a", "session_id": "s1"})
    with open(session / "events.ndjson", "w") as fh:
        fh.write(good + "\n" + "x" * (MAX_LINE_BYTES + 10) + "\n" + good + "\n")
    proc = subprocess.run([sys.executable, "-m", "agentvigil", "watch", str(session), "--no-follow", "--json"],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert "Traceback" not in proc.stderr
    ends = [json.loads(line) for line in proc.stdout.splitlines() if '"end"' in line]
    assert ends and ends[-1]["skipped"] == {"line_too_long": 1} and ends[-1]["events"] == 2, proc.stdout[-2000:]
