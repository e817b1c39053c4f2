import json
import os
import subprocess
import sys

import jsonschema
import pytest

import agentvigil
from agentvigil.replay import ReplayStats, replay
from agentvigil.sinks.recorder import process_start_time

SCHEMA_DIR = os.path.join(os.path.dirname(agentvigil.__file__), "schema")


def record_session(make_monitor, tmp_path, agent="rec"):
    mon = make_monitor(agent, record_dir=str(tmp_path), cost_min_runs=2)
    seen = []
    mon.subscribe(seen.append)
    for r in range(4):
        with mon.run(task_id=f"t{r}") as run:
            with run.step():
                run.llm_usage("openai", "gpt-4o-mini", input_tokens=1000 * (10 if r == 3 else 1), output_tokens=50)
                for _ in range(3 if r == 1 else 1):
                    with run.tool_call("search", {"q": "x"}) as call:
                        call.set_result("same")
            with run.step():
                for i in range(3):
                    for tool in ("read", "edit", "test"):
                        with run.tool_call(tool, {"i": tool}):
                            pass
    mon.flush()
    return mon, seen


def test_session_layout_meta_and_schema(make_monitor, tmp_path):
    mon, _ = record_session(make_monitor, tmp_path)
    session = tmp_path / mon.session_id
    meta = json.loads((session / "meta.json").read_text())
    jsonschema.validate(meta, json.load(open(os.path.join(SCHEMA_DIR, "meta.schema.json"))))
    assert meta["agent"] == "rec" and meta["pid"] == os.getpid()
    assert meta["process_start_time"] == pytest.approx(process_start_time(), abs=1)
    schema = json.load(open(os.path.join(SCHEMA_DIR, "event.schema.json")))
    lines = (session / "events.ndjson").read_text().splitlines()
    types = set()
    for line in lines:
        event = json.loads(line)
        jsonschema.validate(event, schema)
        types.add(event["event_type"])
    assert {"run_start", "step_start", "tool_start", "tool_end", "llm_call", "step_end", "run_end",
            "detection"} <= types
    assert "x" not in [json.loads(l).get("args") for l in lines]  # args are hashed, never recorded


def test_replay_finds_exactly_what_the_monitor_found(make_monitor, tmp_path):
    mon, seen = record_session(make_monitor, tmp_path)
    from agentvigil.config import Settings
    found = list(replay(str(tmp_path), Settings.from_env(cost_min_runs=2)))
    live = [(e.task_id, e.step_index, e.detector) for e in seen if e.event_type == "detection"]
    replayed = [(d["task_id"], d["step_index"], d["detector"]) for d in found]
    assert replayed == live
    assert {"same_result", "repeated_sequence", "cost_over_baseline"} <= {d for _, _, d in live}


def test_malformed_and_truncated_lines_are_counted_and_nothing_valid_lost(make_monitor, tmp_path):
    mon, _ = record_session(make_monitor, tmp_path)
    path = tmp_path / mon.session_id / "events.ndjson"
    good = path.read_text().splitlines()
    clean = list(replay(str(path)))
    bad = ["{not json", "[1,2]", '{"event_type":"nope","ts":1}', '{"event_type":"tool_end","ts":"yesterday"}',
           '{"event_type":"tool_end","ts":1,"step_index":-3}', "", "\x00\x01garbage"]
    mixed = []
    for i, line in enumerate(good):
        mixed.append(line)
        if i % 7 == 0:
            mixed.append(bad[i % len(bad)])
    path.write_text("\n".join(mixed) + "\n" + good[-1][: len(good[-1]) // 2])  # truncated last line
    stats = ReplayStats()
    again = list(replay(str(path), stats=stats))
    assert [(d["task_id"], d["detector"]) for d in again] == [(d["task_id"], d["detector"]) for d in clean]
    assert stats.skipped["truncated"] == 1
    assert sum(stats.skipped.values()) >= 5
    assert stats.events == len(good)


def test_replay_cli_json(make_monitor, tmp_path):
    mon, _ = record_session(make_monitor, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "agentvigil", "replay", str(tmp_path), "--json"],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, AGENTVIGIL_COST_MIN_RUNS="2"))
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(l) for l in proc.stdout.splitlines()]
    assert records and all({"task_id", "step_index", "detector", "detail"} <= set(r) for r in records)
    assert "1 session(s)" in proc.stderr and "0 skipped" in proc.stderr
    missing = subprocess.run([sys.executable, "-m", "agentvigil", "replay", str(tmp_path / "nope")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_full_queue_drops_are_counted_not_blocking(tmp_path, registry):
    from agentvigil.metrics import default_metrics
    from agentvigil.sinks.recorder import Recorder
    from agentvigil.events import Event
    import threading
    rec = Recorder(str(tmp_path), "flood", max_queue=10)
    before = default_metrics().registry.get_sample_value("agentvigil_events_dropped_total", {"sink": "recorder"}) or 0
    # hold the writer inside its first write (a slow disk), then flood: the rest must be dropped, none may block
    entered, release, append = threading.Event(), threading.Event(), rec._append
    rec._append = lambda lines: (entered.set(), release.wait(30), append(lines))
    rec.write(Event("heartbeat", -1.0))
    assert entered.wait(30)
    for i in range(19999):
        rec.write(Event("heartbeat", float(i)))
    release.set()
    rec.close()
    after = default_metrics().registry.get_sample_value("agentvigil_events_dropped_total", {"sink": "recorder"})
    lines = open(rec.events_path).read().splitlines()
    assert rec.dropped > 0 and len(lines) + rec.dropped == 20000
    assert after - before >= rec.dropped


def test_tool_paths_are_recorded_only_when_declared(make_monitor, tmp_path):
    mon = make_monitor("paths", record_dir=str(tmp_path))
    with mon.run() as run:
        with run.tool_call("write_file", {"path": "/etc/passwd", "body": "x"}, paths=["/etc/passwd"], access="write"):
            pass
        with run.tool_call("search", {"q": "secret"}):
            pass
    mon.flush()
    events = [json.loads(l) for l in (tmp_path / mon.session_id / "events.ndjson").read_text().splitlines()]
    tool_ends = [e for e in events if e["event_type"] == "tool_end"]
    assert tool_ends[0]["detail"] == {"paths": ["/etc/passwd"], "access": "write"}
    assert "detail" not in tool_ends[1]
    assert "secret" not in json.dumps(events) and '"body"' not in json.dumps(events)
