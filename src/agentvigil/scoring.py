"""``agentvigil replay PATH --labels FILE --score [--sweep]``: how well the detectors' verdicts match known
outcomes, per detector, per verdict and per source, so users can tune thresholds on their own history.

Labels are a JSON object mapping a run id or task id to true (the run should be flagged: it looped, ran out
of budget, hit its iteration limit) or false (a healthy run). A run counts as flagged by a detector when
that detector gave at least one verdict in it. Lead time is the fraction of the run (tool results) done at
the first verdict; "saved" is the share of the positive runs' steps and cost that came after it. Sources
are agent ids up to their first "/", so a family of agents can be reported together.
"""

from __future__ import annotations

import copy
import json
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable

from . import events as ev
from .policy import WatchConfig
from .replay import ReplayStats, batched, sessions

COMBINED = "stuck_or_runaway"
_TRACED = frozenset({ev.RUN_START, ev.TOOL_END, ev.LLM_CALL, ev.RUN_END})   # what a run's trace counts
ANY = "any"
# One-at-a-time sweep around the defaults: (watcher, key, values)
SWEEP: tuple[tuple[str, str, tuple[Any, ...]], ...] = (
    ("stuck", "hold", (2, 3, 4, 5, 6, 8, 10)),
    ("stuck", "on_score", (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)),
    ("stuck", "identical_calls", (4, 5, 6, 8, 10, 15)),
    ("stuck", "same_errors", (3, 4, 5, 6, 8, 10)),
    ("stuck", "distinct_share", (0.2, 0.3, 0.4, 0.5, 0.6)),
    ("stuck", "recurrence_hold", (1, 2, 3, 4, 6)),
    ("stuck", "same_outputs", (4, 6, 8, 10, 15)),
    ("stuck", "same_results", (6, 8, 10, 12, 16, 24)),
    ("runaway", "length_factor", (1.25, 1.5, 2.0, 2.5, 3.0)),
    ("runaway", "spend_factor", (1.0, 1.25, 1.5, 2.0, 3.0)),
    ("runaway", "hold", (1, 2, 3)),
    ("runaway", "limit_fraction", (0.5, 0.6, 0.7, 0.8, 0.9)),
    ("runaway", "limit_distinct", (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)),
    ("runaway", "unfinished_share", (0.8, 0.85, 0.9, 0.95, 1.0)),
    ("runaway", "unfinished_runs", (5, 8, 10, 15, 20)),
)


@dataclass
class _RunTrace:
    source: str
    label: bool
    steps: int = 0
    cost: float = 0.0
    ended: bool = False
    first: dict[str, tuple[int, float]] = field(default_factory=dict)   # verdict group -> (steps, cost) at first


def load_labels(path: str) -> dict[str, bool]:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object mapping run_id or task_id to true/false")
    for key, value in data.items():
        if not isinstance(value, bool):
            raise ValueError(f"{path}: label of {key!r} must be true or false, got {json.dumps(value)}")
    return data


def source_of(agent: str) -> str:
    """Runs are reported per source: the agent id up to its first "/" ("tau2-bench/airline" → "tau2-bench")."""
    return agent.split("/", 1)[0]


def _groups(detector: str) -> tuple[str, ...]:
    if detector in ("stuck", "runaway"):
        return (detector, COMBINED, ANY)
    return (detector, ANY)


def collect(path: str, labels: dict[str, bool], settings: object = None, policy: WatchConfig | None = None,
            stats: ReplayStats | None = None) -> list[_RunTrace]:
    """Replay every session under ``path`` and trace each labelled run: its length, cost and first verdicts."""
    stats = stats if stats is not None else ReplayStats()
    traces: dict[tuple, _RunTrace] = {}
    for pipeline, events in sessions(path, stats, settings, policy, also=_TRACED):
        for batch in batched(events):
            # judged first: the trace of an event is its own business, the pipeline's verdicts are the same
            found = dict(pipeline.emit_batch(batch))
            for i, event in enumerate(batch):
                _trace(event, traces, labels, found.get(i, ()), stats)
    return list(traces.values())


def _trace(event: ev.Event, traces: dict[tuple, _RunTrace], labels: dict[str, bool], verdicts: Iterable[ev.Event],
           stats: ReplayStats) -> None:
    """One event of a replay and its verdicts: the run's trace, and where its first verdicts came."""
    key = (event.session_id, event.run_id or event.task_id)
    trace = traces.get(key)
    if trace is None and event.event_type == ev.RUN_START:
        label = labels.get(event.run_id or "", labels.get(event.task_id or ""))
        if label is not None:
            trace = traces[key] = _RunTrace(source_of(event.agent_id or event.session_id or "-"), label)
    if trace is not None:
        if event.event_type == ev.TOOL_END:
            trace.steps += 1
        elif event.event_type == ev.LLM_CALL and event.cost_usd:
            trace.cost += event.cost_usd
        elif event.event_type == ev.RUN_END:
            trace.ended = True
    for verdict in verdicts:
        stats.detections += 1
        t = traces.get((verdict.session_id, verdict.run_id or verdict.task_id))
        if t is None or t.ended and event.event_type != ev.RUN_END:
            continue
        for group in _groups(verdict.detector or "?"):
            t.first.setdefault(group, (t.steps, t.cost))


def metrics(traces: Iterable[_RunTrace], group: str) -> dict[str, Any]:
    tp = fp = fn = tn = 0
    lead: list[float] = []
    pos_steps = saved_steps = 0
    pos_cost = saved_cost = 0.0
    for t in traces:
        hit = t.first.get(group)
        if t.label:
            pos_steps += t.steps
            pos_cost += t.cost
            if hit is None:
                fn += 1
                continue
            tp += 1
            lead.append(hit[0] / t.steps if t.steps else 1.0)
            saved_steps += t.steps - hit[0]
            saved_cost += t.cost - hit[1]
        elif hit is None:
            tn += 1
        else:
            fp += 1
    return {"runs": tp + fp + fn + tn, "positives": tp + fn, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn), "fpr": _ratio(fp, fp + tn),
            "median_lead": round(statistics.median(lead), 3) if lead else None,
            "steps_saved": _ratio(saved_steps, pos_steps), "cost_saved": _ratio(saved_cost, pos_cost)}


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def report(traces: list[_RunTrace]) -> dict[str, Any]:
    """{"all": {group: metrics}, "by_source": {source: {group: metrics}}}"""
    groups = sorted({g for t in traces for g in t.first} | {"stuck", "runaway", COMBINED, ANY})
    sources = sorted({t.source for t in traces})
    return {"all": {g: metrics(traces, g) for g in groups},
            "by_source": {s: {g: metrics([t for t in traces if t.source == s], g) for g in groups}
                          for s in sources}}


def sweep(path: str, labels: dict[str, bool], settings: object, policy: WatchConfig) -> list[dict[str, Any]]:
    rows = []
    for watcher, key, values in SWEEP:
        if watcher not in policy.watchers:
            continue
        for value in values:
            trial = copy.deepcopy(policy)
            trial.override(watcher, key, value)
            group = watcher if watcher in ("stuck", "runaway") else COMBINED
            traces = collect(path, labels, settings, trial)
            rows.append({"param": f"{watcher}.{key}", "value": value, "verdict": group,
                         **metrics(traces, group), "combined": metrics(traces, COMBINED)})
    return rows


_COLUMNS = ("runs", "positives", "precision", "recall", "fpr", "median_lead", "steps_saved", "cost_saved")


def format_table(rep: dict[str, Any]) -> str:
    lines = []
    for title, block in [("all sources", rep["all"]), *rep["by_source"].items()]:
        lines.append(f"== {title}")
        lines.append(f"{'verdict':<22}" + "".join(f"{c:>12}" for c in _COLUMNS))
        for group, m in block.items():
            lines.append(f"{group:<22}" + "".join(f"{_cell(m[c]):>12}" for c in _COLUMNS))
    return "\n".join(lines) + "\n"


def format_sweep(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'param':<24}{'value':>8}" + "".join(f"{c:>12}" for c in ("precision", "recall", "fpr",
                                                                         "median_lead", "comb_f1"))]
    for r in rows:
        c = r["combined"]
        f1 = (2 * c["precision"] * c["recall"] / (c["precision"] + c["recall"])
              if c["precision"] and c["recall"] else 0.0)
        lines.append(f"{r['param']:<24}{r['value']!s:>8}" + "".join(
            f"{_cell(r[k]):>12}" for k in ("precision", "recall", "fpr", "median_lead")) + f"{f1:>12.3f}")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)
