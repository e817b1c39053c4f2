import subprocess
import urllib.request

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest

import agentvigil
from agentvigil.metrics import OVERFLOW

from .conftest import promtool


def exercise(mon, tools=("search",)):
    with mon.run(task_id="t") as run:
        with run.step():
            for tool in tools:
                with run.tool_call(tool, {"q": tool}):
                    pass
            run.llm_usage("openai", "gpt-4o-mini", input_tokens=100, output_tokens=5, cache_read_tokens=50)


def promtool_check(text: bytes):
    tool = promtool()
    if tool is None:
        pytest.skip("promtool not installed (the README test command installs Debian's prometheus)")
    proc = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, timeout=30)
    return proc.returncode, (proc.stdout + proc.stderr).decode()


def test_exposition_is_promtool_clean(make_monitor, registry):
    mon = make_monitor("support-bot")
    exercise(mon)
    agentvigil.CircuitBreaker("openai", registry=registry)
    agentvigil.TokenBudget("session", limit=100, registry=registry)
    code, output = promtool_check(generate_latest(registry))
    assert code == 0, output
    assert output.strip() == "", output  # no lint warnings either


def test_hostile_label_values_are_capped(registry, sample):
    from agentvigil.metrics import AgentMetrics
    metrics = AgentMetrics(registry, max_label_values=10)
    # Reuse the metrics instance through a monitor on this registry
    from agentvigil import metrics as mod
    mod._by_registry[id(registry)] = metrics
    mon = agentvigil.Monitor("a", registry=registry, heartbeat=False)
    hostile = [f'tool-{i}\n"}} evil' + "x" * 500 for i in range(50)]
    exercise(mon, tools=hostile)
    families = {s.labels.get("tool") for m in registry.collect() if m.name == "agent_tool_calls"
                for s in m.samples}
    families.discard(None)
    assert len(families) <= 11 and OVERFLOW in families
    assert all(len(v) <= 128 for v in families)
    assert sample("agentvigil_label_overflow_total", label="tool") == 50 - 10
    code, output = promtool_check(generate_latest(registry))
    assert code == 0, output


def test_metrics_server_binds_loopback_and_serves_exemplars(registry):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    mon = agentvigil.Monitor("ex", registry=registry, tracer_provider=provider, heartbeat=False)
    exercise(mon)
    server, thread = agentvigil.start_metrics_server(port=0, registry=registry)
    try:
        assert server.server_address[0] == "127.0.0.1"
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        plain = urllib.request.urlopen(url, timeout=5).read().decode()
        assert 'agent_runs_total{agent="ex",status="ok"} 1.0' in plain
        assert 'agentvigil_build_info{version="' in plain
        req = urllib.request.Request(url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        om = urllib.request.urlopen(req, timeout=5).read().decode()
        trace_id = format(exporter.get_finished_spans()[0].context.trace_id, "032x")
        assert f'# {{span_id="' in om or f'trace_id="{trace_id}"' in om
        assert f'trace_id="{trace_id}"' in om
    finally:
        server.shutdown()
