"""CrewAI spans against the GenAI conventions: a real Crew (CrewAI's native OpenAI provider) against the fake
provider. Heavy, so marked ``crewai``: skipped where CrewAI is not installed, run by ``scripts/test-crewai.sh``."""

from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.crewai

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
pytest.importorskip("crewai")
pytest.importorskip("openai")

from crewai import LLM, Agent, Crew, Task  # noqa: E402
from crewai.tools import tool  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

import agentvigil  # noqa: E402
from agentvigil.instrumentation.crewai import CrewAIInstrumentor  # noqa: E402
from agentvigil.instrumentation.openai import OpenAIInstrumentor  # noqa: E402
from agentvigil.testing import Reply  # noqa: E402


@tool("search")
def search(q: str) -> str:
    """Search the web."""
    return "cats are great"


@tool("flaky")
def flaky(q: str) -> str:
    """Always fails."""
    raise ValueError("upstream 502")


def _crew(fake, tools=(search,), name="research-crew"):
    llm = LLM(model="openai/gpt-4o-mini", base_url=fake.openai_base_url, api_key="k")
    researcher = Agent(role="Researcher", goal="find facts", backstory="b", llm=llm, tools=list(tools), max_iter=4)
    writer = Agent(role="Writer", goal="write", backstory="b", llm=llm)
    tasks = [Task(name="research", description="Research cats", expected_output="facts", agent=researcher),
             Task(name="write", description="Write a briefing", expected_output="text", agent=writer)]
    return Crew(name=name, agents=[researcher, writer], tasks=tasks)


def _script(fake, tool_name="search"):
    fake.enqueue(
        Reply(text="", tool_calls=[{"name": tool_name, "arguments": {"q": "cats"}}], input_tokens=300,
              output_tokens=20),
        Reply(text="Thought: I know.\nFinal Answer: cats are great", input_tokens=400, output_tokens=30),
        Reply(text="Thought: done\nFinal Answer: briefing", input_tokens=200, output_tokens=10),
    )


def _flush():
    from crewai.events import crewai_event_bus

    crewai_event_bus.flush()


def _setup(otel, capture=False):
    mon = agentvigil.Monitor("crew-agent", registry=CollectorRegistry(), tracer_provider=otel.tracer_provider,
                             heartbeat=False, capture_content=capture)
    oai, crew = OpenAIInstrumentor(), CrewAIInstrumentor()
    oai.instrument(monitor=mon, tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    crew.instrument(monitor=mon)
    return mon, oai, crew


@pytest.fixture
def crew_otel(otel):
    mon, oai, crew = _setup(otel)
    yield otel
    crew.uninstrument()
    oai.uninstrument()
    mon.close()


@pytest.fixture
def crew_otel_capture(otel):
    mon, oai, crew = _setup(otel, capture=True)
    yield otel
    crew.uninstrument()
    oai.uninstrument()
    mon.close()


def _by_op(otel, op):
    return [s for s in otel.spans.get_finished_spans() if s.attributes.get("gen_ai.operation.name") == op]


def _kickoff(fake, otel, **kw):
    _script(fake, **{k: v for k, v in kw.items() if k == "tool_name"})
    tools = kw.get("tools", (search,))
    result = _crew(fake, tools=tools).kickoff()
    _flush()
    return result


# -- invoke_agent --------------------------------------------------------------------------------------------

def test_one_invoke_agent_span_per_kickoff(fake, crew_otel):
    _kickoff(fake, crew_otel)
    _kickoff(fake, crew_otel)
    spans = _by_op(crew_otel, "invoke_agent")
    assert len(spans) == 2
    assert len({s.context.trace_id for s in spans}) == 2          # each kickoff its own trace


def test_invoke_agent_name_kind_and_required_attributes(fake, crew_otel):
    _kickoff(fake, crew_otel)
    (span,) = _by_op(crew_otel, "invoke_agent")
    assert span.name == "invoke_agent crew-agent"
    assert span.kind == SpanKind.INTERNAL                         # an in-process agent
    assert span.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert span.attributes["gen_ai.agent.name"] == "crew-agent"
    assert span.attributes["gen_ai.provider.name"] == "openai"    # the provider of the crew's model calls
    assert span.attributes["gen_ai.conversation.id"] == "research-crew"


def test_async_kickoff_is_one_invoke_agent_span(fake, crew_otel):
    import asyncio

    _script(fake)
    crew = _crew(fake)
    method = getattr(crew, "akickoff", None) or crew.kickoff_async
    asyncio.run(method())
    _flush()
    (span,) = _by_op(crew_otel, "invoke_agent")
    assert span.attributes["gen_ai.provider.name"] == "openai"
    chats = _by_op(crew_otel, "chat")
    assert len(chats) == 3 and {c.context.trace_id for c in chats} == {span.context.trace_id}


def test_kickoff_inside_a_run_adds_no_second_invoke_agent(fake, crew_otel, otel):
    mon = agentvigil.Monitor("outer", registry=CollectorRegistry(), tracer_provider=otel.tracer_provider,
                             heartbeat=False)
    _script(fake)
    with mon.run(task_id="outer-task"):
        _crew(fake).kickoff()
    _flush()
    (span,) = _by_op(crew_otel, "invoke_agent")
    assert span.attributes["gen_ai.agent.name"] == "outer"
    mon.close()


def test_failed_kickoff_marks_invoke_agent_error(fake, crew_otel):
    fake.enqueue(*[Reply.error(401, "bad key")] * 6)
    with pytest.raises(Exception):  # noqa: B017 - CrewAI may wrap the SDK's AuthenticationError
        _crew(fake).kickoff()
    _flush()
    (span,) = _by_op(crew_otel, "invoke_agent")
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"]
    chats = _by_op(crew_otel, "chat")
    assert chats
    for chat in chats:
        assert chat.status.status_code == StatusCode.ERROR
        assert "gen_ai.usage.input_tokens" not in chat.attributes   # left out on errors, not 0


# -- execute_tool --------------------------------------------------------------------------------------------

def test_execute_tool_span(fake, crew_otel):
    _kickoff(fake, crew_otel)
    (span,) = _by_op(crew_otel, "execute_tool")
    assert span.name == "execute_tool search"
    assert span.kind == SpanKind.INTERNAL
    assert span.attributes["gen_ai.tool.name"] == "search"
    assert span.attributes["gen_ai.tool.type"] == "function"
    assert span.attributes["gen_ai.agent.name"] == "crew-agent"
    assert span.status.status_code != StatusCode.ERROR


def test_execute_tool_content_off_by_default(fake, crew_otel):
    _kickoff(fake, crew_otel)
    (span,) = _by_op(crew_otel, "execute_tool")
    assert "gen_ai.tool.call.arguments" not in span.attributes
    assert "gen_ai.tool.call.result" not in span.attributes


def test_execute_tool_arguments_and_result_with_capture_on(fake, crew_otel_capture):
    _kickoff(fake, crew_otel_capture)
    (span,) = _by_op(crew_otel_capture, "execute_tool")
    assert json.loads(span.attributes["gen_ai.tool.call.arguments"]) == {"q": "cats"}
    assert "cats are great" in json.loads(span.attributes["gen_ai.tool.call.result"])


def test_failing_tool_span_has_error_type(fake, crew_otel):
    _kickoff(fake, crew_otel, tools=(flaky,), tool_name="flaky")
    (span,) = _by_op(crew_otel, "execute_tool")
    assert span.attributes["gen_ai.tool.name"] == "flaky"
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"]


# -- model spans ---------------------------------------------------------------------------------------------

def test_model_spans_carry_the_genai_attributes(fake, crew_otel):
    _kickoff(fake, crew_otel)
    chats = _by_op(crew_otel, "chat")
    assert len(chats) == 3                                        # one per model call, never two
    for span in chats:
        assert span.name == "chat gpt-4o-mini"
        assert span.kind == SpanKind.CLIENT
        assert span.attributes["gen_ai.provider.name"] == "openai"
        assert span.attributes["gen_ai.request.model"] == "gpt-4o-mini"
        assert span.attributes["gen_ai.response.model"] == "gpt-4o-mini"
        assert span.attributes["gen_ai.agent.name"] == "crew-agent"
    assert sorted(s.attributes["gen_ai.usage.input_tokens"] for s in chats) == [200, 300, 400]
    assert {s.attributes["gen_ai.response.finish_reasons"][0] for s in chats} == {"tool_calls", "stop"}


def test_model_calls_feed_the_client_metrics(fake, crew_otel):
    _kickoff(fake, crew_otel)
    tokens = crew_otel.points("gen_ai.client.token.usage")
    inputs = [p for p in tokens if p.attributes["gen_ai.token.type"] == "input"]
    assert sum(p.sum for p in inputs) == 900
    assert sum(p.count for p in crew_otel.points("gen_ai.client.operation.duration")) == 3


# -- hierarchy -----------------------------------------------------------------------------------------------

def test_one_root_per_trace_run_step_tool_llm(fake, crew_otel):
    _kickoff(fake, crew_otel)
    spans = crew_otel.spans.get_finished_spans()
    assert len({s.context.trace_id for s in spans}) == 1
    roots = [s for s in spans if s.parent is None]
    assert [r.attributes["gen_ai.operation.name"] for r in roots] == ["invoke_agent"]
    by_id = {s.context.span_id: s for s in spans}
    steps = {s.name: s for s in spans if s.name.startswith("step")}
    assert set(steps) == {"step research", "step write"}
    for step in steps.values():
        assert step.parent.span_id == roots[0].context.span_id
    (tool_span,) = _by_op(crew_otel, "execute_tool")
    assert by_id[tool_span.parent.span_id].name == "step research"
    parents = sorted(by_id[c.parent.span_id].name for c in _by_op(crew_otel, "chat"))
    assert parents == ["step research", "step research", "step write"]
