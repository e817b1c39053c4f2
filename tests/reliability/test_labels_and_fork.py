"""/metrics never fails and memory stays bounded on hostile names; a Monitor survives fork."""

from __future__ import annotations

import json
import multiprocessing
import os

from prometheus_client import CollectorRegistry, generate_latest

import agentvigil
from agentvigil import events as ev
from agentvigil.events import Event
from agentvigil.metrics import OVERFLOW, AgentMetrics
from agentvigil.sinks.prometheus import PrometheusSink

from .forkheld import run_script


def test_hostile_label_values_never_break_the_exposition():
    registry = CollectorRegistry()
    mon = agentvigil.Monitor("bot\ud800", registry=registry, heartbeat=False)
    with mon.run() as run:
        for name in ("x\ud800y", "tab\there", "nl\nhere", "\x00nul", "", "é" * 500):
            with run.tool_call(name, {"a": 1}):
                pass
        run.llm_usage("prov\udfff", "model\x7f", input_tokens=10, output_tokens=1)
    text = generate_latest(registry).decode("utf-8")          # raises if any label is not valid UTF-8
    assert 'agent_tool_calls_total{agent="bot\ufffd",status="ok",tool="x\ufffdy"} 1.0' in text
    assert "tab here" in text and "\x00" not in text


def test_every_label_is_capped_on_the_event_path():
    """What a hostile recording (watch --metrics-port, supervise, replay) can do: 5,000 distinct breaker,
    budget, tool, model and agent names give at most cap + 1 values per label."""
    registry = CollectorRegistry()
    sink = PrometheusSink(AgentMetrics(registry, max_label_values=50))
    for i in range(5_000):
        sink.handle(Event(ev.BREAKER_TRANSITION, 1.0, name=f"b{i}", state="open", reason=f"r{i}"))
        sink.handle(Event(ev.BUDGET_EXCEEDED, 1.0, name=f"g{i}", detail={"limit": 10, "committed": 11}))
        sink.handle(Event(ev.TOOL_END, 1.0, agent_id=f"a{i}", tool_name=f"t{i}", status="error",
                          error_kind=f"k{i}", duration_ms=1.0))
        sink.handle(Event(ev.LLM_CALL, 1.0, agent_id=f"a{i}", provider=f"p{i}", model=f"m{i}", status="ok",
                          input_tokens=1, output_tokens=1, cost_usd=0.1))
        sink.handle(Event(ev.DETECTION, 1.0, agent_id=f"a{i}", detector=f"d{i}"))
    values: dict[str, set[str]] = {}
    for metric in registry.collect():
        for sample in metric.samples:
            for label, value in sample.labels.items():
                if label == "detector" and metric.name != "agent_detections":
                    continue   # agent_loop_detections_total: three fixed values
                values.setdefault(label, set()).add(value)
    for label in ("breaker", "budget", "tool", "provider", "model", "agent", "detector", "reason"):
        assert len(values[label]) <= 51, (label, len(values[label]))
        assert OVERFLOW in values[label]
    assert values["kind"] <= set(agentvigil.errors.ERROR_KINDS)   # error kinds: the fixed taxonomy only


def test_many_agent_names_keep_memory_bounded():
    metrics = AgentMetrics(CollectorRegistry(), max_label_values=20)
    for i in range(30_000):
        metrics.agent(f"agent-{i}")
    assert len(metrics._agents) <= 10_000
    assert metrics.agent("agent-29999").agent == OVERFLOW


def _child(record_dir: str, out: str) -> None:
    mon = _parent_monitor
    with mon.run(task_id=f"child-{os.getpid()}") as run:
        with run.step():
            with run.tool_call("t", {"pid": os.getpid()}):
                pass
    mon.close()
    with open(out, "w") as fh:
        json.dump({"session": mon.session_id, "pid": os.getpid(),
                   "ticker": agentvigil.monitor._ticker._thread is not None
                   and agentvigil.monitor._ticker._thread.is_alive()}, fh)


_parent_monitor: agentvigil.Monitor | None = None


def test_monitor_created_before_fork_records_each_child_in_its_own_session(tmp_path):
    global _parent_monitor
    record = tmp_path / "rec"
    _parent_monitor = agentvigil.Monitor("preforked", registry=CollectorRegistry(), record_dir=str(record),
                                         heartbeat=True, heartbeat_interval=0.2)
    parent_session = _parent_monitor.session_id
    ctx = multiprocessing.get_context("fork")
    outs = [tmp_path / f"child{i}.json" for i in range(3)]
    procs = [ctx.Process(target=_child, args=(str(record), str(out))) for out in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    children = [json.loads(out.read_text()) for out in outs]
    sessions = {c["session"] for c in children}
    assert len(sessions) == 3 and parent_session not in sessions
    assert all(c["ticker"] for c in children)                    # each child has its own heartbeat thread
    for child in children:
        lines = (record / child["session"] / "events.ndjson").read_text().splitlines()
        kinds = [json.loads(line)["event_type"] for line in lines]
        assert "run_end" in kinds and "tool_end" in kinds
        assert all(json.loads(line)["session_id"] == child["session"] for line in lines)
        assert json.loads((record / child["session"] / "meta.json").read_text())["pid"] == child["pid"]
    _parent_monitor.close()


_FORK_WHILE_HELD = r"""
import sys
from forkheld import fork_while_held
from prometheus_client import CollectorRegistry, generate_latest
import agentvigil
from agentvigil import _safety

registry = CollectorRegistry()
mon = agentvigil.Monitor("forked-busy", registry=registry, record_dir=sys.argv[1], heartbeat=True,
                         heartbeat_interval=0.2)
breaker = agentvigil.CircuitBreaker("provider", registry=registry)
budget = agentvigil.TokenBudget("tokens", 1000, registry=registry)
with mon.run() as run:   # the parent's series exist: the child's new names must take the locks
    with run.tool_call("warm"):
        pass
locks = list(_safety._FORK_LOCKS)
assert mon.metrics._lock in locks and mon.pipeline._lock in locks and breaker._lock in locks
def child():
    # the child's own new threads (heartbeat, recorder writer) may hold one for a moment: wait, briefly
    still_locked = [lock for lock in locks if not lock.acquire(timeout=5)]
    for lock in locks:
        if lock not in still_locked:
            lock.release()
    with mon.run(task_id="child") as run:
        with run.step():
            with run.tool_call("never-seen-tool", {"q": 1}) as call:
                call.set_result("ok")
            breaker.allow()
            run.llm_usage("openai", "never-seen-model", 10, 5)
            breaker.record_success()
            with budget.reserve(10) as reservation:
                reservation.commit(5)
    mon.close()
    text = generate_latest(registry).decode()
    if still_locked or 'tool="never-seen-tool"' not in text:
        print("still locked:", still_locked, file=sys.stderr)
        return 2
    return 0

code = fork_while_held(locks, child)
mon.close()
sys.exit(code)
"""


def test_a_fork_while_other_threads_hold_our_locks_leaves_the_child_working(tmp_path):
    """gunicorn --preload / Celery prefork fork while the agent's other threads are busy: a lock one of them
    holds at that moment would stay locked forever in the child (that thread does not exist there). Every lock of
    ours is held by another thread across the fork here; the child must get them unlocked and record a run with
    names it has never seen (new series: the metrics' and label caps' locks), a breaker and a budget. In a
    process of its own, so no other test's threads hold anything at the fork."""
    run_script(_FORK_WHILE_HELD, str(tmp_path / "rec"))
