"""Core benchmarks: run `python bench/bench_core.py` (writes a Markdown table to stdout).

Every comparison is measured side by side in one process: batches of A and B alternate, each batch's
per-operation time is recorded, and we report medians and the ratio of medians (the machines are shared
and noisy, so means and separate runs would lie).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

import agentvigil
from agentvigil.replay import replay

BATCH = 2000
ROUNDS = 15


class DiscardExporter(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS


def per_op(fn, n=BATCH) -> float:
    t0 = time.perf_counter()
    fn(n)
    return (time.perf_counter() - t0) / n * 1e6  # µs


def side_by_side(a, b, rounds=ROUNDS):
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(per_op(a))
        tb.append(per_op(b))
    return statistics.median(ta), statistics.median(tb)


def bench_tool_call_tracing():
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DiscardExporter(), max_queue_size=100_000))
    tracer = provider.get_tracer("bench")
    reg = CollectorRegistry()
    mon = agentvigil.Monitor("bench", registry=reg, tracer_provider=provider, heartbeat=False)
    run = mon.start_run()
    step = run.start_step()
    base_reg = CollectorRegistry()
    calls = Counter("calls", "", ["agent", "tool", "status"], registry=base_reg).labels("bench", "search", "ok")
    dur = Histogram("dur_seconds", "", ["agent", "tool"], registry=base_reg).labels("bench", "search")
    steps = Counter("steps", "", ["agent"], registry=base_reg).labels("bench")
    args = {"q": "cats", "limit": 10}

    def ours(n):
        for i in range(n):
            with run.tool_call("search", args):
                pass

    def bare(n):
        for i in range(n):
            t0 = time.perf_counter()
            with tracer.start_as_current_span("execute_tool search"):
                pass
            calls.inc()
            dur.observe(time.perf_counter() - t0)
            steps.inc()

    a, b = side_by_side(ours, bare)
    step.end(); run.end()
    provider.shutdown()
    return a, b


def bench_tool_call_metrics_only():
    reg = CollectorRegistry()
    mon = agentvigil.Monitor("bench", registry=reg, tracer_provider=None, heartbeat=False)
    mon.tracer = None
    run = mon.start_run()
    args = {"q": "cats", "limit": 10}

    def ours(n):
        for i in range(n):
            with run.tool_call("search", args) as call:
                call.set_result("r")

    def nothing(n):
        for i in range(n):
            pass

    a, b = side_by_side(ours, nothing)
    run.end()
    return a


def make_events_file(path: str, runs: int = 4000) -> int:
    lines = 0
    with open(path, "w") as fh:
        ts = 1.7e9
        for r in range(runs):
            rid = f"run{r}"
            rows = [{"event_type": "run_start", "ts": ts, "agent_id": "a", "run_id": rid, "task_id": f"t{r}"}]
            for s in range(1, 6):
                rows.append({"event_type": "step_start", "ts": ts, "agent_id": "a", "run_id": rid, "step_index": s})
                rows.append({"event_type": "llm_call", "ts": ts, "agent_id": "a", "run_id": rid, "step_index": s,
                             "provider": "openai", "model": "gpt-4o-mini", "input_tokens": 1200, "output_tokens": 80,
                             "cache_read_tokens": 1000, "token_count": 1280, "cost_usd": 0.000153, "status": "ok",
                             "duration_ms": 812.5})
                for t in range(4):
                    tool = ("search", "read", "edit", "test")[t]
                    args = f"{r}-{s}" if t != 0 or r % 10 else "same"
                    rows.append({"event_type": "tool_start", "ts": ts, "agent_id": "a", "run_id": rid, "step_index": s,
                                 "tool_name": tool, "args_hash": args})
                    rows.append({"event_type": "tool_end", "ts": ts, "agent_id": "a", "run_id": rid, "step_index": s,
                                 "tool_name": tool, "args_hash": args, "result_hash": "r", "status": "ok",
                                 "duration_ms": 3.2})
                rows.append({"event_type": "step_end", "ts": ts, "agent_id": "a", "run_id": rid, "step_index": s,
                             "status": "ok", "duration_ms": 900.0})
            rows.append({"event_type": "run_end", "ts": ts, "agent_id": "a", "run_id": rid, "status": "ok",
                         "cost_usd": 0.000765, "token_count": 6400, "step_index": 5, "duration_ms": 4500.0})
            for row in rows:
                fh.write(json.dumps(row, separators=(",", ":")) + "\n")
            lines += len(rows)
            ts += 5
    return lines


def bench_replay():
    """Replay throughput with the stdlib JSON decoder and with orjson (the [fast] extra), alternating."""
    import agentvigil.replay as replay_mod

    decoders = {"stdlib json": json.JSONDecoder().decode}
    try:
        import orjson
        decoders["orjson"] = orjson.loads
    except ImportError:
        pass
    original = replay_mod._loads
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "events.ndjson")
        lines = make_events_file(path)
        rates = {name: [] for name in decoders}
        found = 0
        try:
            for _ in range(5):
                for name, loads in decoders.items():
                    replay_mod._loads = loads
                    t0 = time.perf_counter()
                    found = sum(1 for _ in replay(path))
                    rates[name].append(lines / (time.perf_counter() - t0))
        finally:
            replay_mod._loads = original
        return {name: statistics.median(r) for name, r in rates.items()}, lines, found


def bench_import():
    def once(code):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - t0
    ours, base = [], []
    for _ in range(9):
        ours.append(once("import agentvigil"))
        base.append(once("pass"))
    return (statistics.median(ours) - statistics.median(base)) * 1000


def bench_render():
    reg = CollectorRegistry()
    mon = agentvigil.Monitor("render", registry=reg, heartbeat=False)
    m = mon.metrics
    # 5k series: 50 agents × 25 tools × (ok, error) calls + 50 × 25 duration histograms' children
    for a in range(50):
        for t in range(25):
            s = m.tool(f"agent-{a}", f"tool-{t}")
            s.ok.inc()
            s.error.inc()
    series = sum(len(list(metric.samples)) for metric in reg.collect())
    times = []
    for _ in range(9):
        t0 = time.perf_counter()
        generate_latest(reg)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), series


def main():
    a, b = bench_tool_call_tracing()
    metrics_only = bench_tool_call_metrics_only()
    rates, lines, found = bench_replay()
    imp = bench_import()
    render, series = bench_render()
    print("| benchmark | result | goal | verdict |")
    print("|---|---|---|---|")
    print(f"| tool call, tracing on: agentvigil vs bare OTel span + 3 prometheus_client updates | "
          f"{a:.1f} µs vs {b:.1f} µs = **{a / b:.2f}×** | ≤ 1.3× | {'met' if a / b <= 1.3 else 'NOT met'} |")
    print(f"| tool call, metrics only, incl. args hashing + loop detectors | **{metrics_only:.1f} µs** | ≤ 10 µs | "
          f"{'met' if metrics_only <= 10 else 'NOT met'} |")
    for name, rate in rates.items():
        print(f"| replay with all detectors ({lines} events, {found} detections), {name} | "
              f"**{rate / 1000:.0f}k events/s** | ≥ 300k/s | {'met' if rate >= 300_000 else 'NOT met'} |")
    print(f"| `import agentvigil` (median of 9 fresh interpreters, minus `python -c pass`) | **{imp:.0f} ms** | "
          f"≤ 150 ms | {'met' if imp <= 150 else 'NOT met'} |")
    print(f"| `/metrics` render, {series} samples | **{render:.1f} ms** | — | — |")


if __name__ == "__main__":
    main()
