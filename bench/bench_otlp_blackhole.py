"""OTLP blackhole: a collector on 127.0.0.1 that accepts connections and never answers.

A child process runs a traced agent (our own OTLP/HTTP provider, from OTEL_EXPORTER_OTLP_ENDPOINT) in a tight
loop of tool calls for --seconds, then exits. Reported: spans made, spans counted as dropped in
agentvigil_events_dropped_total{sink="otlp"} (queue full, failed export, still queued at shutdown), tool-call
latency p50/p99 against the same loop with no endpoint (side by side, same run), RSS growth, and how long the
exit took. Usage: python bench/bench_otlp_blackhole.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time

CHILD = r"""
import json, os, resource, sys, time
import agentvigil
from prometheus_client import REGISTRY
seconds = float(sys.argv[1])
out = {}
t_end = [0.0]
import atexit
def report():
    # Registered first, so it runs last: after our provider's bounded shutdown has counted what it dropped.
    out["dropped_counted"] = REGISTRY.get_sample_value("agentvigil_events_dropped_total", {"sink": "otlp"})
    out["exit_flush_s"] = time.monotonic() - t_end[0]
    json.dump(out, open(os.environ["BENCH_OUT"], "w"))
atexit.register(report)
mon = agentvigil.Monitor("blackhole-bench", heartbeat=False)
spans = 1
lat = []
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
deadline = time.monotonic() + seconds
with mon.run() as run:
    while time.monotonic() < deadline:
        with run.step():
            for i in range(50):
                t = time.perf_counter()
                with run.tool_call("t", {"i": i}):
                    pass
                lat.append(time.perf_counter() - t)
        spans += 51        # 50 tool spans and the step's
lat.sort()
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out.update(calls=len(lat), spans=spans, p50_us=lat[len(lat) // 2] * 1e6, p99_us=lat[int(len(lat) * 0.99)] * 1e6,
           rss_growth_mb=(rss1 - rss0) / 1024)
del lat
t_end[0] = time.monotonic()
"""


def blackhole() -> tuple[socket.socket, int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)   # accepted, never read, never answered

    threading.Thread(target=accept, daemon=True).start()
    return server, server.getsockname()[1]


def run(seconds: float, endpoint: str | None) -> dict:
    out = f"/tmp/agentvigil-blackhole-{os.getpid()}-{bool(endpoint)}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENTVIGIL_"))}
    env["BENCH_OUT"] = out
    if endpoint:
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_EXPORTER_OTLP_TIMEOUT="5")
    else:
        env["OTEL_SDK_DISABLED"] = "true"
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", CHILD, str(seconds)], env=env, check=True, timeout=seconds + 120)
    result = json.load(open(out))
    result["wall_s"] = time.monotonic() - started
    os.unlink(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    server, port = blackhole()
    traced = run(args.seconds, f"http://127.0.0.1:{port}")
    plain = run(args.seconds, None)
    server.close()
    print("| run | tool calls | p50 µs | p99 µs | RSS growth MB (incl. the bench's latency list) | spans made | "
          "spans counted dropped | exit after the loop s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in (("traced, blackhole collector", traced), ("tracing off", plain)):
        spans = r["spans"] if name.startswith("traced") else 0
        print(f"| {name} | {r['calls']:,} | {r['p50_us']:.1f} | {r['p99_us']:.1f} | {r['rss_growth_mb']:.1f} | "
              f"{spans:,} | {r.get('dropped_counted') or 0:,.0f} | {r['exit_flush_s']:.1f} |")


if __name__ == "__main__":
    main()
