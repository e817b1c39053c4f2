"""A real ``boto3`` ``bedrock-runtime`` client against the local fake provider, with BedrockInstrumentor on."""

from __future__ import annotations

import json
import os

import pytest

boto3 = pytest.importorskip("boto3")
botocore = pytest.importorskip("botocore")
wrapt = pytest.importorskip("wrapt")

from botocore.client import BaseClient  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError, EventStreamError  # noqa: E402
from botocore.session import get_session  # noqa: E402

import agentvigil  # noqa: E402
from agentvigil.instrumentation.bedrock import BedrockInstrumentor  # noqa: E402
from agentvigil.instrumentation.bedrock import patch as br_patch  # noqa: E402
from agentvigil.testing import Reply  # noqa: E402
from agentvigil.testing.wire_bedrock import encode_event  # noqa: E402

from .conftest import instrument_fixture, internal_errors  # noqa: E402

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
MSGS = [{"role": "user", "content": [{"text": "secret prompt text"}]}]
SYSTEM = [{"text": "be brief"}]
L = {"agent": "itest", "provider": "aws.bedrock", "model": MODEL}
# Reply numbers are provider neutral (input INCLUDES cache); the fake sends Bedrock's exclusive inputTokens=100
CACHED = dict(input_tokens=1200, cache_read_tokens=1000, cache_write_tokens=100, output_tokens=80)
# claude-3-5-sonnet on Bedrock: $3/M input, $0.30/M cache read, $3.75/M cache write, $15/M output
CACHED_COST = (100 * 3 + 1000 * 0.3 + 100 * 3.75 + 80 * 15) / 1e6


def _converse_reports_cache() -> bool:
    """botocore < 1.37.24 has no cache fields in the Converse ``TokenUsage`` shape and drops them when parsing."""
    model = get_session().get_service_model("bedrock-runtime")
    return "cacheReadInputTokens" in model.shape_for("TokenUsage").members


CONVERSE_CACHE = _converse_reports_cache()
ANTHROPIC_BODY = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64, "temperature": 0.5,
                  "system": "be brief", "messages": [{"role": "user", "content": "secret prompt text"}]}


@pytest.fixture(autouse=True)
def _no_aws(monkeypatch):
    """Nothing may reach AWS: no instance-metadata credential lookups, no shared config."""
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


instrument = instrument_fixture(BedrockInstrumentor)


def _client(fake, service="bedrock-runtime"):
    return boto3.client(service, endpoint_url=fake.url, region_name="us-east-1", aws_access_key_id="x",
                        aws_secret_access_key="x", config=Config(retries={"total_max_attempts": 1}))


@pytest.fixture
def client(fake):
    return _client(fake)


def _assert_cached_usage(sample, calls=1, cache=True):
    """``cache=False``: a botocore that drops the Converse cache fields; only the uncached 100 are seen."""
    assert sample("agent_llm_calls_total", status="ok", **L) == calls
    if not cache:
        assert sample("agent_tokens_total", type="input", **L) == 100 * calls
        assert sample("agent_tokens_total", type="output", **L) == 80 * calls
        return
    # wire: inputTokens=100 (exclusive), cacheRead=1000, cacheWrite=100 -> whole prompt 1200
    assert sample("agent_tokens_total", type="input", **L) == 1200 * calls
    assert sample("agent_tokens_total", type="cache_read", **L) == 1000 * calls
    assert sample("agent_tokens_total", type="cache_write", **L) == 100 * calls
    assert sample("agent_tokens_total", type="output", **L) == 80 * calls
    assert sample("agent_cache_hit_ratio", **L) == pytest.approx(1000 / 1200)
    assert sample("agent_cost_usd_total", **L) == pytest.approx(calls * CACHED_COST)


def test_converse(instrument, client, fake, monitor, sample, llm_spans):
    instrument()
    fake.enqueue(Reply(input_tokens=1200, output_tokens=80))
    with monitor.run(task_id="t-1"):
        out = client.converse(modelId=MODEL, messages=MSGS, system=SYSTEM,
                              inferenceConfig={"maxTokens": 256, "temperature": 0.2})
    assert out["output"]["message"]["content"][0]["text"] == "Hello from the fake provider."  # untouched
    cost = (1200 * 3 + 80 * 15) / 1e6
    assert sample("agent_llm_calls_total", status="ok", **L) == 1
    assert sample("agent_tokens_total", type="input", **L) == 1200
    assert sample("agent_tokens_total", type="output", **L) == 80
    assert sample("agent_cost_usd_total", **L) == pytest.approx(cost)
    assert sample("agent_runs_total", agent="itest", status="ok") == 1
    assert sample("agent_run_cost_usd_sum", agent="itest") == pytest.approx(cost)
    (span,) = llm_spans()
    a = span.attributes
    assert span.name == f"chat {MODEL}"
    assert a["gen_ai.provider.name"] == "aws.bedrock"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == MODEL
    assert a["gen_ai.usage.input_tokens"] == 1200
    assert a["gen_ai.usage.output_tokens"] == 80
    assert a["gen_ai.request.max_tokens"] == 256
    assert a["gen_ai.request.temperature"] == 0.2
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["server.address"] == "127.0.0.1" and a["server.port"] == fake.port
    assert a["agentvigil.cost_usd"] == pytest.approx(cost)
    assert "secret prompt text" not in repr(dict(a)) and "be brief" not in repr(dict(a))


@pytest.mark.skipif(not CONVERSE_CACHE, reason="this botocore drops the Converse cache fields")
def test_converse_cached_tokens(instrument, client, fake, sample, llm_spans):
    instrument()
    fake.enqueue(Reply(**CACHED))
    out = client.converse(modelId=MODEL, messages=MSGS)
    assert out["usage"]["inputTokens"] == 100   # Bedrock's own, exclusive number reaches the caller
    _assert_cached_usage(sample)
    (span,) = llm_spans()
    a = span.attributes
    assert a["gen_ai.usage.input_tokens"] == 1200
    assert a["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert a["gen_ai.usage.cache_creation.input_tokens"] == 100
    assert a["agentvigil.cost_usd"] == pytest.approx(CACHED_COST)


@pytest.mark.skipif(CONVERSE_CACHE, reason="this botocore parses the Converse cache fields")
def test_converse_cache_fields_dropped_by_old_botocore(instrument, client, fake, sample):
    """The documented limit of botocore < 1.37.24: only the uncached part of the prompt is visible."""
    instrument()
    fake.enqueue(Reply(**CACHED))
    assert "cacheReadInputTokens" not in client.converse(modelId=MODEL, messages=MSGS)["usage"]
    _assert_cached_usage(sample, cache=False)


def test_content_capture_opt_in(instrument, client, fake, llm_spans):
    instrument(capture_content=True)
    fake.enqueue(Reply(tool_calls=[{"name": "search", "arguments": {"q": "cats"}}]))
    tools = {"tools": [{"toolSpec": {"name": "search", "description": "web",
                                     "inputSchema": {"json": {"type": "object"}}}}]}
    client.converse(modelId=MODEL, messages=MSGS, system=SYSTEM, toolConfig=tools)
    (span,) = llm_spans()
    a = span.attributes
    assert json.loads(a["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "secret prompt text"}]}]
    assert json.loads(a["gen_ai.system_instructions"]) == [{"type": "text", "content": "be brief"}]
    assert json.loads(a["gen_ai.tool.definitions"])[0]["name"] == "search"
    (out,) = json.loads(a["gen_ai.output.messages"])
    assert out["finish_reason"] == "tool_calls"
    call = out["parts"][-1]
    assert call["id"].startswith("tooluse_fake_")
    assert {k: call[k] for k in ("type", "name", "arguments")} == {"type": "tool_call", "name": "search",
                                                                   "arguments": {"q": "cats"}}


def test_converse_stream_full_read(instrument, client, fake, monitor, sample, llm_spans):
    instrument()
    fake.enqueue(Reply(**CACHED))
    with monitor.run():
        response = client.converse_stream(modelId=MODEL, messages=MSGS)
        assert sample("agent_llm_calls_total", status="ok", **L) == 0   # not finished before the stream ends
        events = list(response["stream"])
    assert list(events[0]) == ["messageStart"] and list(events[-1]) == ["metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == "Hello from the fake provider."
    _assert_cached_usage(sample, cache=CONVERSE_CACHE)
    (span,) = llm_spans()
    assert span.attributes["gen_ai.request.stream"] is True
    assert span.attributes["gen_ai.usage.input_tokens"] == (1200 if CONVERSE_CACHE else 100)
    assert span.attributes["gen_ai.response.finish_reasons"] == ("stop",)


def test_converse_stream_capture_rebuilds_the_output(instrument, client, fake, llm_spans):
    instrument(capture_content=True)
    fake.enqueue(Reply(tool_calls=[{"name": "search", "arguments": {"q": "cats"}}]))
    for _ in client.converse_stream(modelId=MODEL, messages=MSGS)["stream"]:
        pass
    (span,) = llm_spans()
    (out,) = json.loads(span.attributes["gen_ai.output.messages"])
    text, call = out["parts"]
    assert text == {"type": "text", "content": "Hello from the fake provider."}
    assert call["id"].startswith("tooluse_fake_") and call["name"] == "search" and call["arguments"] == {"q": "cats"}


def test_converse_stream_closed_early(instrument, client, fake, sample, llm_spans):
    instrument()
    fake.enqueue(Reply(**CACHED), Reply(**CACHED))
    stream = client.converse_stream(modelId=MODEL, messages=MSGS)["stream"]
    for event in stream:
        if "contentBlockDelta" in event:
            break
    stream.close()
    assert sample("agent_llm_calls_total", status="ok", **L) == 1   # ended, usage unknown (metadata never read)
    assert sample("agent_tokens_total", type="input", **L) == 0
    (span,) = llm_spans()
    assert span.attributes["agentvigil.usage.missing"] is True
    assert "gen_ai.usage.input_tokens" not in span.attributes
    # abandoning the iteration (generator closed) ends the call too, without close()
    iterator = iter(client.converse_stream(modelId=MODEL, messages=MSGS)["stream"])
    next(iterator)
    iterator.close()
    assert sample("agent_llm_calls_total", status="ok", **L) == 2
    fake.enqueue(Reply(**CACHED))
    for _ in client.converse_stream(modelId=MODEL, messages=MSGS)["stream"]:
        break   # the loop's iterator is dropped here (CPython frees it at once, closing the generator)
    assert sample("agent_llm_calls_total", status="ok", **L) == 3


def test_converse_stream_error_inside_the_stream(instrument, client, fake, sample, llm_spans):
    instrument()
    fake.enqueue(Reply(fail_after_chunks=2))
    seen = []
    with pytest.raises(EventStreamError) as info:
        for event in client.converse_stream(modelId=MODEL, messages=MSGS)["stream"]:
            seen.append(event)
    assert info.value.response["Error"]["Code"] == "modelStreamErrorException"
    assert len(seen) == 3   # messageStart + 2 deltas reached the caller before the error
    assert sample("agent_llm_errors_total", kind="server_error", **L) == 1
    assert sample("agent_llm_calls_total", status="error", **L) == 1
    (span,) = llm_spans()
    assert span.attributes["error.type"] == "EventStreamError"


def test_invoke_model_anthropic_body(instrument, client, fake, sample, llm_spans):
    instrument()
    fake.enqueue(Reply(**CACHED, model="claude-3-5-sonnet-20240620"))
    response = client.invoke_model(modelId=MODEL, body=json.dumps(ANTHROPIC_BODY))
    body = json.loads(response["body"].read())   # the caller still reads the whole body
    assert body["usage"]["input_tokens"] == 100 and body["content"][0]["text"] == "Hello from the fake provider."
    assert response["body"].read() == b""
    _assert_cached_usage(sample)
    (span,) = llm_spans()
    a = span.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.response.model"] == "claude-3-5-sonnet-20240620"
    assert a["gen_ai.response.id"].startswith("msg_fake_")
    assert a["gen_ai.request.max_tokens"] == 64 and a["gen_ai.request.temperature"] == 0.5
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert "secret prompt text" not in repr(dict(a))


def test_invoke_model_body_iterates_and_capture(instrument, client, fake, llm_spans):
    instrument(capture_content=True)
    response = client.invoke_model(modelId=MODEL, body=json.dumps(ANTHROPIC_BODY).encode())
    assert json.loads(b"".join(response["body"].iter_chunks(7)))["type"] == "message"
    (span,) = llm_spans()
    assert "secret prompt text" in span.attributes["gen_ai.input.messages"]
    assert "be brief" in span.attributes["gen_ai.system_instructions"]
    assert "Hello from the fake provider." in span.attributes["gen_ai.output.messages"]


@pytest.mark.parametrize("model, body, tokens", [
    ("amazon.nova-lite-v1:0", {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}, (1200, 80, 1000, 100)),
    ("amazon.titan-text-express-v1", {"inputText": "hi"}, (1200, 80, 0, 0)),
    ("mistral.mistral-7b-instruct-v0:2", {"prompt": "hi"}, (1200, 80, 1000, 100)),   # usage from headers
])
def test_invoke_model_other_bodies(instrument, client, fake, sample, model, body, tokens):
    instrument()
    # titan has no cache fields: give it none
    reply = Reply(**CACHED) if tokens[2] else Reply(input_tokens=1200, output_tokens=80)
    fake.enqueue(reply)
    client.invoke_model(modelId=model, body=json.dumps(body))["body"].read()
    labels = {**L, "model": model}
    assert sample("agent_llm_calls_total", status="ok", **labels) == 1
    assert sample("agent_tokens_total", type="input", **labels) == tokens[0]
    assert sample("agent_tokens_total", type="output", **labels) == tokens[1]
    assert sample("agent_tokens_total", type="cache_read", **labels) == tokens[2]
    assert sample("agent_tokens_total", type="cache_write", **labels) == tokens[3]


def test_invoke_model_without_any_usage_is_counted_unknown(instrument, client, fake, sample, spans):
    instrument()
    fake.enqueue(Reply(stream_usage=False))
    client.invoke_model(modelId="mistral.mistral-7b-instruct-v0:2", body=json.dumps({"prompt": "hi"}))
    labels = {**L, "model": "mistral.mistral-7b-instruct-v0:2"}
    assert sample("agent_llm_calls_total", status="ok", **labels) == 1
    assert sample("agent_tokens_total", type="input", **labels) == 0
    (span,) = spans.get_finished_spans()
    assert span.attributes["gen_ai.operation.name"] == "text_completion"
    assert span.attributes["agentvigil.usage.missing"] is True


def test_invoke_model_with_response_stream(instrument, client, fake, sample, llm_spans):
    instrument()
    fake.enqueue(Reply(**CACHED))
    chunks = [json.loads(e["chunk"]["bytes"]) for e in
              client.invoke_model_with_response_stream(modelId=MODEL, body=json.dumps(ANTHROPIC_BODY))["body"]]
    assert chunks[0]["type"] == "message_start" and chunks[-1]["type"] == "message_stop"
    _assert_cached_usage(sample)
    (span,) = llm_spans()
    assert span.attributes["gen_ai.request.stream"] is True
    assert span.attributes["gen_ai.response.id"].startswith("msg_fake_")


@pytest.mark.parametrize("reply, code, kind", [
    (Reply.rate_limited(), "ThrottlingException", "rate_limit"),
    (Reply.error(500), "InternalServerException", "server_error"),
    (Reply.error(503), "ServiceUnavailableException", "server_error"),
    (Reply.error(408), "ModelTimeoutException", "timeout"),
    (Reply.error(400, "Malformed input request"), "ValidationException", "invalid_request"),
    (Reply.error(400, "Input is too long for requested model."), "ValidationException", "context_length"),
    (Reply.error(403), "AccessDeniedException", "auth"),
])
def test_errors_are_classified(instrument, client, fake, sample, llm_spans, reply, code, kind):
    instrument()
    fake.enqueue(reply)
    with pytest.raises(ClientError) as info:
        client.converse(modelId=MODEL, messages=MSGS)
    assert info.value.response["Error"]["Code"] == code   # the caller's exception, unchanged
    assert sample("agent_llm_errors_total", kind=kind, **L) == 1
    assert sample("agent_llm_calls_total", status="error", **L) == 1
    (span,) = llm_spans()
    assert span.attributes["error.type"] == type(info.value).__qualname__   # the modelled class, where botocore has it
    assert "gen_ai.usage.input_tokens" not in span.attributes


def test_botocore_retries_are_one_call(instrument, fake, sample):
    instrument()
    client = boto3.client("bedrock-runtime", endpoint_url=fake.url, region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x",
                          config=Config(retries={"total_max_attempts": 2, "mode": "standard"}))
    fake.enqueue(Reply.error(500))
    client.converse(modelId=MODEL, messages=MSGS)
    assert len(fake.requests) == 2
    assert sample("agent_llm_calls_total", status="ok", **L) == 1
    assert sample("agent_llm_calls_total", status="error", **L) == 0


def test_failed_body_read_is_the_calls_failure(instrument, client, fake, monkeypatch, sample):
    from botocore.response import StreamingBody

    instrument()

    def broken(self, amt=None):
        raise botocore.exceptions.ReadTimeoutError(endpoint_url=fake.url)

    original = StreamingBody.read
    monkeypatch.setattr(StreamingBody, "read", broken)
    response = client.invoke_model(modelId=MODEL, body=json.dumps(ANTHROPIC_BODY))   # no error here ...
    monkeypatch.setattr(StreamingBody, "read", original)   # a body we had not read would now read fine
    with pytest.raises(botocore.exceptions.ReadTimeoutError):   # ... but where the caller reads, as without us
        response["body"].read()
    assert sample("agent_llm_errors_total", kind="timeout", **L) == 1


def test_breaker_counts_throttling_not_validation(instrument, client, fake, registry):
    breaker = agentvigil.CircuitBreaker("bedrock", failure_threshold=1, recovery_timeout=60, registry=registry)
    instrument(breaker=breaker)
    fake.enqueue(Reply.error(400), Reply.rate_limited())
    with pytest.raises(ClientError):
        client.converse(modelId=MODEL, messages=MSGS)   # the caller's fault: the breaker stays closed
    with pytest.raises(ClientError):
        client.converse(modelId=MODEL, messages=MSGS)
    with pytest.raises(agentvigil.CircuitOpenError):
        client.converse_stream(modelId=MODEL, messages=MSGS)
    assert len(fake.requests) == 2


def test_budget_reserves_from_converse_params(instrument, client, fake, registry):
    budget = agentvigil.TokenBudget("bedrock", limit=100, registry=registry)
    instrument(budget=budget)
    with pytest.raises(agentvigil.BudgetExceeded):   # estimate: ~10 prompt tokens + maxTokens 500 > 100
        client.converse(modelId=MODEL, messages=MSGS, inferenceConfig={"maxTokens": 500})
    assert len(fake.requests) == 0
    fake.enqueue(Reply(input_tokens=12, output_tokens=5))
    client.converse(modelId=MODEL, messages=MSGS, inferenceConfig={"maxTokens": 50})
    assert budget.committed == 17 and budget.reserved == 0


def test_genai_client_metrics(instrument, client, fake):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    instrument(meter_provider=MeterProvider(metric_readers=[reader]))
    fake.enqueue(Reply(input_tokens=1200, output_tokens=80))
    client.converse(modelId=MODEL, messages=MSGS)
    points = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    points.setdefault(metric.name, []).append(point)
    usage = {p.attributes["gen_ai.token.type"]: p.sum for p in points["gen_ai.client.token.usage"]}
    assert usage == {"input": 1200, "output": 80}
    (duration,) = points["gen_ai.client.operation.duration"]
    assert duration.attributes["gen_ai.provider.name"] == "aws.bedrock"
    assert duration.count == 1


def test_other_services_untouched(instrument, fake, registry, spans):
    instrument()
    with pytest.raises(ClientError):   # the fake answers 404 to DynamoDB: the call went through, unrecorded
        _client(fake, "dynamodb").list_tables()
    with pytest.raises(ClientError):   # the Bedrock control plane is another service than the runtime
        _client(fake, "bedrock").list_foundation_models()
    assert not spans.get_finished_spans()
    calls = [s for m in registry.collect() for s in m.samples if s.name == "agent_llm_calls_total"]
    assert calls == []


def test_clients_created_before_instrument_are_seen(client, instrument, fake, sample):
    instrument()
    client.converse(modelId=MODEL, messages=MSGS)
    assert sample("agent_llm_calls_total", status="ok", **L) == 1


def test_uninstrument_restores_botocore(client, monitor, fake, sample):
    original = BaseClient.__dict__["_make_api_call"]
    inst = BedrockInstrumentor()
    inst.instrument(monitor=monitor)
    assert isinstance(BaseClient.__dict__["_make_api_call"], wrapt.FunctionWrapper)
    inst.uninstrument()
    assert BaseClient.__dict__["_make_api_call"] is original
    client.converse(modelId=MODEL, messages=MSGS)
    assert type(client.converse_stream(modelId=MODEL, messages=MSGS)["stream"]).__name__ == "EventStream"
    assert sample("agent_llm_calls_total", status="ok", **L) == 0


def test_instrument_registry(monitor, fake, sample):
    from agentvigil import instrumentation

    assert "bedrock" in instrumentation.instrument(only=["bedrock"], monitor=monitor)
    try:
        assert "bedrock" in instrumentation.instrumented()
        _client(fake).converse(modelId=MODEL, messages=MSGS)
        assert sample("agent_llm_calls_total", status="ok", **L) == 1
    finally:
        instrumentation.uninstrument()
    assert "bedrock" not in instrumentation.instrumented()


def test_our_failures_never_reach_the_caller(instrument, client, fake, monkeypatch):
    instrument()
    before = internal_errors()

    def boom(*a, **k):
        raise RuntimeError("bug in agentvigil")

    monkeypatch.setattr(br_patch, "converse_response", boom)
    monkeypatch.setattr(br_patch, "invoke_response", boom)
    monkeypatch.setattr(br_patch.ConverseStreamRecorder, "feed", boom)
    monkeypatch.setattr(br_patch.ConverseStreamRecorder, "close", boom)
    assert client.converse(modelId=MODEL, messages=MSGS)["output"]["message"]["content"]
    assert len(list(client.converse_stream(modelId=MODEL, messages=MSGS)["stream"])) == 9
    body = client.invoke_model(modelId=MODEL, body=json.dumps(ANTHROPIC_BODY))["body"].read()
    assert json.loads(body)["type"] == "message"
    monkeypatch.setattr(br_patch, "_begin", boom)
    assert client.converse(modelId=MODEL, messages=MSGS)["stopReason"] == "end_turn"
    assert internal_errors() >= before + 5


def test_event_stream_framing_round_trips_through_botocore():
    """The fake's frames are what botocore's own parser accepts, CRCs included."""
    from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

    frame = encode_event({":event-type": "messageStop", ":message-type": "event"}, b'{"stopReason":"end_turn"}')
    buffer = EventStreamBuffer()
    buffer.add_data(frame[:7])
    buffer.add_data(frame[7:])
    (message,) = list(buffer)
    assert message.headers[":event-type"] == "messageStop"
    assert message.payload == b'{"stopReason":"end_turn"}'
    broken = frame[:-1] + bytes([frame[-1] ^ 1])
    with pytest.raises(ChecksumMismatch):
        bad = EventStreamBuffer()
        bad.add_data(broken)
        list(bad)
