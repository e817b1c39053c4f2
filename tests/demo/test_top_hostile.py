"""``agentvigil top`` against hostile /metrics and /api/v1/alerts answers: NaN and ±Inf samples, label values
of the wrong type, deep nesting, slow-drip and endless bodies, control characters and NUL in labels, and a
non-finite --interval. Each gives a row, a "no answer" line or a one-line error; never a traceback, a hang
or raw control characters on the terminal."""

from __future__ import annotations

import argparse
import functools
import io
import json
import time
from collections.abc import Iterator

import pytest
from hostile_http import HostileServer

from agentvigil import demostack, top
from agentvigil.top import Row, attach_alerts, parse_metrics, snapshot

GOOD = b'# TYPE agent_runs_total counter\nagent_runs_total{agent="a",status="ok"} 3\n'


Server = functools.partial(HostileServer, content_type="text/plain", drip=b"#", endless=b"# HELP x y\n" * 6000)


def _alerts(*alerts: dict) -> bytes:
    return json.dumps({"status": "success", "data": {"alerts": list(alerts)}}).encode()


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    server = Server({
        "good": GOOD,
        "nan": b'agent_runs_total{agent="a"} NaN\nagent_loop_detections_total{agent="a"} -Inf\n'
               b'agent_progress_timestamp_seconds{agent="a"} NaN\nagent_budget_utilization_ratio{budget="a"} NaN\n',
        "inf": b'agent_runs_total{agent="a"} +Inf\nagent_loop_detections_total{agent="a"} 1e300\n',
        "ansi": b'agent_runs_total{agent="\x1b[2J\x1b[31mEVIL\\nfake"} 1\n',
        "nul": b'agent_runs_total{agent="a\x00b"} 1\n',
        "alerts_deep": b'{"data":{"alerts":' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
        "alerts_agent_list": _alerts({"state": "firing", "labels": {"alertname": "X", "agent": ["a"]}}),
        "alerts_breaker_list": _alerts({"state": "firing", "labels": {"alertname": "X", "breaker": ["p"]}}),
        "alerts_name_int": _alerts({"state": "firing", "labels": {"alertname": 5, "agent": "a"}}),
        "alerts_ctrl": _alerts({"state": "firing", "labels": {"alertname": "X\x1b[2J\nY", "agent": "a"}}),
    })
    try:
        yield server
    finally:
        server.close()


# -- 4. NaN / ±Inf samples -----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["nan", "inf"])
def test_non_finite_samples_render(hostile, case):
    lines = snapshot(f"{hostile.url}/{case}/metrics", None, now=time.time())
    assert "no answer" not in lines[0]
    row = lines[2]
    assert row.startswith("a ") and (" nan " in row or " inf " in row)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 1e300])
def test_row_render_with_non_finite_counters(value):
    text = Row("a", runs=value, loops=value, progress=value, budget=value, cache=value).render(1000.0)
    assert text.startswith("a ")


# -- 5. hostile /api/v1/alerts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["alerts_agent_list", "alerts_breaker_list", "alerts_name_int", "alerts_deep"])
def test_hostile_alerts_answer(hostile, case):
    lines = snapshot(f"{hostile.url}/good/metrics", f"{hostile.url}/{case}", now=time.time())
    assert lines[2].startswith("a ")
    if case == "alerts_deep":
        assert lines[0].endswith("no answer")


def test_attach_alerts_ignores_label_values_of_the_wrong_type():
    rows = parse_metrics(GOOD.decode())
    rows["a"].providers.add("p")
    others = attach_alerts(rows, [
        {"state": "firing", "labels": {"alertname": "X", "agent": ["a"]}},
        {"state": "firing", "labels": {"alertname": "Y", "breaker": ["p"]}},
        {"state": "firing", "labels": {"alertname": 5, "agent": "a"}},
        {"state": "firing", "labels": {"alertname": {"deep": [[[]]]}, "budget": {"a": 1}}},
        {"state": "firing", "labels": ["not", "a", "dict"]},
    ])
    assert rows["a"].alerts == ["?"]
    assert others == ["?", "X", "Y"]


def test_fetch_firing_deep_nesting_is_no_answer(hostile):
    assert demostack.fetch_firing(f"{hostile.url}/alerts_deep") is None


# -- 6. bounded fetches: a total deadline, a size cap -------------------------------------------------------------
def test_slow_drip_metrics_is_bounded_by_the_deadline(hostile, monkeypatch):
    monkeypatch.setattr(top, "fetch", functools.partial(top.fetch, deadline=1.5))
    started = time.monotonic()
    lines = snapshot(f"{hostile.url}/drip/metrics", None)
    assert time.monotonic() - started < 15          # generous: the deadline is 1.5 s
    assert "no answer" in lines[0] and len(lines) == 1


def test_slow_drip_alerts_is_bounded_by_the_deadline(hostile):
    started = time.monotonic()
    assert demostack.fetch_firing(hostile.url + "/drip", deadline=1.5) is None
    assert time.monotonic() - started < 15


def test_endless_metrics_body_is_capped(hostile):
    with pytest.raises(ValueError, match="larger than"):
        top.fetch(f"{hostile.url}/endless/metrics", max_bytes=1024 * 1024, deadline=30)


def test_endless_alerts_body_is_capped(hostile, monkeypatch):
    monkeypatch.setattr(demostack, "API_MAX_BYTES", 1024 * 1024)
    assert demostack.fetch_firing(hostile.url + "/endless", deadline=30) is None


def test_documented_caps():
    assert top.METRICS_MAX_BYTES == 16 * 1024 * 1024 and demostack.API_MAX_BYTES == 4 * 1024 * 1024


# -- 9. --interval must be finite and > 0 --------------------------------------------------------------------------
@pytest.mark.parametrize("interval", [float("nan"), float("inf"), 0.0, -1.0])
def test_interval_must_be_finite_and_positive(interval, capsys):
    args = argparse.Namespace(interval=interval, metrics="http://127.0.0.1:9/metrics", prometheus="", once=True)
    assert top._cmd_top(args) == 2
    assert "--interval" in capsys.readouterr().err


# -- 10. curses: a NUL in a label ---------------------------------------------------------------------------------
class FakeScreen:
    """What ``live`` uses of a curses window; addnstr raises as curses does on a NUL."""

    def __init__(self) -> None:
        self.drawn: list[str] = []

    def timeout(self, ms: int) -> None:
        pass

    def getmaxyx(self) -> tuple[int, int]:
        return 24, 200

    def erase(self) -> None:
        pass

    def addnstr(self, y: int, x: int, text: str, n: int, attr: int = 0) -> None:
        if "\0" in text:
            raise ValueError("embedded null character")
        self.drawn.append(text)

    def refresh(self) -> None:
        pass

    def getch(self) -> int:
        return ord("q")


def test_live_view_draws_a_nul_label_escaped(hostile, monkeypatch):
    import curses

    screen = FakeScreen()
    monkeypatch.setattr(curses, "wrapper", lambda draw: draw(screen))
    monkeypatch.setattr(curses, "curs_set", lambda visibility: None)
    monkeypatch.setattr(curses, "A_BOLD", 0, raising=False)
    monkeypatch.setattr(curses, "A_NORMAL", 0, raising=False)
    monkeypatch.setattr(curses, "A_DIM", 0, raising=False)
    top.live(lambda: ["title", top.HEADER, "a\0b \x1b[2J row"], 1.0)
    assert "a\\x00b \\x1b[2J row" in screen.drawn


def test_live_view_with_real_snapshot_of_a_nul_label(hostile, monkeypatch):
    import curses

    screen = FakeScreen()
    monkeypatch.setattr(curses, "wrapper", lambda draw: draw(screen))
    monkeypatch.setattr(curses, "curs_set", lambda visibility: None)
    monkeypatch.setattr(top.sys, "stdin", _Tty())
    top.show(f"{hostile.url}/nul/metrics", None, 1.0, out=_Tty())
    assert any(line.startswith("a\\x00b ") for line in screen.drawn)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


# -- 11. control characters in labels, plain mode ------------------------------------------------------------------
def test_plain_mode_escapes_control_characters(hostile):
    out = io.StringIO()
    top.plain(lambda: snapshot(f"{hostile.url}/ansi/metrics", f"{hostile.url}/alerts_ctrl"), 1.0, 1, out)
    text = out.getvalue()
    assert "\x1b" not in text and "\\x1b[2J" in text
    out = io.StringIO()
    top.plain(lambda: snapshot(f"{hostile.url}/good/metrics", f"{hostile.url}/alerts_ctrl"), 1.0, 1, out)
    text = out.getvalue()
    assert "\x1b" not in text and "X\\x1b[2J\\nY" in text
    assert not any(line.startswith("Y") for line in text.splitlines())
