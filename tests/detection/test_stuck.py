from agentvigil.detectors.stuck import StuckDetector, StuckPolicy

from .streams import Stream, verdicts


def test_identical_call_with_slightly_varying_output_fires():
    s = Stream()
    events = [s.start()]
    for i in range(30):   # the same compile, its output differs only in timestamps and counters
        events.append(s.tool("bash", "make", f"[{10 + i}:00:0{i % 10}] build #{i} failed: undefined ref foo"))
    found = verdicts(StuckDetector(), events)
    assert [v.detector for v in found] == ["stuck"]
    assert found[0].detail["identical_calls"] >= 6
    assert found[0].detail["why"] == "recurrence"   # one call fills the window before the score has held
    assert found[0].step_index < 20   # well before the end of the loop


def test_varied_actions_same_error_fires():
    s = Stream()
    events = [s.start()]
    for i in range(25):   # different wording each time, the same rejection back
        events.append(s.tool("search", {"q": f"variant {i} of {'abcdefghijklmnopqrstuvwxyz'[i]} query"},
                             "Error: flight HAT{} not available on that date".format(100 + i), "error",
                             "tool_error"))
    found = verdicts(StuckDetector(), events)
    assert len(found) == 1 and found[0].detail["same_errors"] >= 5 and found[0].detail["why"] == "stall_score"


def test_converging_edit_and_test_cycle_stays_quiet():
    s = Stream()
    events = [s.start()]
    failing = ["test_parse", "test_render", "test_cache", "test_auth", "test_io", "test_cli", "test_db"]
    for i in range(len(failing)):
        events.append(s.tool("edit", {"file": f"mod_{i}.py", "patch": f"fix {failing[i]}"}, ""))
        left = failing[i + 1:]
        report = ("FAILED " + " FAILED ".join(f"tests/{t}.py::{t} - AssertionError in {t}" for t in left)
                  if left else "all tests passed")
        events.append(s.tool("bash", "pytest", report, "error" if left else "ok"))
    events.append(s.end())
    assert verdicts(StuckDetector(), events) == []


def test_same_write_with_empty_output_stays_quiet():
    s = Stream()
    events = [s.start()]
    for i in range(12):
        events.append(s.tool("write", {"path": "notes.md", "text": "same"}, ""))   # empty output each time
        events.append(s.tool("read", {"path": f"src/file_{i}.py"}, f"content of module number {chr(65 + i)} " * 5))
    assert verdicts(StuckDetector(), events) == []


def test_short_stutter_recovered_stays_quiet_and_rejections_are_skipped():
    s = Stream()
    events = [s.start()]
    for _ in range(4):
        events.append(s.tool("bash", "ls", "a b c"))
    for _ in range(20):
        events.append(s.tool("bash", None, None, "rejected", "format_error"))
    for i in range(20):
        events.append(s.tool("read", {"f": i}, f"distinct text about topic {chr(65 + i)} and {chr(90 - i)} " * 3))
    assert verdicts(StuckDetector(), events) == []


def test_interleaved_repetition_fires_whatever_the_results():
    """The same reply sent again and again between lookups: no identical streak and empty results, but a full
    window of at most `distinct_share` distinct calls (`recurrence`)."""
    s = Stream()
    events = [s.start()]
    for i in range(20):
        events.append(s.tool("respond", {"text": "Could you confirm your order id?"}, ""))
        events.append(s.tool("lookup", {"user": "u1", "page": i % 2}, f"orders page {i % 2}: #1{i % 2}"))
    found = verdicts(StuckDetector(), events)
    assert len(found) == 1
    assert found[0].detail["distinct_calls"] <= 4 and found[0].detail["recurring_steps"] >= 1
    assert found[0].detail["why"] == "recurrence"
    assert found[0].step_index <= 12            # one full window in


def test_edit_and_test_cycle_that_never_converges_fires():
    """A new edit each time, the same test failing the same way (only its timing changes): the test call's
    result does not move (`same_outputs`), though no call repeats in a row and most calls are new."""
    s = Stream()
    events = [s.start()]
    for i in range(12):
        events.append(s.tool("edit", {"file": "parser.py", "patch": f"attempt {i}: change line {10 + i}"},
                             f"edited parser.py: {i + 3} lines changed"))
        events.append(s.tool("bash", "pytest tests/test_parser.py",
                             f"FAILED tests/test_parser.py::test_nested - AssertionError: 3 != 4 in {0.1 * i:.2f}s"))
    # the edits' results look alike too (same_results would fire first): judged on same_outputs alone
    found = verdicts(StuckDetector(StuckPolicy(same_results=1000)), events)
    assert len(found) == 1 and found[0].detail["same_outputs"] >= 8 and found[0].detail["why"] == "same_outputs"
    assert found[0].tool_name == "bash"


def test_free_text_actions_that_get_the_same_error_back_fire():
    """Every action worded differently (an agent whose replies the harness runs as commands), the same two
    errors back, status ok (the harness records no exit code): no call repeats, no error streak counts, but
    result after result repeats recent ones (`same_results`)."""
    s = Stream()
    events = [s.start()]
    for i in range(20):
        reply = f"DISCUSSION attempt {i}: let me try {['again', 'harder', 'differently', 'once more'][i % 4]} now"
        error = (f"/bin/bash: line {24000 + 18 * i}: DISCUSSION: command not found" if i % 2
                 else "/bin/bash: line 2: unexpected EOF while looking for matching `''")
        events.append(s.tool("bash", reply, error))
    found = verdicts(StuckDetector(), events)
    assert len(found) == 1 and found[0].detail["same_results"] >= 12 and found[0].detail["why"] == "same_results"
    assert "results in a row" in found[0].reason


def test_searches_with_different_results_are_not_same_results():
    s = Stream()
    events = [s.start()]
    for i in range(30):
        events.append(s.tool("search", {"q": f"symbol_{i}"},
                             f"Found {i} matches for symbol_{i} in module_{chr(97 + i % 26)}{chr(97 + i // 26)}.py"))
    assert verdicts(StuckDetector(), events) == []


def test_rereading_a_file_later_is_not_recurrence():
    s = Stream()
    events = [s.start()]
    for i in range(40):   # every fifth call re-reads the same file; the rest are new
        call = ("read", {"path": "setup.py"}) if i % 5 == 0 else ("grep", {"q": f"symbol_{i}"})
        events.append(s.tool(*call, f"match {chr(65 + i % 26)}{i} in module {i * 7}"))
    assert verdicts(StuckDetector(), events) == []


def test_state_is_per_run_and_released_at_run_end():
    det = StuckDetector()
    a, b = Stream("ra"), Stream("rb")
    for _ in range(3):
        det.feed(a.tool("bash", "make", "x"))
        det.feed(b.tool("bash", "make", "x"))
    det.feed(a.end())
    assert len(det._runs) == 1
