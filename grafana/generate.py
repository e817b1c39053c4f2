#!/usr/bin/env python3
"""Generate the agentvigil Grafana dashboards (grafana/dashboards/*.json).

    python grafana/generate.py           # rewrite the checked-in dashboards
    python grafana/generate.py --check   # exit 1 if they are stale
    python grafana/generate.py --group-by tenant --out DIR   # plus a variable per custom label

Two dashboards, linked both ways and tagged "agentvigil":
  agentvigil-fleet  Fleet overview: every agent at a glance.
  agentvigil-agent  Agent drill-down: one agent's runs, tools, LLM calls, liveness.
Queries use raw agentvigil metrics with `$__rate_interval`, plus the window-free recording rules of
alert_rules/ (job_agent:agentvigil_alerts_firing:count and job:agentvigil_unhealthy_agents:*), so they work
whatever windows alert_rules/config.yaml sets. Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
TAGS = ["agentvigil"]
SCHEMA_VERSION = 39
FLEET_UID = "agentvigil-fleet"
AGENT_UID = "agentvigil-agent"

# Selectors shared by every query. `agent=~"$agent|"` also matches series without an agent label.
J = 'job=~"$job"'
JA = 'job=~"$job", agent=~"$agent"'
RI = "$__rate_interval"
# Custom labels (agentvigil.declare_labels; alert_rules/config.yaml group_by) given with --group-by: one
# variable each, matched as `tenant=~"$tenant|"` so families without the label (histograms, gauges) still show.
GROUP_BY: list[str] = []


# --- panel building blocks ----------------------------------------------------------------------------

def target(expr: str, legend: str = "__auto", ref: str = "A", *, instant: bool = False, table: bool = False,
           exemplar: bool = False) -> dict:
    t = {"datasource": DS, "editorMode": "code", "expr": expr, "legendFormat": legend, "range": not instant,
         "instant": instant, "refId": ref}
    if table:
        t["format"] = "table"
    if exemplar:
        t["exemplar"] = True
    return t


def targets(*specs) -> list[dict]:
    """specs: (expr, legend) pairs or dicts of target() kwargs; refIds A, B, C..."""
    out = []
    for i, spec in enumerate(specs):
        kwargs = dict(spec) if isinstance(spec, dict) else {"expr": spec[0], "legend": spec[1]}
        out.append(target(ref=chr(ord("A") + i), **kwargs))
    return out


def thresholds(*steps) -> dict:
    """steps: (value, color) with the first value None (the base)."""
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for value, color in steps]}


def field_config(unit: str, *, steps=None, mappings=None, links=None, custom=None, decimals=None,
                 min_=None, max_=None) -> dict:
    defaults = {"unit": unit, "color": {"mode": "palette-classic" if steps is None else "thresholds"}}
    defaults["thresholds"] = thresholds(*(steps or [(None, "green")]))
    if mappings:
        defaults["mappings"] = mappings
    if links:
        defaults["links"] = links
    if custom is not None:
        defaults["custom"] = custom
    if decimals is not None:
        defaults["decimals"] = decimals
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    return {"defaults": defaults, "overrides": []}


def drilldown_link() -> dict:
    """A data link from any per-agent series to the drill-down of that agent."""
    return {
        "title": "Agent drill-down: ${__field.labels.agent}",
        "type": "link",
        "url": f"/d/{AGENT_UID}/agentvigil-agent-drill-down?${{datasource:queryparam}}&var-job=${{job}}"
               "&var-agent=${__field.labels.agent}&${__url_time_range}",
        "icon": "dashboard",
        "tooltip": "Open the agent drill-down",
        "tags": [],
        "asDropdown": False,
        "targetBlank": False,
        "includeVars": False,
        "keepTime": True,
    }


LEGEND = {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []}
TABLE_LEGEND = {"displayMode": "table", "placement": "right", "showLegend": True, "calcs": ["lastNotNull", "max"]}
TOOLTIP = {"mode": "multi", "sort": "desc"}


def timeseries(title: str, description: str, unit: str, tgts: list[dict], *, w: int = 12, h: int = 8,
               steps=None, links=None, table_legend: bool = False, stack: bool = False, min_=None) -> dict:
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never", "spanNulls": False,
              "stacking": {"mode": "normal" if stack else "none", "group": "A"},
              "thresholdsStyle": {"mode": "off" if steps is None else "dashed"}}
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "fieldConfig": field_config(unit, steps=steps, links=links, custom=custom, min_=min_),
        "options": {"legend": TABLE_LEGEND if table_legend else LEGEND, "tooltip": TOOLTIP},
        "targets": tgts,
    }


def stat(title: str, description: str, unit: str, tgts: list[dict], *, w: int = 6, h: int = 4, steps=None,
         mappings=None, links=None, text_mode: str = "auto", color_mode: str = "value") -> dict:
    return {
        "type": "stat", "title": title, "description": description, "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "fieldConfig": field_config(unit, steps=steps or [(None, "green")], mappings=mappings, links=links),
        "options": {"graphMode": "none", "colorMode": color_mode, "justifyMode": "auto", "textMode": text_mode,
                    "wideLayout": True, "showPercentChange": False, "percentChangeColorMode": "standard",
                    "orientation": "auto",
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
        "targets": tgts,
    }


def table(title: str, description: str, unit: str, tgts: list[dict], *, w: int = 12, h: int = 8) -> dict:
    return {
        "type": "table", "title": title, "description": description, "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "fieldConfig": field_config(unit),
        "options": {"frameIndex": 0, "showHeader": True, "cellHeight": "sm",
                    "footer": {"show": False, "reducer": ["sum"], "countRows": False}},
        "transformations": [{"id": "organize", "options": {
            "excludeByName": {"Time": True, "Value": True, "__name__": True, "alertstate": True}}}],
        "targets": tgts,
    }


def state_timeline(title: str, description: str, unit: str, tgts: list[dict], *, mappings, steps,
                   w: int = 12, h: int = 8) -> dict:
    return {
        "type": "state-timeline", "title": title, "description": description, "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "fieldConfig": field_config(unit, steps=steps, mappings=mappings,
                                    custom={"fillOpacity": 80, "lineWidth": 0}),
        "options": {"showValue": "auto", "rowHeight": 0.9, "mergeValues": True, "alignValue": "left",
                    "legend": LEGEND, "tooltip": TOOLTIP},
        "targets": tgts,
    }


def value_map(*pairs) -> list[dict]:
    """pairs: (value, text, color)."""
    return [{"type": "value", "options": {str(v): {"text": text, "color": color, "index": i}
                                           for i, (v, text, color) in enumerate(pairs)}}]


def row(title: str, panels: list[dict]) -> tuple[str, list[dict]]:
    return title, panels


def layout(rows: list[tuple[str, list[dict]]]) -> list[dict]:
    """Assign ids and grid positions: a row header, then its panels left to right, wrapping at 24."""
    out, y, next_id = [], 0, 1
    for title, panels in rows:
        out.append({"type": "row", "title": title, "collapsed": False, "id": next_id, "panels": [],
                    "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
        next_id += 1
        y += 1
        x, line_h = 0, 0
        for panel in panels:
            w, h = panel["gridPos"]["w"], panel["gridPos"]["h"]
            if x + w > 24:
                x, y, line_h = 0, y + line_h, 0
            panel["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
            panel["id"] = next_id
            next_id += 1
            x += w
            line_h = max(line_h, h)
            out.append(panel)
        y += line_h
    return out


# --- dashboard shell ----------------------------------------------------------------------------------

def variables(agent_multi: bool) -> dict:
    datasource = {"type": "datasource", "name": "datasource", "label": "Data source", "query": "prometheus",
                  "current": {"text": "default", "value": "default"}, "hide": 0, "refresh": 1, "options": [],
                  "regex": ""}
    job = {"type": "query", "name": "job", "label": "Job", "datasource": DS,
           "query": "label_values(agent_heartbeat_timestamp_seconds, job)",
           "definition": "label_values(agent_heartbeat_timestamp_seconds, job)",
           "refresh": 2, "sort": 1, "multi": True, "includeAll": True, "allValue": ".+",
           "current": {"text": ["All"], "value": ["$__all"]}, "options": [], "hide": 0, "regex": ""}
    agent = {"type": "query", "name": "agent", "label": "Agent", "datasource": DS,
             "query": 'label_values(agent_heartbeat_timestamp_seconds{job=~"$job"}, agent)',
             "definition": 'label_values(agent_heartbeat_timestamp_seconds{job=~"$job"}, agent)',
             "refresh": 2, "sort": 1, "multi": agent_multi, "includeAll": agent_multi, "options": [], "hide": 0,
             "regex": ""}
    if agent_multi:
        agent["allValue"] = ".+"
        agent["current"] = {"text": ["All"], "value": ["$__all"]}
    else:
        agent["current"] = {"text": "", "value": ""}
    custom = [{"type": "query", "name": label, "label": label, "datasource": DS,
               "query": f'label_values(agent_runs_total{{job=~"$job"}}, {label})',
               "definition": f'label_values(agent_runs_total{{job=~"$job"}}, {label})',
               "refresh": 2, "sort": 1, "multi": True, "includeAll": True, "allValue": ".*",
               "current": {"text": ["All"], "value": ["$__all"]}, "options": [], "hide": 0, "regex": ""}
              for label in GROUP_BY]
    return {"list": [datasource, job, agent, *custom]}


def annotations() -> dict:
    return {"list": [
        {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
         "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"},
        {"name": "Firing alerts", "datasource": DS, "enable": True, "hide": False, "iconColor": "red",
         "expr": f'ALERTS{{alertstate="firing", {J}, agent=~"$agent|"}}',
         "titleFormat": "{{alertname}}", "textFormat": "{{severity}} {{agent}}{{budget}}{{breaker}}",
         "tagKeys": "severity,agent", "step": "30s", "useValueForTime": False},
    ]}


def links(other_uid: str, other_title: str) -> list[dict]:
    return [
        {"title": other_title, "type": "link", "url": f"/d/{other_uid}", "icon": "dashboard",
         "tooltip": f"Open {other_title}", "tags": [], "asDropdown": False, "targetBlank": False,
         "includeVars": True, "keepTime": True},
        {"title": "agentvigil dashboards", "type": "dashboards", "icon": "external link", "tooltip": "",
         "tags": TAGS, "asDropdown": True, "targetBlank": False, "includeVars": True, "keepTime": True},
    ]


def dashboard(uid: str, title: str, description: str, panels: list[dict], *, agent_multi: bool,
              dash_links: list[dict]) -> dict:
    return {
        "uid": uid, "title": title, "description": description, "tags": TAGS, "timezone": "browser",
        "editable": True, "graphTooltip": 1, "time": {"from": "now-3h", "to": "now"},
        "timepicker": {"refresh_intervals": ["10s", "30s", "1m", "5m", "15m"]}, "refresh": "30s",
        "fiscalYearStartMonth": 0, "liveNow": False, "schemaVersion": SCHEMA_VERSION, "version": 1,
        "links": dash_links, "annotations": annotations(), "templating": variables(agent_multi),
        "panels": panels,
    }


# --- fleet overview -----------------------------------------------------------------------------------

def fleet() -> dict:
    health_steps = [(None, "green"), (1, "orange"), (2, "red")]
    link = [drilldown_link()]
    rows = [
        row("Health", [
            stat("Agents", "Agents of the selected jobs that sent a heartbeat within the range.", "none",
                 targets((f"count(group by (job, agent) (agent_heartbeat_timestamp_seconds{{{JA}}}))", "agents")),
                 w=4),
            stat("Unhealthy agents",
                 "Agents with at least one per-agent alert firing (job:agentvigil_unhealthy_agents:count).",
                 "none", targets((f"sum(job:agentvigil_unhealthy_agents:count{{{J}}}) or vector(0)", "unhealthy")),
                 w=4, steps=[(None, "green"), (1, "orange"), (2, "red")]),
            stat("Health by agent",
                 "Alerts firing per agent (0 healthy, 1 one signal, 2+ correlated breach). Click an agent for "
                 "its drill-down.", "none",
                 targets((f"max by (agent) (job_agent:agentvigil_alerts_firing:count{{{JA}}})"
                          f" or max by (agent) (0 * agent_heartbeat_timestamp_seconds{{{JA}}})", "{{agent}}")),
                 w=16, steps=health_steps, links=link, text_mode="value_and_name", color_mode="background"),
            table("Firing alerts", "Every firing agentvigil alert with its labels.", "none",
                  targets({"expr": f'ALERTS{{alertstate="firing", {J}, agent=~"$agent|"}}', "legend": "",
                           "instant": True, "table": True}), w=12),
            timeseries("Heartbeat and progress age",
                       "Seconds since the last liveness heartbeat (process alive) and the last completed "
                       "step (agent working). Progress age growing while heartbeat age stays low: zombie.", "s",
                       targets((f"time() - max by (agent) (agent_heartbeat_timestamp_seconds{{{JA}}})",
                                "heartbeat {{agent}}"),
                               (f"time() - max by (agent) (agent_progress_timestamp_seconds{{{JA}}})",
                                "progress {{agent}}")),
                       w=12, links=link, min_=0),
        ]),
        row("Cost", [
            timeseries("Cost per hour by agent", "Spend rate of priced LLM calls, in USD per hour.",
                       "currencyUSD",
                       targets((f"sum by (agent) (rate(agent_cost_usd_total{{{JA}}}[{RI}])) * 3600", "{{agent}}")),
                       links=link, table_legend=True, stack=True, min_=0),
            timeseries("Fleet cost per hour", "All selected agents together, USD per hour.", "currencyUSD",
                       targets((f"sum by (job) (rate(agent_cost_usd_total{{{JA}}}[{RI}])) * 3600", "{{job}}")),
                       min_=0),
            timeseries("Last run cost vs baseline",
                       "Cost of each agent's last completed run divided by its baseline (rolling median). "
                       "AgentRunCostAboveBaseline fires above 3x.", "suffix:x",
                       targets((f"max by (agent) (agent_last_run_cost_usd{{{JA}}})"
                                f" / max by (agent) (agent_run_cost_baseline_usd{{{JA}}} > 0)", "{{agent}}")),
                       steps=[(None, "green"), (3, "red")], links=link, min_=0),
            timeseries("In-flight run cost vs baseline",
                       "Cost so far of each agent's most expensive running run, divided by its baseline. "
                       "AgentInFlightRunCostAboveBaseline fires above 3x.", "suffix:x",
                       targets((f"max by (agent) (agent_active_run_cost_usd{{{JA}}})"
                                f" / max by (agent) (agent_run_cost_baseline_usd{{{JA}}} > 0)", "{{agent}}")),
                       steps=[(None, "green"), (3, "red")], links=link, min_=0),
        ]),
        row("Providers and tools", [
            state_timeline("Circuit breakers", "State of every circuit breaker: closed, half-open, open.",
                           "none", targets((f"max by (breaker) (agent_circuit_breaker_state{{{J}}})", "{{breaker}}")),
                           mappings=value_map((0, "closed", "green"), (0.5, "half-open", "orange"),
                                              (1, "open", "red")),
                           steps=[(None, "green"), (0.5, "orange"), (1, "red")], w=8),
            timeseries("LLM error ratio by provider", "Share of LLM calls that failed, per provider.",
                       "percentunit",
                       targets((f'sum by (provider) (rate(agent_llm_calls_total{{{JA}, status="error"}}[{RI}]))'
                                f" / sum by (provider) (rate(agent_llm_calls_total{{{JA}}}[{RI}]))", "{{provider}}")),
                       w=8, min_=0),
            timeseries("Tool errors by kind", "Failed tool calls per second, by error kind.", "ops",
                       targets((f"sum by (kind) (rate(agent_tool_errors_total{{{JA}}}[{RI}]))", "{{kind}}")),
                       w=8, stack=True, min_=0),
        ]),
        row("Budgets", [
            timeseries("Budget utilization", "(committed + reserved) / limit of every token budget. "
                       "AgentBudgetUtilizationHigh fires above 80%.", "percentunit",
                       targets((f"max by (budget) (agent_budget_utilization_ratio{{{J}}})", "{{budget}}")),
                       steps=[(None, "green"), (0.8, "red")], min_=0),
            timeseries("Budget forecast in 1h", "Linear forecast of utilization one hour ahead, from the last "
                       "30 minutes. AgentBudgetExhaustionForecast fires at 100%.", "percentunit",
                       targets((f"max by (budget) (predict_linear(agent_budget_utilization_ratio{{{J}}}[30m], 3600))",
                                "{{budget}}")),
                       steps=[(None, "green"), (1, "red")], min_=0),
        ]),
        row("Behaviour", [
            timeseries("Loop detections per run", "Loop detections divided by completed runs. "
                       "AgentLoopDetected fires above 2.", "none",
                       targets((f"sum by (agent) (increase(agent_loop_detections_total{{{JA}}}[{RI}]))"
                                f" / sum by (agent) (increase(agent_runs_total{{{JA}}}[{RI}]))", "{{agent}}")),
                       steps=[(None, "green"), (2, "red")], links=link, min_=0),
            timeseries("Prompt-cache hit ratio", "Cached input tokens / input tokens, per agent and model. "
                       "Agents that never cache show 0 and are not alerted on.", "percentunit",
                       targets((f'sum by (agent, model) (rate(agent_tokens_total{{{JA}, type="cache_read"}}[{RI}]))'
                                f' / sum by (agent, model) (rate(agent_tokens_total{{{JA}, type="input"}}[{RI}]))',
                                "{{agent}} {{model}}")),
                       steps=[(None, "red"), (0.6, "green")], links=link, min_=0),
        ]),
        row("agentvigil exporter", [
            stat("Targets up", "Scrape targets of the selected jobs that are up, out of all.", "none",
                 targets((f"sum(up{{{J}}})", "up"), (f"count(up{{{J}}})", "targets")), w=6,
                 text_mode="value_and_name"),
            timeseries("Exporter problems", "agentvigil's own internal errors, label values folded into "
                       "__overflow__, and dropped events, per target (0 when none).", "short",
                       targets((f"sum by (instance) (increase(agentvigil_internal_errors_total{{{J}}}[{RI}]))"
                                f" or sum by (instance) (0 * up{{{J}}})", "internal errors {{instance}}"),
                               (f"sum by (instance) (increase(agentvigil_label_overflow_total{{{J}}}[{RI}]))"
                                f" or sum by (instance) (0 * up{{{J}}})", "label overflow {{instance}}"),
                               (f"sum by (instance) (increase(agentvigil_events_dropped_total{{{J}}}[{RI}]))"
                                f" or sum by (instance) (0 * up{{{J}}})", "dropped events {{instance}}")),
                       w=18, min_=0),
        ]),
    ]
    return dashboard(FLEET_UID, "agentvigil / Fleet overview",
                     "All agents at a glance: health, cost, providers and tools, budgets, behaviour, exporter.",
                     layout(rows), agent_multi=True,
                     dash_links=links(AGENT_UID, "agentvigil / Agent drill-down"))


# --- agent drill-down ---------------------------------------------------------------------------------

def quantiles(metric: str, by: str, legend_prefix: str) -> list[dict]:
    by_le = f"{by}, le" if by else "le"
    return targets(*[{"expr": f"histogram_quantile({q}, sum by ({by_le}) (rate({metric}_bucket{{{JA}}}[{RI}])))",
                      "legend": f"p{int(q * 100)}{' ' if legend_prefix else ''}{legend_prefix}", "exemplar": True}
                     for q in (0.5, 0.95)])


def agent() -> dict:
    rows = [
        row("Runs", [
            timeseries("Runs by status", "Finished runs per second: ok, error, killed (by the kill switch).",
                       "ops", targets((f"sum by (status) (rate(agent_runs_total{{{JA}}}[{RI}]))", "{{status}}")),
                       w=8, stack=True, min_=0),
            timeseries("Run duration", "p50 and p95 of run wall-clock time. Exemplars link to the run's trace.",
                       "s", quantiles("agent_run_duration_seconds", "", ""), w=8, min_=0),
            timeseries("Run cost", "p50 and p95 of the cost of finished runs, with the agent's baseline. "
                       "Exemplars link to the run's trace.", "currencyUSD",
                       quantiles("agent_run_cost_usd", "", "") + [
                           target(f"max(agent_run_cost_baseline_usd{{{JA}}})", "baseline", "C")], w=8, min_=0),
            timeseries("Steps per run", "p50 and p95 of steps per finished run.", "none",
                       quantiles("agent_run_steps", "", ""), w=8, min_=0),
            timeseries("In-flight runs", "Runs in progress, and the cost so far of the most expensive one.",
                       "currencyUSD",
                       targets((f"max(agent_active_run_cost_usd{{{JA}}})", "in-flight cost"),
                               (f"max(agent_run_cost_baseline_usd{{{JA}}})", "baseline")), w=8, min_=0),
            timeseries("Active runs", "Runs in flight.", "none",
                       targets((f"sum(agent_active_runs{{{JA}}})", "active runs")), w=8, min_=0),
        ]),
        row("Tools", [
            timeseries("Tool calls by tool", "Tool calls per second.", "ops",
                       targets((f"sum by (tool) (rate(agent_tool_calls_total{{{JA}}}[{RI}]))", "{{tool}}")),
                       stack=True, min_=0),
            timeseries("Tool latency p95 by tool", "95th percentile of tool call duration. Exemplars link to "
                       "the tool span.", "s",
                       targets({"expr": "histogram_quantile(0.95, sum by (tool, le) "
                                        f"(rate(agent_tool_call_duration_seconds_bucket{{{JA}}}[{RI}])))",
                                "legend": "{{tool}}", "exemplar": True}), min_=0),
            timeseries("Tool errors by tool and kind", "Failed tool calls per second.", "ops",
                       targets((f"sum by (tool, kind) (rate(agent_tool_errors_total{{{JA}}}[{RI}]))",
                                "{{tool}} {{kind}}")), stack=True, min_=0),
            timeseries("Tool error ratio by tool", "Share of each tool's calls that failed. "
                       "AgentToolErrorRatioHigh fires above 10%.", "percentunit",
                       targets((f'sum by (tool) (rate(agent_tool_calls_total{{{JA}, status="error"}}[{RI}]))'
                                f" / sum by (tool) (rate(agent_tool_calls_total{{{JA}}}[{RI}]))", "{{tool}}")),
                       steps=[(None, "green"), (0.1, "red")], min_=0),
        ]),
        row("LLM calls", [
            timeseries("LLM calls by model and status", "LLM calls per second.", "ops",
                       targets((f"sum by (provider, model, status) (rate(agent_llm_calls_total{{{JA}}}[{RI}]))",
                                "{{provider}}/{{model}} {{status}}")), w=8, stack=True, min_=0),
            timeseries("LLM latency p95 by model", "95th percentile of LLM call duration. Exemplars link to "
                       "the LLM span.", "s",
                       targets({"expr": "histogram_quantile(0.95, sum by (provider, model, le) "
                                        f"(rate(agent_llm_call_duration_seconds_bucket{{{JA}}}[{RI}])))",
                                "legend": "{{provider}}/{{model}}", "exemplar": True}), w=8, min_=0),
            timeseries("Cost per hour by model", "USD per hour.", "currencyUSD",
                       targets((f"sum by (provider, model) (rate(agent_cost_usd_total{{{JA}}}[{RI}])) * 3600",
                                "{{provider}}/{{model}}")), w=8, stack=True, min_=0),
            timeseries("Tokens by model and type", "Tokens per second; input includes cached tokens.", "short",
                       targets((f"sum by (model, type) (rate(agent_tokens_total{{{JA}}}[{RI}]))",
                                "{{model}} {{type}}")), min_=0),
            timeseries("Prompt-cache hit ratio by model", "Cached / input tokens over the rate interval, and the "
                       "library's own ratio over the last calls. AgentCacheHitRatioLow fires below 60% where "
                       "caching is in use.", "percentunit",
                       targets((f'sum by (model) (rate(agent_tokens_total{{{JA}, type="cache_read"}}[{RI}]))'
                                f' / sum by (model) (rate(agent_tokens_total{{{JA}, type="input"}}[{RI}]))',
                                "{{model}}"),
                               (f"max by (model) (agent_cache_hit_ratio{{{JA}}})", "{{model}} last calls")),
                       steps=[(None, "red"), (0.6, "green")], min_=0),
        ]),
        row("Liveness and guards", [
            timeseries("Heartbeat and progress age", "Seconds since the last heartbeat and the last completed "
                       "step. AgentZombie: progress old, heartbeat fresh, a run in flight.", "s",
                       targets((f"time() - max(agent_heartbeat_timestamp_seconds{{{JA}}})", "heartbeat"),
                               (f"time() - max(agent_progress_timestamp_seconds{{{JA}}})", "progress")), w=8, min_=0),
            timeseries("Loop detections by detector", "Loop detector triggers per second.", "ops",
                       targets((f"sum by (detector) (rate(agent_loop_detections_total{{{JA}}}[{RI}]))",
                                "{{detector}}")), w=8, stack=True, min_=0),
            timeseries("Token budget", "Utilization of the budget named after this agent (agentvigil "
                       "convention budget=\"<agent>\"), and its 1h linear forecast.", "percentunit",
                       targets((f'max(agent_budget_utilization_ratio{{{J}, budget=~"$agent"}})', "utilization"),
                               (f'max(predict_linear(agent_budget_utilization_ratio{{{J}, budget=~"$agent"}}[30m], 3600))',
                                "forecast in 1h")),
                       w=8, steps=[(None, "green"), (0.8, "red")], min_=0),
            table("Firing alerts for this agent", "Firing alerts with this agent's label, and those without an "
                  "agent label (breakers, budgets, fleet).", "none",
                  targets({"expr": f'ALERTS{{alertstate="firing", {J}, agent=~"$agent|"}}', "legend": "",
                           "instant": True, "table": True}), w=24),
        ]),
    ]
    return dashboard(AGENT_UID, "agentvigil / Agent drill-down",
                     "One agent: runs, tools, LLM calls with trace exemplars, liveness and guards.",
                     layout(rows), agent_multi=False,
                     dash_links=links(FLEET_UID, "agentvigil / Fleet overview"))


def render(dash: dict) -> str:
    return json.dumps(dash, indent=2, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    return {"agentvigil-fleet.json": render(fleet()), "agentvigil-agent.json": render(agent())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", action="store_true", help="exit 1 if the files in --out are stale")
    parser.add_argument("--group-by", action="append", default=[], metavar="LABEL",
                        help="a custom label (agentvigil.declare_labels) to filter by: a variable and a matcher")
    args = parser.parse_args(argv)
    global JA
    for label in args.group_by:
        if not label.isidentifier() or label in ("job", "agent", "datasource"):
            parser.error(f"--group-by: {label!r} is not a custom label name")
        GROUP_BY.append(label)
        JA += f', {label}=~"${label}|"'
    outputs = generate()
    stale = [n for n, text in outputs.items() if not (args.out / n).exists() or (args.out / n).read_text() != text]
    if args.check:
        for name in stale:
            print(f"{args.out / name} is stale: run python grafana/generate.py", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in outputs.items():
        (args.out / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
