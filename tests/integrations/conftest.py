"""Shared fixtures: one fake provider per module (real SDKs speak HTTP to it on 127.0.0.1), a fresh Prometheus
registry, an in-memory span exporter and a Monitor wired to both, per test."""

from __future__ import annotations

from typing import Any

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
def registry():
    return CollectorRegistry()


@pytest.fixture
def spans():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    exporter.provider = provider
    return exporter


@pytest.fixture
def monitor(registry, spans):
    mon = agentvigil.Monitor("itest", registry=registry, tracer_provider=spans.provider, heartbeat=False)
    yield mon
    mon.close()


@pytest.fixture
def sample(registry):
    def get(name, **labels):
        value = registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    return get


@pytest.fixture
def llm_spans(spans):
    def get():
        return [s for s in spans.get_finished_spans()
                if s.attributes.get("gen_ai.operation.name") in ("chat", "embeddings")]

    return get


def internal_errors(component_prefix: str = "instrumentation") -> float:
    """Sum of agentvigil_internal_errors_total for our components (default registry)."""
    from prometheus_client import REGISTRY

    total = 0.0
    for metric in REGISTRY.collect():
        for s in metric.samples:
            if s.name == "agentvigil_internal_errors_total" and s.labels.get("component", "").startswith(
                    component_prefix):
                total += s.value
    return total


def instrument_fixture(instrumentor: type) -> Any:
    """A module's ``instrument`` fixture: ``instrument(**kw)`` instruments ``instrumentor`` with the test monitor
    (unless ``monitor=`` is given) and always uninstruments afterwards."""

    @pytest.fixture
    def instrument(monitor: Any) -> Any:
        inst = instrumentor()

        def go(**kw: Any) -> Any:
            kw.setdefault("monitor", monitor)
            inst.instrument(**kw)
            return inst

        yield go
        if inst.is_instrumented_by_opentelemetry:
            inst.uninstrument()

    return instrument
