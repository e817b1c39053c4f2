import json

from agentvigil.detectors.runaway import RunawayDetector, RunawayPolicy

from .streams import Stream, verdicts


def run(det, run_id, steps, cost=0.01, status="ok", **limits):
    s = Stream(run_id)
    events = [s.start(**limits)]
    for i in range(steps):
        events.append(s.llm(cost))
        events.append(s.tool("bash", f"cmd {run_id} {i}", f"out {i}"))
    events.append(s.end(status))
    return verdicts(det, events)


def test_fires_on_a_run_far_longer_than_completed_ones():
    det = RunawayDetector(RunawayPolicy(min_runs=20))
    for i in range(25):
        assert run(det, f"h{i}", 8 + i % 5) == []
    found = run(det, "long", 60, status="error")
    assert len(found) == 1
    assert found[0].detail["why"] in ("length", "spend_at_step")
    assert found[0].detail["steps"] < 60


def test_spend_at_the_same_step_index():
    det = RunawayDetector(RunawayPolicy(min_runs=20))
    for i in range(25):
        run(det, f"h{i}", 20, cost=0.01)
    found = run(det, "pricey", 12, cost=0.2)
    assert [v.detail["why"] for v in found] == ["spend_at_step"]
    assert found[0].detail["steps"] == 5        # the first checkpoint


def test_no_verdict_before_min_runs_and_healthy_run_quiet():
    det = RunawayDetector(RunawayPolicy(min_runs=20))
    for i in range(5):
        run(det, f"h{i}", 10)
    assert run(det, "long", 100) == []        # too few completed runs to judge length
    det2 = RunawayDetector(RunawayPolicy(min_runs=20))
    for i in range(30):
        run(det2, f"h{i}", 10 + i % 3)
    assert run(det2, "normal", 11) == []


def test_declared_step_limit_projection():
    det = RunawayDetector()
    found = run(det, "limited", 30, max_steps=30)
    assert [v.detail["why"] for v in found] == ["step_limit"]
    assert found[0].detail["steps"] == 24      # 0.8 of the limit


def test_flagged_runs_never_feed_the_baseline():
    det = RunawayDetector(RunawayPolicy(min_runs=20))
    for i in range(25):
        run(det, f"h{i}", 10)
    before = det.baseline_size("a")
    assert run(det, "long", 80, status="ok")   # flagged, then ends "ok"
    assert det.baseline_size("a") == before


def test_baseline_persists_across_processes(tmp_path):
    path = str(tmp_path / "state" / "runaway.json")
    first = RunawayDetector(RunawayPolicy(min_runs=20, state_file=path))
    for i in range(25):
        run(first, f"h{i}", 10)
    data = json.loads(open(path).read())
    assert len(data["agents"]["a"]["runs"]) == 25
    second = RunawayDetector(RunawayPolicy(min_runs=20, state_file=path))   # a new process
    assert second.baseline_size("a") == 25
    assert run(second, "long", 60)


def test_broken_state_file_is_counted_not_raised(tmp_path):
    path = tmp_path / "runaway.json"
    path.write_text("{not json")
    det = RunawayDetector(RunawayPolicy(state_file=str(path)))
    assert det.baseline_size("a") == 0
