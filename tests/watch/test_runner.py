import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request

from prometheus_client import CollectorRegistry

from agentvigil.cli import build_parser, main
from agentvigil.exposition import start_metrics_server
from agentvigil.metrics import metrics_for
from agentvigil.watch.command import build_config
from agentvigil.watch.runner import EXIT_BREACH, EXIT_KILLED, EXIT_OK, Watch
from agentvigil.watch.sources import resolve

from .conftest import append, line, wait_for, write_meta


def config_for(*argv):
    return build_config(build_parser().parse_args(["watch", *argv]))


def run_in_thread(watch):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("rc", watch.run()), daemon=True)
    thread.start()
    return thread, result


def records(buf):
    return [json.loads(x) for x in buf.getvalue().splitlines()]


def test_live_append_reaches_webhook_in_milliseconds(tmp_path, receiver):
    r = receiver()
    session = tmp_path / "s1"
    write_meta(session)                                   # our own (live, verified) process
    events = session / "events.ndjson"
    append(events, line("run_start", run_id="r1"))
    out = io.StringIO()
    watch = Watch(resolve(str(session)), config_for("--max-retries", "2", "--webhook-url", r.url),
                  json_out=True, out=out, timeout=1.0, status_every=0)
    thread, result = run_in_thread(watch)
    assert wait_for(lambda: "start" in out.getvalue())
    append(events, line("tool_end", run_id="r1", tool_name="bash", args_hash="h", status="error"))
    time.sleep(0.05)
    t0 = time.perf_counter()
    append(events, line("tool_end", run_id="r1", tool_name="bash", args_hash="h", status="error"))
    assert r.event.wait(2)
    latency = r.received_at[0] - t0
    assert latency < 0.5, latency
    assert r.bodies[0]["watcher"] == "retry"
    thread.join(10)
    assert result["rc"] == EXIT_BREACH


def test_file_not_there_yet_partial_and_bad_lines(tmp_path):
    path = tmp_path / "later" / "events.ndjson"
    out = io.StringIO()
    watch = Watch(resolve(str(path)), config_for("--max-retries", "2", "--alert", "file", "--alerts-log",
                                                 str(tmp_path / "alerts.ndjson")),
                  json_out=True, out=out, timeout=1.0, status_every=0)
    thread, result = run_in_thread(watch)
    time.sleep(0.1)
    path.parent.mkdir()
    bad = "not json\n" + '{"event_type":"nope","ts":1}\n' + '{"event_type":"tool_end","ts":"x"}\n'
    first = line("tool_end", tool_name="t", args_hash="a", status="error")
    append(path, bad + first[:10])
    time.sleep(0.05)
    append(path, first[10:] + line("tool_end", tool_name="t", args_hash="a", status="error"))
    thread.join(10)
    recs = records(out)
    assert result["rc"] == EXIT_BREACH
    assert [r["watcher"] for r in recs if r["type"] == "breach"] == ["retry"]
    end = [r for r in recs if r["type"] == "end"][0]
    assert end["events"] == 2 and end["skipped"] == {"invalid_json": 1, "unknown_event_type": 1, "bad_field": 1}
    logged = [json.loads(x) for x in (tmp_path / "alerts.ndjson").read_text().splitlines()]
    assert logged[0]["watcher"] == "retry"


def test_silence_while_process_lives(tmp_path):
    session = tmp_path / "s"
    write_meta(session)
    append(session / "events.ndjson", line("heartbeat", status="idle"))
    out = io.StringIO()
    watch = Watch(resolve(str(session)), config_for("--silence", "200ms"), json_out=True, out=out, timeout=1.0,
                  status_every=0.3)
    assert watch.run() == EXIT_BREACH
    recs = records(out)
    assert [r["watcher"] for r in recs if r["type"] == "breach"] == ["silence"]
    assert any(r["type"] == "status" for r in recs)


def test_dead_process_session_is_judged_then_ends(tmp_path, capsys):
    session = tmp_path / "sessions" / "old"
    write_meta(session, pid=2 ** 22 - 1, start=1.0)      # not running
    append(session / "events.ndjson", line("tool_end", tool_name="a", args_hash="1", status="ok"))
    assert main(["watch", str(tmp_path / "sessions"), "--timeout", "5"]) == EXIT_OK
    err = capsys.readouterr().err
    assert "Monitoring session old" in err and "ended (process" in err


def test_all_follows_new_sessions(tmp_path):
    root = tmp_path / "sessions"
    write_meta(root / "a")
    append(root / "a" / "events.ndjson", line("llm_call", cost_usd=3.0, provider="p", model="m"))
    out = io.StringIO()
    watch = Watch(resolve(str(root)), config_for("--max-cost", "2"), all_sessions=True, json_out=True, out=out,
                  timeout=1.5, status_every=0)
    thread, _ = run_in_thread(watch)
    time.sleep(0.3)
    write_meta(root / "b")
    append(root / "b" / "events.ndjson", line("llm_call", cost_usd=5.0, provider="p", model="m"))
    thread.join(10)
    breaches = [r for r in records(out) if r["type"] == "breach"]
    assert sorted(b["session_id"] for b in breaches) == ["a", "b"]


def test_default_path_is_the_recorder_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_meta(tmp_path / ".agentvigil" / "sessions" / "x", pid=2 ** 22 - 1, start=1.0)
    append(tmp_path / ".agentvigil" / "sessions" / "x" / "events.ndjson", line("heartbeat"))
    assert main(["watch", "--json", "--timeout", "5"]) == EXIT_OK
    assert '"session_id":"x"' in capsys.readouterr().out


def test_metrics_bridge_serves_the_contract(tmp_path):
    session = tmp_path / "s"
    write_meta(session, pid=2 ** 22 - 1, start=1.0)
    lines = [line("run_start", agent_id="go-agent", run_id="r"),
             line("tool_end", agent_id="go-agent", run_id="r", tool_name="search", status="error",
                  error_kind="timeout", duration_ms=20),
             line("llm_call", agent_id="go-agent", run_id="r", provider="openai", model="m", input_tokens=100,
                  output_tokens=10, cache_read_tokens=50, cost_usd=0.01, status="ok", duration_ms=300),
             line("step_end", agent_id="go-agent", run_id="r"),
             line("breaker_transition", agent_id="go-agent", name="openai", state="open", reason="failures"),
             line("budget_exceeded", agent_id="go-agent", name="b", token_count=5,
                  detail={"limit": 100, "committed": 95, "reserved": 10}),
             line("kill", agent_id="go-agent", run_id="r", reason="watch"),
             line("run_end", agent_id="go-agent", run_id="r", status="killed", cost_usd=0.01, duration_ms=900,
                  step_index=1)]
    lines += [line("tool_end", agent_id="go-agent", run_id="r2", tool_name="s", args_hash="a", result_hash="b")] * 3
    append(session / "events.ndjson", "".join(lines))
    registry = CollectorRegistry()
    watch = Watch(resolve(str(session)), config_for(), out=io.StringIO(), follow=False,
                  metrics=metrics_for(registry), status_every=0)
    watch.run()
    server, _ = start_metrics_server(0, registry=registry)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
    for expected in ['agent_tool_errors_total{agent="go-agent",kind="timeout",tool="search"} 1.0',
                     'agent_runs_total{agent="go-agent",status="killed"} 1.0',
                     'agent_active_runs{agent="go-agent"} 0.0',
                     'agent_cost_usd_total{agent="go-agent",model="m",provider="openai"} 0.01',
                     'agent_cache_hit_ratio{agent="go-agent",model="m",provider="openai"} 0.5',
                     'agent_circuit_breaker_state{breaker="openai"} 1.0',
                     'agent_budget_utilization_ratio{budget="b"} 1.05',
                     'agent_kills_total{agent="go-agent",reason="watch"} 1.0',
                     'agent_loop_detections_total{agent="go-agent",detector="same_result"} 1.0',
                     'agent_steps_total{agent="go-agent"} 1.0']:
        assert expected in text, expected


AGENT = textwrap.dedent("""
    import os, sys, time
    import agentvigil
    from prometheus_client import CollectorRegistry
    mon = agentvigil.Monitor("looper", record_dir=sys.argv[1], registry=CollectorRegistry(), heartbeat=False)
    print(mon.recorder.path, flush=True)
    try:
        with mon.run("t") as run:
            while True:
                time.sleep(0.05)
                with run.step():
                    with run.tool_call("fetch", {"url": "same"}) as call:
                        call.set_result("same")
    except agentvigil.RunKilled:
        time.sleep(30)   # the agent's own clean-up; agentvigil.control ends the process (KILL_EXIT_DELAY=0)
""")


def test_watch_kills_a_real_agent_that_loops(tmp_path):
    env = dict(os.environ, AGENTVIGIL_KILL_SIGNAL="TERM", AGENTVIGIL_KILL_EXIT_DELAY="0")
    child = subprocess.Popen([sys.executable, "-c", AGENT, str(tmp_path)], stdout=subprocess.PIPE, env=env)
    try:
        session = child.stdout.readline().decode().strip()
        out = io.StringIO()
        watch = Watch(resolve(session), config_for("--on-violation", "kill", "--kill-grace", "3s"), json_out=True,
                      out=out, timeout=15, status_every=0)
        assert watch.run() == EXIT_KILLED
        assert child.wait(5) == -signal.SIGTERM             # graceful: stopped at a boundary, flushed, exited
        recs = records(out)
        assert recs[1]["type"] == "breach" and "kill" in recs[1]["actions"]
        assert any(r["type"] == "action" and "sent SIGTERM" in r["message"] for r in recs)
        assert [r["reason"] for r in recs if r["type"] == "end"][0].startswith("process")
        tail = [json.loads(x) for x in open(os.path.join(session, "events.ndjson"))][-3:]
        assert any(e["event_type"] == "run_end" and e["status"] == "killed" for e in tail)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_no_follow_judges_a_final_unterminated_line(tmp_path):
    """A recorder killed mid-write leaves a last line without its newline: --no-follow judges it if it is a
    whole event, and counts it as truncated if it is not."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    for session in (whole, cut):
        write_meta(session, pid=2 ** 22 - 1, start=1.0)
    events = line("run_start", run_id="r") + "".join(
        line("tool_end", run_id="r", tool_name="bash", args_hash="h", status="error") for _ in range(3))
    append(whole / "events.ndjson", events + line("tool_end", run_id="r", tool_name="bash", args_hash="h",
                                                  status="error").rstrip("\n"))
    append(cut / "events.ndjson", events + '{"event_type":"tool_end","ts":1')
    results = {}
    for session in (whole, cut):
        out = io.StringIO()
        rc = Watch(resolve(str(session)), config_for("--max-retries", "4"), follow=False, json_out=True, out=out,
                   status_every=0, use_inotify=False).run()
        results[session.name] = (rc, records(out))
    rc, recs = results["whole"]
    assert rc == EXIT_BREACH and "retry" in [r["watcher"] for r in recs if r["type"] == "breach"]   # 4th failure
    assert [r for r in recs if r["type"] == "end"][0]["events"] == 5
    rc, recs = results["cut"]
    end = [r for r in recs if r["type"] == "end"][0]
    assert "retry" not in [r["watcher"] for r in recs if r["type"] == "breach"]
    assert end["events"] == 4 and end["skipped"] == {"truncated": 1}
