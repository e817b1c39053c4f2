import json

from agentvigil.detectors.runaway import RunawayDetector, RunawayPolicy

from .streams import Stream, verdicts


def run(det, run_id, steps, cost=0.01, status="ok", error_kind=None, **limits):
    s = Stream(run_id)
    events = [s.start(**limits)]
    for i in range(steps):
        events.append(s.llm(cost))
        events.append(s.tool("bash", f"cmd {run_id} {i}", f"out {i}"))
    events.append(s.end(status, error_kind))
    return verdicts(det, events)


def history(det, stopped=20, stopped_steps=30, error_kind="RunLimitExceeded"):
    """20 runs that finished in 8-12 steps, then ``stopped`` runs a limit ended unfinished after 30."""
    for i in range(20):
        assert run(det, f"h{i}", 8 + i % 5) == []
    for i in range(stopped):
        run(det, f"x{i}", stopped_steps, status="error", error_kind=error_kind)


def test_a_run_past_the_step_from_which_runs_ended_unfinished():
    det = RunawayDetector(RunawayPolicy(min_runs=20))
    history(det)
    # from step 13 on, every kept run (20 of them) ended unfinished; before it, half did
    found = run(det, "going-long", 40, status="error")
    assert [(v.detail["why"], v.detail["steps"], v.detail["value"]) for v in found] == [("ends_unfinished", 13, 1.0)]
    assert found[0].reason == "run past the step (13) after which 100% of this agent's runs ended unfinished (13 steps)"
    assert run(det, "short", 12) == []


def test_ends_unfinished_needs_enough_runs_that_got_that_far_and_the_share():
    few = RunawayDetector(RunawayPolicy(min_runs=20))
    history(few, stopped=9)       # 9 runs reached step 13: too few to say (unfinished_runs 10)
    assert run(few, "r", 20) == []
    enough = RunawayDetector(RunawayPolicy(min_runs=20))
    history(enough, stopped=10)
    assert [v.detail["steps"] for v in run(enough, "r", 20)] == [13]
    stricter = RunawayDetector(RunawayPolicy(min_runs=20, unfinished_runs=15))
    history(stricter, stopped=10)
    assert run(stricter, "r", 20) == []
    mixed = RunawayDetector(RunawayPolicy(min_runs=20))
    history(mixed, stopped=19)
    run(mixed, "long-ok", 30)     # 19 of the 20 runs past step 12 ended unfinished: 0.95
    assert [v.detail["why"] for v in run(mixed, "r", 20)] == ["ends_unfinished"]
    strict = RunawayDetector(RunawayPolicy(min_runs=20, unfinished_share=0.96))
    history(strict, stopped=19)
    run(strict, "long-ok", 30)
    assert run(strict, "r", 20) == []
    off = RunawayDetector(RunawayPolicy(min_runs=20, unfinished_share=1.5))
    history(off)
    assert run(off, "r", 20) == []


def test_the_step_and_the_spend_are_the_smallest_whose_share_holds():
    """The sweep over run lengths (and over total spend) against a brute force over every value."""
    import random

    from agentvigil.detectors.runaway import FIRST_STEP, _Baseline
    rng = random.Random(7)
    for trial in range(300):
        p = RunawayPolicy(unfinished_runs=rng.choice((1, 3, 10)), unfinished_share=rng.choice((0.5, 0.8, 0.95, 1.0)))
        b = _Baseline(200)
        for _ in range(rng.randint(0, 60)):
            b.outcomes.append((rng.randint(1, 40), rng.random() < 0.6, rng.choice((0.0, rng.randint(1, 30) / 10))))
        b.refresh_outcomes(p)
        expected = expected_spend = None
        if len(b.outcomes) >= p.unfinished_runs:
            for k in range(FIRST_STEP, 42):
                reached = [failed for steps, failed, _ in b.outcomes if steps >= k]
                if len(reached) >= p.unfinished_runs and sum(reached) >= p.unfinished_share * len(reached):
                    expected = (k, sum(reached) / len(reached))
                    break
            # spend in tenths: "further than x" for x = 0, 0.1, ... (runs shorter than FIRST_STEP or with no spend
            # recorded left out)
            for tenths in range(0, 31):
                reached = [failed for steps, failed, spend in b.outcomes
                           if steps >= FIRST_STEP and spend > 0 and spend > tenths / 10]
                if len(reached) >= p.unfinished_runs and sum(reached) >= p.unfinished_share * len(reached):
                    expected_spend = (tenths / 10, sum(reached) / len(reached))
                    break
        got = None if b.unfinished_from is None else (b.unfinished_from, b.unfinished_share)
        assert got == expected, (trial, sorted(b.outcomes), p)
        got = None if b.unfinished_above is None else (round(b.unfinished_above, 6), b.unfinished_spend_share)
        assert got == expected_spend, (trial, sorted(b.outcomes), p)


def test_ends_unfinished_never_before_step_five():
    """An outage that fails every run within two steps makes runs fail, not run away."""
    det = RunawayDetector(RunawayPolicy(min_runs=20))
    for i in range(30):
        run(det, f"down{i}", 2, status="error", error_kind="provider_5xx")
    assert run(det, "r", 4) == []
    assert run(det, "r2", 6) == []   # nobody got past step 2: no share to judge
    det = RunawayDetector(RunawayPolicy(min_runs=20))
    for i in range(30):
        run(det, f"x{i}", 8, status="error")
    assert [v.detail["steps"] for v in run(det, "r", 8)] == [5]


def test_a_run_past_the_spend_from_which_runs_ended_unfinished():
    """A cost limit nobody declared: the runs it stops are no longer than healthy ones, they cost more."""
    det = RunawayDetector(RunawayPolicy(min_runs=20))
    for i in range(20):
        assert run(det, f"h{i}", 10, cost=0.01 + 0.001 * (i % 5)) == []   # $0.10-0.14 a run, finished
    for i in range(10):
        assert run(det, f"x{i}", 10, cost=0.025, status="error") == []   # $0.25: stopped by the limit
    # no step is past the healthy runs' (all are 10 long), nor is the spend twice theirs at any step; but every
    # run that spent more than $0.14 ended unfinished
    found = run(det, "costly", 10, cost=0.025, status="error")
    assert [(v.detail["why"], v.detail["steps"], v.detail["threshold"]) for v in found] == [
        ("spent_unfinished", 6, 0.14)]
    assert found[0].reason == ("run past the spend (0.14) after which 100% of this agent's runs ended unfinished "
                               "(0.15 spent)")
    assert run(det, "cheap", 10, cost=0.014) == []   # $0.14: no further than a finished run went
    assert run(det, "early", 4, cost=0.5) == []       # never before step five
    # a declared budget has its own warnings: the spend curve stands in for a limit nobody declared
    assert run(det, "declared", 10, cost=0.025, max_cost_usd=1.0) == []


def test_spend_is_tokens_when_nothing_is_priced_and_needs_enough_runs():
    def tokens_run(det, run_id, steps, tokens, status="ok"):
        s = Stream(run_id)
        events = [s.start()]
        for i in range(steps):
            events += [s.llm(0.0, tokens=tokens), s.tool("bash", f"cmd {run_id} {i}", f"out {i}")]
        return verdicts(det, events + [s.end(status)])

    det = RunawayDetector(RunawayPolicy(min_runs=20))
    for i in range(20):
        tokens_run(det, f"h{i}", 10, 1000)
    for i in range(9):
        tokens_run(det, f"x{i}", 10, 1800, status="error")
    # 9 runs went further than 10,000 tokens: too few to say (killed: not an outcome)
    assert tokens_run(det, "r", 10, 1800, status="killed") == []
    tokens_run(det, "x9", 10, 1800, status="error")
    assert [(v.detail["why"], v.detail["steps"]) for v in tokens_run(det, "r2", 10, 1800)] == [("spent_unfinished", 6)]
    assert det._baselines["a"].unfinished_above == 10_000


def test_runs_the_library_stopped_are_not_outcomes():
    """A run a loop guard stopped ended unfinished because of a verdict: learning from it would feed the
    verdict with itself."""
    for kind in ("LoopDetected", "RunKilled"):
        det = RunawayDetector(RunawayPolicy(min_runs=20))
        history(det, error_kind=kind)
        assert run(det, "r", 20) == []
    det = RunawayDetector(RunawayPolicy(min_runs=20))
    history(det)
    for i in range(30):
        run(det, f"k{i}", 30, status="killed")   # killed runs are not outcomes either: the step stays 13
    assert [v.detail["steps"] for v in run(det, "r", 20)] == [13]


def test_flagged_runs_count_as_outcomes():
    """Whether a run was flagged does not change how it ends unless someone acts on the verdict; leaving the
    flagged ones out would bias the share down and silence the signal."""
    det = RunawayDetector(RunawayPolicy(min_runs=20, length_factor=2.0))   # flagged past the length too
    history(det)
    for i in range(4):
        assert run(det, f"flagged-ok{i}", 30)   # flagged (past step 12, or past the length), then finished
    baseline = det._baselines["a"]
    assert [o[:2] for o in list(baseline.outcomes)[-4:]] == [(30, False)] * 4
    assert det.baseline_size("a") == 20   # the healthy baseline still takes unflagged runs only
    baseline.refresh_outcomes(det.policy)   # (refreshed every 5 % of the kept runs; now, for the test)
    assert run(det, "r", 20) == []   # 20 of the 24 runs past step 12 ended unfinished: below 0.95


def test_length_fires_past_two_and_a_half_times_the_length_quantile():
    """A healthy run twice as long as nearly all others is the tail of the agent's runs (the tune half's
    length verdicts on healthy runs came at 2.01x), not a course; the default factor is 2.5."""
    def detector(**policy):
        det = RunawayDetector(RunawayPolicy(min_runs=20, **policy))
        for i in range(25):
            assert run(det, f"h{i}", 10) == []   # the length quantile is 10
        return det

    assert run(detector(), "tail", 24) == []
    assert [(v.detail["why"], v.detail["steps"]) for v in run(detector(), "long", 30)] == [("length", 26)]
    assert [(v.detail["why"], v.detail["steps"]) for v in run(detector(length_factor=2.0), "tail", 24)] == [
        ("length", 21)]


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
    assert found[0].detail["steps"] == 10       # over at the first two checkpoints in a row (hold 2)


def test_spend_at_step_holds_for_one_checkpoint_when_asked():
    det = RunawayDetector(RunawayPolicy(min_runs=20, hold=1))
    for i in range(25):
        run(det, f"h{i}", 20, cost=0.01)
    found = run(det, "pricey", 12, cost=0.2)
    assert [(v.detail["why"], v.detail["steps"]) for v in found] == [("spend_at_step", 5)]


def test_one_expensive_call_is_not_a_course():
    """A single long reply costs as much as the rest of the run: its spend, less its largest call, is still
    ordinary, so no verdict; a run spending that much on every call is flagged."""
    det = RunawayDetector(RunawayPolicy(min_runs=20))
    for i in range(25):
        run(det, f"h{i}", 30, cost=0.01)
    s = Stream("one-spike")
    events = [s.start()]
    for i in range(30):
        events.append(s.llm(0.8 if i == 3 else 0.01))
        events.append(s.tool("bash", f"cmd {i}", f"out {i}"))
    events.append(s.end())
    assert verdicts(det, events) == []
    assert [v.detail["why"] for v in run(det, "every-call", 30, cost=0.1)] == ["spend_at_step"]


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
    s = Stream("limited")
    events = [s.start(max_steps=30)]
    for i in range(30):   # going over the same three calls again and again
        events.append(s.llm())
        events.append(s.tool("lookup", {"order": i % 3}, f"order {i % 3}"))
    found = verdicts(det, events)
    assert [v.detail["why"] for v in found] == ["step_limit"]
    assert found[0].detail["steps"] == 24      # 0.8 of the limit


def test_step_limit_spares_an_edit_and_test_cycle_that_still_learns():
    """The same test command again and again, but with a new result each time (an edit between): new
    information, so not "going over the same ground"; the same calls with the same results are."""
    s = Stream("edit-test")
    events = [s.start(max_steps=30)]
    for i in range(30):
        events.append(s.llm())
        events.append(s.tool("bash", "pytest -x", f"{i} passed, {30 - i} failed"))
    assert verdicts(RunawayDetector(), events) == []


def test_declared_cost_limit_near_the_budget_and_repeating():
    s = Stream("budget")
    events = [s.start(max_cost_usd=1.0)]
    for i in range(20):
        events.append(s.llm(0.06))
        events.append(s.tool("lookup", {"order": i % 2}, f"order {i % 2}"))
    found = verdicts(RunawayDetector(), events)
    assert [v.detail["why"] for v in found] == ["cost_limit"]
    assert 0.8 <= found[0].detail["cost_usd"] < 0.9


def test_declared_cost_limit_spares_a_run_still_learning():
    """Measured on runs cut by a cost limit, a run near its budget that still gets new results is as likely
    to finish as to be stopped (docs/detection.md): no verdict; nor is cost projected toward the budget."""
    found = run(RunawayDetector(), "spending", 20, cost=0.06, max_cost_usd=1.0)
    assert found == []


def test_step_limit_spares_a_run_still_making_new_calls():
    """Near its declared limit, a run whose calls are still mostly new usually finishes in time: no verdict
    (`limit_distinct`); the same run with the gate opened (1.0) is flagged at 80 % of the limit."""
    assert run(RunawayDetector(), "exploring", 30, max_steps=30) == []
    found = run(RunawayDetector(RunawayPolicy(limit_distinct=1.0)), "exploring", 30, max_steps=30)
    assert [v.detail["why"] for v in found] == ["step_limit"]


def test_distinct_calls_are_bounded_and_counted_past_the_bound():
    """A long run of new calls near its limit: the remembered set stays bounded, calls past it count as new,
    so the gate stays closed (no verdict); memory does not grow with the run."""
    from agentvigil.detectors.runaway import MAX_DISTINCT_CALLS

    det = RunawayDetector()
    s = Stream("long")
    det.feed(s.start(max_steps=2000))
    found = []
    for i in range(1900):
        found += det.feed(s.tool("read", {"page": i}, f"page {i}")) or []
    state = det._runs.get(s.tool("read", {"page": 0}, ""))
    assert found == [] and len(state.calls) == MAX_DISTINCT_CALLS and state.new_calls >= 1900


def test_flagged_runs_never_feed_the_baseline():
    det = RunawayDetector(RunawayPolicy(min_runs=20))
    for i in range(25):
        run(det, f"h{i}", 10)
    before = det.baseline_size("a")
    assert run(det, "long", 80, status="ok")   # flagged, then ends "ok"
    assert det.baseline_size("a") == before


def test_outcomes_persist_and_older_state_files_load(tmp_path):
    path = str(tmp_path / "runaway.json")
    first = RunawayDetector(RunawayPolicy(min_runs=20, state_file=path))
    history(first)
    first.close()   # the process ends
    second = RunawayDetector(RunawayPolicy(min_runs=20, state_file=path))   # a new process
    assert [v.detail["why"] for v in run(second, "r", 20)] == ["ends_unfinished"]
    second.history.wait_for_writer(10)           # its run's write is done before the file is edited
    data = json.loads(open(path).read())
    del data["agents"]["a"]["outcomes"]          # written before outcomes were kept
    open(path, "w").write(json.dumps(data))
    third = RunawayDetector(RunawayPolicy(min_runs=20, state_file=path))
    assert third.baseline_size("a") == 20 and run(third, "r", 20) == []


def test_spend_outcomes_persist_and_two_field_outcomes_load(tmp_path):
    path = str(tmp_path / "runaway.json")
    first = RunawayDetector(RunawayPolicy(min_runs=20, state_file=path))
    for i in range(20):
        run(first, f"h{i}", 10, cost=0.01 + 0.001 * (i % 5))
    for i in range(10):
        run(first, f"x{i}", 10, cost=0.025, status="error")
    first.close()
    data = json.loads(open(path).read())
    kept = sorted({(o[0], o[1], round(o[2], 6)) for o in data["agents"]["a"]["outcomes"]})
    assert kept == [(10, False, 0.1), (10, False, 0.11), (10, False, 0.12), (10, False, 0.13), (10, False, 0.14),
                    (10, True, 0.25)]   # length, ended unfinished, spend
    second = RunawayDetector(RunawayPolicy(min_runs=20, state_file=path))
    assert [v.detail["why"] for v in run(second, "r", 10, cost=0.025)] == ["spent_unfinished"]
    second.history.wait_for_writer(10)
    data["agents"]["a"]["outcomes"] = [o[:2] for o in data["agents"]["a"]["outcomes"]]   # before spend was kept
    open(path, "w").write(json.dumps(data))
    third = RunawayDetector(RunawayPolicy(min_runs=20, state_file=path))
    assert third._baselines["a"].unfinished_above is None and run(third, "r", 10, cost=0.025) == []


def test_baseline_persists_across_processes(tmp_path):
    path = str(tmp_path / "state" / "runaway.json")
    first = RunawayDetector(RunawayPolicy(min_runs=20, state_file=path))
    for i in range(25):
        run(first, f"h{i}", 10)
    first.close()   # the process ends
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
    for outcomes in ('[[Infinity, true]]', '[["x", true]]', '[[5]]', '{"a": 1}', '[[10, true, "x"]]',
                     '[[10, true, null]]'):   # a bad field of a valid file
        path.write_text('{"version": 1, "agents": {"a": {"runs": [[10, {}, {}]], "outcomes": %s}}}' % outcomes)
        det = RunawayDetector(RunawayPolicy(state_file=str(path)))
        assert det.baseline_size("a") == 0, outcomes
        assert run(det, "r", 10) == []
        det.history.wait_for_writer(10)   # its write is done before the next case's file is put in place


# -- context growth (input tokens per call) -----------------------------------------------------------------

def context_run(det, run_id, inputs, cost_per_token=0.0, steps_per_call=1, status="ok", **limits):
    """One call per entry of ``inputs`` (its input tokens), each followed by ``steps_per_call`` tool results."""
    s = Stream(run_id)
    events = [s.start(**limits)]
    for i, tokens in enumerate(inputs):
        events.append(s.llm(tokens * cost_per_token, tokens=tokens))
        for k in range(steps_per_call):
            events.append(s.tool("bash", f"cmd {run_id} {i} {k}", f"out {i} {k}"))
    events.append(s.end(status))
    return verdicts(det, events)


def noisy_flat(n, level=20_000, seed=0):
    """Context that stays around ``level``: ±10 % noise and an occasional large tool result (one call)."""
    import random
    rng = random.Random(seed)
    values = [int(level * (1 + rng.uniform(-0.1, 0.1))) for _ in range(n)]
    for i in range(7, n, 11):
        values[i] = level * 3
    return values


def test_theil_sen_ignores_a_spike():
    from collections import deque

    from agentvigil.detectors.runaway import theil_sen
    assert theil_sen(deque([100, 200, 300, 400, 500])) == 100
    assert theil_sen(deque([1000, 1000, 90_000, 1000, 1000, 1000])) == 0


def test_context_growing_toward_the_model_window_is_projected():
    det = RunawayDetector(RunawayPolicy(context_window=128_000))
    inputs = [5_000 + 6_000 * i for i in range(30)]          # reaches 128k at call 21
    found = context_run(det, "growing", inputs)
    assert [v.detail["why"] for v in found] == ["context_limit"]
    detail = found[0].detail
    assert detail["input_tokens_per_call"] == 6_000
    assert detail["threshold"] == 128_000
    # 10 calls ahead (slope_horizon) of the window, well before the window is reached
    assert detail["steps"] < 21
    assert 5_000 + 6_000 * detail["steps"] + 6_000 * 10 >= 128_000


def test_context_window_declared_on_run_start():
    det = RunawayDetector()
    found = context_run(det, "growing", [5_000 + 6_000 * i for i in range(30)], context_window=64_000)
    assert [v.detail["why"] for v in found] == ["context_limit"]
    assert found[0].detail["threshold"] == 64_000


def test_context_growth_is_not_projected_to_the_declared_cost_limit():
    """Growing context toward a declared budget, new results each call: no projected verdict (measured:
    it flagged more healthy runs than runs the limit stopped, docs/detection.md)."""
    inputs = [2_000 + 4_000 * i for i in range(30)]
    assert context_run(RunawayDetector(), "pricey", inputs, cost_per_token=1e-5, max_cost_usd=5.0) == []


def test_noisy_flat_context_stays_quiet_even_with_limits():
    det = RunawayDetector(RunawayPolicy(context_window=128_000, min_runs=20))
    for i in range(25):
        assert context_run(det, f"h{i}", noisy_flat(60, seed=i), cost_per_token=1e-6, max_cost_usd=5.0) == []
    assert context_run(det, "flat", noisy_flat(60, seed=99), cost_per_token=1e-6, max_cost_usd=5.0,
                       context_window=100_000) == []


def test_context_slope_against_completed_runs_at_the_same_step():
    det = RunawayDetector(RunawayPolicy(min_runs=20))
    for i in range(25):   # healthy runs: context grows by about 1,000 tokens a call
        assert context_run(det, f"h{i}", [3_000 + 1_000 * k + (i * 37) % 200 for k in range(20)]) == []
    # starts smaller, so its spend by step 5 is still ordinary; its growth is not
    found = context_run(det, "ballooning", [1_000 + 2_500 * k for k in range(20)])
    assert [v.detail["why"] for v in found] == ["context_slope"]
    assert found[0].detail["steps"] == 10                     # over at two checkpoints in a row
    assert found[0].detail["input_tokens_per_call"] == 2_500
    assert found[0].detail["threshold"] == 2_000             # slope_factor × the healthy runs' 1,000


def test_one_large_result_raising_the_context_once_is_a_step_not_a_slope():
    det = RunawayDetector(RunawayPolicy(min_runs=20))
    for i in range(25):
        assert context_run(det, f"h{i}", [3_000 + 1_000 * k + (i * 37) % 200 for k in range(30)]) == []
    # a 10k-token result at call 12 lifts the context once; growth is ordinary before and after
    jump = [3_000 + 1_000 * k + (10_000 if k >= 12 else 0) for k in range(30)]
    assert context_run(det, "jump", jump) == []
    # the same run judged at a single checkpoint: the slope over the jump is flagged
    det1 = RunawayDetector(RunawayPolicy(min_runs=20, hold=1))
    for i in range(25):
        context_run(det1, f"h{i}", [3_000 + 1_000 * k + (i * 37) % 200 for k in range(30)])
    assert [v.detail["why"] for v in context_run(det1, "jump", jump)] == ["context_slope"]


def test_context_slope_has_a_floor_for_flat_baselines():
    det = RunawayDetector(RunawayPolicy(min_runs=20))
    for i in range(25):   # baseline slope about 0: twice it is still tiny
        context_run(det, f"h{i}", noisy_flat(20, level=4_000, seed=i))
    assert context_run(det, "mild", [4_000 + 300 * k for k in range(20)]) == []   # under min_slope (500)


def test_context_state_is_bounded():
    from agentvigil.detectors.runaway import CHECKPOINTS
    det = RunawayDetector(RunawayPolicy(slope_window=6))
    s = Stream("long")
    det.feed(s.start())
    for i in range(2_000):
        det.feed(s.llm(0.0, tokens=1_000 + (i % 7)))
        det.feed(s.tool("bash", f"c{i}", "o"))
    state = det._runs.get(s.tool("bash", "x", "o"))
    assert state.inputs is not None and len(state.inputs) == 6
    assert set(state.slopes) <= set(CHECKPOINTS)
    det.feed(s.end())
    assert det.baseline_size("a") == 1


def test_context_slopes_persist_and_old_state_files_load(tmp_path):
    path = tmp_path / "runaway.json"
    path.write_text(json.dumps({"version": 1, "agents": {"a": {"priced": False,
                                                               "runs": [[10, {"5": 1e6, "10": 2e6}]] * 25}}}))
    det = RunawayDetector(RunawayPolicy(min_runs=20, state_file=str(path)))   # written before the slope
    assert det.baseline_size("a") == 25
    context_run(det, "h", [3_000 + 1_000 * k for k in range(12)])
    det.history.wait_for_writer(10)
    runs = json.loads(path.read_text())["agents"]["a"]["runs"]
    assert runs[-1][2] == {"5": 1_000.0, "10": 1_000.0}


def test_context_thresholds_are_settable():
    from agentvigil.policy import WatchConfig, apply_setting
    config = WatchConfig.defaults()
    for text in ("runaway.slope_window=5", "runaway.slope_factor=3", "runaway.min_slope=250",
                 "runaway.slope_horizon=4", "runaway.context_window=32000"):
        apply_setting(config, text)
    assert config.watchers["runaway"].params["context_window"] == 32_000
    policy = RunawayPolicy(**config.watchers["runaway"].params)
    assert (policy.slope_window, policy.slope_factor, policy.min_slope, policy.slope_horizon) == (5, 3.0, 250.0, 4)


# -- an agent whose calls start carrying a cost -----------------------------------------------------------------

def test_an_agent_that_becomes_priced_forgets_what_it_spent_in_tokens():
    """Its runs so far were measured in tokens (no price known); from its first priced call they are in dollars.
    Kept, the token runs a limit stopped (3,000 tokens each) would be "more than" any healthy priced run ($0.10),
    and every run past $0.10 would look like them (spent_unfinished)."""
    det = RunawayDetector(RunawayPolicy(min_runs=20))
    for i in range(15):
        run(det, f"t{i}", 30, cost=0.0, status="error", error_kind="RunLimitExceeded")   # 100 tokens a call
    for i in range(5):   # priced from here: $0.10 a run (the first ones past step 5 of a history of stopped runs)
        run(det, f"p{i}", 10, cost=0.01)
    assert sorted({round(o[2], 6) for o in det._baselines["a"].outcomes}) == [0.0, 0.1]   # tokens forgotten
    assert det._baselines["a"].unfinished_above is None          # too few priced runs for a spend curve yet
    assert run(det, "short-and-dear", 8, cost=0.04) == []        # $0.32 in 8 steps: nothing says "stopped"
    assert det._baselines["a"].unfinished_from == 11             # the step curve keeps the token runs' lengths


def test_a_state_file_written_in_tokens_joins_a_priced_process_without_its_spend(tmp_path):
    path = str(tmp_path / "runaway.json")
    first = RunawayDetector(RunawayPolicy(min_runs=20, state_file=path))   # the agent unpriced
    for i in range(15):
        run(first, f"t{i}", 10, cost=0.0, status="error", error_kind="RunLimitExceeded")
    first.close()
    one, two = (RunawayDetector(RunawayPolicy(min_runs=20, state_file=path)) for _ in range(2))
    for worker in (one, two):
        worker.history._saved_at = float("inf")   # they write at close only
    run(one, "priced", 10, cost=0.01)               # this worker's calls carry a cost now
    run(two, "tokens", 10, cost=0.0)                # this one's do not, yet
    one.close()
    two.close()                                     # merges into the priced file: its token run without spend
    body = json.loads(open(path).read())["agents"]["a"]
    assert body["priced"] is True
    assert sorted(round(o[2], 6) for o in body["outcomes"]) == [0.0] * 16 + [0.1]
    assert all(run_[1] == {} for run_ in body["runs"][:-1])   # the token run's course: its spend unknown


def test_an_agent_priced_while_a_merge_is_written_stays_priced_and_forgets_the_merged_tokens(tmp_path, monkeypatch):
    from agentvigil.detectors import runaway

    path = str(tmp_path / "runaway.json")
    other = RunawayDetector(RunawayPolicy(min_runs=20, state_file=path))   # another worker, still in tokens
    run(other, "theirs", 10, cost=0.0)
    other.close()
    ours = RunawayDetector(RunawayPolicy(min_runs=20, state_file=path))
    ours.history._saved_at = float("inf")              # written below, by hand
    run(ours, "ours", 10, cost=0.0)
    other_again = RunawayDetector(RunawayPolicy(min_runs=20, state_file=path))
    run(other_again, "theirs-2", 10, cost=0.0)
    other_again.close()                                # the file changed since ours read it: ours merges
    real = runaway._write

    def priced_meanwhile(target, data):
        ours.history.mark_priced("a")                  # a priced call ends while the merge is written
        real(target, data)

    monkeypatch.setattr(runaway, "_write", priced_meanwhile)
    ours.history.save()
    assert ours.history.priced["a"] is True
    assert {o[2] for o in ours._baselines["a"].outcomes} == {0.0}   # the merged runs' tokens, forgotten
