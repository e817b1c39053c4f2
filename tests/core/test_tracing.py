import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import agentvigil


@pytest.fixture
def spans(registry):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def run_once(mon):
    with mon.run(task_id="t-1") as run:
        with run.step():
            with run.tool_call("search", {"q": "secret user text"}):
                pass
            run.llm_usage("openai", "gpt-4o-mini", input_tokens=1200, output_tokens=80, cache_read_tokens=1000,
                          duration_s=0.5, response_model="gpt-4o-mini-2024-07-18")


def test_genai_spans_and_nesting(registry, spans):
    provider, exporter = spans
    mon = agentvigil.Monitor("support-bot", registry=registry, tracer_provider=provider, heartbeat=False)
    run_once(mon)
    by_name = {s.name: s for s in exporter.get_finished_spans()}
    assert set(by_name) == {"invoke_agent support-bot", "step", "execute_tool search", "chat gpt-4o-mini"}
    run, step = by_name["invoke_agent support-bot"], by_name["step"]
    tool, chat = by_name["execute_tool search"], by_name["chat gpt-4o-mini"]
    assert step.parent.span_id == run.context.span_id
    assert tool.parent.span_id == step.context.span_id and chat.parent.span_id == step.context.span_id
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run.attributes["gen_ai.agent.name"] == "support-bot"
    assert tool.attributes["gen_ai.tool.name"] == "search"
    assert chat.attributes["gen_ai.provider.name"] == "openai"
    assert chat.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert chat.attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert chat.attributes["gen_ai.usage.input_tokens"] == 1200
    assert chat.attributes["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert (chat.end_time - chat.start_time) / 1e9 == pytest.approx(0.5, abs=0.05)


def test_no_raw_arguments_unless_opted_in(registry, spans):
    provider, exporter = spans
    run_once(agentvigil.Monitor("a", registry=registry, tracer_provider=provider, heartbeat=False))
    dump = repr([dict(s.attributes) for s in exporter.get_finished_spans()])
    assert "secret user text" not in dump and "agentvigil.tool.args_hash" in dump
    exporter.clear()
    run_once(agentvigil.Monitor("b", registry=registry, tracer_provider=provider, heartbeat=False,
                                capture_content=True))
    dump = repr([dict(s.attributes) for s in exporter.get_finished_spans()])
    assert "secret user text" in dump


def test_error_spans(registry, spans):
    provider, exporter = spans
    mon = agentvigil.Monitor("a", registry=registry, tracer_provider=provider, heartbeat=False)
    with mon.run() as run:
        with pytest.raises(TimeoutError):
            with run.tool_call("slow"):
                raise TimeoutError()
    tool = [s for s in exporter.get_finished_spans() if s.name == "execute_tool slow"][0]
    assert tool.status.status_code.name == "ERROR" and tool.attributes["error.type"] == "TimeoutError"


def test_no_tracer_without_configuration(registry, monkeypatch):
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    mon = agentvigil.Monitor("a", registry=registry, heartbeat=False)
    assert mon.tracer is None


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_dead_otlp_endpoint_does_not_block_raise_or_grow(tmp_path):
    """Spans go to a collector that is not there: the agent must not notice."""
    script = textwrap.dedent("""
        import resource, time, agentvigil
        mon = agentvigil.Monitor("dead-collector", heartbeat=False)
        assert mon.tracer is not None
        t0 = time.perf_counter()
        for i in range(3000):
            with mon.run() as run:
                with run.tool_call("t", {"i": i}):
                    pass
        elapsed = time.perf_counter() - t0
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for i in range(6000):
            with mon.run() as run:
                with run.tool_call("t", {"i": i}):
                    pass
        rss2 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(elapsed, rss1, rss2)
    """)
    env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{_closed_port()}",
               OTEL_EXPORTER_OTLP_TIMEOUT="1", OTEL_BSP_SCHEDULE_DELAY="50")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    total = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    elapsed, rss1, rss2 = proc.stdout.split()
    assert float(elapsed) < 10          # 3000 runs; nothing waited on the network
    assert int(rss2) - int(rss1) < 50_000   # KiB: the span queue is bounded, memory does not grow with spans
    assert total < 20                   # exit was not held by the dead collector
