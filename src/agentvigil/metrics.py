"""The Prometheus metric contract, on a ``CollectorRegistry``. Names are a public contract used by the
shipped alert rules and dashboards: see docs/metrics.md.

Hot paths use pre-bound children (``AgentSeries``, ``ToolSeries``, ``ModelSeries``) resolved once per
agent / tool / model, so an update is one lock and one add inside prometheus_client. Every label value goes
through ``LabelCap``: values are truncated and, past a per-label cap, folded into ``__overflow__`` and counted.
The ``agent`` label has a smaller cap of its own (an agent is a kind of agent, like a job; its replicas are
told apart by ``instance``), and each agent's tools and models are capped per agent, so the agent × tool and
agent × model products stay bounded: see docs/fleet.md#series for the formula.

Each gauge declares how worker processes combine under ``PROMETHEUS_MULTIPROC_DIR`` (ignored in one process):
in-flight runs add up (livesum); breaker state, budget fill and in-flight cost take the worst live worker
(livemax); heartbeat and progress take the stalest live worker (livemin), so one stuck worker shows; values of
the last finished run take the most recent write. See docs/fleet.md.
"""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from ._safety import fork_safe, fork_safe_lock
from ._version import __version__

OVERFLOW = "__overflow__"
MAX_LABEL_LENGTH = 128

RUN_DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
RUN_COST_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 50)
RUN_STEPS_BUCKETS = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144)
TOOL_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LLM_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
CACHE_RATIO_WINDOW = 20  # calls in the agent_cache_hit_ratio gauge window
INTERNAL_COMPONENTS = ("monitor", "run", "step", "tool_call", "llm_call", "pricing", "usage", "digest", "tracing",
                       "tracing_setup", "otlp_export", "context", "recorder", "subscriber", "heartbeat", "breaker",
                       "budget", "kill", "instrumentation", "pipeline", "detector", "sink", "actions", "spans")


_CONTROL = dict.fromkeys(range(32), " ") | {127: " "}
_SURROGATE = re.compile("[\ud800-\udfff]")


def sanitize_label(value: str) -> str:
    """A label value every exposition format accepts: valid UTF-8 (lone surrogates replaced), no control
    characters, at most MAX_LABEL_LENGTH characters, never empty."""
    if not value:
        return "unknown"
    if len(value) > MAX_LABEL_LENGTH:
        value = value[:MAX_LABEL_LENGTH]
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:   # lone surrogates: U+FFFD, as the recorder writes them
        value = _SURROGATE.sub("\ufffd", value)
    if not value.isprintable():
        value = value.translate(_CONTROL)
    return value


class LabelCap:
    """Bounds the values one label can take. Thread-safe; the common case (known value) takes no lock."""

    def __init__(self, label: str, limit: int, overflow_counter: Counter):
        self.label = label
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = fork_safe_lock()
        self._counter = overflow_counter
        try:
            self._overflow: Any = overflow_counter.labels(label)  # at 0 from the start
        except OSError:  # a full PROMETHEUS_MULTIPROC_DIR: bound on the first overflow instead
            self._overflow = None

    def __call__(self, value: object) -> str:
        if value.__class__ is not str:
            value = "unknown" if value is None else str(value)
        if value in self._seen:
            return value  # type: ignore[return-value]
        value = sanitize_label(value)  # type: ignore[arg-type]
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) >= self.limit:
                if self._overflow is None:
                    self._overflow = self._counter.labels(self.label)
                self._overflow.inc()
                return OVERFLOW
            self._seen.add(value)
            return value


class PerAgentCap:
    """Bounds the values of one label (tool, model) per agent label: past ``limit`` values for one agent, new
    values fold into ``__overflow__`` for that agent (counted under ``label``). Called under AgentMetrics' lock;
    bounded by (agent cap + 1) × limit values."""

    def __init__(self, label: str, limit: int, overflow_counter: Counter):
        self.label = label
        self.limit = limit
        self._seen: dict[str, set[str]] = {}
        self._counter = overflow_counter

    def __call__(self, agent: str, value: str) -> str:
        seen = self._seen.setdefault(agent, set())
        if value in seen or value == OVERFLOW:
            return value
        if len(seen) >= self.limit:
            self._counter.labels(self.label).inc()
            return OVERFLOW
        seen.add(value)
        return value


def cap_limits(max_label_values: int | None = None) -> dict[str, int]:
    """The label caps from the environment (settings.label_caps): every label's, the agent label's (at most
    the label cap) and the per-agent caps of tools and models (keys ``tool/agent``, ``model/agent``)."""
    from .settings import label_caps

    caps = label_caps()
    if max_label_values is not None:
        caps["label"] = max_label_values
    return {"label": caps["label"], "agent": min(caps["agent"], caps["label"]),
            "tool/agent": caps["tool/agent"], "model/agent": caps["model/agent"]}



class _NoCount:
    """Stands in for a counter whose value could not be created (no room for its multiprocess file)."""

    def inc(self, amount: float = 1) -> None:
        pass

class AgentMetrics:
    """All agentvigil metric families on one registry. ``max_label_values`` overrides
    ``AGENTVIGIL_MAX_LABEL_VALUES``; ``max_agents`` (default ``AGENTVIGIL_MAX_AGENTS``, never above the label
    cap), ``max_tools_per_agent`` and ``max_models_per_agent`` likewise."""

    def __init__(self, registry: CollectorRegistry = REGISTRY, max_label_values: int | None = None,
                 max_agents: int | None = None, max_tools_per_agent: int | None = None,
                 max_models_per_agent: int | None = None):
        if None in (max_label_values, max_agents, max_tools_per_agent, max_models_per_agent):
            limits = cap_limits(max_label_values)  # metrics_for passes all four: no env read under its lock
            max_label_values = limits["label"]
            max_agents = max_agents or limits["agent"]
            max_tools_per_agent = max_tools_per_agent or limits["tool/agent"]
            max_models_per_agent = max_models_per_agent or limits["model/agent"]
        assert max_label_values and max_agents and max_tools_per_agent and max_models_per_agent
        self.registry = registry
        r = registry
        # Custom labels (declare_labels / AGENTVIGIL_LABELS), appended to the per-run families only.
        self.extra_labels = x = declared_labels(freeze=True)
        # -- runs and steps
        self.runs = Counter("agent_runs", "Agent runs finished, by final status (ok, error, killed).",
                            ["agent", "status", *x], registry=r)
        self.steps = Counter("agent_steps", "Agent steps completed.", ["agent", *x], registry=r)
        self.run_duration = Histogram("agent_run_duration_seconds", "Wall-clock duration of finished runs.",
                                      ["agent"], buckets=RUN_DURATION_BUCKETS, registry=r)
        self.run_cost = Histogram("agent_run_cost_usd", "Cost of finished runs in USD (priced calls only).",
                                  ["agent"], buckets=RUN_COST_BUCKETS, registry=r)
        self.run_steps = Histogram("agent_run_steps", "Steps per finished run.", ["agent"],
                                   buckets=RUN_STEPS_BUCKETS, registry=r)
        self.active_runs = Gauge("agent_active_runs", "Runs in flight.", ["agent"], registry=r,
                                 multiprocess_mode="livesum")
        self.active_run_cost = Gauge("agent_active_run_cost_usd",
                                     "Highest cost so far among in-flight runs, in USD (0 when none).",
                                     ["agent"], registry=r, multiprocess_mode="livemax")
        self.last_run_cost = Gauge("agent_last_run_cost_usd", "Cost of the most recent finished run in USD.",
                                   ["agent"], registry=r, multiprocess_mode="mostrecent")
        self.cost_baseline = Gauge("agent_run_cost_baseline_usd",
                                   "Rolling median cost of recent finished runs in USD (0 until enough runs).",
                                   ["agent"], registry=r, multiprocess_mode="mostrecent")
        # -- tools
        self.tool_calls = Counter("agent_tool_calls", "Tool calls finished, by status (ok, error; rejected: "
                                  "an action that could not be parsed or executed).",
                                  ["agent", "tool", "status", *x], registry=r)
        self.tool_errors = Counter("agent_tool_errors", "Tool call errors by error kind.",
                                   ["agent", "tool", "kind", *x], registry=r)
        self.tool_duration = Histogram("agent_tool_call_duration_seconds", "Tool call duration.",
                                       ["agent", "tool"], buckets=TOOL_DURATION_BUCKETS, registry=r)
        # -- LLM calls
        self.llm_calls = Counter("agent_llm_calls", "LLM calls finished, by status (ok, error).",
                                 ["agent", "provider", "model", "status", *x], registry=r)
        self.llm_errors = Counter("agent_llm_errors", "LLM call errors by error kind.",
                                  ["agent", "provider", "model", "kind", *x], registry=r)
        self.tokens = Counter("agent_tokens", "Tokens by type: input (inclusive of cached), output, cache_read, "
                              "cache_write.", ["agent", "provider", "model", "type", *x], registry=r)
        self.cost = Counter("agent_cost_usd", "Cost of priced LLM calls in USD.",
                            ["agent", "provider", "model", *x], registry=r)
        self.unpriced = Counter("agent_llm_calls_unpriced", "LLM calls whose model has no known price; their "
                                "cost is missing from agent_cost_usd_total.", ["agent", "provider", "model"],
                                registry=r)
        self.llm_duration = Histogram("agent_llm_call_duration_seconds", "LLM call duration.",
                                      ["agent", "provider", "model"], buckets=LLM_DURATION_BUCKETS, registry=r)
        self.cache_ratio = Gauge("agent_cache_hit_ratio", "Prompt-cache hit ratio: cache_read / input tokens "
                                 f"over the last {CACHE_RATIO_WINDOW} calls.", ["agent", "provider", "model"],
                                 registry=r, multiprocess_mode="livemostrecent")
        # -- detectors and guards
        self.loop_detections = Counter("agent_loop_detections", "Loop detector triggers.", ["agent", "detector"],
                                       registry=r)
        self.detections = Counter("agent_detections", "Verdicts of every detector (loops, cost, retry, "
                                  "duration, scope, silence, budget, breaker, correlated, ...).",
                                  ["agent", "detector"], registry=r)
        self.cost_spikes = Counter("agent_cost_spikes", "Runs whose cost went over spike_factor × baseline "
                                   "(in flight or finished).", ["agent"], registry=r)
        self.kills = Counter("agent_kills", "Runs stopped by the kill switch.", ["agent", "reason"], registry=r)
        self.breaker_state = Gauge("agent_circuit_breaker_state", "Circuit breaker state: 0 closed, "
                                   "0.5 half-open, 1 open.", ["breaker"], registry=r, multiprocess_mode="livemax")
        self.breaker_transitions = Counter("agent_circuit_breaker_transitions", "Circuit breaker state changes.",
                                           ["breaker", "to", "reason"], registry=r)
        self.budget_utilization = Gauge("agent_budget_utilization_ratio", "(committed + reserved) / limit.",
                                        ["budget"], registry=r, multiprocess_mode="livemax")
        self.budget_limit = Gauge("agent_budget_limit_tokens", "Token budget limit.", ["budget"], registry=r,
                                  multiprocess_mode="livemax")
        self.budget_tokens = Gauge("agent_budget_tokens", "Tokens held by a budget, by state (reserved, "
                                   "committed).", ["budget", "state"], registry=r, multiprocess_mode="livemax")
        self.budget_exceeded = Counter("agent_budget_exceeded", "Reservations refused or commits that went "
                                       "over the limit.", ["budget"], registry=r)
        # -- heartbeats
        self.heartbeat = Gauge("agent_heartbeat_timestamp_seconds", "Liveness: last background tick of the "
                               "process (Unix time).", ["agent"], registry=r, multiprocess_mode="livemin")
        self.progress = Gauge("agent_progress_timestamp_seconds", "Progress: last completed step or run, or "
                              "the last tick while idle (Unix time).", ["agent"], registry=r,
                              multiprocess_mode="livemin")
        # -- self-observability
        self.internal_errors = Counter("agentvigil_internal_errors", "Failures inside agentvigil, caught and "
                                       "not raised to the agent.", ["component"], registry=r)
        self.label_overflow = Counter("agentvigil_label_overflow", "Label values folded into __overflow__ "
                                      "because a label reached its cap.", ["label"], registry=r)
        self.events_dropped = Counter("agentvigil_events_dropped", "Events or spans dropped by a sink "
                                      "(full queue, failed export).", ["sink"], registry=r)
        self.price_cache_evictions: Counter | _NoCount
        try:  # unlabelled, so its value (an mmap entry in multiprocess mode) is created right here
            self.price_cache_evictions = Counter("agentvigil_price_cache_evictions", "Model price lookups dropped "
                                                 "from a PriceBook's bounded caches (oldest first).", registry=r)
        except OSError:  # a full PROMETHEUS_MULTIPROC_DIR (multiprocess.py reports it): count nothing, never raise
            self.price_cache_evictions = _NoCount()
        self.build_info = Gauge("agentvigil_build_info", "agentvigil version.", ["version"], registry=r,
                                multiprocess_mode="max")
        try:
            self.build_info.labels(__version__).set(1)
            # Self-metrics exist at 0 from the start, so increase() sees the very first failure.
            for component in INTERNAL_COMPONENTS:
                self.internal_errors.labels(component)
            for sink in ("recorder", "otlp"):
                self.events_dropped.labels(sink)
        except OSError:  # a full PROMETHEUS_MULTIPROC_DIR (multiprocess.py reports it): the families still work
            pass

        caps = {name: LabelCap(name, max_label_values, self.label_overflow)
                for name in ("tool", "provider", "model", "breaker", "budget", "reason", "detector", *x)}
        caps["agent"] = LabelCap("agent", min(max_agents, max_label_values), self.label_overflow)
        self.cap = caps
        self.tools_per_agent = PerAgentCap("tool", max_tools_per_agent, self.label_overflow)
        self.models_per_agent = PerAgentCap("model", max_models_per_agent, self.label_overflow)
        self._lock = fork_safe_lock()
        # keys: the names, plus the custom label values when labels are declared
        self._agents: dict[Any, AgentSeries] = {}
        self._tools: dict[tuple, ToolSeries] = {}
        self._models: dict[tuple, ModelSeries] = {}
        fork_safe(self)

    def _unlock_in_child(self) -> None:
        """prometheus_client never resets its locks at fork, so one a thread of the parent held (in an update, a
        ``.labels()``, a scrape) would stay locked in the child. Resets those of our families, of each of their
        values and of our registry; a user's metrics are left alone. One pass over our series, which the label
        caps bound. Raises the first failure once the rest are reset."""
        failure: Exception | None = None

        def reset(owner: Any) -> None:
            nonlocal failure
            lock = getattr(owner, "_lock", None)   # none on multiprocess values: they share one of their own
            if lock is not None:
                try:
                    lock._at_fork_reinit()
                except Exception as exc:
                    failure = failure or exc

        reset(self.registry)
        for family in list(vars(self).values()):
            if not isinstance(family, MetricWrapperBase):
                continue
            reset(family)
            children = getattr(family, "_metrics", None)   # a labelled family; else the family is its value
            for child in (list(children.values()) if children is not None else [family]):
                reset(getattr(child, "_value", None))
                reset(getattr(child, "_sum", None))
                reset(getattr(child, "_count", None))
                for bucket in getattr(child, "_buckets", ()):
                    reset(bucket)
        if failure is not None:
            raise failure

    def extra_values(self, values: dict | None) -> tuple[str, ...]:
        """The custom label values of ``values`` in declared order, each capped like every label ("" when
        unset, which Prometheus shows as no label). () when no labels are declared."""
        names = self.extra_labels
        if not names:
            return ()
        values = values or {}
        return tuple(self.cap[n](str(values[n])) if values.get(n) not in (None, "") else "" for n in names)

    # Bound-series lookups: a dict hit on the hot path, creation (and capping) once per key. ``extra``: the
    # custom label values (extra_values), part of the key only when labels are declared.
    def agent(self, agent: str, extra: tuple[str, ...] = ()) -> "AgentSeries":
        key: Any = (agent, extra) if extra else agent
        series = self._agents.get(key)
        if series is None:
            with self._lock:
                series = self._agents.get(key) or AgentSeries(self, self.cap["agent"](agent), extra)
                if len(self._agents) < 10_000:  # past that, names resolve (to __overflow__) uncached
                    self._agents[key] = series
        return series

    def tool(self, agent: str, tool: str, extra: tuple[str, ...] = ()) -> "ToolSeries":
        key: tuple = (agent, tool, extra) if extra else (agent, tool)
        series = self._tools.get(key)
        if series is None:
            agent_label = self.agent(agent).agent  # before taking the (non-reentrant) lock
            tool_label = self.cap["tool"](tool)
            with self._lock:
                series = self._tools.get(key) or ToolSeries(self, agent_label,
                                                            self.tools_per_agent(agent_label, tool_label), extra)
                if len(self._tools) < 50_000:  # an overflowing tool name still resolves, just uncached
                    self._tools[key] = series
        return series

    def model(self, agent: str, provider: str, model: str, extra: tuple[str, ...] = ()) -> "ModelSeries":
        key: tuple = (agent, provider, model, extra) if extra else (agent, provider, model)
        series = self._models.get(key)
        if series is None:
            agent_label = self.agent(agent).agent
            provider_label, model_label = self.cap["provider"](provider), self.cap["model"](model)
            with self._lock:
                series = self._models.get(key) or ModelSeries(
                    self, agent_label, provider_label, self.models_per_agent(agent_label, model_label), extra)
                if len(self._models) < 50_000:
                    self._models[key] = series
        return series


class AgentSeries:
    """The children of one agent, bound once."""

    __slots__ = ("agent", "steps", "runs_ok", "runs_error", "runs_killed", "run_duration", "run_cost",
                 "run_steps", "active_runs", "active_run_cost", "last_run_cost", "cost_baseline", "heartbeat",
                 "progress", "loop", "cost_spikes", "metrics", "_detections")

    def __init__(self, m: AgentMetrics, agent: str, extra: tuple[str, ...] = ()):
        self.metrics = m
        self.agent = agent
        x = extra or ("",) * len(m.extra_labels)
        self.steps = m.steps.labels(agent, *x)
        self.runs_ok = m.runs.labels(agent, "ok", *x)
        self.runs_error = m.runs.labels(agent, "error", *x)
        self.runs_killed = m.runs.labels(agent, "killed", *x)
        self.run_duration = m.run_duration.labels(agent)
        self.run_cost = m.run_cost.labels(agent)
        self.run_steps = m.run_steps.labels(agent)
        self.active_runs = m.active_runs.labels(agent)
        self.active_run_cost = m.active_run_cost.labels(agent)
        self.last_run_cost = m.last_run_cost.labels(agent)
        self.cost_baseline = m.cost_baseline.labels(agent)
        self.heartbeat = m.heartbeat.labels(agent)
        self.progress = m.progress.labels(agent)
        self.cost_spikes = m.cost_spikes.labels(agent)
        self.loop = {name: m.loop_detections.labels(agent, name)
                     for name in ("repeat_call", "same_result", "repeated_sequence")}
        self._detections: dict[str, Any] = {}

    def detection(self, detector: str) -> Any:
        child = self._detections.get(detector)
        if child is None:
            child = self.metrics.detections.labels(self.agent, self.metrics.cap["detector"](detector))
            if len(self._detections) < 1000:
                self._detections[detector] = child
        return child


class ToolSeries:
    __slots__ = ("ok", "error", "duration", "errors", "agent", "tool", "metrics", "_rejected", "extra")

    def __init__(self, m: AgentMetrics, agent: str, tool: str, extra: tuple[str, ...] = ()):
        self.metrics, self.agent, self.tool = m, agent, tool
        self.extra = x = extra or ("",) * len(m.extra_labels)
        self.ok = m.tool_calls.labels(agent, tool, "ok", *x)
        self.error = m.tool_calls.labels(agent, tool, "error", *x)
        self.duration = m.tool_duration.labels(agent, tool)
        self.errors: dict[str, Any] = {}
        self._rejected: Any = None

    @property
    def rejected(self) -> Any:
        if self._rejected is None:  # created on first use: most tools never see a rejected action
            self._rejected = self.metrics.tool_calls.labels(self.agent, self.tool, "rejected", *self.extra)
        return self._rejected

    def error_kind(self, kind: str) -> Any:
        """The agent_tool_errors_total child of a kind (the caller passes a kind of the taxonomy)."""
        child = self.errors.get(kind)
        if child is None:
            child = self.errors[kind] = self.metrics.tool_errors.labels(self.agent, self.tool, kind, *self.extra)
        return child


class ModelSeries:
    __slots__ = ("ok", "error", "input", "output", "cache_read", "cache_write", "cost", "unpriced", "duration",
                 "cache_ratio", "errors", "labels", "metrics", "extra")

    def __init__(self, m: AgentMetrics, agent: str, provider: str, model: str, extra: tuple[str, ...] = ()):
        self.metrics = m
        self.labels = (agent, provider, model)   # of the families without custom labels (and the cache window)
        self.extra = x = extra or ("",) * len(m.extra_labels)
        self.ok = m.llm_calls.labels(agent, provider, model, "ok", *x)
        self.error = m.llm_calls.labels(agent, provider, model, "error", *x)
        self.input = m.tokens.labels(agent, provider, model, "input", *x)
        self.output = m.tokens.labels(agent, provider, model, "output", *x)
        self.cache_read = m.tokens.labels(agent, provider, model, "cache_read", *x)
        self.cache_write = m.tokens.labels(agent, provider, model, "cache_write", *x)
        self.cost = m.cost.labels(agent, provider, model, *x)
        self.unpriced = m.unpriced.labels(agent, provider, model)
        self.duration = m.llm_duration.labels(agent, provider, model)
        self.cache_ratio: Any = None  # created on the first call with input tokens
        self.errors: dict[str, Any] = {}

    def error_kind(self, kind: str) -> Any:
        child = self.errors.get(kind)
        if child is None:
            child = self.errors[kind] = self.metrics.llm_errors.labels(*self.labels, kind, *self.extra)
        return child

    def cache_ratio_child(self) -> Any:
        if self.cache_ratio is None:
            self.cache_ratio = self.metrics.cache_ratio.labels(*self.labels)
        return self.cache_ratio


# -- custom labels ----------------------------------------------------------------------------------------
# Prometheus wants one label set per family, so the set is declared once per process, before the first
# metrics are created; values come per Monitor and per run (docs/metrics.md#custom-labels).
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
RESERVED_LABELS = frozenset({"agent", "tool", "status", "kind", "provider", "model", "type", "detector", "reason",
                             "breaker", "budget", "state", "to", "component", "label", "sink", "version", "le",
                             "quantile", "job", "instance"})
MAX_CUSTOM_LABELS = 5
_declared: tuple[str, ...] | None = None   # None: AGENTVIGIL_LABELS not read yet
_frozen = False                            # metrics exist with the declared set


def _check_labels(names: tuple[str, ...], where: str) -> tuple[str, ...]:
    out: list[str] = []
    for name in names:
        name = str(name).strip()
        if not name:
            continue
        if not _LABEL_NAME.match(name) or name.startswith("__") or name in RESERVED_LABELS:
            raise ValueError(f"{where}: {name!r} is not a usable label name (letters, digits and _, not "
                             f"starting with __, none of {', '.join(sorted(RESERVED_LABELS))})")
        if name not in out:
            out.append(name)
    if len(out) > MAX_CUSTOM_LABELS:
        raise ValueError(f"{where}: at most {MAX_CUSTOM_LABELS} custom labels, got {len(out)}")
    return tuple(out)


def declare_labels(*names: str) -> tuple[str, ...]:
    """Declare the custom labels (e.g. ``declare_labels("tenant", "env")``) carried by the per-run series
    (runs, steps, tool calls and errors, LLM calls and errors, tokens, cost). Call once, before the first
    Monitor; the same set again is a no-op. Raises ValueError for a bad name, or for a different set once
    metrics exist (their label set is fixed). Overrides ``AGENTVIGIL_LABELS``."""
    global _declared
    checked = _check_labels(tuple(names), "declare_labels")
    with _default_lock:
        if _frozen and checked != _declared:
            raise ValueError(f"declare_labels: metrics already exist with labels {list(_declared or ())}; "
                             "declare custom labels before the first Monitor")
        _declared = checked
    return checked


def declared_labels(freeze: bool = False) -> tuple[str, ...]:
    """The declared custom labels (from declare_labels, else ``AGENTVIGIL_LABELS``, comma-separated). A bad
    ``AGENTVIGIL_LABELS`` is logged, counted and ignored: configuration never crashes the agent."""
    global _declared, _frozen
    if _declared is None:
        from .settings import env_str, report_invalid

        raw = env_str("AGENTVIGIL_LABELS") or ""
        try:
            _declared = _check_labels(tuple(raw.split(",")), "AGENTVIGIL_LABELS")
        except ValueError as exc:
            _declared = ()
            report_invalid("AGENTVIGIL_LABELS", raw, str(exc), ())
    if freeze:
        _frozen = True
    return _declared


_default: AgentMetrics | None = None
_by_registry: dict[int, AgentMetrics] = {}
_default_lock = fork_safe_lock()


def metrics_for(registry: CollectorRegistry | None = None) -> AgentMetrics:
    """The AgentMetrics bound to ``registry`` (the prometheus_client default registry when None)."""
    registry = REGISTRY if registry is None else registry
    found = _by_registry.get(id(registry))
    if found is None or found.registry is not registry:
        # Read before the lock: an invalid value is counted through internal_error, which needs the
        # default metrics, which would wait on this very lock.
        limits = cap_limits()
        declared_labels()   # likewise: a bad AGENTVIGIL_LABELS is counted
        with _default_lock:
            found = _by_registry.get(id(registry))
            if found is None or found.registry is not registry:
                found = _by_registry[id(registry)] = AgentMetrics(
                    registry, limits["label"], limits["agent"], limits["tool/agent"], limits["model/agent"])
    return found


def default_metrics() -> AgentMetrics:
    return metrics_for(None)
