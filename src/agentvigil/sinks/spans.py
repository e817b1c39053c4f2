"""The OTel span sink: one span per run (``invoke_agent``), step, tool call (``execute_tool``) and LLM call,
with GenAI semantic-convention attributes, built from the pipeline's events.

Start events open the span and hang it on the producing scope (``event.scope``), so the scope can make it
current and spans the user's code creates nest under it; end events set the outcome and end it. The ids of
the span are written on the event (``trace_id``/``span_id``) for exemplars and the recording.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .. import events as ev
from .._safety import internal_error
from ..events import Event
from . import otel as attr

_trace: Any = None
_status: Any = None


_current: Any = None   # opentelemetry.context.get_current, imported on first use


def _get_current() -> Any:
    global _current
    if _current is None:
        from opentelemetry.context import get_current

        _current = get_current
    return _current()


def _api() -> tuple[Any, Any]:
    """opentelemetry.trace and (Status, StatusCode), imported on first use (only when tracing is on)."""
    global _trace, _status
    if _trace is None:
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        _trace, _status = trace, (Status, StatusCode)
    return _trace, _status


_NO_IDS: tuple[None, None] = (None, None)
_last_trace: tuple[int, str] = (0, "0" * 32)   # the last trace id formatted: the spans of a run share one


def _format_ids(span: Any) -> tuple[str | None, str | None]:
    """The span's (trace id, span id) as 32 and 16 lowercase hex digits when it is valid and sampled (what
    exemplars and the recording carry), else (None, None). Once per span on every tool call: the trace id's
    string is reused while the trace is the same, and ``to_bytes().hex()`` is half the cost of ``format``."""
    global _last_trace
    ctx = span.get_span_context()
    if ctx.__class__ is _SpanContext:   # (trace_id, span_id, is_remote, trace_flags, trace_state, is_valid)
        trace_id, span_id, _, flags, _, valid = ctx
        if not (valid and flags & 1):
            return _NO_IDS
    elif ctx.is_valid and ctx.trace_flags.sampled:   # another SpanContext class: its properties, as before
        return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
    else:
        return _NO_IDS
    last = _last_trace
    if last[0] != trace_id:
        last = _last_trace = (trace_id, trace_id.to_bytes(16, "big").hex())
    return last[1], span_id.to_bytes(8, "big").hex()


def _span_context_class() -> Any:
    """opentelemetry's SpanContext when it is the 6-tuple ``_format_ids`` unpacks (checked once), else None."""
    try:
        from opentelemetry.trace import SpanContext, TraceFlags

        probe = SpanContext(3, 5, False, TraceFlags(TraceFlags.SAMPLED))
        if (len(probe) == 6 and tuple(probe)[:4] == (3, 5, False, 1) and probe[5] is True and probe.is_valid
                and probe.trace_flags.sampled and TraceFlags.SAMPLED == 1):
            return SpanContext
    except Exception as exc:  # pragma: no cover - an API we do not know: the properties are read instead
        internal_error("tracing", exc)
    return None


_SpanContext: Any = None   # set by SpanSink() (opentelemetry is imported only when tracing is on)


def _ids(span: Any, event: Event) -> None:
    trace_id, span_id = _format_ids(span)
    if trace_id is not None:
        event.trace_id, event.span_id = trace_id, span_id


MAX_OPEN_IDS = 4096   # ids of the spans we opened and have not ended yet (bounded: a scope never ended)


class SpanSink:
    consumes = frozenset({ev.RUN_START, ev.RUN_END, ev.STEP_START, ev.STEP_END, ev.TOOL_START, ev.TOOL_END,
                          ev.LLM_START, ev.LLM_CALL})

    def __init__(self, tracer: Any, capture_content: bool = False):
        global _SpanContext
        if _SpanContext is None:
            _SpanContext = _span_context_class()
        self.tracer = tracer
        self.capture_content = capture_content
        # span -> its formatted ids, from start to end: formatted once per span, not at both ends
        self._open_ids: dict[Any, tuple[str | None, str | None]] = {}
        # (parent span, current context, the context made from both): contexts are immutable, so consecutive
        # tool calls of one step share it instead of building it per call
        self._parent_ctx: tuple[Any, Any, Any] = (None, None, None)

    def handle(self, event: Event) -> None:
        scope = event.scope
        if scope is None:
            return   # recorded events: no live scope to hang a span on
        kind = event.event_type
        # only model calls can have a span an SDK integration owns
        if (kind == ev.LLM_START or kind == ev.LLM_CALL) and getattr(scope, "external_span", False):
            if kind == ev.LLM_START:
                _agent_provider(scope)
            if scope._span is not None:
                _ids(scope._span, event)
            return
        if kind == ev.TOOL_START:
            self._tool_start(event)
        elif kind == ev.TOOL_END:
            self._tool_end(event)
        elif kind == ev.STEP_END:
            span = scope._span
            if span is not None:
                self._end_ids(span, event)
                scope.run._current_step_span = scope._prev_span
                self._end(span, event)
        elif kind == ev.STEP_START:
            run = scope.run
            name = getattr(scope, "name", None)
            self._open(scope, event, f"step {name}" if name else "step", run._span,
                       {attr.STEP_INDEX: event.step_index or 0, attr.AGENT_NAME: run.monitor.agent})
            scope._prev_span = run._current_step_span
            run._current_step_span = scope._span
        elif kind == ev.LLM_START:
            _agent_provider(scope)
            self._open(scope, event, f"{scope.operation} {scope.model}", _parent_of(scope), _llm_attributes(scope),
                       kind=_client())
        elif kind == ev.LLM_CALL:
            span = scope._span
            if span is None:  # recorded after the fact: back-date the span
                _agent_provider(scope)
                span = self.tracer.start_span(f"{scope.operation} {scope.model}",
                                              context=self._context(_parent_of(scope)),
                                              attributes=_llm_attributes(scope),
                                              start_time=int(scope._wall_start * 1e9), kind=_client())
                scope._span = span
            response = (event.detail or {}).get("response_model")
            if response:
                span.set_attribute(attr.RESPONSE_MODEL, response)
            if event.error_kind is None:   # usage is left out, not 0, when the call failed (GenAI semconv)
                span.set_attribute(attr.USAGE_INPUT_TOKENS, event.input_tokens or 0)
                span.set_attribute(attr.USAGE_OUTPUT_TOKENS, event.output_tokens or 0)
            if event.cache_read_tokens:
                span.set_attribute(attr.USAGE_CACHE_READ, event.cache_read_tokens)
            if event.cache_write_tokens:
                span.set_attribute(attr.USAGE_CACHE_CREATION, event.cache_write_tokens)
            if event.cost_usd is not None:
                span.set_attribute(attr.COST_USD, event.cost_usd)
            self._end_ids(span, event)
            self._end(span, event)
        elif kind == ev.RUN_START:
            a = {attr.OPERATION_NAME: "invoke_agent", attr.AGENT_NAME: event.agent_id or "unknown",
                 attr.PROVIDER_NAME: attr.AGENT_PROVIDER, attr.RUN_ID: event.run_id or ""}
            if event.task_id:
                a[attr.TASK_ID] = event.task_id
                a[attr.CONVERSATION_ID] = event.task_id
            if event.correlation_id:
                a[attr.CORRELATION_ID] = event.correlation_id
            self._open(scope, event, f"invoke_agent {event.agent_id}", None, a)
        elif kind == ev.RUN_END:
            span = scope._span
            if span is not None:
                span.set_attribute(attr.RUN_STATUS, event.status or "ok")
                span.set_attribute(attr.COST_USD, event.cost_usd or 0.0)
                self._end_ids(span, event)
                self._end(span, event)

    def handler_for(self, event_type: str) -> Any:
        """The tool-call writers directly (see ``pipeline.Sink``): the hottest events skip ``handle``'s dispatch."""
        if event_type == ev.TOOL_START:
            return self._tool_start
        if event_type == ev.TOOL_END:
            return self._tool_end
        return None

    def _tool_start(self, event: Event) -> None:
        scope = event.scope
        if scope is None:
            return   # recorded events: no live scope to hang a span on
        run = scope.run
        name = event.tool_name
        a = {attr.OPERATION_NAME: "execute_tool", attr.TOOL_NAME: name or "unknown", attr.TOOL_TYPE: "function",
             attr.AGENT_NAME: run.monitor.agent}
        if event.args_hash:
            a[attr.ARGS_HASH] = event.args_hash
        call_id = getattr(scope, "call_id", None)
        if call_id:
            a[attr.TOOL_CALL_ID] = call_id
        if self.capture_content:
            raw = getattr(scope, "_args", None)
            if raw is not None:
                a[attr.TOOL_CALL_ARGUMENTS] = json.dumps(raw, default=repr)[:8192]
        # _open, inlined for the hottest span (the same steps, without the kind branch); a ToolCall keeps its ids
        span = self.tracer.start_span(f"execute_tool {name}",
                                      context=self._context(run._current_step_span or run._span), attributes=a)
        scope._span = span
        ids = _format_ids(span)
        if ids[0] is not None:
            event.trace_id, event.span_id = ids
        try:
            scope._span_ids = ids
        except AttributeError:   # another scope class: the bounded map
            open_ids = self._open_ids
            if len(open_ids) >= MAX_OPEN_IDS:
                open_ids.clear()
            open_ids[span] = ids

    def _tool_end(self, event: Event) -> None:
        scope = event.scope
        if scope is None:
            return
        span = scope._span
        if span is not None:
            ids = getattr(scope, "_span_ids", None) or self._open_ids.pop(span, None)   # _end_ids, inlined
            if ids is None:
                _ids(span, event)
            elif ids[0] is not None:
                event.trace_id, event.span_id = ids
            if self.capture_content:
                result = getattr(scope, "_result", None)
                if result is not None:
                    span.set_attribute(attr.TOOL_CALL_RESULT, json.dumps(result, default=repr)[:8192])
            if event.status == "ok" and not event.error_kind:
                span.end()   # what _end does for a call that succeeded
            else:
                self._end(span, event)

    def _open(self, scope: Any, event: Event, name: str, parent: Any, attributes: dict, kind: Any = None) -> None:
        if kind is None:
            span = self.tracer.start_span(name, context=self._context(parent), attributes=attributes)
        else:
            span = self.tracer.start_span(name, context=self._context(parent), attributes=attributes, kind=kind)
        scope._span = span
        ids = _format_ids(span)
        if ids[0] is not None:
            event.trace_id, event.span_id = ids
        open_ids = self._open_ids
        if len(open_ids) >= MAX_OPEN_IDS:
            open_ids.clear()
        open_ids[span] = ids

    def _end_ids(self, span: Any, event: Event) -> None:
        ids = self._open_ids.pop(span, None)
        if ids is None:
            _ids(span, event)
        elif ids[0] is not None:
            event.trace_id, event.span_id = ids

    def _context(self, parent: Any) -> Any:
        if parent is None:
            return None
        last, current, ctx = self._parent_ctx
        now = (_current or _get_current)()
        if last is not parent or current is not now:
            trace, _ = _api()
            ctx = trace.set_span_in_context(parent, now)
            self._parent_ctx = (parent, now, ctx)
        return ctx

    @staticmethod
    def _end(span: Any, event: Event) -> None:
        kind = event.error_kind
        if event.status in ("error", "rejected") or (kind and event.event_type != ev.RUN_END):
            _, (Status, StatusCode) = _api()
            error = getattr(event.scope, "_error", None)
            span.set_attribute(attr.ERROR_TYPE, type(error).__qualname__ if error is not None else kind or "error")
            span.set_status(Status(StatusCode.ERROR, kind or "error"))
        elif event.event_type == ev.RUN_END and event.status == "error":
            _, (Status, StatusCode) = _api()
            span.set_status(Status(StatusCode.ERROR, kind or "error"))
        span.end()


def _agent_provider(scope: Any) -> None:
    """An ``invoke_agent`` span's ``gen_ai.provider.name`` is the provider of the run's model calls (known at the
    first one); until then it holds ``agentvigil``, the spec's custom-value fallback."""
    run = scope.run
    span = getattr(run, "_span", None) if run is not None else None
    if span is None:
        return
    if (getattr(span, "attributes", None) or {}).get(attr.PROVIDER_NAME) == attr.AGENT_PROVIDER:
        span.set_attribute(attr.PROVIDER_NAME, scope.provider)


def _client() -> Any:
    """Model calls are CLIENT spans (a remote model service), per the GenAI conventions."""
    trace, _ = _api()
    return trace.SpanKind.CLIENT


def _parent_of(scope: Any) -> Any:
    run = scope.run
    return run._parent_span() if run is not None else None


def _llm_attributes(scope: Any) -> dict:
    a = {attr.OPERATION_NAME: scope.operation, attr.PROVIDER_NAME: scope.provider,
         attr.REQUEST_MODEL: scope.model, attr.AGENT_NAME: scope.monitor.agent}
    if not _latest():
        a[attr.SYSTEM] = scope.provider   # the older name, written in the default stability mode
    return a


def _latest() -> bool:
    return "gen_ai_latest_experimental" in os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "")


def span_of(scope: Any) -> Any:
    """A scope's span (None when tracing is off)."""
    try:
        return scope._span
    except Exception as exc:  # pragma: no cover
        internal_error("spans", exc)
        return None
