"""``agentvigil report``: the daily health report, from recorded sessions and supervisor journals (and a
Prometheus server when given).

``build_report`` aggregates (pure apart from reading files) into a JSON-safe dict; ``render`` turns it into
text, Markdown or JSON. Per agent: runs and success rate, cost against the baseline (the median cost of ok
runs in the ``baseline`` window before the report window), loop detections, cost spikes, breaker trips,
budget overruns and their peak, top error kinds, zombie stalls, and the supervisor's restarts and incidents.
"""

from __future__ import annotations

import glob
import json
import math
import os
import statistics
import time
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

from ..actions.terminal import escape_controls
from ..codec import finite_json
from ..demostack import API_MAX_BYTES, bounded_get
from ..events import Event
from ..policy import ConfigError, check_url
from ..replay import ReplayStats, find_event_files, read_events
from .health import ZOMBIE, ChildHealth
from .notify import post_json
from .policy import HealthPolicy
from .supervisor import JOURNAL_PREFIX

LOOP_DETECTORS = ("repeat_call", "same_result", "repeated_sequence")


class _Agent:
    def __init__(self) -> None:
        self.sessions = 0
        self.runs: Counter[str] = Counter()   # status -> count
        self.cost = 0.0
        self.tokens = 0
        self.run_costs: list[float] = []      # ok runs in the window
        self.baseline_costs: list[float] = []  # ok runs in the baseline window
        self.loops: Counter[str] = Counter()
        self.run_cost_spikes = 0
        self.cycle_cost_spikes = 0
        self.breaker_trips: Counter[str] = Counter()
        self.budget_exceeded: dict[str, dict] = {}
        self.error_kinds: Counter[str] = Counter()
        self.zombie_stalls = 0
        self.kills: Counter[str] = Counter()
        self.restarts: Counter[str] = Counter()
        self.incidents: Counter[str] = Counter()
        self.gave_up = 0

    def to_dict(self) -> dict:
        total = sum(self.runs.values())
        median = statistics.median(self.run_costs) if self.run_costs else None
        baseline = statistics.median(self.baseline_costs) if self.baseline_costs else None
        return {
            "sessions": self.sessions,
            "runs": total,
            "runs_by_status": dict(self.runs),
            "success_rate": round(self.runs["ok"] / total, 4) if total else None,
            "cost_usd": round(self.cost, 6),
            "tokens": self.tokens,
            "median_run_cost_usd": None if median is None else round(median, 6),
            "baseline_run_cost_usd": None if baseline is None else round(baseline, 6),
            "cost_vs_baseline": round(median / baseline, 2) if median is not None and baseline else None,
            "loops": dict(self.loops),
            "run_cost_spikes": self.run_cost_spikes,
            "cycle_cost_spikes": self.cycle_cost_spikes,
            "breaker_trips": dict(self.breaker_trips),
            "budget_exceeded": self.budget_exceeded,
            "top_error_kinds": self.error_kinds.most_common(5),
            "zombie_stalls": self.zombie_stalls,
            "kills": dict(self.kills),
            "restarts": sum(self.restarts.values()),
            "restarts_by_reason": dict(self.restarts),
            "incidents": dict(self.incidents),
            "gave_up": self.gave_up,
        }


ZOMBIE_AFTER = 120.0  # busy this long without a completed step: a zombie stall (the demo's hangs for ~140 s)
MAX_JOURNAL_LINE = 1024 * 1024   # a supervisor journal line longer than this is skipped (and counted)
MAX_UNREADABLE_SHOWN = 20        # unreadable files named in the report (all are counted)
PROMETHEUS_DEADLINE = 20.0       # seconds for all the Prometheus queries together (connect, headers, bodies)


def build_report(directory: str, since: float = 86400.0, baseline: float = 7 * 86400.0,
                 agents: list[str] | None = None, zombie_after: float = ZOMBIE_AFTER, now: float | None = None) -> dict:
    """Aggregate sessions and journals under ``directory`` for the window ``[now - since, now]``."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no such directory: {directory}")
    now = time.time() if now is None else now
    start, base_start = now - since, now - since - baseline
    by_agent: dict[str, _Agent] = defaultdict(_Agent)
    stats = ReplayStats()
    unreadable: list[str] = []        # "path: why", a file or directory that could not be read
    try:
        files = find_event_files(directory)
    except FileNotFoundError:
        files = []
    except OSError as exc:
        files = []
        unreadable.append(_why(directory, exc))
    for path in files:
        try:
            if os.path.getmtime(path) < base_start:
                continue                  # nothing written in either window
        except OSError:
            continue
        try:
            _read_session(path, by_agent, stats, start, base_start, now, zombie_after, agents)
        except OSError as exc:            # unreadable (EACCES, EIO): counted, the rest is reported
            unreadable.append(_why(path, exc))
    journal_skipped = 0
    for path in sorted(glob.glob(os.path.join(glob.escape(directory), f"{JOURNAL_PREFIX}*.ndjson"))):
        try:
            journal_skipped += _read_journal(path, by_agent, start, now, agents)
        except OSError as exc:
            unreadable.append(_why(path, exc))
    return {
        "generated_at": round(now, 3),
        "window": {"start": round(start, 3), "end": round(now, 3), "seconds": since},
        "baseline_window": {"start": round(base_start, 3), "end": round(start, 3)},
        "directory": directory,
        "skipped_lines": sum(stats.skipped.values()),
        "skipped_journal_lines": journal_skipped,
        "unreadable_files": len(unreadable),
        "unreadable": unreadable[:MAX_UNREADABLE_SHOWN],
        "agents": {name: agent.to_dict() for name, agent in sorted(by_agent.items())},
    }


def _why(path: str, exc: OSError) -> str:
    return f"{path}: {exc.strerror or exc}"


def _as_dict(event: Event | dict) -> dict:
    return event if isinstance(event, dict) else event.to_dict()


def _read_session(path: str, by_agent: dict[str, _Agent], stats: ReplayStats, start: float, base_start: float,
                  now: float, zombie_after: float, agents: list[str] | None) -> None:
    health = ChildHealth(HealthPolicy(heartbeat_interval=1e-9, liveness_timeout=0, startup_timeout=0,
                                      progress_timeout=zombie_after), started_at=0.0)
    counted: set[str] = set()
    for raw in read_events(path, stats):
        event = _as_dict(raw)
        ts = event.get("ts", 0.0)
        name = event.get("agent_id") or "unknown"
        if agents and name not in agents:
            continue
        kind = event.get("event_type")
        if base_start <= ts < start:
            if kind == "run_end" and event.get("status") == "ok":
                by_agent[name].baseline_costs.append(float(event.get("cost_usd") or 0.0))
            continue
        if not start <= ts <= now:
            continue
        agent = by_agent[name]
        if name not in counted:
            counted.add(name)
            agent.sessions += 1
        spike = health.feed(event, ts)
        if spike is not None:
            agent.cycle_cost_spikes += 1
        if kind == "heartbeat":
            agent.zombie_stalls += sum(1 for f in health.check(ts) if f.kind == ZOMBIE)
        elif kind == "run_end":
            status = event.get("status") or "unknown"
            agent.runs[status] += 1
            if status == "ok":
                agent.run_costs.append(float(event.get("cost_usd") or 0.0))
            elif status == "error" and event.get("error_kind"):
                agent.error_kinds[event["error_kind"]] += 1
        elif kind == "llm_call":
            agent.cost += float(event.get("cost_usd") or 0.0)
            agent.tokens += int(event.get("token_count") or (event.get("input_tokens") or 0)
                                + (event.get("output_tokens") or 0))
            if event.get("status") == "error":
                agent.error_kinds[event.get("error_kind") or "unknown"] += 1
        elif kind == "tool_end" and event.get("status") == "error":
            agent.error_kinds[event.get("error_kind") or "unknown"] += 1
        elif kind == "detection":
            detector = event.get("detector")
            if detector in LOOP_DETECTORS:
                agent.loops[detector] += 1
            elif detector == "cost_over_baseline":
                agent.run_cost_spikes += 1
        elif kind == "breaker_transition" and event.get("state") == "open":
            agent.breaker_trips[event.get("name") or "unknown"] += 1
        elif kind == "budget_exceeded":
            budget = agent.budget_exceeded.setdefault(event.get("name") or "unknown", {"count": 0, "peak_tokens": 0})
            budget["count"] += 1
            budget["peak_tokens"] = max(budget["peak_tokens"], int(event.get("token_count") or 0))
        elif kind == "kill":
            agent.kills[event.get("reason") or "kill_switch"] += 1


def _read_journal(path: str, by_agent: dict[str, _Agent], start: float, now: float,
                  agents: list[str] | None) -> int:
    """Count the journal's restarts, incidents and give-ups in the window; returns the lines skipped (not
    JSON, nested too deeply, over MAX_JOURNAL_LINE, or a field of the wrong type). Raises OSError when the
    file cannot be read."""
    skipped = 0
    with open(path, "rb") as fh:
        while True:
            raw = fh.readline(MAX_JOURNAL_LINE + 1)
            if not raw:
                return skipped
            if len(raw) > MAX_JOURNAL_LINE and not raw.endswith(b"\n"):
                skipped += 1
                while raw and not raw.endswith(b"\n"):   # the rest of the over-long line, a chunk at a time
                    raw = fh.readline(MAX_JOURNAL_LINE + 1)
                continue
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8", "replace"))
            except (ValueError, RecursionError):
                skipped += 1
                continue
            ts = record.get("ts") if isinstance(record, dict) else None
            if not isinstance(ts, (int, float)) or isinstance(ts, bool):
                skipped += 1
                continue
            name = record.get("agent") or "unknown"
            kind = record.get("type")
            field = "reason" if kind == "restart" else "kind" if kind == "incident" else None
            detail = record.get(field) if field else None
            if not isinstance(name, str) or not isinstance(kind, (str, type(None))) \
                    or not isinstance(detail, (str, type(None))):
                skipped += 1
                continue
            if not start <= ts <= now or (agents and name not in agents):
                continue
            if kind == "restart":
                by_agent[name].restarts[detail or "unknown"] += 1
            elif kind == "incident":
                by_agent[name].incidents[detail or "unknown"] += 1
            elif kind == "gave_up":
                by_agent[name].gave_up += 1


# -- Prometheus --------------------------------------------------------------------------------------------
PROMETHEUS_QUERIES = {
    "runs": "sum by (agent, status) (increase(agent_runs_total[{w}]))",
    "cost_usd": "sum by (agent) (increase(agent_cost_usd_total[{w}]))",
    "budget_peak_utilization": "max by (budget) (max_over_time(agent_budget_utilization_ratio[{w}]))",
    "breaker_trips": "sum by (breaker) (increase(agent_circuit_breaker_transitions_total{{to=\"open\"}}[{w}]))",
    "restarts": "sum by (agent, reason) (increase(agent_restarts_total[{w}]))",
}


def query_prometheus(url: str, since: float, timeout: float = 10.0, deadline: float = PROMETHEUS_DEADLINE) -> dict:
    """Instant queries over the window; each result is a list of {labels, value} or {"error": ...}. Each
    answer is read up to API_MAX_BYTES, all of them within ``deadline`` seconds (a query left without time
    is an error); an answer that is not what the API returns (not JSON, nested too deeply, a metric that is
    not an object of strings) is an error. A value that is not a finite number (NaN, ±Inf) is kept as null."""
    window = f"{max(int(since), 1)}s"
    results: dict[str, list[dict[str, Any]] | dict[str, str]] = {}
    end = time.monotonic() + deadline
    for name, template in PROMETHEUS_QUERIES.items():
        query = template.format(w=window)
        target = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
        remaining = end - time.monotonic()
        if remaining <= 0:
            results[name] = {"error": f"not queried: the {deadline:g} s for all queries are spent"}
            continue
        try:
            body = json.loads(bounded_get(target, timeout, API_MAX_BYTES, remaining))
            results[name] = [_prom_item(item) for item in body["data"]["result"]]
        except RecursionError:
            results[name] = {"error": "answer nested too deeply"}
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            results[name] = {"error": escape_controls(str(exc)[:300]) or type(exc).__name__}
    return results


def _prom_item(item: object) -> dict[str, Any]:
    """One {metric, value} of an instant query's vector; TypeError when it is not one."""
    if not isinstance(item, dict):
        raise TypeError("malformed answer: a result is not an object")
    metric, value = item.get("metric"), item.get("value")
    if not isinstance(metric, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metric.items()):
        raise TypeError("malformed answer: a result's metric is not an object of strings")
    if not isinstance(value, list) or len(value) != 2 or not isinstance(value[1], str):
        raise TypeError("malformed answer: a result's value is not [time, \"number\"]")
    number = float(value[1])   # ValueError on a non-number
    return {"labels": metric, "value": number if math.isfinite(number) else None}


# -- rendering ---------------------------------------------------------------------------------------------
def _fmt_time(ts: float) -> str:
    from .report_html import fmt_time

    return fmt_time(ts)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def _pairs(mapping: Mapping[str, object] | list[tuple[str, object]]) -> str:
    if isinstance(mapping, list):
        return ", ".join(f"{k} {v}" for k, v in mapping) or "-"
    return ", ".join(f"{k} {v}" for k, v in sorted(mapping.items())) or "-"


def _rows(agent: dict) -> list[tuple[str, str]]:
    ratio = agent["cost_vs_baseline"]
    budgets = ", ".join(f"{name} ×{b['count']} (peak {b['peak_tokens']} tokens)"
                        for name, b in sorted(agent["budget_exceeded"].items())) or "-"
    return [
        ("runs", f"{agent['runs']} ({_pairs(agent['runs_by_status'])})"),
        ("success rate", _pct(agent["success_rate"])),
        ("cost", f"{_usd(agent['cost_usd'])}, median run {_usd(agent['median_run_cost_usd'])} vs baseline "
                 f"{_usd(agent['baseline_run_cost_usd'])}" + (f" (×{ratio})" if ratio is not None else "")),
        ("loops", _pairs(agent["loops"])),
        ("cost spikes", f"{agent['run_cost_spikes']} runs, {agent['cycle_cost_spikes']} heartbeat cycles"),
        ("breaker trips", _pairs(agent["breaker_trips"])),
        ("budget overruns", budgets),
        ("top error kinds", _pairs(agent["top_error_kinds"])),
        ("zombie stalls", str(agent["zombie_stalls"])),
        ("restarts", f"{agent['restarts']} ({_pairs(agent['restarts_by_reason'])})"
                     + (f", GAVE UP ×{agent['gave_up']}" if agent["gave_up"] else "")),
        ("incidents", _pairs(agent["incidents"])),
    ]


def _attention(agent: dict) -> list[str]:
    """What needs a human, most urgent first."""
    notes = []
    if agent["gave_up"]:
        notes.append("supervisor gave up restarting")
    if agent["success_rate"] is not None and agent["success_rate"] < 0.9:
        notes.append(f"success rate {_pct(agent['success_rate'])}")
    if agent["cost_vs_baseline"] is not None and agent["cost_vs_baseline"] >= 2:
        notes.append(f"run cost ×{agent['cost_vs_baseline']} baseline")
    if agent["zombie_stalls"] or agent["incidents"].get("zombie"):
        notes.append("zombie stalls")
    if agent["restarts"]:
        notes.append(f"{agent['restarts']} restarts")
    if sum(agent["loops"].values()):
        notes.append("loops detected")
    return notes


def _cell(text: str) -> str:
    """A Markdown table cell: control characters escaped, no ``|`` to split it."""
    return escape_controls(text).replace("|", "/")


def render(data: dict, fmt: str = "text") -> str:
    """Text and Markdown escape the control characters that names (agents, breakers, budgets, error kinds)
    carry from events and journals; JSON escapes them by its own rules."""
    if fmt == "json":
        return json.dumps(finite_json(data), indent=2, sort_keys=True, allow_nan=False) + "\n"
    e = escape_controls
    window = data["window"]
    title = f"agentvigil report {_fmt_time(window['start'])} → {_fmt_time(window['end'])}"
    out = []
    if fmt == "markdown":
        out.append(f"# {title}\n")
        if not data["agents"]:
            out.append("No recorded activity in the window.\n")
        for name, agent in data["agents"].items():
            notes = _attention(agent)
            out.append(f"## {e(name)}" + (" ⚠ " + e("; ".join(notes)) if notes else " ✓") + "\n")
            out.append("| signal | value |\n|---|---|")
            out.extend(f"| {key} | {_cell(value)} |" for key, value in _rows(agent))
            out.append("")
        if "prometheus" in data:
            out.append("## Prometheus\n")
            out.extend(f"- **{name}**: {e(_prom_line(result))}" for name, result in data["prometheus"].items())
            out.append("")
        out.extend(_skip_notes(data))
        return "\n".join(out) + "\n"
    out.append(title)
    if not data["agents"]:
        out.append("  no recorded activity in the window")
    for name, agent in data["agents"].items():
        notes = _attention(agent)
        out.append("")
        out.append(e(f"{name}: " + ("ATTENTION: " + "; ".join(notes) if notes else "ok")))
        out.extend(f"  {key:<16} {e(value)}" for key, value in _rows(agent))
    if "prometheus" in data:
        out.append("")
        out.append("prometheus:")
        out.extend(f"  {name:<24} {e(_prom_line(result))}" for name, result in data["prometheus"].items())
    notes = _skip_notes(data)
    if notes:
        out.append("")
        out.extend(notes)
    return "\n".join(out) + "\n"


def _skip_notes(data: dict) -> list[str]:
    """What could not be read, in the text and Markdown forms (escaped: a path is not trusted)."""
    notes = []
    if data.get("skipped_lines"):
        notes.append(f"({data['skipped_lines']} unreadable lines skipped)")
    if data.get("skipped_journal_lines"):
        notes.append(f"({data['skipped_journal_lines']} unreadable supervisor journal lines skipped)")
    if data.get("unreadable_files"):
        notes.append(f"({data['unreadable_files']} unreadable files skipped: "
                     + escape_controls("; ".join(data.get("unreadable") or []))
                     + (", ..." if data["unreadable_files"] > len(data.get("unreadable") or []) else "") + ")")
    return notes


def render_page(data: dict, directory: str, agents: list[str] | None = None) -> str:
    """The HTML page: this report plus per-agent charts from the same sessions."""
    from .report_html import build_timelines, render_html

    timelines = build_timelines(directory, data["window"]["start"], data["window"]["end"], agents)
    return render_html(data, timelines, _rows, _attention)


def _prom_line(result: list[dict[str, Any]] | dict[str, str]) -> str:
    if isinstance(result, dict):
        return f"error: {result.get('error')}"
    if not result:
        return "-"
    return ", ".join(f"{','.join(f'{k}={v}' for k, v in sorted(item['labels'].items())) or 'total'}: "
                     + ("NaN" if item["value"] is None else f"{item['value']:.4g}") for item in result)


def post_report(url: str, data: dict) -> str:
    """Post the report as a Slack-compatible message; returns an error string, empty on success."""
    lines = [f"*agentvigil daily report* ({_fmt_time(data['window']['start'])} → {_fmt_time(data['window']['end'])})"]
    for name, agent in data["agents"].items():
        notes = _attention(agent)
        lines.append(f"• *{name}*: {agent['runs']} runs, {_pct(agent['success_rate'])} ok, "
                     f"{_usd(agent['cost_usd'])}, {agent['restarts']} restarts"
                     + (f" — {'; '.join(notes)}" if notes else ""))
    try:
        check_url("--webhook-url", url)   # http(s) with a host; anything else is refused before any request
    except ConfigError as exc:
        return escape_controls(str(exc))
    payload = {"text": "\n".join(lines), "attachments": [{"fallback": "report", "text": render(data, "text")}]}
    try:
        status = post_json(url, payload)
    except (OSError, ValueError) as exc:
        return escape_controls(str(exc)[:300]) or type(exc).__name__
    if not isinstance(status, int):
        return "no HTTP status in the answer"
    return "" if 200 <= status < 300 else f"HTTP {status}"
