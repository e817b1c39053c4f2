"""agent-strace sessions: a fixture in its format (models.py TraceEvent / SessionMeta, hooks.py payloads)."""

import json
import os
import time

from agentvigil import events as ev
from agentvigil.cli import main
from agentvigil.watch.strace import StraceMapper


def strace_session(root, session_id="a1b2c3d4e5f60718", events=(), active=True):
    d = root / ".agent-traces" / session_id
    d.mkdir(parents=True)
    (d / "meta.json").write_text(json.dumps({"session_id": session_id, "started_at": time.time(),
                                             "agent_name": "claude-code", "command": "claude-code (startup)"},
                                            indent=2))
    with open(d / "events.ndjson", "w") as fh:
        for i, (kind, data) in enumerate(events):
            record = {"event_type": kind, "timestamp": time.time() + i * 0.01, "event_id": f"e{i:04d}",
                      "session_id": session_id, "data": data}
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
    if active:
        (root / ".agent-traces" / ".active-session").write_text(session_id)
    return d


def failing_pytest(n):
    out = []
    for _ in range(n):
        out.append(("tool_call", {"tool_name": "Bash", "arguments": {"command": "python -m pytest"}}))
        out.append(("error", {"tool_name": "Bash", "error": "1 failed"}))
    return out


def test_mapping():
    m = StraceMapper("s1", "claude-code")
    start = m.map({"event_type": "tool_call", "timestamp": 1.0, "data": {
        "tool_name": "Write", "arguments": {"file_path": "/etc/hosts", "content": "x"}}})[0]
    assert start.event_type == ev.TOOL_START and start.detail == {"path": "/etc/hosts", "access": "write"}
    assert start.args_hash and "content" not in json.dumps(start.to_dict())          # raw args never kept
    end = m.map({"event_type": "tool_result", "timestamp": 2.0, "duration_ms": 5, "data": {
        "tool_name": "Write", "result": "ok"}})[0]
    assert (end.event_type, end.status, end.args_hash, end.duration_ms) == (ev.TOOL_END, "ok", start.args_hash, 5)
    err = m.map({"event_type": "error", "timestamp": 3.0, "data": {"tool_name": "Bash", "error": "boom"}})[0]
    assert err.status == "error" and err.error_kind == "tool_error"
    llm = m.map({"event_type": "llm_response", "timestamp": 4.0, "data": {
        "model": "claude-sonnet-4", "usage": {"input_tokens": 10, "output_tokens": 5}}})[0]
    assert (llm.event_type, llm.input_tokens, llm.output_tokens, llm.token_count) == (ev.LLM_CALL, 10, 5, 15)
    assert m.map({"event_type": "session_end", "timestamp": 5.0})[0].event_type == ev.RUN_END
    assert m.map({"event_type": "decision", "timestamp": 6.0, "data": {}}) == []
    read = m.map({"event_type": "file_read", "timestamp": 7.0, "data": {"path": "src/a.py"}})[0]
    assert read.detail == {"path": "src/a.py", "access": "read"}


def test_watch_strace_dir_retry_scope_and_session_end(tmp_path, capsys):
    events = [("session_start", {"mode": "claude-code-hooks"})]
    events += failing_pytest(3)
    events += [("tool_call", {"tool_name": "Edit", "arguments": {"file_path": "prod/config.yaml"}}),
               ("tool_result", {"tool_name": "Edit", "result": "ok"}),
               ("session_end", {"duration_ms": 1000})]
    strace_session(tmp_path, events=events)
    (tmp_path / ".agent-scope.json").write_text(json.dumps({"files": {"write": {"allow": ["src/*"]}}}))
    rc = main(["watch", str(tmp_path / ".agent-traces"), "--json", "--max-retries", "3", "--escalate", "terminal",
               "--scope-policy", str(tmp_path / ".agent-scope.json"), "--timeout", "5", "--status-every", "0"])
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    breaches = [r for r in records if r["type"] == "breach"]
    assert rc == 3
    by = {b["watcher"]: b for b in breaches}
    assert by["retry"]["message"] == 'RetryWatcher: "python -m pytest" failed 3 times'
    assert by["scope"]["detail"]["path"] == "prod/config.yaml" and by["scope"]["detail"]["reason"] == \
        "not in files.write.allow"
    assert by["correlated"]["actions"] == ["terminal"]
    end = [r for r in records if r["type"] == "end"]
    assert end and end[0]["reason"] == "session_end" and end[0]["events"] == 10


def test_strace_kill_without_pid_is_refused(tmp_path, capsys):
    strace_session(tmp_path, events=failing_pytest(3) + [("session_end", {})])
    rc = main(["watch", str(tmp_path / ".agent-traces"), "--json", "--max-retries", "3", "--on-violation", "kill",
               "--timeout", "5", "--status-every", "0"])
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    refused = [r for r in records if r["type"] == "action"]
    assert rc == 3 and refused and "agent-strace sessions record none: pass --pid" in refused[0]["message"]


def test_newest_and_active_session_choice(tmp_path, capsys):
    old = strace_session(tmp_path, "0000000000000001", events=[("session_end", {})], active=False)
    os.utime(old, (1, 1))
    strace_session(tmp_path, "0000000000000002", events=failing_pytest(1) + [("session_end", {})], active=True)
    assert main(["watch", str(tmp_path / ".agent-traces"), "--json", "--timeout", "5"]) == 0
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["session_id"] for r in records if r["type"] == "start"] == ["0000000000000002"]
