"""Run limits (max_steps, max_seconds, max_cost_usd) and the dollar budget (CostBudget)."""

import pytest

from agentvigil import BudgetExceeded, CostBudget, GuardError, RunLimitExceeded, scopes
from agentvigil.detectors.run_limit import RunLimitDetector
from agentvigil.events import RUN_START, STEP_END, Event


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(scopes, "_time", c)
    monkeypatch.setattr(scopes, "perf_counter", c)
    return c


def test_max_steps_stops_the_run_at_the_next_step(make_monitor, sample):
    mon = make_monitor("a")
    done = 0
    with pytest.raises(RunLimitExceeded) as info:
        with mon.run(task_id="t", max_steps=3) as run:
            for _ in range(40):
                with run.step():
                    done += 1
    assert done == 3
    assert isinstance(info.value, GuardError)
    assert (info.value.limit, info.value.value, info.value.threshold) == ("max_steps", 3, 3)
    assert sample("agent_detections_total", agent="a", detector="run_limit") == 1
    assert sample("agent_runs_total", agent="a", status="error") == 1


def test_max_steps_stops_at_a_tool_call_boundary_too(make_monitor):
    mon = make_monitor("a")
    with mon.run(max_steps=1) as run:
        with run.step():
            pass
        with pytest.raises(RunLimitExceeded):
            with run.tool_call("search", {"q": 1}):
                pass


def test_max_cost_stops_before_the_next_llm_call(make_monitor, sample):
    mon = make_monitor("a")
    calls = 0
    with pytest.raises(RunLimitExceeded) as info:
        with mon.run(max_cost_usd=0.001) as run:
            for _ in range(40):
                with run.llm_call("openai", "gpt-4o-mini") as call:
                    calls += 1
                    call.set_usage(input_tokens=5000, output_tokens=0)   # $0.00075 each
    assert calls == 2 and info.value.limit == "max_cost_usd"
    assert info.value.value == pytest.approx(0.0015)
    assert sample("agent_detections_total", agent="a", detector="run_limit") == 1


def test_max_seconds_stops_at_the_next_boundary(make_monitor, clock, sample):
    mon = make_monitor("a")
    with mon.run(max_seconds=60) as run:
        with run.tool_call("t", 1):
            pass
        clock.now += 30
        with run.tool_call("t", 2):
            pass
        clock.now += 31
        with pytest.raises(RunLimitExceeded) as info:
            with run.tool_call("t", 3):
                pass
        assert info.value.limit == "max_seconds" and info.value.value == pytest.approx(61)
        with run.step():   # raised once; the run may wind down
            pass
    assert sample("agent_detections_total", agent="a", detector="run_limit") == 1


def test_max_seconds_reached_inside_one_long_step_is_judged_by_the_clock(make_monitor, clock):
    mon = make_monitor("a")
    with mon.run(max_seconds=10) as run:
        clock.now += 11
        verdicts = mon.pipeline.tick(clock.now)   # what the heartbeat thread does
        assert [v.detector for v in verdicts] == ["run_limit"]
        with pytest.raises(RunLimitExceeded):
            run.check()


def test_no_limits_means_no_verdict(make_monitor, sample):
    mon = make_monitor("a")
    with mon.run(max_steps=0, max_seconds=float("nan"), max_cost_usd=-1) as run:   # not limits
        assert run.limits is None and run._deadline is None
        for _ in range(10):
            with run.step():
                pass
    assert sample("agent_detections_total", agent="a", detector="run_limit") == 0


def test_other_runs_are_not_stopped(make_monitor):
    mon = make_monitor("a")
    with pytest.raises(RunLimitExceeded):
        with mon.run(max_steps=1) as run:
            for _ in range(3):
                with run.step():
                    pass
    with mon.run() as other:
        for _ in range(3):
            with other.step():
                pass
    assert other.status == "ok"


def test_detector_judges_recorded_events_alike():
    d = RunLimitDetector()
    start = Event(RUN_START, 0.0, run_id="r", detail={"max_steps": 2})
    assert d.feed(start) is None
    assert d.feed(Event(STEP_END, 1.0, run_id="r")) is None
    found = d.feed(Event(STEP_END, 2.0, run_id="r"))
    assert found and found[0].detail == {"limit": "max_steps", "value": 2, "threshold": 2.0}
    assert d.feed(Event(STEP_END, 3.0, run_id="r")) is None   # one verdict per run


def test_cost_budget_reserves_commits_and_refuses(registry, sample):
    b = CostBudget("daily", usd_limit=1.0, registry=registry)
    r = b.reserve(0.4)
    assert b.utilization == pytest.approx(0.4)
    r.commit(0.25)
    assert b.spent_usd == pytest.approx(0.25) and b.remaining_usd == pytest.approx(0.75)
    with pytest.raises(BudgetExceeded) as info:
        b.reserve(0.8)
    assert info.value.unit == "usd" and info.value.available == pytest.approx(0.75)
    assert "USD" in str(info.value)
    assert sample("agent_budget_exceeded_total", budget="daily") == 1
    assert sample("agent_budget_utilization_ratio", budget="daily") == pytest.approx(0.25)
    # dollars are not tokens: the token gauges stay out of it
    assert registry.get_sample_value("agent_budget_limit_tokens", {"budget": "daily"}) is None


def test_cost_budget_rejects_bad_amounts_naming_them(registry):
    with pytest.raises(ValueError, match="limit"):
        CostBudget("x", usd_limit=0)
    b = CostBudget("x", usd_limit=1.0, registry=registry)
    with pytest.raises(ValueError, match="tokens"):
        b.reserve(float("inf"))
    r = b.reserve(0.1)
    r.commit(float("nan"))   # bad usage data: charged what was reserved, never raised
    assert b.spent_usd == pytest.approx(0.1)


def test_context_window_on_run_is_projected_by_runaway_and_not_enforced(make_monitor, sample):
    mon = make_monitor("ctx")
    verdicts = []
    mon.subscribe(verdicts.append)
    with mon.run(task_id="t", context_window=64_000) as run:
        for i in range(30):   # the prompt grows 6,000 tokens a call: the window is within reach after a few
            with run.step():
                run.llm_usage("openai", "gpt-4o-mini", input_tokens=5_000 + 6_000 * i, output_tokens=50)
    runaway = [v for v in verdicts if v.detector == "runaway"]
    assert [v.detail["why"] for v in runaway] == ["context_limit"]
    assert runaway[0].detail["threshold"] == 64_000
    assert sample("agent_runs_total", agent="ctx", status="ok") == 1   # recorded, never a RunLimitExceeded
