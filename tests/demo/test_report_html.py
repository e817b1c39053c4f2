"""`agentvigil report --format html`: one self-contained page with charts per agent, rendered by headless
Chromium (Debian's `chromium`): the screenshot is not blank and carries the chart colours, the DOM has every
chart of every agent. Also: `report` finds the demo's zombie with its default thresholds."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import pytest

from agentvigil.codec import encode
from agentvigil.demo import AGENTS, run_demo
from agentvigil.events import Event

from .conftest import cli_env

CHARTS = ("cost", "runs-errors", "loops", "breaker", "budget")


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo fleet at speed 10 for 9 s (scenario 0..90 s: every failure has started), recorded."""
    directory = tmp_path_factory.mktemp("sessions")
    run_demo(duration=9, port=None, speed=10, record_dir=str(directory), seed=7, status_every=0)
    return directory


@pytest.fixture(scope="module")
def page(sessions: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("html") / "report.html"
    result = subprocess.run([sys.executable, "-m", "agentvigil", "report", "--dir", str(sessions), "--format", "html",
                             "--out", str(out), "--zombie-after", "3s"],  # time runs 10x faster here
                            capture_output=True, text=True, timeout=120, env=cli_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""                    # --out: nothing on stdout
    return out


def test_page_is_self_contained(page: Path) -> None:
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script|<link|<img|<iframe|@import|url\(", text, re.I)
    assert not re.search(r"""\b(src|href)\s*=""", text, re.I)   # nothing to fetch
    # the only URL is the SVG namespace, which is a name, never fetched
    assert set(re.findall(r"https?://[^\s\"'<>]+", text)) == {"http://www.w3.org/2000/svg"}


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium not found: install the Debian package 'chromium' (CI does)")
    return path


def _headless(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


def read_png(path: Path) -> tuple[int, int, list[tuple[int, ...]]]:
    """(width, height, pixels) of an 8-bit RGB/RGBA non-interlaced PNG, as Chromium writes them."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _c, _f, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw, stride = zlib.decompress(idat), width * channels
    pixels: list[tuple[int, ...]] = []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        pixels.extend(tuple(line[i:i + 3]) for i in range(0, stride, channels))
        previous = line
    return width, height, pixels


def test_chromium_screenshot_shows_the_charts(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    result = _headless(tmp_path, f"--screenshot={shot}", "--window-size=1400,1800", page.as_uri())
    assert shot.exists(), result.stderr[-2000:]
    width, height, pixels = read_png(shot)
    assert (width, height) == (1400, 1800)
    colours = Counter(pixels)
    background, _ = colours.most_common(1)[0]
    assert sum(n for c, n in colours.items() if c != background) > 0.05 * len(pixels)  # not blank
    # chart colours are on screen: run cost (blue), baseline (orange), error bars (red), ok bars (green)
    for rgb in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E), (0xD6, 0x27, 0x28), (0x2C, 0xA0, 0x2C)):
        near = sum(n for c, n in colours.items() if all(abs(a - b) <= 12 for a, b in zip(c, rgb, strict=True)))
        assert near > 50, f"colour {rgb} barely on screen ({near} px)"


def test_chromium_dom_has_every_chart_of_every_agent(page: Path, tmp_path: Path) -> None:
    result = _headless(tmp_path, "--dump-dom", page.as_uri())
    dom = result.stdout
    assert "<section" in dom, result.stderr[-2000:]
    sections = dict(re.findall(r'<section class="agent" data-agent="([^"]+)">(.*?)</section>', dom, re.S))
    assert set(sections) == set(AGENTS)
    for agent, body in sections.items():
        charts = re.findall(r'<svg class="chart" data-chart="([^"]+)"', body)
        assert tuple(charts) == CHARTS, (agent, charts)
    research, billing, coder = sections["research-agent"], sections["billing-agent"], sections["coder-agent"]
    assert research.count('class="verdict"') >= 3                          # loop verdicts drawn
    assert 'data-series="ok run cost"' in research and 'data-series="baseline"' in research
    assert re.search(r'data-chart="breaker".*?data-series="azure-openai"', billing, re.S)
    assert re.search(r'data-chart="budget".*?data-series="coder-agent"', coder, re.S)
    assert 'data-label="rate_limit"' in research and 'data-label="auth"' in billing   # errors by kind
    assert "attention: zombie stalls" in sections["ops-agent"]
    assert '<span class="ok">ok</span>' in sections["support-bot"]


def test_report_finds_the_zombie_with_default_thresholds(tmp_path: Path) -> None:
    """A session like the demo's ops-agent at its default length: a run hung in a tool call from t=40 to
    the end (180 s), heartbeats every second. The default --zombie-after catches it; healthy runs do not."""
    session = tmp_path / "sessions" / "s-ops"
    session.mkdir(parents=True)
    t0 = time.time() - 3600
    events = [Event(event_type="run_start", ts=t0 + 40, agent_id="ops-agent", session_id="s-ops", run_id="r1"),
              Event(event_type="step_start", ts=t0 + 40, agent_id="ops-agent", session_id="s-ops", run_id="r1")]
    events += [Event(event_type="heartbeat", ts=t0 + 41 + i, agent_id="ops-agent", session_id="s-ops", status="busy")
               for i in range(140)]
    healthy = tmp_path / "sessions" / "s-support"
    healthy.mkdir()
    good = []
    for i in range(60):
        ts = t0 + 3 * i
        good += [Event(event_type="run_start", ts=ts, agent_id="support-bot", session_id="s-support", run_id=f"g{i}"),
                 Event(event_type="heartbeat", ts=ts + 1, agent_id="support-bot", session_id="s-support",
                       status="busy"),
                 Event(event_type="step_end", ts=ts + 2, agent_id="support-bot", session_id="s-support",
                       run_id=f"g{i}", status="ok"),
                 Event(event_type="run_end", ts=ts + 2.5, agent_id="support-bot", session_id="s-support",
                       run_id=f"g{i}", status="ok", cost_usd=0.001)]
    (session / "events.ndjson").write_text("".join(encode(e) + "\n" for e in events))
    (healthy / "events.ndjson").write_text("".join(encode(e) + "\n" for e in good))
    result = subprocess.run([sys.executable, "-m", "agentvigil", "report", "--dir", str(tmp_path / "sessions"),
                             "--format", "json"], capture_output=True, text=True, timeout=60,
                            env=cli_env())
    assert result.returncode == 0, result.stderr
    import json

    agents = json.loads(result.stdout)["agents"]
    assert agents["ops-agent"]["zombie_stalls"] == 1
    assert agents["support-bot"]["zombie_stalls"] == 0
