"""The fast merge of a PROMETHEUS_MULTIPROC_DIR gives what prometheus_client's MultiProcessCollector gives, on
directories written by real worker processes (every metric type, every gauge mode, dead and live workers,
files that grow between scrapes) and on random writes (hypothesis)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest
from fleet_support import env_with_src
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics import Gauge
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from agentvigil.multiprocess import remove_dead_workers
from agentvigil.multiprocess_merge import FamilyList, MultiProcessMerge

MODES = sorted(Gauge._MULTIPROC_MODES)

WORKER = r"""
import sys, time
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
import agentvigil
index, hold = int(sys.argv[1]), sys.argv[2] == "hold"
r = CollectorRegistry()
c = Counter("t_requests", "Requests.", ["route"], registry=r)
h = Histogram("t_latency_seconds", "Latency.", ["route"], buckets=(0.1, 1, 10), registry=r)
s = Summary("t_size_bytes", "Size.", ["route"], registry=r)
modes = sys.argv[3].split(",")
gauges = {m: Gauge(f"t_gauge_{m}", f"Gauge {m}.", ["route"], registry=r, multiprocess_mode=m) for m in modes}
def write(routes, base):
    for i, route in enumerate(routes):
        c.labels(route).inc(base + i)
        h.labels(route).observe((base + i) / 7)
        s.labels(route).observe(base * 3 + i)
        for k, g in enumerate(gauges.values()):
            g.labels(route).set(base * 10 + i - k)
            time.sleep(0.0002)  # distinct timestamps for mostrecent
write([f"r{i}" for i in range(3 + index)], index + 1)
mon = agentvigil.Monitor(f"agent-{index % 2}", heartbeat=False)
with mon.run() as run:
    with run.step():
        with run.tool_call("search", {"q": index}):
            pass
        with run.llm_call("openai", "gpt-4o-mini") as call:
            call.set_usage(input_tokens=10 * (index + 1), output_tokens=3)
print("ready", flush=True)
if hold:
    sys.stdin.readline()
    write([f"grown-{i}-{'x' * 40}" for i in range(600)], 100)  # past the first 64 KiB: the file is remapped
    print("grown", flush=True)
    sys.stdin.readline()
"""


def canonical(families) -> dict:
    """family -> (type, help, sorted samples); sample lists keep duplicates, so a doubled series shows."""
    out = {}
    for family in families:
        samples = sorted((s.name, tuple(sorted(s.labels.items())), s.value, s.timestamp, s.exemplar)
                         for s in family.samples)
        out[family.name] = (family.type, family.documentation, samples)
    return out


ACCEPT = ("", "text/plain;version=0.0.4",  # what Prometheus sends by default (OpenMetrics first):
          "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
          "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def assert_same(path: str, merge: MultiProcessMerge) -> dict:
    expected = canonical(MultiProcessCollector(None, path=path).collect())
    got = canonical(merge.collect())
    assert got == expected
    for accept in ACCEPT:  # the cached-line renderer gives the encoders' own bytes
        encoder, _ = choose_encoder(accept)
        expected_body = encoder(FamilyList(merge.collect()))
        assert merge.render(encoder) + (b"# EOF\n" if expected_body.endswith(b"# EOF\n") else b"") == expected_body
    return got


def _spawn(directory: str, index: int, hold: bool) -> subprocess.Popen:
    env = env_with_src(PROMETHEUS_MULTIPROC_DIR=directory)
    return subprocess.Popen([sys.executable, "-c", WORKER, str(index), "hold" if hold else "exit", ",".join(MODES)],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_merge_equals_prometheus_client_on_real_workers(tmp_path):
    directory = str(tmp_path)
    held = _spawn(directory, 0, hold=True)
    try:
        assert held.stdout.readline().strip() == "ready"
        for index in (1, 2, 3):  # these exit: dead workers, their live gauges still on disk
            proc = _spawn(directory, index, hold=False)
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0 and out.strip() == "ready"
        merge = MultiProcessMerge(directory)
        got = assert_same(directory, merge)
        # every type and every gauge mode is in the comparison, with the product's own families
        assert {f"t_gauge_{m}" for m in MODES} | {"t_requests", "t_latency_seconds", "t_size_bytes",
                                                  "agent_runs", "agent_tool_call_duration_seconds"} <= set(got)
        assert {t for t, _, _ in got.values()} == {"counter", "gauge", "histogram", "summary"}
        assert any(dict(s[1]).get("pid") for s in got["t_gauge_liveall"][2])  # all/liveall keep one per pid
        assert_same(directory, merge)  # a second scrape from the cache: same answer

        removed = remove_dead_workers(directory)  # what the serving process does before a scrape
        assert len(removed) == 3
        assert_same(directory, merge)

        held.stdin.write("grow\n")
        held.stdin.flush()
        assert held.stdout.readline().strip() == "grown"
        got = assert_same(directory, merge)  # the held worker's file grew and was remapped
        assert sum(1 for s in got["t_requests"][2] if dict(s[1])["route"].startswith("grown-")) == 600
    finally:
        held.stdin.close()
        held.wait(30)


def test_a_file_recreated_under_the_same_name_is_decoded_again(tmp_path):
    path = tmp_path / "counter_7.db"
    _write(str(tmp_path), "counter_7.db", [("c", "c_total", {"a": "x"}, 1.0, 0.0)])
    merge = MultiProcessMerge(str(tmp_path))
    assert_same(str(tmp_path), merge)
    path.unlink()  # e.g. the directory wiped by a restarted master, pid reused
    _write(str(tmp_path), "counter_7.db", [("c", "c_total", {"a": "y"}, 2.0, 0.0)])
    got = assert_same(str(tmp_path), merge)
    assert got["c"][2] == [("c_total", (("a", "y"),), 2.0, None, None)]


def test_values_written_in_place_are_read_without_decoding_the_file_again(tmp_path):
    entries = [("c", "c_total", {"a": str(i)}, 1.0, 0.0) for i in range(3)]
    _write(str(tmp_path), "counter_7.db", entries)
    merge = MultiProcessMerge(str(tmp_path))
    assert_same(str(tmp_path), merge)
    decoded = merge._files[str(tmp_path / "counter_7.db")]
    _write(str(tmp_path), "counter_7.db", [("c", "c_total", {"a": "2"}, 5.0, 0.0)])  # the last entry's value
    got = assert_same(str(tmp_path), merge)
    assert merge._files[str(tmp_path / "counter_7.db")] is decoded and len(decoded.slots) == 3
    assert ("c_total", (("a", "2"),), 5.0, None, None) in got["c"][2]


def test_a_corrupted_file_is_counted_and_the_rest_still_merged(tmp_path):
    _write(str(tmp_path), "counter_1.db", [("c", "c_total", {"a": "x"}, 1.0, 0.0)])
    _write(str(tmp_path), "counter_2.db", [("c", "c_total", {"a": "x"}, 2.0, 0.0)])
    with open(tmp_path / "counter_2.db", "r+b") as fh:
        fh.seek(8)
        fh.write((10**6).to_bytes(4, sys.byteorder))  # an entry length past the used bytes
    from agentvigil.metrics import default_metrics

    errors = default_metrics().internal_errors.labels("multiprocess")
    before = errors._value.get()
    got = canonical(MultiProcessMerge(str(tmp_path)).collect())
    assert got["c"][2] == [("c_total", (("a", "x"),), 1.0, None, None)]
    assert errors._value.get() == before + 1


def test_a_key_in_every_workers_file_is_decoded_once_per_series(tmp_path, monkeypatch):
    keys = [("c", "c_total", {"a": "x"}), ("c", "c_total", {"a": "y"})]
    for pid in (1, 2, 3):  # the same series in every worker's file: summed
        _write(str(tmp_path), f"counter_{pid}.db", [(*key, float(pid), 0.0) for key in keys])
    for pid in (1, 2):  # a per-pid gauge: one series per pid, so one resolution per pid
        _write(str(tmp_path), f"gauge_all_{pid}.db", [("g", "g", {"a": "x"}, float(pid), 0.0)])
    merge = MultiProcessMerge(str(tmp_path))
    resolved = []
    resolve = merge._resolve
    monkeypatch.setattr(merge, "_resolve", lambda *args: resolved.append(args[0]) or resolve(*args))
    got = assert_same(str(tmp_path), merge)
    assert len(resolved) == 2 + 2
    assert ("c_total", (("a", "x"),), 6.0, None, None) in got["c"][2]
    assert len(got["g"][2]) == 2


def test_a_key_that_is_not_json_is_counted_and_the_rest_still_merged(tmp_path):
    _write(str(tmp_path), "counter_1.db", [("c", "c_total", {"a": "x"}, 1.0, 0.0)])
    mmaped = MmapedDict(str(tmp_path / "counter_2.db"))
    try:
        mmaped.write_value('["c", "c_total", {"a": "y"}', 2.0, 0.0)  # a torn key
    finally:
        mmaped.close()
    from agentvigil.metrics import default_metrics

    errors = default_metrics().internal_errors.labels("multiprocess")
    before = errors._value.get()
    got = canonical(MultiProcessMerge(str(tmp_path)).collect())
    assert got["c"][2] == [("c_total", (("a", "x"),), 1.0, None, None)]
    assert errors._value.get() == before + 1


@pytest.mark.parametrize("accept", ACCEPT)
def test_series_lines_filled_from_a_template_equal_the_encoders_own(tmp_path, accept):
    values = ["plain", 'q"uo\\te\nnl', "ünï", "", "\\n", '"', "a,b=c}", "\x00", "\x001\x00"]
    _write(str(tmp_path), "counter_1.db", [("c", "c_total", {"a": v, "b": w}, 1.0, 0.0)
                                           for v in values for w in values[:3]])
    _write(str(tmp_path), "histogram_1.db", [("h", "h_bucket", {"route": v, "le": le}, 1.0, 0.0)
                                             for v in values for le in ("0.5", "+Inf")])
    merge = MultiProcessMerge(str(tmp_path))
    encoder, _ = choose_encoder(accept)
    body = merge.render(encoder)
    expected = encoder(FamilyList(merge.collect()))
    assert body + (b"# EOF\n" if expected.endswith(b"# EOF\n") else b"") == expected
    (_, _, templates), = merge._lines.values()
    assert templates and None not in templates.values()  # the lines above came from templates, not the encoder


# -- random writes --------------------------------------------------------------------------------------------

def _write(directory: str, filename: str, entries: list) -> None:
    mmaped = MmapedDict(os.path.join(directory, filename))
    try:
        for family, sample, labels, value, stamp in entries:
            mmaped.write_value(mmap_key(family, sample, list(labels), list(labels.values()), f"{family} doc."),
                               value, stamp)
    finally:
        mmaped.close()


def _entries(typ: str, mode: str | None):
    """Entries as prometheus_client writes them for one family of ``typ`` (and gauge ``mode``)."""
    family = {"counter": "c", "histogram": "h", "summary": "s"}.get(typ, f"g_{mode}")
    route = st.sampled_from(["a", "b", "c", "q\"uo\\te\nnl", "ünï"])
    value = st.floats(-1e6, 1e6, allow_nan=False)
    stamp = st.sampled_from([0.0, 1.0, 2.0, 3.0])
    if typ == "histogram":
        return st.tuples(route, st.sampled_from(["0.5", "1.0", "+Inf", None]), value).map(
            lambda t: ("h", "h_bucket" if t[1] else "h_sum", {"route": t[0], **({"le": t[1]} if t[1] else {})},
                       abs(t[2]), 0.0))
    if typ == "summary":
        return st.tuples(route, st.sampled_from(["s_count", "s_sum"]), value).map(
            lambda t: ("s", t[1], {"route": t[0]}, t[2], 0.0))
    suffix = "_total" if typ == "counter" else ""
    return st.tuples(route, value, stamp).map(lambda t: (family, family + suffix, {"route": t[0]}, t[1], t[2]))


FILES = ([("counter", None), ("histogram", None), ("summary", None)]
         + [("gauge", mode) for mode in ("all", "liveall", "min", "livemax", "sum", "mostrecent",
                                         "livemostrecent")])
writes = st.lists(st.tuples(st.sampled_from(FILES), st.sampled_from([11, 12, 13])).flatmap(
    lambda f: st.tuples(st.just(f), st.lists(_entries(*f[0]), min_size=1, max_size=6))), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(writes, min_size=1, max_size=3))
def test_merge_equals_prometheus_client_on_random_writes(batches):
    with tempfile.TemporaryDirectory() as directory:
        merge = MultiProcessMerge(directory)
        for batch in batches:  # the same merge across batches: files grow between its scrapes
            for ((typ, mode), pid), entries in batch:
                _write(directory, f"{typ}_{mode}_{pid}.db" if mode else f"{typ}_{pid}.db", entries)
            assert_same(directory, merge)


@pytest.mark.parametrize("mode", ["mostrecent", "livemostrecent"])
def test_mostrecent_never_written_is_absent_like_prometheus_client(tmp_path, mode):
    _write(str(tmp_path), f"gauge_{mode}_1.db", [("g", "g", {"a": "x"}, 0.0, 0.0),
                                                 ("g", "g", {"a": "y"}, 5.0, 2.0)])
    got = assert_same(str(tmp_path), MultiProcessMerge(str(tmp_path)))
    assert [dict(s[1]) for s in got["g"][2]] == [{"a": "y"}]


SERVER = r"""
import gzip, json, sys, threading, urllib.request
from agentvigil import multiprocess
multiprocess.prepare(sys.argv[1])
import agentvigil
server, _ = agentvigil.start_metrics_server(port=0)
# new file entries are decoded in the background from the start, not first by a scrape
prefetch = any(t.name == "agentvigil-multiprocess-merge" for t in threading.enumerate())
mon = agentvigil.Monitor("http-agent", heartbeat=False)
with mon.run() as run:
    with run.tool_call("search", {}):
        pass
out = {}
for name, accept in (("text", "text/plain;version=0.0.4"),
                     ("openmetrics", "application/openmetrics-text;version=1.0.0")):
    request = urllib.request.Request(f"http://127.0.0.1:{server.server_port}/metrics",
                                     headers={"Accept": accept, "Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
        assert response.headers["Content-Encoding"] == "gzip"
        out[name] = {"type": response.headers["Content-Type"], "body": gzip.decompress(body).decode()}
server.shutdown()
out["prefetch_at_start"] = prefetch
print(json.dumps(out))
"""


def test_metrics_endpoint_serves_the_merge_in_both_formats_gzipped(tmp_path):
    import json

    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
    from prometheus_client.parser import text_string_to_metric_families as parse_text

    result = subprocess.run([sys.executable, "-c", SERVER, str(tmp_path)], env=env_with_src(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out.pop("prefetch_at_start") is True
    assert out["text"]["type"].startswith("text/plain") and out["openmetrics"]["type"].startswith(
        "application/openmetrics-text")
    expected = {(s.name, tuple(sorted(s.labels.items())), s.value)
                for f in MultiProcessCollector(None, path=str(tmp_path)).collect() for s in f.samples}
    for name, parse in (("text", parse_text), ("openmetrics", parse_openmetrics)):
        got = {(s.name, tuple(sorted(s.labels.items())), s.value) for f in parse(out[name]["body"])
               for s in f.samples if s.name != "agentvigil_multiprocess_dir_free_bytes"}
        # the files have not changed since the scrape (the server process is gone)
        assert got == expected, name
    assert ("agent_tool_calls_total", (("agent", "http-agent"), ("status", "ok"), ("tool", "search")), 1.0) in got


def test_prefetch_decodes_new_entries_ahead_and_the_scrape_still_equals_prometheus_client(tmp_path):
    merge = MultiProcessMerge(str(tmp_path))
    _write(str(tmp_path), "counter_1.db", [("c", "c_total", {"a": str(i)}, 1.0, 0.0) for i in range(3)])
    _write(str(tmp_path), "gauge_livesum_1.db", [("g", "g", {"a": "x"}, 2.0, 1.0)])
    assert merge.prefetch() == 4 and merge.prefetch() == 0  # nothing new the second time
    _write(str(tmp_path), "counter_1.db", [("c", "c_total", {"a": "new"}, 4.0, 0.0)])
    assert merge.prefetch() == 1
    decoded = merge._files[str(tmp_path / "counter_1.db")]
    got = assert_same(str(tmp_path), merge)
    assert merge._files[str(tmp_path / "counter_1.db")] is decoded and len(decoded.slots) == 4
    assert ("c_total", (("a", "new"),), 4.0, None, None) in got["c"][2]


def test_prefetch_in_small_batches_decodes_everything_and_the_scrape_still_equals_prometheus_client(tmp_path):
    merge = MultiProcessMerge(str(tmp_path))
    _write(str(tmp_path), "counter_1.db", [("c", "c_total", {"a": str(i)}, float(i), 0.0) for i in range(7)])
    _write(str(tmp_path), "histogram_1.db", [("h", "h_bucket", {"le": le}, 1.0, 0.0) for le in ("0.5", "+Inf")])
    assert merge.prefetch(batch=2) == 9 and merge.prefetch(batch=2) == 0
    decoded = merge._files[str(tmp_path / "counter_1.db")]
    assert len(decoded.slots) == 7 and len(decoded.chunks) == 4  # one Struct per batch
    assert_same(str(tmp_path), merge)
    assert merge._files[str(tmp_path / "counter_1.db")] is decoded


def test_prefetch_gives_way_to_a_waiting_scrape(tmp_path):
    merge = MultiProcessMerge(str(tmp_path))
    _write(str(tmp_path), "counter_1.db", [("c", "c_total", {"a": str(i)}, 1.0, 0.0) for i in range(3)])
    merge._wanted = 1  # a scrape is waiting for the lock
    assert merge.prefetch() == 0
    merge._wanted = 0
    assert merge.prefetch() == 3
    assert_same(str(tmp_path), merge)
