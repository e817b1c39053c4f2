"""Parity: one recorded stream, one set of series and verdicts, whoever reads it.

The scenario (``scenario.py``) exercises every metric of docs/metrics.md through the Monitor, as a child of
``agentvigil supervise``. Its own in-process series, ``replay`` of its recording through the Prometheus
sink, ``watch --no-follow --metrics-port``'s registry and supervise's registry must be the same agent_*
series with the same values; and in-process, replay, watch and supervise must reach the same verdicts.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agentvigil import events as ev
from agentvigil.codec import decode
from agentvigil.metrics import AgentMetrics, metrics_for
from agentvigil.policy import WatchConfig
from agentvigil.replay import ReplayStats, replay
from agentvigil.supervise import Supervisor, SupervisePolicy
from agentvigil.supervise.supervisor import EXIT_OK
from agentvigil.watch.runner import Watch
from agentvigil.watch.sources import resolve

from .scenario import agent_series

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Run the scenario under supervise (job mode); keep its registry, journal and recording."""
    out = tmp_path_factory.mktemp("parity")
    policy = SupervisePolicy().with_values(dict(
        record_dir=str(out / "rec"), agent="parity-bot", mode="job", port=0, poll_interval=0.05,
        heartbeat_interval=0.1, startup_timeout=30.0, liveness_timeout=30.0, progress_timeout=30.0,
        cooldown=0.2, max_restarts=0, restart_window=60.0, stop_grace=1.0, min_cycles=3, watchdog=False))
    env = dict(os.environ, OTEL_SDK_DISABLED="true", PYTHONPATH=os.pathsep.join(
        [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]))
    registry = CollectorRegistry()
    supervisor = Supervisor([sys.executable, str(HERE / "scenario.py"), str(out)], policy, registry=registry,
                            environ=env, serve=False)
    try:
        assert supervisor.run() == EXIT_OK
    finally:
        supervisor.close()
    sessions = [p for p in (out / "rec").iterdir() if p.is_dir()]
    assert len(sessions) == 1
    journal = [json.loads(line) for line in Path(supervisor.journal.path).read_text().splitlines()]
    return {"out": out, "session": sessions[0], "registry": registry, "journal": journal}


def _series(registry: CollectorRegistry) -> dict[str, float]:
    return agent_series(generate_latest(registry).decode())


def _watch(session: Path, metrics: AgentMetrics | None) -> list[dict]:
    buf = io.StringIO()
    watch = Watch(resolve(str(session)), WatchConfig.defaults(), follow=False, json_out=True, out=buf,
                  status_every=0, metrics=metrics, use_inotify=False)
    watch.run()
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_every_metric_is_exercised(recorded):
    inprocess = agent_series((recorded["out"] / "inprocess.prom").read_text())
    families = {name.split("{")[0] for name in inprocess}
    documented = set()
    for line in (HERE.parents[1] / "docs" / "metrics.md").read_text().splitlines():
        if line.startswith("| `agent_"):
            documented.add(line.split("`")[1])
    stems = {f.removesuffix("_total").removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
             for f in families}
    missing = {d for d in documented if d.removesuffix("_total") not in stems}
    assert not missing, f"the scenario does not exercise {sorted(missing)}"
    assert inprocess['agent_circuit_breaker_state{breaker="fake-provider"}'] == 1.0
    assert inprocess['agent_cost_spikes_total{agent="parity-bot"}'] == 1.0


def test_metric_parity_inprocess_replay_watch_supervise(recorded):
    inprocess = agent_series((recorded["out"] / "inprocess.prom").read_text())
    replay_registry = CollectorRegistry()
    stats = ReplayStats()
    list(replay(str(recorded["session"]), stats=stats, metrics=AgentMetrics(replay_registry)))
    assert not stats.skipped
    watch_registry = CollectorRegistry()
    _watch(recorded["session"], metrics_for(watch_registry))
    for name, registry in (("replay", replay_registry), ("watch", watch_registry),
                           ("supervise", recorded["registry"])):
        got = _series(registry)
        assert got.keys() == inprocess.keys(), (name, sorted(got.keys() ^ inprocess.keys()))
        diff = {k: (inprocess[k], got[k]) for k in inprocess if got[k] != pytest.approx(inprocess[k], rel=1e-9)}
        assert not diff, (name, diff)


def _key(record: dict) -> tuple:
    return (record["detector"], record["run_id"], record["step_index"])


def test_verdict_parity_inprocess_replay_watch_supervise(recorded):
    lines = (recorded["session"] / "events.ndjson").read_bytes().splitlines()
    inprocess = sorted(_key({"detector": e.detector, "run_id": e.run_id, "step_index": e.step_index})
                       for e in map(decode, lines) if e.event_type == ev.DETECTION)
    assert {k[0] for k in inprocess} >= {"same_result", "cost_over_baseline", "breaker", "budget", "correlated",
                                       "run_limit", "runaway"}
    replayed = sorted(_key(r) for r in replay(str(recorded["session"])))
    watched = sorted(_key(r) for r in _watch(recorded["session"], None) if r.get("type") == "breach")
    supervised = sorted(_key(r) for r in recorded["journal"] if r.get("type") == "detection")
    assert replayed == inprocess
    assert watched == inprocess
    assert supervised == inprocess
