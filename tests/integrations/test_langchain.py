"""LangChain / LangGraph: fake chat models, real tools, a real LangGraph graph."""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langchain_core")
langgraph_graph = pytest.importorskip("langgraph.graph")

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.tools import tool  # noqa: E402

import agentvigil  # noqa: E402
from agentvigil.instrumentation.langchain import (  # noqa: E402
    AgentVigilCallbackHandler,
    LangChainInstrumentor,
    instrument_graph,
    monitored_node,
)

START, END, StateGraph = langgraph_graph.START, langgraph_graph.END, langgraph_graph.StateGraph
A = {"agent": "itest"}
USAGE = {"input_tokens": 100, "output_tokens": 10, "total_tokens": 110, "input_token_details": {"cache_read": 60}}


class FakeModel(GenericFakeChatModel):
    """GenericFakeChatModel with a model name and tool binding (tool calls come from the scripted messages)."""

    model_name: str = "fake-model"

    def bind_tools(self, tools: Any, **kwargs: Any) -> "FakeModel":
        return self


@tool
def search(q: str) -> str:
    """Search the web."""
    return f"results for {q}"


@tool
def flaky(q: str) -> str:
    """Always fails."""
    raise ValueError("upstream 502")


def _tool_call(name, args, i):
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"call_{i}"}], usage_metadata=USAGE)


def _react_graph(model):
    from langgraph.prebuilt import ToolNode

    class State(TypedDict):
        messages: Annotated[list, operator.add]

    def agent(state):
        return {"messages": [model.invoke(state["messages"])]}

    def route(state):
        return "tools" if getattr(state["messages"][-1], "tool_calls", None) else END

    builder = StateGraph(State)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([search, flaky], handle_tool_errors=True))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", route, ["tools", END])
    builder.add_edge("tools", "agent")
    return builder.compile()


def _script():
    return iter([_tool_call("search", {"q": "cats"}, 1), _tool_call("flaky", {"q": "dogs"}, 2),
                 AIMessage(content="done", usage_metadata=USAGE)])


def test_langgraph_react_agent_graph_level_hook(monitor, sample, spans):
    graph = instrument_graph(_react_graph(FakeModel(messages=_script())), monitor)
    out = graph.invoke({"messages": [HumanMessage("find cats")]}, config={"metadata": {"task_id": "t-9"}})
    assert out["messages"][-1].content == "done"

    assert sample("agent_runs_total", status="ok", **A) == 1
    assert sample("agent_steps_total", **A) == 5          # agent, tools, agent, tools, agent
    assert sample("agent_tool_calls_total", tool="search", status="ok", **A) == 1
    assert sample("agent_tool_calls_total", tool="flaky", status="error", **A) == 1
    assert sample("agent_tool_errors_total", tool="flaky", kind="tool_error", **A) == 1
    m = {"provider": "fakemodel", "model": "fake-model", **A}
    assert sample("agent_llm_calls_total", status="ok", **m) == 3
    assert sample("agent_tokens_total", type="input", **m) == 300
    assert sample("agent_tokens_total", type="cache_read", **m) == 180
    assert sample("agent_cache_hit_ratio", **m) == pytest.approx(0.6)

    finished = spans.get_finished_spans()
    (run_span,) = [s for s in finished if s.name == "invoke_agent itest"]
    assert run_span.attributes["agentvigil.task_id"] == "t-9"
    steps = [s for s in finished if s.name.startswith("step")]
    assert [s.name for s in sorted(steps, key=lambda s: s.start_time)] == [
        "step agent", "step tools", "step agent", "step tools", "step agent"]
    assert all(s.parent.span_id == run_span.context.span_id for s in steps)
    tool_span = next(s for s in finished if s.name == "execute_tool search")
    assert tool_span.parent.span_id in {s.context.span_id for s in steps}
    llm = [s for s in finished if s.name == "chat fake-model"]
    assert len(llm) == 3 and llm[0].attributes["gen_ai.usage.input_tokens"] == 100


def test_langgraph_async(monitor, sample):
    graph = instrument_graph(_react_graph(FakeModel(messages=_script())), monitor)
    out = asyncio.run(graph.ainvoke({"messages": [HumanMessage("find cats")]}))
    assert out["messages"][-1].content == "done"
    assert sample("agent_runs_total", status="ok", **A) == 1
    assert sample("agent_steps_total", **A) == 5
    assert sample("agent_tool_calls_total", tool="search", status="ok", **A) == 1


def test_handler_inside_an_existing_run_uses_it(monitor, sample):
    handler = AgentVigilCallbackHandler(monitor)
    graph = _react_graph(FakeModel(messages=_script()))
    with monitor.run(task_id="outer") as run:
        graph.invoke({"messages": [HumanMessage("hi")]}, config={"callbacks": [handler]})
        assert run.steps == 5
    assert sample("agent_runs_total", status="ok", **A) == 1
    assert handler.active == 0  # nothing leaked


def test_kill_switch_stops_the_graph_at_the_next_boundary(monitor, sample):
    @tool
    def stopper(q: str) -> str:
        """Kills the run."""
        agentvigil.current_run().kill("operator")
        return "ok"

    class State(TypedDict):
        n: Annotated[list, operator.add]

    def first(state):
        return {"n": [stopper.invoke({"q": "x"})]}

    def second(state):  # never runs
        raise AssertionError("the run was killed before this node")

    builder = StateGraph(State)
    builder.add_node("first", first)
    builder.add_node("second", second)
    builder.add_edge(START, "first")
    builder.add_edge("first", "second")
    builder.add_edge("second", END)
    graph = instrument_graph(builder.compile(), monitor)
    with pytest.raises(agentvigil.RunKilled):
        graph.invoke({"n": []})
    assert sample("agent_runs_total", status="killed", **A) == 1


def test_monitored_node_decorator(monitor, sample, registry):
    @monitored_node("research")
    def research(state):
        return {"n": ["r"]}

    @monitored_node
    async def summarize(state):
        return {"n": ["s"]}

    class State(TypedDict):
        n: Annotated[list, operator.add]

    builder = StateGraph(State)
    builder.add_node("research", research)
    builder.add_node("summarize", summarize)
    builder.add_edge(START, "research")
    builder.add_edge("research", "summarize")
    builder.add_edge("summarize", END)
    graph = builder.compile()

    async def run_it():
        async with monitor.run():
            return await graph.ainvoke({"n": []})

    assert asyncio.run(run_it())["n"] == ["r", "s"]
    assert sample("agent_steps_total", **A) == 2
    # with the graph-level hook as well: still one step per node
    asyncio.run(instrument_graph(graph, monitor).ainvoke({"n": []}))
    assert sample("agent_steps_total", **A) == 4
    # outside any run the decorator marks progress instead
    before = sample("agent_progress_timestamp_seconds", **A)
    monitored_node("x", monitor=monitor)(lambda s: s)({})
    assert sample("agent_progress_timestamp_seconds", **A) >= before


def test_chain_with_instrumentor_zero_code(monitor, sample):
    import langchain_core.callbacks as cb

    original = cb.BaseCallbackManager.__dict__["__init__"]
    inst = LangChainInstrumentor()
    inst.instrument(monitor=monitor)
    try:
        chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | FakeModel(
            messages=iter([AIMessage(content="a", usage_metadata=USAGE)]))
        assert chain.invoke({"q": "hello"}).content == "a"
        search.invoke({"q": "no run here"})  # a tool call outside any chain run: not recorded, no error
    finally:
        inst.uninstrument()
    assert cb.BaseCallbackManager.__dict__["__init__"] is original
    assert sample("agent_runs_total", status="ok", **A) == 1  # the chain; the bare tool has no run to join
    assert sample("agent_llm_calls_total", status="ok", provider="fakemodel", model="fake-model", **A) == 1
    assert sample("agent_tool_calls_total", tool="search", status="ok", **A) == 0


def test_llm_error_is_recorded(monitor, sample):
    class Broken(FakeModel):
        def _generate(self, *a, **k):
            raise TimeoutError("model timed out")

    handler = AgentVigilCallbackHandler(monitor)
    with pytest.raises(TimeoutError):
        Broken(messages=iter([])).invoke("hi", config={"callbacks": [handler]})
    m = {"provider": "broken", "model": "fake-model", **A}
    assert sample("agent_llm_errors_total", kind="timeout", **m) == 1
    assert sample("agent_runs_total", status="error", **A) == 0  # a bare model call is not a chain run


def test_handler_failures_never_reach_the_chain(monitor):
    class BadMonitor:
        def start_run(self, **kw):
            raise RuntimeError("bug in agentvigil")

    handler = AgentVigilCallbackHandler(BadMonitor())
    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | FakeModel(messages=iter([AIMessage("ok")]))
    assert chain.invoke({"q": "x"}, config={"callbacks": [handler]}).content == "ok"


def test_chat_openai_is_recorded_once_with_both_instrumentors(fake, monitor, sample):
    langchain_openai = pytest.importorskip("langchain_openai")
    from agentvigil.instrumentation.openai import OpenAIInstrumentor
    from agentvigil.testing import Reply

    oai, lc = OpenAIInstrumentor(), LangChainInstrumentor()
    oai.instrument(monitor=monitor)
    lc.instrument(monitor=monitor)
    try:
        fake.enqueue(Reply(input_tokens=1000, cache_read_tokens=800, output_tokens=20))
        model = langchain_openai.ChatOpenAI(model="gpt-4o-mini", base_url=fake.openai_base_url, api_key="k",
                                            max_retries=0)
        chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | model
        assert chain.invoke({"q": "hello"}).content == "Hello from the fake provider."
    finally:
        lc.uninstrument()
        oai.uninstrument()
    m = {"provider": "openai", "model": "gpt-4o-mini", **A}
    assert sample("agent_llm_calls_total", status="ok", **m) == 1   # the SDK wrapper, not twice
    assert sample("agent_tokens_total", type="cache_read", **m) == 800
    assert sample("agent_runs_total", status="ok", **A) == 1
    assert sample("agent_run_cost_usd_sum", **A) > 0                 # the SDK call was attributed to the run


def test_langgraph_call_of_a_tool_the_node_does_not_have_is_a_rejected_action(monitor, sample):
    """ToolNode answers a call of an unknown tool itself (an error ToolMessage, no tool run, no tool callback):
    recorded as a rejected action, its own rate signal, neither a tool call nor nothing at all."""
    from agentvigil import events as ev

    seen: list = []

    class ToolEnds:
        consumes = frozenset({ev.TOOL_END})

        def handle(self, event):
            seen.append(event)

    monitor.pipeline.add_sink(ToolEnds())
    script = iter([_tool_call("lookup", {"q": "cats"}, 1), _tool_call("search", {"q": "cats"}, 2),
                   AIMessage(content="done", usage_metadata=USAGE)])
    graph = instrument_graph(_react_graph(FakeModel(messages=script)), monitor)
    graph.invoke({"messages": [HumanMessage("hi")]})
    assert [(e.tool_name, e.status, e.error_kind) for e in seen] == [
        ("lookup", "rejected", "unknown_tool"), ("search", "ok", None)]
    assert seen[0].result_fingerprint is not None
    assert sample("agent_tool_calls_total", tool="lookup", status="rejected", **A) == 1
    assert sample("agent_tool_errors_total", tool="lookup", **A) == 0
    assert sample("agent_tool_calls_total", tool="search", status="ok", **A) == 1
