"""The one writer of the Prometheus metric contract (docs/metrics.md): events → series.

The in-process Monitor, ``replay --metrics``, ``watch --metrics-port`` and ``supervise``'s /metrics all
write through this sink, so an agent in any language that records our NDJSON gets the same series as an
instrumented Python agent. Hot path: pre-bound children looked up with one dict hit (``AgentMetrics``
caches them per agent/tool/model), one lock for the little state derived here (open runs, cache window).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from typing import Any, Callable, TypeGuard

from .. import events as ev
from .._safety import fork_safe_lock
from ..errors import ERROR_KINDS, TOOL_ERROR, UNKNOWN
from ..events import Event
from ..metrics import CACHE_RATIO_WINDOW, AgentMetrics, ModelSeries

_KINDS = frozenset(ERROR_KINDS)
_RUN_STATUSES = ("ok", "error", "killed")
BREAKER_VALUE = {"closed": 0.0, "half_open": 0.5, "open": 1.0}
COST_OVER_BASELINE = "cost_over_baseline"
_LOOP_VERDICTS = ("repeat_call", "same_result", "repeated_sequence")


def _exemplar(event: Event) -> dict | None:
    if event.trace_id is None or event.span_id is None:
        return None
    return {"trace_id": event.trace_id, "span_id": event.span_id}


try:   # public in prometheus_client (the type its exposition reads); absent: observe() validates as usual
    from prometheus_client.samples import Exemplar as _Exemplar
except ImportError:  # pragma: no cover - depends on the installed version
    _Exemplar = None  # type: ignore[assignment,misc]

_INF = float("inf")
_time = time.time
# Exemplar label names and their length, fixed: ``trace_id`` and ``span_id`` are valid label names, and the
# labels stay within prometheus_client's 128-character limit when the two ids are at most 113 characters.
_ID_RUNES = 128 - len("trace_id") - len("span_id")


def _fast(histogram: Any) -> tuple[list, list] | None:
    """(bounds, buckets) of a prometheus_client Histogram child whose ``observe`` is the one we replicate, else
    None (a subclass, another client, a version without these attributes: its own ``observe`` is called)."""
    if histogram.__class__.observe is not _HISTOGRAM_OBSERVE:
        return None
    try:
        if histogram._labelnames and not histogram._labelvalues:
            return None   # a labelled parent, not a child: observe() raises for it
        return histogram._upper_bounds, histogram._buckets
    except AttributeError:
        return None


def observe(histogram: Any, amount: float) -> None:
    """``histogram.observe(amount)``: the sum, then the first bucket whose bound is >= amount (a bisection instead
    of ``observe``'s loop over the bounds, which are sorted and end with +Inf). NaN, which no bound takes, goes
    through ``observe``."""
    fast = _fast(histogram) if amount <= _INF else None
    if fast is None:
        histogram.observe(amount)
        return
    histogram._sum.inc(amount)
    fast[1][bisect_left(fast[0], amount)].inc(1)


def observe_with_ids(histogram: Any, amount: float, trace_id: str, span_id: str) -> None:
    """``histogram.observe(amount, {"trace_id": trace_id, "span_id": span_id})`` without re-validating labels we
    know are valid (the validation was most of an exemplar's cost on every tool call): the same sum, the same
    bucket, the same ``Exemplar``. Anything we cannot vouch for (ids too long, NaN, a histogram that is not the
    prometheus_client Histogram we know) goes through ``observe`` and its validation."""
    labels = {"trace_id": trace_id, "span_id": span_id}
    fast = _fast(histogram) if amount <= _INF and len(trace_id) + len(span_id) <= _ID_RUNES else None
    if fast is None or _Exemplar is None:
        histogram.observe(amount, labels)
        return
    histogram._sum.inc(amount)
    bucket = fast[1][bisect_left(fast[0], amount)]
    bucket.inc(1)
    bucket.set_exemplar(_Exemplar(labels, amount, _time()))


def _histogram_observe() -> Any:
    from prometheus_client import Histogram

    return Histogram.observe


_HISTOGRAM_OBSERVE = _histogram_observe()


def _seconds(event: Event) -> float | None:
    return None if event.duration_ms is None else event.duration_ms / 1000.0


class _CacheWindow:
    """cache_read / input tokens over the last CACHE_RATIO_WINDOW calls of one (agent, provider, model)."""

    __slots__ = ("calls", "read", "input")

    def __init__(self) -> None:
        self.calls: deque[tuple[int, int]] = deque()
        self.read = 0
        self.input = 0

    def add(self, read: int, inp: int) -> float | None:
        self.calls.append((read, inp))
        self.read += read
        self.input += inp
        if len(self.calls) > CACHE_RATIO_WINDOW:
            old_read, old_input = self.calls.popleft()
            self.read -= old_read
            self.input -= old_input
        return self.read / self.input if self.input > 0 else None


class PrometheusSink:
    consumes: frozenset[str]

    def __init__(self, metrics: AgentMetrics, baseline: Callable[[str | None], float | None] | None = None):
        self.metrics = metrics
        self.baseline = baseline
        self._lock = fork_safe_lock()
        self._open: dict[tuple, list] = {}          # (session, run) -> [agent, cost, custom label values]
        self._labelled = bool(metrics.extra_labels)  # custom labels declared: look up each event's values
        self._agent_extra: dict[str, tuple[str, ...]] = {}   # agent -> its Monitor's label values
        self._top: dict[str, float] = {}            # agent -> highest in-flight cost
        self._windows: dict[tuple[str, str, str], _CacheWindow] = {}
        m = metrics
        self._handlers: dict[str, Callable[[Event], None]] = {
            ev.TOOL_END: self._tool_end, ev.LLM_CALL: self._llm_call, ev.STEP_END: self._step_end,
            ev.RUN_START: self._run_start, ev.RUN_END: self._run_end, ev.HEARTBEAT: self._heartbeat,
            ev.DETECTION: self._detection, ev.KILL: self._kill, ev.BREAKER_TRANSITION: self._breaker,
            ev.GUARD_STATE: self._guard_state, ev.BUDGET_EXCEEDED: self._budget_exceeded,
        }
        self._cap_reason = m.cap["reason"]
        # Only the types it has a handler for: tool_start, step_start and llm_start write no series, and
        # leaving them out lets producers skip building those events when nothing else reads them.
        self.consumes = frozenset(self._handlers)
        self._tools = m._tools

    def reset_runs(self) -> None:
        """The process behind the events restarted: its runs in flight are gone."""
        with self._lock:
            gone = list(self._open.values())
            self._open.clear()
            agents = {run[0] for run in gone} | set(self._top)
            self._top.clear()
        for agent, *_ in gone:
            self.metrics.agent(agent).active_runs.dec()
        for agent in agents:
            self.metrics.agent(agent).active_run_cost.set(0.0)

    def handle(self, event: Event) -> None:
        handler = self._handlers.get(event.event_type)
        if handler is not None:
            handler(event)

    def handler_for(self, event_type: str) -> Callable[[Event], None] | None:
        """The pipeline calls the type's handler directly (see ``pipeline.Sink``)."""
        return self._handlers.get(event_type)

    # -- runs, steps, heartbeats -----------------------------------------------------------------------------
    def _extra(self, event: Event) -> tuple[str, ...]:
        """The custom label values of the event's run (else of its agent's Monitor): a dict hit."""
        run = self._open.get((event.session_id, event.run_id))
        if run is not None:
            return run[2]
        return self._agent_extra.get(event.agent_id or "unknown", ())

    def _labels_of(self, event: Event) -> tuple[str, ...]:
        detail = event.detail
        labels = detail.get("labels") if detail else None
        extra = self.metrics.extra_values(labels if isinstance(labels, dict) else None)
        return extra if any(extra) else ()

    def _run_start(self, event: Event) -> None:
        agent = event.agent_id or "unknown"
        key = (event.session_id, event.run_id)
        extra = self._labels_of(event) if self._labelled else ()
        with self._lock:
            if key in self._open:
                return
            forgotten = None
            if len(self._open) >= 100_000:      # runs that never ended: forget the oldest
                forgotten = self._open.pop(next(iter(self._open)))
            self._open[key] = [agent, 0.0, extra or self._agent_extra.get(agent, ())]
        if forgotten is not None:   # no longer counted as in flight: its end, if it comes, finds nothing to take off
            self.metrics.agent(forgotten[0]).active_runs.dec()
        series = self.metrics.agent(agent)
        series.active_runs.inc()
        if self.baseline is not None:   # a process's first run: the baseline its state file brought
            series.cost_baseline.set(self.baseline(event.agent_id) or 0.0)

    def _run_end(self, event: Event) -> None:
        agent = event.agent_id or "unknown"
        series = self.metrics.agent(agent)
        with self._lock:
            run = self._open.pop((event.session_id, event.run_id), None)
        if run is not None:
            series.active_runs.dec()
            self._recompute_top(agent, run[1])
        if self._labelled:
            extra = run[2] if run is not None else self._agent_extra.get(agent, ())
            if extra:
                series = self.metrics.agent(agent, extra)
        status = event.status if event.status in _RUN_STATUSES else "error"
        (series.runs_ok if status == "ok" else series.runs_killed if status == "killed" else series.runs_error).inc()
        cost = event.cost_usd or 0.0
        exemplar = _exemplar(event)
        seconds = _seconds(event)
        if seconds is not None:
            series.run_duration.observe(seconds, exemplar)
        series.run_cost.observe(cost, exemplar)
        series.run_steps.observe(event.step_index or 0, exemplar)
        series.last_run_cost.set(cost)
        series.progress.set(event.ts)
        if self.baseline is not None:
            series.cost_baseline.set(self.baseline(event.agent_id) or 0.0)

    def _step_end(self, event: Event) -> None:
        series = self.metrics.agent(event.agent_id or "unknown", self._extra(event) if self._labelled else ())
        series.steps.inc()
        series.progress.set(event.ts)

    def _heartbeat(self, event: Event) -> None:
        if self._labelled and event.detail:   # a Monitor's first heartbeat carries its labels
            extra = self._labels_of(event)
            if extra and len(self._agent_extra) < 10_000:
                self._agent_extra[event.agent_id or "unknown"] = extra
        series = self.metrics.agent(event.agent_id or "unknown")
        if event.status != "progress":
            series.heartbeat.set(event.ts)
        if event.status in ("idle", "progress"):
            series.progress.set(event.ts)

    # -- tools and LLM calls ---------------------------------------------------------------------------------
    def _tool_end(self, event: Event) -> None:
        agent, tool = event.agent_id or "unknown", event.tool_name or "unknown"
        if self._labelled:
            series = self.metrics.tool(agent, tool, self._extra(event))
        else:
            series = self._tools.get((agent, tool)) or self.metrics.tool(agent, tool)
        status = event.status
        if status == "ok":
            series.ok.inc()
        elif status == "rejected":
            series.rejected.inc()
            return
        elif status == "error":
            series.error.inc()
            kind = event.error_kind
            series.error_kind(kind if kind in _KINDS else TOOL_ERROR).inc()
        else:
            series.ok.inc()
        duration = event.duration_ms
        if duration is not None:
            trace_id, span_id = event.trace_id, event.span_id
            if trace_id is None or span_id is None:
                observe(series.duration, duration / 1000.0)
            else:
                observe_with_ids(series.duration, duration / 1000.0, trace_id, span_id)

    def _llm_call(self, event: Event) -> None:
        agent = event.agent_id or "unknown"
        series = self.metrics.model(agent, event.provider or "unknown", event.model or "unknown",
                                    self._extra(event) if self._labelled else ())
        if event.status == "error":
            series.error.inc()
            kind = event.error_kind
            series.error_kind(kind if kind in _KINDS else UNKNOWN).inc()
        else:
            series.ok.inc()
        seconds = _seconds(event)
        if seconds is not None:
            trace_id, span_id = event.trace_id, event.span_id
            if trace_id is None or span_id is None:
                observe(series.duration, seconds)
            else:
                observe_with_ids(series.duration, seconds, trace_id, span_id)
        inp, out = event.input_tokens or 0, event.output_tokens or 0
        read, write = event.cache_read_tokens or 0, event.cache_write_tokens or 0
        if not (inp or out or read or write):
            return
        series.input.inc(inp)
        series.output.inc(out)
        if read:
            series.cache_read.inc(read)
        if write:
            series.cache_write.inc(write)
        cost = event.cost_usd
        if cost is None:
            series.unpriced.inc()
        else:
            series.cost.inc(cost)
        if inp:
            self._cache(series, read, inp)
        if cost and event.run_id is not None:
            self._run_cost(agent, (event.session_id, event.run_id), cost)

    def _cache(self, series: ModelSeries, read: int, inp: int) -> None:
        with self._lock:
            window = self._windows.get(series.labels)
            if window is None:
                if len(self._windows) >= 50_000:
                    return
                window = self._windows[series.labels] = _CacheWindow()
            ratio = window.add(read, inp)
        if ratio is not None:
            series.cache_ratio_child().set(ratio)

    def _run_cost(self, agent: str, key: tuple, cost: float) -> None:
        with self._lock:
            run = self._open.get(key)
            if run is None:
                return
            run[1] += cost
            if run[1] <= self._top.get(agent, 0.0):
                return
            self._top[agent] = top = run[1]
        self.metrics.agent(agent).active_run_cost.set(top)

    def _recompute_top(self, agent: str, ended_cost: float) -> None:
        """Only when the run that ended held the top: one scan per such run, not per call."""
        with self._lock:
            if ended_cost < self._top.get(agent, 0.0):
                return
            top = max((run[1] for run in self._open.values() if run[0] == agent), default=0.0)
            self._top[agent] = top
        self.metrics.agent(agent).active_run_cost.set(top)

    # -- verdicts and guards ---------------------------------------------------------------------------------
    def _detection(self, event: Event) -> None:
        m = self.metrics
        series = m.agent(event.agent_id or "unknown")
        name = event.detector or "unknown"
        if name == COST_OVER_BASELINE:
            series.cost_spikes.inc()
        elif name in _LOOP_VERDICTS:
            series.loop[name].inc()
        series.detection(name).inc()

    def _kill(self, event: Event) -> None:
        m = self.metrics
        agent = m.agent(event.agent_id or "unknown").agent
        m.kills.labels(agent, self._cap_reason(event.reason or "kill_switch")).inc()

    def _breaker(self, event: Event) -> None:
        m = self.metrics
        label = m.cap["breaker"](event.name or "unknown")
        state = event.state if event.state in BREAKER_VALUE else "unknown"
        if state in BREAKER_VALUE:
            m.breaker_state.labels(label).set(BREAKER_VALUE[state])
        m.breaker_transitions.labels(label, state, self._cap_reason(event.reason or "unknown")).inc()

    def _guard_state(self, event: Event) -> None:
        m = self.metrics
        detail = event.detail or {}
        if detail.get("guard") == "breaker":
            if event.state in BREAKER_VALUE:
                m.breaker_state.labels(m.cap["breaker"](event.name or "unknown")).set(BREAKER_VALUE[event.state])
        elif detail.get("guard") == "budget":
            self._budget_gauges(m.cap["budget"](event.name or "unknown"), detail)

    def _budget_exceeded(self, event: Event) -> None:
        m = self.metrics
        label = m.cap["budget"](event.name or "unknown")
        m.budget_exceeded.labels(label).inc()
        self._budget_gauges(label, event.detail or {})

    def _budget_gauges(self, label: str, detail: dict) -> None:
        limit, committed, reserved = detail.get("limit"), detail.get("committed"), detail.get("reserved")
        if not (_count(limit) and limit > 0):
            return
        committed = committed if _count(committed) else 0
        reserved = reserved if _count(reserved) else 0
        m = self.metrics
        if detail.get("unit") != "usd":   # a CostBudget's amounts are not tokens: utilisation only
            m.budget_limit.labels(label).set(limit)
            m.budget_tokens.labels(label, "reserved").set(reserved)
            m.budget_tokens.labels(label, "committed").set(committed)
        m.budget_utilization.labels(label).set((committed + reserved) / limit)


def _count(value: object) -> TypeGuard[float]:
    return (value.__class__ is int or value.__class__ is float) and value >= 0 and value < 1e18  # type: ignore[operator]
