import io
import os
import subprocess
import sys
import threading
import time
import urllib.request

from prometheus_client import REGISTRY

from agentvigil.demo import run_demo


def value(name, **labels):
    return REGISTRY.get_sample_value(name, labels)


def test_demo_injects_every_failure_and_keeps_healthy_agents_clean(tmp_path):
    out = io.StringIO()
    result = {}
    demo = threading.Thread(target=lambda: result.setdefault("agents", run_demo(
        duration=9, port=None, speed=10, record_dir=str(tmp_path), seed=7, status_every=3, out=out)))
    demo.start()
    time.sleep(7.5)  # scenario t≈75: every failure has started; check while the fleet is still running
    # zombie: alive, not progressing (ops-agent hangs in fetch_feed since t=40, i.e. 3.5 s ago)
    assert value("agent_heartbeat_timestamp_seconds", agent="ops-agent") - \
        value("agent_progress_timestamp_seconds", agent="ops-agent") > 2
    assert value("agent_active_runs", agent="ops-agent") == 1
    demo.join(30)
    by_name = {a.name: a for a in result["agents"]}
    # tool loop and cost spike
    assert value("agent_loop_detections_total", agent="research-agent", detector="same_result") >= 3
    assert value("agent_cost_spikes_total", agent="research-agent") >= 1
    assert value("agent_tool_errors_total", agent="research-agent", tool="web_search", kind="rate_limit") >= 1
    # provider outage opened the breaker
    assert by_name["billing-agent"].breaker.state in ("open", "half_open")
    assert value("agent_circuit_breaker_transitions_total", breaker="azure-openai", to="open",
                 reason="server_error") >= 1
    assert value("agent_tool_errors_total", agent="billing-agent", tool="crm_lookup", kind="auth") >= 1
    # budget past 80 % and a cache-ratio drop below 60 %
    assert value("agent_budget_utilization_ratio", budget="coder-agent") > 0.8
    assert value("agent_cache_hit_ratio", agent="coder-agent", provider="anthropic", model="claude-haiku-4-5") < 0.6
    # healthy controls
    for healthy in ("support-bot", "triage-bot"):
        assert (value("agent_loop_detections_total", agent=healthy, detector="repeat_call") or 0) == 0
        assert (value("agent_cost_spikes_total", agent=healthy) or 0) == 0
        assert value("agent_runs_total", agent=healthy, status="ok") >= 5
        assert (value("agent_runs_total", agent=healthy, status="error") or 0) == 0
    assert value("agent_cache_hit_ratio", agent="support-bot", provider="openai", model="gpt-4o-mini") > 0.7
    # triage-bot never caches: ratio 0 and no cache_read tokens, so "caching in use" rules skip it
    assert value("agent_cache_hit_ratio", agent="triage-bot", provider="openai", model="gpt-4o-mini") == 0
    assert value("agent_tokens_total", agent="triage-bot", provider="openai", model="gpt-4o-mini",
                 type="cache_read") in (None, 0.0)
    # recorded sessions and live status
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 6
    assert (tmp_path / "runaway-baseline.json").is_file()   # what the agents' ended runs taught, for the next start
    assert "research-agent" in out.getvalue() and "breaker=open" in out.getvalue()


def test_demo_cli_serves_metrics(tmp_path):
    """The demo serves /metrics while it runs, and SIGTERM ends it cleanly (exit 0).

    The demo runs long enough for a slow, shared machine to import, bind and finish a run; the test stops it
    as soon as it has seen what it checks, so it is not timing-dependent.
    """
    import socket
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    proc = subprocess.Popen([sys.executable, "-m", "agentvigil", "demo", "--duration", "120", "--speed", "10",
                             "--port", str(port), "--record-dir", str(tmp_path), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wanted = 'agent_runs_total{agent="support-bot",status="ok"}'
    try:
        body = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and wanted not in body and proc.poll() is None:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                pass
            time.sleep(0.2)
        assert wanted in body
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.communicate()


def test_demo_sends_spans_over_otlp_when_an_endpoint_is_set(tmp_path):
    """A loopback OTLP/HTTP receiver gets the demo's spans (protobuf ExportTraceServiceRequest)."""
    import http.server
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    names = set()

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    names.update(span.name for span in scope_spans.spans)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{server.server_port}",
               OTEL_BSP_SCHEDULE_DELAY="200")
    try:
        proc = subprocess.run([sys.executable, "-m", "agentvigil", "demo", "--duration", "3", "--speed", "10",
                               "--port", "0", "--no-record", "--quiet"], env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
    finally:
        server.shutdown()
    assert "invoke_agent support-bot" in names and "execute_tool web_search" in names
    assert any(n.startswith("chat ") for n in names)
