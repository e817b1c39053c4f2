"""``agentvigil report`` over recorded sessions and a supervisor journal."""

import json
import os
import subprocess
import sys
import time

from agentvigil.supervise import report

NOW = time.time()
DAY = 86400.0


def write_session(root, name, agent, events, started_at):
    path = root / name
    path.mkdir(parents=True)
    (path / "meta.json").write_text(json.dumps({"session_id": name, "agent": agent, "pid": 1,
                                                "started_at": started_at}))
    lines = [json.dumps(dict(e, agent_id=agent, session_id=name)) for e in events]
    (path / "events.ndjson").write_text("\n".join(lines) + "\n{\"event_type\":\"run_e")   # a cut-off last line


def sessions(tmp_path):
    root = tmp_path / "rec"
    t0 = NOW - 2 * DAY                     # baseline window: 3 ok runs of $0.10
    old = [{"event_type": "run_end", "ts": t0 + i, "status": "ok", "cost_usd": 0.10, "run_id": f"o{i}"}
           for i in range(3)]
    write_session(root, "old", "bot", old, t0)
    t = NOW - 3600                         # report window
    events = []
    for i in range(4):
        events += [{"event_type": "run_start", "ts": t, "run_id": f"r{i}"},
                   {"event_type": "llm_call", "ts": t + 1, "cost_usd": 0.30, "token_count": 1000, "status": "ok"},
                   {"event_type": "run_end", "ts": t + 2, "run_id": f"r{i}", "status": "ok", "cost_usd": 0.30}]
        t += 10
    events += [
        {"event_type": "run_start", "ts": t, "run_id": "bad"},
        {"event_type": "tool_end", "ts": t + 1, "status": "error", "error_kind": "rate_limit", "tool_name": "s"},
        {"event_type": "llm_call", "ts": t + 2, "status": "error", "error_kind": "rate_limit"},
        {"event_type": "detection", "ts": t + 3, "detector": "repeat_call"},
        {"event_type": "breaker_transition", "ts": t + 4, "name": "openai", "state": "open", "reason": "rate_limit"},
        {"event_type": "budget_exceeded", "ts": t + 5, "name": "daily", "token_count": 120_000},
        {"event_type": "run_end", "ts": t + 6, "run_id": "bad", "status": "error", "error_kind": "timeout"},
    ]
    t += 10
    events.append({"event_type": "run_start", "ts": t, "run_id": "stuck"})
    events += [{"event_type": "heartbeat", "ts": t + k * 5, "status": "busy"} for k in range(1, 200)]  # ~16 min
    write_session(root, "today", "bot", events, NOW - 3600)
    journal = [{"ts": NOW - 1800, "agent": "bot", "type": "incident", "kind": "zombie"},
               {"ts": NOW - 1799, "agent": "bot", "type": "restart", "reason": "zombie"},
               {"ts": NOW - 3 * DAY, "agent": "bot", "type": "restart", "reason": "crash"}]    # outside the window
    (root / "supervisor-bot.ndjson").write_text("\n".join(json.dumps(r) for r in journal) + "\nnot json\n")
    return root


def test_report_numbers(tmp_path):
    data = report.build_report(str(sessions(tmp_path)), since=DAY, baseline=7 * DAY, now=NOW)
    bot = data["agents"]["bot"]
    assert bot["runs"] == 5 and bot["runs_by_status"] == {"ok": 4, "error": 1}
    assert bot["success_rate"] == 0.8
    assert bot["cost_usd"] == 1.2 and bot["tokens"] == 4000
    assert bot["baseline_run_cost_usd"] == 0.1 and bot["median_run_cost_usd"] == 0.3 and bot["cost_vs_baseline"] == 3.0
    assert bot["loops"] == {"repeat_call": 1}
    assert bot["breaker_trips"] == {"openai": 1}
    assert bot["budget_exceeded"] == {"daily": {"count": 1, "peak_tokens": 120000}}
    assert bot["top_error_kinds"][0] == ["rate_limit", 2] or bot["top_error_kinds"][0] == ("rate_limit", 2)
    assert bot["zombie_stalls"] == 1
    assert bot["restarts"] == 1 and bot["restarts_by_reason"] == {"zombie": 1}
    assert bot["incidents"] == {"zombie": 1}
    assert data["skipped_lines"] == 2              # the cut-off last line of each session


def test_report_formats_and_webhook(tmp_path, webhook):
    data = report.build_report(str(sessions(tmp_path)), since=DAY, now=NOW)
    text = report.render(data, "text")
    assert "bot: ATTENTION: success rate 80.0%; run cost ×3.0 baseline; zombie stalls; 1 restarts; loops" in text
    markdown = report.render(data, "markdown")
    assert markdown.startswith("# agentvigil report") and "| success rate | 80.0% |" in markdown
    assert json.loads(report.render(data, "json"))["agents"]["bot"]["runs"] == 5
    assert report.post_report(webhook.url, data) == ""
    assert "*bot*: 5 runs, 80.0% ok" in webhook.bodies[0]["text"]


def test_report_cli(tmp_path):
    root = sessions(tmp_path)
    os.utime(root / "today" / "events.ndjson", None)
    env = dict(os.environ, OTEL_SDK_DISABLED="true")
    result = subprocess.run([sys.executable, "-m", "agentvigil.supervise", "report", "--dir", str(root), "--since",
                             "30000d", "--format", "json"], capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["agents"]["bot"]["runs"] >= 5
    result = subprocess.run([sys.executable, "-m", "agentvigil.supervise", "report", "--dir", str(tmp_path / "nope")],
                            capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 2 and "no such directory" in result.stderr


def test_report_on_what_a_supervisor_recorded(supervise):
    run = supervise("crash", cooldown=0.1, max_restarts=1)
    run.join(15)
    data = report.build_report(run.supervisor.record_dir, since=3600)
    assert data["agents"]["child-agent"]["restarts"] == 1 and data["agents"]["child-agent"]["gave_up"] == 1
    assert data["agents"]["child-agent"]["incidents"] == {"crash": 2}
