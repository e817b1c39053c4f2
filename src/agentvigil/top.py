"""``agentvigil top``: one row per agent from a /metrics endpoint, plus the alerts firing in Prometheus.

Refreshes in place with curses on a terminal (``q`` quits); prints plain blocks of lines otherwise (a pipe,
a log file, ``--once``). Reads only: a scrape of ``--metrics`` and Prometheus's ``/api/v1/alerts``.
Each fetch is bounded: at most METRICS_MAX_BYTES of /metrics and API_MAX_BYTES of alerts, each within its
own total deadline (METRICS_DEADLINE, demostack.API_DEADLINE), whatever the server drips or streams. What the
labels hold is escaped before it reaches the terminal (no control character, no NUL).
Breakers and budgets carry no agent label: a budget is the agent's when named after it, a breaker when named
after a provider the agent calls (the conventions the shipped rules use).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

from prometheus_client.parser import text_string_to_metric_families

from .actions.terminal import escape_controls
from .demostack import bounded_get, fetch_firing

METRICS_MAX_BYTES = 16 * 1024 * 1024   # a /metrics answer: at most this many bytes
METRICS_DEADLINE = 10.0                # seconds for a whole /metrics scrape (connect, headers, body)

BREAKER_STATES = {0.0: "closed", 0.5: "half-open", 1.0: "open"}
HEADER = (f"{'AGENT':<16} {'HEALTH':<8} {'RUNS':>5} {'COST/RUN':>9} {'BASELINE':>9} {'x':>5} {'CACHE':>5} "
          f"{'BREAKER':<10} {'BUDGET':>6} {'LOOPS':>5} {'PROGRESS':>9}  ALERTS")


@dataclass
class Row:
    agent: str
    runs: float = 0.0
    last_cost: float = 0.0
    baseline: float = 0.0
    cache: float | None = None
    providers: set[str] = field(default_factory=set)
    breaker: str = "-"
    budget: float | None = None
    loops: float = 0.0
    progress: float | None = None
    alerts: list[str] = field(default_factory=list)

    @property
    def health(self) -> str:
        return "ALERT" if self.alerts else "ok"

    def render(self, now: float) -> str:
        agent, breaker = escape_controls(self.agent), escape_controls(self.breaker)
        alerts = ", ".join(escape_controls(a) for a in sorted(set(self.alerts)))
        ratio = f"{self.last_cost / self.baseline:4.1f}x" if self.baseline else "    -"
        cache = f"{self.cache:5.0%}" if self.cache is not None else "    -"
        budget = f"{self.budget:6.0%}" if self.budget is not None else "     -"
        progress = f"{max(now - self.progress, 0.0):7.0f}s" if self.progress else "        -"
        return (f"{agent[:16]:<16} {self.health:<8} {_count(self.runs):>5} {f'${self.last_cost:.4f}':>9} "
                f"{f'${self.baseline:.4f}':>9} {ratio:>5} {cache:>5} {breaker[:10]:<10} {budget:>6} "
                f"{_count(self.loops):>5} {progress} ago  {alerts}")


def _count(value: float) -> str:
    """A counter for its column: NaN and ±Inf as such (a sample may carry them), huge values shortened."""
    if not math.isfinite(value):
        return str(value)
    return str(int(value)) if abs(value) < 1e6 else f"{value:.3g}"


def parse_metrics(text: str) -> dict[str, Row]:
    """Rows per agent from the exposition text. Unknown families are ignored."""
    rows: dict[str, Row] = {}
    breakers: dict[str, float] = {}
    budgets: dict[str, float] = {}

    def row(labels: dict[str, str]) -> Row | None:
        agent = labels.get("agent")
        if not agent:
            return None
        return rows.setdefault(agent, Row(agent))

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, float(sample.value)
            if name == "agent_circuit_breaker_state":
                breakers[labels.get("breaker", "")] = value
                continue
            if name == "agent_budget_utilization_ratio":
                budgets[labels.get("budget", "")] = value
                continue
            r = row(labels)
            if r is None:
                continue
            if name == "agent_runs_total":
                r.runs += value
            elif name == "agent_last_run_cost_usd":
                r.last_cost = value
            elif name == "agent_run_cost_baseline_usd":
                r.baseline = value
            elif name == "agent_cache_hit_ratio":
                r.cache = value if r.cache is None else max(r.cache, value)
            elif name == "agent_loop_detections_total":
                r.loops += value
            elif name == "agent_progress_timestamp_seconds":
                r.progress = value or None
            elif name == "agent_llm_calls_total" and labels.get("provider"):
                r.providers.add(labels["provider"])
    for r in rows.values():
        states = [(b, s) for b, s in breakers.items() if b in r.providers]
        if states:
            worst = max(states, key=lambda item: item[1])
            r.breaker = BREAKER_STATES.get(worst[1], str(worst[1]))
        if r.agent in budgets:
            r.budget = budgets[r.agent]
    return rows


def attach_alerts(rows: dict[str, Row], alerts: list[dict]) -> list[str]:
    """Put each firing alert on its agent's row; returns the alerts that belong to no row (fleet, exporter)."""
    others = []
    for alert in alerts:
        raw = alert.get("labels") if isinstance(alert, dict) else None
        # label values are strings in Prometheus's API; anything else is ignored (as if absent)
        labels = {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)} \
            if isinstance(raw, dict) else {}
        name = labels.get("alertname") or "?"
        agent = labels.get("agent") or labels.get("budget")
        breaker = labels.get("breaker")
        targets = [rows[agent]] if agent in rows else []
        if not targets and breaker:
            targets = [r for r in rows.values() if breaker in r.providers]
        for r in targets:
            r.alerts.append(name)
        if not targets:
            others.append(name + (f"{{{breaker}}}" if breaker else ""))
    return sorted(set(others))


def fetch(url: str, timeout: float = 3.0, max_bytes: int = METRICS_MAX_BYTES,
          deadline: float = METRICS_DEADLINE) -> str:
    """The body of ``url``: at most ``max_bytes`` (more is a ValueError), within ``deadline`` seconds in all
    (a TimeoutError past it)."""
    return bounded_get(url, timeout, max_bytes, deadline).decode("utf-8", "replace")


def snapshot(metrics_url: str, prometheus_url: str | None, now: float | None = None) -> list[str]:
    """The screen as lines: a title, the header, a row per agent, the alerts on no agent's row."""
    now = time.time() if now is None else now
    stamp = time.strftime("%H:%M:%S", time.localtime(now))
    try:
        rows = parse_metrics(fetch(metrics_url))
    except (OSError, ValueError, TypeError, KeyError, IndexError, RecursionError) as exc:
        return [escape_controls(f"agentvigil top {stamp}  {metrics_url}: no answer ({str(exc)[:300]})")]
    fetched = fetch_firing(prometheus_url) if prometheus_url else None
    alerts = fetched or []
    others = attach_alerts(rows, alerts)
    if not prometheus_url:
        source = "no Prometheus: alerts not shown"
    elif fetched is None:
        source = f"alerts from {prometheus_url}: no answer"
    else:
        source = f"alerts from {prometheus_url} ({len(alerts)} firing)"
    lines = [f"agentvigil top {stamp}  metrics {metrics_url}  {source}", HEADER]
    lines += [rows[name].render(now) for name in sorted(rows)]
    if others:
        lines.append("fleet/exporter alerts: " + ", ".join(others))
    return [escape_controls(line) for line in lines]   # nothing from a label reaches the terminal raw


def plain(get_lines: Callable[[], list[str]], interval: float, iterations: int | None, out: TextIO,
          stop: Callable[[], bool] = lambda: False) -> None:
    """Blocks of lines, one per refresh, separated by a blank line (for pipes and logs)."""
    count = 0
    while not stop():
        out.write("\n".join(get_lines()) + "\n\n")
        out.flush()
        count += 1
        if iterations is not None and count >= iterations:
            return
        deadline = time.monotonic() + interval
        while time.monotonic() < deadline and not stop():
            time.sleep(min(0.1, interval))


def live(get_lines: Callable[[], list[str]], interval: float, stop: Callable[[], bool] = lambda: False) -> None:
    """Redraw in place with curses until ``q`` or ``stop()``."""
    import curses

    def draw(screen: Any) -> None:
        curses.curs_set(0)
        screen.timeout(100)  # getch waits at most 0.1 s, so stop() and q are seen promptly
        next_draw = 0.0
        while not stop():
            if time.monotonic() >= next_draw:
                lines = get_lines()
                height, width = screen.getmaxyx()
                screen.erase()
                for y, line in enumerate(lines[: max(height - 1, 0)]):
                    line = escape_controls(line)   # a NUL would make addnstr raise, an ESC move the cursor
                    attr = curses.A_BOLD if y == 1 or " ALERT " in line else curses.A_NORMAL
                    screen.addnstr(y, 0, line, max(width - 1, 1), attr)
                if height > 1:
                    screen.addnstr(height - 1, 0, "q quits", max(width - 1, 1), curses.A_DIM)
                screen.refresh()
                next_draw = time.monotonic() + interval
            if screen.getch() in (ord("q"), ord("Q")):
                return

    curses.wrapper(draw)


def show(metrics_url: str, prometheus_url: str | None, interval: float = 2.0, once: bool = False,
         out: TextIO = sys.stdout, stop: Callable[[], bool] = lambda: False) -> None:
    def get_lines() -> list[str]:
        return snapshot(metrics_url, prometheus_url)

    if once or not (out.isatty() and sys.stdin.isatty()):
        plain(get_lines, interval, 1 if once else None, out, stop)
    else:
        live(get_lines, interval, stop)


def _cmd_top(args: argparse.Namespace) -> int:
    if not math.isfinite(args.interval) or args.interval <= 0:
        print("agentvigil top: --interval must be a finite number of seconds > 0", file=sys.stderr)
        return 2
    try:
        show(args.metrics, args.prometheus or None, args.interval, args.once)
    except KeyboardInterrupt:
        pass
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("top", help="live view: a row per agent from /metrics, firing alerts from Prometheus")
    p.add_argument("--metrics", default="http://127.0.0.1:9464/metrics", help="the /metrics URL (the demo's)")
    p.add_argument("--prometheus", default="http://127.0.0.1:9090",
                   help="Prometheus base URL for firing alerts ('' = none)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (2)")
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")
    p.set_defaults(func=_cmd_top)
