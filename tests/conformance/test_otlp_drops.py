"""Spans lost on the way to an OTLP collector are counted in agentvigil_events_dropped_total{sink="otlp"}."""

from __future__ import annotations

import threading

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult

from agentvigil.metrics import default_metrics
from agentvigil.sinks.otel import _counting_batch_processor, _CountingExporter


def _dropped() -> float:
    return default_metrics().events_dropped.labels("otlp")._value.get()


class _Blackhole:
    """A collector that accepts and never answers (until released)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans):
        self.release.wait(10)
        return SpanExportResult.SUCCESS

    def shutdown(self):
        self.release.set()


class _Failing:
    def export(self, spans):
        return SpanExportResult.FAILURE

    def shutdown(self):
        pass


def test_queue_full_is_counted():
    hole = _Blackhole()
    processor = _counting_batch_processor(hole)
    processor._batch_processor._queue = type(processor._batch_processor._queue)([], 4)  # a tiny queue
    provider = TracerProvider()
    provider.add_span_processor(processor)
    before = _dropped()
    tracer = provider.get_tracer("t")
    for _ in range(50):
        tracer.start_span("s").end()
    # 50 spans, room for 4 queued and at most 4 more taken by the (blocked) export: 42 to 46 lost, each counted
    assert 42 <= _dropped() - before <= 46
    hole.release.set()
    provider.shutdown()


def test_spans_still_queued_at_shutdown_are_counted():
    hole = _Blackhole()
    processor = _counting_batch_processor(hole)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    for _ in range(10):
        provider.get_tracer("t").start_span("s").end()
    before = _dropped()
    processor._batch_processor._shutdown_timeout_exceeded = True   # shutdown gave up: nothing more is exported
    processor._batch_processor._worker_awaken.set()
    processor.shutdown()
    hole.release.set()
    assert _dropped() - before == len(processor._batch_processor._queue) > 0


def test_failed_export_is_counted():
    processor = _counting_batch_processor(_CountingExporter(_Failing()))
    provider = TracerProvider()
    provider.add_span_processor(processor)
    before = _dropped()
    for _ in range(3):
        provider.get_tracer("t").start_span("s").end()
    provider.shutdown()
    assert _dropped() - before == 3
