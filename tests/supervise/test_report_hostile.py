"""``agentvigil report`` against hostile input: supervisor journals, guard_state details, unreadable session
files, Prometheus answers, webhook URLs and ids with control characters. Each gives a counted skip or a
one-line error, never a traceback or a hang; nothing raw reaches the terminal."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator

import pytest
from hostile_http import HostileServer

from agentvigil.supervise import report, report_html

NOW = time.time()


def _session(root, events, name="s1"):
    path = root / name
    path.mkdir(parents=True)
    (path / "events.ndjson").write_text("".join(json.dumps(e) + "\n" for e in events))
    return path / "events.ndjson"


def _journal(root, lines):
    root.mkdir(parents=True, exist_ok=True)
    (root / "supervisor-1.ndjson").write_text("".join(line + "\n" for line in lines))


def _strict(text: str) -> object:
    def bad(token: str) -> object:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=bad)


# -- 1. hostile supervisor journals ------------------------------------------------------------------------
GOOD = json.dumps({"ts": NOW - 60, "type": "restart", "agent": "a", "reason": "crash"})


@pytest.mark.parametrize("record", [
    {"ts": NOW - 60, "type": "restart", "agent": ["x"]},
    {"ts": NOW - 60, "type": "restart", "agent": 5},
    {"ts": NOW - 60, "type": "restart", "agent": "a", "reason": {"k": 1}},
    {"ts": NOW - 60, "type": "incident", "agent": "a", "kind": [1]},
    {"ts": NOW - 60, "type": ["restart"], "agent": "a"},
    {"ts": True, "type": "restart", "agent": "a"},
    {"ts": "now", "type": "restart", "agent": "a"},
])
def test_journal_hostile_fields_are_counted_skips(tmp_path, record):
    _journal(tmp_path, [GOOD, json.dumps(record)])
    data = report.build_report(str(tmp_path), now=NOW)
    assert data["skipped_journal_lines"] == 1 and data["skipped_lines"] == 0
    assert data["agents"]["a"]["restarts_by_reason"] == {"crash": 1}
    for fmt in ("text", "markdown", "json"):
        assert report.render(data, fmt)


def test_journal_deeply_nested_and_overlong_lines_are_counted_skips(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "MAX_JOURNAL_LINE", 1000)
    _journal(tmp_path, ["[" * 100_000, GOOD, '{"x": "' + "y" * 5000 + '"}', GOOD])
    data = report.build_report(str(tmp_path), now=NOW)
    assert data["skipped_journal_lines"] == 2
    assert data["agents"]["a"]["restarts"] == 2
    assert "(2 unreadable supervisor journal lines skipped)" in report.render(data, "text")
    assert "2 unreadable supervisor journal lines skipped" in report.render_page(data, str(tmp_path))


# -- 2. guard_state numbers the HTML page cannot chart ------------------------------------------------------
@pytest.mark.parametrize("detail", [
    {"guard": "budget", "limit": "abc"},
    {"guard": "budget", "limit": [1]},
    {"guard": "budget", "limit": 10, "committed": "x"},
    {"guard": "budget", "limit": 10**400},
    {"guard": "budget", "limit": 10, "reserved": 10**400},
    {"guard": "budget", "limit": -5},
])
def test_html_guard_state_with_unusable_numbers_is_skipped(tmp_path, detail):
    _session(tmp_path, [{"event_type": "guard_state", "ts": NOW - 60, "agent_id": "a", "name": "b",
                         "detail": detail}])
    data = report.build_report(str(tmp_path), now=NOW)
    page = report.render_page(data, str(tmp_path))
    assert "1 guard_state events with an unusable budget limit" in page
    timelines = report_html.build_timelines(str(tmp_path), NOW - 3600, NOW)
    assert timelines["a"].budgets == {} and timelines["a"].unusable == 1


def test_html_guard_state_usable_numbers_still_charted(tmp_path):
    _session(tmp_path, [{"event_type": "guard_state", "ts": NOW - 60, "agent_id": "a", "name": "b",
                         "detail": {"guard": "budget", "limit": 100, "committed": 30, "reserved": 20}}])
    timelines = report_html.build_timelines(str(tmp_path), NOW - 3600, NOW)
    assert timelines["a"].budgets["b"] == [(pytest.approx(NOW - 60), 0.5)]


# -- 3. an unreadable session file --------------------------------------------------------------------------
def test_unreadable_session_file_is_a_counted_skip(tmp_path, monkeypatch):
    ok = {"event_type": "run_end", "ts": NOW - 60, "agent_id": "a", "status": "ok"}
    _session(tmp_path, [ok], "s1")
    bad = _session(tmp_path, [ok], "s2")
    real = report.read_events

    def read_events(path, stats, *args, **kwargs):   # EACCES as a non-root user gets it from chmod 000
        if path == str(bad):
            raise PermissionError(13, "Permission denied", path)
        return real(path, stats, *args, **kwargs)

    monkeypatch.setattr(report, "read_events", read_events)
    monkeypatch.setattr(report_html, "read_events", read_events)
    data = report.build_report(str(tmp_path), now=NOW)
    assert data["unreadable_files"] == 1 and data["unreadable"] == [f"{bad}: Permission denied"]
    assert data["agents"]["a"]["runs"] == 1
    assert "(1 unreadable files skipped:" in report.render(data, "text")
    assert "(1 unreadable files skipped:" in report.render(data, "markdown")
    assert _strict(report.render(data, "json"))["unreadable_files"] == 1
    assert "1 unreadable files skipped" in report.render_page(data, str(tmp_path))


# -- 6, 7. Prometheus answers: bounded, deadline, hostile shapes -------------------------------------------
Server = functools.partial(HostileServer, content_type="application/json", drip=b" ", endless=b"[" * 65536)


@pytest.fixture
def prom() -> Iterator[HostileServer]:
    server = Server({
        "deep": b'{"data":{"result":' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
        "metric_list": json.dumps({"data": {"result": [{"metric": ["x"], "value": [0, "1"]}]}}).encode(),
        "label_int": json.dumps({"data": {"result": [{"metric": {"agent": 5}, "value": [0, "1"]}]}}).encode(),
        "nan": json.dumps({"data": {"result": [{"metric": {"agent": "a"}, "value": [0, "NaN"]},
                                               {"metric": {"agent": "b"}, "value": [0, "+Inf"]},
                                               {"metric": {"agent": "c"}, "value": [0, "2.5"]}]}}).encode(),
        "ctrl": json.dumps({"data": {"result": [{"metric": {"agent": "\x1b[2Jx\ny"}, "value": [0, "1"]}]}}).encode(),
    })
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("case, message", [("deep", "nested too deeply"), ("metric_list", "malformed answer"),
                                           ("label_int", "malformed answer")])
def test_prometheus_hostile_shapes_are_errors(prom, case, message):
    results = report.query_prometheus(f"{prom.url}/{case}", 3600, timeout=5)
    assert set(results) == set(report.PROMETHEUS_QUERIES)
    for result in results.values():
        assert isinstance(result, dict) and message in result["error"]
    data = {"window": {"start": NOW - 3600, "end": NOW}, "agents": {}, "prometheus": results}
    assert message in report.render(data, "text") and message in report.render(data, "markdown")


def test_prometheus_nan_value_is_valid_json(prom):
    results = report.query_prometheus(f"{prom.url}/nan", 3600, timeout=5)
    assert [item["value"] for item in results["runs"]] == [None, None, 2.5]
    data = {"window": {"start": NOW - 3600, "end": NOW}, "agents": {}, "prometheus": results}
    parsed = _strict(report.render(data, "json"))
    assert parsed["prometheus"]["runs"][0]["value"] is None
    assert "agent=a: NaN" in report.render(data, "text")


def test_render_json_never_writes_bare_nan():
    data = {"window": {"start": 0.0, "end": 1.0}, "agents": {}, "x": [float("nan"), {"y": float("inf")}]}
    assert _strict(report.render(data, "json"))["x"] == [None, {"y": None}]


def test_prometheus_slow_drip_is_bounded_by_the_deadline(prom):
    started = time.monotonic()
    results = report.query_prometheus(f"{prom.url}/drip", 3600, timeout=5, deadline=2.0)
    assert time.monotonic() - started < 15          # generous: the deadline is 2 s for all the queries
    assert all("error" in r for r in results.values())


def test_prometheus_endless_body_is_capped(prom, monkeypatch):
    monkeypatch.setattr(report, "API_MAX_BYTES", 1024 * 1024)
    results = report.query_prometheus(f"{prom.url}/endless", 3600, timeout=5, deadline=30.0)
    assert all("larger than" in r["error"] for r in results.values())


def test_prometheus_labels_with_control_characters_are_escaped(prom):
    results = report.query_prometheus(f"{prom.url}/ctrl", 3600, timeout=5)
    data = {"window": {"start": NOW - 3600, "end": NOW}, "agents": {}, "prometheus": results}
    for fmt in ("text", "markdown"):
        text = report.render(data, fmt)
        assert "\x1b" not in text and "\\x1b[2Jx\\ny" in text


# -- 8. malformed webhook URLs -------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["notaurl", "http://[::1", "file:///dev/null", "http://", "ftp://example.com/x",
                                 "http://exa mple.com/"])
def test_malformed_webhook_url_is_a_one_line_error(url):
    data = {"window": {"start": NOW - 3600, "end": NOW}, "agents": {}}
    error = report.post_report(url, data)
    assert error and "\n" not in error and "--webhook-url" in error


def test_report_refuses_a_malformed_webhook_url_before_building_the_report(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "report.txt"
    done = subprocess.run([sys.executable, "-m", "agentvigil", "report", "--dir", str(tmp_path), "--out", str(out),
                           "--webhook-url", "http://[::1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--webhook-url" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()   # nothing written for a command line that cannot be carried out


@pytest.mark.parametrize("fmt", ["text", "markdown", "json", "html"])
def test_report_with_a_lone_surrogate_in_an_id(tmp_path, fmt):
    import subprocess
    import sys

    session = tmp_path / "s1"
    session.mkdir()
    (session / "events.ndjson").write_text('{"event_type":"run_end","ts":%f,"agent_id":"bot\\ud800","session_id":"s1",'
                                           '"status":"error"}\n' % (NOW - 60))
    done = subprocess.run([sys.executable, "-m", "agentvigil", "report", "--dir", str(tmp_path), "--since", "1d",
                           "--format", fmt], capture_output=True, timeout=60)
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr[-1000:]
    assert b"bot" in done.stdout
    if fmt == "json":   # repaired as the recorder repairs it: strict decoders (orjson's, replay's) accept it
        from agentvigil import codec

        assert b"\\ud800" not in done.stdout and "bot\ufffd" in json.dumps(codec.loads(done.stdout),
                                                                            ensure_ascii=False)


# -- 11. control characters in ids ----------------------------------------------------------------------------
def test_control_characters_in_ids_are_escaped(tmp_path):
    evil = "\x1b[2J\x1b[31mEVIL\r\nfake|line"
    _session(tmp_path, [{"event_type": "budget_exceeded", "ts": NOW - 60, "agent_id": evil, "name": "b\x1b]0;x\x07",
                         "session_id": "s\x1b]0;pwned\x07\nfake line"},
                        {"event_type": "run_end", "ts": NOW - 50, "agent_id": evil, "status": "error",
                         "error_kind": "k\nfake"}])
    _journal(tmp_path, [json.dumps({"ts": NOW - 60, "type": "restart", "agent": evil, "reason": "r\x1b[1m\n"})])
    data = report.build_report(str(tmp_path), now=NOW)
    assert list(data["agents"]) == [evil]
    text = report.render(data, "text")
    markdown = report.render(data, "markdown")
    for out in (text, markdown):
        assert not any(c in out for c in "\x1b\r\x07")
        assert not any(line.startswith("fake") for line in out.splitlines())
        assert "\\x1b[2J\\x1b[31mEVIL\\r\\nfake" in out
    for line in markdown.splitlines():
        if line.startswith("| "):
            assert line.count("|") == 3, line                 # every table row keeps its two cells
