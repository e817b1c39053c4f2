"""Readers never crash and never lose a valid event (property-based).

Generated event dicts (every field with values of every JSON type, NaN, 1e400, huge integers, lone surrogates,
nested and list-valued details) and raw bytes (random lines, cut and corrupted valid lines, BOMs, blank lines,
a final line without its newline) are written to a session file and read by ``replay``
(``agentvigil.replay.read_events``), ``watch --no-follow`` (``Watch`` over the session) and supervise's reader
(``supervise.tail.SessionTail``). Each must: raise nothing, count every line that ``codec.decode`` accepts as an
event, and skip every other non-blank line with a reason.
"""

from __future__ import annotations

import io
import json
import os
import socket
import tempfile
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentvigil import events as ev
from agentvigil.codec import decode
from agentvigil.events import InvalidEvent
from agentvigil.policy import WatchConfig
from agentvigil.replay import ReplayStats, read_events
from agentvigil.supervise.tail import SessionTail
from agentvigil.watch.runner import Watch
from agentvigil.watch.sources import resolve

FIELDS = ("agent_id", "session_id", "run_id", "task_id", "step_index", "tool_name", "args_hash", "status",
          "error_kind", "duration_ms", "provider", "model", "input_tokens", "output_tokens", "cache_read_tokens",
          "token_count", "cost_usd", "name", "state", "reason", "detector", "detail")
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.sampled_from([0, 1, 2**63 - 1, 2**63, 10**29]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([float("nan"), float("inf"), 1e308]),
    st.text(max_size=12), st.sampled_from(["\ud800", "ls", "npm test", "ok", "error", "busy", "\x00\x1b[31m"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=8)
event_dicts = st.fixed_dictionaries(
    {"event_type": st.one_of(st.sampled_from(sorted(ev.EVENT_TYPES)), values),
     "ts": st.one_of(st.floats(1e9, 2e9), values)},
    optional={name: values for name in FIELDS} | {"detail": st.one_of(
        values, st.fixed_dictionaries({}, optional={"command": values, "path": values, "watchers": values}))})


def _dump(data: object) -> bytes:
    try:
        return json.dumps(data, allow_nan=True).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError):
        return b"{}"


lines_from_dicts = st.lists(event_dicts.map(_dump), min_size=1, max_size=12)


@st.composite
def raw_lines(draw: st.DrawFn) -> list[bytes]:
    out = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.integers(0, 4))
        valid = _dump({"event_type": draw(st.sampled_from(sorted(ev.EVENT_TYPES))), "ts": 1.7e9,
                       "run_id": "r", "tool_name": "bash", "status": "error"})
        if kind == 0:
            out.append(valid)
        elif kind == 1:
            out.append(valid[:draw(st.integers(0, len(valid)))])                  # cut
        elif kind == 2:
            at = draw(st.integers(0, len(valid)))
            out.append(valid[:at] + draw(st.binary(max_size=4)).replace(b"\n", b"") + valid[at:])   # corrupted
        elif kind == 3:
            out.append(draw(st.binary(max_size=40)).replace(b"\n", b""))
        else:
            out.append(draw(st.sampled_from([b"", b"   ", b"\xef\xbb\xbf" + valid, b"[1,2]", b"null", b"\t"])))
    return out


def _expected(lines: list[bytes]) -> tuple[int, int]:
    """(valid events, invalid non-blank lines) as the one codec judges them."""
    valid = invalid = 0
    for raw in lines:
        if raw.startswith(b"\xef\xbb\xbf"):   # a BOM is not data: a BOM-only line is blank
            raw = raw[3:]
        if not raw.strip():
            continue
        try:
            decode(raw)
            valid += 1
        except InvalidEvent:
            invalid += 1
    return valid, invalid


def _session(root: str, lines: list[bytes], final_newline: bool) -> str:
    session = os.path.join(root, "s1")
    os.makedirs(session)
    meta = {"schema_version": 1, "session_id": "s1", "agent": "fuzz", "pid": 2**22 - 1, "process_start_time": 1.0,
            "host": socket.gethostname(), "started_at": time.time()}
    with open(os.path.join(session, "meta.json"), "w") as fh:
        json.dump(meta, fh)
    with open(os.path.join(session, "events.ndjson"), "wb") as fh:
        fh.write(b"\n".join(lines) + (b"\n" if final_newline else b""))
    return session


def _check_all_readers(lines: list[bytes], final_newline: bool) -> None:
    want_valid, want_invalid = _expected(lines)
    with tempfile.TemporaryDirectory() as root:
        session = _session(root, lines, final_newline)
        path = os.path.join(session, "events.ndjson")

        stats = ReplayStats()
        assert sum(1 for _ in read_events(path, stats)) == want_valid
        assert sum(stats.skipped.values()) == want_invalid and all(stats.skipped)   # each with a reason

        out = io.StringIO()
        Watch(resolve(session), WatchConfig.defaults(), follow=False, json_out=True, out=out, status_every=0,
              use_inotify=False).run()
        [end] = [r for r in map(json.loads, out.getvalue().splitlines()) if r["type"] == "end"]
        assert end["events"] == want_valid
        assert sum(end["skipped"].values()) == want_invalid and all(end["skipped"])

        tail = SessionTail(root, 2**22 - 1, time.time() - 10)
        got = tail.poll() + tail.poll(final=True)
        tail.close()
        assert len(got) == want_valid
        assert tail.skipped == want_invalid and all(tail.skipped_by_reason)


@SETTINGS
@given(lines_from_dicts, st.booleans())
def test_event_dicts_every_valid_event_counted_every_invalid_one_skipped(lines: list[bytes], final_newline: bool):
    _check_all_readers(lines, final_newline)


@SETTINGS
@given(raw_lines(), st.booleans())
def test_raw_bytes_never_crash_a_reader(lines: list[bytes], final_newline: bool):
    _check_all_readers(lines, final_newline)
