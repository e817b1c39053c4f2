"""Run, Step, ToolCall and LLMCall: the scopes of the instrumentation API. They only build Events and hand
them to their Monitor's pipeline; metrics, spans, the recorder, detectors and actions are its sinks.

Our own failures never reach the agent: every bookkeeping block is wrapped and counted. The agent's own
exceptions pass through unchanged. The only exceptions raised here are the guard exceptions.
"""

from __future__ import annotations

import itertools
import math
import os
import time
import uuid
from time import perf_counter
from typing import TYPE_CHECKING, Any, Iterable, Protocol

from . import control
from . import events as ev
from ._context import current_run_var
from ._safety import internal_error, safe_str
from .codec import digest
from .errors import TOOL_ERROR, classify_exception
from .events import Event
from .exceptions import GuardError, LoopDetected, RunKilled
from .fingerprint import result_fingerprint, text_fingerprint
from .settings import MAX_SECONDS

if TYPE_CHECKING:
    from types import TracebackType

    from .pipeline import Pipeline
    from .settings import Settings

_time = time.time


class Monitor(Protocol):
    """What a scope needs of its Monitor (``monitor.py`` builds on this module; it is not imported here)."""

    agent: str
    settings: Settings
    pipeline: Pipeline

    def _emit(self, event: Event) -> list[Event]: ...

    def _started(self, run: Run) -> None: ...

    def _ended(self, run: Run) -> None: ...

    def _price(self, provider: str, model: str, response_model: str | None, inp: int, out: int, read: int,
               write: int) -> float | None: ...


_otel: Any = None   # (context.attach, context.detach, trace.set_span_in_context), imported on first use


def _api() -> Any:
    global _otel
    if _otel is None:
        from opentelemetry import context, trace

        _otel = (context.attach, context.detach, trace.set_span_in_context)
    return _otel


def _attach(span: Any) -> Any:
    try:
        attach, _, in_context = _otel or _api()
        return attach(in_context(span))
    except Exception as exc:
        internal_error("tracing", exc)
        return None


def _detach(token: Any) -> None:
    try:
        (_otel or _api())[1](token)
    except Exception as exc:  # e.g. exited in another context than entered
        internal_error("context", exc)


class _Scope:
    """``with`` / ``async with`` plumbing shared by Step, ToolCall and LLMCall: begin, make the span current
    (so spans the user's code creates nest under it), then end with the exception if there was one."""

    __slots__ = ()
    _span: Any
    _otel_token: Any

    def _begin(self) -> None:
        raise NotImplementedError

    def _finish(self, error: BaseException | None) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        self._begin()
        if self._span is not None:
            self._otel_token = _attach(self._span)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._otel_token is not None:
            _detach(self._otel_token)
            self._otel_token = None
        self._finish(exc)

    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)


class Run:
    """One run of an agent (one task). Steps, tool calls and LLM calls happen inside it."""

    def __init__(self, monitor: Monitor, task_id: str | None, correlation_id: str | None, managed: bool,
                 limits: dict | None = None, labels: dict[str, str] | None = None):
        self.monitor = monitor
        self.labels = labels or None   # custom label values (declared set), on run_start for the metric sink
        self.limits = limits   # max_cost_usd, max_steps, max_seconds, context_window: on run_start
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
        self._pending: GuardError | None = None   # raised at the next boundary (loop guard, run limits)
        # perf_counter() past which the clock is asked to judge max_seconds (None: no time limit, or asked)
        self._deadline: float | None = None
        self._kill_reason: str | None = None
        self._span: Any = None
        self._current_step_span: Any = None
        self._error: BaseException | None = None
        self._start = 0.0
        self._ctx_token: Any = None
        self._otel_token: Any = None
        self._ended = False

    def _event(self, kind: str, **fields: Any) -> Event:
        return Event(kind, _time(), run_id=self.run_id, task_id=self.task_id, correlation_id=self.correlation_id,
                     step_index=self.step_index, scope=self, **fields)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def _begin(self) -> None:
        m = self.monitor
        if self._ended or self._start:   # entered again: a run starts once (and its end is final)
            internal_error("run", ValueError("a Run was entered again; it is not restarted"), m)
            return
        self._start = perf_counter()
        limits = self.limits
        if limits and "max_seconds" in limits:
            self._deadline = self._start + limits["max_seconds"]
        try:
            m._started(self)
            detail = self.limits
            if self.labels:
                detail = {**(detail or {}), "labels": self.labels}
            m._emit(Event(ev.RUN_START, _time(), run_id=self.run_id, task_id=self.task_id,
                          correlation_id=self.correlation_id, detail=detail, scope=self))
        except Exception as exc:
            internal_error("run", exc, self.monitor)

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
            kind = None if error is None else (
                "killed" if status == "killed" else
                type(error).__name__ if isinstance(error, GuardError) else classify_exception(error))
            self._error = error if status != "killed" else None
            m._ended(self)
            detail = {"unpriced_calls": self.unpriced_calls} if self.unpriced_calls else None
            m._emit(self._event(ev.RUN_END, status=status, error_kind=kind,
                                duration_ms=(perf_counter() - self._start) * 1000.0, cost_usd=self.cost,
                                token_count=self.tokens, detail=detail))
        except Exception as exc:
            internal_error("run", exc, self.monitor)
        if control.stop_reason is not None:
            control.run_ended()

    def __enter__(self) -> Run:
        if control.stop_reason is not None:
            raise RunKilled(control.stop_reason)
        self._begin()
        self._ctx_token = current_run_var.set(self)
        if self._span is not None:
            self._otel_token = _attach(self._span)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.end(exc)
        self._restore()

    async def __aenter__(self) -> Run:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)

    def _restore(self) -> None:
        try:
            if self._otel_token is not None:
                _detach(self._otel_token)
                self._otel_token = None
            if self._ctx_token is not None:
                current_run_var.reset(self._ctx_token)
                self._ctx_token = None
        except Exception as exc:  # e.g. exited in another context than entered
            internal_error("context", exc, self.monitor)

    def activate(self) -> Any:
        """Make this run current in this context (for callback-style frameworks that cannot use ``with``).
        Returns a token for ``deactivate``."""
        return current_run_var.set(self)

    @staticmethod
    def deactivate(token: Any) -> None:
        try:
            current_run_var.reset(token)
        except Exception as exc:
            internal_error("context", exc)

    # -- kill switch -------------------------------------------------------------------------------------
    def kill(self, reason: str = "kill_switch") -> None:
        """Stop this run at its next step, tool-call or LLM-call boundary with RunKilled."""
        if self._kill_reason is not None or self._ended:
            return
        self._kill_reason = safe_str(reason, "kill", self.monitor, "kill_switch")
        try:
            self.monitor._emit(self._event(ev.KILL, reason=self._kill_reason))
        except Exception as exc:
            internal_error("kill", exc, self.monitor)

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
        if self._deadline is not None and perf_counter() >= self._deadline:
            self._deadline = None   # once: the run_limit detector judges the clock and sets _pending
            try:
                self.monitor.pipeline.tick(_time())
            except Exception as exc:
                internal_error("run", exc)
        pending = self._pending
        if pending is not None:
            self._pending = None
            raise pending

    # -- children ----------------------------------------------------------------------------------------
    def step(self, name: str | None = None) -> Step:
        return Step(self, name, managed=True)

    def start_step(self, name: str | None = None) -> Step:
        step = Step(self, name, managed=False)
        step._begin()
        return step

    def tool_call(self, name: str, args: Any = None, *, call_id: str | None = None,
                  paths: list[str] | str | None = None, access: str | None = None) -> ToolCall:
        """A tool call. ``paths``/``access`` (opt-in): files the tool reads or writes ('read' or 'write'),
        recorded as ``detail.paths``/``detail.access`` so the scope detector can check them against a
        policy. Arguments themselves are only hashed."""
        return ToolCall(self, name, args, call_id, _path_detail(paths, access) if paths else None)

    def start_tool_call(self, name: str, args: Any = None, *, call_id: str | None = None,
                        paths: list[str] | str | None = None, access: str | None = None) -> ToolCall:
        call = ToolCall(self, name, args, call_id, _path_detail(paths, access))
        call._begin(check=False)
        return call

    def llm_call(self, provider: str, model: str, operation: str = "chat") -> LLMCall:
        return LLMCall(self.monitor, self, provider, model, operation)

    def start_llm_call(self, provider: str, model: str, operation: str = "chat") -> LLMCall:
        """Start an LLM call in this run; finish it with ``call.end(error=None)``."""
        call = LLMCall(self.monitor, self, provider, model, operation)
        call._begin()
        return call

    def llm_usage(self, provider: str, model: str, input_tokens: int = 0, output_tokens: int = 0,
                  cache_read_tokens: int = 0, cache_write_tokens: int = 0, *, duration_s: float | None = None,
                  response_model: str | None = None, input_excludes_cache: bool = False,
                  error: BaseException | None = None, operation: str = "chat") -> float | None:
        """Record an LLM call after the fact. Returns its cost in USD (None if the model has no price)."""
        call = LLMCall(self.monitor, self, provider, model, operation)
        try:
            back = float(duration_s or 0.0)
            back = back if 0 < back <= MAX_SECONDS else 0.0   # NaN and 1e308 too: a sum that +Inf never leaves
        except Exception:   # not a number (or an int too large for a float): no duration
            back = 0.0
        call._started_at = perf_counter() - back
        call._wall_start = _time() - back
        call.set_usage(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
                       input_excludes_cache=input_excludes_cache)
        if response_model:
            call.set_response_model(response_model)
        call.end(error)
        return call.cost_usd

    def _parent_span(self) -> Any:
        return self._current_step_span or self._span

    def __repr__(self) -> str:
        return f"Run({self.monitor.agent!r}, task_id={self.task_id!r}, steps={self.steps}, cost={self.cost:.6f})"


class Step(_Scope):
    __slots__ = ("run", "name", "index", "_start", "_span", "_managed", "_ended", "_prev_span", "_otel_token",
                 "_error")

    def __init__(self, run: Run, name: str | None, managed: bool):
        self.run = run
        self.name = name
        self.index = 0
        self._start = 0.0
        self._span: Any = None
        self._managed = managed
        self._ended = False
        self._prev_span: Any = None
        self._otel_token: Any = None
        self._error: BaseException | None = None

    def _begin(self) -> None:
        run = self.run
        if self._managed:
            run.check()
        try:
            run.step_index += 1
            self.index = run.step_index
            self._start = perf_counter()
            m = run.monitor
            if m.pipeline.wants(ev.STEP_START):
                m._emit(Event(ev.STEP_START, _time(), run_id=run.run_id, task_id=run.task_id,
                              correlation_id=run.correlation_id, step_index=self.index, scope=self))
        except Exception as exc:
            internal_error("step", exc, self.run.monitor)

    def _finish(self, error: BaseException | None) -> None:
        self.end(error)

    def end(self, error: BaseException | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        run = self.run
        try:
            run.steps += 1
            self._error = error
            kind = None if error is None else classify_exception(error)
            run.monitor._emit(Event(ev.STEP_END, _time(), run_id=run.run_id, task_id=run.task_id,
                                    correlation_id=run.correlation_id, step_index=self.index,
                                    status="ok" if error is None else "error", error_kind=kind,
                                    duration_ms=(perf_counter() - self._start) * 1000.0, scope=self))
        except Exception as exc:
            internal_error("step", exc, self.run.monitor)


def _path_detail(paths: Iterable[str | os.PathLike] | str | os.PathLike | None, access: str | None) -> dict | None:
    """The first 64 paths (one path, or any iterable of them: a generator is not read past 64), as text."""
    if paths is None:
        return None
    try:
        if isinstance(paths, (str, bytes, os.PathLike)):
            paths = [paths]   # type: ignore[list-item]
        listed = [os.fsdecode(p) if isinstance(p, (bytes, os.PathLike)) else str(p)
                  for p in itertools.islice(paths, 64)]   # type: ignore[arg-type]
    except Exception as exc:   # not paths (an int, an object that cannot be iterated or named)
        internal_error("tool_call", exc)
        return None
    if not listed:
        return None
    return {"paths": listed, "access": "write" if access == "write" else "read"}


class ToolCall(_Scope):
    """One tool call. Arguments are hashed on entry; the raw arguments are kept only until the span is
    started, and put on it only when content capture is on."""

    __slots__ = ("run", "name", "args_hash", "result_hash", "call_id", "_start", "_span", "_args", "_ended",
                 "error_kind", "_otel_token", "detail", "_error", "status", "result_fingerprint", "_result",
                 "_span_ids")

    def __init__(self, run: Run, name: str, args: Any, call_id: str | None, detail: dict | None = None):
        self.detail = detail
        self.run = run
        self.name = safe_str(name, "tool_call", run.monitor)
        self.call_id = call_id
        self._args = args
        self.args_hash: str | None = None
        self.result_hash: str | None = None
        self.result_fingerprint: str | None = None
        self.error_kind: str | None = None
        self.status: str | None = None
        self._span: Any = None
        self._ended = False
        self._otel_token: Any = None
        self._error: BaseException | None = None
        self._start = 0.0
        self._result: Any = None   # kept for the span only when content capture is on
        self._span_ids: Any = None   # the span's formatted (trace id, span id), from its start to its end

    def _begin(self, check: bool = True) -> None:
        run = self.run
        # run.check(), called only when something is pending (this runs on every tool call)
        if check and (run._kill_reason is not None or control.stop_reason is not None or run._pending is not None
                      or run._deadline is not None):
            run.check()
        try:
            args = self._args
            self.args_hash = None if args is None else digest(args)
            m = run.monitor
            if ev.TOOL_START in m.pipeline.wanted:   # spans, the recorder or the scope detector
                m._emit(Event(ev.TOOL_START, _time(), m.agent, None, run.run_id, run.task_id, run.correlation_id,
                              run.step_index, self.name, self.args_hash, detail=self.detail, scope=self))
        except Exception as exc:
            internal_error("tool_call", exc, self.run.monitor)
        self._args = None  # do not keep user data alive longer than needed
        self._start = perf_counter()

    def _finish(self, error: BaseException | None) -> None:
        self.end(error=error)

    def __enter__(self) -> ToolCall:
        # _Scope.__enter__ with _attach inlined: the hottest scope.
        self._begin()
        span = self._span
        if span is not None:
            try:
                attach, _, in_context = _otel or _api()
                self._otel_token = attach(in_context(span))
            except Exception as exc:
                internal_error("tracing", exc, self.run.monitor)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # _Scope.__exit__ without the _finish hop, _detach inlined.
        token = self._otel_token
        if token is not None:
            self._otel_token = None
            try:
                _otel[1](token)
            except Exception as err:  # e.g. exited in another context than entered (not the agent's `exc`)
                internal_error("context", err, self.run.monitor)
        self.end(None, exc)

    def set_result(self, result: Any) -> None:
        """Optional: hash the result so the loop guard can tell "same call, same answer" from progress."""
        self.result_hash = h = digest(result)
        self.result_fingerprint = text_fingerprint(result, h) if result.__class__ is str else result_fingerprint(result)
        if self.run.monitor.settings.capture_content:
            self._result = result

    def reject(self, reason: str | None = None) -> None:
        """The action could not be parsed or executed (a format rejection): recorded as ``tool_end`` with
        status ``rejected``, its own rate signal, and not judged as a tool call by the loop guard."""
        self.status = "rejected"
        self.error_kind = reason

    def end(self, result: Any = None, error: BaseException | None = None, *, error_kind: str | None = None) -> None:
        """Finish the call (idempotent). ``error_kind`` overrides classification (e.g. a tool that returns
        an error payload instead of raising)."""
        if self._ended:
            return
        self._ended = True
        duration = perf_counter() - self._start
        run = self.run
        try:
            if result is not None:
                self.set_result(result)
            status = self.status
            kind = error_kind or self.error_kind
            if status != "rejected":
                if error is not None and kind is None:
                    kind = classify_exception(error, default=TOOL_ERROR)
                status = "ok" if kind is None else "error"
            self.error_kind, self.status, self._error = kind, status, error
            m = run.monitor
            # Positional up to duration_ms (the Event's field order): the hottest event of all.
            m._emit(Event(ev.TOOL_END, _time(), m.agent, None, run.run_id, run.task_id, run.correlation_id,
                          run.step_index, self.name, self.args_hash, self.result_hash, self.result_fingerprint,
                          status, kind, duration * 1000.0, detail=self.detail, scope=self))
        except Exception as exc:
            internal_error("tool_call", exc, self.run.monitor)


def _tokens(value: Any) -> int:
    """A token count: a non-negative finite integer; anything else is our caller's bug, not the agent's."""
    if value is None:
        return 0
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"token counts must be finite and non-negative, got {value!r}")
    return int(number)


class LLMCall(_Scope):
    """One LLM call. ``input_tokens`` are inclusive of cached tokens (OTel GenAI convention); pass
    ``input_excludes_cache=True`` for providers that report them exclusive (Anthropic)."""

    __slots__ = ("monitor", "run", "provider", "model", "operation", "response_model", "input_tokens",
                 "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd", "error_kind",
                 "_started_at", "_wall_start", "_span", "_ended", "_otel_token", "_error")

    def __init__(self, monitor: Monitor, run: Run | None, provider: str, model: str, operation: str = "chat"):
        self.monitor = monitor
        self.run = run
        self.provider = safe_str(provider, "llm_call", monitor)
        self.model = safe_str(model, "llm_call", monitor)
        self.operation = operation
        self.response_model: str | None = None
        self.input_tokens = self.output_tokens = self.cache_read_tokens = self.cache_write_tokens = 0
        self.cost_usd: float | None = None
        self.error_kind: str | None = None
        self._started_at = perf_counter()
        self._wall_start = _time()
        self._span: Any = None
        self._ended = False
        self._otel_token: Any = None
        self._error: BaseException | None = None

    def _begin(self) -> None:
        if self.run is not None:
            self.run.check()
        self._started_at = perf_counter()
        self._wall_start = _time()
        m = self.monitor
        try:
            if m.pipeline.wants(ev.LLM_START):
                m._emit(self._event(ev.LLM_START, self._wall_start, model=self.model))
        except Exception as exc:
            internal_error("llm_call", exc, self.monitor)

    def _event(self, kind: str, ts: float, **fields: Any) -> Event:
        event = Event(kind, ts, provider=self.provider, scope=self, **fields)
        run = self.run
        if run is not None:
            event.run_id, event.task_id, event.correlation_id = run.run_id, run.task_id, run.correlation_id
            event.step_index = run.step_index
        return event

    def set_usage(self, input_tokens: int = 0, output_tokens: int = 0, cache_read_tokens: int = 0,
                  cache_write_tokens: int = 0, *, input_excludes_cache: bool = False) -> None:
        try:
            inp, out = _tokens(input_tokens), _tokens(output_tokens)
            read, write = _tokens(cache_read_tokens), _tokens(cache_write_tokens)
        except Exception as exc:   # not a number, or one whose __int__/__float__ raises
            internal_error("usage", exc, self.monitor)   # counted, and left out of the metrics
            return
        # Inclusive input can never be smaller than its cached part: numbers like that are exclusive.
        if input_excludes_cache or read + write > inp:
            inp += read + write
        self.input_tokens, self.output_tokens = inp, out
        self.cache_read_tokens, self.cache_write_tokens = read, write

    def set_response_model(self, model: str | None) -> None:
        if model:
            self.response_model = safe_str(model, "llm_call", self.monitor)

    @property
    def span(self) -> Any:
        """The call's OTel span (None when tracing is off), for integrations that add attributes."""
        return self._span

    def set_attributes(self, attributes: dict) -> None:
        """Add span attributes (no-op without tracing). Never put prompt or completion text here unless
        the user opted in to content capture."""
        if self._span is not None:
            try:
                self._span.set_attributes(attributes)
            except Exception as exc:
                internal_error("tracing", exc, self.monitor)

    def _finish(self, error: BaseException | None) -> None:
        self.end(error)

    def end(self, error: BaseException | None = None, *, error_kind: str | None = None) -> None:
        """Finish the call (idempotent): price it, emit the event."""
        if self._ended:
            return
        self._ended = True
        duration = perf_counter() - self._started_at
        m = self.monitor
        run = self.run
        try:
            kind = error_kind or (classify_exception(error) if error is not None else None)
            self.error_kind, self._error = kind, error
            inp, out = self.input_tokens, self.output_tokens
            read, write = self.cache_read_tokens, self.cache_write_tokens
            if inp or out or read or write:
                self.cost_usd = m._price(self.provider, self.model, self.response_model, inp, out, read, write)
            if run is not None:
                run.tokens += inp + out
                if self.cost_usd is not None:
                    run.cost += self.cost_usd
                elif inp or out:
                    run.unpriced_calls += 1
            response = self.response_model
            detail = {"response_model": response} if response and response != self.model else None
            # Series are labelled by the requested model (what dashboards and alerts group by).
            m._emit(self._event(ev.LLM_CALL, _time(), model=self.model, detail=detail,
                                status="ok" if kind is None else "error", error_kind=kind,
                                duration_ms=duration * 1000.0, input_tokens=inp, output_tokens=out,
                                cache_read_tokens=read, cache_write_tokens=write, token_count=inp + out,
                                cost_usd=self.cost_usd))
        except Exception as exc:
            internal_error("llm_call", exc, self.monitor)


__all__ = ["LLMCall", "LoopDetected", "Run", "Step", "ToolCall"]
