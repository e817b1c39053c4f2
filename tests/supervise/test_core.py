"""The decision core and the small I/O pieces, without child processes."""

import json
import os
import socket
import subprocess
import sys

import pytest

from agentvigil.supervise import (
    ChildHealth,
    ConfigError,
    CycleBaseline,
    HealthPolicy,
    RestartPolicy,
    SupervisePolicy,
    build_policy,
    classify_exit,
)
from agentvigil.supervise.notify import Notice, alertmanager_payload, slack_payload
from agentvigil.supervise.policy import parse_duration
from agentvigil.supervise.sdnotify import SdNotify

from .conftest import CHILD

POLICY = HealthPolicy(heartbeat_interval=1.0, liveness_timeout=5.0, startup_timeout=10.0, progress_timeout=60.0,
                      cost_spike_factor=10.0, baseline_cycles=50, min_cycles=3)


def hb(status="busy", session="s1"):
    return {"event_type": "heartbeat", "status": status, "session_id": session}


def call(cost, tokens=100):
    return {"event_type": "llm_call", "cost_usd": cost, "token_count": tokens, "session_id": "s1"}


# -- restart policy ---------------------------------------------------------------------------------------
def test_restart_policy_spaces_starts_by_the_cooldown_and_gives_up_after_n_in_the_window():
    policy = RestartPolicy(cooldown=300, max_restarts=3, window=3600)
    assert policy.next_start(10, [0]) == 300                  # crashed 10 s after the start: wait
    assert policy.next_start(1000, [0]) == 1000               # ran for a while: restart at once
    assert policy.next_start(1000, [0, 300, 600]) == 1000
    assert policy.next_start(1000, [0, 300, 600, 900]) is None   # 3 restarts within the hour: give up
    assert policy.next_start(5000, [0, 300, 600, 900]) == 5000   # old restarts leave the window


# -- the health core --------------------------------------------------------------------------------------
def test_zombie_is_busy_heartbeats_without_progress_and_reported_once():
    health = ChildHealth(POLICY, started_at=0)
    health.feed({"event_type": "run_start", "run_id": "r", "session_id": "s1"}, 1)
    for t in range(2, 60, 1):
        health.feed(hb("busy"), t)
    assert health.check(60) == []
    health.feed(hb("busy"), 62)
    assert [f.kind for f in health.check(62)] == ["zombie"]
    assert health.check(63) == []                               # once per stall
    assert not health.progressing(63) and health.live(63)
    health.feed({"event_type": "step_end", "session_id": "s1"}, 64)
    assert health.progressing(64)


def test_an_idle_agent_is_not_a_zombie_and_liveness_needs_heartbeats():
    health = ChildHealth(POLICY, started_at=0)
    assert health.live(9) and not health.live(11)              # startup allowance
    for t in range(1, 200, 1):
        health.feed(hb("idle"), t)
    assert health.check(199) == []
    assert [f.kind for f in health.check(205)] == ["liveness_lost"]


def test_cost_spike_against_the_rolling_baseline_of_active_cycles():
    health = ChildHealth(POLICY, started_at=0)
    health.feed(hb(), 0)
    t = 0
    for _ in range(5):                       # normal cycles of $0.01, with idle cycles between them
        health.feed(call(0.01), t + 0.5)
        assert health.feed(hb(), t + 1) is None
        assert health.feed(hb(), t + 2) is None
        t += 2
    health.feed(call(0.05), t + 0.5)         # 5x: not a spike
    assert health.feed(hb(), t + 1) is None
    for _ in range(20):
        health.feed(call(0.02), t + 1.5)
    spike = health.feed(hb(), t + 2)
    assert spike.kind == "cost_spike" and spike.detail["unit"] == "usd" and spike.detail["ratio"] > 10
    for _ in range(20):
        health.feed(call(0.02), t + 2.5)
    assert health.feed(hb(), t + 3) is None  # same episode: reported once
    assert max(health.baseline.costs) < 0.1  # spikes never enter the baseline


def test_token_baseline_when_no_call_is_priced():
    baseline = CycleBaseline(size=10, min_cycles=2)
    assert baseline.judge(0, 100, 10) is None and baseline.judge(0, 120, 10) is None
    assert baseline.judge(0, 5000, 10)["unit"] == "tokens"


def test_exit_classification():
    health = ChildHealth(POLICY, started_at=0)
    assert classify_exit(1, "service", health, False).kind == "crash"
    assert classify_exit(-9, "service", health, False).detail == {"signal": "SIGKILL"}
    assert classify_exit(0, "service", health, False).kind == "silent_exit"
    assert classify_exit(0, "job", health, False).kind == "silent_exit"      # no run finished: not done
    health.feed({"event_type": "run_end", "status": "ok", "run_id": "r"}, 1)
    assert classify_exit(0, "job", health, False).kind == "done"
    assert classify_exit(-15, "service", health, True).kind == "stopped"


# -- options and config files -----------------------------------------------------------------------------
def test_durations():
    assert parse_duration("5m") == 300 and parse_duration("100ms") == 0.1 and parse_duration(30) == 30
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_config_file_then_flags(tmp_path):
    path = tmp_path / "sup.toml"
    path.write_text('[supervise]\ncooldown = "1m"\nmax_restarts = 5\non_zombie = "alert"\n')
    policy = build_policy(str(path), {"max_restarts": "2", "cooldown": None})
    assert (policy.cooldown, policy.max_restarts, policy.on_zombie) == (60, 2, "alert")
    assert policy.restart == RestartPolicy(cooldown=60, max_restarts=2, window=3600)


@pytest.mark.parametrize("text, message", [
    ('cooldwn = "1m"\n', "unknown key 'cooldwn'"),
    ('cooldown = "soon"\n', "bad value for 'cooldown'"),
    ('on_zombie = "panic"\n', "expected one of restart, alert, ignore"),
    ('[restart]\ncooldown = 1\n', "unknown key 'restart'"),
    ('heartbeat_interval = 10\nliveness_timeout = 5\n', "'liveness_timeout' (5s) must be longer"),
    ('webhook_url = "hooks.example"\n', "'webhook_url' must start with http"),
])
def test_config_errors_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        build_policy(str(path), {})
    assert str(path) in str(info.value)


def test_flag_errors_name_the_flag():
    with pytest.raises(ConfigError, match="--max-restarts"):
        build_policy(None, {"max_restarts": "many"})


def test_json_config(tmp_path):
    path = tmp_path / "sup.json"
    path.write_text(json.dumps({"mode": "job", "stop_grace": "10s"}))
    policy = build_policy(str(path), {})
    assert policy.mode == "job" and policy.stop_grace == 10


# -- payloads and sd_notify -------------------------------------------------------------------------------
def test_payloads():
    notice = Notice("zombie", "bot", "warning", {"seconds_without_progress": 700}, "restart", 1_800_000_000.0)
    slack = slack_payload(notice)
    assert slack["text"].startswith(":warning: [agentvigil] *zombie* Agent bot is alive but has made no progress")
    [alert] = alertmanager_payload(notice, ttl=3600, host="h1")
    assert alert["labels"] == {"alertname": "AgentSupervisorZombie", "agent": "bot", "severity": "warning",
                               "source": "agentvigil-supervise", "instance": "h1"}
    assert alert["startsAt"] == "2027-01-15T08:00:00Z" and alert["endsAt"] == "2027-01-15T09:00:00Z"


def test_sd_notify_ready_status_watchdog(tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(2)
        sd = SdNotify({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
        assert sd.watchdog_interval == 1.0
        sd.ready("bot: running")
        sd.watchdog(now=100.0)
        sd.watchdog(now=100.5)               # throttled to half of WatchdogSec
        sd.status("bot: backoff")
        messages = [sock.recv(1024).decode() for _ in range(3)]
    assert messages == ["READY=1\nSTATUS=bot: running", "WATCHDOG=1", "STATUS=bot: backoff"]
    assert not SdNotify({}).enabled


# -- the command line -------------------------------------------------------------------------------------
def _cli(*args, timeout=30):
    env = dict(os.environ, OTEL_SDK_DISABLED="true")
    return subprocess.run([sys.executable, "-m", "agentvigil.supervise", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_cli_exit_codes(tmp_path):
    common = ["--port", "0", "--record-dir", str(tmp_path / "rec"), "--cooldown", "0.1", "--max-restarts", "1",
              "--heartbeat-interval", "0.1", "--liveness-timeout", "1"]
    result = _cli("supervise", *common, "--", sys.executable, str(CHILD), "crash")
    assert result.returncode == 3, result.stderr
    assert "giving up after 1 restarts" in result.stderr
    result = _cli("supervise", *common, "--", str(tmp_path / "no-such-agent"))
    assert result.returncode == 2 and "cannot start" in result.stderr
    result = _cli("supervise", "--cooldown", "soon", "--", "true")
    assert result.returncode == 2 and "--cooldown" in result.stderr
    result = _cli("supervise", "--port", "0")
    assert result.returncode == 2 and "no command given" in result.stderr


def test_registered_in_the_agentvigil_cli():
    import argparse

    from agentvigil.supervise.command import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["supervise", "--max-restarts", "3", "--", "python", "agent.py", "--flag"])
    assert args.cmd[-3:] == ["python", "agent.py", "--flag"]
    assert parser.parse_args(["report", "--since", "2h"]).since == "2h"


def test_agentvigil_cli_has_both_commands(tmp_path, capsys):
    from agentvigil import cli

    assert cli.main(["report", "--dir", str(tmp_path / "none")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert cli.main(["supervise", "--max-restarts", "x", "--", "true"]) == 2
    assert "--max-restarts" in capsys.readouterr().err


def test_manual_progress_heartbeat_is_progress_and_keeps_the_run_busy():
    """Monitor.heartbeat() from an agent that does not use steps: not a zombie, still busy."""
    health = ChildHealth(POLICY, started_at=0)
    health.feed({"event_type": "run_start", "run_id": "r", "session_id": "s1"}, 1)
    for t in range(2, 120, 2):
        health.feed(hb("busy"), t)
        health.feed({"event_type": "heartbeat", "session_id": "s1", "status": "progress"}, t + 1)
        assert health.check(t + 1) == []
    assert health.sessions["s1"].busy
    for t in range(120, 190, 2):   # the manual beats stop: now it is a zombie
        health.feed(hb("busy"), t)
    assert [f.kind for f in health.check(190)] == ["zombie"]


# -- the same checks as pipeline detectors ---------------------------------------------------------------
def _ev(kind, ts, **fields):
    from agentvigil.events import Event

    return Event(kind, ts, agent_id="bot", session_id=fields.pop("session_id", "s1"), **fields)


def test_health_detectors_are_built_only_with_supervise_thresholds():
    from agentvigil.pipeline.build import build_pipeline
    from agentvigil.settings import Settings

    plain, _ = build_pipeline(Settings.from_env())
    assert plain.detector("liveness_lost") is None and plain.detector("cost_spike") is None   # in-process, replay
    supervised, context = build_pipeline(Settings.from_env(), health=POLICY)
    assert supervised.detector("liveness_lost").family == "liveness"
    assert supervised.detector("cost_spike").family == "cost"              # one family with cost_over_baseline
    assert context.families["zombie"] == "liveness"


def test_zombie_and_liveness_verdicts_are_detection_events_through_the_pipeline():
    from agentvigil.pipeline.build import build_pipeline
    from agentvigil.settings import Settings

    pipeline, _ = build_pipeline(Settings.from_env(), health=POLICY)   # no clock: event time (replay-like)
    pipeline.emit(_ev("run_start", 1.0, run_id="r"))
    for t in range(2, 63):
        pipeline.emit(_ev("heartbeat", float(t), status="busy"))
    [zombie] = pipeline.tick(63.0)
    assert zombie.event_type == "detection" and zombie.detector == "zombie" and zombie.session_id == "s1"
    assert zombie.detail["seconds_without_progress"] > 60 and zombie.reason.startswith("Zombie")
    assert pipeline.tick(64.0) == []                                   # once per stall
    [lost] = pipeline.tick(70.0)                                       # no heartbeat for 7 s > 5 s
    assert lost.detector == "liveness_lost" and lost.detail["heartbeat_seen"] is True


def test_cost_spike_verdict_from_events():
    from agentvigil.detectors.cycle_cost import CycleCostDetector

    detector = CycleCostDetector(10.0, 1.0, CycleBaseline(50, 3))
    detector.feed(_ev("heartbeat", 0.0, status="busy"))
    t = 0.0
    for _ in range(4):
        detector.feed(_ev("llm_call", t + 0.5, cost_usd=0.01))
        assert detector.feed(_ev("heartbeat", t + 1, status="busy")) is None
        t += 1
    detector.feed(_ev("llm_call", t + 0.5, cost_usd=0.5))
    detector.feed(_ev("heartbeat", t + 0.7, status="progress"))       # Monitor.heartbeat(): closes no cycle
    [spike] = detector.feed(_ev("heartbeat", t + 1, status="busy"))
    assert spike.detector == "cost_spike" and spike.detail["ratio"] > 10 and spike.run_id is None


def test_supervisor_judges_cycle_costs_against_the_baseline_it_reports(tmp_path):
    from prometheus_client import CollectorRegistry

    from agentvigil.supervise import Supervisor

    policy = SupervisePolicy().with_values({"record_dir": str(tmp_path), "agent": "a", "cost_spike_factor": 10.0})
    sup = Supervisor([sys.executable, "-c", "pass"], policy, registry=CollectorRegistry(), serve=False)
    try:
        # one baseline, kept across restarts, feeds both the cost_spike verdicts and the baseline gauge
        assert sup._cycle is not None
        baseline = sup._cycle.cycle.baseline
        sup._cycle.reset()                            # what a restart does
        assert sup.pipeline.detector("cost_spike").cycle.baseline is baseline
    finally:
        sup.close()
