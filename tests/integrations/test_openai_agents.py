"""The real OpenAI Agents SDK (Agent + Runner, function tools, handoffs, guardrails, streaming) against the local
fake provider, with OpenAIAgentsInstrumentor on: runs, steps, tool calls and LLM calls from its traces."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.metadata
import json
import socket
from pathlib import Path

import pytest

agents = pytest.importorskip("agents")

from agents import (  # noqa: E402
    Agent,
    AsyncOpenAI,
    GuardrailFunctionOutput,
    InputGuardrailTripwireTriggered,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    input_guardrail,
)
from agents.tracing import function_span, set_trace_processors, set_tracing_disabled, trace  # noqa: E402

import agentvigil  # noqa: E402
from agentvigil import LoopDetected, RunLimitExceeded, result_fingerprint  # noqa: E402
from agentvigil.instrumentation.openai import OpenAIInstrumentor  # noqa: E402
from agentvigil.instrumentation.openai_agents import OpenAIAgentsInstrumentor, trace_processors  # noqa: E402
from agentvigil.instrumentation.openai_agents.processor import AgentsProcessor  # noqa: E402
from agentvigil.testing import Reply  # noqa: E402

from .conftest import internal_errors  # noqa: E402

MODEL = "gpt-4o-mini"
SDK = tuple(int(p) for p in importlib.metadata.version("openai-agents").split(".")[:2])
SECRET = "secret-argument-value"


def _processors() -> tuple:
    found = trace_processors()
    assert found is not None
    return found


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No network: a dummy key, the SDK's own exporter to api.openai.com taken out for the test, and any
    connection to a non-loopback address refused (and failing the test)."""
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    before = list(_processors())
    set_trace_processors([])
    attempts = []
    connect = socket.socket.connect

    def loopback_only(sock, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            attempts.append(address)
            raise OSError(f"test is offline: refused {address}")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    yield
    set_trace_processors(before)
    assert attempts == []


@pytest.fixture
def make_monitor(registry, spans, tmp_path):
    monitors = []

    def make(agent="agents-test", **kw):
        kw.setdefault("tracer_provider", spans.provider)
        mon = agentvigil.Monitor(agent, registry=registry, heartbeat=False, record_dir=str(tmp_path), **kw)
        monitors.append(mon)
        return mon

    yield make
    for mon in monitors:
        mon.close()


@pytest.fixture
def instrument():
    done = []

    def go(monitor, *, openai_too=False, **kw):
        inst = OpenAIAgentsInstrumentor()
        inst.instrument(monitor=monitor, **kw)
        done.append(inst)
        if openai_too:
            oai = OpenAIInstrumentor()
            oai.instrument(monitor=monitor)
            done.append(oai)
        return inst

    yield go
    for inst in reversed(done):
        if inst.is_instrumented_by_opentelemetry:
            inst.uninstrument()


@pytest.fixture
def client(fake):
    return AsyncOpenAI(base_url=fake.openai_base_url, api_key="test-key", max_retries=0)


def responses(client):
    return OpenAIResponsesModel(MODEL, client)


def chat(client):
    return OpenAIChatCompletionsModel(MODEL, client)


@function_tool
def search(q: str) -> str:
    """Search the web."""
    return f"results for {q}"


@function_tool
def status() -> str:
    """Job status."""
    return "still running"


@function_tool
def deploy(env: str) -> str:
    """Deploy."""
    raise RuntimeError("deploy failed")


def run_sync(agent, text, **kw):
    """``Runner.run_sync`` on a loop of its own: SDK releases before 0.1 use ``asyncio.get_event_loop()``, which an
    earlier ``asyncio.run()`` leaves unset."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return Runner.run_sync(agent, text, **kw)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def call(name, **arguments):
    return Reply(text="", tool_calls=[{"name": name, "arguments": arguments}])


def events(tmp_path: Path) -> list[dict]:
    session = next(p for p in tmp_path.iterdir() if p.is_dir())
    return [json.loads(line) for line in (session / "events.ndjson").read_text().splitlines()]


def llm_spans(spans):
    return [s for s in spans.get_finished_spans() if s.attributes.get("gen_ai.operation.name") == "chat"]


def test_trace_maps_onto_run_steps_tool_calls_and_llm_calls(instrument, make_monitor, fake, client, sample, spans,
                                                            tmp_path):
    mon = make_monitor()
    instrument(mon)
    errors_before = internal_errors()
    spanish = Agent(name="spanish", instructions="Answer in Spanish.", model=responses(client))
    triage = Agent(name="triage", instructions="Route.", tools=[search, deploy], handoffs=[spanish],
                   model=responses(client))
    fake.enqueue(Reply(text="", tool_calls=[{"name": "search", "arguments": {"q": SECRET}}], input_tokens=1200,
                       cache_read_tokens=1000, output_tokens=30),
                 call("deploy", env="prod"), call("transfer_to_spanish"), Reply(text="hola"))

    result = run_sync(triage, "hi")

    assert result.final_output == "hola"
    a = {"agent": "agents-test"}
    assert sample("agent_runs_total", status="ok", **a) == 1
    assert sample("agent_steps_total", **a) == 4                      # one per model turn
    assert sample("agent_tool_calls_total", tool="search", status="ok", **a) == 1
    assert sample("agent_tool_calls_total", tool="deploy", status="error", **a) == 1
    assert sample("agent_tool_errors_total", tool="deploy", kind="tool_error", **a) == 1
    assert sample("agent_tool_calls_total", tool="handoff", status="ok", **a) == 1
    m = {"provider": "openai", "model": MODEL, **a}
    assert sample("agent_llm_calls_total", status="ok", **m) == 4
    assert sample("agent_tokens_total", type="input", **m) == 1200 + 3 * 12   # inclusive of cached
    assert sample("agent_tokens_total", type="cache_read", **m) == 1000
    assert sample("agent_tokens_total", type="output", **m) == 30 + 3 * 5
    assert sample("agent_cost_usd_total", **m) > 0

    names = [s.name for s in spans.get_finished_spans()]
    assert names.count("invoke_agent agents-test") == 1
    assert names.count(f"chat {MODEL}") == 4
    assert {"step triage", "step spanish", "execute_tool search", "execute_tool deploy"} <= set(names)
    finished = spans.get_finished_spans()
    run_span = next(s for s in finished if s.name == "invoke_agent agents-test")
    assert all(s.context.trace_id == run_span.context.trace_id for s in finished)   # one trace per run
    steps = {s.context.span_id: s.name for s in finished if s.name.startswith("step ")}
    tools = [s for s in finished if s.name.startswith("execute_tool ")]
    assert tools and all(steps.get(s.parent.span_id) == "step triage" for s in tools)   # under their turn

    mon.flush()
    recorded = events(tmp_path)
    ends = {e["tool_name"]: e for e in recorded if e["event_type"] == "tool_end"}
    assert ends["search"]["result_fingerprint"] == result_fingerprint(f"results for {SECRET}")
    assert ends["search"]["args_hash"] == agentvigil.codec.digest({"q": SECRET})
    everything = json.dumps(recorded) + json.dumps([dict(s.attributes) for s in spans.get_finished_spans()])
    assert SECRET not in everything and "hola" not in everything and "Route." not in everything
    assert internal_errors() == errors_before
    processor = next(p for p in _processors() if isinstance(p, AgentsProcessor))
    assert processor._traces == {} and processor._spans == {}   # nothing kept past its trace


def test_streamed_chat_completions_run(instrument, make_monitor, fake, client, sample, spans):
    mon = make_monitor()
    instrument(mon)
    # chat-completion streams carry usage only when asked (the OpenAI integration asks by itself); SDK releases
    # before the setting always asked
    settings = ModelSettings(include_usage=True) if "include_usage" in {
        f.name for f in dataclasses.fields(ModelSettings)} else ModelSettings()
    agent = Agent(name="streamer", instructions="x", tools=[search], model=chat(client), model_settings=settings)
    fake.enqueue(call("search", q="cats"), Reply(text="the answer is here", input_tokens=40, cache_read_tokens=32,
                                               output_tokens=7))

    async def go():
        streamed = Runner.run_streamed(agent, "hi")
        kinds = [event.type async for event in streamed.stream_events()]
        return streamed, kinds

    streamed, kinds = asyncio.run(go())
    assert streamed.final_output == "the answer is here" and "raw_response_event" in kinds
    assert all(r.stream for r in fake.requests)
    m = {"agent": "agents-test", "provider": "openai", "model": MODEL}
    assert sample("agent_runs_total", agent="agents-test", status="ok") == 1
    assert sample("agent_llm_calls_total", status="ok", **m) == 2
    assert sample("agent_tokens_total", type="input", **m) == 12 + 40
    # chat-completion generation spans carry the cached tokens since SDK 0.8 (the OpenAI integration: always)
    assert sample("agent_tokens_total", type="cache_read", **m) == (32 if SDK >= (0, 8) else 0)
    assert sample("agent_tool_calls_total", agent="agents-test", tool="search", status="ok") == 1
    assert len(llm_spans(spans)) == 2


@pytest.mark.parametrize("stream", [False, True], ids=["call", "stream"])
@pytest.mark.parametrize("api", [responses, chat], ids=["responses", "chat_completions"])
def test_one_model_call_is_one_llm_call_with_the_openai_integration_on(api, stream, instrument, make_monitor, fake,
                                                                       client, sample, spans):
    mon = make_monitor()
    instrument(mon, openai_too=True)
    agent = Agent(name="both", instructions="x", tools=[search], model=api(client))
    fake.enqueue(call("search", q="cats"), Reply(text="done", input_tokens=30, cache_read_tokens=20))

    async def go():
        if not stream:
            return await Runner.run(agent, "hi")
        streamed = Runner.run_streamed(agent, "hi")
        async for _ in streamed.stream_events():
            pass
        return streamed

    assert asyncio.run(go()).final_output == "done"

    assert len(fake.requests) == 2 and all(r.stream is stream for r in fake.requests)
    m = {"agent": "agents-test", "provider": "openai", "model": MODEL}
    assert sample("agent_llm_calls_total", status="ok", **m) == 2
    assert sample("agent_tokens_total", type="input", **m) == 12 + 30
    assert sample("agent_tokens_total", type="cache_read", **m) == 20
    assert len(llm_spans(spans)) == 2
    # the OpenAI integration's span (it owns the call): server address, response id; under the run's step
    assert all(s.attributes.get("server.address") == "127.0.0.1" for s in llm_spans(spans))
    steps = {s.context.span_id for s in spans.get_finished_spans() if s.name == "step both"}
    assert all(s.parent.span_id in steps for s in llm_spans(spans))
    assert sample("agent_runs_total", agent="agents-test", status="ok") == 1


def test_repeated_tool_call_is_a_loop_verdict(instrument, make_monitor, fake, client, sample, tmp_path):
    mon = make_monitor()
    instrument(mon)
    agent = Agent(name="looper", instructions="x", tools=[status], model=responses(client))
    fake.enqueue(*[call("status") for _ in range(8)], Reply(text="gave up"))

    assert run_sync(agent, "hi", max_turns=20).final_output == "gave up"

    assert sample("agent_tool_calls_total", agent="agents-test", tool="status", status="ok") == 8
    loops = {d: sample("agent_loop_detections_total", agent="agents-test", detector=d)
             for d in ("repeat_call", "same_result", "repeated_sequence")}
    assert loops["same_result"] >= 1, loops   # the same call answered the same: the loop guard's strongest case
    mon.flush()
    verdicts = [e for e in events(tmp_path) if e["event_type"] == "detection"]
    assert any(v["detector"] == "same_result" and v["detail"]["tool"] == "status" for v in verdicts), verdicts


def test_loop_guard_stops_the_run_at_the_next_model_call(instrument, make_monitor, fake, client, sample):
    mon = make_monitor(loop_action="raise")
    instrument(mon, openai_too=True)
    agent = Agent(name="looper", instructions="x", tools=[status], model=responses(client))
    fake.enqueue(*[call("status") for _ in range(10)], Reply(text="never"))

    with pytest.raises(LoopDetected):
        run_sync(agent, "hi", max_turns=20)

    sent = len(fake.requests)
    assert 2 <= sent < 10      # stopped at a model call, well before the script's end
    assert sample("agent_runs_total", agent="agents-test", status="error") == 1
    assert sample("agent_tool_calls_total", agent="agents-test", tool="status", status="ok") == sent


def test_run_limit_stops_the_run(instrument, make_monitor, fake, client, sample):
    mon = make_monitor()
    instrument(mon, openai_too=True, max_steps=2)
    agent = Agent(name="busy", instructions="x", tools=[search], model=responses(client))
    fake.enqueue(*[call("search", q=str(i)) for i in range(6)], Reply(text="never"))

    with pytest.raises(RunLimitExceeded):
        run_sync(agent, "hi", max_turns=20)

    assert len(fake.requests) <= 3
    assert sample("agent_runs_total", agent="agents-test", status="error") == 1


def test_error_kinds_of_models_and_tools(instrument, make_monitor, fake, client, sample):
    mon = make_monitor()
    instrument(mon)
    agent = Agent(name="failing", instructions="x", tools=[deploy], model=responses(client))
    fake.enqueue(call("deploy", env="prod"), Reply.rate_limited(retry_after=0))

    with pytest.raises(Exception) as raised:
        run_sync(agent, "hi")

    assert "429" in str(raised.value) or type(raised.value).__name__ == "RateLimitError"
    m = {"agent": "agents-test", "provider": "openai", "model": MODEL}
    assert sample("agent_llm_calls_total", status="ok", **m) == 1
    assert sample("agent_llm_errors_total", kind="rate_limit", **m) == 1   # model: the one that answered before
    assert sample("agent_tool_errors_total", agent="agents-test", tool="deploy", kind="tool_error") == 1
    assert sample("agent_runs_total", agent="agents-test", status="error") == 1


def test_guardrail_trip_is_a_rejected_call_and_fails_the_run(instrument, make_monitor, fake, client, sample):
    mon = make_monitor()
    instrument(mon)

    @input_guardrail
    async def no_secrets(ctx, agent, text):
        return GuardrailFunctionOutput(output_info=None, tripwire_triggered=SECRET in str(text))

    agent = Agent(name="guarded", instructions="x", input_guardrails=[no_secrets], model=responses(client))
    fake.enqueue(Reply(text="fine"), Reply(text="fine"))

    assert run_sync(agent, "hello").final_output == "fine"
    with pytest.raises(InputGuardrailTripwireTriggered):
        run_sync(agent, f"my {SECRET}")

    a = {"agent": "agents-test", "tool": "guardrail:no_secrets"}
    assert sample("agent_tool_calls_total", status="ok", **a) == 1
    assert sample("agent_tool_calls_total", status="rejected", **a) == 1
    assert sample("agent_runs_total", agent="agents-test", status="ok") == 1
    assert sample("agent_runs_total", agent="agents-test", status="error") == 1


def test_a_run_already_open_is_used(instrument, make_monitor, fake, client, sample):
    mon = make_monitor()
    instrument(mon)
    agent = Agent(name="inner", instructions="x", model=responses(client))
    fake.enqueue(Reply(text="one"), Reply(text="two"))

    async def go():
        async with mon.run(task_id="outer") as run:
            await Runner.run(agent, "a")
            await Runner.run(agent, "b")
            assert agentvigil.current_run() is run
        assert agentvigil.current_run() is None

    asyncio.run(go())
    assert sample("agent_runs_total", agent="agents-test", status="ok") == 1
    assert sample("agent_steps_total", agent="agents-test") == 2
    assert sample("agent_llm_calls_total", agent="agents-test", provider="openai", model=MODEL, status="ok") == 2


def test_uninstrument_removes_the_processor(instrument, make_monitor, fake, client, sample):
    mon = make_monitor()
    before = _processors()
    inst = instrument(mon)
    ours = [p for p in _processors() if isinstance(p, AgentsProcessor)]
    assert len(ours) == 1 and _processors() == (*before, ours[0])
    inst.uninstrument()
    assert _processors() == before and ours[0].active is False

    fake.enqueue(Reply(text="unseen"))
    agent = Agent(name="plain", instructions="x", model=responses(client))
    assert run_sync(agent, "hi").final_output == "unseen"
    assert sample("agent_runs_total", agent="agents-test", status="ok") == 0
    assert sample("agent_llm_calls_total", agent="agents-test", provider="openai", model=MODEL, status="ok") == 0


def test_a_run_inside_an_except_block_is_not_failed_by_the_handled_exception(instrument, make_monitor, fake,
                                                                            client, sample):
    mon = make_monitor()
    instrument(mon)
    agent = Agent(name="fallback", instructions="x", model=responses(client))
    fake.enqueue(Reply(text="recovered"))
    try:
        raise ConnectionError("primary path failed")
    except ConnectionError:
        assert run_sync(agent, "hi").final_output == "recovered"
    assert sample("agent_runs_total", agent="agents-test", status="ok") == 1
    assert sample("agent_runs_total", agent="agents-test", status="error") == 0


def test_a_span_the_sdk_never_ends_is_closed_with_its_trace(instrument, make_monitor, sample):
    mon = make_monitor()
    instrument(mon)
    with trace("manual workflow"):
        function_span(name="cancelled_tool").start()   # started, never finished
        assert agentvigil.current_run() is not None
    assert agentvigil.current_run() is None
    assert sample("agent_tool_calls_total", agent="agents-test", tool="cancelled_tool", status="error") == 1
    assert sample("agent_runs_total", agent="agents-test", status="ok") == 1
    processor = next(p for p in _processors() if isinstance(p, AgentsProcessor))
    assert processor._spans == {} and processor._traces == {}


def test_sdk_tracing_disabled_means_no_runs_and_no_harm(instrument, make_monitor, fake, client, sample):
    mon = make_monitor()
    instrument(mon)
    agent = Agent(name="untraced", instructions="x", tools=[search], model=responses(client))
    fake.enqueue(call("search", q="cats"), Reply(text="done"))
    set_tracing_disabled(True)
    try:
        assert run_sync(agent, "hi").final_output == "done"
    finally:
        set_tracing_disabled(False)
    assert len(fake.requests) == 2
    assert sample("agent_runs_total", agent="agents-test", status="ok") == 0
    assert sample("agent_tool_calls_total", agent="agents-test", tool="search", status="ok") == 0


def test_registered_for_instrument_and_the_entry_point():
    from agentvigil.instrumentation import _REGISTRY

    assert _REGISTRY["openai_agents"] == ("agents",
                                          "agentvigil.instrumentation.openai_agents:OpenAIAgentsInstrumentor")
    assert OpenAIAgentsInstrumentor().instrumentation_dependencies() == ("openai-agents >= 0.0.4",)


def test_a_broken_span_is_counted_never_raised(make_monitor, sample):
    mon = make_monitor()
    processor = AgentsProcessor(mon)

    class Trace:
        trace_id, group_id = "trace_1", None

    class Hostile:
        @property
        def type(self):
            raise RuntimeError("an SDK shape we do not know")

    class Span:
        trace_id, span_id, span_data, error = "trace_1", "span_1", Hostile(), None

    before = internal_errors()
    processor.on_trace_start(Trace())
    processor.on_span_start(Span())     # must not raise into the SDK
    processor.on_span_end(Span())
    processor.on_trace_end(Trace())
    assert internal_errors() == before + 2
    assert sample("agent_runs_total", agent="agents-test", status="ok") == 1   # the run itself is intact
    assert processor._traces == {} and agentvigil.current_run() is None


def test_arguments_the_sdk_cannot_parse_are_a_rejected_action(instrument, make_monitor, fake, client, sample,
                                                              tmp_path):
    """Malformed JSON arguments: the SDK answers the model with an error without calling the tool. A rejected
    action (its own rate signal), not the tool failing."""
    mon = make_monitor()
    instrument(mon)
    agent = Agent(name="sloppy", instructions="x", tools=[search], model=responses(client))
    fake.enqueue(Reply(text="", tool_calls=[{"name": "search", "arguments": '{"q": "cats"'}]),
                 call("search", q="cats"), Reply(text="done"))

    assert run_sync(agent, "hi").final_output == "done"

    a = {"agent": "agents-test", "tool": "search"}
    assert sample("agent_tool_calls_total", status="rejected", **a) == 1
    assert sample("agent_tool_calls_total", status="ok", **a) == 1
    assert sample("agent_tool_errors_total", kind="tool_error", **a) == 0
    mon.flush()
    ends = [(e["status"], e.get("error_kind")) for e in events(tmp_path) if e["event_type"] == "tool_end"]
    assert ends == [("rejected", "parse_error"), ("ok", None)]
