"""GenAI semconv for the Anthropic SDK."""

from __future__ import annotations

import pytest

anthropic = pytest.importorskip("anthropic")

from opentelemetry.trace import SpanKind  # noqa: E402

from agentvigil.instrumentation.anthropic import AnthropicInstrumentor  # noqa: E402
from agentvigil.testing import Reply  # noqa: E402

from .conftest import parsed  # noqa: E402

MODEL = "claude-haiku-4-5"
MSGS = [{"role": "user", "content": "hi"}]


@pytest.fixture
def instrument(otel, monitor):
    inst = AnthropicInstrumentor()

    def go(capture=False):
        inst.instrument(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider, monitor=monitor,
                        capture_content=capture)

    yield go
    if inst.is_instrumented_by_opentelemetry:
        inst.uninstrument()


@pytest.fixture
def client(fake):
    return anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="k", max_retries=0)


def test_client_span_with_server_and_provider(instrument, client, otel, fake):
    instrument()
    client.messages.create(model=MODEL, max_tokens=10, messages=MSGS, stop_sequences=["END"])
    (span,) = otel.model_spans()
    a = span.attributes
    assert span.kind == SpanKind.CLIENT
    assert a["gen_ai.provider.name"] == "anthropic"
    assert a["server.address"] == "127.0.0.1" and a["server.port"] == fake.port
    assert a["gen_ai.request.stop_sequences"] == ("END",)


def test_finish_reason_mapped_to_spec_values(instrument, client, otel, fake):
    instrument()
    fake.enqueue(Reply(tool_calls=[{"name": "search", "arguments": {"q": "x"}}]))
    client.messages.create(model=MODEL, max_tokens=10, messages=MSGS)
    assert otel.model_spans()[0].attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)


def test_content_parts_and_system_instructions(instrument, client, otel, fake):
    instrument(capture=True)
    fake.enqueue(Reply(text="hello"))
    client.messages.create(model=MODEL, max_tokens=10, messages=MSGS, system="be brief")
    span = otel.model_spans()[0]
    assert parsed(span, "gen_ai.system_instructions") == [{"type": "text", "content": "be brief"}]
    assert parsed(span, "gen_ai.input.messages") == [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
    assert parsed(span, "gen_ai.output.messages") == [
        {"role": "assistant", "parts": [{"type": "text", "content": "hello"}], "finish_reason": "stop"}]


def test_streamed_tool_use_is_rebuilt(instrument, client, otel, fake):
    instrument(capture=True)
    fake.enqueue(Reply(text="", tool_calls=[{"name": "search", "arguments": {"q": "cats"}}]))
    list(client.messages.create(model=MODEL, max_tokens=10, messages=MSGS, stream=True))
    (message,) = parsed(otel.model_spans()[0], "gen_ai.output.messages")
    calls = [p for p in message["parts"] if p["type"] == "tool_call"]
    assert calls and calls[0]["name"] == "search" and calls[0]["arguments"] == {"q": "cats"}


def test_token_metrics(instrument, client, otel, fake):
    instrument()
    fake.enqueue(Reply(input_tokens=20, output_tokens=3))
    client.messages.create(model=MODEL, max_tokens=10, messages=MSGS)
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in otel.points("gen_ai.client.token.usage")}
    assert tokens == {"input": 20, "output": 3}
