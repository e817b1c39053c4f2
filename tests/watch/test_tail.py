import os
import random
import threading
import time

from agentvigil import tail
from agentvigil.tail import Tailer, Waker

from .conftest import append


def test_file_that_does_not_exist_yet(tmp_path):
    path = tmp_path / "later" / "events.ndjson"
    t = Tailer(str(path))
    assert t.read() == [] and not t.exists
    path.parent.mkdir()
    append(path, "a\nb\n")
    assert t.read() == [b"a", b"b"]
    assert t.read() == []


def test_partial_lines_wait_for_their_newline(tmp_path):
    path = tmp_path / "e.ndjson"
    t = Tailer(str(path))
    append(path, '{"a":')
    assert t.read() == []
    append(path, '1}\n{"b"')
    assert t.read() == [b'{"a":1}']
    append(path, ':2}\n')
    assert t.read() == [b'{"b":2}']


def test_truncation_restarts_from_zero(tmp_path):
    path = tmp_path / "e.ndjson"
    append(path, "one\ntwo\npart")
    t = Tailer(str(path))
    assert t.read() == [b"one", b"two"]
    with open(path, "w") as fh:
        fh.write("x\n")
    assert t.read() == [b"x"]
    assert t.truncations == 1
    append(path, "y\n")
    assert t.read() == [b"y"]


def test_rotation_drains_old_file_then_follows_new(tmp_path, monkeypatch):
    monkeypatch.setattr(tail, "ROTATION_GRACE", 0.05)
    path = tmp_path / "e.ndjson"
    append(path, "1\n")
    t = Tailer(str(path))
    assert t.read() == [b"1"]
    old = open(path, "a")                       # a writer that still holds the old file
    os.rename(path, tmp_path / "e.ndjson.1")
    old.write("2\n")
    old.flush()
    append(path, "3\n")
    assert t.read() == [b"2", b"3"]
    old.write("4\n")                            # late write to the rotated file, within the grace
    old.flush()
    assert t.read() == [b"4"]
    old.write("5-unterminated")
    old.flush()
    time.sleep(0.06)
    assert t.read() == [b"5-unterminated"]      # passed on (the decoder counts it as truncated)
    old.close()
    append(path, "6\n")
    assert t.read() == [b"6"]
    assert t.rotations == 1


def test_concurrent_writer_every_line_exactly_once(tmp_path):
    path = tmp_path / "e.ndjson"
    t = Tailer(str(path))
    total = 3000
    rng = random.Random(1)

    def writer():
        with open(path, "a") as fh:
            buf = "".join(f"line-{i}\n" for i in range(total))
            pos = 0
            while pos < len(buf):                 # random chunk sizes: lines split across writes
                n = rng.randint(1, 50)
                fh.write(buf[pos:pos + n])
                fh.flush()
                pos += n

    thread = threading.Thread(target=writer)
    thread.start()
    got = []
    deadline = time.monotonic() + 10
    while len(got) < total and time.monotonic() < deadline:
        got.extend(t.read())
    thread.join()
    got.extend(t.read())
    assert got == [f"line-{i}".encode() for i in range(total)]


def test_waker_inotify_wakes_on_append(tmp_path):
    w = Waker()
    assert w.inotify, "inotify should be available on Linux"
    assert w.watch(str(tmp_path))
    assert w.wait(0.01) is False
    timer = threading.Timer(0.05, append, args=(tmp_path / "e.ndjson", "x\n"))
    start = time.perf_counter()
    timer.start()
    assert w.wait(2.0) is True
    assert time.perf_counter() - start < 1.0
    w.close()


def test_waker_polling_fallback(tmp_path):
    w = Waker(use_inotify=False)
    assert not w.inotify
    assert w.watch(str(tmp_path))
    start = time.perf_counter()
    w.wait(1.0)
    assert time.perf_counter() - start < 0.2     # returns after one poll interval
    assert not w.watch(str(tmp_path / "missing"))


def test_truncate_and_refill_past_the_offset_is_seen_by_the_first_bytes(tmp_path):
    """Paused reader, file truncated in place and refilled beyond the old offset: same inode, bigger size.
    Size alone misses it (2,991 of 18,300 lines lost); the file's first bytes do not match any more."""
    path = tmp_path / "e.ndjson"
    first = [f'{{"n":{i},"gen":1}}' for i in range(100)]
    append(path, "".join(x + "\n" for x in first))
    t = Tailer(str(path))
    assert t.read() == [x.encode() for x in first]
    inode = os.stat(path).st_ino
    second = [f'{{"n":{i},"gen":2}}' for i in range(300)]
    with open(path, "r+") as fh:                       # in place: the inode stays
        fh.truncate(0)
        fh.write("".join(x + "\n" for x in second))
    assert os.stat(path).st_ino == inode and os.path.getsize(path) > t.offset
    assert t.read() == [x.encode() for x in second]   # every line of the refill, none skipped
    assert t.truncations == 1


def test_rest_hands_over_a_final_unterminated_line_once(tmp_path):
    path = tmp_path / "e.ndjson"
    append(path, '{"a":1}\n{"b":2}')
    t = Tailer(str(path))
    assert t.read() == [b'{"a":1}']
    assert t.rest() == [b'{"b":2}']
    assert t.rest() == [] and t.read() == []


def kernel_watches(waker):
    """The inotify watches the kernel holds for this Waker (its fdinfo), not our own bookkeeping."""
    with open(f"/proc/self/fdinfo/{waker._fd}") as fh:
        return sum(1 for text in fh if text.startswith("inotify wd:"))


def test_waker_unwatch_drops_the_kernel_watch(tmp_path):
    w = Waker()
    try:
        dirs = [tmp_path / f"s{i}" for i in range(200)]
        for d in dirs:                       # many short sessions: the watches do not pile up
            d.mkdir()
            assert w.watch(str(d))
            w.unwatch(str(d))
        assert kernel_watches(w) == 0
        a, b = tmp_path / "a", tmp_path / "b"
        a.mkdir()
        b.mkdir()
        assert w.watch(str(a)) and w.watch(str(b)) and kernel_watches(w) == 2
        w.unwatch(str(a))
        w.unwatch(str(a))                    # twice: a no-op
        assert kernel_watches(w) == 1
        while w.wait(0.05):                  # what is queued so far (our removals' IN_IGNORED among it)
            pass
        append(a / "e.ndjson", "x\n")
        assert w.wait(0.2) is False          # no longer wakes for a
        append(b / "e.ndjson", "x\n")
        assert w.wait(2.0) is True
        assert w.inotify                     # still on inotify, not fallen back to polling
    finally:
        w.close()


def test_waker_survives_a_watch_the_kernel_dropped(tmp_path):
    """A removed directory: the kernel drops its watch itself (IN_IGNORED). Unwatching it then is harmless,
    and the directory made again under the same name is watched again."""
    import shutil

    w = Waker()
    try:
        d, other = tmp_path / "s", tmp_path / "other"
        d.mkdir()
        other.mkdir()
        assert w.watch(str(d)) and w.watch(str(other))
        shutil.rmtree(d)
        assert w.wait(2.0) is True           # the removal (and IN_IGNORED) is read
        assert kernel_watches(w) == 1
        w.unwatch(str(d))                    # already gone in the kernel: nothing to do, no error
        assert kernel_watches(w) == 1
        d.mkdir()
        assert w.watch(str(d)) and kernel_watches(w) == 2   # the new directory is watched, not assumed
        while w.wait(0.05):                  # drain the wake-ups so far
            pass
        append(d / "e.ndjson", "x\n")
        assert w.wait(2.0) is True
        w.unwatch(str(d))
        shutil.rmtree(d)                     # its IN_IGNORED comes after our own removal: other stays
        w.wait(0.2)
        assert kernel_watches(w) == 1
        append(other / "e.ndjson", "x\n")
        assert w.wait(2.0) is True and w.inotify
    finally:
        w.close()


def test_waker_unwatch_when_polling(tmp_path):
    w = Waker(use_inotify=False)
    assert w.watch(str(tmp_path))
    w.unwatch(str(tmp_path))
    w.unwatch(str(tmp_path / "never"))
    assert w.watch(str(tmp_path))
    w.close()
