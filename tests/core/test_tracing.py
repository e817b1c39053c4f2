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
    """One run; returns the wall times (s) just before and just after the after-the-fact ``llm_usage``."""
    with mon.run(task_id="t-1") as run, run.step():
        with run.tool_call("search", {"q": "secret user text"}):
            pass
        before = time.time()
        run.llm_usage("openai", "gpt-4o-mini", input_tokens=1200, output_tokens=80, cache_read_tokens=1000,
                      duration_s=0.5, response_model="gpt-4o-mini-2024-07-18")
        after = time.time()
    return before, after


# int(wall_seconds * 1e9) loses well under a microsecond; compare span times with this much slack.
FLOAT_NS = 1e-6


def assert_span_covers(span, start_from, start_to, end_from, end_to):
    start, end = span.start_time / 1e9, span.end_time / 1e9
    assert start_from - FLOAT_NS <= start <= start_to + FLOAT_NS, (start_from, start, start_to)
    assert end_from - FLOAT_NS <= end <= end_to + FLOAT_NS, (end_from, end, end_to)


def test_genai_spans_and_nesting(registry, spans):
    provider, exporter = spans
    mon = agentvigil.Monitor("support-bot", registry=registry, tracer_provider=provider, heartbeat=False)
    before, after = run_once(mon)
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
    # Reported after the fact: the span is back-dated by duration_s and ends when llm_usage records it. Pricing
    # (reading the bundled price snapshot on the first priced call) happens inside it, so there is no upper bound.
    assert_span_covers(chat, before - 0.5, after - 0.5, before, after)
    assert (chat.end_time - chat.start_time) / 1e9 >= 0.5 - FLOAT_NS


def test_live_llm_call_span_covers_the_call(registry, spans):
    provider, exporter = spans
    mon = agentvigil.Monitor("a", registry=registry, tracer_provider=provider, heartbeat=False)
    with mon.run() as run:
        before = time.time()
        with run.llm_call("openai", "gpt-4o-mini") as call:
            entered = time.time()
            time.sleep(0.05)
            call.set_usage(input_tokens=100, output_tokens=10)
            leaving = time.time()
        after = time.time()
    chat = next(s for s in exporter.get_finished_spans() if s.name == "chat gpt-4o-mini")
    # Starts on entry, ends on exit (after pricing, which is part of the span).
    assert_span_covers(chat, before, entered, leaving, after)
    assert (chat.end_time - chat.start_time) / 1e9 >= 0.05
    assert chat.attributes["gen_ai.usage.input_tokens"] == 100


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
    with mon.run() as run, pytest.raises(TimeoutError), run.tool_call("slow"):
        raise TimeoutError()
    tool = next(s for s in exporter.get_finished_spans() if s.name == "execute_tool slow")
    assert tool.status.status_code.name == "ERROR" and tool.attributes["error.type"] == "TimeoutError"


def test_no_tracer_without_configuration(registry, monkeypatch):
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    mon = agentvigil.Monitor("a", registry=registry, heartbeat=False)
    assert mon.tracer is None


def test_dead_otlp_endpoint_does_not_block_raise_or_grow(tmp_path):
    """Spans go to a collector that accepts connections and never answers, with a one-hour export timeout:
    if a run or the exit waited on the network, the child would hang until the subprocess timeout fails the
    test. No wall-clock bound is asserted (shared machine); the timeout only catches a hang."""
    script = textwrap.dedent("""
        import resource, agentvigil
        mon = agentvigil.Monitor("dead-collector", heartbeat=False)
        assert mon.tracer is not None
        for i in range(3000):
            with mon.run() as run:
                with run.tool_call("t", {"i": i}):
                    pass
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for i in range(6000):
            with mon.run() as run:
                with run.tool_call("t", {"i": i}):
                    pass
        rss2 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(rss1, rss2)
    """)
    with socket.socket() as black_hole:  # listens (the kernel completes the handshake) but never reads
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(64)
        env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{black_hole.getsockname()[1]}",
                   OTEL_EXPORTER_OTLP_TIMEOUT="3600", OTEL_BSP_SCHEDULE_DELAY="50")
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                              check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rss1, rss2 = proc.stdout.split()
    assert int(rss2) - int(rss1) < 50_000   # KiB: the span queue is bounded, memory does not grow with spans


@pytest.fixture
def fresh_otel(monkeypatch):
    from agentvigil.sinks import otel

    for var in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_SDK_DISABLED",
                "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(otel, "_own_provider", None)
    monkeypatch.setattr(otel, "_warned", set())
    return otel


def test_otlp_protocol_defaults_to_http(fresh_otel):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    assert isinstance(fresh_otel._otlp_span_exporter(), OTLPSpanExporter)


def test_otlp_grpc_protocol_uses_the_grpc_exporter(fresh_otel, monkeypatch):
    grpc_exporter = pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")  # the traces-specific one wins
    assert isinstance(fresh_otel._otlp_span_exporter(), grpc_exporter.OTLPSpanExporter)


def test_otlp_grpc_without_the_extra_warns_once_and_traces_nothing(fresh_otel, monkeypatch, registry, caplog):
    # None in sys.modules makes the import fail as if the grpc extra were not installed
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc", None)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with caplog.at_level("WARNING", logger="agentvigil"):
        monitors = [agentvigil.Monitor(f"a{i}", registry=registry, heartbeat=False) for i in range(3)]
        with monitors[0].run() as run, run.tool_call("t"):
            pass
    assert all(m.tracer is None for m in monitors)
    warnings = [r.getMessage() for r in caplog.records if "agentvigil[grpc]" in r.getMessage()]
    assert warnings == ["agentvigil: OTLP gRPC needs pip install agentvigil[grpc]; spans are not exported"]
