import asyncio
import threading

import pytest
from prometheus_client import CollectorRegistry

import agentvigil
from agentvigil import LoopDetected, ModelPrice, PriceBook, RunKilled


def test_public_api_round_trip(make_monitor, sample):
    mon = make_monitor("support-bot")
    with mon.run(task_id="t-1") as run:
        assert agentvigil.current_run() is run
        with run.step():
            with run.tool_call("search", {"q": "cats"}) as call:
                call.set_result(["a cat"])
            cost = run.llm_usage(provider="openai", model="gpt-4o-mini", input_tokens=1200,
                                 output_tokens=80, cache_read_tokens=1000, cache_write_tokens=0)
    assert agentvigil.current_run() is None
    # gpt-4o-mini: $0.15 / $0.075 cached / $0.60 per MTok (genai-prices)
    assert cost == pytest.approx((200 * 0.15 + 1000 * 0.075 + 80 * 0.60) / 1e6)
    labels = dict(agent="support-bot", provider="openai", model="gpt-4o-mini")
    assert sample("agent_runs_total", agent="support-bot", status="ok") == 1
    assert sample("agent_steps_total", agent="support-bot") == 1
    assert sample("agent_tool_calls_total", agent="support-bot", tool="search", status="ok") == 1
    assert sample("agent_llm_calls_total", status="ok", **labels) == 1
    assert sample("agent_tokens_total", type="input", **labels) == 1200
    assert sample("agent_tokens_total", type="cache_read", **labels) == 1000
    assert sample("agent_cost_usd_total", **labels) == pytest.approx(cost)
    assert sample("agent_cache_hit_ratio", **labels) == pytest.approx(1000 / 1200)
    assert sample("agent_last_run_cost_usd", agent="support-bot") == pytest.approx(cost)
    assert sample("agent_run_cost_usd_count", agent="support-bot") == 1
    assert sample("agent_run_steps_sum", agent="support-bot") == 1
    assert sample("agent_active_runs", agent="support-bot") == 0


def test_cache_ratio_counts_total_misses(make_monitor, sample):
    """A ratio over read+write alone would say 100 % here; the real hit ratio is 0.5."""
    mon = make_monitor("a")
    with mon.run() as run:
        run.llm_usage("openai", "gpt-4o-mini", input_tokens=1000, cache_read_tokens=1000)
        run.llm_usage("openai", "gpt-4o-mini", input_tokens=1000, cache_read_tokens=0)
    assert sample("agent_cache_hit_ratio", agent="a", provider="openai", model="gpt-4o-mini") == 0.5


def test_exclusive_input_tokens_are_normalised(make_monitor, sample):
    mon = make_monitor("a")
    with mon.run() as run:
        # Anthropic reports input_tokens without the cached part
        run.llm_usage("anthropic", "claude-sonnet-4-5", input_tokens=200, output_tokens=10,
                      cache_read_tokens=800, cache_write_tokens=0, input_excludes_cache=True)
        # impossible as inclusive numbers (cache > input): treated as exclusive too
        run.llm_usage("anthropic", "claude-sonnet-4-5", input_tokens=100, cache_read_tokens=900)
    labels = dict(agent="a", provider="anthropic", model="claude-sonnet-4-5")
    assert sample("agent_tokens_total", type="input", **labels) == 2000
    assert sample("agent_cache_hit_ratio", **labels) == pytest.approx(1700 / 2000)


def test_unknown_model_is_counted_never_zero(make_monitor, sample):
    mon = make_monitor("a")
    with mon.run() as run:
        assert run.llm_usage("acme", "mystery-model-9", input_tokens=100, output_tokens=10) is None
    assert sample("agent_llm_calls_unpriced_total", agent="a", provider="acme", model="mystery-model-9") == 1
    assert sample("agent_cost_usd_total", agent="a", provider="acme", model="mystery-model-9") == 0
    assert run.unpriced_calls == 1


def test_price_overrides_win(make_monitor, sample):
    prices = PriceBook({"in-house-7b": ModelPrice(input=1.0, output=2.0)})
    mon = make_monitor("a", prices=prices)
    with mon.run() as run:
        assert run.llm_usage("vllm", "in-house-7b", input_tokens=1_000_000, output_tokens=500_000) == pytest.approx(2.0)


def test_tool_errors_by_kind_and_reraised_unchanged(make_monitor, sample):
    mon = make_monitor("a")
    err = TimeoutError("slow")
    with mon.run() as run:
        with pytest.raises(TimeoutError) as info:
            with run.tool_call("fetch", {"u": 1}):
                raise err
        assert info.value is err
        with pytest.raises(KeyError):
            with run.tool_call("fetch", {"u": 2}):
                raise KeyError("x")
    assert sample("agent_tool_errors_total", agent="a", tool="fetch", kind="timeout") == 1
    assert sample("agent_tool_errors_total", agent="a", tool="fetch", kind="tool_error") == 1
    assert sample("agent_tool_calls_total", agent="a", tool="fetch", status="error") == 2
    assert sample("agent_runs_total", agent="a", status="ok") == 1


def test_run_error_status(make_monitor, sample):
    mon = make_monitor("a")
    with pytest.raises(ValueError):
        with mon.run():
            raise ValueError()
    assert sample("agent_runs_total", agent="a", status="error") == 1


def test_subscribe_receives_loop_detections(make_monitor, sample):
    mon = make_monitor("a")
    got = []
    mon.subscribe(got.append)
    with mon.run(task_id="t") as run:
        with run.step():
            for _ in range(3):
                with run.tool_call("search", {"q": "same"}) as call:
                    call.set_result("same")
    assert [e.detector for e in got] == ["same_result"]
    assert got[0].task_id == "t" and got[0].step_index == 1
    assert sample("agent_loop_detections_total", agent="a", detector="same_result") == 1


def test_loop_action_raise_stops_before_the_next_call(make_monitor):
    mon = make_monitor("a", loop_action="raise")
    calls = 0
    with pytest.raises(LoopDetected):
        with mon.run() as run:
            for _ in range(10):
                with run.tool_call("search", {"q": "same"}):
                    calls += 1
    assert calls == 3


def test_kill_switch(make_monitor, sample):
    mon = make_monitor("a")
    steps = 0
    with pytest.raises(RunKilled):
        with mon.run() as run:
            for i in range(10):
                with run.step():
                    steps += 1
                    if i == 1:
                        run.kill("operator")
    assert steps == 2
    assert sample("agent_runs_total", agent="a", status="killed") == 1
    assert sample("agent_kills_total", agent="a", reason="operator") == 1


def test_kill_all_from_another_thread(make_monitor):
    mon = make_monitor("a")
    started = threading.Event()
    result = {}

    def agent():
        try:
            with mon.run() as run:
                started.set()
                for _ in range(1000):
                    with run.step():
                        threading.Event().wait(0.005)
        except RunKilled as exc:
            result["reason"] = exc.reason

    t = threading.Thread(target=agent)
    t.start()
    assert started.wait(2)
    assert mon.kill_all("budget breach") == 1
    t.join(3)
    assert result == {"reason": "budget breach"}


def test_cost_over_baseline_in_flight_and_baseline_gauge(make_monitor, sample):
    mon = make_monitor("a", cost_min_runs=3)
    got = []
    mon.subscribe(got.append)
    for _ in range(3):
        with mon.run() as run:
            run.llm_usage("openai", "gpt-4o-mini", input_tokens=10_000, output_tokens=100)
    base = sample("agent_run_cost_baseline_usd", agent="a")
    assert base > 0
    with mon.run() as run:
        for _ in range(4):
            run.llm_usage("openai", "gpt-4o-mini", input_tokens=10_000, output_tokens=100)
        assert sample("agent_active_run_cost_usd", agent="a") == pytest.approx(4 * base)
        assert [e.detector for e in got] == ["cost_over_baseline"] and got[0].detail["in_flight"] is True
    assert len(got) == 1  # flagged once per run
    assert sample("agent_active_run_cost_usd", agent="a") == 0


def test_cost_baseline_carries_from_one_process_per_task_to_the_next(make_monitor, sample, tmp_path):
    """A harness that starts one Monitor per task: the baseline comes from the state file beside the sessions."""
    record = tmp_path / "sessions"
    for _ in range(3):
        mon = make_monitor("a", cost_min_runs=3, record_dir=str(record))
        with mon.run() as run:
            run.llm_usage("openai", "gpt-4o-mini", input_tokens=10_000, output_tokens=100)
        mon.close()
    fresh = CollectorRegistry()                  # a new process: nothing exported yet
    mon = agentvigil.Monitor("a", registry=fresh, heartbeat=False, cost_min_runs=3, record_dir=str(record))
    got = []
    mon.subscribe(got.append)
    with mon.run() as run:
        base = fresh.get_sample_value("agent_run_cost_baseline_usd", {"agent": "a"})   # from its first run's start
        for _ in range(4):
            run.llm_usage("openai", "gpt-4o-mini", input_tokens=10_000, output_tokens=100)
        assert base and fresh.get_sample_value("agent_active_run_cost_usd", {"agent": "a"}) == pytest.approx(4 * base)
    mon.close()
    verdicts = [e for e in got if e.event_type == "detection"]
    assert [v.detector for v in verdicts] == ["cost_over_baseline"] and verdicts[0].detail["in_flight"] is True


def test_guard_events_reach_the_run_monitor(make_monitor, registry):
    mon = make_monitor("a")
    got = []
    mon.subscribe(got.append)
    budget = agentvigil.TokenBudget("b", limit=10, registry=registry)
    with mon.run(task_id="t9") as run:
        with pytest.raises(agentvigil.BudgetExceeded):
            budget.reserve(11)
    assert got[0].event_type == "budget_exceeded" and got[0].agent_id == "a" and got[0].task_id == "t9"


def test_asyncio_tasks_keep_their_own_run(make_monitor, sample):
    mon = make_monitor("a")

    async def task(i):
        async with mon.run(task_id=f"t{i}") as run:
            for _ in range(5):
                await asyncio.sleep(0)
                assert agentvigil.current_run() is run
                async with run.tool_call("t", {"i": i}):
                    await asyncio.sleep(0)

    async def main():
        await asyncio.gather(*(task(i) for i in range(20)))

    asyncio.run(main())
    assert sample("agent_runs_total", agent="a", status="ok") == 20
    assert sample("agent_tool_calls_total", agent="a", tool="t", status="ok") == 100


def test_threads(make_monitor, sample):
    mon = make_monitor("a")

    def work(i):
        for j in range(200):
            with mon.run() as run:
                with run.tool_call("t", {"i": i, "j": j}):
                    pass
                run.llm_usage("openai", "gpt-4o-mini", input_tokens=10, output_tokens=1)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sample("agent_runs_total", agent="a", status="ok") == 1600
    assert sample("agent_tokens_total", agent="a", provider="openai", model="gpt-4o-mini", type="input") == 16000
    assert sample("agent_active_runs", agent="a") == 0


def test_never_hurts_the_agent(make_monitor, sample, monkeypatch):
    mon = make_monitor("a")
    mon.subscribe(lambda e: 1 / 0)              # a broken subscriber

    class Unserialisable:
        def __repr__(self):
            raise RuntimeError("no repr either")

    with mon.run() as run:
        with run.tool_call("t", {"x": Unserialisable()}):   # hostile arguments
            pass
        for _ in range(3):
            with run.tool_call("t", "same"):
                pass
        run.llm_usage("openai", "gpt-4o-mini", input_tokens="lots")  # garbage usage
        monkeypatch.setattr(mon.prices, "cost", lambda *a: 1 / 0)    # pricing blows up
        run.llm_usage("openai", "gpt-4o-mini", input_tokens=10)
    errors = mon.metrics.registry.get_sample_value   # counted in the registry the Monitor was given
    assert errors("agentvigil_internal_errors_total", {"component": "subscriber"}) >= 1
    assert errors("agentvigil_internal_errors_total", {"component": "pricing"}) >= 1
    assert sample("agent_runs_total", agent="a", status="ok") == 1


def test_heartbeat_ticker_marks_liveness_and_idle_progress(registry, sample):
    mon = agentvigil.Monitor("hb", registry=registry, heartbeat_interval=0.05)
    first = sample("agent_heartbeat_timestamp_seconds", agent="hb")
    run = mon.start_run()
    progress_busy = sample("agent_progress_timestamp_seconds", agent="hb")
    threading.Event().wait(0.3)
    assert sample("agent_heartbeat_timestamp_seconds", agent="hb") > first
    # busy and not progressing: progress stays put while liveness moves (the zombie signature)
    assert sample("agent_progress_timestamp_seconds", agent="hb") == progress_busy
    run.end()
    threading.Event().wait(0.2)
    assert sample("agent_progress_timestamp_seconds", agent="hb") > progress_busy


def test_settings_from_env_and_bad_values(monkeypatch, caplog):
    from agentvigil.config import Settings
    monkeypatch.setenv("AGENTVIGIL_LOOP_MAX_REPEATS", "5")
    monkeypatch.setenv("AGENTVIGIL_COST_SPIKE_FACTOR", "-1")
    monkeypatch.setenv("AGENTVIGIL_LOOP_ACTION", "explode")
    s = Settings.from_env(loop_window=7)
    assert (s.loop_max_repeats, s.cost_spike_factor, s.loop_action, s.loop_window) == (5, 3.0, "record", 7)
    assert "AGENTVIGIL_COST_SPIKE_FACTOR" in caplog.text


def test_series_for_a_new_agent_resolve_without_deadlock(registry):
    from agentvigil.metrics import AgentMetrics
    m = AgentMetrics(registry)
    # tool()/model() for an agent never seen before must create its agent series too (regression: self-deadlock)
    assert m.tool("fresh-agent", "t").agent == "fresh-agent"
    assert m.model("other-agent", "openai", "gpt-4o-mini").labels == ("other-agent", "openai", "gpt-4o-mini")
