"""Real ``litellm.completion`` / ``acompletion`` / ``embedding`` against the local fake provider, with
LiteLLMInstrumentor on (LiteLLM's callback interface). LiteLLM's success callbacks run after the call returns
(a logging thread for sync calls, a task for async ones), so the tests wait for them with a bounded poll."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

# LiteLLM fetches its model cost map from GitHub at import unless told not to; no telemetry either.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_TELEMETRY", "False")

litellm = pytest.importorskip("litellm")
openai = pytest.importorskip("openai")

import agentvigil  # noqa: E402
from agentvigil.errors import classify_exception  # noqa: E402
from agentvigil.instrumentation.litellm import LiteLLMInstrumentor  # noqa: E402
from agentvigil.instrumentation.litellm.callback import AgentVigilLogger  # noqa: E402
from agentvigil.testing import Reply  # noqa: E402

from .conftest import instrument_fixture, internal_errors  # noqa: E402

litellm.telemetry = False
litellm.suppress_debug_info = True

MODEL = "gpt-4o-mini"
MSGS = [{"role": "user", "content": "secret prompt text"}]
L = {"agent": "itest", "provider": "openai", "model": MODEL}
CLAUDE = "claude-haiku-4-5"
LA = {"agent": "itest", "provider": "anthropic", "model": CLAUDE}
# gpt-4o-mini: $0.15/M input, $0.075/M cached input, $0.60/M output
GPT_COST = (200 * 0.15 + 1000 * 0.075 + 80 * 0.6) / 1e6
# claude-haiku-4-5: $1/M input, $0.10/M cache read, $1.25/M cache write, $5/M output
CLAUDE_COST = (100 * 1.0 + 1000 * 0.10 + 100 * 1.25 + 80 * 5.0) / 1e6
CACHED = {"input_tokens": 1200, "cache_read_tokens": 1000, "output_tokens": 80}


def wait_for(check, timeout: float = 15.0) -> None:
    """Poll until LiteLLM's background logging has delivered (bounded; not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("LiteLLM's callback did not arrive")
        time.sleep(0.01)


async def await_for(check, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("LiteLLM's callback did not arrive")
        await asyncio.sleep(0.01)


instrument = instrument_fixture(LiteLLMInstrumentor)


@pytest.fixture
def call(fake):
    """litellm.completion against the fake (OpenAI wire format); no retries anywhere."""
    def go(**kw):
        kw.setdefault("model", f"openai/{MODEL}")
        kw.setdefault("messages", MSGS)
        return litellm.completion(api_base=fake.openai_base_url, api_key="test-key", max_retries=0, **kw)

    return go


@pytest.fixture
def acall(fake):
    async def go(**kw):
        kw.setdefault("model", f"openai/{MODEL}")
        kw.setdefault("messages", MSGS)
        return await litellm.acompletion(api_base=fake.openai_base_url, api_key="test-key", max_retries=0, **kw)

    return go


def _ok(sample, labels=L):
    return lambda: sample("agent_llm_calls_total", status="ok", **labels) >= 1


def test_completion_metrics_span_and_run(instrument, call, fake, monitor, sample, llm_spans, spans):
    inst = instrument()
    fake.enqueue(Reply(**CACHED, model="gpt-4o-mini-2024-07-18"))
    with monitor.run(task_id="t-1") as run:
        resp = call(max_tokens=100, temperature=0.2)
        assert inst.flush(timeout=15)      # LiteLLM's logging thread has delivered the result
        assert inst.logger.in_flight == 0
    assert resp.choices[0].message.content == "Hello from the fake provider."

    assert sample("agent_llm_calls_total", status="ok", **L) == 1
    assert sample("agent_tokens_total", type="input", **L) == 1200   # inclusive of cached
    assert sample("agent_tokens_total", type="output", **L) == 80
    assert sample("agent_tokens_total", type="cache_read", **L) == 1000
    assert sample("agent_cache_hit_ratio", **L) == pytest.approx(1000 / 1200)
    assert sample("agent_cost_usd_total", **L) == pytest.approx(GPT_COST)   # agentvigil's prices, not LiteLLM's
    # the call joined the current run: its cost and tokens are the run's
    assert run.cost == pytest.approx(GPT_COST)
    assert run.tokens == 1280

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
    assert a["server.address"] == "127.0.0.1"
    assert a["agentvigil.cost_usd"] == pytest.approx(GPT_COST)
    assert "secret prompt text" not in repr(dict(a))
    run_spans = [s for s in spans.get_finished_spans() if s.name.startswith("invoke_agent")
                 or s.attributes.get("gen_ai.operation.name") == "invoke_agent"]
    assert run_spans and span.parent is not None and span.parent.span_id == run_spans[0].context.span_id
    assert span.context.trace_id == run_spans[0].context.trace_id


def test_async_completion(instrument, acall, fake, monitor, sample, llm_spans):
    instrument()
    fake.enqueue(Reply(**CACHED))

    async def main():
        async with monitor.run(task_id="t-a") as run:
            await acall()
            await await_for(_ok(sample))
        return run

    run = asyncio.run(main())
    assert sample("agent_llm_calls_total", status="ok", **L) == 1
    assert sample("agent_tokens_total", type="input", **L) == 1200
    assert sample("agent_tokens_total", type="cache_read", **L) == 1000
    assert sample("agent_cost_usd_total", **L) == pytest.approx(GPT_COST)
    assert run.cost == pytest.approx(GPT_COST)
    (span,) = llm_spans()
    assert span.attributes["gen_ai.usage.output_tokens"] == 80


def test_sync_stream_with_usage(instrument, call, fake, sample, llm_spans):
    instrument()
    fake.enqueue(Reply(input_tokens=50, cache_read_tokens=10, output_tokens=7))
    chunks = list(call(stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from the fake provider."
    wait_for(_ok(sample))
    assert sample("agent_llm_calls_total", status="ok", **L) == 1
    assert sample("agent_tokens_total", type="input", **L) == 50
    assert sample("agent_tokens_total", type="output", **L) == 7
    assert sample("agent_tokens_total", type="cache_read", **L) == 10
    (span,) = llm_spans()
    assert span.attributes["gen_ai.request.stream"] is True
    assert span.attributes["gen_ai.usage.output_tokens"] == 7


def test_async_stream_with_usage(instrument, acall, fake, sample, llm_spans):
    instrument()
    fake.enqueue(Reply(input_tokens=40, output_tokens=5))

    async def main():
        stream = await acall(stream=True, stream_options={"include_usage": True})
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await await_for(_ok(sample))
        return text

    assert asyncio.run(main()) == "Hello from the fake provider."
    assert sample("agent_llm_calls_total", status="ok", **L) == 1
    assert sample("agent_tokens_total", type="input", **L) == 40
    assert sample("agent_tokens_total", type="output", **L) == 5
    (span,) = llm_spans()
    assert span.attributes["gen_ai.request.stream"] is True


def test_anthropic_wire_format_cache_normalised(instrument, fake, monitor, sample, llm_spans):
    instrument()
    fake.enqueue(Reply(**CACHED, cache_write_tokens=100))

    async def main():
        await litellm.acompletion(model=f"anthropic/{CLAUDE}", messages=MSGS, max_tokens=64,
                                  api_base=fake.anthropic_base_url, api_key="test-key")
        await await_for(_ok(sample, LA))

    asyncio.run(main())
    assert fake.requests[-1].path.endswith("/v1/messages")      # the Anthropic wire format, not OpenAI's
    # Anthropic's wire counts are exclusive (100 uncached); LiteLLM sums them, and so do we: input is the prompt
    assert sample("agent_tokens_total", type="input", **LA) == 1200
    assert sample("agent_tokens_total", type="cache_read", **LA) == 1000
    assert sample("agent_tokens_total", type="cache_write", **LA) == 100
    assert sample("agent_tokens_total", type="output", **LA) == 80
    assert sample("agent_cost_usd_total", **LA) == pytest.approx(CLAUDE_COST)
    (span,) = llm_spans()
    assert span.attributes["gen_ai.provider.name"] == "anthropic"
    assert span.attributes["gen_ai.usage.cache_creation.input_tokens"] == 100


# LiteLLM maps a 500 to InternalServerError (1.110) or APIError (1.68); both are classified server_error.
@pytest.mark.parametrize("status,kind,exc_names", [(429, "rate_limit", ("RateLimitError",)),
                                                    (500, "server_error", ("InternalServerError", "APIError"))])
def test_error_kinds_sync_and_async(instrument, call, acall, fake, sample, llm_spans, status, kind, exc_names):
    instrument()
    fake.enqueue(Reply(status=status), Reply(status=status))
    errors = lambda: sample("agent_llm_errors_total", kind=kind, **L)  # noqa: E731
    with pytest.raises(Exception) as sync_err:
        call()
    assert type(sync_err.value).__name__ in exc_names and type(sync_err.value).__module__ == "litellm.exceptions"
    wait_for(lambda: errors() >= 1)

    async def main():
        with pytest.raises(type(sync_err.value)):
            await acall()
        await await_for(lambda: errors() >= 2)

    asyncio.run(main())
    assert sample("agent_llm_calls_total", status="error", **L) == 2
    assert errors() == 2
    assert sample("agent_tokens_total", type="input", **L) == 0
    first, second = llm_spans()
    assert first.attributes["error.type"] == type(sync_err.value).__qualname__
    assert "gen_ai.usage.input_tokens" not in first.attributes


@pytest.mark.parametrize("name,kind", [
    ("RateLimitError", "rate_limit"), ("Timeout", "timeout"), ("APIConnectionError", "network"),
    ("ContextWindowExceededError", "context_length"), ("AuthenticationError", "auth"),
    ("InternalServerError", "server_error"), ("ServiceUnavailableError", "server_error"),
    ("BadRequestError", "invalid_request"), ("NotFoundError", "not_found"),
    ("ContentPolicyViolationError", "content_filter"), ("APIError", "server_error"),
])
def test_litellm_exception_classes_classify(name, kind):
    cls = getattr(litellm, name)
    kwargs = {"message": "boom", "model": MODEL, "llm_provider": "openai"}
    if name == "APIError":
        kwargs["status_code"] = 500
    exc = cls(**kwargs)
    assert classify_exception(exc) == kind


def test_one_call_and_one_span_with_the_openai_integration_too(instrument, call, acall, fake, monitor, sample,
                                                               llm_spans):
    """Older LiteLLM (1.68) sends openai-provider calls through ``chat.completions.with_raw_response.create`` of
    the openai SDK, newer (1.110) through the client's ``post``: either way each call is recorded once."""
    from agentvigil.instrumentation.openai import OpenAIInstrumentor

    oai = OpenAIInstrumentor()
    oai.instrument(monitor=monitor)
    try:
        instrument()
        fake.enqueue(Reply(**CACHED), Reply(input_tokens=40, output_tokens=5))
        # fresh clients, made after instrumenting: the SDK path (where there is one) goes through our wrapper
        call(client=openai.OpenAI(base_url=fake.openai_base_url, api_key="test-key", max_retries=0))
        wait_for(_ok(sample))

        async def main():
            aclient = openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="test-key", max_retries=0)
            stream = await acall(stream=True, stream_options={"include_usage": True}, client=aclient)
            async for _ in stream:
                pass
            await await_for(lambda: sample("agent_llm_calls_total", status="ok", **L) >= 2)

        asyncio.run(main())
        assert sample("agent_llm_calls_total", status="ok", **L) == 2
        assert sample("agent_tokens_total", type="input", **L) == 1240
        assert len(llm_spans()) == 2
        # a direct SDK call afterwards is still the OpenAI integration's (the in-call marker did not leak)
        client = openai.OpenAI(base_url=fake.openai_base_url, api_key="test-key", max_retries=0)
        client.chat.completions.create(model=MODEL, messages=MSGS)
        assert sample("agent_llm_calls_total", status="ok", **L) == 3
        assert len(llm_spans()) == 3
    finally:
        oai.uninstrument()


def test_sdk_calls_inside_a_litellm_call_are_left_to_it(instrument, fake, monitor, sample):
    """The in-call marker, driven through the hooks LiteLLM calls around its provider request."""
    from agentvigil.instrumentation.openai import OpenAIInstrumentor

    oai = OpenAIInstrumentor()
    oai.instrument(monitor=monitor)
    try:
        logger = instrument().logger
        client = openai.OpenAI(base_url=fake.openai_base_url, api_key="test-key", max_retries=0)
        details = {"litellm_call_id": "c-1", "call_type": "completion", "model": MODEL,
                   "litellm_params": {"custom_llm_provider": "openai"}}
        logger.log_pre_api_call(MODEL, MSGS, details)
        client.chat.completions.create(model=MODEL, messages=MSGS)       # the request LiteLLM would make
        logger.log_post_api_call(details, None, None, None)
        assert sample("agent_llm_calls_total", status="ok", **L) == 0    # not the SDK integration's call
        logger.log_success_event(details, None, None, None)
        assert sample("agent_llm_calls_total", status="ok", **L) == 1    # LiteLLM's, once
        client.chat.completions.create(model=MODEL, messages=MSGS)
        assert sample("agent_llm_calls_total", status="ok", **L) == 2
    finally:
        oai.uninstrument()


def test_embedding(instrument, fake, sample, llm_spans):
    instrument()
    fake.enqueue(Reply(input_tokens=21))
    out = litellm.embedding(model="openai/text-embedding-3-small", input=["a", "b"], api_base=fake.openai_base_url,
                            api_key="test-key", max_retries=0)
    assert len(out.data) == 2
    labels = {**L, "model": "text-embedding-3-small"}
    wait_for(_ok(sample, labels))
    assert sample("agent_tokens_total", type="input", **labels) == 21
    assert sample("agent_tokens_total", type="output", **labels) == 0
    assert sample("agent_cost_usd_total", **labels) == pytest.approx(21 * 0.02 / 1e6)
    (span,) = llm_spans()
    assert span.name == "embeddings text-embedding-3-small"
    assert "gen_ai.usage.output_tokens" not in span.attributes


def test_breaker_refuses_async_calls_without_touching_the_network(instrument, acall, fake, sample):
    breaker = agentvigil.CircuitBreaker("litellm", failure_threshold=1, recovery_timeout=60)
    instrument(breaker=breaker)
    fake.enqueue(Reply(status=503))

    async def main():
        with pytest.raises(litellm.ServiceUnavailableError):
            await acall()
        await await_for(lambda: breaker.state == "open")
        sent = len(fake.requests)
        with pytest.raises(agentvigil.CircuitOpenError):
            await acall()
        return sent

    sent = asyncio.run(main())
    assert len(fake.requests) == sent           # refused before any request
    assert sample("agent_llm_calls_total", status="error", **L) == 1


def test_budget_refuses_async_calls_and_is_charged_by_sync_ones(instrument, call, acall, fake, monitor):
    budget = agentvigil.TokenBudget("tokens", 1000, monitor=monitor)
    instrument(budget=budget)
    fake.enqueue(Reply(input_tokens=900, output_tokens=80))
    call()                                      # sync: not refusable, but charged with its real usage
    wait_for(lambda: budget.committed == 980)
    assert budget.reserved == 0

    async def main():
        with pytest.raises(agentvigil.BudgetExceeded):
            await acall(max_tokens=100)

    sent = len(fake.requests)
    asyncio.run(main())
    assert len(fake.requests) == sent


def test_sync_calls_cannot_be_refused_but_feed_the_breaker(instrument, call, fake, sample):
    breaker = agentvigil.CircuitBreaker("litellm-sync", failure_threshold=1, recovery_timeout=60)
    instrument(breaker=breaker)
    fake.enqueue(Reply(status=503))
    with pytest.raises(litellm.ServiceUnavailableError):
        call()
    wait_for(lambda: breaker.state == "open")
    resp = call()                               # documented: LiteLLM swallows a sync callback's exception
    assert resp.choices[0].message.content == "Hello from the fake provider."
    wait_for(_ok(sample))


def test_uninstrument_removes_the_callback_everywhere(instrument, call, fake, sample):
    inst = instrument()
    logger = inst.logger
    call()
    wait_for(_ok(sample))
    lists = ("callbacks", "input_callback", "success_callback", "failure_callback", "_async_success_callback",
             "_async_failure_callback")
    assert any(logger in getattr(litellm, n) for n in lists)   # LiteLLM copied it into its lists
    inst.uninstrument()
    assert not any(isinstance(c, AgentVigilLogger) for n in lists for c in getattr(litellm, n))
    seen = []

    class Probe(litellm.integrations.custom_logger.CustomLogger):
        def log_success_event(self, kwargs, response_obj, start_time, end_time):
            seen.append(kwargs.get("litellm_call_id"))

    probe = Probe()
    litellm.callbacks.append(probe)
    try:
        call()
        wait_for(lambda: seen)   # LiteLLM delivered this call's success to its callbacks
    finally:
        for n in lists:
            getattr(litellm, n)[:] = [c for c in getattr(litellm, n) if c is not probe]
    assert sample("agent_llm_calls_total", status="ok", **L) == 1
    assert logger.in_flight == 0


def test_registered_in_instrument(monitor, sample, call):
    try:
        assert "litellm" in agentvigil.instrument(only=["litellm"], monitor=monitor)
        assert "litellm" in agentvigil.instrumentation.instrumented()
        call()
        wait_for(_ok(sample))
    finally:
        agentvigil.uninstrument()
    assert "litellm" not in agentvigil.instrumentation.instrumented()


def test_bad_callback_input_is_counted_never_raised(instrument):
    inst = instrument()
    before = internal_errors("instrumentation.litellm")
    logger = inst.logger
    logger.log_pre_api_call("m", [], {"litellm_call_id": "x", "call_type": "completion", "optional_params": 7})
    logger.log_success_event({"litellm_call_id": "y", "call_type": "completion", "litellm_params": 3}, object(),
                             None, None)
    asyncio.run(logger.async_log_failure_event({"litellm_call_id": "z", "exception": None}, None, None, None))
    assert internal_errors("instrumentation.litellm") > before
    assert logger.in_flight == 0


def test_calls_never_finished_are_bounded(instrument, sample):
    """A stream never consumed never gets its success event: the oldest open call is finished when full."""
    logger = instrument().logger
    logger.max_pending = 2
    for i in range(3):
        logger.log_pre_api_call(MODEL, MSGS, {"litellm_call_id": f"c-{i}", "call_type": "completion", "model": MODEL,
                                              "litellm_params": {"custom_llm_provider": "openai"}})
    assert logger.in_flight == 2
    assert sample("agent_llm_calls_total", status="ok", **L) == 1    # the evicted one, without usage
    assert sample("agent_tokens_total", type="input", **L) == 0


def test_real_timeout_and_connection_errors(instrument, call, fake, sample):
    inst = instrument()
    fake.enqueue(Reply(delay_s=2.0))
    with pytest.raises(litellm.Timeout):
        call(timeout=0.2)
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # LiteLLM re-raises the openai client's connection error as a 500 (InternalServerError in 1.110, APIError in
    # 1.68); its cause chain says what happened
    with pytest.raises((litellm.APIConnectionError, litellm.InternalServerError, litellm.APIError)) as err:
        litellm.completion(model=f"openai/{MODEL}", messages=MSGS, api_base=f"http://127.0.0.1:{port}/v1",
                           api_key="test-key", max_retries=0)
    assert classify_exception(err.value) in ("network", "server_error")
    assert inst.flush(timeout=15)
    assert sample("agent_llm_errors_total", kind="timeout", **L) == 1
    assert sample("agent_llm_errors_total", kind="network", **L) == 1


def test_litellm_cache_hits_are_not_llm_calls(instrument, call, fake, sample):
    inst = instrument()
    previous = litellm.cache
    litellm.cache = litellm.Cache(type="local")
    try:
        fake.enqueue(Reply(input_tokens=30, output_tokens=4))
        try:
            call(caching=True)
            sent = len(fake.requests)
            call(caching=True)              # served from LiteLLM's cache
        except ImportError as exc:   # LiteLLM 1.110's cache lookup imports its proxy's fastapi
            pytest.skip(f"LiteLLM's cache cannot run here: {exc}")
        assert len(fake.requests) == sent
        assert inst.flush(timeout=15)
    finally:
        litellm.cache = previous
    assert sample("agent_llm_calls_total", status="ok", **L) == 1
    assert sample("agent_tokens_total", type="input", **L) == 30
