"""CrewAI against the fake provider: a real Crew, real Agent/Task/tool objects, CrewAI's own LLM class (native
OpenAI provider). Heavy, so marked ``crewai`` and run by ``scripts/test-crewai.sh`` in its own venv."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.crewai

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
crewai = pytest.importorskip("crewai")
pytest.importorskip("openai")

from crewai import LLM, Agent, Crew, Task  # noqa: E402
from crewai.tools import tool  # noqa: E402

from agentvigil.instrumentation.crewai import CrewAIInstrumentor, CrewCallbacks  # noqa: E402
from agentvigil.instrumentation.openai import OpenAIInstrumentor  # noqa: E402
from agentvigil.testing import Reply  # noqa: E402

A = {"agent": "itest"}
M = {"provider": "openai", "model": "gpt-4o-mini", **A}


@tool("search")
def search(q: str) -> str:
    """Search the web."""
    return "cats are great"


@tool("flaky")
def flaky(q: str) -> str:
    """Always fails."""
    raise ValueError("upstream 502")


def _crew(fake, callbacks=None):
    llm = LLM(model="openai/gpt-4o-mini", base_url=fake.openai_base_url, api_key="k")
    step_cb = callbacks.step_callback if callbacks else None
    researcher = Agent(role="Researcher", goal="find facts", backstory="b", llm=llm, tools=[search, flaky],
                       step_callback=step_cb, max_iter=4)
    writer = Agent(role="Writer", goal="write", backstory="b", llm=llm)
    tasks = [Task(name="research", description="Research cats", expected_output="facts", agent=researcher),
             Task(name="write", description="Write a briefing", expected_output="text", agent=writer)]
    return Crew(agents=[researcher, writer], tasks=tasks,
                task_callback=callbacks.task_callback if callbacks else None)


def _script(fake):
    fake.enqueue(
        Reply(text="", tool_calls=[{"name": "search", "arguments": {"q": "cats"}}], input_tokens=300, output_tokens=20),
        Reply(text="", tool_calls=[{"name": "flaky", "arguments": {"q": "dogs"}}], input_tokens=350, output_tokens=20),
        Reply(text="Thought: I know.\nFinal Answer: cats are great", input_tokens=400, output_tokens=30),
        Reply(text="Thought: done\nFinal Answer: briefing", input_tokens=200, output_tokens=10),
    )


@pytest.fixture
def instrumented(monitor):
    oai, crew = OpenAIInstrumentor(), CrewAIInstrumentor()
    oai.instrument(monitor=monitor)
    crew.instrument(monitor=monitor)
    yield
    crew.uninstrument()
    oai.uninstrument()


def _flush():
    from crewai.events import crewai_event_bus

    crewai_event_bus.flush()


def test_crew_kickoff_is_a_run_with_steps_tools_and_llm_calls(fake, instrumented, sample, spans):
    _script(fake)
    result = _crew(fake).kickoff()
    _flush()
    assert "briefing" in str(result)
    assert sample("agent_runs_total", status="ok", **A) == 1
    assert sample("agent_steps_total", **A) == 2                       # one per task
    assert sample("agent_tool_calls_total", tool="search", status="ok", **A) == 1
    assert sample("agent_tool_calls_total", tool="flaky", status="error", **A) == 1
    assert sample("agent_llm_calls_total", status="ok", **M) == 4
    assert sample("agent_tokens_total", type="input", **M) == 1250
    assert sample("agent_run_cost_usd_sum", **A) > 0                     # LLM calls attributed to the run
    names = {s.name for s in spans.get_finished_spans()}
    assert {"invoke_agent itest", "chat gpt-4o-mini", "execute_tool search"} <= names


def test_callbacks_adapter_with_real_callback_objects(fake, monitor, sample):
    """No patching: CrewAI calls our step_callback / task_callback with its own objects."""
    cb = CrewCallbacks(monitor)
    _script(fake)
    with monitor.run(task_id="crew"):
        _crew(fake, cb).kickoff()
    assert cb.steps >= 1 and cb.tasks == 2
    assert sample("agent_steps_total", **A) == 2
    assert sample("agent_runs_total", status="ok", **A) == 1


def test_kickoff_failure_marks_the_run_failed(fake, instrumented, sample):
    fake.enqueue(*[Reply.error(401, "bad key")] * 6)
    with pytest.raises(Exception):  # noqa: B017 - CrewAI may wrap the SDK's AuthenticationError
        _crew(fake).kickoff()
    _flush()
    assert sample("agent_runs_total", status="error", **A) == 1
    assert sample("agent_llm_errors_total", kind="auth", **M) >= 1


def test_uninstrument_restores_crew(monitor):
    import wrapt

    proxy = getattr(wrapt, "BaseObjectProxy", wrapt.ObjectProxy)
    original = Crew.__dict__["kickoff"]
    inst = CrewAIInstrumentor()
    inst.instrument(monitor=monitor)
    assert isinstance(Crew.__dict__["kickoff"], proxy)
    inst.uninstrument()
    assert Crew.__dict__["kickoff"] is original
