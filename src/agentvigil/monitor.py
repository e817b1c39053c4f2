"""Monitor, Run, Step, ToolCall and LLMCall: the instrumentation API.

Everything here turns what the agent does into Events, and every Event takes the same short path:
``Monitor._emit`` → metrics (already updated by the caller from bound series) → recorder → ``Judge.feed``
→ detections → metrics, recorder, subscribers, and the guard flags checked at the next boundary.

Our own failures never reach the agent: every bookkeeping block is wrapped and counted. The agent's own
exceptions pass through unchanged. The only exceptions we raise are the guard exceptions.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
import weakref
from hashlib import blake2b
from time import perf_counter
from typing import Any, Callable

from . import control
from . import events as ev
from ._context import current_run, current_run_var
from ._safety import internal_error
from .config import Settings
from .detect import COST_OVER_BASELINE, CostPolicy, Judge
from .errors import TOOL_ERROR, UNKNOWN, classify_exception
from .events import Event
from .exceptions import GuardError, LoopDetected, RunKilled
from .metrics import metrics_for
from .signals.cost import PriceBook
from .signals.loops import LoopPolicy
from .sinks import otel as attr

_time = time.time

# -- process-wide subscribers ----------------------------------------------------------------------------
_global_handlers: list[Callable[[Event], Any]] = []


def subscribe(handler: Callable[[Event], Any]) -> Callable[[], None]:
    """Receive every detection of every Monitor, and guard events raised outside any run. Returns a
    function that unsubscribes. Handlers run on the agent's thread: keep them quick."""
    _global_handlers.append(handler)
    return lambda: _global_handlers.remove(handler) if handler in _global_handlers else None


def _deliver(handlers, event: Event) -> None:
    for handler in tuple(handlers):
        try:
            handler(event)
        except Exception as exc:  # a broken subscriber must not break the agent or other subscribers
            internal_error("subscriber", exc)


def publish_guard_event(event: Event, monitor: "Monitor | None" = None) -> None:
    """Route a breaker or budget event: to the run it happened in (or the guard's monitor), else to the
    global subscribers."""
    run = current_run()
    if run is not None:
        event.run_id, event.task_id, event.step_index = run.run_id, run.task_id, run.step_index
        event.correlation_id = run.correlation_id
        if monitor is None:
            monitor = run.monitor
    if monitor is not None:
        monitor._emit(event)
        monitor._notify(event)
    else:
        _deliver(_global_handlers, event)


# One encoder, built once: json.dumps with options builds a new encoder per call (~1 µs on the hot path).
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=repr).encode


def digest(value: Any) -> str | None:
    """A short stable hash of tool arguments or results. Raw values never leave the process; the hash is
    enough to tell "the same call again" from a new one."""
    if value is None:
        return None
    try:
        if value.__class__ is str:
            data = value.encode("utf-8", "surrogatepass")
        elif value.__class__ is bytes:
            data = value
        else:
            data = _canonical(value).encode("utf-8", "surrogatepass")
        return blake2b(data, digest_size=8).hexdigest()
    except Exception:
        try:
            return blake2b(repr(value).encode("utf-8", "replace"), digest_size=8).hexdigest()
        except Exception as exc:
            internal_error("digest", exc)
            return None


def _exemplar(span) -> dict | None:
    if span is None:
        return None
    ctx = span.get_span_context()
    if not ctx.is_valid or not ctx.trace_flags.sampled:
        return None
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


_trace = _otel_context = None


def _otel():
    """opentelemetry.trace and .context, imported once on first use (only when tracing is on)."""
    global _trace, _otel_context
    if _trace is None:
        from opentelemetry import context, trace

        _trace, _otel_context = trace, context
    return _trace, _otel_context


def _start_span(tracer, name: str, parent_span, attributes: dict, start_time: int | None = None):
    trace, _ = _otel()
    context = trace.set_span_in_context(parent_span) if parent_span is not None else None
    return tracer.start_span(name, context=context, attributes=attributes, start_time=start_time)


def _attach(span):
    try:
        trace, context = _otel()
        return context.attach(trace.set_span_in_context(span))
    except Exception as exc:
        internal_error("tracing", exc)
        return None


def _detach(token) -> None:
    try:
        _otel()[1].detach(token)
    except Exception as exc:  # e.g. exited in another context than entered
        internal_error("context", exc)


def _end_span(span, error: BaseException | None, kind: str | None, end_time: int | None = None) -> None:
    if span is None:
        return
    try:
        if error is not None:
            from opentelemetry.trace import Status, StatusCode

            span.set_attribute(attr.ERROR_TYPE, type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR, kind or UNKNOWN))
        elif kind:
            from opentelemetry.trace import Status, StatusCode

            span.set_attribute(attr.ERROR_TYPE, kind)
            span.set_status(Status(StatusCode.ERROR, kind))
        span.end(end_time=end_time)
    except Exception as exc:
        internal_error("tracing", exc)


# -- heartbeats ------------------------------------------------------------------------------------------
class _Ticker:
    """One daemon thread for the whole process: ticks liveness for every live Monitor, and marks idle
    monitors (no run in flight) as progressing, so an idle agent is not mistaken for a zombie."""

    def __init__(self):
        self._monitors: "weakref.WeakSet[Monitor]" = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def add(self, monitor: "Monitor") -> None:
        with self._lock:
            self._monitors.add(monitor)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="agentvigil-heartbeat", daemon=True)
                self._thread.start()
            else:
                self._wake.set()  # a shorter interval may apply now

    def _run(self) -> None:
        while True:
            monitors = list(self._monitors)
            interval = min((m.settings.heartbeat_interval for m in monitors), default=5.0)
            for monitor in monitors:
                monitor._tick()
            self._wake.wait(interval)
            self._wake.clear()


_ticker = _Ticker()


# -- the Monitor -----------------------------------------------------------------------------------------
class Monitor:
    """Health instrumentation for one agent (by name). Create one per agent and keep it.

    Options (keyword arguments win over ``AGENTVIGIL_*`` environment variables, see ``config.py``):
    ``record_dir``, ``loop_action`` ('record' or 'raise'), loop/cost thresholds, ``heartbeat_interval``,
    ``capture_content``; plus ``registry`` (a prometheus CollectorRegistry), ``tracer_provider`` (an OTel
    TracerProvider) and ``prices`` (a PriceBook).
    """

    def __init__(self, agent: str, *, registry=None, tracer_provider=None, prices: PriceBook | None = None,
                 session_id: str | None = None, heartbeat: bool = True, **options):
        self.agent = str(agent)
        self.settings = s = Settings.from_env(**options)
        self.metrics = metrics_for(registry)
        self._series = self.metrics.agent(self.agent)
        self.prices = prices or PriceBook.from_env()
        self.judge = Judge(
            LoopPolicy(max_repeats=s.loop_max_repeats, window=s.loop_window,
                       sequence_repeats=s.loop_sequence_repeats),
            CostPolicy(spike_factor=s.cost_spike_factor, baseline_runs=s.cost_baseline_runs,
                       min_runs=s.cost_min_runs),
        )
        self.tracer = attr.build_tracer(tracer_provider, service_name=self.agent)
        self.recorder = None
        if s.record_dir:
            try:
                from .sinks.recorder import Recorder

                self.recorder = Recorder(s.record_dir, self.agent, session_id)
            except Exception as exc:
                internal_error("recorder", exc)
        self.session_id = self.recorder.session_id if self.recorder else session_id
        self._lock = threading.Lock()   # bookkeeping only; never held across user code
        self._active: set[Run] = set()
        self._handlers: list[Callable[[Event], Any]] = []
        now = _time()
        self._series.heartbeat.set(now)
        self._series.progress.set(now)
        if heartbeat:
            _ticker.add(self)
        control.register(self)

    # -- public API --------------------------------------------------------------------------------------
    def run(self, task_id: str | None = None, *, correlation_id: str | None = None) -> "Run":
        """A run of the agent (one task). Use as ``with`` or ``async with``."""
        return Run(self, task_id, correlation_id, managed=True)

    def start_run(self, task_id: str | None = None, *, correlation_id: str | None = None) -> "Run":
        """Start a run by hand (callback-style frameworks); finish it with ``run.end()``. Raises RunKilled
        while a kill signal or kill file is in force."""
        if control.stop_reason is not None:
            raise RunKilled(control.stop_reason)
        run = Run(self, task_id, correlation_id, managed=False)
        run._begin()
        return run

    def subscribe(self, handler: Callable[[Event], Any]) -> Callable[[], None]:
        """Receive this agent's detections: loops, cost over baseline, breaker transitions and budget
        overruns that happen inside its runs, and kills. Returns an unsubscribe function."""
        self._handlers.append(handler)
        return lambda: self._handlers.remove(handler) if handler in self._handlers else None

    def heartbeat(self) -> None:
        """Mark progress from your own work loop (for agents that do not use steps). Recorded as a
        ``heartbeat`` event with status ``progress`` so supervisors and watchers see it too."""
        now = _time()
        self._series.progress.set(now)
        if self.recorder is not None:
            self.recorder.write(Event(ev.HEARTBEAT, now, agent_id=self.agent, session_id=self.session_id,
                                      status="progress"))

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
        """Stop heartbeats and close the recorder (flushing it). Metrics stay registered."""
        self._closed = True
        if self.recorder is not None:
            self.recorder.close()

    def flush(self, timeout: float = 2.0) -> None:
        if self.recorder is not None:
            self.recorder.flush(timeout)

    # -- the event path ----------------------------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        """Record an event and judge it. Never raises."""
        try:
            event.agent_id = self.agent
            event.session_id = self.session_id
            if self.recorder is not None:
                self.recorder.write(event)
            if event.event_type in _JUDGED:
                with self._lock:
                    found = self.judge.feed(event)
                for detection in found:
                    self._on_detection(detection)
        except Exception as exc:
            internal_error("monitor", exc)

    def _on_detection(self, detection: Event) -> None:
        series = self._series
        if detection.detector == COST_OVER_BASELINE:
            series.cost_spikes.inc()
        else:
            counter = series.loop.get(detection.detector)
            if counter is not None:
                counter.inc()
                if self.settings.loop_action == "raise":
                    run = self._find_run(detection.run_id)
                    if run is not None and run._pending is None:
                        run._pending = LoopDetected(detection.detector, detection.detail or {})
        if self.recorder is not None:
            self.recorder.write(detection)
        self._notify(detection)

    def _notify(self, event: Event) -> None:
        if self._handlers:
            _deliver(self._handlers, event)
        if _global_handlers:
            _deliver(_global_handlers, event)

    def _find_run(self, run_id: str | None) -> "Run | None":
        with self._lock:
            for run in self._active:
                if run.run_id == run_id:
                    return run
        return None

    _closed = False

    def _tick(self) -> None:
        if self._closed:
            return
        try:
            now = _time()
            self._series.heartbeat.set(now)
            if not self._active:
                self._series.progress.set(now)
            if self.recorder is not None:
                self.recorder.write(Event(ev.HEARTBEAT, now, agent_id=self.agent, session_id=self.session_id,
                                          token_count=None, status="idle" if not self._active else "busy"))
        except Exception as exc:
            internal_error("heartbeat", exc)

    def _update_active_cost(self) -> None:
        with self._lock:
            top = max((r.cost for r in self._active), default=0.0)
        self._series.active_run_cost.set(top)

    def __repr__(self) -> str:
        return f"Monitor({self.agent!r}, active_runs={len(self._active)})"


_JUDGED = frozenset({ev.TOOL_END, ev.LLM_CALL, ev.RUN_END})


class Run:
    """One run of an agent. Steps, tool calls and LLM calls happen inside it."""

    def __init__(self, monitor: Monitor, task_id: str | None, correlation_id: str | None, managed: bool):
        self.monitor = monitor
        self.run_id = uuid.uuid4().hex[:16]
        self.task_id = task_id
        self.correlation_id = correlation_id
        self.step_index = 0
        self.steps = 0
        self.cost = 0.0
        self.tokens = 0
        self.unpriced_calls = 0
        self.status: str | None = None
        self._managed = managed
        self._pending: GuardError | None = None   # raised at the next boundary (loop guard)
        self._kill_reason: str | None = None
        self._span = None
        self._start = 0.0
        self._ctx_token = None
        self._otel_token = None
        self._ended = False

    # -- lifecycle ---------------------------------------------------------------------------------------
    def _begin(self) -> None:
        m = self.monitor
        self._start = perf_counter()
        try:
            with m._lock:
                m._active.add(self)
            m._series.active_runs.inc()
            if m.tracer is not None:
                attributes = {attr.OPERATION_NAME: "invoke_agent", attr.AGENT_NAME: m.agent, attr.RUN_ID: self.run_id}
                if self.task_id:
                    attributes[attr.TASK_ID] = self.task_id
                    attributes[attr.CONVERSATION_ID] = self.task_id
                if self.correlation_id:
                    attributes[attr.CORRELATION_ID] = self.correlation_id
                self._span = m.tracer.start_span(f"invoke_agent {m.agent}", attributes=attributes)
            m._emit(Event(ev.RUN_START, _time(), run_id=self.run_id, task_id=self.task_id,
                          correlation_id=self.correlation_id))
        except Exception as exc:
            internal_error("run", exc)

    def end(self, error: BaseException | None = None, status: str | None = None) -> None:
        """Finish the run (idempotent). ``status`` defaults to ok, error or killed from ``error``."""
        if self._ended:
            return
        self._ended = True
        m = self.monitor
        try:
            if status is None:
                if isinstance(error, RunKilled) or self._kill_reason is not None and error is not None:
                    status = "killed"
                else:
                    status = "ok" if error is None else "error"
            self.status = status
            duration = perf_counter() - self._start
            kind = None if error is None else (
                "killed" if status == "killed" else
                type(error).__name__ if isinstance(error, GuardError) else classify_exception(error))
            with m._lock:
                m._active.discard(self)
            series = m._series
            series.active_runs.dec()
            exemplar = _exemplar(self._span)
            if status == "ok":
                series.runs_ok.inc()
            elif status == "killed":
                series.runs_killed.inc()
            else:
                series.runs_error.inc()
            series.run_duration.observe(duration, exemplar)
            series.run_cost.observe(self.cost, exemplar)
            series.run_steps.observe(self.steps, exemplar)
            series.last_run_cost.set(self.cost)
            series.progress.set(_time())
            detail = {"unpriced_calls": self.unpriced_calls} if self.unpriced_calls else None
            m._emit(Event(ev.RUN_END, _time(), run_id=self.run_id, task_id=self.task_id,
                          correlation_id=self.correlation_id, step_index=self.step_index, status=status,
                          error_kind=kind, duration_ms=duration * 1000.0, cost_usd=self.cost,
                          token_count=self.tokens, detail=detail))
            baseline = m.judge.baseline(m.agent)
            series.cost_baseline.set(baseline or 0.0)
            m._update_active_cost()
            if self._span is not None:
                self._span.set_attribute(attr.RUN_STATUS, status)
                self._span.set_attribute(attr.COST_USD, self.cost)
                _end_span(self._span, error if status != "killed" else None, None)
        except Exception as exc:
            internal_error("run", exc)
        if control.stop_reason is not None:
            control.run_ended()

    def __enter__(self) -> "Run":
        if control.stop_reason is not None:
            raise RunKilled(control.stop_reason)
        self._begin()
        self._ctx_token = current_run_var.set(self)
        if self._span is not None:
            self._otel_token = _attach(self._span)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end(exc)
        self._restore()

    async def __aenter__(self) -> "Run":
        return self.__enter__()

    async def __aexit__(self, exc_type, exc, tb) -> None:
        self.__exit__(exc_type, exc, tb)

    def _restore(self) -> None:
        try:
            if self._otel_token is not None:
                from opentelemetry import context

                context.detach(self._otel_token)
                self._otel_token = None
            if self._ctx_token is not None:
                current_run_var.reset(self._ctx_token)
                self._ctx_token = None
        except Exception as exc:  # e.g. exited in another context than entered
            internal_error("context", exc)

    def activate(self):
        """Make this run current in this context (for callback-style frameworks that cannot use ``with``).
        Returns a token for ``deactivate``."""
        return current_run_var.set(self)

    @staticmethod
    def deactivate(token) -> None:
        try:
            current_run_var.reset(token)
        except Exception as exc:
            internal_error("context", exc)

    def start_llm_call(self, provider: str, model: str, operation: str = "chat") -> "LLMCall":
        """Start an LLM call in this run; finish it with ``call.end(error=None)``."""
        call = LLMCall(self.monitor, self, provider, model, operation)
        call._begin()
        return call

    # -- kill switch -------------------------------------------------------------------------------------
    def kill(self, reason: str = "kill_switch") -> None:
        """Stop this run at its next step, tool-call or LLM-call boundary with RunKilled."""
        if self._kill_reason is not None or self._ended:
            return
        self._kill_reason = str(reason)
        m = self.monitor
        try:
            m.metrics.kills.labels(m._series.agent, m.metrics.cap["reason"](self._kill_reason)).inc()
            event = Event(ev.KILL, _time(), run_id=self.run_id, task_id=self.task_id,
                          correlation_id=self.correlation_id, step_index=self.step_index, reason=self._kill_reason)
            m._emit(event)
            m._notify(event)
        except Exception as exc:
            internal_error("kill", exc)

    @property
    def killed(self) -> bool:
        return self._kill_reason is not None

    def check(self) -> None:
        """Raise the pending guard exception (RunKilled, LoopDetected), if any. Called at every boundary;
        call it yourself inside long steps."""
        if self._kill_reason is not None:
            raise RunKilled(self._kill_reason)
        if control.stop_reason is not None:
            self.kill(control.stop_reason)
            raise RunKilled(control.stop_reason)
        pending = self._pending
        if pending is not None:
            self._pending = None
            raise pending

    # -- children ----------------------------------------------------------------------------------------
    def step(self, name: str | None = None) -> "Step":
        return Step(self, name, managed=True)

    def start_step(self, name: str | None = None) -> "Step":
        step = Step(self, name, managed=False)
        step._begin()
        return step

    def tool_call(self, name: str, args: Any = None, *, call_id: str | None = None,
                  paths: list[str] | None = None, access: str | None = None) -> "ToolCall":
        """A tool call. ``paths``/``access`` (opt-in): files the tool reads or writes ('read' or 'write'),
        recorded as ``detail.paths``/``detail.access`` so ``agentvigil watch`` can check them against a
        scope policy. Arguments themselves are only hashed."""
        return ToolCall(self, name, args, call_id, _path_detail(paths, access))

    def start_tool_call(self, name: str, args: Any = None, *, call_id: str | None = None,
                        paths: list[str] | None = None, access: str | None = None) -> "ToolCall":
        call = ToolCall(self, name, args, call_id, _path_detail(paths, access))
        call._begin(check=False)
        return call

    def llm_call(self, provider: str, model: str, operation: str = "chat") -> "LLMCall":
        return LLMCall(self.monitor, self, provider, model, operation)

    def llm_usage(self, provider: str, model: str, input_tokens: int = 0, output_tokens: int = 0,
                  cache_read_tokens: int = 0, cache_write_tokens: int = 0, *, duration_s: float | None = None,
                  response_model: str | None = None, input_excludes_cache: bool = False,
                  error: BaseException | None = None, operation: str = "chat") -> float | None:
        """Record an LLM call after the fact. Returns its cost in USD (None if the model has no price)."""
        call = LLMCall(self.monitor, self, provider, model, operation)
        call._started_at = perf_counter() - (duration_s or 0.0)
        call._wall_start = _time() - (duration_s or 0.0)
        call.set_usage(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
                       input_excludes_cache=input_excludes_cache)
        if response_model:
            call.set_response_model(response_model)
        call.end(error)
        return call.cost_usd

    def _parent_span(self):
        return self._current_step_span or self._span

    _current_step_span = None

    def __repr__(self) -> str:
        return f"Run({self.monitor.agent!r}, task_id={self.task_id!r}, steps={self.steps}, cost={self.cost:.6f})"


class _Scope:
    """``with`` / ``async with`` plumbing shared by Step, ToolCall and LLMCall: begin, make the span current
    (so spans the user's code creates nest under it), then end with the exception if there was one."""

    __slots__ = ()

    def __enter__(self):
        self._begin()
        if self._span is not None:
            self._otel_token = _attach(self._span)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._otel_token is not None:
            _detach(self._otel_token)
            self._otel_token = None
        self._finish(exc)

    async def __aenter__(self):
        return self.__enter__()

    async def __aexit__(self, exc_type, exc, tb) -> None:
        self.__exit__(exc_type, exc, tb)


class Step(_Scope):
    __slots__ = ("run", "name", "index", "_start", "_span", "_managed", "_ended", "_prev_span", "_otel_token")

    def __init__(self, run: Run, name: str | None, managed: bool):
        self.run = run
        self.name = name
        self.index = 0
        self._start = 0.0
        self._span = None
        self._managed = managed
        self._ended = False
        self._prev_span = None
        self._otel_token = None

    def _begin(self) -> None:
        run = self.run
        if self._managed:
            run.check()
        m = run.monitor
        try:
            run.step_index += 1
            self.index = run.step_index
            self._start = perf_counter()
            if m.tracer is not None:
                attributes = {attr.STEP_INDEX: self.index}
                self._span = _start_span(m.tracer, f"step {self.name}" if self.name else "step", run._span,
                                         attributes)
                self._prev_span = run._current_step_span
                run._current_step_span = self._span
            if m.recorder is not None:
                m._emit(Event(ev.STEP_START, _time(), run_id=run.run_id, task_id=run.task_id,
                              correlation_id=run.correlation_id, step_index=self.index))
        except Exception as exc:
            internal_error("step", exc)

    def _finish(self, error: BaseException | None) -> None:
        self.end(error)

    def end(self, error: BaseException | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        run = self.run
        m = run.monitor
        try:
            run.steps += 1
            series = m._series
            series.steps.inc()
            series.progress.set(_time())
            if m.recorder is not None:
                m._emit(Event(ev.STEP_END, _time(), run_id=run.run_id, task_id=run.task_id,
                              correlation_id=run.correlation_id, step_index=self.index,
                              status="ok" if error is None else "error",
                              duration_ms=(perf_counter() - self._start) * 1000.0))
            if self._span is not None:
                run._current_step_span = self._prev_span
                _end_span(self._span, error, None if error is None else classify_exception(error))
        except Exception as exc:
            internal_error("step", exc)



def _path_detail(paths, access) -> dict | None:
    if not paths:
        return None
    if isinstance(paths, str):
        paths = [paths]
    return {"paths": [str(p) for p in paths][:64], "access": "write" if access == "write" else "read"}


class ToolCall(_Scope):
    """One tool call. Arguments are hashed on entry; the raw arguments are kept only on the span, and only
    when content capture is on."""

    __slots__ = ("run", "name", "args_hash", "result_hash", "call_id", "_start", "_span", "_args", "_ended",
                 "error_kind", "_otel_token", "detail")

    def __init__(self, run: Run, name: str, args: Any, call_id: str | None, detail: dict | None = None):
        self.detail = detail
        self.run = run
        self.name = name
        self.call_id = call_id
        self._args = args
        self.args_hash = None
        self.result_hash = None
        self.error_kind: str | None = None
        self._span = None
        self._ended = False
        self._otel_token = None
        self._start = 0.0

    def _begin(self, check: bool = True) -> None:
        run = self.run
        if check:
            run.check()
        m = run.monitor
        try:
            self.args_hash = digest(self._args)
            if m.tracer is not None:
                attributes = {attr.OPERATION_NAME: "execute_tool", attr.TOOL_NAME: self.name}
                if self.args_hash:
                    attributes[attr.ARGS_HASH] = self.args_hash
                if self.call_id:
                    attributes[attr.TOOL_CALL_ID] = self.call_id
                if m.settings.capture_content and self._args is not None:
                    attributes[attr.TOOL_CALL_ARGUMENTS] = json.dumps(self._args, default=repr)[:8192]
                self._span = _start_span(m.tracer, f"execute_tool {self.name}", run._parent_span(), attributes)
            if m.recorder is not None:
                m._emit(Event(ev.TOOL_START, _time(), run_id=run.run_id, task_id=run.task_id,
                              correlation_id=run.correlation_id, step_index=run.step_index, tool_name=self.name,
                              args_hash=self.args_hash, detail=self.detail))
        except Exception as exc:
            internal_error("tool_call", exc)
        self._args = None  # do not keep user data alive longer than needed
        self._start = perf_counter()

    def _finish(self, error: BaseException | None) -> None:
        self.end(error=error)

    def set_result(self, result: Any) -> None:
        """Optional: hash the result so the loop guard can tell "same call, same answer" from progress."""
        self.result_hash = digest(result)

    def end(self, result: Any = None, error: BaseException | None = None, *, error_kind: str | None = None) -> None:
        """Finish the call (idempotent). ``error_kind`` overrides classification (e.g. a tool that returns
        an error payload instead of raising)."""
        if self._ended:
            return
        self._ended = True
        duration = perf_counter() - self._start
        run = self.run
        m = run.monitor
        try:
            if result is not None:
                self.result_hash = digest(result)
            kind = error_kind
            if error is not None and kind is None:
                kind = classify_exception(error, default=TOOL_ERROR)
            status = "ok" if kind is None else "error"
            self.error_kind = kind
            m.metrics.tool(m.agent, self.name).record(kind, duration, _exemplar(self._span))
            m._emit(Event(ev.TOOL_END, _time(), run_id=run.run_id, task_id=run.task_id,
                          correlation_id=run.correlation_id, step_index=run.step_index, tool_name=self.name,
                          args_hash=self.args_hash, result_hash=self.result_hash, status=status, error_kind=kind,
                          duration_ms=duration * 1000.0, detail=self.detail))
            if self._span is not None:
                _end_span(self._span, error, kind)
        except Exception as exc:
            internal_error("tool_call", exc)





class LLMCall(_Scope):
    """One LLM call. ``input_tokens`` are inclusive of cached tokens (OTel GenAI convention); pass
    ``input_excludes_cache=True`` for providers that report them exclusive (Anthropic)."""

    __slots__ = ("monitor", "run", "provider", "model", "operation", "response_model", "input_tokens",
                 "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd", "error_kind",
                 "_started_at", "_wall_start", "_span", "_ended", "_otel_token")

    def __init__(self, monitor: Monitor, run: Run | None, provider: str, model: str, operation: str = "chat"):
        self.monitor = monitor
        self.run = run
        self.provider = str(provider)
        self.model = str(model)
        self.operation = operation
        self.response_model: str | None = None
        self.input_tokens = self.output_tokens = self.cache_read_tokens = self.cache_write_tokens = 0
        self.cost_usd: float | None = None
        self.error_kind: str | None = None
        self._started_at = perf_counter()
        self._wall_start = _time()
        self._span = None
        self._ended = False
        self._otel_token = None

    def _begin(self) -> None:
        if self.run is not None:
            self.run.check()
        m = self.monitor
        if m.tracer is not None:
            try:
                self._span = _start_span(m.tracer, f"{self.operation} {self.model}",
                                         self.run._parent_span() if self.run else None, self._attributes())
            except Exception as exc:
                internal_error("tracing", exc)
        self._started_at = perf_counter()
        self._wall_start = _time()

    def _attributes(self) -> dict:
        return {attr.OPERATION_NAME: self.operation, attr.PROVIDER_NAME: self.provider,
                attr.REQUEST_MODEL: self.model, attr.AGENT_NAME: self.monitor.agent}

    def set_usage(self, input_tokens: int = 0, output_tokens: int = 0, cache_read_tokens: int = 0,
                  cache_write_tokens: int = 0, *, input_excludes_cache: bool = False) -> None:
        try:
            inp, out = max(int(input_tokens or 0), 0), max(int(output_tokens or 0), 0)
            read, write = max(int(cache_read_tokens or 0), 0), max(int(cache_write_tokens or 0), 0)
        except (TypeError, ValueError) as exc:
            internal_error("usage", exc)
            return
        # Inclusive input can never be smaller than its cached part: numbers like that are exclusive.
        if input_excludes_cache or read + write > inp:
            inp += read + write
        self.input_tokens, self.output_tokens = inp, out
        self.cache_read_tokens, self.cache_write_tokens = read, write

    def set_response_model(self, model: str | None) -> None:
        if model:
            self.response_model = str(model)

    @property
    def span(self):
        """The call's OTel span (None when tracing is off), for integrations that add attributes."""
        return self._span

    def set_attributes(self, attributes: dict) -> None:
        """Add span attributes (no-op without tracing). Never put prompt or completion text here unless
        the user opted in to content capture."""
        if self._span is not None:
            try:
                self._span.set_attributes(attributes)
            except Exception as exc:
                internal_error("tracing", exc)

    def _finish(self, error: BaseException | None) -> None:
        self.end(error)

    def end(self, error: BaseException | None = None, *, error_kind: str | None = None) -> None:
        """Finish the call (idempotent): price it, update metrics, emit the event, end the span."""
        if self._ended:
            return
        self._ended = True
        duration = perf_counter() - self._started_at
        m = self.monitor
        run = self.run
        try:
            series = m.metrics.model(m.agent, self.provider, self.model)
            kind = error_kind or (classify_exception(error) if error is not None else None)
            self.error_kind = kind
            inp, out, read, write = self.input_tokens, self.output_tokens, self.cache_read_tokens, self.cache_write_tokens
            if inp or out or read or write:
                try:
                    self.cost_usd = m.prices.cost(self.provider, self.response_model or self.model, inp, out,
                                                  read, write)
                    if self.cost_usd is None and self.response_model:
                        self.cost_usd = m.prices.cost(self.provider, self.model, inp, out, read, write)
                except Exception as exc:
                    internal_error("pricing", exc)
            series.record(kind, duration, inp, out, read, write, self.cost_usd, m._lock, _exemplar(self._span))
            if run is not None:
                run.tokens += inp + out
                if self.cost_usd is not None:
                    run.cost += self.cost_usd
                elif inp or out:
                    run.unpriced_calls += 1
            event = Event(ev.LLM_CALL, _time(), provider=self.provider, model=self.response_model or self.model,
                          status="ok" if kind is None else "error", error_kind=kind,
                          duration_ms=duration * 1000.0, input_tokens=inp, output_tokens=out,
                          cache_read_tokens=read, cache_write_tokens=write, token_count=inp + out,
                          cost_usd=self.cost_usd)
            if run is not None:
                event.run_id, event.task_id, event.correlation_id = run.run_id, run.task_id, run.correlation_id
                event.step_index = run.step_index
            m._emit(event)
            if run is not None and self.cost_usd:
                m._update_active_cost()
            span = self._span
            if span is None and m.tracer is not None:  # recorded after the fact: back-date the span
                span = _start_span(m.tracer, f"{self.operation} {self.model}",
                                   run._parent_span() if run else None, self._attributes(),
                                   start_time=int(self._wall_start * 1e9))
            if span is not None:
                if self.response_model:
                    span.set_attribute(attr.RESPONSE_MODEL, self.response_model)
                span.set_attribute(attr.USAGE_INPUT_TOKENS, inp)
                span.set_attribute(attr.USAGE_OUTPUT_TOKENS, out)
                if read:
                    span.set_attribute(attr.USAGE_CACHE_READ, read)
                if write:
                    span.set_attribute(attr.USAGE_CACHE_CREATION, write)
                if self.cost_usd is not None:
                    span.set_attribute(attr.COST_USD, self.cost_usd)
                _end_span(span, error, kind)
        except Exception as exc:
            internal_error("llm_call", exc)



# -- calls outside any run -------------------------------------------------------------------------------
_default_monitor: Monitor | None = None
_default_lock = threading.Lock()


def default_monitor() -> Monitor:
    """The Monitor for LLM calls made outside any run (SDK instrumentation). Agent name from
    ``AGENTVIGIL_AGENT``, else ``OTEL_SERVICE_NAME``, else "default"."""
    global _default_monitor
    if _default_monitor is None:
        with _default_lock:
            if _default_monitor is None:
                name = os.environ.get("AGENTVIGIL_AGENT") or os.environ.get("OTEL_SERVICE_NAME") or "default"
                _default_monitor = Monitor(name)
    return _default_monitor


def start_llm_call(provider: str, model: str, operation: str = "chat", *, monitor: Monitor | None = None) -> LLMCall:
    """Start an LLM call in the current run (or on ``monitor`` / the default monitor). Finish it with
    ``call.end(error=None)``. Raises RunKilled / LoopDetected only if the current run has one pending."""
    run = current_run()
    if monitor is None:
        monitor = run.monitor if run is not None else default_monitor()
    elif run is not None and run.monitor is not monitor:
        run = None
    call = LLMCall(monitor, run, provider, model, operation)
    call._begin()
    return call


def llm_call(provider: str, model: str, operation: str = "chat", *, monitor: Monitor | None = None) -> LLMCall:
    """Context-manager form of ``start_llm_call``."""
    run = current_run()
    if monitor is None:
        monitor = run.monitor if run is not None else default_monitor()
    elif run is not None and run.monitor is not monitor:
        run = None
    return LLMCall(monitor, run, provider, model, operation)
