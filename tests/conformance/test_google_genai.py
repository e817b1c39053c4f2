"""GenAI semconv for the Google GenAI SDK (Gemini API): operation ``generate_content``, provider ``gcp.gemini``."""

from __future__ import annotations

import asyncio
import json

import pytest

genai = pytest.importorskip("google.genai")

from google.genai import errors, types  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402

from agentvigil.instrumentation.google_genai import GoogleGenAIInstrumentor  # noqa: E402
from agentvigil.testing import Reply  # noqa: E402

MODEL = "gemini-2.5-flash"


@pytest.fixture
def instrument(instrumentor):
    return instrumentor(GoogleGenAIInstrumentor)


@pytest.fixture
def client(fake):
    return genai.Client(api_key="k", http_options=types.HttpOptions(base_url=fake.url))


def spans(otel):
    return [s for s in otel.spans.get_finished_spans()
            if s.attributes.get("gen_ai.operation.name") in ("generate_content", "embeddings")]


def attr_json(span, key):
    return json.loads(span.attributes[key])


def test_client_span_named_operation_model_with_server_and_provider(instrument, client, otel, fake):
    instrument()
    client.models.generate_content(model=MODEL, contents="hi")
    (span,) = spans(otel)
    a = span.attributes
    assert span.kind == SpanKind.CLIENT and span.name == f"generate_content {MODEL}"
    assert a["gen_ai.operation.name"] == "generate_content"
    assert a["gen_ai.provider.name"] == "gcp.gemini" and a["gen_ai.system"] == "gcp.gemini"
    assert a["server.address"] == "127.0.0.1" and a["server.port"] == fake.port


def test_latest_mode_writes_provider_name_only(instrument, client, otel):
    instrument(latest=True)
    client.models.generate_content(model=MODEL, contents="hi")
    a = spans(otel)[0].attributes
    assert a["gen_ai.provider.name"] == "gcp.gemini" and "gen_ai.system" not in a


def test_request_attributes_from_the_config(instrument, client, otel):
    instrument()
    config = types.GenerateContentConfig(max_output_tokens=64, temperature=0.5, top_p=0.9, top_k=40, seed=7,
                                         stop_sequences=["END"], candidate_count=2,
                                         response_mime_type="application/json")
    client.models.generate_content(model=MODEL, contents="hi", config=config)
    a = spans(otel)[0].attributes
    assert a["gen_ai.request.max_tokens"] == 64 and a["gen_ai.request.temperature"] == 0.5
    assert a["gen_ai.request.top_p"] == 0.9 and a["gen_ai.request.top_k"] == 40 and a["gen_ai.request.seed"] == 7
    assert a["gen_ai.request.stop_sequences"] == ("END",) and a["gen_ai.request.choice.count"] == 2
    assert a["gen_ai.output.type"] == "json"


@pytest.mark.parametrize("gemini, spec", [("MAX_TOKENS", "length"), ("SAFETY", "content_filter"),
                                          ("RECITATION", "content_filter"), ("OTHER", "other")])
def test_finish_reasons_in_spec_values(instrument, client, otel, fake, gemini, spec):
    instrument()
    fake.enqueue(Reply(finish_reason=gemini))
    client.models.generate_content(model=MODEL, contents="hi")
    assert spans(otel)[0].attributes["gen_ai.response.finish_reasons"] == (spec,)


def test_no_content_by_default(instrument, client, otel):
    instrument()
    client.models.generate_content(model=MODEL, contents="hi", config={"system_instruction": "be brief"})
    a = spans(otel)[0].attributes
    assert not {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions"} & set(a)


def test_content_in_parts_format_with_tool_turns(instrument, client, otel, fake):
    instrument(capture=True)
    fake.enqueue(Reply(text="3 cats found"))
    contents = [
        types.Content(role="user", parts=[types.Part.from_text(text="find cats")]),
        types.Content(role="model", parts=[types.Part.from_function_call(name="search", args={"q": "cats"})]),
        types.Content(role="user", parts=[types.Part.from_function_response(name="search",
                                                                            response={"n": 3})]),
    ]
    client.models.generate_content(model=MODEL, contents=contents)
    span = spans(otel)[0]
    assert attr_json(span, "gen_ai.input.messages") == [
        {"role": "user", "parts": [{"type": "text", "content": "find cats"}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "id": None, "name": "search",
                                         "arguments": {"q": "cats"}}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": None, "response": {"n": 3}}]},
    ]
    assert attr_json(span, "gen_ai.output.messages") == [
        {"role": "assistant", "parts": [{"type": "text", "content": "3 cats found"}], "finish_reason": "stop"}]


def test_streamed_text_is_rebuilt_into_one_part(instrument, client, otel, fake):
    instrument(capture=True)
    fake.enqueue(Reply(text="one two three"))
    list(client.models.generate_content_stream(model=MODEL, contents="hi"))
    (message,) = attr_json(spans(otel)[0], "gen_ai.output.messages")
    assert message == {"role": "assistant", "parts": [{"type": "text", "content": "one two three"}],
                       "finish_reason": "stop"}


def test_metrics_duration_and_token_usage(instrument, client, otel, fake):
    instrument()
    fake.enqueue(Reply(input_tokens=30, output_tokens=4))
    client.models.generate_content(model=MODEL, contents="hi")
    (duration,) = otel.points("gen_ai.client.operation.duration")
    assert duration.attributes["gen_ai.operation.name"] == "generate_content"
    assert duration.attributes["gen_ai.provider.name"] == "gcp.gemini"
    assert duration.attributes["gen_ai.request.model"] == MODEL
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in otel.points("gen_ai.client.token.usage")}
    assert tokens == {"input": 30, "output": 4}


def test_metrics_on_error_have_error_type_and_no_tokens(instrument, client, otel, fake):
    instrument()
    fake.enqueue(Reply.rate_limited())
    with pytest.raises(errors.ClientError):
        client.models.generate_content(model=MODEL, contents="hi")
    (duration,) = otel.points("gen_ai.client.operation.duration")
    assert duration.attributes["error.type"] == "ClientError"
    assert otel.points("gen_ai.client.token.usage") == []
    assert spans(otel)[0].attributes["error.type"] == "ClientError"


def test_async_stream_span_has_usage(instrument, client, otel, fake):
    instrument()
    fake.enqueue(Reply(input_tokens=30, output_tokens=4))

    async def main():
        async for _ in await client.aio.models.generate_content_stream(model=MODEL, contents="hi"):
            pass

    asyncio.run(main())
    a = spans(otel)[0].attributes
    assert a["gen_ai.usage.input_tokens"] == 30 and a["gen_ai.usage.output_tokens"] == 4
    assert a["gen_ai.request.stream"] is True


# -- the older events (default stability mode, a LoggerProvider given) ----------------------------------------

def _records(logs):
    return [r.log_record for r in logs.get_finished_logs()]


def test_default_mode_emits_the_older_events_without_content(instrument, client, otel, fake, logs):
    instrument(logger_provider=logs.provider)
    fake.enqueue(Reply(text="hello"))
    client.models.generate_content(model=MODEL, contents="hi", config={"system_instruction": "be brief"})
    records = _records(logs)
    assert [r.event_name for r in records] == ["gen_ai.system.message", "gen_ai.user.message", "gen_ai.choice"]
    assert records[0].body is None and records[1].body is None          # no content unless captured
    assert records[2].body == {"index": 0, "finish_reason": "stop", "message": {"role": "assistant"}}
    assert all(r.attributes["gen_ai.system"] == "gcp.gemini" for r in records)
    (span,) = spans(otel)
    assert all(r.span_id == span.context.span_id for r in records)


def test_default_mode_events_carry_content_and_tool_turns_when_captured(instrument, client, fake, logs):
    instrument(capture=True, logger_provider=logs.provider)
    fake.enqueue(Reply(text="3 cats"))
    contents = [
        {"role": "user", "parts": [{"text": "find cats"}]},
        {"role": "model", "parts": [{"function_call": {"id": "c1", "name": "search", "args": {"q": "c"}}}]},
        {"role": "user", "parts": [{"function_response": {"id": "c1", "name": "search", "response": {"n": 3}}}]},
    ]
    client.models.generate_content(model=MODEL, contents=contents)
    records = _records(logs)
    assert [r.event_name for r in records] == ["gen_ai.user.message", "gen_ai.assistant.message",
                                               "gen_ai.tool.message", "gen_ai.choice"]
    assert records[0].body == {"content": "find cats"}
    assert records[1].body == {"tool_calls": [{"id": "c1", "type": "function",
                                               "function": {"name": "search", "arguments": {"q": "c"}}}]}
    assert records[2].body == {"content": {"n": 3}, "id": "c1"}
    assert records[3].body == {"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": "3 cats"}}


def test_streamed_function_call_in_the_choice_event_without_capture(instrument, client, fake, logs):
    instrument(logger_provider=logs.provider)
    fake.enqueue(Reply(text="", tool_calls=[{"name": "search", "arguments": {"q": "cats"}}]))
    list(client.models.generate_content_stream(model=MODEL, contents="hi"))
    choice = _records(logs)[-1].body
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["id"] and call["function"] == {"name": "search"}   # id and name always, arguments only captured


def test_latest_mode_emits_no_older_events(instrument, client, logs):
    instrument(latest=True, logger_provider=logs.provider)
    client.models.generate_content(model=MODEL, contents="hi")
    assert logs.get_finished_logs() == ()
