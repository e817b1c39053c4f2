from hypothesis import given, settings, strategies as st

from agentvigil.signals.loops import LoopPolicy, LoopState


def feed(state, calls):
    out = []
    for call in calls:
        out.extend(name for name, _ in state.observe(*call))
    return out


def test_same_call_same_args_trips_on_third_and_rearms():
    state = LoopState(LoopPolicy(max_repeats=3))
    fired = feed(state, [("search", "h1", None)] * 9)
    assert fired == ["repeat_call"] * 3


def test_same_result_takes_precedence_when_results_are_known():
    state = LoopState(LoopPolicy(max_repeats=3))
    assert feed(state, [("search", "h1", "r1")] * 3) == ["same_result"]


def test_same_result_across_interleaved_edits():
    # edit → test → same failure, three times: the edits differ but the test keeps answering the same
    state = LoopState(LoopPolicy(max_repeats=3))
    calls = []
    for i in range(3):
        calls += [("edit", f"patch{i}", "ok"), ("test", "t", "FAIL x")]
    assert feed(state, calls) == ["same_result"]


def test_edit_and_test_with_progress_never_trips():
    state = LoopState(LoopPolicy())
    calls = []
    for i in range(50):
        calls += [("edit", f"patch{i}", None), ("test", "t", f"{50 - i} failing")]
    assert feed(state, calls) == []


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["read", "edit", "test", "search"]), st.integers(0, 10**6)),
                min_size=1, max_size=200))
def test_progressing_agents_never_trip(calls):
    # Every call has fresh arguments or a fresh result: that is progress by definition.
    state = LoopState(LoopPolicy())
    seen = set()
    seq = []
    for i, (tool, n) in enumerate(calls):
        args = f"{n}-{i}"  # unique args: never the same call twice
        seq.append((tool, args, f"r{i}"))
        seen.add(args)
    assert feed(state, seq) == []


def test_polling_with_changing_results_is_progress():
    state = LoopState(LoopPolicy())
    calls = [("job_status", "job-1", f"progress {i}%") for i in range(20)]
    assert feed(state, calls) == []


def test_repeated_sequence_abc():
    state = LoopState(LoopPolicy(sequence_repeats=3))
    calls = [("read", "a", None), ("edit", "b", None), ("test", "c", None)] * 3
    fired = feed(state, calls)
    assert "repeated_sequence" in fired
    state2 = LoopState(LoopPolicy(sequence_repeats=3))
    details = []
    for c in calls:
        details += [d for n, d in state2.observe(*c) if n == "repeated_sequence"]
    assert details[0]["sequence"] == ["read", "edit", "test"] and details[0]["length"] == 3


def test_two_repeats_of_a_sequence_is_not_a_loop():
    state = LoopState(LoopPolicy(sequence_repeats=3))
    calls = [("read", "a", None), ("edit", "b", None), ("test", "c", None)] * 2 + [("deploy", "d", None)]
    assert "repeated_sequence" not in feed(state, calls)


def test_repeats_far_apart_do_not_chain():
    state = LoopState(LoopPolicy(max_repeats=3, window=5))
    calls = []
    for i in range(3):
        calls.append(("search", "same", None))
        calls += [(f"other{i}{j}", f"x{i}{j}", None) for j in range(6)]
    assert feed(state, calls) == []


def test_ignored_tools():
    state = LoopState(LoopPolicy(ignore_tools=frozenset({"poll"})))
    assert feed(state, [("poll", "x", "same")] * 10) == []


def test_memory_is_bounded():
    state = LoopState(LoopPolicy(window=20))
    for i in range(10_000):
        state.observe("t", f"unique-{i}", f"r{i}")
    assert len(state._calls) <= 4 * 20 + 1 and len(state._results) <= 4 * 20 + 21
