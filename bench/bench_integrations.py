"""Overhead of the OpenAI integration: one chat completion against the same local fake provider, bare and under
each instrumentation, in one run.

    .venv/bin/python bench/bench_integrations.py [--calls 400] [--rounds 6]
        [--openlit-python bench/.venv-openlit/bin/python]

Design:
* the fake provider runs in its own process (``python -m agentvigil.testing.fake_provider``), so the server does
  not compete with the client for the GIL;
* every configuration runs in its own long-lived worker process (instrumentations must not stack), warmed up,
  then driven in interleaved rounds (A B C D A B C D ...) so drift hits all of them alike;
* latency is per call (``perf_counter_ns`` around ``client.chat.completions.create``); we report the median per
  configuration and the added latency = median(config) - median(bare), and the ratio of added latencies;
* tracing configurations export to a BatchSpanProcessor with a no-op exporter (spans are built and queued, not
  sent); agentvigil also updates its Prometheus metrics and runs its detectors on every call;
* OpenLIT runs in its own venv (``--openlit-python``) if it is installed there.

Also measured, in fresh interpreters (median of 5): ``import agentvigil`` and ``agentvigil.instrument()``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MESSAGES = [{"role": "user", "content": "Summarise the ticket in one line."}]


# ------------------------------------------------------------------------------------------------ worker ----


def _null_tracer_provider():
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class NullExporter(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

        def shutdown(self):
            pass

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(NullExporter()))
    trace.set_tracer_provider(provider)
    return provider


def _setup(config: str) -> None:
    if config == "bare":
        return
    if config == "otel-openai-v2":
        _null_tracer_provider()
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        OpenAIInstrumentor().instrument()
    elif config == "agentvigil":
        _null_tracer_provider()
        import agentvigil

        agentvigil.Monitor  # noqa: B018
        assert agentvigil.instrument(only=["openai"]) == ["openai"]
    elif config == "agentvigil-static-price":
        # same as "agentvigil" but the price comes from a user price file instead of a genai-prices lookup
        import tempfile

        path = os.path.join(tempfile.mkdtemp(), "prices.json")
        with open(path, "w") as fh:
            json.dump({"openai/gpt-4o-mini": {"input": 0.15, "output": 0.6, "cache_read": 0.075}}, fh)
        os.environ["AGENTVIGIL_PRICES_FILE"] = path
        _null_tracer_provider()
        import agentvigil

        assert agentvigil.instrument(only=["openai"]) == ["openai"]
    elif config == "agentvigil-metrics-only":
        import agentvigil

        assert agentvigil.instrument(only=["openai"]) == ["openai"]
    elif config == "openlit":
        _null_tracer_provider()  # OpenLIT reuses an SDK provider that is already set
        import tempfile

        import openlit
        from openlit._instrumentors import MODULE_NAME_MAP

        prices = os.path.join(tempfile.mkdtemp(), "pricing.json")  # a local file: OpenLIT fetches one otherwise
        with open(prices, "w") as fh:
            json.dump({"chat": {"gpt-4o-mini": {"promptPrice": 0.00015, "completionPrice": 0.0006}}}, fh)
        openlit.init(disable_metrics=True, capture_message_content=False, pricing_json=prices,
                     disabled_instrumentors=[name for name in MODULE_NAME_MAP if name != "openai"])
    else:
        raise SystemExit(f"unknown config {config}")


def worker(config: str, base_url: str, warmup: int) -> None:
    os.environ.setdefault("OTEL_SERVICE_NAME", "bench")
    _setup(config)
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0)
    create = client.chat.completions.create
    for _ in range(warmup):
        create(model="gpt-4o-mini", messages=MESSAGES)
    print(json.dumps({"ready": config, "openai": openai.__version__}), flush=True)
    clock = time.perf_counter_ns
    for line in sys.stdin:
        n = int(line)
        out = []
        for _ in range(n):
            t0 = clock()
            create(model="gpt-4o-mini", messages=MESSAGES)
            out.append((clock() - t0) / 1000.0)
        print(json.dumps(out), flush=True)


def inprocess(base_url: str, calls: int, rounds: int, warmup: int) -> dict[str, list[float]]:
    """All main-venv configurations in ONE process, toggled by instrument()/uninstrument() every round: the
    same interpreter, heap and connection pool for all of them, so only the instrumentation differs."""
    import openai
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as V2
    from opentelemetry.trace import NoOpTracerProvider

    import agentvigil
    from agentvigil.signals.cost import ModelPrice

    _null_tracer_provider()
    full = agentvigil.Monitor("bench-full", heartbeat=False)
    static = agentvigil.Monitor("bench-static-price", heartbeat=False)
    static.prices.set_price("gpt-4o-mini", ModelPrice(input=0.15, output=0.6, cache_read=0.075), provider="openai")
    metrics_only = agentvigil.Monitor("bench-metrics-only", heartbeat=False, tracer_provider=NoOpTracerProvider())
    configs = {
        "bare": (lambda: None, lambda: None),
        "otel-openai-v2": (lambda: V2().instrument(), lambda: V2().uninstrument()),
        "agentvigil": (lambda: agentvigil.instrument(only=["openai"], monitor=full), agentvigil.uninstrument),
        "agentvigil-static-price": (lambda: agentvigil.instrument(only=["openai"], monitor=static),
                                    agentvigil.uninstrument),
        "agentvigil-metrics-only": (lambda: agentvigil.instrument(only=["openai"], monitor=metrics_only),
                                    agentvigil.uninstrument),
    }
    client = openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0)
    clock = time.perf_counter_ns
    lat: dict[str, list[float]] = {name: [] for name in configs}
    for rnd in range(rounds + 1):  # round 0 is warm-up for every configuration
        for name, (setup, teardown) in configs.items():
            setup()
            create = client.chat.completions.create
            n = warmup if rnd == 0 else calls
            out = []
            for _ in range(n):
                t0 = clock()
                create(model="gpt-4o-mini", messages=MESSAGES)
                out.append((clock() - t0) / 1000.0)
            teardown()
            if rnd:
                lat[name].extend(out)
    lat["_openai"] = [openai.__version__]  # type: ignore[list-item]
    return lat


# ------------------------------------------------------------------------------------------------ driver ----


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_fake(python: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([python, "-m", "agentvigil.testing.fake_provider", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/health", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("fake provider did not start")


def _start_worker(python: str, config: str, base_url: str, warmup: int) -> subprocess.Popen | None:
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
    proc = subprocess.Popen([python, os.path.abspath(__file__), "--worker", config, "--url", base_url,
                             "--warmup", str(warmup)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if not line:
        sys.stderr.write(f"[{config}] worker failed to start:\n{proc.stderr.read()[-3000:]}\n")
        return None
    info = json.loads(line)
    info["python"] = python
    proc.info = info  # type: ignore[attr-defined]
    return proc


def _import_times(python: str, runs: int = 5) -> dict[str, float]:
    code = r"""
import time, json
import openai, anthropic
t0 = time.perf_counter(); import agentvigil; t1 = time.perf_counter()
agentvigil.instrument(only=["openai"]); t2 = time.perf_counter()
agentvigil.uninstrument(); t3 = time.perf_counter()
agentvigil.instrument(only=["openai", "anthropic"]); t4 = time.perf_counter()
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as V2
agentvigil.uninstrument(); t5 = time.perf_counter(); V2().instrument(); t6 = time.perf_counter()
print(json.dumps({"import agentvigil": t1 - t0, "instrument(openai)": t2 - t1,
                  "instrument(openai+anthropic)": t4 - t3, "openai-v2 import+instrument": t6 - t5}))
"""
    code_lc = r"""
import time, json
t0 = time.perf_counter(); import agentvigil; agentvigil.instrument(); t1 = time.perf_counter()
print(json.dumps({"import agentvigil + instrument() all, SDKs not yet imported": t1 - t0}))
"""
    samples: dict[str, list[float]] = {}
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
    for _ in range(runs):
        for snippet in (code, code_lc):
            out = subprocess.run([python, "-c", snippet], capture_output=True, text=True, env=env, timeout=120)
            if out.returncode:
                sys.stderr.write(out.stderr[-2000:])
                continue
            for key, value in json.loads(out.stdout.strip().splitlines()[-1]).items():
                samples.setdefault(key, []).append(value * 1000)
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker")
    parser.add_argument("--url")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--calls", type=int, default=400, help="calls per configuration per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--openlit-python", default=os.path.join(HERE, ".venv-openlit", "bin", "python"))
    parser.add_argument("--json", help="write raw results here")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.url, args.warmup)
        return

    python = sys.executable
    fake, url = _start_fake(python)
    base_url = url + "/v1"
    workers = {}
    try:
        lat = inprocess(base_url, args.calls, args.rounds, args.warmup)
        versions = {name: lat.pop("_openai")[0] for name in ["_openai"]}
        version = versions["_openai"]
        ol_lat: dict[str, list[float]] = {}
        if os.path.exists(args.openlit_python):
            for name in ("bare", "openlit"):
                proc = _start_worker(args.openlit_python, name, base_url, args.warmup)
                if proc is not None:
                    workers[name + " (openlit venv)"] = proc
            ol_lat = {name: [] for name in workers}
            for _ in range(args.rounds):
                for name, proc in workers.items():
                    proc.stdin.write(f"{args.calls}\n")
                    proc.stdin.flush()
                    ol_lat[name].extend(json.loads(proc.stdout.readline()))
    finally:
        for proc in workers.values():
            proc.stdin.close()
            proc.wait(timeout=30)
        fake.terminate()
        fake.wait(timeout=10)

    rows = []

    def table(title: str, data: dict[str, list[float]], bare: str, openai_version: str, v2_added: float | None):
        med = {name: statistics.median(v) for name, v in data.items()}
        p90 = {name: statistics.quantiles(v, n=10)[-1] for name, v in data.items()}
        print(f"\n{title} (openai {openai_version})")
        print(f"{'configuration':28} {'median us':>10} {'p90 us':>9} {'added us':>9} {'vs openai-v2':>13}")
        for name in data:
            added = med[name] - med[bare]
            ratio = f"{added / v2_added:.2f}x" if v2_added and name != bare else ""
            print(f"{name:28} {med[name]:10.1f} {p90[name]:9.1f} {added:9.1f} {ratio:>13}")
            rows.append({"table": title, "config": name, "openai": openai_version, "median_us": med[name],
                         "p90_us": p90[name], "added_us": added,
                         "ratio_vs_openai_v2": (added / v2_added) if v2_added and name != bare else None})
        return med

    print(f"\n{args.rounds} rounds x {args.calls} calls per configuration, interleaved; "
          f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    v2_added = statistics.median(lat["otel-openai-v2"]) - statistics.median(lat["bare"])
    table("same process, instrument/uninstrument per round", lat, "bare", version, v2_added)
    if ol_lat:
        ol_version = workers["openlit (openlit venv)"].info.get("openai", "?") if "openlit (openlit venv)" in workers \
            else "?"
        table("OpenLIT venv, one process per configuration", ol_lat, "bare (openlit venv)", ol_version, v2_added)
    times = _import_times(python)
    print("\nstart-up cost (ms, median of 5 fresh interpreters):")
    for key, value in times.items():
        print(f"  {key:58} {value:8.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "startup_ms": times, "calls": args.calls, "rounds": args.rounds}, fh, indent=2)


if __name__ == "__main__":
    main()
