"""The hot-path shortcuts give the same results as the straightforward code they replace."""

import json
import os
import re
from hashlib import blake2b

from hypothesis import given, settings
from hypothesis import strategies as st

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


def _full_check(data):
    """What the full check (no remembered shape) makes of ``data``."""
    try:
        return ("ok", events._checked(data))
    except InvalidEvent as exc:
        return (exc.reason, str(exc))
    except OverflowError:
        return ("overflow", "")


@settings(max_examples=400, deadline=None)
@given(event_type=st.sampled_from([ev.TOOL_END, ev.RUN_START, "bogus"]),
       ts=st.one_of(st.floats(allow_nan=True), st.integers(0, 10), st.none(), st.text(max_size=2)),
       fields=st.dictionaries(st.sampled_from(events._FIELD_NAMES[2:] + ("unknown",)), _values, max_size=5))
def test_remembered_event_shapes_judge_like_the_full_check(event_type, ts, fields):
    data = {"event_type": event_type, "ts": ts, **fields}
    expected = _full_check(data)
    assert _outcome(data) == expected
    assert _outcome(data) == expected      # the second time its shape may be remembered


_field_dicts = st.dictionaries(st.sampled_from(events._FIELD_NAMES[2:] + ("unknown",)), _values, max_size=5)


@settings(max_examples=400, deadline=None)
@given(first=_field_dicts, extra=_field_dicts, order=st.randoms(use_true_random=False))
def test_shapes_found_by_event_type_check_the_key_set(first, extra, order):
    """Shapes are found under their event type, whatever the key order: after one dict is remembered, the same
    keys in another order, a superset, a subset, and as many keys but others, are judged like the full check."""
    full = _full_check
    seen = {"event_type": ev.TOOL_END, "ts": 1.0, **first}
    assert _outcome(seen) == full(seen)   # remembered if valid
    swapped = dict(first)
    if first and extra:
        swapped.pop(next(iter(first)))
        swapped.update(dict([next(iter(extra.items()))]))
    subset = dict(list(first.items())[1:])
    for fields in (first, {**first, **extra}, {**extra, **first}, subset, swapped):
        items = list({"event_type": ev.TOOL_END, "ts": 2.0, **fields}.items())
        order.shuffle(items)
        data = dict(items)
        assert _outcome(data) == full(data)


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


@settings(max_examples=150, deadline=None)
@given(runs=st.lists(st.tuples(st.integers(1, 400), st.lists(st.floats(-1, 10), max_size=12),
                               st.lists(st.one_of(st.floats(-600, 3000), st.just(float("nan"))), max_size=6)),
                     min_size=1, max_size=60),
       keep=st.integers(0, 25), extra=st.sampled_from([None, 7, 9999]))
def test_runaway_thresholds_match_the_per_checkpoint_scan(runs, keep, extra):
    """The baseline's sorted values (kept as runs come and go, the oldest leaving when full; a NaN, which only a
    state file brings, turns them off) give the thresholds of one scan of the kept runs per checkpoint."""
    from agentvigil.detectors.runaway import CHECKPOINTS, RunawayPolicy, _Baseline, quantile

    p = RunawayPolicy(min_runs=3)
    baseline = _Baseline(keep)
    for i, (steps, spend, slopes) in enumerate(runs):
        spend_at = dict(zip(CHECKPOINTS, spend, strict=False))
        if extra is not None:
            spend_at[extra] = 1.0   # a step that is not a checkpoint (a state file may carry one): never read
        baseline.add(steps, spend_at, dict(zip(CHECKPOINTS, slopes, strict=False)), p)
        if i % 3 == 0:
            baseline.refresh(p)

        def definition(index: int, factor: float, floor: float) -> dict:
            expected = {}
            for cp in CHECKPOINTS:   # one scan of the runs per checkpoint
                values = sorted(r[index][cp] for r in baseline.runs if cp in r[index])
                if len(values) < p.min_runs:
                    break
                expected[cp] = max(floor, factor * quantile(values, p.quantile))
            return expected

        if len(baseline.runs) < p.min_runs:
            assert (baseline.length_limit, baseline.spend_limits, baseline.slope_limits) == (None, {}, {})
        elif baseline.stale == 0:
            assert baseline.length_limit == p.length_factor * quantile(sorted(r[0] for r in baseline.runs), p.quantile)
            assert baseline.spend_limits == definition(1, p.spend_factor, 0.0)
            assert repr(baseline.slope_limits) == repr(definition(2, p.slope_factor, p.min_slope))   # NaN-safe


# -- the stuck detector against its definition (the score with min()/max(), state looked up per call) --------


class _StuckDefinition:
    """StuckDetector as it was written before its hot path was inlined (kept here as the definition)."""

    def __init__(self, policy):
        from agentvigil.detectors._state import PerRun
        from agentvigil.detectors.stuck import _Run

        self.policy = policy
        self._runs = PerRun(lambda: _Run(policy.window))

    def feed(self, event):
        from agentvigil.detectors.stuck import _entropy

        state = self._runs.tool_result(event)
        if state is None or state.fired:
            return None
        score = self._score(state, event)
        p = self.policy
        if score >= p.on_score:
            state.held += 1
        elif score < p.off_score:
            state.held = 0
        if state.held < p.hold or state.steps < p.min_steps:
            return None
        state.fired = True
        return [(event.run_id, state.steps, score, state.novelty, _entropy(state.counts, len(state.actions)),
                 state.streak, state.errors)]

    def _score(self, s, event):
        from agentvigil.detectors.stuck import EMPTY, _entropy, _fp_int

        p = self.policy
        s.steps += 1
        result_fp = event.result_fingerprint
        empty = result_fp == EMPTY
        weight = p.empty_weight if empty else 1.0
        action = (event.tool_name, event.args_hash)
        s.streak = s.streak + weight if action == s.last_action else weight
        s.last_action = action
        if len(s.actions) == s.actions.maxlen:
            old = s.actions[0]
            s.counts[old] -= 1
            if not s.counts[old]:
                del s.counts[old]
        s.actions.append(action)
        s.counts[action] = s.counts.get(action, 0) + 1
        fp = None if result_fp is None or empty else _fp_int(result_fp)
        if fp is not None:
            if s.fps:
                best = max(1.0 - (fp ^ f).bit_count() / 64.0 for f in s.fps)
                novelty = min(1.0, max(0.0, (p.similar - best) / (p.similar - 0.5)))
            else:
                novelty = 1.0
            s.fps.append(fp)
        elif empty or event.result_hash is None:
            novelty = 0.5
        else:
            novelty = 0.0 if event.result_hash == s.last_hash else 1.0
        s.last_hash = event.result_hash
        s.novelty += 0.3 * weight * (novelty - s.novelty)
        if event.status == "error":
            same = (fp is not None and s.err_fp is not None and 1.0 - (fp ^ s.err_fp).bit_count() / 64.0 >= p.similar) \
                or (fp is None and event.error_kind is not None and event.error_kind == s.err_kind)
            s.errors = s.errors + 1.0 if same else 1.0
            s.err_fp, s.err_kind = fp, event.error_kind
        elif novelty > 0.5 and not empty:
            s.errors = 0.0
        repetition = 1.0 - s.novelty
        if repetition >= p.off_score:
            repetition *= 0.6 + 0.4 * (1.0 - _entropy(s.counts, len(s.actions)))
        streak = min(1.0, (s.streak - 1.0) / max(1.0, p.identical_calls - 1.0))
        errors = min(1.0, (s.errors - 1.0) / max(1.0, p.same_errors - 1.0))
        return max(repetition, streak, errors)


_FPS = ["%016x" % v for v in (0, 1, 3, 0xFFFF, 0xFFFF0000FFFF0000, 2**64 - 1, 0x8000000000000001)] + ["zz"]


@settings(max_examples=300, deadline=None)
@given(stream=st.lists(st.tuples(st.sampled_from(["tool_end"] * 12 + ["run_end"]), st.sampled_from(["r1", "r2"]),
                                 st.sampled_from(["a", "b", None]), st.sampled_from(["x", "y", None]),
                                 st.sampled_from(_FPS + [None]), st.sampled_from(["p", "q", None]),
                                 st.sampled_from(["ok", "ok", "error", "rejected"]), st.sampled_from(["E", None])),
                       max_size=150),
       on=st.sampled_from([0.0, 0.5, 0.75, 1.0]), off=st.sampled_from([-0.1, 0.0, 0.45, 0.9]),
       hold=st.integers(1, 6), min_steps=st.integers(0, 8), identical=st.integers(0, 6), same=st.integers(0, 5),
       similar=st.sampled_from([0.6, 0.9, 1.0]), empty_weight=st.sampled_from([0.0, 0.25, 1.0]),
       window=st.integers(1, 10))
def test_stuck_detector_matches_its_definition(stream, on, off, hold, min_steps, identical, same, similar,
                                               empty_weight, window):
    from agentvigil.detectors.stuck import StuckDetector, StuckPolicy

    # The score path against its definition; recurrence, same outputs and same results (verdicts that bypass
    # the score) are turned off here and tested on their own in tests/detection/test_stuck.py.
    policy = StuckPolicy(window=window, on_score=on, off_score=off, hold=hold, identical_calls=identical,
                         same_errors=same, min_steps=min_steps, similar=similar, empty_weight=empty_weight,
                         distinct_share=0.0, same_outputs=10**9, same_results=10**9)
    ours, definition = StuckDetector(policy), _StuckDefinition(policy)
    for kind, run, tool, args, fp, result, status, kind_of_error in stream:
        event = Event(kind, 1.0, run_id=run, tool_name=tool, args_hash=args, result_fingerprint=fp,
                      result_hash=result, status=status, error_kind=kind_of_error)
        got, want = ours.feed(event), definition.feed(event)
        if want is None:
            assert got is None
            continue
        [(_, steps, score, novelty, entropy, streak, errors)] = want
        [verdict] = got
        scored = {k: verdict.detail[k] for k in ("score", "held_steps", "steps", "novelty", "entropy",
                                                 "identical_calls", "same_errors")}
        assert verdict.run_id == run and scored == {
            "score": round(score, 3), "held_steps": verdict.detail["held_steps"], "steps": steps,
            "novelty": round(novelty, 3), "entropy": round(entropy, 3), "identical_calls": round(streak, 2),
            "same_errors": round(errors, 2)}
        assert repr(verdict.detail["score"]) == repr(round(score, 3))   # -0.0 and 0.0 alike


# -- replay's reader: unread types counted without decoding, exactly as documented -----------------------------


def _plainly(line: bytes, unread: frozenset) -> bool:
    """docs/events.md: the type first as the recorder writes it, that key once, braces balanced, ends with }."""
    return any(line.startswith(b'{"event_type":"' + t.encode() + b'",') for t in unread) \
        and line.rstrip(b"\n").endswith(b"}") and line.count(b'"event_type"') == 1 \
        and line.count(b"{") == line.count(b"}") and (line.endswith(b"}") or line.endswith(b"}\n"))


_reader_events = st.builds(
    Event, st.sampled_from(sorted(ev.EVENT_TYPES)), st.floats(1e9, 2e9),
    run_id=st.sampled_from(["r1", "r{", None]), tool_name=st.sampled_from(["bash", "ed}it", None]),
    step_index=st.sampled_from([1, None]), status=st.sampled_from(["ok", "error", None]),
    detail=st.sampled_from([None, {"command": "ls"}, {"command": "}"}, {"a": {"b": 1}}]))


@settings(max_examples=300, deadline=None)
@given(items=st.lists(st.tuples(_reader_events, st.sampled_from(["line", "cut", "bad_ts", "again", "spaced"]),
                                st.integers(0, 400)), max_size=20),
       unread=st.sets(st.sampled_from(sorted(ev.EVENT_TYPES))), final_newline=st.booleans())
def test_replay_reader_counts_unread_lines_as_documented(tmp_path_factory, items, unread, final_newline):
    from agentvigil.replay import ReplayStats, read_events

    unread = frozenset(unread)
    lines = []
    for event, how, cut in items:
        line = codec.encode_bytes(event)
        if how == "cut":
            line = line[:cut % (len(line) + 1)]
        elif how == "bad_ts":   # a bad field: a counted skip when decoded, not looked at when plainly unread
            line = re.sub(rb'"ts":[^,}]*', b'"ts":"x"', line, count=1)
        elif how == "again":
            line = line[:-1] + b',"event_type":"tool_end"}'
        elif how == "spaced":
            line = json.dumps(event.to_dict()).encode()
        lines.append(line)
    path = os.path.join(tmp_path_factory.mktemp("s"), "events.ndjson")
    with open(path, "wb") as fh:
        fh.write(b"\n".join(lines) + (b"\n" if final_newline else b""))
    stats = ReplayStats()
    got = list(read_events(path, stats, unread))
    want, counted, skipped = [], 0, 0
    for i, line in enumerate(lines):
        raw = line + b"\n" if final_newline or i < len(lines) - 1 else line
        if not raw.strip():
            continue
        if _plainly(raw, unread):
            counted += 1   # not decoded: whatever its other fields hold
            continue
        try:
            event = codec.decode(raw)   # everything else: decoded and validated in full, as without ``unread``
        except InvalidEvent:
            skipped += 1
            continue
        counted += 1
        if event.event_type not in unread:
            want.append(event)
    assert got == want
    assert stats.events == counted and sum(stats.skipped.values()) == skipped
    # a line cut short is never taken for a complete one when none of its strings holds a brace
    for (event, how, _), line in zip(items, lines, strict=True):
        full = codec.encode_bytes(event)
        if how == "cut" and _plainly(line + b"\n", unread) and full.count(b"{") + full.count(b"}") == 2:
            assert line == full
