"""CrewAI's tool events as older releases send them (no ``started_event_id``, finish handled before start), fed
to the bridge directly: no CrewAI needed, so these run in the main suite."""

from __future__ import annotations

from types import SimpleNamespace

from agentvigil.instrumentation.crewai.patch import EventBridge

A = {"agent": "itest"}


def _start(event_id):
    return SimpleNamespace(type="tool_usage_started", event_id=event_id, tool_name="search", tool_args={"q": "x"})


def _finish(error=None):  # CrewAI before 1.10: no started_event_id on the finish
    kind = "tool_usage_error" if error else "tool_usage_finished"
    return SimpleNamespace(type=kind, tool_name="search", output="ok", error=error)


def test_finish_before_start_without_started_event_id_is_held_until_the_start(monitor, sample):
    bridge = EventBridge()
    with monitor.run(task_id="t"):
        bridge.on_tool_finished(None, _finish())
        assert sample("agent_tool_calls_total", tool="search", status="ok", **A) == 0
        bridge.on_tool_started(None, _start("e1"))
    assert sample("agent_tool_calls_total", tool="search", status="ok", **A) == 1


def test_finishes_pair_with_starts_in_order_without_started_event_id(monitor, sample):
    bridge = EventBridge()
    with monitor.run(task_id="t"):
        bridge.on_tool_started(None, _start("e1"))
        bridge.on_tool_started(None, _start("e2"))
        bridge.on_tool_finished(None, _finish())
        bridge.on_tool_finished(None, _finish(error="upstream 502"))
    assert sample("agent_tool_calls_total", tool="search", status="ok", **A) == 1
    assert sample("agent_tool_calls_total", tool="search", status="error", **A) == 1


def test_inactive_bridge_ignores_events(monitor, sample):
    """CrewAI before 1.10 cannot unregister handlers: after uninstrument() they stay on the bus, inert."""
    bridge = EventBridge()
    bridge.active = False
    with monitor.run(task_id="t"):
        bridge.on_tool_started(None, _start("e1"))
        bridge.on_tool_finished(None, _finish())
    assert sample("agent_tool_calls_total", tool="search", status="ok", **A) == 0
