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
