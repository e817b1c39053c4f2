"""``agentvigil report --format html``: the report as one self-contained page (inline CSS and SVG, no script,
no font, no network) with charts per agent: cost per run against its baseline over time, runs and errors by
kind, loop verdicts, breaker and budget timelines.

The timelines come from a second pass over the same session files as ``report.build_report``. The baseline
drawn is the cost_over_baseline detector's rule (rolling median of ok runs; runs above spike_factor × the
baseline never feed it), so a runaway stays visible against it.
"""

from __future__ import annotations

import html
import math
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from ..replay import ReplayStats, find_event_files, read_events
from ..signals.cost import CostBaseline

LOOP_DETECTORS = ("repeat_call", "same_result", "repeated_sequence")
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
MAX_POINTS = 2000  # per series: a day of runs is thinned to this many points, the page stays small


@dataclass
class Timeline:
    runs: list[tuple[float, float, float | None, str]] = field(default_factory=list)  # ts, cost, baseline, status
    errors: Counter[str] = field(default_factory=Counter)
    loops: list[tuple[float, str]] = field(default_factory=list)
    breakers: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    budgets: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    unusable: int = 0   # guard_state events whose numbers cannot be charted (not numbers, not finite, limit <= 0)


BREAKER_LEVEL = {"closed": 0.0, "half_open": 0.5, "half-open": 0.5, "open": 1.0}


def _number(value: object, default: float | None = None) -> float | None:
    """A finite float from a JSON number; ``default`` when absent (None, 0), None when unusable (a string,
    a list, NaN, ±Inf, an integer too large for a float)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _state(event: dict) -> str | None:
    state = event.get("state")
    return state if isinstance(state, str) and state in BREAKER_LEVEL else None


def build_timelines(directory: str, start: float, end: float, agents: list[str] | None = None,
                    spike_factor: float = 3.0, baseline_runs: int = 50, min_runs: int = 5) -> dict[str, Timeline]:
    out: dict[str, Timeline] = defaultdict(Timeline)
    baselines: dict[str, CostBaseline] = {}
    stats = ReplayStats()
    try:
        files = find_event_files(directory)
    except FileNotFoundError:
        files = []
    events: list[dict] = []
    for path in files:
        try:
            if os.path.getmtime(path) < start:
                continue
        except OSError:
            continue
        try:
            events.extend(e.to_dict() for e in read_events(path, stats))
        except OSError:
            continue   # unreadable: build_report counts it and the page says so
    events.sort(key=lambda e: e.get("ts") or 0.0)
    for event in events:
        ts = float(event.get("ts") or 0.0)
        name = event.get("agent_id") or "unknown"
        if not start <= ts <= end or (agents and name not in agents):
            continue
        kind, line = event.get("event_type"), out[name]
        if kind == "run_end":
            cost = float(event.get("cost_usd") or 0.0)
            baseline = baselines.setdefault(name, CostBaseline(baseline_runs, min_runs))
            line.runs.append((ts, cost, baseline.value, event.get("status") or "unknown"))
            if event.get("status") == "ok" and (baseline.value is None or cost <= spike_factor * baseline.value):
                baseline.add(cost)
        elif kind in ("tool_end", "llm_call") and event.get("status") == "error":
            line.errors[event.get("error_kind") or "unknown"] += 1
        elif kind == "detection" and event.get("detector") in LOOP_DETECTORS:
            line.loops.append((ts, str(event["detector"])))
        elif kind == "breaker_transition" and _state(event):
            line.breakers[str(event.get("name") or "breaker")].append((ts, BREAKER_LEVEL[str(event["state"])]))
        elif kind == "guard_state":
            detail = event.get("detail")
            detail = detail if isinstance(detail, dict) else {}
            if detail.get("guard") == "budget" and detail.get("limit"):
                limit = _number(detail["limit"])
                committed, reserved = _number(detail.get("committed"), 0.0), _number(detail.get("reserved"), 0.0)
                ratio = None
                if limit is not None and limit > 0 and committed is not None and reserved is not None:
                    ratio = (committed + reserved) / limit
                if ratio is None or not math.isfinite(ratio):
                    line.unusable += 1     # counted and said on the page, not charted
                    continue
                line.budgets[str(event.get("name") or "budget")].append((ts, ratio))
            elif detail.get("guard") == "breaker" and _state(event):
                line.breakers[str(event.get("name") or "breaker")].append((ts, BREAKER_LEVEL[str(event["state"])]))
    return dict(out)


# -- SVG ---------------------------------------------------------------------------------------------------
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 640, 180, 84, 12, 22, 26


def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    step = max(1, len(points) // MAX_POINTS)
    return points[::step]


def _fmt(value: float, unit: str) -> str:
    if unit == "$":
        return f"${value:.4f}" if value < 1 else f"${value:.2f}"
    if unit == "%":
        return f"{value:.0%}"
    return f"{value:g}"


def _frame(chart: str, title: str, x0: float, x1: float, y1: float, unit: str, y_labels: bool = True,
           x_labels: bool = True) -> list[str]:
    parts = [f'<svg class="chart" data-chart="{chart}" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
             f'viewBox="0 0 {W} {H}" role="img" aria-label="{html.escape(title)}">',
             f'<rect x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/>',
             f'<text x="{PAD_L}" y="14" class="t">{html.escape(title)}</text>',
             f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" stroke="#999"/>',
             f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" stroke="#999"/>']
    for frac in (0.0, 0.5, 1.0) if y_labels else ():
        y = H - PAD_B - frac * (H - PAD_T - PAD_B)
        parts.append(f'<text x="{PAD_L - 4}" y="{y + 4:.1f}" class="a" text-anchor="end">'
                     f'{_fmt(frac * y1, unit)}</text>')
    span = max(x1 - x0, 1e-9)
    for frac in (0.0, 0.5, 1.0) if x_labels else ():
        x = PAD_L + frac * (W - PAD_L - PAD_R)
        label = f"+{frac * span:.0f}s" if span < 600 else f"+{frac * span / 60:.0f}m"
        parts.append(f'<text x="{x:.1f}" y="{H - 8}" class="a" text-anchor="middle">{label}</text>')
    return parts


def _xy(x: float, y: float, x0: float, x1: float, y1: float) -> tuple[float, float]:
    px = PAD_L + (x - x0) / max(x1 - x0, 1e-9) * (W - PAD_L - PAD_R)
    py = H - PAD_B - (y / y1 if y1 else 0.0) * (H - PAD_T - PAD_B)
    return px, py


def line_chart(chart: str, title: str, series: list[tuple[str, str, list[tuple[float, float]], bool]],
               x0: float, x1: float, unit: str = "", y_max: float | None = None) -> str:
    """``series``: (label, color, points, step). Empty points draw an empty frame saying "no data"."""
    top = y_max if y_max is not None else max((y for *_, pts, _s in series for _x, y in pts), default=0.0) * 1.1
    top = top or 1.0
    parts = _frame(chart, title, x0, x1, top, unit)
    legend_x = W - PAD_R
    for label, color, points, step in reversed(series):
        legend_x -= 8 * len(label) + 24
        parts.append(f'<rect x="{legend_x}" y="6" width="10" height="10" fill="{color}"/>'
                     f'<text x="{legend_x + 14}" y="15" class="a">{html.escape(label)}</text>')
        pts = _thin(points)
        if not pts:
            continue
        coords: list[str] = []
        for i, (x, y) in enumerate(pts):
            px, py = _xy(x, y, x0, x1, top)
            if step and i:
                coords.append(f"{px:.1f},{coords[-1].split(',')[1]}")
            coords.append(f"{px:.1f},{py:.1f}")
        if step:  # the last state holds until the end of the window
            coords.append(f"{_xy(x1, 0, x0, x1, top)[0]:.1f},{coords[-1].split(',')[1]}")
        parts.append(f'<polyline class="series" data-series="{html.escape(label)}" fill="none" stroke="{color}" '
                     f'stroke-width="1.5" points="{" ".join(coords)}"/>')
    if not any(points for *_, points, _s in series):
        parts.append(f'<text x="{W / 2}" y="{H / 2}" class="a" text-anchor="middle">no data</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(chart: str, title: str, bars: list[tuple[str, float, str]]) -> str:
    top = max((v for _l, v, _c in bars), default=0.0) or 1.0
    parts = _frame(chart, title, 0, 0, top * 1.1, "", x_labels=False)
    slot = (W - PAD_L - PAD_R) / max(len(bars), 1)
    for i, (label, value, color) in enumerate(bars):
        bh = value / (top * 1.1) * (H - PAD_T - PAD_B)
        x = PAD_L + i * slot + slot * 0.15
        parts.append(f'<rect class="bar" data-label="{html.escape(label)}" x="{x:.1f}" y="{H - PAD_B - bh:.1f}" '
                     f'width="{slot * 0.7:.1f}" height="{bh:.1f}" fill="{color}"/>'
                     f'<text x="{x + slot * 0.35:.1f}" y="{H - PAD_B - bh - 3:.1f}" class="a" '
                     f'text-anchor="middle">{value:g}</text>'
                     f'<text x="{x + slot * 0.35:.1f}" y="{H - 8}" class="a" text-anchor="middle">'
                     f'{html.escape(label[:14])}</text>')
    if not bars:
        parts.append(f'<text x="{W / 2}" y="{H / 2}" class="a" text-anchor="middle">no runs</text>')
    parts.append("</svg>")
    return "".join(parts)


def loop_chart(loops: list[tuple[float, str]], x0: float, x1: float) -> str:
    parts = _frame("loops", f"loop verdicts ({len(loops)})", x0, x1, 1.0, "", y_labels=False)
    rows = {d: i for i, d in enumerate(LOOP_DETECTORS)}
    band = (H - PAD_T - PAD_B) / len(rows)
    for detector, i in rows.items():
        parts.append(f'<text x="{PAD_L - 4}" y="{PAD_T + band * (i + 0.5) + 4:.1f}" class="a" '
                     f'text-anchor="end">{detector}</text>')
    for ts, detector in loops[:MAX_POINTS]:
        px = _xy(ts, 0, x0, x1, 1)[0]
        py = PAD_T + band * (rows[detector] + 0.5)
        parts.append(f'<circle class="verdict" cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{COLORS[1]}"/>')
    if not loops:
        parts.append(f'<text x="{W / 2}" y="{H / 2}" class="a" text-anchor="middle">no loop verdicts</text>')
    parts.append("</svg>")
    return "".join(parts)


CSS = """body{font:14px system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.ok{color:#2a7a2a}.bad{color:#b00020}table{border-collapse:collapse;margin:8px 0}
td{padding:2px 12px 2px 0;vertical-align:top}.charts{display:flex;flex-wrap:wrap;gap:10px}
svg.chart{background:#fff;border:1px solid #ddd}svg .t{font:bold 12px sans-serif}
svg .a{font:10px sans-serif;fill:#555}"""


def render_html(data: dict, timelines: dict[str, Timeline], rows: object, attention: object) -> str:
    """The page. ``rows(agent) -> [(key, value)]`` and ``attention(agent) -> [note]`` are the text report's."""

    window = data["window"]
    x0, x1 = float(window["start"]), float(window["end"])
    title = f"agentvigil report {fmt_time(x0)} → {fmt_time(x1)}"
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>"]
    if not data["agents"]:
        out.append("<p>No recorded activity in the window.</p>")
    for name, agent in data["agents"].items():
        line = timelines.get(name, Timeline())
        notes = attention(agent)  # type: ignore[operator]
        verdict = (f'<span class="bad">attention: {html.escape("; ".join(notes))}</span>' if notes
                   else '<span class="ok">ok</span>')
        out.append(f'<section class="agent" data-agent="{html.escape(name)}"><h2>{html.escape(name)} — {verdict}</h2>')
        out.append("<table>" + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                                       for k, v in rows(agent)) + "</table>")  # type: ignore[operator]
        if line.runs:
            lo, hi = min(r[0] for r in line.runs), max(r[0] for r in line.runs)
            lo, hi = (lo, hi) if hi > lo else (x0, x1)
        else:
            lo, hi = x0, x1
        charts = [line_chart("cost", "cost per run vs baseline", [
            ("ok run cost", COLORS[0], [(t, c) for t, c, _b, s in line.runs if s == "ok"], False),
            ("baseline", COLORS[3], [(t, b) for t, _c, b, _s in line.runs if b is not None], True)], lo, hi, "$")]
        statuses = Counter(s for *_x, s in line.runs)
        bars = [(f"runs {s}", float(n), COLORS[2] if s == "ok" else COLORS[1]) for s, n in sorted(statuses.items())]
        bars += [(kind, float(n), COLORS[4]) for kind, n in line.errors.most_common(6)]
        charts.append(bar_chart("runs-errors", "runs by status, errors by kind", bars))
        charts.append(loop_chart(line.loops, lo, hi))
        charts.append(line_chart("breaker", "circuit breakers (0 closed, 0.5 half-open, 1 open)",
                                 [(b, COLORS[i % len(COLORS)], pts, True) for i, (b, pts) in
                                  enumerate(sorted(line.breakers.items()))], lo, hi, "", 1.0))
        charts.append(line_chart("budget", "token budget utilization",
                                 [(b, COLORS[(i + 3) % len(COLORS)], pts, True) for i, (b, pts) in
                                  enumerate(sorted(line.budgets.items()))], lo, hi, "%",
                                 max([1.0] + [y for pts in line.budgets.values() for _x, y in pts])))
        out.append('<div class="charts">' + "".join(charts) + "</div>")
        if line.unusable:
            out.append(f"<p>{line.unusable} guard_state events with an unusable budget limit or usage "
                       "(not a finite number, limit not above 0) not charted.</p>")
        out.append("</section>")
    if data.get("skipped_lines"):
        out.append(f"<p>{data['skipped_lines']} unreadable lines skipped.</p>")
    if data.get("skipped_journal_lines"):
        out.append(f"<p>{data['skipped_journal_lines']} unreadable supervisor journal lines skipped.</p>")
    if data.get("unreadable_files"):
        shown = data.get("unreadable") or []
        out.append(f"<p>{data['unreadable_files']} unreadable files skipped: "
                   f"{html.escape('; '.join(shown))}{', ...' if data['unreadable_files'] > len(shown) else ''}.</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def fmt_time(ts: float) -> str:
    """Local time as the reports print it."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))
