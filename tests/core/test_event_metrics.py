from agentvigil.metrics import AgentMetrics
from agentvigil.sinks.event_metrics import EventMetrics


def test_recorded_events_rebuild_the_contract_with_bounded_labels(registry, sample):
    em = EventMetrics(AgentMetrics(registry))
    base = {"agent_id": "polyglot", "session_id": "s", "run_id": "r"}
    em.feed({"event_type": "run_start", "ts": 1.0, **base})
    em.feed({"event_type": "tool_end", "ts": 2.0, "tool_name": "grep", "status": "error",
             "error_kind": "x" * 500 + "\n\"evil", "duration_ms": 5.0, **base})
    em.feed({"event_type": "llm_call", "ts": 3.0, "provider": "openai", "model": "gpt-4o-mini", "status": "ok",
             "input_tokens": 1000, "output_tokens": 10, "cache_read_tokens": 800, "cost_usd": 0.01, **base})
    assert sample("agent_active_run_cost_usd", agent="polyglot") == 0.01
    em.feed({"event_type": "llm_call", "ts": "yesterday", **base})            # invalid: counted, skipped
    em.feed({"event_type": "run_end", "ts": 4.0, "status": "ok", "cost_usd": 0.01, "step_index": 1, **base})
    assert em.invalid == 1
    # an error kind outside the taxonomy becomes tool_error instead of a new label value
    assert sample("agent_tool_errors_total", agent="polyglot", tool="grep", kind="tool_error") == 1
    assert sample("agent_cache_hit_ratio", agent="polyglot", provider="openai", model="gpt-4o-mini") == 0.8
    assert sample("agent_runs_total", agent="polyglot", status="ok") == 1
    assert sample("agent_active_runs", agent="polyglot") == 0
    assert sample("agent_active_run_cost_usd", agent="polyglot") == 0


def test_reset_runs_after_a_restart(registry, sample):
    em = EventMetrics(AgentMetrics(registry))
    em.feed({"event_type": "run_start", "ts": 1.0, "agent_id": "a", "session_id": "s", "run_id": "r"})
    assert sample("agent_active_runs", agent="a") == 1
    em.reset_runs()
    assert sample("agent_active_runs", agent="a") == 0
