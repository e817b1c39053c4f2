"""Benchmarks for ``agentvigil watch`` (results: docs/benchmarks-watch.md).

(a) detection latency, append → webhook received: a line that breaches the retry watcher is appended to a
    live session's events.ndjson; the clock stops when a local HTTP receiver (127.0.0.1) has the POST.
(b) append → watched process gone: a child process (``sleep``; and a real agentvigil agent with
    ``AGENTVIGIL_KILL_SIGNAL=TERM``) is the session's recorded PID; the clock stops when ``waitpid`` returns.
(c) throughput: ``watch --no-follow`` and ``replay`` over the same recorded file.

Run: ``.venv/bin/python bench/bench_watch.py [--trials 200]``. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from agentvigil.cli import build_parser
from agentvigil.replay import ReplayStats, replay
from agentvigil.sinks.recorder import process_start_time
from agentvigil.watch.command import build_config
from agentvigil.watch.runner import Watch
from agentvigil.watch.sources import resolve


def config(*argv):
    return build_config(build_parser().parse_args(["watch", *argv]))


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def summary(name, seconds):
    ms = [s * 1000 for s in seconds]
    row = {"name": name, "n": len(ms), "p50_ms": round(pct(ms, 50), 2), "p99_ms": round(pct(ms, 99), 2),
           "max_ms": round(max(ms), 2), "mean_ms": round(statistics.fmean(ms), 2)}
    print(json.dumps(row))
    return row


def write_meta(directory, pid):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "meta.json"), "w") as fh:
        json.dump({"schema_version": 1, "session_id": os.path.basename(directory), "agent": "bench", "pid": pid,
                   "process_start_time": process_start_time(pid), "host": socket.gethostname(),
                   "started_at": time.time()}, fh)


def line(**fields):
    return json.dumps({"ts": time.time(), **fields}, separators=(",", ":")) + "\n"


class Receiver:
    def __init__(self):
        self.arrivals: list[tuple[str, float]] = []
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                now = time.perf_counter()
                self.send_response(200)
                self.end_headers()
                with receiver.cond:
                    receiver.arrivals.append((body["detail"]["tool"], now))
                    receiver.cond.notify_all()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, tool, timeout=5.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for name, at in self.arrivals:
                    if name == tool:
                        return at
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(tool)
                self.cond.wait(left)


def bench_webhook(trials, use_inotify=True):
    receiver = Receiver()
    with tempfile.TemporaryDirectory() as tmp:
        session = os.path.join(tmp, "s")
        write_meta(session, os.getpid())
        events = os.path.join(session, "events.ndjson")
        open(events, "w").close()
        watch = Watch(resolve(session), config("--max-retries", "1", "--webhook-url", receiver.url, "--escalate",
                                               "terminal"), out=io.StringIO(), json_out=True, status_every=0,
                      timeout=trials * 0.1 + 30, use_inotify=use_inotify)
        thread = threading.Thread(target=watch.run, daemon=True)
        thread.start()
        time.sleep(0.3)
        latencies = []
        with open(events, "a") as fh:
            for i in range(trials):
                tool = f"tool{i}"
                t0 = time.perf_counter()
                fh.write(line(event_type="tool_end", tool_name=tool, args_hash="a", status="error"))
                fh.flush()
                latencies.append(receiver.wait_for(tool) - t0)
                time.sleep(random.uniform(0.005, 0.03))   # appends at random points of the loop's cycle
        watch.timeout = 0.001
        thread.join(10)
    receiver.server.shutdown()
    return latencies


AGENT = textwrap.dedent("""
    import sys, time
    import agentvigil
    from prometheus_client import CollectorRegistry
    mon = agentvigil.Monitor("bench-agent", registry=CollectorRegistry(), heartbeat=False)
    print("ready", flush=True)
    with mon.run("t") as run:
        while True:
            with run.step():
                time.sleep(float(sys.argv[1]))   # one agent step
""")


def bench_kill(trials, agent_step=None):
    latencies = []
    env = dict(os.environ, AGENTVIGIL_KILL_SIGNAL="TERM", AGENTVIGIL_KILL_EXIT_DELAY="0")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(trials):
            if agent_step is None:
                child = subprocess.Popen(["sleep", "60"])
            else:
                child = subprocess.Popen([sys.executable, "-c", AGENT, str(agent_step)], stdout=subprocess.PIPE,
                                         env=env)
                child.stdout.readline()
            session = os.path.join(tmp, f"s{i}")
            write_meta(session, child.pid)
            events = os.path.join(session, "events.ndjson")
            open(events, "w").close()
            out = io.StringIO()
            watch = Watch(resolve(session), config("--max-retries", "1", "--on-violation", "kill"), out=out,
                          json_out=True, status_every=0, timeout=20)
            thread = threading.Thread(target=watch.run, daemon=True)
            thread.start()
            while '"type":"start"' not in out.getvalue():
                time.sleep(0.001)
            time.sleep(random.uniform(0.01, 0.05))
            gone = {}
            waiter = threading.Thread(target=lambda c=child, g=gone: (c.wait(), g.setdefault("t", time.perf_counter())))
            waiter.start()
            t0 = time.perf_counter()
            with open(events, "a") as fh:
                fh.write(line(event_type="tool_end", tool_name="x", args_hash="a", status="error"))
            waiter.join(30)
            latencies.append(gone["t"] - t0)
            thread.join(10)
    return latencies


def bench_throughput(n_events):
    with tempfile.TemporaryDirectory() as tmp:
        session = os.path.join(tmp, "s")
        write_meta(session, 2 ** 22 - 1)   # not running: --no-follow ends at EOF
        rng = random.Random(3)
        with open(os.path.join(session, "events.ndjson"), "w") as fh:
            for i in range(n_events):
                k = i % 4
                if k == 0:
                    fh.write(line(event_type="step_start", agent_id="a", run_id=f"r{i // 400}", step_index=i))
                elif k == 1:
                    fh.write(line(event_type="tool_end", agent_id="a", run_id=f"r{i // 400}", tool_name="t",
                                  args_hash=f"{rng.randrange(50):x}", result_hash="r", status="ok", duration_ms=3))
                elif k == 2:
                    fh.write(line(event_type="llm_call", agent_id="a", run_id=f"r{i // 400}", provider="openai",
                                  model="gpt-4o-mini", input_tokens=1000, output_tokens=100, cost_usd=0.0002,
                                  status="ok", duration_ms=500))
                else:
                    fh.write(line(event_type="step_end", agent_id="a", run_id=f"r{i // 400}", step_index=i))
        size = os.path.getsize(os.path.join(session, "events.ndjson"))
        t0 = time.perf_counter()
        watch = Watch(resolve(session), config("--escalate", "terminal"), out=io.StringIO(), follow=False,
                      status_every=0)
        watch.run()
        t_watch = time.perf_counter() - t0
        t0 = time.perf_counter()
        stats = ReplayStats()
        for _ in replay(session, stats=stats):
            pass
        t_replay = time.perf_counter() - t0
    rows = {"events": n_events, "mb": round(size / 1e6, 1),
            "watch_events_per_s": round(n_events / t_watch), "replay_events_per_s": round(n_events / t_replay)}
    print(json.dumps(rows))
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    print(f"# python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {sys.platform}")
    summary("append->webhook received (inotify)", bench_webhook(args.trials))
    summary("append->webhook received (poll)", bench_webhook(args.trials, use_inotify=False))
    summary("append->process gone (sleep, SIGTERM)", bench_kill(args.trials))
    summary("append->process gone (agentvigil agent, 10 ms steps, graceful)", bench_kill(max(20, args.trials // 5),
                                                                                           agent_step=0.01))
    bench_throughput(args.events)


if __name__ == "__main__":
    main()
