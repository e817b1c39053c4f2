"""watch --all over many sessions: what a released session gives back (its file, its inotify watch, its
state), and when a session that records no PID is released (idle) and picked up again without losing or
repeating anything. Real ``sleep`` decoys, started and stopped here by PID."""

import io
import os
import shutil
import time

from prometheus_client import CollectorRegistry

from agentvigil.metrics import metrics_for
from agentvigil.sinks.recorder import process_start_time
from agentvigil.watch.runner import Watch
from agentvigil.watch.sources import resolve

from .conftest import append, line, wait_for, write_meta
from .test_runner import config_for, records, run_in_thread
from .test_runner_sessions import _open_under, decoy, failures, meta, seen, stop
from .test_tail import kernel_watches


def _finished_pid():
    gone = decoy()
    start = process_start_time(gone.pid)
    stop(gone)
    return gone.pid, start


def idle_config(*argv):
    return config_for("--set", "sessions.idle_seconds=1", *argv)


# -- the inotify watch of a released session -----------------------------------------------------------------
def test_all_gives_back_the_inotify_watch_of_each_released_session(tmp_path):
    pid, start = _finished_pid()
    live = decoy()
    try:
        root = tmp_path / "sessions"
        for i in range(30):
            write_meta(root / f"old{i:02d}", pid=pid, start=start)
            append(root / f"old{i:02d}" / "events.ndjson", line("heartbeat", status="idle"))
        out = io.StringIO()
        watch = Watch(resolve(str(root)), config_for(), all_sessions=True, json_out=True, out=out, timeout=30,
                      status_every=0)
        assert watch.waker.inotify
        thread, _ = run_in_thread(watch)
        try:
            assert wait_for(lambda: len(seen(out, "end")) == 30 and not watch.sessions, timeout=20)
            assert wait_for(lambda: kernel_watches(watch.waker) == 1)      # the root's only
            write_meta(root / "zz_live", pid=live.pid)
            append(root / "zz_live" / "events.ndjson", line("heartbeat"))
            assert wait_for(lambda: kernel_watches(watch.waker) == 2)
            # removed while its file is still open: the kernel drops that watch itself (IN_IGNORED) once the
            # file is closed, which races with our own removal at the release; either way none is left
            shutil.rmtree(root / "zz_live")
            stop(live)
            assert wait_for(lambda: len(seen(out, "end")) == 31 and not watch.sessions, timeout=10)
            assert wait_for(lambda: kernel_watches(watch.waker) == 1 and watch.waker.watching == 1)
            assert watch.waker.inotify                      # never fell back to polling
        finally:
            watch.follow = False
        thread.join(35)
    finally:
        stop(live)


# -- sessions that record no PID -------------------------------------------------------------------------------
def test_idle_session_without_a_pid_is_released_and_resumed_losing_nothing(tmp_path):
    """A session with no PID whose file stops growing is released (file closed, watch and state given back).
    When it grows again it is picked up again: nothing read before is reported twice, nothing is lost (the
    session's cost so far still counts, a line cut by the release is read whole)."""
    root = tmp_path / "sessions"
    session = root / "quiet"
    meta(session)                                                   # records no pid
    events = session / "events.ndjson"
    cut = line("llm_call", run_id="r2", cost_usd=7.0, input_tokens=10, output_tokens=5)
    append(events, line("run_start", run_id="r1") + failures(4)
           + line("llm_call", run_id="r1", cost_usd=4.0, input_tokens=10, output_tokens=5)
           + line("run_end", run_id="r1", status="error") + line("run_start", run_id="r2") + cut[:25])
    out = io.StringIO()
    watch = Watch(resolve(str(root)), idle_config("--max-retries", "3"), all_sessions=True, json_out=True,
                  out=out, timeout=60, status_every=0)
    thread, result = run_in_thread(watch)
    try:
        assert wait_for(lambda: seen(out, "end") and not watch.sessions, timeout=20)
        (end,) = seen(out, "end")
        assert end["reason"].startswith("idle") and end["events"] == 8 and end["cost_usd"] == 4.0
        before = [b["watcher"] for b in seen(out, "breach")]
        assert "retry" in before and "cost" not in before
        assert _open_under(session) == 0                            # its file is closed ...
        assert wait_for(lambda: kernel_watches(watch.waker) == 1)   # ... and its directory not watched
        append(events, cut[25:] + line("run_end", run_id="r2", status="ok"))
        assert wait_for(lambda: len(seen(out, "start")) == 2, timeout=10)
        assert wait_for(lambda: any(b["watcher"] == "cost" for b in seen(out, "breach")))
        assert wait_for(lambda: len(seen(out, "end")) == 2, timeout=20)   # idle again: released again
    finally:
        watch.follow = False
    thread.join(35)
    recs = records(out)
    breaches = [r for r in recs if r["type"] == "breach"]
    # nothing before is reported again; the retries before the release and the cost after it fall within
    # one correlation window: that state survived too
    assert [b["watcher"] for b in breaches] == [*before, "cost", "correlated"]
    assert breaches[len(before)]["detail"]["cost_usd"] == 11.0      # $4 before the release + $7 after
    last = [r for r in recs if r["type"] == "end"][-1]
    assert last["events"] == 10 and last["cost_usd"] == 11.0 and not last["skipped"]   # the cut line: whole
    assert result["rc"] == 3


def test_only_a_session_with_no_process_to_watch_is_released_when_idle(tmp_path):
    """Released when idle: no PID, or one recorded on another host (unknown). Kept: a process seen running,
    whatever its file does; and any session outside --all (the one session asked for)."""
    live = decoy()
    try:
        root = tmp_path / "sessions"
        meta(root / "no-pid")
        meta(root / "elsewhere", pid=live.pid, host="elsewhere.example", process_start_time=1.0)
        write_meta(root / "running", pid=live.pid)
        for name in ("no-pid", "elsewhere", "running"):
            append(root / name / "events.ndjson", line("heartbeat"))
        now = time.time()
        watch = Watch(resolve(str(root)), idle_config(), all_sessions=True, out=io.StringIO(), status_every=0)
        try:
            watch._discover(now, force=True)
            assert len(watch.sessions) == 3
            for later in (now + 0.5, now + 100):
                for watched in list(watch.sessions.values()):
                    if not watched.ended:
                        watch._pump(watched, later)
                watch._release_ended()
            assert [w.source.session_id for w in watch.sessions.values()] == ["running"]
            assert sorted(os.path.basename(os.path.dirname(p)) for p in watch._idle) == ["elsewhere", "no-pid"]
        finally:
            watch.close()
        single = Watch(resolve(str(root / "no-pid")), idle_config(), out=io.StringIO(), status_every=0)
        try:
            single._discover(now, force=True)
            (watched,) = single.sessions.values()
            single._pump(watched, now + 100)
            assert not watched.ended
        finally:
            single.close()
    finally:
        stop(live)


def test_idle_release_takes_its_open_runs_off_the_metrics_and_resuming_counts_nothing_twice(tmp_path):
    registry = CollectorRegistry()
    root = tmp_path / "sessions"
    meta(root / "s")
    events = root / "s" / "events.ndjson"
    ok = dict(tool_name="bash", args_hash="h", status="ok")
    append(events, line("run_start", run_id="r1") + line("tool_end", run_id="r1", **ok)
           + line("run_end", run_id="r1", status="ok") + line("run_start", run_id="r2")
           + line("tool_end", run_id="r2", **ok))

    def value(name, **labels):
        return registry.get_sample_value(name, {"agent": "bot", **labels}) or 0.0

    now = time.time()
    watch = Watch(resolve(str(root)), idle_config(), all_sessions=True, out=io.StringIO(), status_every=0,
                  metrics=metrics_for(registry))
    try:
        watch._discover(now, force=True)
        (watched,) = watch.sessions.values()
        watch._pump(watched, now)
        assert value("agent_active_runs") == 1 and value("agent_runs_total", status="ok") == 1
        watch._pump(watched, now + 100)                         # idle: released, r2 no longer in flight
        watch._release_ended()
        assert not watch.sessions and value("agent_active_runs") == 0
        append(events, line("run_end", run_id="r2", status="ok") + line("run_start", run_id="r3"))
        watch._discover(now + 101, force=True)                  # it grew: picked up again
        (watched,) = watch.sessions.values()
        watch._pump(watched, now + 101)
        assert value("agent_runs_total", status="ok") == 2
        assert value("agent_tool_calls_total", tool="bash", status="ok") == 2   # not read into the metrics twice
        assert value("agent_active_runs") == 1                  # r3
    finally:
        watch.close()


def test_a_session_file_replaced_while_released_is_read_as_new(tmp_path):
    root = tmp_path / "sessions"
    meta(root / "s")
    events = root / "s" / "events.ndjson"
    append(events, failures(4))
    now = time.time()
    out = io.StringIO()
    watch = Watch(resolve(str(root)), idle_config("--max-retries", "3"), all_sessions=True, json_out=True,
                  out=out, status_every=0)
    try:
        watch._discover(now, force=True)
        (watched,) = watch.sessions.values()
        watch._pump(watched, now)
        watch._pump(watched, now + 100)
        watch._release_ended()
        first = watch.breaches
        assert not watch.sessions and first
        fresh = root / "s" / "fresh.ndjson"
        append(fresh, failures(4))
        os.replace(fresh, events)                               # another file now: all of it is new
        watch._discover(now + 101, force=True)
        (watched,) = watch.sessions.values()
        watch._pump(watched, now + 101)
        assert watch.breaches == 2 * first
    finally:
        watch.close()
