"""Hostile recordings and flags in ``agentvigil replay``: every one is a counted skip or a one-line error, never a
traceback (docs/events.md, *Replay*). CLI defects are checked through the real command in a subprocess."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from agentvigil import codec
from agentvigil import replay as replay_module
from agentvigil.cli import main
from agentvigil.events import InvalidEvent, event_from_dict
from agentvigil.replay import ReplayStats, read_events, replay

HUGE = "1" + "0" * 400           # an integer beyond float range: orjson refuses it, the stdlib returns an int
TS = 1_700_000_000.0


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentvigil", *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **(env or {})))


def write(path, *lines: str) -> str:
    path.mkdir(parents=True, exist_ok=True)
    (path / "events.ndjson").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-2000:]


@pytest.fixture(params=["orjson", "stdlib"])
def decoder(request, monkeypatch):
    """Both decoders read_events may use: orjson (when installed) and the stdlib fallback."""
    if request.param == "stdlib":
        monkeypatch.setattr(codec, "loads", codec._loads_fallback)
    elif codec._fast_loads is None:   # pragma: no cover - depends on the environment
        pytest.skip("orjson not installed")
    return request.param


# 1. an integer beyond float range in a number field -------------------------------------------------------------

@pytest.mark.parametrize("field", ["ts", "duration_ms", "cost_usd"])
def test_huge_integer_number_field_is_a_bad_field_skip(tmp_path, field):
    bad = (f'{{"event_type":"run_end","ts":{HUGE}}}' if field == "ts"
           else f'{{"event_type":"run_end","ts":{TS},"{field}":{HUGE}}}')
    path = write(tmp_path / "s1", f'{{"event_type":"run_start","ts":{TS},"agent_id":"a","run_id":"r"}}', bad)
    proc = cli("replay", path)
    no_traceback(proc)
    assert proc.returncode == 0
    assert "1 skipped (bad_field: 1)" in proc.stdout
    assert f"bad_field: {field} must be a finite number" in proc.stderr


@pytest.mark.parametrize("field", ["ts", "duration_ms", "cost_usd"])
def test_huge_integer_after_a_learned_shape(tmp_path, decoder, field):
    """The same keys and classes validated once (a generated maker), then the huge int: still a counted skip."""
    good = {"event_type": "run_end", "ts": 5, "duration_ms": 5, "cost_usd": 1, "agent_id": "shape-" + field}
    bad = dict(good, **{field: 10**400})
    path = write(tmp_path, json.dumps(good), json.dumps(good), json.dumps(bad), json.dumps(good))
    stats = ReplayStats()
    assert len(list(read_events(path + "/events.ndjson", stats))) == 3
    assert stats.skipped == {"bad_field": 1}
    assert stats.first_errors[0][3].startswith(f"{field} must be a finite number")
    with pytest.raises(InvalidEvent) as caught:
        event_from_dict(bad)
    assert caught.value.reason == "bad_field"


# 2. a detection whose event has no session_id ------------------------------------------------------------------

def test_detection_without_session_id(tmp_path):
    path = write(tmp_path / "nosid", f'{{"event_type":"budget_exceeded","ts":{TS},"agent_id":"a","name":"b"}}')
    for flags in ([], ["-v"]):
        proc = cli("replay", *flags, path)
        no_traceback(proc)
        assert proc.returncode == 0
        assert "1 detections" in proc.stdout
        row = [line for line in proc.stdout.splitlines() if line.startswith("- ")]
        assert row and row[0].split() == ["-", "a", "1"]


# 3. lone surrogates and control characters in ids --------------------------------------------------------------

def test_surrogate_and_control_characters_in_ids_are_escaped(tmp_path):
    lines = [json.dumps({"event_type": "budget_exceeded", "ts": TS, "agent_id": "\x1b[2J\x1b[31mEVIL",
                         "session_id": "s\x1b]0;pwned\x07\nfake line\r", "task_id": "t\x1b", "name": "b"}),
             '{"event_type":"budget_exceeded","ts":%s,"agent_id":"\\ud800","session_id":"\\udfff","name":"c"}' % TS]
    path = write(tmp_path / "ids", *lines)
    for flags, env in (([], None), (["-v"], None), (["-v"], {"PYTHONIOENCODING": "ascii"})):
        proc = cli("replay", *flags, path, env=env)
        no_traceback(proc)
        assert proc.returncode == 0, proc.stderr
        assert "\x1b" not in proc.stdout and "\r" not in proc.stdout and "\x07" not in proc.stdout
        assert not any(line.startswith("fake line") for line in proc.stdout.splitlines())
        assert "\\x1b[2J" in proc.stdout and "\\ud800" in proc.stdout and "\\udfff" in proc.stdout
        assert "2 detections" in proc.stdout


def test_lone_surrogates_in_ids_come_out_of_json_output_as_u_fffd(tmp_path):
    """A ``\\ud800`` escape decodes to a lone surrogate, which ``json.dumps`` writes back as the same escape:
    strict decoders (orjson, replay's own) refuse that line. ``--json`` output repairs it as the recorder does."""
    path = write(tmp_path / "s", '{"event_type":"budget_exceeded","ts":%s,"agent_id":"a\\ud800b",'
                                 '"session_id":"\\udfff","name":"c\\ud83d\\ude00"}' % TS)
    proc = cli("replay", "--json", path)
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    assert "\\ud800" not in proc.stdout and "\\udfff" not in proc.stdout
    records = [codec.loads(line.encode()) for line in proc.stdout.splitlines() if line]   # the strict decoder
    detection = next(r for r in records if r.get("session_id") is not None)
    assert (detection["agent_id"], detection["session_id"]) == ("a\ufffdb", "\ufffd")
    assert codec.finite_json({"k\ud800": ["x\udfff", 1.5, float("nan")], "pair": "\ud83d\ude00"}) == {
        "k\ufffd": ["x\ufffd", 1.5, None], "pair": "\U0001f600"}   # a pair split in two escapes is joined


def test_non_ascii_ids_on_an_ascii_terminal(tmp_path):
    path = write(tmp_path / "u", json.dumps({"event_type": "budget_exceeded", "ts": TS, "agent_id": "agent-é",
                                             "session_id": "séance", "name": "b"}, ensure_ascii=False))
    proc = cli("replay", "-v", path, env={"PYTHONIOENCODING": "ascii"})
    no_traceback(proc)
    assert proc.returncode == 0 and "agent-\\xe9" in proc.stdout


# 4. a session file that vanished or cannot be read -------------------------------------------------------------

def _two_sessions(tmp_path):
    for name, started in (("a", 1.0), ("b", 2.0)):
        write(tmp_path / name, json.dumps({"event_type": "budget_exceeded", "ts": TS + started, "agent_id": "a",
                                           "session_id": name, "run_id": "r" + name, "name": "b"}))
        (tmp_path / name / "meta.json").write_text(json.dumps({"started_at": TS + started}))
    return str(tmp_path)


def test_session_file_rotated_away_mid_replay_is_counted(tmp_path):
    root = _two_sessions(tmp_path)
    stats = ReplayStats()
    records = replay(root, stats=stats)
    assert next(records)["session_id"] == "a"      # the listing is done, session a is being read
    os.rename(tmp_path / "b" / "events.ndjson", tmp_path / "b" / "events.ndjson.1")
    assert all(r["session_id"] == "a" for r in records)   # nothing of b, whose file is gone
    assert stats.sessions == 2 and stats.skipped == {"unreadable": 1}
    assert "No such file" in stats.first_errors[0][3]


@pytest.fixture
def unreadable_b(monkeypatch):
    """open() of session b's file fails as for EACCES (the tests may run as root, who may read anything)."""
    real = open

    def fake(path, *args, **kw):
        if str(path).endswith(os.path.join("b", "events.ndjson")):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kw)

    monkeypatch.setattr(replay_module, "open", fake, raising=False)


def test_unreadable_session_file_is_counted_in_replay(tmp_path, unreadable_b, capsys):
    root = _two_sessions(tmp_path)
    assert main(["replay", root]) == 0
    out = capsys.readouterr()
    assert "2 session(s), 1 events, " in out.out and "detections, 1 skipped (unreadable: 1)" in out.out
    assert "unreadable: cannot open: Permission denied" in out.err


def test_score_counts_an_unreadable_session_file(tmp_path, unreadable_b, capsys):
    root = _two_sessions(tmp_path)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"ra": True}))
    code = main(["replay", root, "--labels", str(labels), "--score", "--json"])
    out = capsys.readouterr()
    assert "unreadable: 1" in out.err
    assert code == 1 and "no labelled runs" in out.err   # the labelled run has no run_start: nothing to score


def test_score_on_a_missing_path_is_a_one_line_error(tmp_path):
    labels = tmp_path / "labels.json"
    labels.write_text('{"r": true}')
    proc = cli("replay", str(tmp_path / "no" / "such"), "--labels", str(labels), "--score")
    no_traceback(proc)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no such file or directory" in proc.stderr


# 5. a loop threshold of 1 ---------------------------------------------------------------------------------------

def test_loop_max_repeats_flag_of_1_is_a_usage_error(tmp_path):
    path = write(tmp_path / "ok", f'{{"event_type":"run_end","ts":{TS}}}')
    for value in ("1", "0"):
        proc = cli("replay", path, "--loop-max-repeats", value)
        no_traceback(proc)
        assert proc.returncode == 2
        assert proc.stderr.strip() == f"agentvigil replay: --loop-max-repeats must be a whole number from 2 to " \
                                      f"31536000, got {value}"


@pytest.mark.parametrize("variable", ["AGENTVIGIL_LOOP_MAX_REPEATS", "AGENTVIGIL_LOOP_SEQUENCE_REPEATS"])
def test_loop_setting_of_1_in_the_environment_is_logged_and_replaced(tmp_path, variable):
    path = write(tmp_path / "ok", f'{{"event_type":"run_end","ts":{TS}}}')
    proc = cli("replay", path, env={variable: "1"})
    no_traceback(proc)
    assert proc.returncode == 0
    warnings = [line for line in proc.stderr.splitlines() if "ignoring" in line]
    assert len(warnings) == 1 and "using 3" in warnings[0]


def test_loop_settings_below_2_are_replaced_in_process():
    from agentvigil.settings import Settings

    s = Settings.from_env(loop_max_repeats=1, loop_sequence_repeats=1)
    assert (s.loop_max_repeats, s.loop_sequence_repeats) == (3, 3)
    assert Settings.from_env(loop_max_repeats=10**400).loop_max_repeats == 3


# 6. --set with a number beyond float range ------------------------------------------------------------------------

def test_set_with_an_integer_beyond_float_range_is_a_bad_setting(tmp_path):
    path = write(tmp_path / "ok", f'{{"event_type":"run_end","ts":{TS}}}')
    proc = cli("replay", path, "--set", f"stuck.on_score={HUGE}")
    no_traceback(proc)
    assert proc.returncode == 2
    assert proc.stderr.startswith("agentvigil replay: bad setting: watchers.stuck.on_score: must be a finite number")
    assert proc.stderr.count("\n") == 1


# 7. what made detectors raise, and detector errors counted -------------------------------------------------------

RUN = '{"event_type":"run_start","ts":1.0,"agent_id":"a","session_id":"s","run_id":"r"}'
END = '{"event_type":"run_end","ts":2.0,"agent_id":"a","session_id":"s","run_id":"r","status":"ok"}'


@pytest.mark.parametrize("started_at", ["NaN", HUGE, "Infinity"])
def test_meta_started_at_not_a_finite_number_is_ignored(tmp_path, started_at):
    path = write(tmp_path / "k", RUN, END)
    (tmp_path / "k" / "meta.json").write_text(f'{{"started_at": {started_at}}}')
    proc = cli("replay", path)
    no_traceback(proc)
    assert proc.returncode == 0 and "internal error" not in proc.stdout + proc.stderr


def test_budget_overrun_beyond_float_range(tmp_path):
    path = write(tmp_path / "k", '{"event_type":"budget_exceeded","ts":1.0,"agent_id":"a","session_id":"s",'
                                 f'"name":"b","detail":{{"limit":1,"committed":{HUGE}}}}}')
    proc = cli("replay", "--json", path)
    no_traceback(proc)
    assert proc.returncode == 0 and "internal error" not in proc.stderr
    (record,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert record["detector"] == "budget" and "utilization" not in record["detail"]


def test_run_spanning_the_float_range(tmp_path):
    path = write(tmp_path / "k",
                 '{"event_type":"run_start","ts":-1.7976931348623157e308,"agent_id":"a","session_id":"s","run_id":"r"}',
                 '{"event_type":"run_end","ts":1.7976931348623157e308,"agent_id":"a","session_id":"s","run_id":"r",'
                 '"status":"ok"}')
    proc = cli("replay", "--json", path)
    no_traceback(proc)
    assert proc.returncode == 0 and "internal error" not in proc.stderr

    def strict(token):
        raise ValueError(token)

    records = [json.loads(line, parse_constant=strict) for line in proc.stdout.splitlines()]
    assert [r["detector"] for r in records] == ["duration"]


def test_helpers_on_extreme_numbers():
    from agentvigil.detectors._fmt import seconds
    from agentvigil.detectors.budget import _utilization
    from agentvigil.detectors.run_limit import _limits

    assert seconds(math.inf) == "infs" and seconds(90) == "1m30s"
    assert _utilization(10**400, None, 1) is None and _utilization(1e308, 1e308, 1e-300) is None
    assert _utilization(3, 1, 8) == 0.5
    assert _limits({"max_steps": 10**400, "max_seconds": 5}) == {"max_seconds": 5.0}


def test_detector_internal_error_is_counted_and_summarised(tmp_path, monkeypatch, capsys, caplog):
    from agentvigil.detectors.budget import BudgetDetector

    def broken(self, event):
        raise RuntimeError("boom")

    monkeypatch.setattr(BudgetDetector, "feed", broken)
    path = write(tmp_path / "k", *(f'{{"event_type":"budget_exceeded","ts":{TS},"session_id":"s","name":"b{i}"}}'
                                   for i in range(3)))
    assert main(["replay", path]) == 0
    out = capsys.readouterr()
    assert "0 detections, 0 skipped, 3 internal error(s) (detector: 3; their verdicts are missing)" in out.out
    assert "Traceback" not in out.out + out.err
    assert all(record.exc_info is None for record in caplog.records)
    stats = ReplayStats()
    assert list(replay(path, stats=stats)) == []
    assert stats.internal_errors == {"detector": 3} and "boom" in stats.first_internal["detector"]


def test_max_steps_beyond_float_range_is_no_traceback(tmp_path):
    """runaway's own check overflows on it (counted as an internal error until that is fixed); never a traceback,
    never unreported."""
    path = write(tmp_path / "k", '{"event_type":"run_start","ts":1.0,"agent_id":"a","session_id":"s","run_id":"r",'
                                 f'"detail":{{"max_steps":{HUGE}}}}}', END)
    proc = cli("replay", path)
    no_traceback(proc)
    assert proc.returncode == 0
    summary = [line for line in proc.stdout.splitlines() if line.startswith("agentvigil replay:")][0]
    assert "internal error" in summary or "internal error" not in proc.stderr


# 8. NaN / Infinity inside detail --------------------------------------------------------------------------------

@pytest.mark.parametrize("detail", ['{"x":NaN}', '{"limit":1,"committed":1e999}', '{"a":[1,{"b":-Infinity}]}'])
def test_non_finite_number_in_detail_is_a_bad_field_skip(tmp_path, decoder, detail):
    good = f'{{"event_type":"budget_exceeded","ts":{TS},"session_id":"s","name":"b","detail":{{"limit":1}}}}'
    bad = f'{{"event_type":"budget_exceeded","ts":{TS},"session_id":"s","name":"b","detail":{detail}}}'
    path = write(tmp_path, good, bad, good)
    stats = ReplayStats()
    assert len(list(read_events(path + "/events.ndjson", stats))) == 2
    assert stats.skipped == {"bad_field": 1}
    assert "detail must hold finite numbers only" in stats.first_errors[0][3]


def test_replay_json_is_standard_json(tmp_path):
    path = write(tmp_path / "nan", '{"event_type":"budget_exceeded","ts":1700000000.0,"agent_id":"a","session_id":"s",'
                                   '"name":"b","detail":{"limit":1,"committed":1e999,"x":NaN}}',
                 '{"event_type":"budget_exceeded","ts":1700000000.0,"agent_id":"a","session_id":"s",'
                 '"name":"c","detail":{"limit":1e-300,"committed":1e300,"n":[1,2.5]}}')
    proc = cli("replay", "--json", path)
    no_traceback(proc)

    def strict(token):
        raise ValueError(token)

    records = [json.loads(line, parse_constant=strict) for line in proc.stdout.splitlines()]
    assert [r["detail"]["budget"] for r in records] == ["c"]
    assert "utilization" not in records[0]["detail"] and records[0]["detail"]["n"] == [1, 2.5]
    assert "1 skipped (bad_field: 1)" in proc.stderr
