"""Monitor: health instrumentation for one agent. It owns the agent's pipeline and produces its events; the
scopes (``scopes.py``: Run, Step, ToolCall, LLMCall) produce the rest. Every event takes
``Monitor._emit`` → ``Pipeline.emit``: detectors, then spans, Prometheus, recorder, subscribers, actions.
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable

from . import control
from . import events as ev
from ._context import current_run
from ._safety import error_counter, fork_safe_lock, internal_error, safe_str
from .events import Event
from .exceptions import RunKilled
from .metrics import metrics_for
from .pipeline import Pipeline, Sink
from .pipeline.build import build_pipeline, load_policy
from .scopes import LLMCall, Run, Step, ToolCall
from .settings import MAX_SECONDS, Settings
from .signals.cost import PriceBook
from .sinks import otel
from .sinks.run_actions import RunActionSink
from .sinks.subscribers import GLOBAL_HANDLERS, Handler, SubscriberSink, prepare, remove

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .policy import WatchConfig

_time = time.time

# -- process-wide subscribers ----------------------------------------------------------------------------
_global_handlers = GLOBAL_HANDLERS


def subscribe(handler: Handler) -> Callable[[], None]:
    """Receive every detection of every Monitor, and guard events raised outside any run. Returns a
    function that unsubscribes. Handlers run on the producing thread: keep them quick. An async handler is
    scheduled on the event loop running when it subscribes."""
    stored = prepare(handler)
    _global_handlers.append(stored)
    return lambda: remove(_global_handlers, handler)


class _RecorderSink:
    consumes = frozenset(ev.EVENT_TYPES)

    def __init__(self, recorder: Any):
        self.handle = recorder.write
        self.recorder = recorder


MAX_OPEN_RUNS = 100_000   # as the Prometheus sink's table of open runs


# -- heartbeats ------------------------------------------------------------------------------------------
class _Ticker:
    """One daemon thread for the whole process: ticks liveness for every live Monitor (and lets its
    time-based detectors judge the clock). Started again in a forked child."""

    def __init__(self) -> None:
        self._monitors: weakref.WeakSet[Monitor] = weakref.WeakSet()
        self._lock = fork_safe_lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def add(self, monitor: Monitor) -> None:
        with self._lock:
            self._monitors.add(monitor)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="agentvigil-heartbeat", daemon=True)
                self._thread.start()
            else:
                self._wake.set()  # a shorter interval may apply now

    def _snapshot(self) -> list[Monitor]:
        with self._lock:   # WeakSet iteration races with adds from other threads
            return list(self._monitors)

    def _run(self) -> None:
        while True:
            try:
                monitors = self._snapshot()
                interval = min((m.settings.heartbeat_interval for m in monitors), default=5.0)
                for monitor in monitors:
                    monitor._tick()
            except Exception as exc:  # the ticker must outlive any one failure
                internal_error("heartbeat", exc)
                interval = 5.0
            self._wake.wait(min(max(interval, 0.01), MAX_SECONDS))
            self._wake.clear()

    def after_fork(self) -> None:
        self._wake = threading.Event()
        self._thread = None
        if len(self._monitors):
            self.add(next(iter(self._monitors)))


_ticker = _Ticker()


# -- the Monitor -----------------------------------------------------------------------------------------
class Monitor:
    """Health instrumentation for one agent (by name). Create one per agent and keep it.

    Options (keyword arguments win over ``AGENTVIGIL_*`` environment variables, see ``settings.py``):
    ``record_dir``, ``loop_action`` ('record' or 'raise'), loop/cost thresholds, ``heartbeat_interval``,
    ``capture_content``, ``config_file`` (a ``.agent-watch.json`` of detector thresholds and actions); plus
    ``registry`` (a prometheus CollectorRegistry), ``tracer_provider`` (an OTel TracerProvider) and
    ``prices`` (a PriceBook).
    """

    def __init__(self, agent: str, *, registry: CollectorRegistry | None = None, tracer_provider: Any = None,
                 prices: PriceBook | None = None, session_id: str | None = None, heartbeat: bool = True,
                 labels: dict[str, str] | None = None, **options: Any):
        self.agent = safe_str(agent, "monitor")
        self.settings = s = Settings.from_env(**options)
        self.metrics = metrics_for(registry)
        self.labels = _custom_labels(labels, self.metrics.extra_labels, {})
        try:
            self.prices = prices or PriceBook.from_env()
        except Exception as exc:
            internal_error("pricing", exc, self.metrics)
            self.prices = PriceBook()
        self.tracer = otel.build_tracer(tracer_provider, service_name=self.agent)
        self.recorder: Any = None
        if s.record_dir:
            try:
                from .sinks.recorder import Recorder

                self.recorder = Recorder(s.record_dir, self.agent, session_id)
            except Exception as exc:
                internal_error("recorder", exc, self.metrics)
        self._session_id = session_id
        self._lock = fork_safe_lock()   # bookkeeping only; never held across user code
        self._active: dict[Run, None] = {}   # in start order (a dict: the oldest is forgotten first)
        self._handlers: list[Handler] = []
        self._closed = False
        self.policy = load_policy(s)
        if s.record_dir:
            _keep_runaway_history_beside(self.policy, s.record_dir)
        self.pipeline = self._build_pipeline()
        # liveness and progress start now; the custom labels ride on it for readers of the recording
        self._emit(Event(ev.HEARTBEAT, _time(), status="idle",
                         detail={"labels": self.labels} if self.labels else None))
        if heartbeat:
            _ticker.add(self)
        control.register(self)

    def _build_pipeline(self) -> Pipeline:
        from .sinks.spans import SpanSink

        before: list[Sink] = [SpanSink(self.tracer, self.settings.capture_content)] if self.tracer else []
        after: list[Sink] = []
        if self.recorder is not None:
            after.append(_RecorderSink(self.recorder))
        after.append(SubscriberSink(self._handlers, _global_handlers, self.metrics))
        pipeline, context = build_pipeline(self.settings, self.policy, metrics=self.metrics, before=before,
                                           after=after, started_at=_time(), on_error=error_counter(self.metrics))
        pipeline.add_sink(RunActionSink(self.policy, context.families, self.settings.loop_action))
        return pipeline

    @property
    def session_id(self) -> str | None:
        """The recorder's session (a forked child gets its own), else the one given, else None."""
        recorder = self.recorder
        return recorder.session_id if recorder is not None else self._session_id

    # -- public API --------------------------------------------------------------------------------------
    def run(self, task_id: str | None = None, *, correlation_id: str | None = None,
            max_cost_usd: float | None = None, max_steps: int | None = None,
            max_seconds: float | None = None, labels: dict[str, str] | None = None,
            context_window: int | None = None) -> Run:
        """A run of the agent (one task). Use as ``with`` or ``async with``. ``max_cost_usd``/``max_steps``/
        ``max_seconds`` are the run's own limits (docs/limits.md): recorded on ``run_start`` (the runaway
        detector projects against them) and enforced: once one is reached the run raises
        ``RunLimitExceeded`` at its next step, tool-call or LLM-call boundary. ``context_window`` (the model's,
        in tokens) is recorded too but not enforced: runaway projects the run's context growth against it."""
        return Run(self, task_id, correlation_id, managed=True,
                   limits=_limits(max_cost_usd, max_steps, max_seconds, context_window),
                   labels=_custom_labels(labels, self.metrics.extra_labels, self.labels))

    def start_run(self, task_id: str | None = None, *, correlation_id: str | None = None,
                  max_cost_usd: float | None = None, max_steps: int | None = None,
                  max_seconds: float | None = None, labels: dict[str, str] | None = None,
                  context_window: int | None = None) -> Run:
        """Start a run by hand (callback-style frameworks); finish it with ``run.end()``. Raises RunKilled
        while a kill signal or kill file is in force."""
        if control.stop_reason is not None:
            raise RunKilled(control.stop_reason)
        run = Run(self, task_id, correlation_id, managed=False,
                  limits=_limits(max_cost_usd, max_steps, max_seconds, context_window),
                  labels=_custom_labels(labels, self.metrics.extra_labels, self.labels))
        run._begin()
        return run

    def subscribe(self, handler: Handler) -> Callable[[], None]:
        """Receive this agent's detections: loops, cost over baseline, watchers, breaker transitions and
        budget overruns that happen inside its runs, and kills. Returns an unsubscribe function."""
        self._handlers.append(prepare(handler))
        return lambda: remove(self._handlers, handler)

    def heartbeat(self) -> None:
        """Mark progress from your own work loop (for agents that do not use steps). Recorded as a
        ``heartbeat`` event with status ``progress`` so supervisors and watchers see it too."""
        self._emit(Event(ev.HEARTBEAT, _time(), status="progress"))

    def kill_all(self, reason: str = "kill_switch") -> int:
        """Kill every run in flight; each stops with RunKilled at its next boundary. Returns how many."""
        with self._lock:
            runs = list(self._active)
        for run in runs:
            run.kill(reason)
        return len(runs)

    @property
    def active_runs(self) -> int:
        return len(self._active)

    def close(self) -> None:
        """Stop heartbeats, write runaway's state file and close the recorder (flushing it). Metrics stay
        registered."""
        self._closed = True
        self.pipeline.close_detectors()
        if self.recorder is not None:
            self.recorder.close()

    def flush(self, timeout: float = 2.0) -> None:
        if self.recorder is not None:
            self.recorder.flush(timeout)

    # -- the event path ----------------------------------------------------------------------------------
    def _emit(self, event: Event) -> list[Event]:
        """Stamp and publish one event. Never raises."""
        try:
            event.agent_id = self.agent
            recorder = self.recorder   # the session_id property, inlined (once per event)
            event.session_id = recorder.session_id if recorder is not None else self._session_id
            return self.pipeline.emit(event)
        except Exception as exc:
            internal_error("monitor", exc, self.metrics)
            return []

    def _started(self, run: Run) -> None:
        with self._lock:
            active = self._active
            active[run] = None
            if len(active) > MAX_OPEN_RUNS:   # runs started and never ended: bounded memory, oldest out
                del active[next(iter(active))]
                forgot = True
            else:
                forgot = False
        if forgot:
            internal_error("monitor", ValueError(f"more than {MAX_OPEN_RUNS} runs never ended: the oldest is "
                                                 "forgotten (kill_all no longer reaches it)"), self.metrics)

    def _ended(self, run: Run) -> None:
        with self._lock:
            self._active.pop(run, None)

    def _price(self, provider: str, model: str, response_model: str | None, inp: int, out: int, read: int,
               write: int) -> float | None:
        try:
            cost = self.prices.cost(provider, response_model or model, inp, out, read, write)
            if cost is None and response_model:
                cost = self.prices.cost(provider, model, inp, out, read, write)
            return cost
        except Exception as exc:
            internal_error("pricing", exc, self.metrics)
            return None

    def _tick(self) -> None:
        if self._closed:
            return
        try:
            now = _time()
            self._emit(Event(ev.HEARTBEAT, now, status="busy" if self._active else "idle"))
            self.pipeline.tick(now)
        except Exception as exc:
            internal_error("heartbeat", exc, self.metrics)

    def _after_fork(self) -> None:
        """In a forked child: the recorder reopened as a new session; runs in flight belong to the parent."""
        self._active = {}

    def __repr__(self) -> str:
        return f"Monitor({self.agent!r}, active_runs={len(self._active)})"


# -- calls outside any run -------------------------------------------------------------------------------
_default_monitor: Monitor | None = None
_default_lock = fork_safe_lock()


def default_monitor() -> Monitor:
    """The Monitor for LLM calls made outside any run (SDK instrumentation). Agent name from
    ``AGENTVIGIL_AGENT``, else ``OTEL_SERVICE_NAME``, else "default"."""
    global _default_monitor
    if _default_monitor is None:
        with _default_lock:
            if _default_monitor is None:
                name = Settings.from_env().agent or os.environ.get("OTEL_SERVICE_NAME") or "default"
                _default_monitor = Monitor(name)
    return _default_monitor


def _resolve(monitor: Monitor | None) -> tuple[Monitor, Run | None]:
    run = current_run()
    if monitor is None:
        return (run.monitor if run is not None else default_monitor()), run
    return monitor, (run if run is not None and run.monitor is monitor else None)


def start_llm_call(provider: str, model: str, operation: str = "chat", *, monitor: Monitor | None = None) -> LLMCall:
    """Start an LLM call in the current run (or on ``monitor`` / the default monitor). Finish it with
    ``call.end(error=None)``. Raises RunKilled / LoopDetected only if the current run has one pending."""
    monitor, run = _resolve(monitor)
    call = LLMCall(monitor, run, provider, model, operation)
    call._begin()
    return call


def llm_call(provider: str, model: str, operation: str = "chat", *, monitor: Monitor | None = None) -> LLMCall:
    """Context-manager form of ``start_llm_call``."""
    monitor, run = _resolve(monitor)
    return LLMCall(monitor, run, provider, model, operation)


def _after_fork_in_child() -> None:
    for monitor in _ticker._monitors:
        try:
            monitor._after_fork()
        except Exception as exc:
            internal_error("monitor", exc)
    _ticker.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = ["LLMCall", "Monitor", "Run", "Step", "ToolCall", "default_monitor", "llm_call", "start_llm_call",
           "subscribe"]


def _limits(max_cost_usd: float | None, max_steps: int | None, max_seconds: float | None = None,
            context_window: int | None = None) -> dict | None:
    """The limits that are set: positive finite numbers (anything else is no limit, never an error raised
    into the agent)."""
    limits = {k: v for k, v in (("max_cost_usd", max_cost_usd), ("max_steps", max_steps),
                                ("max_seconds", max_seconds), ("context_window", context_window))
              if _is_limit(v)}
    return limits or None


def _is_limit(value: object) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return 0 < float(value) < math.inf   # an int past 1.8e308 is no limit (float() of it overflows)
    except OverflowError:
        return False


def _custom_labels(given: dict[str, str] | None, declared: tuple[str, ...], base: dict[str, str]) -> dict[str, str]:
    """``base`` (the Monitor's values) updated with ``given``, keeping the declared labels only; an
    undeclared one is counted and dropped, never raised (a label set is fixed per process)."""
    if not given:
        return base
    out = dict(base)
    try:
        for key, value in given.items():
            if key in declared:
                out[key] = str(value)
            else:
                internal_error("monitor", ValueError(
                    f"label {key!r} is not declared (declared: {list(declared)}); use agentvigil.declare_labels "
                    "or AGENTVIGIL_LABELS before the first Monitor"))
    except Exception as exc:   # not a mapping
        internal_error("monitor", exc)
    return out


RUNAWAY_STATE_FILE = "runaway-baseline.json"


def _keep_runaway_history_beside(policy: WatchConfig, record_dir: str) -> None:
    """When recording, runaway's baseline persists beside the sessions unless the config chose a state file
    ("" turns it off): a harness that starts one process per task then has it from its second run."""
    runaway = policy.watchers.get("runaway")
    if runaway is not None and runaway.params.get("state_file") is None:
        runaway.params["state_file"] = os.path.join(record_dir, RUNAWAY_STATE_FILE)
