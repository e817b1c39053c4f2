"""The tool-call writers' shortcuts (histogram writes, exemplars, span ids) give what the library calls give."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.samples import Exemplar

from agentvigil.metrics import TOOL_DURATION_BUCKETS
from agentvigil.sinks import prometheus as sink
from agentvigil.sinks import spans

_amounts = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(TOOL_DURATION_BUCKETS),
                     st.integers(-5, 100).map(float))
_hex = st.text("0123456789abcdef", min_size=0, max_size=80)


def _pair():
    ours = Histogram("ours_seconds", "", ["tool"], buckets=TOOL_DURATION_BUCKETS, registry=CollectorRegistry())
    lib = Histogram("lib_seconds", "", ["tool"], buckets=TOOL_DURATION_BUCKETS, registry=CollectorRegistry())
    return ours.labels("t"), lib.labels("t")


def _state(child):
    """Sum, bucket counts and exemplars (labels and value; the timestamp is the clock's)."""
    buckets = [(b.get(), None if b._exemplar is None else (b._exemplar.labels, b._exemplar.value))
               for b in child._buckets]
    total = child._sum.get()
    return ("nan" if math.isnan(total) else total), buckets


def _outcome(write, *args):
    try:
        write(*args)
        return None
    except ValueError as exc:   # exemplar labels over 128 characters: the library's own error
        return str(exc)


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(st.tuples(_amounts, st.one_of(st.none(), st.tuples(_hex, _hex))), max_size=30))
def test_histogram_writes_match_observe(ops):
    ours, lib = _pair()
    for amount, ids in ops:
        if ids is None:
            sink.observe(ours, amount)
            lib.observe(amount)
            continue
        trace_id, span_id = ids
        outcomes = [_outcome(sink.observe_with_ids, ours, amount, trace_id, span_id),
                    _outcome(lib.observe, amount, {"trace_id": trace_id, "span_id": span_id})]
        assert outcomes[0] == outcomes[1]
    assert _state(ours) == _state(lib)


def test_exemplar_is_the_library_type_with_the_ids():
    ours, _ = _pair()
    sink.observe_with_ids(ours, 0.003, "a" * 32, "b" * 16)
    exemplar = ours._buckets[0]._exemplar
    assert isinstance(exemplar, Exemplar)
    assert exemplar.labels == {"trace_id": "a" * 32, "span_id": "b" * 16} and exemplar.value == 0.003


def test_a_histogram_subclass_keeps_its_own_observe():
    seen = []

    class Counting(Histogram):
        def observe(self, amount, exemplar=None):
            seen.append((amount, exemplar))
            super().observe(amount, exemplar)

    child = Counting("c_seconds", "", ["tool"], registry=CollectorRegistry()).labels("t")
    sink.observe(child, 0.5)
    sink.observe_with_ids(child, 0.7, "a" * 32, "b" * 16)
    assert seen == [(0.5, None), (0.7, {"trace_id": "a" * 32, "span_id": "b" * 16})]


class _Ctx:
    """A SpanContext of another class: read through its properties."""

    def __init__(self, trace_id, span_id, valid, sampled):
        self.trace_id, self.span_id, self.is_valid = trace_id, span_id, valid
        self.trace_flags = type("Flags", (), {"sampled": sampled})()


class _Span:
    def __init__(self, ctx):
        self.ctx = ctx

    def get_span_context(self):
        return self.ctx


def _by_properties(ctx):
    if ctx.is_valid and ctx.trace_flags.sampled:
        return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
    return None, None


@settings(max_examples=300, deadline=None)
@given(trace_ids=st.lists(st.integers(0, 2**128 - 1), min_size=1, max_size=4),
       span_id=st.integers(0, 2**64 - 1), flags=st.integers(0, 255), other_class=st.booleans())
def test_span_ids_match_their_formatted_properties(trace_ids, span_id, flags, other_class):
    from opentelemetry.trace import SpanContext, TraceFlags

    spans.SpanSink(None)   # checks the SpanContext layout once
    for trace_id in trace_ids:   # consecutive spans of one trace reuse its string
        ctx = SpanContext(trace_id, span_id, False, TraceFlags(flags))
        if other_class:
            ctx = _Ctx(trace_id, span_id, ctx.is_valid, ctx.trace_flags.sampled)
        assert spans._format_ids(_Span(ctx)) == _by_properties(ctx)


def test_a_failing_detach_still_ends_the_tool_call_with_the_agents_error(make_monitor, registry, monkeypatch):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agentvigil import scopes

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    mon = make_monitor(tracer_provider=provider)
    run = mon.start_run()
    with run.tool_call("warm", {"a": 1}):
        pass
    attach, _, in_context = scopes._otel

    def broken_detach(token):
        raise RuntimeError("detached in another context")

    monkeypatch.setattr(scopes, "_otel", (attach, broken_detach, in_context))
    try:
        with run.tool_call("search", {"q": 1}):
            raise KeyError("the agent's own error")
    except KeyError as exc:
        assert "the agent's own error" in str(exc)
    else:
        raise AssertionError("the agent's exception must pass through")
    run.end()
    errors = registry.get_sample_value("agentvigil_internal_errors_total", {"component": "context"})
    assert errors == 1
    failed = [s for s in exporter.get_finished_spans() if s.name == "execute_tool search"]
    assert len(failed) == 1 and failed[0].status.status_code.name == "ERROR"
