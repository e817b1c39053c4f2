"""Fleet load test: `python bench/bench_fleet.py [--seconds 120] [--agents 1000] [--workers 8]`.

N simulated agents spread over W worker processes writing to one PROMETHEUS_MULTIPROC_DIR; this process
serves the merged /metrics (as the pod's holder would) and scrapes it every --scrape-interval seconds.
Reports: series on /metrics, scrape time p50/p99 (all scrapes, and those that found no new series), and the
per-tool-call cost side by side in one process (in-memory values vs multiprocess files, alternating batches)
and inside the loaded workers. Medians and ratios only; the machine is shared. Prints JSON, then a Markdown
table for docs/benchmarks.md.

Each simulated call is a run with one step, two tool calls and one LLM call (agents use up to 5 tools and
2 models), so every per-agent, per-tool and per-model family gets its series. Workers are paced (--rate runs
per second for the fleet): real agents wait on LLMs and tools, they do not spin in agentvigil.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
TOOLS = ("search", "fetch", "sql", "email", "calendar")
# deploy/kubernetes puts the directory on a memory emptyDir; on a disk-backed directory, writes through mmap
# wait on the page cache's writeback
DEFAULT_DIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
MODELS = ("gpt-4o-mini", "claude-3-5-haiku")

WORKER = r"""
import json, os, random, statistics, sys, time
import agentvigil
worker, workers, agents = (int(a) for a in sys.argv[1:4])
seconds, rate, distinct = float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
# agent i of the fleet is named after its type: i % distinct
names = sorted({f"agent-{i % distinct:04d}" for i in range(agents) if i % workers == worker})
monitors = {name: agentvigil.Monitor(name, heartbeat=False) for name in names}
rng = random.Random(worker)
TOOLS = ("search", "fetch", "sql", "email", "calendar")
MODELS = ("gpt-4o-mini", "claude-3-5-haiku")
per_call, calls, deadline = [], 0, time.monotonic() + seconds
while time.monotonic() < deadline:
    name = rng.choice(names)
    with monitors[name].run() as run:
        with run.step():
            t0 = time.perf_counter()
            for tool in (rng.choice(TOOLS), rng.choice(TOOLS)):
                with run.tool_call(tool, {"q": "x"}):
                    pass
            per_call.append((time.perf_counter() - t0) / 2 * 1e6)
            with run.llm_call("openai", rng.choice(MODELS)) as call:
                call.set_usage(input_tokens=100, output_tokens=20)
    calls += 1
    # paced: agents spend their time waiting on LLMs and tools, not in agentvigil
    time.sleep(max(0.0, calls / rate - (time.monotonic() - (deadline - seconds))))
print(json.dumps({"calls": calls, "tool_call_us_p50": statistics.median(per_call)}))
"""

SIDE_BY_SIDE = r"""
import json, statistics, sys, time
import agentvigil
mon = agentvigil.Monitor("bench", heartbeat=False)
run = mon.start_run()
step = run.start_step()
def batch(n=2000):
    t0 = time.perf_counter()
    for _ in range(n):
        with run.tool_call("search", {"q": "x"}):
            pass
    return (time.perf_counter() - t0) / n * 1e6
batch(500)
print(json.dumps([batch() for _ in range(int(sys.argv[1]))]))
"""


def _env(multiproc_dir: str | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if multiproc_dir:
        env["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
    return env


def side_by_side(rounds: int, parent: str | None) -> dict[str, float]:
    """Per-tool-call µs in one process: in-memory values vs multiprocess files, batches alternating."""
    memory, files = [], []
    with tempfile.TemporaryDirectory(dir=parent) as tmp:
        for _ in range(rounds):
            for out, directory in ((memory, None), (files, tmp)):
                result = subprocess.run([sys.executable, "-c", SIDE_BY_SIDE, "3"], env=_env(directory),
                                        capture_output=True, text=True, timeout=120, check=True)
                out.extend(json.loads(result.stdout))
    one, multi = statistics.median(memory), statistics.median(files)
    return {"one_process_us": one, "multiprocess_us": multi, "ratio": multi / one}


def _percentiles(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def guards(ops: int) -> dict[str, float] | None:
    """Round trips of the shared guards on loopback Redis against the in-process guards, per operation
    (reserve+commit, allow+record_success), interleaved in batches of 100."""
    import shutil
    import socket

    server = shutil.which("redis-server")
    if server is None:
        return None
    sys.path.insert(0, SRC)
    from agentvigil import CircuitBreaker, TokenBudget

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    redis = subprocess.Popen([server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        for _ in range(100):
            try:
                TokenBudget("probe", limit=1, backend=url).reserve(0)
                break
            except Exception:
                time.sleep(0.05)
        kinds = {
            "budget_local": TokenBudget("bench-local", limit=10**15), "budget_redis": TokenBudget(
                "bench-redis", limit=10**15, backend=url),
            "breaker_local": CircuitBreaker("bench-local"), "breaker_redis": CircuitBreaker("bench-redis", backend=url),
        }
        timings: dict[str, list[float]] = {name: [] for name in kinds}
        for _ in range(max(ops // 100, 1)):
            for name, guard in kinds.items():
                for _ in range(100):
                    t0 = time.perf_counter()
                    if name.startswith("budget"):
                        guard.reserve(10).commit(9)
                    else:
                        guard.allow()
                        guard.record_success()
                    timings[name].append((time.perf_counter() - t0) * 1e6)
        out = {}
        for name, samples in timings.items():
            out[f"{name}_us_p50"], out[f"{name}_us_p99"] = _percentiles(samples)
        return out
    finally:
        redis.terminate()
        redis.wait(10)


def load(agents: int, workers: int, seconds: float, interval: float, rate: float,
         names: int, parent: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir=parent) as tmp:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tmp
        sys.path.insert(0, SRC)
        import agentvigil  # noqa: F401  (after the variable: prometheus_client picks the mmap values)
        from agentvigil import multiprocess

        multiprocess.prepare(tmp)
        server, _ = agentvigil.start_metrics_server(port=0)
        port = server.server_port
        procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(w), str(workers), str(agents), str(seconds),
                                   str(rate / workers), str(names)],
                                  env=_env(tmp), stdout=subprocess.PIPE, text=True) for w in range(workers)]
        scrapes, stable, series, last_growth, timeline = [], [], 0, 0.0, []
        start = time.monotonic()
        deadline = start + seconds
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=300) as response:
                body = response.read()
            scrapes.append((time.perf_counter() - t0) * 1000)
            previous, series = series, sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
            timeline.append((round(time.monotonic() - start, 1), round(scrapes[-1], 1), series))
            if series == previous:  # no new series since the last scrape: nothing new to decode
                stable.append(scrapes[-1])
            else:
                last_growth = time.monotonic() - start
            time.sleep(max(interval - scrapes[-1] / 1000, 0))
        results = [json.loads(proc.communicate(timeout=seconds + 60)[0]) for proc in procs]
        t0 = time.perf_counter()  # one more scrape once the load has stopped: the final series count
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=300).read()
        idle_scrape = (time.perf_counter() - t0) * 1000
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        files = len(os.listdir(tmp))
        server.shutdown()
    p50, p99 = _percentiles(scrapes)
    stable_p50, stable_p99 = _percentiles(stable) if stable else (float("nan"), float("nan"))
    return {
        "agents": agents, "names": names, "workers": workers, "seconds": seconds, "rate": rate,
        "runs": sum(r["calls"] for r in results),
        "series": series, "files": files, "scrapes": len(scrapes),
        "scrape_ms_p50": p50, "scrape_ms_p99": p99, "scrape_ms_max": max(scrapes),
        # scrapes that found no new series (after the fleet's series stopped growing), and when that was
        "stable_scrapes": len(stable), "stable_scrape_ms_p50": stable_p50, "stable_scrape_ms_p99": stable_p99,
        "series_growing_until_s": last_growth,
        "scrape_ms_idle": idle_scrape,
        # (seconds into the run, ms, series found) of the five slowest scrapes: where the p99 comes from
        "slowest_scrapes": sorted(timeline, key=lambda t: -t[1])[:5],
        "loaded_tool_call_us_p50": statistics.median(r["tool_call_us_p50"] for r in results),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--names", type=int, default=0, help="distinct agent names (default: one per agent)")
    parser.add_argument("--scrape-interval", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=200.0, help="runs per second over the whole fleet (200)")
    parser.add_argument("--guard-ops", type=int, default=2000, help="operations per guard kind (2000)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of the side-by-side comparison")
    parser.add_argument("--dir", default=DEFAULT_DIR,
                        help="where to put PROMETHEUS_MULTIPROC_DIR: a tmpfs, as deployed (default: /dev/shm if "
                        "present, else the temporary directory)")
    args = parser.parse_args()
    out = {"side_by_side": side_by_side(args.rounds, args.dir),
           "guards": guards(args.guard_ops),
           "load": load(args.agents, args.workers, args.seconds, args.scrape_interval, args.rate,
                         args.names or args.agents, args.dir),
           "multiproc_dir_parent": args.dir or tempfile.gettempdir(),
           "max_label_values": os.environ.get("AGENTVIGIL_MAX_LABEL_VALUES", "200 (default)")}
    print(json.dumps(out, indent=2))
    s, lo = out["side_by_side"], out["load"]
    print()
    print("| agents (names) / workers / seconds | runs/s | runs | series | scrape p50 / p99 (ms) | "
          "scrape p50 / p99 once series are stable (ms) | "
          "tool call µs: one process / multiprocess (ratio) | tool call µs under load |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {lo['agents']} ({lo['names']}) / {lo['workers']} / {lo['seconds']:g} | {lo['rate']:g} | "
          f"{lo['runs']} | {lo['series']} | "
          f"{lo['scrape_ms_p50']:.0f} / {lo['scrape_ms_p99']:.0f} | "
          f"{lo['stable_scrape_ms_p50']:.0f} / {lo['stable_scrape_ms_p99']:.0f} "
          f"({lo['stable_scrapes']} of {lo['scrapes']}, after {lo['series_growing_until_s']:.0f} s) | "
          f"{s['one_process_us']:.1f} / "
          f"{s['multiprocess_us']:.1f} ({s['ratio']:.2f}x) | {lo['loaded_tool_call_us_p50']:.1f} |")
    if out["guards"]:
        g = out["guards"]
        print()
        print("| guard round trip (µs) | in-process p50 / p99 | Redis on loopback p50 / p99 |")
        print("|---|---|---|")
        for kind, what in (("budget", "reserve + commit"), ("breaker", "allow + record_success")):
            print(f"| {what} | {g[kind + '_local_us_p50']:.1f} / {g[kind + '_local_us_p99']:.1f} | "
                  f"{g[kind + '_redis_us_p50']:.0f} / {g[kind + '_redis_us_p99']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
