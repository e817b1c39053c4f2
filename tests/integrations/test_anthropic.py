"""The real ``anthropic`` client against the local fake provider, with AnthropicInstrumentor on."""

from __future__ import annotations

import asyncio

import pytest

anthropic = pytest.importorskip("anthropic")
wrapt = pytest.importorskip("wrapt")

import agentvigil  # noqa: E402
from agentvigil.instrumentation.anthropic import AnthropicInstrumentor  # noqa: E402
from agentvigil.instrumentation.anthropic import patch as ant_patch  # noqa: E402
from agentvigil.testing import Reply  # noqa: E402

from .conftest import instrument_fixture, internal_errors  # noqa: E402

PROXY = getattr(wrapt, "BaseObjectProxy", wrapt.ObjectProxy)
MODEL = "claude-haiku-4-5"
MSGS = [{"role": "user", "content": "secret prompt text"}]
L = {"agent": "itest", "provider": "anthropic", "model": MODEL}
# Reply token numbers are provider neutral: input INCLUDES cache; the fake sends Anthropic's exclusive numbers
CACHED = dict(input_tokens=1200, cache_read_tokens=1000, cache_write_tokens=100, output_tokens=80)


instrument = instrument_fixture(AnthropicInstrumentor)


@pytest.fixture
def client(fake):
    return anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="test-key", max_retries=0)


def _assert_cached_usage(sample, calls=1):
    assert sample("agent_llm_calls_total", status="ok", **L) == calls
    # wire: input_tokens=100 (exclusive), cache_read=1000, cache_creation=100 -> whole prompt 1200
    assert sample("agent_tokens_total", type="input", **L) == 1200 * calls
    assert sample("agent_tokens_total", type="cache_read", **L) == 1000 * calls
    assert sample("agent_tokens_total", type="cache_write", **L) == 100 * calls
    assert sample("agent_tokens_total", type="output", **L) == 80 * calls
    assert sample("agent_cache_hit_ratio", **L) == pytest.approx(1000 / 1200)
    # claude-haiku-4-5: $1/M input, $0.10/M cache read, $1.25/M cache write, $5/M output
    assert sample("agent_cost_usd_total", **L) == pytest.approx(
        calls * (100 * 1 + 1000 * 0.1 + 100 * 1.25 + 80 * 5) / 1e6)


def test_messages_create(instrument, client, fake, monitor, sample, llm_spans):
    instrument()
    fake.enqueue(Reply(**CACHED, model="claude-haiku-4-5-20251001"))
    with monitor.run(task_id="t-1"):
        msg = client.messages.create(model=MODEL, max_tokens=256, messages=MSGS, system="be brief")
    assert msg.usage.input_tokens == 100  # the SDK result is untouched
    _assert_cached_usage(sample)
    (span,) = llm_spans()
    a = span.attributes
    assert span.name == f"chat {MODEL}"
    assert a["gen_ai.provider.name"] == "anthropic"
    assert a["gen_ai.response.model"] == "claude-haiku-4-5-20251001"
    assert a["gen_ai.usage.input_tokens"] == 1200
    assert a["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert a["gen_ai.usage.cache_creation.input_tokens"] == 100
    assert a["gen_ai.request.max_tokens"] == 256
    assert a["gen_ai.response.finish_reasons"] == ("stop",)  # end_turn, in the spec's values
    assert "secret prompt text" not in repr(dict(a)) and "be brief" not in repr(dict(a))


def test_content_capture_opt_in(instrument, client, llm_spans):
    instrument(capture_content=True)
    client.messages.create(model=MODEL, max_tokens=16, messages=MSGS, system="be brief")
    (span,) = llm_spans()
    assert "secret prompt text" in span.attributes["gen_ai.input.messages"]
    assert "be brief" in span.attributes["gen_ai.system_instructions"]
    assert "Hello from the fake provider." in span.attributes["gen_ai.output.messages"]


def test_create_stream_true(instrument, client, fake, sample):
    instrument()
    fake.enqueue(Reply(**CACHED))
    events = [e.type for e in client.messages.create(model=MODEL, max_tokens=256, messages=MSGS, stream=True)]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    _assert_cached_usage(sample)


def test_stream_helper_text_stream(instrument, client, fake, sample, llm_spans):
    instrument()
    fake.enqueue(Reply(**CACHED))
    with client.messages.stream(model=MODEL, max_tokens=256, messages=MSGS) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from the fake provider."
    assert final.usage.output_tokens == 80
    _assert_cached_usage(sample)
    (span,) = llm_spans()
    assert span.attributes["gen_ai.request.stream"] is True


def test_stream_helper_get_final_message_only(instrument, client, fake, sample):
    instrument()
    fake.enqueue(Reply(**CACHED))
    with client.messages.stream(model=MODEL, max_tokens=256, messages=MSGS) as stream:
        stream.get_final_message()
    _assert_cached_usage(sample)


def test_async_create_and_stream(instrument, fake, monitor, sample):
    instrument()
    fake.enqueue(Reply(**CACHED), Reply(**CACHED), Reply(**CACHED))
    aclient = anthropic.AsyncAnthropic(base_url=fake.anthropic_base_url, api_key="k", max_retries=0)

    async def main():
        async with monitor.run():
            await aclient.messages.create(model=MODEL, max_tokens=10, messages=MSGS)
            async with aclient.messages.stream(model=MODEL, max_tokens=10, messages=MSGS) as stream:
                async for _ in stream.text_stream:
                    pass
            raw = await aclient.messages.create(model=MODEL, max_tokens=10, messages=MSGS, stream=True)
            async for _ in raw:
                pass

    asyncio.run(main())
    _assert_cached_usage(sample, calls=3)


@pytest.mark.parametrize("reply, exc_type, kind", [
    (Reply.overloaded(), "OverloadedError", "server_error"),
    (Reply.rate_limited(retry_after=0.01), "RateLimitError", "rate_limit"),
    (Reply.error(401), "AuthenticationError", "auth"),
    (Reply.error(400, "prompt is too long: 210000 tokens > 200000 maximum"), "BadRequestError", "context_length"),
    (Reply.error(400, "max_tokens: field required"), "BadRequestError", "invalid_request"),
    (Reply.error(500), "InternalServerError", "server_error"),
])
def test_errors_are_classified(instrument, client, fake, sample, reply, exc_type, kind):
    instrument()
    fake.enqueue(reply)
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model=MODEL, max_tokens=10, messages=MSGS)
    # releases before OverloadedError raise 529 as InternalServerError (scripts/test-oldest.sh runs them)
    assert type(info.value).__name__ == (exc_type if hasattr(anthropic, exc_type) else "InternalServerError")
    assert sample("agent_llm_errors_total", kind=kind, **L) == 1
    assert sample("agent_llm_calls_total", status="error", **L) == 1


def test_overloaded_inside_a_200_stream(instrument, client, fake, sample):
    """Anthropic sends ``event: error`` inside a 200 stream; the SDK raises a bare APIStatusError(200)."""
    instrument()
    fake.enqueue(Reply(fail_after_chunks=1), Reply(fail_after_chunks=1))
    with pytest.raises(anthropic.APIStatusError):
        with client.messages.stream(model=MODEL, max_tokens=10, messages=MSGS) as stream:
            stream.get_final_message()
    with pytest.raises(anthropic.APIStatusError):
        for _ in client.messages.create(model=MODEL, max_tokens=10, messages=MSGS, stream=True):
            pass
    assert sample("agent_llm_errors_total", kind="server_error", **L) == 2


def test_stream_helper_request_error(instrument, client, fake, sample):
    instrument()
    fake.enqueue(Reply.overloaded())
    with pytest.raises(anthropic.InternalServerError):
        with client.messages.stream(model=MODEL, max_tokens=10, messages=MSGS):
            pass
    assert sample("agent_llm_errors_total", kind="server_error", **L) == 1


def test_breaker_counts_overloads(instrument, client, fake, registry):
    breaker = agentvigil.CircuitBreaker("anthropic", failure_threshold=1, recovery_timeout=60, registry=registry)
    instrument(breaker=breaker)
    fake.enqueue(Reply.overloaded())
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model=MODEL, max_tokens=10, messages=MSGS)
    with pytest.raises(agentvigil.CircuitOpenError):
        with client.messages.stream(model=MODEL, max_tokens=10, messages=MSGS):
            pass
    assert len(fake.requests) == 1


def test_uninstrument_restores_the_sdk(client, monitor, sample):
    from anthropic.resources.messages import AsyncMessages, Messages

    originals = {(k, m): k.__dict__[m] for k in (Messages, AsyncMessages) for m in ("create", "stream")}
    inst = AnthropicInstrumentor()
    inst.instrument(monitor=monitor)
    assert all(isinstance(k.__dict__[m], PROXY) for k, m in originals)
    inst.uninstrument()
    assert all(k.__dict__[m] is fn for (k, m), fn in originals.items())
    client.messages.create(model=MODEL, max_tokens=10, messages=MSGS)
    with client.messages.stream(model=MODEL, max_tokens=10, messages=MSGS) as stream:
        stream.get_final_message()
    assert sample("agent_llm_calls_total", status="ok", **L) == 0


def test_our_failures_never_reach_the_caller(instrument, client, fake, monkeypatch):
    instrument()
    before = internal_errors()

    def boom(*a, **k):
        raise RuntimeError("bug in agentvigil")

    monkeypatch.setattr(ant_patch.MESSAGES, "response", boom)
    monkeypatch.setattr(ant_patch.MessagesStreamRecorder, "feed", boom)
    monkeypatch.setattr(ant_patch.MessagesStreamRecorder, "close", boom)
    assert client.messages.create(model=MODEL, max_tokens=10, messages=MSGS).content
    with client.messages.stream(model=MODEL, max_tokens=10, messages=MSGS) as stream:
        assert stream.get_final_text() == "Hello from the fake provider."
    monkeypatch.setattr(ant_patch, "_attach", boom)
    with client.messages.stream(model=MODEL, max_tokens=10, messages=MSGS) as stream:
        assert stream.get_final_text() == "Hello from the fake provider."
    assert internal_errors() >= before + 3
