"""GenAI semconv for LangChain: the real ChatOpenAI against the fake provider, recorded by the callback handler
(the OpenAI SDK itself not instrumented), and a tool's result on its execute_tool span with capture on."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("langchain_core")
langchain_openai = pytest.importorskip("langchain_openai")

from langchain_core.tools import tool  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

import agentvigil  # noqa: E402
from agentvigil.instrumentation.langchain import AgentVigilCallbackHandler  # noqa: E402


@tool
def search(q: str) -> str:
    """Search the web."""
    return f"results for {q}"


@pytest.fixture
def mon(otel):
    m = agentvigil.Monitor("lc", registry=CollectorRegistry(), tracer_provider=otel.tracer_provider,
                           heartbeat=False, capture_content=True)
    yield m
    m.close()


def test_chat_model_span(otel, mon, fake):
    handler = AgentVigilCallbackHandler(monitor=mon)
    model = langchain_openai.ChatOpenAI(model="gpt-4o-mini", base_url=fake.openai_base_url, api_key="k",
                                        temperature=0.3, max_tokens=20, max_retries=0)
    with mon.run(task_id="t"):
        model.invoke("hi", config={"callbacks": [handler]})
    (span,) = otel.model_spans()
    a = span.attributes
    assert span.kind == SpanKind.CLIENT
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.temperature"] == 0.3
    assert a["gen_ai.request.max_tokens"] == 20
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.usage.input_tokens"] > 0


def test_tool_result_on_execute_tool_with_capture(otel, mon):
    handler = AgentVigilCallbackHandler(monitor=mon)
    with mon.run(task_id="t"):
        search.invoke({"q": "cats"}, config={"callbacks": [handler]})
    (span,) = [s for s in otel.spans.get_finished_spans()
               if s.attributes.get("gen_ai.operation.name") == "execute_tool"]
    assert span.attributes["gen_ai.tool.type"] == "function"
    assert json.loads(span.attributes["gen_ai.tool.call.result"]) == "results for cats"
