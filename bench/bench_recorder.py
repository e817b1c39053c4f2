"""Flight-recorder throughput: `python bench/bench_recorder.py [--seconds 60]` (Markdown table on stdout).

1. Sustained load: one thread calls ``recorder.write(Event(...))`` in a tight loop for ``--seconds``, the way a
   hot agent loop emits tool_end events. Reported: events/s offered and written, drops by reason, peak queue
   length, peak RSS, and the longest time the events file did not grow while the producer ran.
2. Ceilings on this machine, measured side by side in alternating rounds (medians): encode + batched write
   alone (the writer's work), with the recorder's encoder and with ``Event.to_json``; and building the
   events alone (the producer's work). Producer and writer share the GIL, so the sustained rate cannot
   exceed roughly 1 / (1/producer + 1/writer).

Runs against whatever ``agentvigil`` is importable, so the same script measures an older recorder too.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from agentvigil.events import Event
from agentvigil.sinks import recorder as recorder_mod
from agentvigil.sinks.recorder import Recorder

BATCH = getattr(recorder_mod, "BATCH_EVENTS", 2048)
ROUNDS = 15
ROUND_EVENTS = 20_000


def make_event(i: int, now: float) -> Event:
    return Event("tool_end", now, agent_id="bench", session_id="20250101T000000-bench-1234-abcdef",
                 run_id="3f2a9c1e7b6d", task_id="task-17", correlation_id=None, step_index=i & 1023,
                 tool_name="search", args_hash="9b74c9897bac770f", result_hash="1c1d8e4a0ef2b3d5",
                 status="ok", duration_ms=0.0123)


def sustained(seconds: float, directory: str, max_queue: int | None) -> dict[str, float | str]:
    if max_queue is None:
        rec = Recorder(directory, "bench")
    else:
        rec = Recorder(directory, "bench", max_queue=max_queue)
    queue = rec._queue
    write = rec.write
    offered = peak_queue = 0
    last_size, last_growth, longest_stall = 0, time.monotonic(), 0.0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    end = start + seconds
    next_sample = start + 0.25
    while True:
        now = time.time()
        for i in range(1024):
            write(make_event(i, now))
        offered += 1024
        peak_queue = max(peak_queue, len(queue))
        mono = time.monotonic()
        if mono >= next_sample:  # file growth, sampled 4x a second: a stall is the writer not writing
            next_sample = mono + 0.25
            size = os.path.getsize(rec.events_path)
            if size > last_size:
                last_size, last_growth = size, mono
            longest_stall = max(longest_stall, mono - last_growth)
            if mono >= end:
                break
    produced_for = time.monotonic() - start
    rec.close(timeout=120)
    drained_for = time.monotonic() - start - produced_for
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(rec.events_path, "rb") as fh:
        written = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    by_reason = dict(getattr(rec, "dropped_by_reason", {})) or ({"total": rec.dropped} if rec.dropped else {})
    return {
        "seconds": produced_for,
        "offered": offered,
        "offered_per_s": offered / produced_for,
        "written": written,
        "written_per_s": written / (produced_for + drained_for),
        "dropped": rec.dropped,
        "drops": ", ".join(f"{k}={v}" for k, v in sorted(by_reason.items())) or "none",
        "lost_uncounted": offered - written - rec.dropped,
        "drain_after_stop_s": drained_for,
        "peak_queue": max(peak_queue, getattr(rec, "peak_queue", 0)),
        "max_queue": getattr(rec, "_max_queue", 0),
        "longest_stall_s": longest_stall,
        "rss_peak_mib": rss_peak / 1024,
        "rss_growth_mib": (rss_peak - rss_before) / 1024,
    }


def one_by_one(encode: Callable[[Event], bytes]) -> Callable[[list[Event]], list[bytes]]:
    return lambda batch: [encode(e) for e in batch]


def writer_round(events: list[Event], encode: Callable[[list[Event]], list[bytes]], fd: int) -> float:
    """The writer's work alone: encode in batches and append each batch with one write. Events/s."""
    t0 = time.perf_counter()
    for start in range(0, len(events), BATCH):
        data = b"\n".join(encode(events[start:start + BATCH])) + b"\n"
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    return len(events) / (time.perf_counter() - t0)


def producer_round(n: int) -> float:
    """The producer's work alone: building the events (what the agent's thread pays besides write)."""
    t0 = time.perf_counter()
    now = time.time()
    for i in range(n):
        make_event(i, now)
    return n / (time.perf_counter() - t0)


def ceilings(directory: str) -> dict[str, float]:
    events = [make_event(i, time.time()) for i in range(ROUND_EVENTS)]
    # The recorder's writer: a batch encoder when it has one, else its per-event encoder (older recorders)
    ours = getattr(recorder_mod, "_encode_lines", None) or one_by_one(
        getattr(recorder_mod, "_encode", None) or (lambda e: e.to_json().encode()))
    stdlib = one_by_one(lambda e: e.to_json().encode())  # the 0.1 encoder, for the ratio
    path = os.path.join(directory, "ceiling.ndjson")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    a, b, p = [], [], []
    try:
        for _ in range(ROUNDS):
            a.append(writer_round(events, ours, fd))
            b.append(writer_round(events, stdlib, fd))
            p.append(producer_round(ROUND_EVENTS))
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
        os.unlink(path)
    writer, producer = statistics.median(a), statistics.median(p)
    return {"writer": writer, "writer_to_json": statistics.median(b), "producer": producer,
            "shared": 1 / (1 / writer + 1 / producer)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="sustained-load duration (default 60)")
    parser.add_argument("--queue", type=int, default=None, help="max_queue (default: the recorder's)")
    parser.add_argument("--target", type=float, default=200_000, help="events/s goal (default 200000)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="agentvigil-bench-") as directory:
        ceiling = ceilings(directory)
        load = sustained(args.seconds, directory, args.queue)
    print(f"## Flight recorder, single-threaded tight producer, {load['seconds']:.0f} s "
          f"(Python {sys.version.split()[0]}, {os.cpu_count()} CPUs)\n")
    print("| measure | value |\n|---|---|")
    rows = [
        ("events offered", f"{load['offered']:,} ({load['offered_per_s']:,.0f}/s)"),
        ("events written", f"{load['written']:,} ({load['written_per_s']:,.0f}/s incl. drain)"),
        ("drops by reason", load["drops"]),
        ("lost without a count", f"{load['lost_uncounted']:,}"),
        ("drain after the producer stopped", f"{load['drain_after_stop_s']:.2f} s"),
        ("peak queue / bound", f"{load['peak_queue']:,} / {load['max_queue']:,}"),
        ("longest time the file did not grow", f"{load['longest_stall_s']:.2f} s"),
        ("peak RSS (growth during the run)", f"{load['rss_peak_mib']:.0f} MiB (+{load['rss_growth_mib']:.0f} MiB)"),
        ("ceiling: encode + batched write, recorder encoder", f"{ceiling['writer']:,.0f}/s"),
        ("ceiling: encode + batched write, Event.to_json", f"{ceiling['writer_to_json']:,.0f}/s "
                                                          f"(recorder encoder ×{ceiling['writer'] / ceiling['writer_to_json']:.2f})"),
        ("ceiling: building the events alone", f"{ceiling['producer']:,.0f}/s"),
        ("ceiling: producer + writer sharing one GIL", f"{ceiling['shared']:,.0f}/s"),
    ]
    for name, value in rows:
        print(f"| {name} | {value} |")
    bound = min(args.target, ceiling["shared"])
    which = "the target" if bound == args.target else "the shared-GIL ceiling, lower than the target"
    drops = "0 drops" if load["dropped"] == 0 else f"{load['dropped']:,} drops"
    verdict = (f"{drops}, {load['written_per_s']:,.0f} events/s written = {load['written_per_s'] / bound:.0%} of "
               f"{bound:,.0f}/s ({which}: target {args.target:,.0f}/s, ceiling {ceiling['shared']:,.0f}/s)")
    print(f"\nVerdict: {verdict}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
