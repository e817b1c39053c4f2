"""``Pipeline.emit_batch`` reaches what ``emit`` of each event in turn reaches: the same verdicts for the same
events in the same order, the same failures reported in the same order, the same detector state after."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agentvigil import events as ev
from agentvigil.events import Event
from agentvigil.pipeline import Pipeline
from agentvigil.replay import pipeline_for
from agentvigil.verdicts import detection


class Flaky:
    """Raises on some events, fires on others, and shares a counter with its twin (one lane)."""

    family = "flaky"
    consumes = frozenset({ev.TOOL_END, ev.LLM_CALL})
    batch_lane = "flaky"

    def __init__(self, name: str, shared: list[int]):
        self.name = name
        self.shared = shared

    def feed(self, event: Event) -> list[Event] | None:
        self.shared[0] += 1
        if event.tool_name == "boom":
            raise RuntimeError(f"{self.name} {self.shared[0]}")
        if self.shared[0] % 7 == 0:
            return [detection(event, self.name, {"seen": self.shared[0]})]
        return None

    def tick(self, now: float) -> None:
        return None


_event = st.builds(
    lambda kind, run, tool, args, result, status, cost: Event(
        kind, 1.0, agent_id="a", run_id=f"r{run}", step_index=1,
        tool_name=tool if kind == ev.TOOL_END else None, args_hash=args if kind == ev.TOOL_END else None,
        result_hash=result if kind == ev.TOOL_END else None, status=status,
        cost_usd=cost if kind in (ev.LLM_CALL, ev.RUN_END) else None,
        token_count=1000 if kind == ev.LLM_CALL else None),
    st.sampled_from([ev.TOOL_END] * 6 + [ev.LLM_CALL, ev.RUN_START, ev.RUN_END, ev.STEP_END, ev.TOOL_START]),
    st.integers(0, 2), st.sampled_from(["read", "edit", "test", "boom"]), st.sampled_from(["x", "y", None]),
    st.sampled_from(["r", "s", None]), st.sampled_from(["ok", "ok", "error"]), st.sampled_from([0.001, 0.5, 0.0]))


def _pipelines(extra: bool):
    made = []
    for _ in range(2):
        errors: list[tuple[str, str]] = []
        pipeline = pipeline_for(on_error=lambda component, exc, errors=errors: errors.append((component, repr(exc))))
        if extra:
            shared = [0]
            at = len(pipeline.detectors) - 1   # before correlation, which judges every verdict
            pipeline.detectors[at:at] = [Flaky("flaky_a", shared), Flaky("flaky_b", shared)]
            pipeline._route()
        made.append((pipeline, errors))
    return made


def _record(verdicts):
    return [(v.detector, v.run_id, v.to_dict().get("detail")) for v in verdicts]


@settings(max_examples=150, deadline=None)
@given(stream=st.lists(_event, max_size=300), size=st.integers(1, 64), extra=st.booleans())
def test_emit_batch_matches_emit_event_by_event(stream, size, extra):
    (one, one_errors), (batched, batch_errors) = _pipelines(extra)
    assert batched._lanes is not None   # the built detectors all declare their lane: the batch path is taken
    expected = [(i, _record(v)) for i, v in enumerate(map(one.emit, stream)) if v]
    got = []
    for start in range(0, len(stream), size):
        got += [(start + i, _record(v)) for i, v in batched.emit_batch(stream[start:start + size])]
    assert got == expected
    assert batch_errors == one_errors
    # and what the detectors remember: the next event of every run judged alike
    for run in range(3):
        probe = Event(ev.TOOL_END, 1.0, agent_id="a", run_id=f"r{run}", tool_name="read", args_hash="x",
                      result_hash="r", status="ok")
        assert _record(batched.emit(probe)) == _record(one.emit(probe))


def test_a_detector_without_a_lane_or_a_sink_means_event_by_event():
    class Plain:
        name = family = "plain"
        consumes = frozenset({ev.TOOL_END})

        def feed(self, event):
            return None

        def tick(self, now):
            return None

    assert Pipeline([Plain()])._lanes is None

    class Sink:
        consumes = frozenset({ev.TOOL_END})

        def handle(self, event):
            pass

    pipeline = pipeline_for()
    assert pipeline._lanes is not None
    pipeline.add_sink(Sink())
    assert pipeline._lanes is None


def test_a_batch_with_a_detection_or_an_unknown_type_goes_event_by_event():
    (one, one_errors), (batched, batch_errors) = _pipelines(False)
    stream = [Event(ev.TOOL_END, 1.0, run_id="r", tool_name="t", args_hash="a", status="ok")] * 5
    stream += [Event("bogus", 1.0), Event(ev.DETECTION, 1.0, detector="stuck")]
    expected = [(i, _record(v)) for i, v in enumerate(map(one.emit, stream)) if v]
    assert [(i, _record(v)) for i, v in batched.emit_batch(stream)] == expected
    assert batch_errors == one_errors and one_errors
