"""invoke_agent and execute_tool spans (the Monitor API)."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry

import agentvigil


def _monitor(otel, capture):
    return agentvigil.Monitor("agent-a", registry=CollectorRegistry(), tracer_provider=otel.tracer_provider,
                              heartbeat=False, capture_content=capture)


def _by_op(otel, op):
    return [s for s in otel.spans.get_finished_spans() if s.attributes.get("gen_ai.operation.name") == op]


def test_invoke_agent_has_provider_name(otel):
    mon = _monitor(otel, False)
    with mon.run(task_id="t"):
        pass
    (span,) = _by_op(otel, "invoke_agent")
    assert span.attributes["gen_ai.provider.name"]   # required by the spec
    assert span.attributes["gen_ai.agent.name"] == "agent-a"
    mon.close()


def test_execute_tool_has_type_and_no_result_by_default(otel):
    mon = _monitor(otel, False)
    with mon.run(task_id="t") as run:
        with run.tool_call("search", {"q": "x"}) as call:
            call.set_result({"hits": 3})
    (span,) = _by_op(otel, "execute_tool")
    assert span.attributes["gen_ai.tool.type"] == "function"
    assert "gen_ai.tool.call.result" not in span.attributes
    assert "gen_ai.tool.call.arguments" not in span.attributes
    mon.close()


def test_execute_tool_result_with_capture_on(otel):
    mon = _monitor(otel, True)
    with mon.run(task_id="t") as run:
        with run.tool_call("search", {"q": "x"}) as call:
            call.set_result({"hits": 3})
    (span,) = _by_op(otel, "execute_tool")
    assert json.loads(span.attributes["gen_ai.tool.call.result"]) == {"hits": 3}
    assert json.loads(span.attributes["gen_ai.tool.call.arguments"]) == {"q": "x"}
    mon.close()


def test_agents_sharing_a_process_are_told_apart_on_every_span(otel):
    """service.name is the process's (one resource per provider); each span names its agent (gen_ai.agent.name)."""
    a = _monitor(otel, False)
    b = agentvigil.Monitor("agent-b", registry=CollectorRegistry(), tracer_provider=otel.tracer_provider,
                           heartbeat=False)
    for mon in (a, b):
        with mon.run(task_id="t") as run:
            with run.step("plan"):
                with run.tool_call("search", {"q": 1}):
                    pass
    names = {}
    for span in otel.spans.get_finished_spans():
        names.setdefault(span.attributes["gen_ai.agent.name"], set()).add(span.attributes.get("gen_ai.operation.name"))
    assert names["agent-a"] == names["agent-b"] == {"invoke_agent", "execute_tool", None}   # None: the step span
    a.close()
    b.close()
