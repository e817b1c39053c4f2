"""Which session ``watch ROOT`` follows: the newest whose recorded process runs, by the liveness the runner
uses to end a session (PID, not a zombie, recorded start time), not by the kill check. Real ``sleep`` decoys,
started and stopped here by PID."""

import io
import time

from agentvigil.sinks.recorder import process_start_time
from agentvigil.watch.runner import Watch, process_liveness
from agentvigil.watch.sources import choose_session, is_live, list_sessions, resolve

from .conftest import append, line, write_meta
from .test_runner import config_for
from .test_runner_sessions import decoy, meta, stop


def _finished_pid():
    gone = decoy()
    start = process_start_time(gone.pid)
    stop(gone)
    return gone.pid, start


def test_a_reused_pid_does_not_make_a_finished_session_live(tmp_path):
    """The newer session's agent exited and its PID now belongs to another process (recorded start time
    differs): the older, really running session is followed."""
    live, stranger = decoy(), decoy()
    try:
        root = tmp_path / "sessions"
        write_meta(root / "a-live", pid=live.pid, started_at=1000.0)
        write_meta(root / "b-reused", pid=stranger.pid, start=process_start_time(stranger.pid) - 1000.0,
                   started_at=2000.0)
        chosen, why = choose_session(str(root))
        assert chosen is not None and chosen.session_id == "a-live", why
        assert "the newest of 1 live" in why
    finally:
        stop(live, stranger)


def test_a_running_agent_that_cannot_be_signalled_is_live(tmp_path):
    """A running agent whose meta.json has no ``host`` (so it is never killed) is alive for the runner, which
    follows it on; the chooser agrees instead of falling back to a newer finished session."""
    live = decoy()
    try:
        root = tmp_path / "sessions"
        meta(root / "a-no-host", pid=live.pid, process_start_time=process_start_time(live.pid), started_at=1000.0)
        pid, start = _finished_pid()
        write_meta(root / "b-finished", pid=pid, start=start, started_at=2000.0)
        chosen, why = choose_session(str(root))
        assert chosen is not None and chosen.session_id == "a-no-host", why

        watch = Watch(resolve(str(root)), config_for(), out=io.StringIO(), status_every=0)   # no --all
        try:
            watch._discover(time.time(), force=True)
            (watched,) = watch.sessions.values()
            assert watched.source.session_id == "a-no-host"
            watch._pump(watched, time.time() + 1)            # a liveness check: it is not "exited"
            assert not watched.ended and watched.live
        finally:
            watch.close()
    finally:
        stop(live)


def test_chooser_and_runner_share_one_liveness(tmp_path):
    live = decoy()
    try:
        start = process_start_time(live.pid)
        pid, gone_start = _finished_pid()
        root = tmp_path / "sessions"
        meta(root / "no-host", pid=live.pid, process_start_time=start)
        meta(root / "no-start", pid=live.pid)
        meta(root / "elsewhere", pid=live.pid, process_start_time=start, host="elsewhere.example")
        meta(root / "no-pid")
        write_meta(root / "verified", pid=live.pid)
        write_meta(root / "reused", pid=live.pid, start=start - 1000.0)
        write_meta(root / "exited", pid=pid, start=gone_start)
        for session in root.iterdir():
            append(session / "events.ndjson", line("heartbeat"))
        got = {}
        for source in list_sessions(str(root)):
            ref = source.process()
            assert is_live(source) == (ref is not None and process_liveness(ref) is True)
            got[source.session_id] = is_live(source)
        assert got == {"no-host": True, "no-start": True, "verified": True, "elsewhere": False,   # unknown
                       "no-pid": False, "reused": False, "exited": False}
    finally:
        stop(live)
    assert not any(is_live(source) for source in list_sessions(str(root)))
