"""The hot-path shortcuts give the same results as the straightforward code they replace."""

import json
import os
from hashlib import blake2b

from hypothesis import given, settings, strategies as st

from agentvigil import codec, events
from agentvigil import events as ev
from agentvigil.codec import digest
from agentvigil.detectors.sequence import SequenceDetector
from agentvigil.events import Event, InvalidEvent, event_from_dict
from agentvigil.sinks.prometheus import PrometheusSink

# -- the sequence detector against its definition (re-scan the history on every call) -----------------------


def rescanning_sequence(calls, length_min, repeats, longest):
    """The last length × repeats calls of a run are one sequence of 2+ distinct calls repeated; the history
    holds the last longest × repeats calls and is cleared on a verdict."""
    history, found = [], []
    for i, call in enumerate(calls):
        history = (history + [call])[-longest * repeats:]
        for length in range(length_min, longest + 1):
            if len(history) < length * repeats:
                break
            tail = history[-length:]
            if len(set(tail)) >= 2 and history[-length * repeats:] == tail * repeats:
                found.append((i, [tool for tool, _ in tail], length))
                history = []
                break
    return found


@settings(max_examples=300, deadline=None)
@given(calls=st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from(["x", "y", None])), max_size=120),
       length_min=st.integers(2, 4), repeats=st.integers(2, 4), extra=st.integers(0, 3))
def test_sequence_detector_matches_the_rescanning_definition(calls, length_min, repeats, extra):
    longest = length_min + extra
    detector = SequenceDetector(length_min, repeats, longest)
    found = []
    for i, (tool, args) in enumerate(calls):
        out = detector.feed(Event(ev.TOOL_END, 1.0, run_id="r", tool_name=tool, args_hash=args, status="ok"))
        for verdict in out or ():
            found.append((i, verdict.detail["sequence"], verdict.detail["length"]))
    assert found == rescanning_sequence(calls, length_min, repeats, longest)


# -- event_from_dict: remembered shapes judge like the full check --------------------------------------------

_values = st.one_of(st.none(), st.text(max_size=3), st.integers(-2, 2**64), st.floats(allow_nan=True),
                    st.booleans(), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2), st.lists(st.none()))


def _outcome(data):
    try:
        return ("ok", event_from_dict(data))
    except InvalidEvent as exc:
        return (exc.reason, str(exc))
    except OverflowError:   # an integer too large for a float field: both paths raise it alike
        return ("overflow", "")


@settings(max_examples=400, deadline=None)
@given(event_type=st.sampled_from([ev.TOOL_END, ev.RUN_START, "bogus"]),
       ts=st.one_of(st.floats(allow_nan=True), st.integers(0, 10), st.none(), st.text(max_size=2)),
       fields=st.dictionaries(st.sampled_from(events._FIELD_NAMES[2:] + ("unknown",)), _values, max_size=5))
def test_remembered_event_shapes_judge_like_the_full_check(event_type, ts, fields):
    data = {"event_type": event_type, "ts": ts, **fields}

    def full():
        try:
            return ("ok", events._checked(data))
        except InvalidEvent as exc:
            return (exc.reason, str(exc))
        except OverflowError:
            return ("overflow", "")

    expected = full()
    assert _outcome(data) == expected
    assert _outcome(data) == expected      # the second time its shape may be remembered


def test_a_remembered_shape_still_rejects_a_bad_value():
    good = {"event_type": ev.TOOL_END, "ts": 1.0, "step_index": 1, "duration_ms": 2.0}
    event_from_dict(dict(good))
    event_from_dict(dict(good))
    try:
        event_from_dict({**good, "step_index": -1})
        raise AssertionError("a negative step_index was accepted")
    except InvalidEvent as exc:
        assert exc.reason == "bad_field" and "step_index" in str(exc)
    try:
        event_from_dict({**good, "duration_ms": float("inf")})
        raise AssertionError("an infinite duration was accepted")
    except InvalidEvent as exc:
        assert "duration_ms" in str(exc)


def test_unknown_fields_are_never_remembered():
    before = len(events._SHAPES)
    for i in range(50):
        assert event_from_dict({"event_type": ev.HEARTBEAT, "ts": 1.0, f"x{'y' * i}": 1}).event_type == ev.HEARTBEAT
    assert len(events._SHAPES) == before


# -- codec: the digest and the stdlib line decoder -----------------------------------------------------------


def test_digest_is_blake2b_of_canonical_json():
    cyclic: dict = {}
    cyclic["self"] = cyclic
    for value in ({"q": "cats", "limit": 10}, [1, 2.5, 1e16, float("nan"), None, True], {"b": {"é": "\ud800"}},
                  {1: 2, 3: 4}, (1, 2), 10**30, -0.0, {"o": object}):
        canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)
        assert digest(value) == blake2b(canonical.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    assert digest(cyclic) == blake2b(repr(cyclic).encode(), digest_size=8).hexdigest()


def test_stdlib_line_decoder_matches_json_decode():
    for text in ['{"a":1}\n', ' {"a":1}', '{"a":1} x', '{"a":1}{"b":2}', "", "  ", '{"a":', "[1]\r\n", "1e5",
                 "NaN", '{"a":1}\u00a0', '{"a":"\\ud800"}', b'{"a":"\xff"}\n']:
        raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        try:
            expected = ("ok", json.JSONDecoder().decode(raw))
        except ValueError as exc:
            expected = ("error", str(exc))
        try:
            got = ("ok", codec._loads_fallback(text))
        except ValueError as exc:
            got = ("error", str(exc))
        assert got == expected, text


# -- routing: start events only when something reads them ----------------------------------------------------


def test_prometheus_sink_consumes_only_the_types_it_writes(registry):
    from agentvigil.metrics import metrics_for

    sink = PrometheusSink(metrics_for(registry))
    assert ev.TOOL_END in sink.consumes and ev.RUN_END in sink.consumes
    assert not {ev.TOOL_START, ev.STEP_START, ev.LLM_START} & sink.consumes


def test_tool_start_is_built_only_when_read(make_monitor, tmp_path):
    bare = make_monitor("bare")
    assert not bare.pipeline.wants(ev.TOOL_START)
    recorded = make_monitor("recorded", record_dir=str(tmp_path))
    assert recorded.pipeline.wants(ev.TOOL_START)
    with recorded.run() as run, run.tool_call("search", {"q": 1}) as call:
        call.set_result("r")
    recorded.flush()
    files = [os.path.join(d, f) for d, _, names in os.walk(tmp_path) for f in names if f == "events.ndjson"]
    rows = [json.loads(line) for path in files for line in open(path)]
    kinds = [row["event_type"] for row in rows]
    assert kinds.count(ev.TOOL_START) == 1 and kinds.count(ev.TOOL_END) == 1
    # tool_start and tool_end are built positionally: every field lands where it belongs
    start, end = (next(r for r in rows if r["event_type"] == kind) for kind in (ev.TOOL_START, ev.TOOL_END))
    run_start = next(r for r in rows if r["event_type"] == ev.RUN_START)
    for row in (start, end):
        assert row["agent_id"] == "recorded" and row["run_id"] == run_start["run_id"]
        assert row["tool_name"] == "search" and row["args_hash"] == digest({"q": 1})
        assert row["session_id"] == recorded.session_id
    assert end["result_hash"] == digest("r") and end["status"] == "ok" and end["duration_ms"] >= 0
    assert "error_kind" not in end and "task_id" not in end


def test_null_numeric_fields_read_as_left_out():
    # A writer in another language may write null for a missing count: it used to raise TypeError
    # (not InvalidEvent), which stopped a replay instead of being read or counted.
    event = codec.decode(b'{"event_type":"llm_call","ts":1.0,"input_tokens":null,"cost_usd":null}\n')
    assert event.input_tokens is None and event.cost_usd is None


# -- the fingerprint cache, the per-run shortcut and the runaway baseline -------------------------------------


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("ab 1:-.x\n0é"), max_size=40))
def test_text_fingerprint_is_the_result_fingerprint(text):
    from agentvigil.fingerprint import EMPTY, normalise, result_fingerprint, simhash, text_fingerprint

    expected = f"{simhash(normalise(text)):016x}" if text.strip() else EMPTY   # the definition, no cache
    assert result_fingerprint(text) == expected
    assert result_fingerprint(text) == expected   # the second time from the token cache
    assert text_fingerprint(text, digest(text)) == expected
    assert text_fingerprint(text, digest(text)) == expected   # the second time from the cache


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["get", "peek", "pop", "end", "rejected"]),
                              st.sampled_from(["s1", None]), st.sampled_from(["r1", "r2", "r3", None])),
                    max_size=60),
       limit=st.integers(1, 3))
def test_per_run_state_is_the_dict_of_runs(ops, limit):
    """PerRun's shortcut for the last run gives what a plain dict of (session, run) → state gives."""
    from collections import OrderedDict

    from agentvigil.detectors._state import PerRun

    runs = PerRun(list, limit=limit)
    model: OrderedDict = OrderedDict()
    for op, session, run in ops:
        key = (session, run)
        kind = ev.RUN_END if op == "end" else ev.TOOL_END
        event = Event(kind, 1.0, session_id=session, run_id=run, status="rejected" if op == "rejected" else "ok")
        if op == "get":
            state = runs.get(event)
            if key not in model:
                model[key] = state
                if len(model) > limit:
                    model.popitem(last=False)
            assert state is model[key]
            state.append(1)
        elif op == "peek":
            assert runs.peek(event) is model.get(key)
        elif op == "pop":
            assert runs.pop(event) is model.pop(key, None)
        elif op == "end":
            assert runs.tool_result(event) is None
            model.pop(key, None)
        else:
            assert runs.tool_result(event) is None
        assert len(runs) == len(model)


@settings(max_examples=100, deadline=None)
@given(runs=st.lists(st.tuples(st.integers(1, 400), st.lists(st.floats(0, 10), max_size=12)), min_size=1,
                     max_size=60))
def test_runaway_thresholds_match_the_per_checkpoint_scan(runs):
    from agentvigil.detectors.runaway import CHECKPOINTS, RunawayPolicy, _Baseline, quantile

    p = RunawayPolicy(min_runs=3)
    baseline = _Baseline(p.baseline_runs)
    for steps, values in runs:
        baseline.runs.append((steps, dict(zip(CHECKPOINTS, values, strict=False)), {}))
    baseline.refresh(p)
    expected = {}
    for cp in CHECKPOINTS:   # the definition: one scan of the runs per checkpoint
        values = sorted(s[cp] for _, s, _ in baseline.runs if cp in s)
        if len(values) < p.min_runs:
            break
        expected[cp] = p.spend_factor * quantile(values, p.quantile)
    assert baseline.spend_limits == (expected if len(baseline.runs) >= p.min_runs else {})
