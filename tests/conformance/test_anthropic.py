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
def instrument(instrumentor):
    return instrumentor(AnthropicInstrumentor)


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


# -- the older events (default stability mode, a LoggerProvider given) ----------------------------------------

def _records(logs):
    return [r.log_record for r in logs.get_finished_logs()]


def test_default_mode_emits_the_older_events_without_content(instrument, client, otel, fake, logs):
    instrument(logger_provider=logs.provider)
    fake.enqueue(Reply(text="hello"))
    client.messages.create(model=MODEL, max_tokens=10, messages=MSGS, system="be brief")
    records = _records(logs)
    assert [r.event_name for r in records] == ["gen_ai.system.message", "gen_ai.user.message", "gen_ai.choice"]
    assert records[0].body is None and records[1].body is None          # no content unless captured
    assert records[2].body == {"index": 0, "finish_reason": "stop", "message": {"role": "assistant"}}
    assert all(r.attributes["gen_ai.system"] == "anthropic" for r in records)
    (span,) = otel.model_spans()
    assert all(r.span_id == span.context.span_id and r.trace_id == span.context.trace_id for r in records)


def test_default_mode_events_carry_content_when_captured(instrument, client, fake, logs):
    instrument(capture=True, logger_provider=logs.provider)
    fake.enqueue(Reply(text="hello"))
    client.messages.create(model=MODEL, max_tokens=10, messages=MSGS, system="be brief")
    records = _records(logs)
    assert records[0].body == {"content": "be brief"}
    assert records[1].body == {"content": "hi"}
    assert records[2].body == {"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": "hello"}}


def test_choice_event_carries_tool_call_ids_and_names_always_arguments_when_captured(instrument, client, fake,
                                                                                     logs):
    instrument(logger_provider=logs.provider)
    fake.enqueue(Reply(tool_calls=[{"name": "search", "arguments": {"q": "x"}}]))
    client.messages.create(model=MODEL, max_tokens=10, messages=MSGS)
    choice = _records(logs)[-1].body
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["id"] and call["type"] == "function" and call["function"] == {"name": "search"}


def test_streamed_tool_use_in_the_choice_event(instrument, client, fake, logs):
    instrument(capture=True, logger_provider=logs.provider)
    fake.enqueue(Reply(text="", tool_calls=[{"name": "search", "arguments": {"q": "cats"}}]))
    list(client.messages.create(model=MODEL, max_tokens=10, messages=MSGS, stream=True))
    records = _records(logs)
    assert [r.event_name for r in records] == ["gen_ai.user.message", "gen_ai.choice"]
    (call,) = records[-1].body["message"]["tool_calls"]
    assert call["id"] and call["function"] == {"name": "search", "arguments": {"q": "cats"}}


def test_streamed_tool_use_without_capture_keeps_id_and_name(instrument, client, fake, logs):
    instrument(logger_provider=logs.provider)
    fake.enqueue(Reply(text="", tool_calls=[{"name": "search", "arguments": {"q": "cats"}}]))
    list(client.messages.create(model=MODEL, max_tokens=10, messages=MSGS, stream=True))
    (call,) = _records(logs)[-1].body["message"]["tool_calls"]
    assert call["id"] and call["function"] == {"name": "search"}


def test_stream_helper_emits_the_events(instrument, client, fake, logs):
    instrument(capture=True, logger_provider=logs.provider)
    fake.enqueue(Reply(text="hello"))
    with client.messages.stream(model=MODEL, max_tokens=10, messages=MSGS) as stream:
        stream.get_final_message()
    records = _records(logs)
    assert [r.event_name for r in records] == ["gen_ai.user.message", "gen_ai.choice"]
    assert records[-1].body["message"]["content"] == "hello"


def test_tool_use_and_tool_result_turns_become_assistant_and_tool_events(instrument, client, logs):
    instrument(capture=True, logger_provider=logs.provider)
    messages = [
        {"role": "user", "content": "find cats"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "tu_1", "name": "search", "input": {"q": "c"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": "3 cats"}]},
    ]
    client.messages.create(model=MODEL, max_tokens=10, messages=messages)
    records = _records(logs)
    assert [r.event_name for r in records] == ["gen_ai.user.message", "gen_ai.assistant.message",
                                               "gen_ai.tool.message", "gen_ai.choice"]
    assert records[1].body == {"tool_calls": [{"id": "tu_1", "type": "function",
                                               "function": {"name": "search", "arguments": {"q": "c"}}}]}
    assert records[2].body == {"content": "3 cats", "id": "tu_1"}


def test_latest_mode_emits_no_older_events(instrument, client, logs):
    instrument(latest=True, logger_provider=logs.provider)
    client.messages.create(model=MODEL, max_tokens=10, messages=MSGS)
    assert logs.get_finished_logs() == ()
