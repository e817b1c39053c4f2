"""A classic LangChain ReAct agent (langchain_classic's AgentExecutor, a real one): the actions it could not parse
or dispatch run as ExceptionTool / InvalidTool; they are recorded as rejected actions, not as tool calls, so
the loop detectors and the tool error ratio do not count a model's format errors as a tool failing."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core")
agents = pytest.importorskip("langchain_classic.agents")

from langchain_core.language_models.fake import FakeListLLM  # noqa: E402
from langchain_core.prompts import PromptTemplate  # noqa: E402
from langchain_core.tools import tool  # noqa: E402

from agentvigil import events as ev  # noqa: E402
from agentvigil.instrumentation.langchain import AgentVigilCallbackHandler  # noqa: E402

A = {"agent": "itest"}
PROMPT = PromptTemplate.from_template(
    "Answer with the tools {tools} ({tool_names}).\nQuestion: {input}\nThought:{agent_scratchpad}")


@tool
def search(q: str) -> str:
    """Search the web."""
    return f"results for {q}"


def test_unparsable_and_unknown_actions_are_rejected_not_tool_calls(monitor, sample):
    llm = FakeListLLM(responses=[
        "I will just answer in prose",                                   # no Action: → ExceptionTool
        "Thought: look it up\nAction: lookup\nAction Input: cats",       # not a tool → InvalidTool
        "Thought: search\nAction: search\nAction Input: cats",
        "Thought: done\nFinal Answer: 42",
    ])
    executor = agents.AgentExecutor(agent=agents.create_react_agent(llm, [search], PROMPT), tools=[search],
                                    handle_parsing_errors=True, max_iterations=6)
    seen: list = []

    class ToolEnds:   # a pipeline sink: what every sink (metrics, spans, recorder) is given
        consumes = frozenset({ev.TOOL_END})

        def handle(self, event):
            seen.append(event)

    monitor.pipeline.add_sink(ToolEnds())
    handler = AgentVigilCallbackHandler(monitor)
    assert executor.invoke({"input": "how many cats?"}, config={"callbacks": [handler]})["output"] == "42"

    assert [(e.tool_name, e.status, e.error_kind) for e in seen] == [
        ("_Exception", "rejected", "parse_error"), ("invalid_tool", "rejected", "unknown_tool"),
        ("search", "ok", None)]
    assert seen[0].result_fingerprint is not None   # what the model was told back, fingerprinted like a result
    assert sample("agent_tool_calls_total", tool="_Exception", status="rejected", **A) == 1
    assert sample("agent_tool_calls_total", tool="invalid_tool", status="rejected", **A) == 1
    assert sample("agent_tool_calls_total", tool="search", status="ok", **A) == 1
    assert sample("agent_tool_errors_total", tool="_Exception", **A) == 0
    assert handler.active == 0
