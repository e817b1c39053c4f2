"""Conformance with the OpenTelemetry GenAI semantic conventions, written from the spec
(https://opentelemetry.io/docs/specs/semconv/gen-ai/): real SDKs against agentvigil.testing.FakeProvider, spans and
metrics read from in-memory OTel SDK providers given to ``instrument()``."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry

import agentvigil
from agentvigil.testing import FakeProvider


@pytest.fixture(scope="module")
def fake_server():
    with FakeProvider() as server:
        yield server


@pytest.fixture
def fake(fake_server):
    fake_server.reset()
    yield fake_server
    fake_server.reset()


@pytest.fixture
def otel():
    """Tracer and meter providers with in-memory readers, as ``instrument()`` receives them."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    class Otel:
        spans = InMemorySpanExporter()
        reader = InMemoryMetricReader()
        tracer_provider = TracerProvider()
        meter_provider = MeterProvider(metric_readers=[reader])

        def model_spans(self):
            return [s for s in self.spans.get_finished_spans()
                    if s.attributes.get("gen_ai.operation.name") in ("chat", "embeddings")]

        def points(self, name):
            data = self.reader.get_metrics_data()
            out = []
            for rm in data.resource_metrics if data else ():
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.name == name:
                            out.extend(m.data.data_points)
            return out

    o = Otel()
    o.tracer_provider.add_span_processor(SimpleSpanProcessor(o.spans))
    return o


@pytest.fixture
def logs():
    """A LoggerProvider with an in-memory exporter (``logs.provider``), for the older-mode events."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    try:
        from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter as Exporter
    except ImportError:  # older SDKs
        from opentelemetry.sdk._logs.export import InMemoryLogExporter as Exporter
    exporter = Exporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    exporter.provider = provider
    return exporter


@pytest.fixture
def monitor():
    # no tracer of its own: the model spans must come from instrument(tracer_provider=...)
    mon = agentvigil.Monitor("conformance", registry=CollectorRegistry(), heartbeat=False)
    yield mon
    mon.close()


@pytest.fixture
def instrumentor(otel, monitor, monkeypatch):
    """``instrumentor(SomeInstrumentor)`` → ``go(capture=False, latest=False, **kw)`` instrumenting with the
    in-memory providers and the test monitor (latest: the gen_ai_latest_experimental stability mode);
    uninstrumented at the end of the test."""
    made = []

    def bind(cls):
        inst = cls()
        made.append(inst)

        def go(capture=False, latest=False, **kw):
            if latest:
                monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
            inst.instrument(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider,
                            monitor=monitor, capture_content=capture, **kw)

        return go

    yield bind
    for inst in made:
        if inst.is_instrumented_by_opentelemetry:
            inst.uninstrument()


def parsed(span, key):
    return json.loads(span.attributes[key])
