"""Invalid settings give one line naming the key and exit 2, never a traceback; hostile labels never reach the
terminal raw. The real CLI runs in a subprocess (a traceback is what these guard against)."""

import io
import json
import os
import subprocess
import sys
import threading

import pytest

from agentvigil.actions import Killer, Terminal
from agentvigil.policy import MAX_KILL_GRACE, MAX_WEBHOOK_TIMEOUT

from .conftest import line, write_meta

PY = sys.executable
DEEP = "[" * 100_000 + "]" * 100_000


def watch(*args, timeout=60):
    return subprocess.run([PY, "-m", "agentvigil", "watch", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def session(tmp_path):
    directory = tmp_path / "s"
    directory.mkdir()
    (directory / "events.ndjson").write_text(line("run_start", ts=1, run_id="r"))
    return directory


def assert_usage_error(proc, key):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentvigil watch: config error: ") and key in lines[0], lines


# -- defect 1: config file and --set values ----------------------------------------------------------------
@pytest.mark.parametrize("data, key", [
    ({"webhook": {"events": [["cost"]]}}, "webhook.events[0]"),
    ({"webhook": {"events": [{"a": 1}]}}, "webhook.events[0]"),
    ({"webhook": {"url": "http://127.0.0.1:9/", "timeout_seconds": 1e300}}, "webhook.timeout_seconds"),
    ({"webhook": {"url": "http://127.0.0.1:9/", "timeout_seconds": MAX_WEBHOOK_TIMEOUT + 1}},
     "webhook.timeout_seconds"),
    ({"webhook": {"url": "http://[::1"}}, "webhook.url"),
    ({"watchers": {"runaway": {"state_file": "x\u0000y"}}}, "watchers.runaway.state_file"),
    ({"watchers": {"runaway": {"state_file": "DIR"}}}, "watchers.runaway.state_file"),
    ({"alerts_log": "a\u0000b", "watchers": {"retry": {"max": 3, "alert": "file"}}}, "alerts_log"),
    ({"alerts_log": "DIR", "watchers": {"retry": {"max": 3, "alert": "file"}}}, "alerts_log"),
    ({"watchers": {"loop": {"sequence_length": 10**30}}}, "watchers.loop.sequence_length"),
    ({"watchers": {"runaway": {"baseline_runs": 10**30}}}, "watchers.runaway.baseline_runs"),
])
def test_config_file_values_are_refused_at_load(tmp_path, session, data, key):
    text = json.dumps(data).replace('"DIR"', json.dumps(str(tmp_path)))
    config = tmp_path / "cfg.json"
    config.write_text(text)
    # a breach on the file action would have hit the bad alerts_log at run time: make sure one happens
    with open(session / "events.ndjson", "a") as fh:
        for _ in range(4):
            fh.write(line("tool_end", ts=1, run_id="r", tool_name="t", args_hash="a", status="error",
                          error_kind="tool_error"))
    assert_usage_error(watch(str(session), "--no-follow", "--config", str(config)), key)


def test_deeply_nested_config_file(tmp_path, session):
    config = tmp_path / "deep.json"
    config.write_text(DEEP)
    proc = watch(str(session), "--no-follow", "--config", str(config))
    assert_usage_error(proc, str(config))
    assert "nested too deeply" in proc.stderr


def test_deeply_nested_set_value(session):
    proc = watch(str(session), "--no-follow", "--set", "stuck.hold=" + "[" * 50_000 + "]" * 50_000)
    assert_usage_error(proc, "stuck.hold")


def test_hostile_key_in_config_error_is_escaped(tmp_path, session):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"watchers": {"retry": {"m\u001b[2J\nax": 3}}}))
    proc = watch(str(session), "--no-follow", "--config", str(config))
    assert_usage_error(proc, "watchers.retry.m\\x1b[2J\\nax")
    assert "\x1b" not in proc.stderr


# -- defect 2: kill.grace_seconds ------------------------------------------------------------------------
def test_kill_grace_has_an_upper_bound(tmp_path, session):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"kill": {"grace_seconds": 1e300}}))
    assert_usage_error(watch(str(session), "--no-follow", "--config", str(config), "--on-violation", "kill"),
                       "kill.grace_seconds")
    config.write_text(json.dumps({"kill": {"grace_seconds": MAX_KILL_GRACE}}))
    assert watch(str(session), "--no-follow", "--config", str(config)).returncode == 0
    assert_usage_error(watch(str(session), "--no-follow", "--kill-grace", "2h"), "--kill-grace")


@pytest.mark.parametrize("timeout", [1e300, float("inf"), float("nan"), -1.0])
def test_killer_join_takes_any_timeout(timeout):
    killer = Killer(grace=1e300)
    done = threading.Thread(target=lambda: None)
    done.start()
    killer._started[12345] = done
    killer.join(timeout)   # raised OverflowError for 1e300 before
    assert not done.is_alive()


# -- defect 3: flags are checked like the file -----------------------------------------------------------
@pytest.mark.parametrize("flag, value", [
    ("--max-cost", "nan"), ("--max-cost", "inf"), ("--max-cost", "-1"),
    ("--metrics-port", "99999"), ("--metrics-port", "-1"),
    ("--pid", "99999999999999999999"), ("--pid", "-5"), ("--pid", "0"),
    ("--webhook-url", "http://[::1"), ("--webhook-url", "http://host:99999/"), ("--webhook-url", "http:///x"),
    ("--status-every", "nan"),
    ("--loop-length", "100000"), ("--max-retries", "1" + "0" * 30),
])
def test_flag_values_are_checked(session, flag, value):
    assert_usage_error(watch(str(session), "--no-follow", f"{flag}={value}"), flag)


def test_valid_flags_still_pass(session):
    proc = watch(str(session), "--no-follow", "--max-cost", "5", "--pid", str(os.getpid()),
                 "--webhook-url", "http://127.0.0.1:9/hook", "--kill-grace", "1h")
    assert proc.returncode in (0, 3) and "config error" not in proc.stderr, proc.stderr   # 3: a duration breach


# -- defect 6: hostile labels on the terminal ------------------------------------------------------------
FORGED = "[watch] +0:00  ☠️  sent SIGTERM to pid 1 (forged line)"


def test_hostile_agent_and_tool_names_are_escaped(tmp_path):
    directory = tmp_path / "s"
    write_meta(str(directory), pid=os.getpid(), agent=f"bot)\n{FORGED}\x1b[31m\r\u202e")
    with open(directory / "events.ndjson", "w") as fh:
        for _ in range(4):
            fh.write(line("tool_end", run_id="r", tool_name="x\x1b[2J\x1b[Hy\x9b", args_hash="aa",
                          status="error", error_kind="tool_error"))
    proc = watch(str(directory), "--no-follow", "--max-retries", "3")
    assert proc.returncode == 3, proc.stderr
    for bad in ("\x1b", "\r", "\x9b", "\u202e"):
        assert bad not in proc.stderr
    lines = proc.stderr.splitlines()
    assert all(text.startswith("[watch] ") for text in lines), lines
    assert FORGED not in lines
    assert any("\\x1b[2J" in text and "RetryWatcher" in text for text in lines), lines
    assert any("\\n" + FORGED in text for text in lines), lines   # the name is shown, escaped, on its own line


def test_terminal_emit_escapes_controls_and_keeps_json():
    out = io.StringIO()
    Terminal(out, json_out=False, started=0.0).emit({"type": "breach"}, "a\nb\x1b[31mc\td\x7f ✅", 0.0)
    assert out.getvalue() == "[watch] +0:00  a\\nb\\x1b[31mc\\td\\x7f ✅\n"
    out = io.StringIO()
    Terminal(out, json_out=True, started=0.0).emit({"type": "breach", "message": "a\nb\x1b"}, "ignored", 0.0)
    assert json.loads(out.getvalue())["message"] == "a\nb\x1b"
