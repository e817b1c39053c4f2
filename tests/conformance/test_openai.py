"""GenAI semconv for the OpenAI SDK: one test per attribute, metric and behaviour."""

from __future__ import annotations

import pytest

openai = pytest.importorskip("openai")

from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

from agentvigil.instrumentation.openai import OpenAIInstrumentor  # noqa: E402
from agentvigil.sinks.otel_metrics import DURATION_BUCKETS, TOKEN_BUCKETS  # noqa: E402
from agentvigil.testing import Reply  # noqa: E402

from .conftest import parsed  # noqa: E402

# The Responses API exists from openai 1.66; scripts/test-oldest.sh runs this file against older releases too.
requires_responses = pytest.mark.skipif(not hasattr(openai.OpenAI, "responses"),
                                        reason="this openai has no Responses API")

MODEL = "gpt-4o-mini"
MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]


@pytest.fixture
def instrument(instrumentor):
    return instrumentor(OpenAIInstrumentor)


@pytest.fixture
def client(fake):
    return openai.OpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0)


def chat(client, **kw):
    return client.chat.completions.create(model=MODEL, messages=MSGS, **kw)


def test_model_span_is_client_kind_named_operation_model(instrument, client, otel):
    instrument()
    chat(client)
    (span,) = otel.model_spans()
    assert span.kind == SpanKind.CLIENT
    assert span.name == f"chat {MODEL}"


def test_server_address_and_port(instrument, client, otel, fake):
    instrument()
    chat(client)
    a = otel.model_spans()[0].attributes
    assert a["server.address"] == "127.0.0.1"
    assert a["server.port"] == fake.port


def test_default_mode_writes_gen_ai_system(instrument, client, otel):
    instrument()
    chat(client)
    a = otel.model_spans()[0].attributes
    assert a["gen_ai.system"] == "openai"


def test_latest_mode_writes_provider_name_only(instrument, client, otel):
    instrument(latest=True)
    chat(client)
    a = otel.model_spans()[0].attributes
    assert a["gen_ai.provider.name"] == "openai"
    assert "gen_ai.system" not in a


def test_request_attributes(instrument, client, otel):
    instrument(latest=True)
    chat(client, seed=7, stop="END", n=2, response_format={"type": "json_object"}, service_tier="flex",
         max_tokens=50, temperature=0.5, top_p=0.9, frequency_penalty=0.1, presence_penalty=0.2)
    a = otel.model_spans()[0].attributes
    assert a["gen_ai.request.seed"] == 7
    assert a["gen_ai.request.stop_sequences"] == ("END",)
    assert a["gen_ai.request.choice.count"] == 2
    assert a["gen_ai.output.type"] == "json_object"
    assert a["openai.request.service_tier"] == "flex"
    assert a["gen_ai.request.max_tokens"] == 50
    assert a["gen_ai.request.frequency_penalty"] == 0.1


def test_choice_count_of_one_is_not_reported(instrument, client, otel):
    instrument()
    chat(client, n=1)
    assert "gen_ai.request.choice.count" not in otel.model_spans()[0].attributes


def test_response_attributes_and_usage(instrument, client, otel, fake):
    instrument()
    fake.enqueue(Reply(input_tokens=30, output_tokens=4, model="gpt-4o-mini-2024-07-18"))
    resp = chat(client)
    a = otel.model_spans()[0].attributes
    assert a["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert a["gen_ai.response.id"] == resp.id
    assert a["gen_ai.usage.input_tokens"] == 30
    assert a["gen_ai.usage.output_tokens"] == 4
    assert a["gen_ai.response.finish_reasons"] == ("stop",)


def test_usage_left_out_on_errors_and_error_type_set(instrument, client, otel, fake):
    instrument()
    fake.enqueue(Reply.error(500))
    with pytest.raises(openai.InternalServerError):
        chat(client)
    (span,) = otel.model_spans()
    assert "gen_ai.usage.input_tokens" not in span.attributes
    assert "gen_ai.usage.output_tokens" not in span.attributes
    assert span.attributes["error.type"] == "InternalServerError"
    assert span.status.status_code == StatusCode.ERROR


def test_embeddings_have_no_output_tokens(instrument, client, otel):
    instrument()
    client.embeddings.create(model="text-embedding-3-small", input="x", dimensions=64, encoding_format="float")
    (span,) = otel.model_spans()
    a = span.attributes
    assert span.name == "embeddings text-embedding-3-small"
    assert "gen_ai.usage.input_tokens" in a
    assert "gen_ai.usage.output_tokens" not in a
    assert a["gen_ai.embeddings.dimension.count"] == 64
    assert a["gen_ai.request.encoding_formats"] == ("float",)


@requires_responses
def test_responses_finish_reason_in_spec_values(instrument, client, otel):
    instrument()
    client.responses.create(model=MODEL, input="hi")
    assert otel.model_spans()[0].attributes["gen_ai.response.finish_reasons"] == ("stop",)


def test_raw_response_stream_has_response_model_and_id(instrument, client, otel, fake):
    instrument()
    fake.enqueue(Reply(model="gpt-4o-mini-2024-07-18"))
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MSGS, stream=True)
    ids = {chunk.id for chunk in raw.parse()}
    a = otel.model_spans()[0].attributes
    assert a["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert a["gen_ai.response.id"] in ids


def test_no_content_by_default(instrument, client, otel):
    instrument()
    chat(client)
    a = otel.model_spans()[0].attributes
    assert not {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.definitions"} & set(a)


def test_content_in_parts_format(instrument, client, otel, fake):
    instrument(capture=True)
    fake.enqueue(Reply(text="hello"))
    tools = [{"type": "function", "function": {"name": "search", "description": "d", "parameters": {}}}]
    chat(client, tools=tools)
    span = otel.model_spans()[0]
    assert parsed(span, "gen_ai.input.messages") == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
    assert parsed(span, "gen_ai.output.messages") == [
        {"role": "assistant", "parts": [{"type": "text", "content": "hello"}], "finish_reason": "stop"}]
    assert parsed(span, "gen_ai.tool.definitions") == [
        {"type": "function", "name": "search", "description": "d", "parameters": {}}]


@requires_responses
def test_responses_system_instructions(instrument, client, otel):
    instrument(capture=True)
    client.responses.create(model=MODEL, input="hi", instructions="be brief")
    span = otel.model_spans()[0]
    assert parsed(span, "gen_ai.system_instructions") == [{"type": "text", "content": "be brief"}]
    assert parsed(span, "gen_ai.input.messages") == [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]


def test_stream_with_two_choices_keeps_them_apart(instrument, client, otel, fake):
    instrument(capture=True)
    fake.enqueue(Reply(text="one two three"))
    list(chat(client, n=2, stream=True))
    out = parsed(otel.model_spans()[0], "gen_ai.output.messages")
    assert len(out) == 2
    assert [m["parts"][0]["content"] for m in out] == ["one two three", "one two three"]


def test_streamed_tool_calls_are_rebuilt(instrument, client, otel, fake):
    instrument(capture=True)
    fake.enqueue(Reply(tool_calls=[{"name": "search", "arguments": {"q": "cats"}}]))
    list(chat(client, stream=True))
    (message,) = parsed(otel.model_spans()[0], "gen_ai.output.messages")
    (part,) = [p for p in message["parts"] if p["type"] == "tool_call"]
    assert part["name"] == "search"
    assert part["arguments"] == {"q": "cats"}
    assert message["finish_reason"] == "tool_calls"


def test_metrics_duration_and_token_usage(instrument, client, otel, fake):
    instrument()
    fake.enqueue(Reply(input_tokens=30, output_tokens=4))
    chat(client)
    (duration,) = otel.points("gen_ai.client.operation.duration")
    assert tuple(duration.explicit_bounds) == DURATION_BUCKETS
    assert duration.attributes["gen_ai.operation.name"] == "chat"
    assert duration.attributes["gen_ai.request.model"] == MODEL
    assert duration.attributes["server.address"] == "127.0.0.1"
    tokens = {p.attributes["gen_ai.token.type"]: p for p in otel.points("gen_ai.client.token.usage")}
    assert tokens["input"].sum == 30 and tokens["output"].sum == 4
    assert tuple(tokens["input"].explicit_bounds) == TOKEN_BUCKETS


def test_metrics_on_error_have_error_type_and_no_tokens(instrument, client, otel, fake):
    instrument()
    fake.enqueue(Reply.error(500))
    with pytest.raises(openai.InternalServerError):
        chat(client)
    (duration,) = otel.points("gen_ai.client.operation.duration")
    assert duration.attributes["error.type"] == "InternalServerError"
    assert otel.points("gen_ai.client.token.usage") == []


def test_model_span_nests_under_the_run(instrument, client, otel, fake):
    from prometheus_client import CollectorRegistry

    import agentvigil

    mon = agentvigil.Monitor("nest", registry=CollectorRegistry(), tracer_provider=otel.tracer_provider,
                             heartbeat=False)
    instrument()
    with mon.run(task_id="t"):
        chat(client)
    spans = otel.spans.get_finished_spans()
    agent = next(s for s in spans if s.attributes.get("gen_ai.operation.name") == "invoke_agent")
    model = otel.model_spans()[0]
    assert model.parent.span_id == agent.context.span_id
    assert agent.attributes["gen_ai.provider.name"] == "openai"   # the run's model provider
    mon.close()


def test_model_span_names_its_agent(instrument, client, otel, monitor):
    instrument()
    chat(client)
    assert otel.model_spans()[0].attributes["gen_ai.agent.name"] == monitor.agent


def test_top_level_instrument_honours_the_providers(otel, monitor, client):
    import agentvigil

    try:
        assert "openai" in agentvigil.instrument(only=["openai"], tracer_provider=otel.tracer_provider,
                                                 meter_provider=otel.meter_provider, monitor=monitor)
        chat(client)
        assert len(otel.model_spans()) == 1
        assert otel.points("gen_ai.client.operation.duration")
    finally:
        agentvigil.uninstrument()


def test_default_mode_emits_the_older_events_without_content(instrument, client, otel, logs):
    instrument(logger_provider=logs.provider)
    chat(client)
    records = [r.log_record for r in logs.get_finished_logs()]
    assert [r.event_name for r in records] == ["gen_ai.system.message", "gen_ai.user.message", "gen_ai.choice"]
    assert records[2].body == {"index": 0, "finish_reason": "stop", "message": {"role": "assistant"}}
    span = otel.model_spans()[0]
    assert all(r.span_id == span.context.span_id for r in records)


def test_default_mode_events_carry_content_when_captured(instrument, client, logs):
    instrument(capture=True, logger_provider=logs.provider)
    chat(client)
    records = [r.log_record for r in logs.get_finished_logs()]
    assert records[1].body == {"content": "hi"}
    assert records[2].body["message"]["content"] == "Hello from the fake provider."


def test_latest_mode_emits_no_older_events(instrument, client, logs):
    instrument(latest=True, logger_provider=logs.provider)
    chat(client)
    assert logs.get_finished_logs() == ()


def test_metrics_without_any_tracer(otel, monitor, client, fake):
    """No tracer anywhere (the global one unset): no span is built, the GenAI metrics still flow."""
    inst = OpenAIInstrumentor()
    inst.instrument(meter_provider=otel.meter_provider, monitor=monitor)
    try:
        fake.enqueue(Reply(input_tokens=9, output_tokens=1))
        chat(client)
    finally:
        inst.uninstrument()
    assert otel.spans.get_finished_spans() == ()
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in otel.points("gen_ai.client.token.usage")}
    assert tokens == {"input": 9, "output": 1}
