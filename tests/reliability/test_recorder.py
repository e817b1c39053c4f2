"""The flight recorder under load, across fork, on a hostile umask, with bad events and a failing disk.

Real files in tmp_path; no timing assertions: waits are bounded polls, and every count is exact."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import stat
import threading
import time

import orjson
import pytest

from agentvigil import codec
from agentvigil.events import Event
from agentvigil.metrics import default_metrics
from agentvigil.replay import ReplayStats, replay
from agentvigil.sinks import recorder as recorder_mod
from agentvigil.sinks.recorder import BATCH_EVENTS, Recorder


def lines_of(path) -> list[bytes]:
    with open(path, "rb") as fh:
        return fh.read().splitlines()


def sessions(directory) -> dict[str, dict]:
    """session id -> meta.json of every session under ``directory``."""
    found = {}
    for entry in os.scandir(directory):
        with open(os.path.join(entry.path, "meta.json"), encoding="utf-8") as fh:
            found[entry.name] = json.load(fh)
    return found


def wait_until(predicate, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def dropped_metric() -> float:
    value = default_metrics().registry.get_sample_value("agentvigil_events_dropped_total", {"sink": "recorder"})
    return value or 0.0


class Gate:
    """Holds the recorder's writer inside its first write until released, and records every batch size."""

    def __init__(self, rec: Recorder):
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[int] = []
        self.pid = os.getpid()
        original = rec._append

        def gated(lines):
            self.batches.append(len(lines))
            if os.getpid() == self.pid and not self.release.is_set():
                self.entered.set()
                self.release.wait(30)
            original(lines)

        rec._append = gated

    def hold(self, rec: Recorder) -> None:
        rec.write(Event("heartbeat", 0.0, status="gate"))
        assert self.entered.wait(30), "writer never picked up the first event"


def test_sustained_tight_producer_file_grows_batch_by_batch_and_nothing_is_lost(tmp_path):
    total, chunk = 200_000, 10_000
    rec = Recorder(str(tmp_path), "tight", max_queue=total)  # room for everything: zero drops is certain
    batches = []
    original = rec._append
    rec._append = lambda lines: (batches.append(len(lines)), original(lines))[1]
    grew_before_end = False
    for start in range(0, total, chunk):
        for i in range(start, start + chunk):
            rec.write(Event("tool_end", 1.0, tool_name="search", status="ok", step_index=i, duration_ms=0.5))
        if not grew_before_end and start + chunk < total:
            # the producer is not finished: the writer must already be appending, not waiting for a lull
            grew_before_end = wait_until(lambda: os.path.getsize(rec.events_path) > 0, 5.0)
    rec.close(timeout=60)
    assert grew_before_end
    lines = lines_of(rec.events_path)
    assert rec.dropped == 0 and sum(rec.dropped_by_reason.values()) == 0
    assert len(lines) == total - rec.dropped
    assert [orjson.loads(line)["step_index"] for line in lines] == list(range(total))  # in order, no dupes
    assert max(batches) <= BATCH_EVENTS and len(batches) >= total // BATCH_EVENTS


def test_queue_stays_bounded_while_the_writer_is_stuck(tmp_path):
    before = dropped_metric()
    rec = Recorder(str(tmp_path), "stuck", max_queue=100)
    gate = Gate(rec)
    gate.hold(rec)  # the writer is now blocked in a write, like on a hung disk
    for i in range(1000):
        rec.write(Event("tool_end", float(i), step_index=i))
    assert len(rec._queue) == 100
    assert rec.dropped_by_reason == {"queue_full": 900} and rec.dropped == 900
    assert dropped_metric() - before == 900
    gate.release.set()
    rec.close(timeout=30)
    lines = lines_of(rec.events_path)
    assert len(lines) == 1 + 100
    assert [orjson.loads(line).get("step_index") for line in lines[1:]] == list(range(100))


def test_writes_after_close_are_counted_not_raised(tmp_path):
    rec = Recorder(str(tmp_path), "late")
    rec.write(Event("heartbeat", 1.0))
    rec.close()
    rec.write(Event("heartbeat", 2.0))
    rec.flush()
    assert rec.dropped_by_reason == {"closed": 1}
    assert len(lines_of(rec.events_path)) == 1


def _mp_child(rec: Recorder, n: int, conn) -> None:
    seen = []
    rec.on_reopen.append(seen.append)  # registered in the parent would be as good; this runs post-fork
    for i in range(n):
        rec.write(Event("tool_end", float(i), tool_name="child", step_index=i))
    rec.close(timeout=30)
    conn.send((rec.session_id, rec.parent_session_id, rec.dropped))
    conn.close()


def _mp_child_reopened(rec: Recorder, conn) -> None:
    conn.send(rec.session_id)
    conn.close()


def test_multiprocessing_fork_child_records_its_own_session(tmp_path):
    old_umask = os.umask(0)
    try:
        rec = Recorder(str(tmp_path), "forky")
    finally:
        os.umask(old_umask)
    parent_session = rec.session_id
    reopened = []
    rec.on_reopen.append(reopened.append)
    gate = Gate(rec)
    gate.hold(rec)
    for i in range(50):  # queued in the parent at fork time: they are the parent's, never the child's
        rec.write(Event("tool_end", float(i), tool_name="parent-before", step_index=i))
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_mp_child, args=(rec, 500, send))
    proc.start()
    send.close()
    assert recv.poll(60), "child sent nothing"
    child_session, child_parent, child_dropped = recv.recv()
    proc.join(60)
    assert proc.exitcode == 0
    gate.release.set()
    for i in range(20):
        rec.write(Event("tool_end", float(i), tool_name="parent-after", step_index=i))
    rec.close(timeout=30)

    assert reopened == []  # the callback fires in the child only
    assert rec.session_id == parent_session and child_session != parent_session
    assert str(proc.pid) in child_session and child_parent == parent_session and child_dropped == 0
    metas = sessions(tmp_path)
    assert set(metas) == {parent_session, child_session}
    child_meta = metas[child_session]
    assert child_meta["pid"] == proc.pid and child_meta["session_id"] == child_session
    assert child_meta["process_start_time"] is not None and child_meta["uid"] == os.getuid()
    assert child_meta["parent_session_id"] == parent_session and child_meta["agent"] == "forky"
    assert metas[parent_session]["pid"] == os.getpid()
    child_events = [orjson.loads(line) for line in lines_of(tmp_path / child_session / "events.ndjson")]
    assert [(e["tool_name"], e["step_index"]) for e in child_events] == [("child", i) for i in range(500)]
    parent_events = [orjson.loads(line) for line in lines_of(rec.events_path)]
    assert [e.get("tool_name") for e in parent_events] == [None] + ["parent-before"] * 50 + ["parent-after"] * 20
    # created in the child under the parent's umask 0: still private
    assert stat.S_IMODE(os.stat(tmp_path / child_session).st_mode) == 0o700
    for name in ("meta.json", "events.ndjson"):
        assert stat.S_IMODE(os.stat(tmp_path / child_session / name).st_mode) == 0o600


def test_on_reopen_callbacks_get_the_childs_session_id(tmp_path):
    rec = Recorder(str(tmp_path), "hooked")
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    stamped = []
    rec.on_reopen.append(stamped.append)
    rec.on_reopen.append(lambda sid: send.send(("callback", sid, stamped[-1])))
    proc = ctx.Process(target=_mp_child_reopened, args=(rec, send))
    proc.start()
    send.close()
    assert recv.poll(60)
    tag, from_callback, first_callback = recv.recv()
    assert recv.poll(60)
    actual = recv.recv()
    proc.join(60)
    rec.close()
    assert proc.exitcode == 0 and tag == "callback"
    assert from_callback == first_callback == actual != rec.session_id
    assert set(sessions(tmp_path)) == {rec.session_id}  # a child that writes nothing leaves no session


def _mp_child_no_close(rec: Recorder, n: int) -> None:
    for i in range(n):
        rec.write(Event("tool_end", float(i), step_index=i))
    # no close(): multiprocessing ends the child with os._exit, the recorder must still flush


def test_multiprocessing_child_that_never_closes_still_reaches_disk(tmp_path):
    rec = Recorder(str(tmp_path), "sloppy")
    proc = multiprocessing.get_context("fork").Process(target=_mp_child_no_close, args=(rec, 300))
    proc.start()
    proc.join(60)
    rec.close()
    assert proc.exitcode == 0
    (child,) = set(sessions(tmp_path)) - {rec.session_id}
    assert len(lines_of(tmp_path / child / "events.ndjson")) == 300


def test_preload_style_os_fork_children_each_get_a_session(tmp_path):
    rec = Recorder(str(tmp_path), "preload")
    rec.write(Event("run_start", 0.0, tool_name="parent"))
    rec.flush()
    per_child = 2000
    pids = []
    for k in range(3):
        pid = os.fork()
        if pid == 0:  # child: never return into pytest
            code = 1
            try:
                for i in range(per_child):
                    rec.write(Event("tool_end", float(i), tool_name=f"child{k}", step_index=i))
                rec.close(timeout=30)
                code = 0 if rec.dropped == 0 else 3
            finally:
                os._exit(code)
        pids.append(pid)
    statuses = {}
    deadline = time.monotonic() + 120
    while len(statuses) < len(pids) and time.monotonic() < deadline:
        for pid in pids:
            if pid not in statuses:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    statuses[pid] = os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    for pid in set(pids) - set(statuses):
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    rec.write(Event("run_end", 1.0, tool_name="parent"))
    rec.close()
    assert statuses == {pid: 0 for pid in pids}
    metas = sessions(tmp_path)
    by_pid = {meta["pid"]: sid for sid, meta in metas.items()}
    assert set(by_pid) == {os.getpid(), *pids}
    for k, pid in enumerate(pids):
        events = [orjson.loads(line) for line in lines_of(tmp_path / by_pid[pid] / "events.ndjson")]
        assert [(e["tool_name"], e["step_index"]) for e in events] == [(f"child{k}", i) for i in range(per_child)]
    assert [orjson.loads(line)["tool_name"] for line in lines_of(rec.events_path)] == ["parent", "parent"]


def test_directories_and_files_are_private_under_umask_zero(tmp_path):
    base = tmp_path / "new" / "sessions"
    old_umask = os.umask(0)
    try:
        rec = Recorder(str(base), "umask")
        rec.write(Event("heartbeat", 1.0))
        rec.close()
    finally:
        os.umask(old_umask)
    session = base / rec.session_id
    for directory in (tmp_path / "new", base, session):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700, directory
    assert sorted(os.listdir(session)) == ["events.ndjson", "meta.json"]  # no temporary file left
    for name in ("meta.json", "events.ndjson"):
        assert stat.S_IMODE(os.stat(session / name).st_mode) == 0o600, name
    assert json.loads((session / "meta.json").read_text())["uid"] == os.getuid()


def test_unencodable_event_is_skipped_and_the_rest_of_its_batch_written(tmp_path):
    rec = Recorder(str(tmp_path), "surrogates")
    gate = Gate(rec)
    gate.hold(rec)
    circular: dict = {}
    circular["self"] = circular
    rec.write(Event("tool_end", 1.0, tool_name="before"))
    rec.write(Event("tool_end", 2.0, tool_name="bad\ud800name"))   # lone surrogate: kept, repaired
    rec.write(Event("tool_end", 2.5, tool_name="pair\ud83d\ude00"))  # a split pair: joined
    rec.write(Event("tool_end", 3.0, tool_name="loop", detail=circular))  # cannot be encoded at all
    rec.write(Event("tool_end", 4.0, tool_name="after", detail={1: "non-str key"}))
    gate.release.set()
    rec.close(timeout=30)
    assert gate.batches[1] == 4  # the four good events of the second batch were written together
    assert rec.dropped_by_reason == {"encode_error": 1}
    events = [orjson.loads(line) for line in lines_of(rec.events_path)]
    assert [e["tool_name"] for e in events[1:]] == ["before", "bad\ufffdname", "pair\U0001F600", "after"]
    assert events[-1]["detail"] == {"1": "non-str key"}
    stats = ReplayStats()
    list(replay(rec.events_path, stats=stats))
    assert stats.events == 5 and sum(stats.skipped.values()) == 0


def test_disk_full_is_counted_as_write_error_and_recording_resumes(tmp_path):
    before = dropped_metric()
    rec = Recorder(str(tmp_path), "diskfull")
    rec.flush()
    real_fd = rec._fd
    rec._fd = os.open("/dev/full", os.O_WRONLY)  # every write fails with ENOSPC (the writer is idle here)
    for i in range(10):
        rec.write(Event("tool_end", float(i)))
    rec.flush()
    assert rec.dropped_by_reason == {"write_error": 10}
    assert dropped_metric() - before == 10
    full_fd, rec._fd = rec._fd, real_fd
    os.close(full_fd)
    for i in range(5):
        rec.write(Event("tool_end", float(i)))
    rec.close()
    assert len(lines_of(rec.events_path)) == 5


def test_partial_write_leaves_one_bad_line_and_later_batches_intact(tmp_path, monkeypatch):
    rec = Recorder(str(tmp_path), "partial")
    target = rec._fd
    real_write = os.write
    state = {"cut": False, "failed": False}

    def flaky_write(fd, data):
        data = bytes(data)
        if fd == target and not state["cut"] and b'"boom"' in data:
            state["cut"] = True
            return real_write(fd, data[: data.index(b'"boom"') + 3])  # stop in the middle of that line
        if fd == target and state["cut"] and not state["failed"]:
            state["failed"] = True
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", flaky_write)
    for i in range(11):
        rec.write(Event("tool_end", float(i), tool_name="boom" if i == 5 else "ok", step_index=i))
    rec.flush()
    for i in range(11, 14):
        rec.write(Event("tool_end", float(i), tool_name="ok", step_index=i))
    rec.close()
    monkeypatch.undo()
    assert state == {"cut": True, "failed": True}
    lines = lines_of(rec.events_path)
    good = []
    bad = 0
    for line in lines:
        try:
            good.append(orjson.loads(line)["step_index"])
        except orjson.JSONDecodeError:
            bad += 1
    assert bad == 1 and 5 not in good and {11, 12, 13} <= set(good)
    assert good == sorted(good) and set(range(5)) <= set(good)
    assert rec.dropped_by_reason == {"write_error": 14 - len(good)}
    stats = ReplayStats()
    list(replay(rec.events_path, stats=stats))
    assert stats.events == len(good) and sum(stats.skipped.values()) == 1


@pytest.mark.parametrize("value", [float("nan"), 2**70])
def test_odd_numbers_still_make_valid_lines(tmp_path, value):
    rec = Recorder(str(tmp_path), "numbers")
    rec.write(Event("tool_end", 1.0, detail={"x": value}))
    rec.close()
    (line,) = lines_of(rec.events_path)
    decoded = json.loads(line)
    assert decoded["event_type"] == "tool_end" and "x" in decoded["detail"]


@pytest.mark.parametrize("fast", [True, False], ids=["orjson", "stdlib"])
def test_encoding_matches_event_to_json(monkeypatch, fast):
    if not fast:
        monkeypatch.setattr(codec, "_orjson_dumps", None)
    rich = Event("llm_call", 1712345678.123456, agent_id="bot", session_id="s", run_id="r", task_id="t",
                 step_index=0, provider="openai", model="gpt-4o", input_tokens=10, output_tokens=2,
                 cost_usd=0.000123, status="ok", reason="caf\u00e9 \u2603", detail={"paths": ["/tmp/x"], "n": [1, 2.5]})
    for event in (rich, Event("heartbeat", 0.0), Event("tool_end", 1.0, tool_name="a", duration_ms=1e-7)):
        assert json.loads(recorder_mod._encode(event)) == json.loads(event.to_json())
        assert b"null" not in recorder_mod._encode(event)  # None fields are omitted, as in to_json
    line = recorder_mod._encode(Event("tool_end", 1.0, tool_name="x\ud800y"))
    assert orjson.loads(line)["tool_name"] == "x\ufffdy"  # readable by the strict decoder replay prefers


@pytest.mark.parametrize("fast", [True, False], ids=["orjson", "stdlib"])
def test_batch_encoding_is_byte_for_byte_the_per_event_encoding(monkeypatch, fast):
    if not fast:
        monkeypatch.setattr(codec, "_orjson_dumps", None)
    events = [Event("tool_end", float(i), tool_name=f"t{i}", step_index=i, status="ok") for i in range(50)]
    events += [Event("tool_end", 1.0, tool_name="a\nb},\n,{", reason="\u2603", detail={"x": "\n", "y": [1, 2.5]}),
               Event("heartbeat", 0.0)]
    assert codec.encode_lines(events) == [codec.encode_bytes(event) for event in events]
    assert codec.encode_lines([]) == []


def test_batch_encoding_raises_for_what_needs_the_slow_path_and_the_recorder_encodes_it_alone(tmp_path):
    tricky = Event("tool_end", 1.0, tool_name="x\ud800y")  # orjson refuses it; the stdlib path repairs it
    with pytest.raises(Exception):
        codec.encode_lines([Event("tool_end", 0.0), tricky])
    rec = Recorder(str(tmp_path), "slow-path")
    for i in range(3000):  # several chunks; the tricky event spoils only its own
        rec.write(tricky if i == 1500 else Event("tool_end", float(i), step_index=i))
    rec.close(timeout=30)
    lines = [orjson.loads(line) for line in lines_of(rec.events_path)]
    assert len(lines) == 3000 and rec.dropped == 0
    assert lines[1500]["tool_name"] == "x\ufffdy"
    assert [e.get("step_index") for e in lines[:1500]] == list(range(1500))
