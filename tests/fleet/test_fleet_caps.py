"""Label caps hold for the merged fleet, not only per worker: values past the cap fold into __overflow__, each
fold counted; and the series of a pod follow the formula of docs/fleet.md#series."""

from __future__ import annotations

import os
import subprocess
import sys

from fleet_support import env_with_src
from prometheus_client import CollectorRegistry
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

import agentvigil
from agentvigil import metrics as metrics_mod
from agentvigil.metrics import OVERFLOW, AgentMetrics
from agentvigil.multiprocess import FleetCollector
from agentvigil.multiprocess_merge import FleetCaps, MultiProcessMerge
from agentvigil.settings import LABEL_CAPS


def _write(directory, filename: str, entries: list) -> None:
    mmaped = MmapedDict(os.path.join(str(directory), filename))
    try:
        for family, sample, labels, value, stamp in entries:
            mmaped.write_value(mmap_key(family, sample, list(labels), list(labels.values()), "doc"), value, stamp)
    finally:
        mmaped.close()


def _values(families) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def _counter(agent: str, value: float, **labels: str) -> tuple:
    return ("f", "f_total", {"agent": agent, **labels}, value, 0.0)


def test_counters_past_the_cap_add_up_in_overflow_and_admitted_values_stay(tmp_path):
    merge = MultiProcessMerge(str(tmp_path), FleetCaps({"agent": 2}))
    _write(tmp_path, "counter_1.db", [_counter(a, v, status="ok") for a, v in (("a", 1), ("b", 2))])
    merge.collect()  # a and b come first (the order of files in a directory is not defined)
    _write(tmp_path, "counter_1.db", [_counter("c", 3, status="ok")])
    _write(tmp_path, "counter_2.db", [_counter(a, v, status="ok") for a, v in (("d", 4), ("a", 10))])
    assert _values(merge.collect()) == {("f_total", (("agent", "a"), ("status", "ok"))): 11,
                                        ("f_total", (("agent", "b"), ("status", "ok"))): 2,
                                        ("f_total", (("agent", OVERFLOW), ("status", "ok"))): 7}
    assert merge.caps.pending == {"agent": 2}  # c and d: one count per folded label set
    merge.caps.pending = {}
    # the next scrapes keep the same admitted values and count nothing again
    _write(tmp_path, "counter_3.db", [_counter(a, 1, status="ok") for a in ("e", "b")])
    out = _values(merge.collect())
    assert {dict(k[1])["agent"] for k in out} == {"a", "b", OVERFLOW}
    assert out[("f_total", (("agent", OVERFLOW), ("status", "ok")))] == 8
    assert merge.caps.pending == {"agent": 1} and merge.caps.folded == 3
    merge.collect()
    assert merge.caps.pending == {"agent": 1} and merge.caps.folded == 3


def test_gauges_fold_by_their_multiprocess_mode(tmp_path):
    for mode, expected in (("livesum", 5.0), ("livemin", 2.0), ("livemax", 3.0), ("mostrecent", 3.0),
                           ("min", 2.0)):
        directory = tmp_path / mode
        directory.mkdir()
        merge = MultiProcessMerge(str(directory), FleetCaps({"agent": 1}))
        _write(directory, f"gauge_{mode}_1.db", [("g", "g", {"agent": "a"}, 9.0, 1.0)])
        merge.collect()  # a is admitted first
        _write(directory, f"gauge_{mode}_1.db", [("g", "g", {"agent": "b"}, 2.0, 5.0)])
        _write(directory, f"gauge_{mode}_2.db", [("g", "g", {"agent": "c"}, 3.0, 7.0)])
        out = _values(merge.collect())
        # a's series stays as is; b and c fold together, combined as the mode says
        assert out == {("g", (("agent", "a"),)): 9.0, ("g", (("agent", OVERFLOW),)): expected}, mode


def test_histograms_fold_bucket_by_bucket(tmp_path):
    def hist(agent: str, counts: tuple[float, float], total: float) -> list:
        return [("h", "h_bucket", {"agent": agent, "le": "1.0"}, counts[0], 0.0),
                ("h", "h_bucket", {"agent": agent, "le": "+Inf"}, counts[1], 0.0),
                ("h", "h_sum", {"agent": agent}, total, 0.0)]
    merge = MultiProcessMerge(str(tmp_path), FleetCaps({"agent": 1}))
    _write(tmp_path, "histogram_1.db", hist("a", (1, 0), 0.5))
    merge.collect()
    _write(tmp_path, "histogram_1.db", hist("b", (2, 1), 3.0))
    _write(tmp_path, "histogram_2.db", hist("c", (0, 4), 20.0))
    out = _values(merge.collect())
    o = (("agent", OVERFLOW),)
    assert out[("h_bucket", o + (("le", "1.0"),))] == 2  # cumulative per le, after adding up
    assert out[("h_bucket", o + (("le", "+Inf"),))] == 7
    assert out[("h_count", o)] == 7 and out[("h_sum", o)] == 23.0
    assert out[("h_count", (("agent", "a"),))] == 1


def test_tools_are_capped_per_agent(tmp_path):
    entries = [_counter(a, 1, tool=t) for a in ("a", "b") for t in ("t1", "t2", "t3", "t4")]
    _write(tmp_path, "counter_1.db", entries)
    out = _values(MultiProcessMerge(str(tmp_path), FleetCaps({"agent": 10, "tool": 10},
                                                             per_agent={"tool": 2})).collect())
    for agent in ("a", "b"):  # each agent keeps its own first two tools
        assert {dict(k[1])["tool"]: v for k, v in out.items() if dict(k[1])["agent"] == agent} == {
            "t1": 1, "t2": 1, OVERFLOW: 2}


def test_under_the_cap_the_merge_is_prometheus_clients(tmp_path):
    _write(tmp_path, "counter_1.db", [_counter(a, 1, status="ok") for a in ("a", "b")])
    _write(tmp_path, "gauge_livesum_1.db", [("g", "g", {"agent": "a"}, 2.0, 1.0)])
    caps = FleetCaps({"agent": 10}, per_agent={"tool": 1})
    assert _values(MultiProcessMerge(str(tmp_path), caps).collect()) == _values(
        MultiProcessCollector(None, path=str(tmp_path)).collect())
    assert caps.folded == 0


# -- the series formula --------------------------------------------------------------------------------------

PER_AGENT = 58   # runs ×3, steps, three run histograms (15 + 15 + 14), six gauges, cost spikes, loops ×3
PER_TOOL = 18    # ok, error, the duration histogram (13 buckets + +Inf + sum + count)
PER_MODEL = 23   # ok, error, tokens ×4, cost, unpriced, cache ratio, the duration histogram (11 + 3)
FIXED = 36       # build info, internal errors ×24, events dropped ×2, label overflow ×8, price cache evictions


def _series(registry: CollectorRegistry) -> int:
    # in one process prometheus_client adds a *_created series per counter and histogram: not in the formula
    # (multiprocess mode has none; PROMETHEUS_DISABLE_CREATED_SERIES=True drops them in one process)
    return sum(1 for f in registry.collect() for s in f.samples if not s.name.endswith("_created"))


def _exercise(registry: CollectorRegistry, agents: int, tools: int, models: int) -> None:
    for a in range(agents):
        mon = agentvigil.Monitor(f"agent-{a}", registry=registry, heartbeat=False)
        with mon.run() as run:
            with run.step():
                for t in range(tools):
                    with run.tool_call(f"tool-{t}", {"q": t}):
                        pass
                for m in range(models):
                    with run.llm_call("openai", f"model-{m}") as call:
                        call.set_usage(input_tokens=10, output_tokens=1)


def test_series_follow_the_formula_with_small_caps():
    registry = CollectorRegistry()
    metrics_mod._by_registry[id(registry)] = m = AgentMetrics(registry, max_label_values=50, max_agents=3,
                                                              max_tools_per_agent=2, max_models_per_agent=1)
    _exercise(registry, agents=10, tools=4, models=3)
    # 3 agents + __overflow__, each with 2 tools + __overflow__ and 1 model + __overflow__
    assert _series(registry) == (3 + 1) * (PER_AGENT + (2 + 1) * PER_TOOL + (1 + 1) * PER_MODEL) + FIXED
    overflow = {s.labels["label"]: s.value for f in registry.collect() if f.name == "agentvigil_label_overflow"
                for s in f.samples if s.name.endswith("_total")}
    # one count per name folded: 7 agents; for each of the 10 agent names, the tools and models past 2 and 1
    assert overflow == {"agent": 7, "tool": 10 * 2, "model": 10 * 2, "provider": 0, "breaker": 0, "budget": 0,
                        "reason": 0, "detector": 0}
    assert m.cap["agent"].limit == 3


def test_default_caps_bound_the_benchmark_workload():
    """bench/bench_fleet.py's mix (5 tools, 2 models per agent) with 1,000 agent names: ≤ 5,000 series."""
    assert {k: v[1] for k, v in LABEL_CAPS.items()} == {"label": 200, "agent": 20, "tool/agent": 25,
                                                        "model/agent": 10}
    registry = CollectorRegistry()
    metrics_mod._by_registry[id(registry)] = AgentMetrics(registry)
    _exercise(registry, agents=1000, tools=5, models=2)
    expected = (20 + 1) * (PER_AGENT + 5 * PER_TOOL + 2 * PER_MODEL) + FIXED
    assert _series(registry) == expected and expected + 1 <= 5_000  # + the free-bytes gauge of the fleet


FLEET_WORKER = r"""
import sys
import agentvigil
index = int(sys.argv[1])
for a in range(30):  # 30 agent names of its own: 20 admitted by the worker, the rest in __overflow__
    mon = agentvigil.Monitor(f"w{index}-agent-{a}", heartbeat=False)
    with mon.run() as run:
        with run.tool_call("search", {}):
            pass
"""


def test_real_workers_merged_under_the_fleet_agent_cap(tmp_path):
    for index in range(3):
        subprocess.run([sys.executable, "-c", FLEET_WORKER, str(index)], check=True, timeout=60,
                       env=env_with_src(PROMETHEUS_MULTIPROC_DIR=str(tmp_path)))
    counted = metrics_mod.default_metrics().label_overflow.labels("agent")
    before = counted._value.get()
    collector = FleetCollector(str(tmp_path), {"agent": 20, "tool": 200}, {"tool": 25})
    out = _values(collector.collect())
    runs = {dict(k[1])["agent"]: v for k, v in out.items() if k[0] == "agent_runs_total"
            and dict(k[1])["status"] == "ok"}
    # 3 × 21 agent values on disk, 20 + __overflow__ on /metrics, and no run lost
    assert len(runs) == 21 and OVERFLOW in runs and sum(runs.values()) == 90
    assert runs[OVERFLOW] == 90 - 20
    # the serving process counts each label set it folded (the 40 names past the cap, each label set)
    assert counted._value.get() - before == collector.caps.folded > 0 and collector.caps.pending == {}
