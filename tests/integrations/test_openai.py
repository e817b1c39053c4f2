"""The real ``openai`` client against the local fake provider, with OpenAIInstrumentor on."""

from __future__ import annotations

import asyncio

import pytest

openai = pytest.importorskip("openai")
wrapt = pytest.importorskip("wrapt")
PROXY = getattr(wrapt, "BaseObjectProxy", wrapt.ObjectProxy)  # wrapt 2 moved the base class

import agentvigil  # noqa: E402
from agentvigil.instrumentation.openai import OpenAIInstrumentor  # noqa: E402
from agentvigil.instrumentation.openai import patch as oai_patch  # noqa: E402
from agentvigil.testing import Reply  # noqa: E402

from .conftest import instrument_fixture, internal_errors  # noqa: E402

# The Responses API exists from openai 1.66; scripts/test-oldest.sh runs this file against older releases too.
HAS_RESPONSES = hasattr(openai.OpenAI, "responses")
requires_responses = pytest.mark.skipif(not HAS_RESPONSES, reason="this openai has no Responses API")

MODEL = "gpt-4o-mini"
MSGS = [{"role": "user", "content": "secret prompt text"}]
L = {"agent": "itest", "provider": "openai", "model": MODEL}


instrument = instrument_fixture(OpenAIInstrumentor)


@pytest.fixture
def client(fake):
    return openai.OpenAI(base_url=fake.openai_base_url, api_key="test-key", max_retries=0)


@pytest.fixture
def aclient(fake):
    return openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="test-key", max_retries=0)


def test_chat_completion_metrics_and_span(instrument, client, fake, monitor, sample, llm_spans):
    instrument()
    fake.enqueue(Reply(input_tokens=1200, cache_read_tokens=1000, output_tokens=80, model="gpt-4o-mini-2024-07-18"))
    with monitor.run(task_id="t-1"):
        resp = client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=100, temperature=0.2)
    assert resp.choices[0].message.content == "Hello from the fake provider."

    assert sample("agent_llm_calls_total", status="ok", **L) == 1
    assert sample("agent_tokens_total", type="input", **L) == 1200   # inclusive of cached
    assert sample("agent_tokens_total", type="output", **L) == 80
    assert sample("agent_tokens_total", type="cache_read", **L) == 1000
    assert sample("agent_cache_hit_ratio", **L) == pytest.approx(1000 / 1200)
    # gpt-4o-mini: $0.15/M input, $0.075/M cached input, $0.60/M output
    assert sample("agent_cost_usd_total", **L) == pytest.approx((200 * 0.15 + 1000 * 0.075 + 80 * 0.6) / 1e6)
    assert sample("agent_llm_call_duration_seconds_count", **L) == 1

    (span,) = llm_spans()
    assert span.name == f"chat {MODEL}"
    a = span.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == MODEL
    assert a["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert a["gen_ai.usage.input_tokens"] == 1200
    assert a["gen_ai.usage.output_tokens"] == 80
    assert a["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert a["gen_ai.request.max_tokens"] == 100
    assert a["gen_ai.request.temperature"] == 0.2
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.response.id"].startswith("chatcmpl-fake")
    # privacy by default: no prompt or completion anywhere on the span
    assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a
    assert "secret prompt text" not in repr(dict(a))


def test_calls_outside_a_run_go_to_the_given_monitor(instrument, client, sample):
    instrument()
    client.chat.completions.create(model=MODEL, messages=MSGS)
    assert sample("agent_llm_calls_total", status="ok", **L) == 1


def test_content_capture_opt_in_via_env(monkeypatch, instrument, client, llm_spans):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    instrument()
    client.chat.completions.create(model=MODEL, messages=MSGS)
    (span,) = llm_spans()
    assert "secret prompt text" in span.attributes["gen_ai.input.messages"]
    assert "Hello from the fake provider." in span.attributes["gen_ai.output.messages"]


def test_stream_usage_is_requested_and_the_extra_chunk_hidden(instrument, client, fake, sample, llm_spans):
    instrument()
    fake.enqueue(Reply(input_tokens=50, cache_read_tokens=10, output_tokens=7))
    chunks = list(client.chat.completions.create(model=MODEL, messages=MSGS, stream=True))
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}
    assert all(c.choices for c in chunks), "the caller must not see the usage-only chunk it did not ask for"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello from the fake provider."
    assert sample("agent_tokens_total", type="input", **L) == 50
    assert sample("agent_tokens_total", type="output", **L) == 7
    assert sample("agent_tokens_total", type="cache_read", **L) == 10
    (span,) = llm_spans()
    assert span.attributes["gen_ai.request.stream"] is True
    assert span.attributes["gen_ai.usage.output_tokens"] == 7


def test_stream_usage_chunk_kept_when_the_caller_asked(instrument, client, fake, sample):
    instrument()
    chunks = list(client.chat.completions.create(model=MODEL, messages=MSGS, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 12
    assert sample("agent_tokens_total", type="input", **L) == 12


def test_stream_without_usage_counts_the_call_but_no_tokens(instrument, client, fake, sample, llm_spans):
    instrument(stream_usage=False)
    chunks = list(client.chat.completions.create(model=MODEL, messages=MSGS, stream=True))
    assert "stream_options" not in fake.requests[-1].body
    assert len(chunks) > 1
    assert sample("agent_llm_calls_total", status="ok", **L) == 1
    assert sample("agent_tokens_total", type="input", **L) == 0
    assert sample("agent_cost_usd_total", **L) == 0
    (span,) = llm_spans()
    assert span.attributes["agentvigil.usage.missing"] is True


def test_stream_helper_and_context_manager(instrument, client, fake, sample):
    instrument()
    fake.enqueue(Reply(input_tokens=30, output_tokens=4))
    # the helper left beta later; older releases have it at client.beta.chat.completions only
    helper = getattr(client.chat.completions, "stream", None) or client.beta.chat.completions.stream
    with helper(model=MODEL, messages=MSGS) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "Hello from the fake provider."
    assert sample("agent_llm_calls_total", status="ok", **L) == 1  # stream() -> create(): recorded once
    assert sample("agent_tokens_total", type="input", **L) == 30


def test_stream_closed_early_is_finalised_once(instrument, client, fake, sample):
    instrument()
    stream = client.chat.completions.create(model=MODEL, messages=MSGS, stream=True)
    next(iter(stream))
    stream.close()
    stream.close()
    assert sample("agent_llm_calls_total", status="ok", **L) == 1


def test_stream_failing_midway(instrument, client, fake, sample):
    instrument()
    fake.enqueue(Reply(fail_after_chunks=2))
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model=MODEL, messages=MSGS, stream=True):
            pass
    assert sample("agent_llm_calls_total", status="error", **L) == 1
    assert sample("agent_llm_errors_total", kind="server_error", **L) == 1


@requires_responses
def test_responses_api(instrument, client, fake, sample, llm_spans):
    instrument()
    fake.enqueue(Reply(input_tokens=900, cache_read_tokens=600, output_tokens=40), Reply(input_tokens=100,
                                                                                          output_tokens=9))
    resp = client.responses.create(model=MODEL, input="secret prompt text", max_output_tokens=64)
    assert resp.output_text == "Hello from the fake provider."
    events = [e.type for e in client.responses.create(model=MODEL, input="hi", stream=True)]
    assert events[-1] == "response.completed"
    assert sample("agent_llm_calls_total", status="ok", **L) == 2
    assert sample("agent_tokens_total", type="input", **L) == 1000
    assert sample("agent_tokens_total", type="cache_read", **L) == 600
    assert sample("agent_tokens_total", type="output", **L) == 49
    first, second = llm_spans()
    assert first.attributes["gen_ai.request.max_tokens"] == 64
    assert second.attributes["gen_ai.usage.output_tokens"] == 9


@requires_responses
def test_responses_stream_helper(instrument, client, fake, sample):
    instrument()
    with client.responses.stream(model=MODEL, input="hi") as stream:
        final = stream.get_final_response()
    assert final.usage.input_tokens == 12
    assert sample("agent_llm_calls_total", status="ok", **L) == 1
    assert sample("agent_tokens_total", type="input", **L) == 12


def test_embeddings(instrument, client, fake, sample, llm_spans):
    instrument()
    fake.enqueue(Reply(input_tokens=21))
    out = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(out.data) == 2 and len(out.data[0].embedding) == 8
    labels = {**L, "model": "text-embedding-3-small"}
    assert sample("agent_llm_calls_total", status="ok", **labels) == 1
    assert sample("agent_tokens_total", type="input", **labels) == 21
    assert sample("agent_cost_usd_total", **labels) == pytest.approx(21 * 0.02 / 1e6)
    (span,) = llm_spans()
    assert span.name == "embeddings text-embedding-3-small"
    assert span.attributes["gen_ai.operation.name"] == "embeddings"


def test_async_chat_and_stream(instrument, aclient, fake, monitor, sample):
    instrument()

    async def main():
        async with monitor.run(task_id="async"):
            await aclient.chat.completions.create(model=MODEL, messages=MSGS)
            stream = await aclient.chat.completions.create(model=MODEL, messages=MSGS, stream=True)
            chunks = [c async for c in stream]
            assert all(c.choices for c in chunks)
            if HAS_RESPONSES:
                async with aclient.responses.stream(model=MODEL, input="hi") as rs:
                    await rs.get_final_response()

    asyncio.run(main())
    calls = 3 if HAS_RESPONSES else 2
    assert sample("agent_llm_calls_total", status="ok", **L) == calls
    assert sample("agent_tokens_total", type="input", **L) == 12 * calls
    assert sample("agent_runs_total", agent="itest", status="ok") == 1


@pytest.mark.parametrize("reply, exc_type, kind", [
    (Reply.rate_limited(retry_after=0.01), "RateLimitError", "rate_limit"),
    (Reply.error(401, "Incorrect API key provided"), "AuthenticationError", "auth"),
    (Reply.error(400, "Invalid value for 'temperature'"), "BadRequestError", "invalid_request"),
    (Reply.error(400, "This model's maximum context length is 128000 tokens",
                 error_type="invalid_request_error"), "BadRequestError", "context_length"),
    (Reply.error(404, "The model does not exist"), "NotFoundError", "not_found"),
    (Reply.error(500, "The server had an error"), "InternalServerError", "server_error"),
])
def test_errors_are_classified_and_reraised_unchanged(instrument, client, fake, sample, llm_spans, reply, exc_type,
                                                      kind):
    instrument()
    fake.enqueue(reply)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=MODEL, messages=MSGS)
    assert type(info.value).__name__ == exc_type
    assert type(info.value).__module__.startswith("openai")
    assert sample("agent_llm_calls_total", status="error", **L) == 1
    assert sample("agent_llm_errors_total", kind=kind, **L) == 1
    (span,) = llm_spans()
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["error.type"]


def test_rate_limit_retry_after_header_reaches_the_caller(instrument, client, fake):
    instrument()
    fake.enqueue(Reply.rate_limited(retry_after=2))
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=MODEL, messages=MSGS)
    assert info.value.response.headers["retry-after"] == "2"


def test_sdk_retries_are_one_call(instrument, fake, sample):
    instrument()
    fake.enqueue(Reply.rate_limited(retry_after=0.001))
    retrying = openai.OpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=1)
    retrying.chat.completions.create(model=MODEL, messages=MSGS)
    assert len(fake.requests) == 2
    assert sample("agent_llm_calls_total", status="ok", **L) == 1


def test_timeout_and_network_errors(instrument, fake, sample):
    instrument()
    fake.enqueue(Reply(delay_s=1.0))
    slow = openai.OpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0, timeout=0.2)
    with pytest.raises(openai.APITimeoutError):
        slow.chat.completions.create(model=MODEL, messages=MSGS)
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        dead.chat.completions.create(model=MODEL, messages=MSGS)
    assert sample("agent_llm_errors_total", kind="timeout", **L) == 1
    assert sample("agent_llm_errors_total", kind="network", **L) == 1


def test_breaker_opens_and_stops_calls_before_the_network(instrument, client, fake, registry):
    breaker = agentvigil.CircuitBreaker("openai", failure_threshold=2, recovery_timeout=60, registry=registry)
    instrument(breaker=breaker)
    fake.enqueue(Reply.error(500), Reply.error(500))
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model=MODEL, messages=MSGS)
    assert breaker.state == "open"
    with pytest.raises(agentvigil.CircuitOpenError):
        client.chat.completions.create(model=MODEL, messages=MSGS)
    assert len(fake.requests) == 2  # the third call never left the process


def test_budget_reserves_then_commits_actual_usage(instrument, client, fake, registry):
    budget = agentvigil.TokenBudget("daily", limit=5_000, registry=registry)
    instrument(budget=budget)
    fake.enqueue(Reply(input_tokens=300, output_tokens=50))
    client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=200)
    assert budget.committed == 350 and budget.reserved == 0
    fake.enqueue(Reply.error(500))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=200)
    assert budget.committed == 350 and budget.reserved == 0  # released on failure
    with pytest.raises(agentvigil.BudgetExceeded):
        client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=10_000)
    assert len(fake.requests) == 2


def test_uninstrument_restores_the_sdk(client, fake, monitor, sample):
    from openai.resources.chat.completions import AsyncCompletions, Completions
    from openai.resources.embeddings import Embeddings

    classes: list[type] = [Completions, AsyncCompletions, Embeddings]
    if HAS_RESPONSES:
        from openai.resources.responses import Responses

        classes.append(Responses)
    originals = {(k, m): k.__dict__[m] for k in classes
                 for m in ("create",)}
    inst = OpenAIInstrumentor()
    inst.instrument(monitor=monitor)
    assert all(isinstance(k.__dict__[m], PROXY) for k, m in originals)
    inst.instrument(monitor=monitor)  # idempotent
    assert not isinstance(Completions.__dict__["create"].__wrapped__, PROXY)
    inst.uninstrument()
    assert all(k.__dict__[m] is fn for (k, m), fn in originals.items())
    client.chat.completions.create(model=MODEL, messages=MSGS)
    assert sample("agent_llm_calls_total", status="ok", **L) == 0


def test_our_failures_never_reach_the_caller(instrument, client, fake, monkeypatch):
    instrument()
    before = internal_errors()

    def boom(*a, **k):
        raise RuntimeError("bug in agentvigil")

    monkeypatch.setattr(agentvigil, "start_llm_call", boom)
    assert client.chat.completions.create(model=MODEL, messages=MSGS).choices
    monkeypatch.undo()
    monkeypatch.setattr(oai_patch.CHAT, "response", boom)
    monkeypatch.setattr(oai_patch.CHAT, "request", boom)
    assert client.chat.completions.create(model=MODEL, messages=MSGS).choices
    monkeypatch.setattr(oai_patch.ChatStreamRecorder, "feed", boom)
    monkeypatch.setattr(oai_patch.ChatStreamRecorder, "close", boom)
    text = "".join(c.choices[0].delta.content or "" for c in
                   client.chat.completions.create(model=MODEL, messages=MSGS, stream=True) if c.choices)
    assert text == "Hello from the fake provider."
    assert internal_errors() >= before + 4


def test_with_raw_response(instrument, client, fake, sample):
    instrument()
    fake.enqueue(Reply(input_tokens=77, output_tokens=3))
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MSGS)
    assert raw.headers["x-request-id"] == "req_fake"
    assert raw.parse().usage.prompt_tokens == 77
    assert sample("agent_tokens_total", type="input", **L) == 77
