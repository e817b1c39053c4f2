"""The real ``google-genai`` client against the local fake provider (Gemini API wire format), with
GoogleGenAIInstrumentor on."""

from __future__ import annotations

import asyncio
import json

import pytest

genai = pytest.importorskip("google.genai")
wrapt = pytest.importorskip("wrapt")

from google.genai import errors, types  # noqa: E402
from google.genai.version import __version__ as SDK_VERSION  # noqa: E402

import agentvigil  # noqa: E402
from agentvigil.instrumentation.google_genai import GoogleGenAIInstrumentor  # noqa: E402
from agentvigil.instrumentation.google_genai import patch as gg_patch  # noqa: E402
from agentvigil.testing import Reply  # noqa: E402

from .conftest import instrument_fixture, internal_errors  # noqa: E402

PROXY = getattr(wrapt, "BaseObjectProxy", wrapt.ObjectProxy)
MODEL = "gemini-2.5-flash"
L = {"agent": "itest", "provider": "gcp.gemini", "model": MODEL}
# Reply numbers are provider neutral: input INCLUDES cache, output INCLUDES reasoning; the fake sends Gemini's
# promptTokenCount=1200, cachedContentTokenCount=1000, candidatesTokenCount=50, thoughtsTokenCount=30
CACHED = dict(input_tokens=1200, cache_read_tokens=1000, output_tokens=80, reasoning_tokens=30)
# gemini-2.5-flash: $0.30/M input, $0.03/M cache read, $2.50/M output (thinking included)
CACHED_COST = (200 * 0.30 + 1000 * 0.03 + 80 * 2.50) / 1e6

SDK = tuple(int(x) for x in SDK_VERSION.split(".")[:2])


instrument = instrument_fixture(GoogleGenAIInstrumentor)


def make_client(fake, **http):
    return genai.Client(api_key="dummy", http_options=types.HttpOptions(base_url=fake.url, **http))


@pytest.fixture
def client(fake):
    return make_client(fake)


@pytest.fixture
def model_spans(spans):
    def get():
        return [s for s in spans.get_finished_spans()
                if s.attributes.get("gen_ai.operation.name") in ("generate_content", "embeddings")]

    return get


def _assert_cached_usage(sample, calls=1):
    assert sample("agent_llm_calls_total", status="ok", **L) == calls
    assert sample("agent_tokens_total", type="input", **L) == 1200 * calls
    assert sample("agent_tokens_total", type="cache_read", **L) == 1000 * calls
    assert sample("agent_tokens_total", type="output", **L) == 80 * calls
    assert sample("agent_cache_hit_ratio", **L) == pytest.approx(1000 / 1200)
    assert sample("agent_cost_usd_total", **L) == pytest.approx(calls * CACHED_COST)


def test_generate_content(instrument, client, fake, monitor, sample, model_spans):
    instrument()
    fake.enqueue(Reply(**CACHED, model="gemini-2.5-flash-001"))
    with monitor.run(task_id="t-1"):
        response = client.models.generate_content(
            model=MODEL, contents="secret prompt text",
            config=types.GenerateContentConfig(system_instruction="be brief", max_output_tokens=256,
                                               temperature=0.2, stop_sequences=["END"]))
    assert response.usage_metadata.candidates_token_count == 50   # the SDK result is untouched
    assert sample("agent_runs_total", agent="itest", status="ok") == 1
    assert sample("agent_llm_calls_total", status="ok", **L) == 1
    assert sample("agent_tokens_total", type="input", **L) == 1200
    assert sample("agent_tokens_total", type="cache_read", **L) == 1000
    assert sample("agent_tokens_total", type="output", **L) == 80
    (span,) = model_spans()
    a = span.attributes
    assert span.name == f"generate_content {MODEL}"
    assert a["gen_ai.provider.name"] == "gcp.gemini" and a["gen_ai.operation.name"] == "generate_content"
    assert a["gen_ai.request.model"] == MODEL and a["gen_ai.response.model"] == "gemini-2.5-flash-001"
    # the id the SDK hands back (older SDKs drop the Gemini API's responseId)
    assert a.get("gen_ai.response.id") == response.response_id
    assert SDK < (1, 30) or response.response_id == "resp_fake_1"
    assert a["gen_ai.usage.input_tokens"] == 1200 and a["gen_ai.usage.output_tokens"] == 80
    assert a["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert a["gen_ai.usage.reasoning.output_tokens"] == 30
    assert a["gen_ai.request.max_tokens"] == 256 and a["gen_ai.request.temperature"] == 0.2
    assert a["gen_ai.request.stop_sequences"] == ("END",)
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert "secret prompt text" not in repr(dict(a)) and "be brief" not in repr(dict(a))   # privacy default


def test_cost_uses_the_gemini_price_with_cache_and_thinking(instrument, client, fake, sample, model_spans):
    instrument()
    fake.enqueue(Reply(**CACHED))
    client.models.generate_content(model=MODEL, contents="hi")
    _assert_cached_usage(sample)
    assert model_spans()[0].attributes["agentvigil.cost_usd"] == pytest.approx(CACHED_COST)


def test_content_capture_opt_in(instrument, client, fake, model_spans):
    instrument(capture_content=True)
    fake.enqueue(Reply(text="the answer"))
    client.models.generate_content(model=MODEL, contents="secret prompt text",
                                   config={"system_instruction": "be brief"})
    a = model_spans()[0].attributes
    assert json.loads(a["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "secret prompt text"}]}]
    assert json.loads(a["gen_ai.system_instructions"]) == [{"type": "text", "content": "be brief"}]
    assert json.loads(a["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "the answer"}], "finish_reason": "stop"}]


def test_stream(instrument, client, fake, sample, model_spans):
    instrument()
    fake.enqueue(Reply(**CACHED))
    text = "".join(chunk.text or "" for chunk in client.models.generate_content_stream(model=MODEL, contents="hi"))
    assert text == "Hello from the fake provider."
    _assert_cached_usage(sample)
    (span,) = model_spans()
    assert span.attributes["gen_ai.request.stream"] is True
    assert span.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert span.attributes["gen_ai.usage.output_tokens"] == 80


def test_async_generate_and_stream(instrument, client, fake, monitor, sample):
    instrument()
    fake.enqueue(Reply(**CACHED), Reply(**CACHED))

    async def main():
        async with monitor.run(task_id="async"):
            await client.aio.models.generate_content(model=MODEL, contents="hi")
            stream = await client.aio.models.generate_content_stream(model=MODEL, contents="hi")
            assert "".join([c.text async for c in stream]) == "Hello from the fake provider."

    asyncio.run(main())
    _assert_cached_usage(sample, calls=2)
    assert sample("agent_runs_total", agent="itest", status="ok") == 1


def test_function_calls_are_tool_requests_not_executions(instrument, client, fake, sample, model_spans):
    instrument(capture_content=True)
    call = {"name": "search", "arguments": {"q": "cats"}}
    fake.enqueue(Reply(text="", tool_calls=[call]), Reply(text="", tool_calls=[call]))
    tools = [types.Tool(function_declarations=[types.FunctionDeclaration(name="search", description="web search")])]
    config = types.GenerateContentConfig(tools=tools)
    response = client.models.generate_content(model=MODEL, contents="find cats", config=config)
    assert response.function_calls[0].name == "search"
    list(client.models.generate_content_stream(model=MODEL, contents="find cats", config=config))
    for span in model_spans():
        assert span.attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
        (message,) = json.loads(span.attributes["gen_ai.output.messages"])
        assert message["parts"] == [{"type": "tool_call", "id": message["parts"][0]["id"], "name": "search",
                                     "arguments": {"q": "cats"}}]
        assert json.loads(span.attributes["gen_ai.tool.definitions"]) == [
            {"type": "function", "name": "search", "description": "web search"}]
    assert len(model_spans()) == 2
    assert sample("agent_tool_calls_total", agent="itest", tool="search", status="ok") == 0   # not executed


@pytest.mark.parametrize("reply, exc_type, kind", [
    (Reply.rate_limited(), errors.ClientError, "rate_limit"),
    (Reply.error(500, "Internal error encountered."), errors.ServerError, "server_error"),
    (Reply.error(503, "The model is overloaded."), errors.ServerError, "server_error"),
    (Reply.error(400, "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."),
     errors.ClientError, "context_length"),
    (Reply.error(400, "Invalid value at 'generation_config.temperature'"), errors.ClientError, "invalid_request"),
    (Reply.error(403, "Method doesn't allow unregistered callers."), errors.ClientError, "auth"),
    (Reply.error(404, "models/gemini-9 is not found"), errors.ClientError, "not_found"),
])
def test_errors_are_classified_and_reraised_unchanged(instrument, client, fake, sample, model_spans, reply,
                                                      exc_type, kind):
    instrument()
    fake.enqueue(reply)
    with pytest.raises(errors.APIError) as info:
        client.models.generate_content(model=MODEL, contents="hi")
    assert type(info.value) is exc_type and info.value.code == reply.status
    assert sample("agent_llm_calls_total", status="error", **L) == 1
    assert sample("agent_llm_errors_total", kind=kind, **L) == 1
    (span,) = model_spans()
    assert span.attributes["error.type"] == exc_type.__qualname__
    assert "gen_ai.usage.input_tokens" not in span.attributes


def test_stream_error_before_the_first_chunk(instrument, client, fake, sample):
    instrument()
    fake.enqueue(Reply.rate_limited())
    with pytest.raises(errors.ClientError):
        list(client.models.generate_content_stream(model=MODEL, contents="hi"))
    assert sample("agent_llm_errors_total", kind="rate_limit", **L) == 1


@pytest.mark.skipif(SDK < (1, 50), reason="google-genai raises errors sent inside a 200 stream from 1.50 on")
def test_stream_error_inside_the_stream(instrument, client, fake, sample):
    instrument()
    fake.enqueue(Reply(fail_after_chunks=1))
    with pytest.raises(errors.ServerError):   # 503 UNAVAILABLE sent as a chunk inside the 200 stream
        list(client.models.generate_content_stream(model=MODEL, contents="hi"))
    assert sample("agent_llm_errors_total", kind="server_error", **L) == 1
    assert sample("agent_llm_calls_total", status="ok", **L) == 0


def test_async_errors(instrument, client, fake, sample):
    instrument()
    fake.enqueue(Reply.rate_limited(), Reply.error(500))

    async def main():
        with pytest.raises(errors.ClientError):
            await client.aio.models.generate_content(model=MODEL, contents="hi")
        stream = await client.aio.models.generate_content_stream(model=MODEL, contents="hi")
        with pytest.raises(errors.ServerError):
            async for _ in stream:
                pass

    asyncio.run(main())
    assert sample("agent_llm_errors_total", kind="rate_limit", **L) == 1
    assert sample("agent_llm_errors_total", kind="server_error", **L) == 1


async def _araised(coro):
    try:
        await coro
    except Exception as exc:
        return exc
    raise AssertionError("no error")


def _raised(fn):
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError("no error")


def test_timeout_and_connection_errors(instrument, fake, sample):
    instrument()
    fake.enqueue(Reply(delay_s=2))
    slow = make_client(fake, timeout=200)   # milliseconds
    timeout = _raised(lambda: slow.models.generate_content(model=MODEL, contents="hi"))
    fake.enqueue(Reply(delay_s=2))
    atimeout = asyncio.run(_araised(slow.aio.models.generate_content(model=MODEL, contents="hi")))
    assert "Timeout" in type(timeout).__name__ and "Timeout" in type(atimeout).__name__
    dead = genai.Client(api_key="dummy", http_options=types.HttpOptions(base_url="http://127.0.0.1:9"))
    refused = _raised(lambda: dead.models.generate_content(model=MODEL, contents="hi"))
    # the async transport is aiohttp when installed (ClientConnectorError), else httpx (ConnectError)
    arefused = asyncio.run(_araised(dead.aio.models.generate_content(model=MODEL, contents="hi")))
    assert "Connect" in type(refused).__name__ and "Connect" in type(arefused).__name__
    assert sample("agent_llm_errors_total", kind="timeout", **L) == 2
    assert sample("agent_llm_errors_total", kind="network", **L) == 2


def test_breaker_opens_on_server_errors(instrument, client, fake, registry):
    breaker = agentvigil.CircuitBreaker("gemini", failure_threshold=1, recovery_timeout=60, registry=registry)
    instrument(breaker=breaker)
    fake.enqueue(Reply.error(500))
    with pytest.raises(errors.ServerError):
        client.models.generate_content(model=MODEL, contents="hi")
    with pytest.raises(agentvigil.CircuitOpenError):
        client.models.generate_content(model=MODEL, contents="hi")
    with pytest.raises(agentvigil.CircuitOpenError):
        client.models.generate_content_stream(model=MODEL, contents="hi")
    assert len(fake.requests) == 1


def test_budget_reserves_from_contents_and_commits_usage(instrument, client, fake, registry):
    budget = agentvigil.TokenBudget("gemini", limit=10_000, registry=registry)
    instrument(budget=budget)
    fake.enqueue(Reply(input_tokens=300, output_tokens=20))
    client.models.generate_content(model=MODEL, contents="x" * 400, config={"max_output_tokens": 100})
    assert budget.committed == 320
    with pytest.raises(agentvigil.BudgetExceeded):
        client.models.generate_content(model=MODEL, contents="x" * 40_000)   # 10k + 1024 > what is left
    assert len(fake.requests) == 1


def test_embed_content(instrument, client, fake, model_spans, sample):
    instrument()
    response = client.models.embed_content(model="text-embedding-004", contents=["a", "b"])
    assert len(response.embeddings) == 2
    (span,) = model_spans()
    assert span.attributes["gen_ai.operation.name"] == "embeddings"
    assert span.attributes["agentvigil.usage.missing"] is True   # the Gemini API reports no embedding tokens
    assert sample("agent_llm_calls_total", status="ok", agent="itest", provider="gcp.gemini",
                  model="text-embedding-004") == 1


def test_chats_are_recorded_once_per_turn(instrument, client, fake, sample):
    instrument()
    chat = client.chats.create(model=MODEL)
    chat.send_message("hi")
    chat.send_message("again")
    assert sample("agent_llm_calls_total", status="ok", **L) == 2


def test_vertex_client_is_recorded_as_vertex_ai(instrument, fake, monitor, sample, model_spans):
    instrument()
    client = genai.Client(vertexai=True, project="p", location="us-central1",
                          credentials=_FakeCredentials(),
                          http_options=types.HttpOptions(base_url=fake.url))
    client.models.generate_content(model=MODEL, contents="hi")
    assert model_spans()[0].attributes["gen_ai.provider.name"] == "gcp.vertex_ai"
    assert sample("agent_llm_calls_total", status="ok", agent="itest", provider="gcp.vertex_ai", model=MODEL) == 1


class _FakeCredentials:
    """Enough of google.auth's Credentials for a vertexai client (no network, no key)."""

    token = "t"
    valid = True
    expired = False
    quota_project_id = None
    universe_domain = "googleapis.com"

    def refresh(self, request):
        pass

    def before_request(self, request, method, url, headers):
        headers["authorization"] = "Bearer t"

    def apply(self, headers, token=None):
        headers["authorization"] = "Bearer t"


def test_uninstrument_restores_the_sdk(client, monitor, sample):
    from google.genai.models import AsyncModels, Models

    methods = ("generate_content", "generate_content_stream", "embed_content")
    originals = {(k, m): k.__dict__[m] for k in (Models, AsyncModels) for m in methods}
    inst = GoogleGenAIInstrumentor()
    inst.instrument(monitor=monitor)
    assert all(isinstance(k.__dict__[m], PROXY) for k, m in originals)
    inst.uninstrument()
    assert all(k.__dict__[m] is fn for (k, m), fn in originals.items())
    client.models.generate_content(model=MODEL, contents="hi")
    assert sample("agent_llm_calls_total", status="ok", **L) == 0


def test_our_failures_never_reach_the_caller(instrument, client, fake, monkeypatch):
    instrument(capture_content=True)
    before = internal_errors()

    def boom(*a, **k):
        raise RuntimeError("bug in agentvigil")

    monkeypatch.setattr(gg_patch, "record_usage", boom)
    monkeypatch.setattr(gg_patch, "input_messages", boom)
    monkeypatch.setattr(gg_patch.GenerateStreamRecorder, "feed", boom)
    assert client.models.generate_content(model=MODEL, contents="hi").text == "Hello from the fake provider."
    text = "".join(c.text or "" for c in client.models.generate_content_stream(model=MODEL, contents="hi"))
    assert text == "Hello from the fake provider."
    monkeypatch.setattr(gg_patch, "is_vertex", boom)
    assert client.models.generate_content(model=MODEL, contents="hi").text
    assert internal_errors() >= before + 4


def test_instrument_by_name(monitor, client, sample):
    from agentvigil import instrumentation

    assert "google_genai" in instrumentation.instrument(only=["google_genai"], monitor=monitor)
    try:
        assert "google_genai" in instrumentation.instrumented()
        client.models.generate_content(model=MODEL, contents="hi")
        assert sample("agent_llm_calls_total", status="ok", **L) == 1
    finally:
        instrumentation.uninstrument()


LAZY = """
import sys, agentvigil
assert agentvigil.instrument(only=["google_genai"]) == ["google_genai"]
assert "google.genai" not in sys.modules, "instrument() imported the SDK"
from google import genai
from google.genai.models import AsyncModels, Models
assert all(hasattr(k.__dict__["generate_content"], "_self_wrapper") for k in (Models, AsyncModels)), "not patched"
agentvigil.uninstrument()
assert not hasattr(Models.__dict__["generate_content"], "_self_wrapper"), "not unpatched"
print("ok")
"""


def test_sdk_patched_on_import_not_before():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", LAZY], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


class _Recorded:
    """Stands in for an Invocation: keeps what record_usage passes on."""

    def set_usage(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def test_usage_mapping_adds_tool_use_prompt_and_thoughts():
    inv = _Recorded()
    usage = {"prompt_token_count": 100, "tool_use_prompt_token_count": 20, "cached_content_token_count": 40,
             "candidates_token_count": 5, "thoughts_token_count": 3}
    assert gg_patch.record_usage(inv, usage) == 3
    assert inv.args == (120, 8, 40, 0) and inv.kwargs == {"input_excludes_cache": False}
    assert gg_patch.record_usage(_Recorded(), {"total_token_count": 9}) is None   # nothing usable: no usage


def test_a_blocked_prompt_is_a_content_filter_finish():
    assert gg_patch._finish_reasons([], {"block_reason": "SAFETY"}) == ["content_filter"]
    assert gg_patch._finish_reasons([{"finish_reason": "SPII"}], None) == ["content_filter"]


def test_parts_keep_media_as_references_and_thoughts_as_reasoning():
    blob = types.Part.from_bytes(data=b"\x89PNG secret pixels", mime_type="image/png")
    assert gg_patch.part(blob) == {"type": "blob", "modality": "image", "mime_type": "image/png"}
    ref = types.Part.from_uri(file_uri="gs://b/clip.mp4", mime_type="video/mp4")
    assert gg_patch.part(ref) == {"type": "uri", "modality": "video", "mime_type": "video/mp4",
                                  "uri": "gs://b/clip.mp4"}
    assert gg_patch.part(types.Part(text="hmm", thought=True)) == {"type": "reasoning", "content": "hmm"}
    assert gg_patch.input_messages(["look", blob]) == [
        {"role": "user", "parts": [{"type": "text", "content": "look"},
                                   {"type": "blob", "modality": "image", "mime_type": "image/png"}]}]


def test_tool_definitions_from_declarations_and_python_callables():
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return "sunny"

    decl = types.Tool(function_declarations=[types.FunctionDeclaration(
        name="search", parameters=types.Schema(type="OBJECT", properties={"q": types.Schema(type="STRING")}))])
    assert gg_patch.tool_definitions([decl, get_weather]) == [
        {"type": "function", "name": "search",
         "parameters": {"type": "OBJECT", "properties": {"q": {"type": "STRING"}}}},
        {"type": "function", "name": "get_weather", "description": "Weather for a city."}]
