"""What every SDK integration shares: the one decision core for an instrumented LLM call (guards, the core LLM
call record, finalise-once), the stream proxies, and the "our failures never reach the caller" helper.

The per-SDK ``patch`` modules only translate request kwargs and responses into this vocabulary, and keep the
sync / async / stream shells thin (style principle 5).
"""

from __future__ import annotations

import inspect
import json
import logging
from contextvars import ContextVar
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Callable

from wrapt import ObjectProxy

from agentvigil._safety import internal_error as _core_internal_error
from agentvigil.exceptions import GuardError
from agentvigil.instrumentation import _semconv

log = logging.getLogger("agentvigil")

# Set while an instrumented SDK call is running in this context, so an SDK helper that calls another
# instrumented method (``parse`` → ``_post``, ``stream`` → ``create``) is recorded once, by the outer wrapper.
_IN_CALL: ContextVar[bool] = ContextVar("agentvigil_in_instrumented_call", default=False)
# Set by a framework that may record a model call itself (the OpenAI Agents SDK processor, around its model
# spans): a wrapper here that records the call appends it, and the framework then leaves the call to us.
MODEL_CALL_CLAIM: ContextVar[list[Any] | None] = ContextVar("agentvigil_model_call_claim", default=None)

# GenAI semantic-convention attribute names used by the integrations (the core owns the usage/model ones).
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_STREAM = "gen_ai.request.stream"  # not (yet) semconv; harmless and useful
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
#: captured content: kept off the span in EVENT_ONLY
CONTENT_KEYS = frozenset((INPUT_MESSAGES, OUTPUT_MESSAGES, SYSTEM_INSTRUCTIONS, _semconv.TOOL_DEFINITIONS))
_EVENT_KEYS = frozenset((_semconv.SERVER_ADDRESS, _semconv.SERVER_PORT, "error.type"))
USAGE_MISSING = "agentvigil.usage.missing"


def internal_error(component: str, exc: BaseException | None = None) -> None:
    """Count and log-once one of *our* failures. Never raises."""
    try:
        _core_internal_error(component, exc)
    except Exception:  # pragma: no cover - last line of defence
        pass


@dataclass
class Options:
    """Per-instrumentor settings, resolved once at ``instrument()`` time (kwargs > environment)."""

    capture_content: bool = False
    breaker: Any = None                 # agentvigil.CircuitBreaker or None
    budget: Any = None                  # agentvigil.TokenBudget or None
    #: tokens to reserve for a call, from its request kwargs; default: prompt chars / 4 + max output tokens
    budget_estimate: Callable[[dict[str, Any]], int] | None = None
    monitor: Any = None                 # explicit Monitor for calls made outside any run
    extra: dict[str, Any] = field(default_factory=dict)
    tracer: Any = None                  # from instrument(tracer_provider=...); None: the Monitor's, else global
    metrics: Any = None                 # sinks.otel_metrics.GenAIMetrics, or None
    latest: bool = False                # OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental
    events: Any = None                  # _events.LegacyEvents (default stability mode, a LoggerProvider present)
    content_on_span: bool = True        # False in EVENT_ONLY: captured content goes on the details event only
    details: Any = None                 # _events.DetailsEvent (latest mode, EVENT_ONLY / SPAN_AND_EVENT)


def is_given(value: Any) -> bool:
    """False for None and the SDKs' ``NOT_GIVEN`` / ``omit`` sentinels (no SDK import needed)."""
    if value is None:
        return False
    return type(value).__name__ not in ("NotGiven", "Omit", "_NotGiven", "_Omit")


def default_estimate(kwargs: dict[str, Any]) -> int:
    """A cheap upper-ish estimate of a call's tokens: request chars / 4 plus the output cap (or 1024)."""
    size = 0
    for key in ("messages", "input", "system", "instructions", "prompt", "tools"):
        value = kwargs.get(key)
        if is_given(value):
            try:
                size += len(value) if isinstance(value, str) else len(json.dumps(value, default=str))
            except Exception:
                size += 1000
    cap = 0
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        value = kwargs.get(key)
        if isinstance(value, int):
            cap = value
            break
    return size // 4 + (cap or 1024)


def to_json(value: Any) -> str:
    try:
        return json.dumps(value, default=_jsonable, ensure_ascii=False)
    except Exception:
        return str(value)


def _jsonable(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        try:
            return dump(exclude_none=True)
        except Exception:
            pass
    return str(obj)


def _resolve_call(provider: str, model: str, operation: str, monitor: Any) -> Any:
    """The core LLM call for an instrumented SDK call, not yet begun. An explicit monitor only applies to calls
    made outside any run; inside a run the run's monitor wins."""
    from agentvigil.instrumentation import _api as agentvigil
    from agentvigil.monitor import _resolve

    if monitor is not None and agentvigil.current_run() is not None:
        monitor = None
    monitor, run = _resolve(monitor)
    return ModelCall(monitor, run, provider, model, operation)


def _model_call_class() -> Any:
    from agentvigil.scopes import LLMCall

    class _ModelCall(LLMCall):
        """An LLM call whose span the integration owns (kind CLIENT, semconv attributes, GenAI metrics): the span
        sink only reads its ids."""

        __slots__ = ()
        external_span = True

    return _ModelCall


class _Lazy:
    cls: Any = None


def ModelCall(*args: Any) -> Any:  # noqa: N802 - a class factory, imported lazily (scopes import the pipeline)
    if _Lazy.cls is None:
        _Lazy.cls = _model_call_class()
    return _Lazy.cls(*args)


_trace_api: Any = None


def _trace() -> Any:
    global _trace_api
    if _trace_api is None:
        from opentelemetry import trace

        _trace_api = trace
    return _trace_api


def foreign_model_span() -> Any:
    """The current span when another GenAI instrumentation (e.g. opentelemetry-instrumentation-openai-v2) already
    opened a model span for this call: we add to it instead of opening a second one."""
    span = _trace().get_current_span()
    if not span.is_recording():
        return None
    scope = getattr(span, "instrumentation_scope", None)
    if scope is not None and getattr(scope, "name", None) == "agentvigil":
        return None
    attributes = getattr(span, "attributes", None) or {}
    if attributes.get(OPERATION_NAME) in MODEL_OPERATIONS and getattr(span, "kind", None) == _trace().SpanKind.CLIENT:
        return span
    return None


OPERATION_NAME = "gen_ai.operation.name"
AGENT_NAME = "gen_ai.agent.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
USAGE_CACHE_CREATION = "gen_ai.usage.cache_creation.input_tokens"
ERROR_TYPE = "error.type"
COST_USD = "agentvigil.cost_usd"
_NO_PROVIDER = ("ProxyTracerProvider", "NoOpTracerProvider")
MODEL_OPERATIONS = frozenset({"chat", "text_completion", "embeddings", "generate_content"})


class Invocation:
    """One instrumented LLM call from request to final usage. All methods except ``begin`` never raise;
    ``begin`` raises only the guards' deliberate ``GuardError``s (breaker open, budget exceeded, run killed).

    The integration owns the call's span: kind CLIENT, opened with the instrumentor's tracer (``tracer_provider``
    given to ``instrument()``, else the Monitor's, else the global one), attributes written once at the end,
    usage left out when unknown or on errors. When another instrumentation already opened the model span it is
    adopted: our attributes are added to it and no second span or GenAI metric is produced."""

    __slots__ = ("llm", "reservation", "breaker", "done", "hide_usage_chunk", "opts", "_usage_seen", "recording",
                 "_attrs", "span", "own_span", "base", "_out_known", "_t0", "token", "_cache_known", "kwargs")

    def __init__(self) -> None:
        self.llm: Any = None
        self.reservation: Any = None
        self.breaker: Any = None
        self.done = False
        self.hide_usage_chunk = False
        self.opts: Options | None = None
        self._usage_seen = False
        #: True when the call has a recording span: only then are span attributes built (hot path)
        self.recording = False
        self._attrs: dict[str, Any] | None = None  # buffered, written to the span once, at finish
        self.span: Any = None
        self.own_span = False
        self.base: dict[str, Any] = {}
        self._out_known = False
        self._cache_known = False
        self.kwargs: dict[str, Any] = {}   # the request, for the legacy input-message events
        self._t0 = 0.0
        self.token: Any = None

    @classmethod
    def begin(cls, provider: str, operation: str, model: Any, kwargs: dict[str, Any], opts: Options,
              attributes: dict[str, Any] | None = None, instance: Any = None) -> "Invocation":
        inv = cls()
        inv.opts = opts
        inv.kwargs = kwargs
        inv._t0 = perf_counter()
        claim = MODEL_CALL_CLAIM.get()
        if claim is not None:   # recorded, or refused by a guard, here: either way not the framework's to record
            claim.append(inv)
        breaker, budget = opts.breaker, opts.budget
        model_name = str(model) if is_given(model) else None
        try:
            if breaker is not None:
                breaker.allow()                     # CircuitOpenError propagates: the call is not made
                inv.breaker = breaker
            if budget is not None:
                estimate = (opts.budget_estimate or default_estimate)(kwargs)
                inv.reservation = budget.reserve(estimate)   # BudgetExceeded propagates
            call = _resolve_call(provider, model_name or "unknown", operation, opts.monitor)
            if call.run is not None:
                call.run.check()                    # RunKilled / LoopDetected propagate, before any span
            try:
                inv._open_span(call, operation, model_name, provider, instance)
            except Exception as exc:
                internal_error(f"instrumentation.{provider}", exc)
            call._span = inv.span
            inv.llm = call
            call._begin()
        except GuardError:
            inv._release_guards()
            inv._end_span()
            raise
        except Exception as exc:  # our bug: the call goes ahead unrecorded
            internal_error(f"instrumentation.{provider}", exc)
        if attributes:
            inv.set_attributes(attributes)
        return inv

    def _open_span(self, call: Any, operation: str, model: str | None, provider: str, instance: Any) -> None:
        foreign = foreign_model_span()
        if foreign is not None:
            self.span, self.own_span, self.recording = foreign, False, True
            return
        opts = self.opts
        tracer = (opts.tracer if opts is not None else None) or getattr(call.monitor, "tracer", None)
        trace = _trace()
        if tracer is None and type(trace.get_tracer_provider()).__name__ not in _NO_PROVIDER:
            tracer = trace.get_tracer("agentvigil")
        metrics = opts.metrics if opts is not None else None
        if metrics is not None and not metrics.live():
            metrics = None
        if tracer is None and metrics is None:
            return   # nothing would receive a span or a GenAI metric: build neither (hot path)
        self.base = _base_attributes(provider, operation, model, opts, instance)  # type: ignore[arg-type]
        self.own_span = True
        if tracer is None:
            return
        parent = call.run._parent_span() if call.run is not None else None
        context = trace.set_span_in_context(parent) if parent is not None else None
        # several agents may share the process (and its service.name): the span names its agent, per the spec
        attributes = {**self.base, AGENT_NAME: call.monitor.agent}
        span = tracer.start_span(f"{operation} {model}" if model else operation, context=context,
                                 kind=trace.SpanKind.CLIENT, attributes=attributes)
        self.span, self.recording = span, span.is_recording()

    def attach(self) -> None:
        """Make our span current while the SDK sends the request (HTTP client spans nest under it)."""
        if self.own_span and self.recording:
            try:
                from opentelemetry import context

                self.token = context.attach(_trace().set_span_in_context(self.span))
            except Exception as exc:
                internal_error("instrumentation.context", exc)

    def detach(self) -> None:
        token, self.token = self.token, None
        if token is not None:
            try:
                from opentelemetry import context

                context.detach(token)
            except Exception as exc:
                internal_error("instrumentation.context", exc)

    # -- recording -------------------------------------------------------------------------------------
    def set_attributes(self, attributes: dict[str, Any]) -> None:
        """Buffer span attributes; they are written in one call when the invocation finishes."""
        if not self.recording:
            return
        try:
            if self._attrs is None:
                self._attrs = {}
            for key, value in attributes.items():
                if value is not None and is_given(value):
                    self._attrs[key] = value
        except Exception as exc:
            internal_error("instrumentation.attributes", exc)

    def set_usage(self, input_tokens: int | None, output_tokens: int | None, cache_read_tokens: int | None = 0,
                  cache_write_tokens: int | None = 0, *, input_excludes_cache: bool = False) -> None:
        """Usage as the provider reported it; ``None`` (embeddings' output, cache reads not reported) keeps that
        count off the span, while a reported 0 is written."""
        if self.llm is None or (input_tokens is None and output_tokens is None):
            return
        try:
            self._usage_seen = True
            self._out_known = output_tokens is not None
            self._cache_known = cache_read_tokens is not None
            self.llm.set_usage(input_tokens=int(input_tokens or 0), output_tokens=int(output_tokens or 0),
                               cache_read_tokens=int(cache_read_tokens or 0),
                               cache_write_tokens=int(cache_write_tokens or 0),
                               input_excludes_cache=input_excludes_cache)
        except Exception as exc:
            internal_error("instrumentation.usage", exc)

    def set_response_model(self, model: Any) -> None:
        if self.llm is None or not model:
            return
        try:
            self.llm.set_response_model(str(model))
        except Exception as exc:
            internal_error("instrumentation.usage", exc)

    def total_tokens(self) -> int | None:
        """Input (inclusive of cache) plus output tokens as normalised by the core, or None if unknown."""
        if not self._usage_seen:
            return None
        i, o = getattr(self.llm, "input_tokens", None), getattr(self.llm, "output_tokens", None)
        if isinstance(i, int) and isinstance(o, int):
            return i + o
        return None

    # -- finishing (exactly once) ----------------------------------------------------------------------
    def finish(self, error: BaseException | None = None, *, error_kind: str | None = None,
               tokens: int | None = None) -> None:
        if self.done:
            return
        self.done = True
        try:
            if error is None and not self._usage_seen:
                self.set_attributes({USAGE_MISSING: True})
            if self.reservation is not None:
                if error is None:
                    self.reservation.commit(tokens if tokens is not None else self.total_tokens())
                else:
                    self.reservation.release()
            if self.breaker is not None:
                if error is None:
                    self.breaker.record_success()
                elif isinstance(error, GuardError) or not isinstance(error, Exception):
                    self.breaker.release()  # our own stop or a cancellation: the provider never answered
                else:
                    self.breaker.record_failure(error_kind or error)
            if self.llm is not None:
                self.llm.end(error, error_kind=error_kind)
        except Exception as exc:
            internal_error("instrumentation.finish", exc)
        self._finish_span(error)

    def _finish_span(self, error: BaseException | None) -> None:
        llm = self.llm
        try:
            final: dict[str, Any] = {}
            if llm is not None:
                if llm.response_model:
                    final[RESPONSE_MODEL] = llm.response_model
                if error is None and self._usage_seen:
                    final[USAGE_INPUT_TOKENS] = llm.input_tokens
                    if self._out_known:
                        final[USAGE_OUTPUT_TOKENS] = llm.output_tokens
                    if llm.cache_read_tokens or self._cache_known:
                        final[USAGE_CACHE_READ] = llm.cache_read_tokens
                    if llm.cache_write_tokens:
                        final[USAGE_CACHE_CREATION] = llm.cache_write_tokens
            if error is not None:
                final[ERROR_TYPE] = type(error).__qualname__
            if self.own_span and self.opts is not None and self.opts.metrics is not None and self.base:
                self._record_metrics(final, error)
            if self.span is None or not self.recording:
                return
            attrs = {**(self._attrs or {}), **final}
            if llm is not None and llm.cost_usd is not None:
                attrs[COST_USD] = llm.cost_usd
            opts = self.opts
            if opts is not None:
                if opts.details is not None and self.own_span:   # an adopted span's owner emits its own
                    self._emit_details(opts.details, attrs)
                if not opts.content_on_span:
                    attrs = {k: v for k, v in attrs.items() if k not in CONTENT_KEYS}
            if not self.own_span:   # adopted: add what the other instrumentation does not write
                present = getattr(self.span, "attributes", None) or {}
                attrs = {k: v for k, v in attrs.items() if k.startswith("agentvigil.") or k not in present}
            self.span.set_attributes(attrs)
            if error is not None and self.own_span:
                trace = _trace()
                self.span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)[:512]))
        except Exception as exc:
            internal_error("instrumentation.span", exc)
        finally:
            self._end_span()

    def _emit_details(self, details: Any, attrs: dict[str, Any]) -> None:
        try:
            merged = {**self.base, **attrs}
            details.emit(self.span, {k: v for k, v in merged.items()
                                     if k.startswith("gen_ai.") or k in _EVENT_KEYS})
        except Exception as exc:
            internal_error("instrumentation.events", exc)

    def _record_metrics(self, final: dict[str, Any], error: BaseException | None) -> None:
        from agentvigil.sinks.otel_metrics import METRIC_ATTRIBUTES

        merged = {**self.base, **(self._attrs or {}), **final}
        attrs = {k: merged[k] for k in METRIC_ATTRIBUTES if k in merged}
        llm = self.llm
        known = error is None and self._usage_seen and llm is not None
        self.opts.metrics.record(perf_counter() - self._t0, attrs,  # type: ignore[union-attr]
                                 llm.input_tokens if known else None,
                                 llm.output_tokens if known and self._out_known else None)

    def _end_span(self) -> None:
        span, own = self.span, self.own_span
        self.own_span = False
        if span is not None and own:
            try:
                span.end()
            except Exception as exc:
                internal_error("instrumentation.span", exc)

    def _release_guards(self) -> None:
        try:
            if self.reservation is not None:
                self.reservation.release()
            if self.breaker is not None:
                self.breaker.release()  # free a half-open probe slot we took
        except Exception as exc:
            internal_error("instrumentation.finish", exc)


def _base_attributes(provider: str, operation: str, model: str | None, opts: Options,
                     instance: Any) -> dict[str, Any]:

    base: dict[str, Any] = {OPERATION_NAME: operation, **_semconv.provider_attributes(provider, opts.latest)}
    if model:
        base[REQUEST_MODEL] = model
    if instance is not None:
        base.update(_semconv.server_attributes(instance))
    return base


# --------------------------------------------------------------------------------------------- streams ----


class StreamRecorder:
    """Per-SDK stream accumulator. ``feed`` sees every item and returns False to hide it from the caller;
    ``close`` writes what was accumulated onto the invocation. Both are called inside ``safe`` blocks."""

    def feed(self, item: Any) -> bool:  # pragma: no cover - interface
        return True

    def close(self, inv: Invocation) -> None:  # pragma: no cover - interface
        pass

    def error_kind(self, exc: BaseException) -> str | None:
        return None


def _feed(recorder: StreamRecorder, item: Any) -> bool:
    try:
        return recorder.feed(item)
    except Exception as exc:
        internal_error("instrumentation.stream", exc)
        return True


def _close(recorder: StreamRecorder, inv: Invocation, error: BaseException | None) -> None:
    if inv.done:
        return
    kind = None
    try:
        recorder.close(inv)
        if error is not None:
            kind = recorder.error_kind(error)
    except Exception as exc:
        internal_error("instrumentation.stream", exc)
    inv.finish(error, error_kind=kind)


class SyncStreamProxy(ObjectProxy):  # type: ignore[misc]
    """Wraps an SDK stream: the caller iterates it exactly as before; usage is read as items pass and the call
    is finalised on exhaustion, error, ``close()`` or context exit, whichever comes first."""

    def __init__(self, wrapped: Any, inv: Invocation, recorder: StreamRecorder) -> None:
        super().__init__(wrapped)
        self._self_inv = inv
        self._self_recorder = recorder

    def __iter__(self) -> "SyncStreamProxy":
        return self

    def __next__(self) -> Any:
        while True:
            try:
                item = self.__wrapped__.__next__()
            except StopIteration:
                _close(self._self_recorder, self._self_inv, None)
                raise
            except BaseException as exc:
                _close(self._self_recorder, self._self_inv, exc)
                raise
            if _feed(self._self_recorder, item):
                return item

    def __enter__(self) -> "SyncStreamProxy":
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        try:
            result = self.__wrapped__.__exit__(exc_type, exc, tb)
        except Exception as close_exc:
            _close(self._self_recorder, self._self_inv, exc or close_exc)
            if exc is not None:
                return False   # the caller's own error wins over a failure to close the stream
            raise
        _close(self._self_recorder, self._self_inv, exc)
        return result

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        except BaseException as exc:
            _close(self._self_recorder, self._self_inv, exc)
            raise
        _close(self._self_recorder, self._self_inv, None)


class AsyncStreamProxy(ObjectProxy):  # type: ignore[misc]
    """The async twin of :class:`SyncStreamProxy`."""

    def __init__(self, wrapped: Any, inv: Invocation, recorder: StreamRecorder) -> None:
        super().__init__(wrapped)
        self._self_inv = inv
        self._self_recorder = recorder

    def __aiter__(self) -> "AsyncStreamProxy":
        return self

    async def __anext__(self) -> Any:
        while True:
            try:
                item = await self.__wrapped__.__anext__()
            except StopAsyncIteration:
                _close(self._self_recorder, self._self_inv, None)
                raise
            except BaseException as exc:
                _close(self._self_recorder, self._self_inv, exc)
                raise
            if _feed(self._self_recorder, item):
                return item

    async def __aenter__(self) -> "AsyncStreamProxy":
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        try:
            result = await self.__wrapped__.__aexit__(exc_type, exc, tb)
        except Exception as close_exc:
            _close(self._self_recorder, self._self_inv, exc or close_exc)
            if exc is not None:
                return False   # the caller's own error wins over a failure to close the stream
            raise
        _close(self._self_recorder, self._self_inv, exc)
        return result

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        except BaseException as exc:
            _close(self._self_recorder, self._self_inv, exc)
            raise
        _close(self._self_recorder, self._self_inv, None)

    async def aclose(self) -> None:
        """The async-iterator protocol's close (what the OpenAI Agents SDK calls after a stream's last event)."""
        wrapped = self.__wrapped__
        try:
            await (wrapped.aclose() if hasattr(wrapped, "aclose") else wrapped.close())
        except BaseException as exc:
            _close(self._self_recorder, self._self_inv, exc)
            raise
        _close(self._self_recorder, self._self_inv, None)


class RawStreamResponse(ObjectProxy):  # type: ignore[misc]
    """A raw response (``with_raw_response``, ``with_streaming_response``) of a streamed call: ``parse()`` returns
    the SDK stream behind our stream proxy, so the call is recorded with its response model, id and usage as the
    caller iterates. The async client's ``parse()`` is a coroutine: it is awaited, then the stream wrapped."""

    def __init__(self, wrapped: Any, inv: Invocation, recorder: StreamRecorder) -> None:
        super().__init__(wrapped)
        self._self_inv = inv
        self._self_recorder = recorder
        self._self_parsed: Any = None

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        stream = self.__wrapped__.parse(*args, **kwargs)
        if inspect.isawaitable(stream):
            return self._parsed_later(stream)
        return self._proxy(stream)

    async def _parsed_later(self, pending: Any) -> Any:
        return self._proxy(await pending)

    def _proxy(self, stream: Any) -> Any:
        if self._self_parsed is None:
            try:
                proxy = AsyncStreamProxy if hasattr(stream, "__anext__") else SyncStreamProxy
                self._self_parsed = proxy(stream, self._self_inv, self._self_recorder)
            except Exception as exc:
                internal_error("instrumentation.stream", exc)
                return stream
        return self._self_parsed


# ------------------------------------------------------------------------------------------- the shells ----


@dataclass
class CallSpec:
    """How one SDK method maps onto an LLM call. Functions here run inside ``safe`` blocks."""

    provider: str
    operation: str                                                          # chat | embeddings | ...
    request: Callable[[dict[str, Any], Options, bool], tuple[dict[str, Any], dict[str, Any]]]
    #: (kwargs, opts, recording) -> (kwargs to send, span attributes; build them only when recording)
    response: Callable[[Any, Invocation, Options], None]                    # non-stream result -> usage
    stream_recorder: Callable[[dict[str, Any], Options, bool], StreamRecorder] | None = None
    #: (original kwargs, opts, usage_injected) -> recorder
    error_kind: Callable[[BaseException], str | None] = lambda exc: None
    is_stream: Callable[[dict[str, Any], Any], bool] = lambda kwargs, result: bool(kwargs.get("stream") is True)


def _prepare(spec: CallSpec, kwargs: dict[str, Any], opts: Options,
             recording: bool = True) -> tuple[dict[str, Any], dict[str, Any], bool]:
    try:
        new_kwargs, attrs = spec.request(kwargs, opts, recording)
        injected = new_kwargs is not kwargs
        return new_kwargs, attrs, injected
    except Exception as exc:
        internal_error(f"instrumentation.{spec.provider}", exc)
        return kwargs, {}, False


def _on_result(spec: CallSpec, kwargs: dict[str, Any], result: Any, inv: Invocation, opts: Options,
               injected: bool, is_async: bool) -> Any:
    try:
        if spec.stream_recorder is not None and spec.is_stream(kwargs, result):
            recorder = spec.stream_recorder(kwargs, opts, injected)
            if not (hasattr(result, "__next__") or hasattr(result, "__anext__")):
                return RawStreamResponse(result, inv, recorder)
            return (AsyncStreamProxy if is_async else SyncStreamProxy)(result, inv, recorder)
        spec.response(result, inv, opts)
    except Exception as exc:
        internal_error(f"instrumentation.{spec.provider}", exc)
    inv.finish(None)
    return result


def _on_error(spec: CallSpec, inv: Invocation, exc: BaseException) -> None:
    try:
        kind = spec.error_kind(exc)
    except Exception:
        kind = None
    inv.finish(exc, error_kind=kind)


def sync_wrapper(spec: CallSpec, opts: Options) -> Callable[..., Any]:
    """A ``wrapt`` wrapper for a sync SDK method (keyword-only in both SDKs)."""

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        if _IN_CALL.get():
            return wrapped(*args, **kwargs)
        inv = Invocation.begin(spec.provider, spec.operation, kwargs.get("model"), kwargs, opts, instance=instance)
        send, attrs, injected = _prepare(spec, kwargs, opts, inv.recording)
        if attrs:
            inv.set_attributes(attrs)
        token = _IN_CALL.set(True)
        inv.attach()
        try:
            result = wrapped(*args, **send)
        except BaseException as exc:
            inv.detach()
            _on_error(spec, inv, exc)
            raise
        finally:
            inv.detach()
            _IN_CALL.reset(token)
        return _on_result(spec, kwargs, result, inv, opts, injected, is_async=False)

    return wrapper


def async_wrapper(spec: CallSpec, opts: Options) -> Callable[..., Any]:
    """A ``wrapt`` wrapper for an async SDK method."""

    async def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        if _IN_CALL.get():
            return await wrapped(*args, **kwargs)
        inv = Invocation.begin(spec.provider, spec.operation, kwargs.get("model"), kwargs, opts, instance=instance)
        send, attrs, injected = _prepare(spec, kwargs, opts, inv.recording)
        if attrs:
            inv.set_attributes(attrs)
        token = _IN_CALL.set(True)
        inv.attach()
        try:
            result = await wrapped(*args, **send)
        except BaseException as exc:
            inv.detach()
            _on_error(spec, inv, exc)
            raise
        finally:
            inv.detach()
            _IN_CALL.reset(token)
        return _on_result(spec, kwargs, result, inv, opts, injected, is_async=True)

    return wrapper


def content_attributes(opts: Options, **values: Any) -> dict[str, Any]:
    """Span attributes carrying message content: empty unless content capture is on."""
    if not opts.capture_content:
        return {}
    return {key: to_json(value) for key, value in values.items() if is_given(value)}
