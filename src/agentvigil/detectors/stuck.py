"""stuck: the run loops or has stopped converging (docs/detection.md).

Each tool result updates a stall score in [0, 1] from four signals, all O(window) per event with a small
fixed window:

* novelty — how unlike the recent results this one is (``result_fingerprint`` similarity, not exact hashes,
  so a compile whose output only changes its timestamps is not progress);
* action entropy — how varied the recent (tool, arguments) pairs are;
* identical-call streak — the same call again, whatever its result;
* same-error streak — the same error back (similar fingerprint or error kind) across varying calls.

Empty results (a write that prints nothing) carry little information and count for a fraction of a step.
Rejected actions (unparsable or refused) are not tool calls and are skipped. The verdict fires once per run,
when the score has stayed at or above ``on_score`` for ``hold`` consecutive results (hysteresis: it only
resets below ``off_score``), so a short stutter the agent recovers from stays quiet. Three conditions that
already span several steps fire it too: recurrence (a full window of a few calls over and over, interleaved),
same outputs (one call returning a similar result again and again, other calls between) and same results
(result after result like a recent one, whatever the calls: free-text actions worded differently that get the
same error back, an agent whose replies the harness cannot run).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from .. import events as ev
from ..events import Event
from ..fingerprint import EMPTY
from ..verdicts import detection
from ._state import PerRun

STUCK = "stuck"
MAX_CALLS = 256   # distinct calls whose last result a run remembers (cleared when full: bounded memory)


@dataclass(frozen=True, slots=True)
class StuckPolicy:
    window: int = 8             # recent results compared for novelty, entropy and recurrence
    on_score: float = 0.75      # a step at or above this counts toward the verdict
    off_score: float = 0.45     # below this the count resets (hysteresis)
    hold: int = 6               # consecutive steps at or above on_score before the verdict
    identical_calls: int = 6    # this many identical calls in a row score 1.0 by themselves
    same_errors: int = 5        # this many similar errors in a row score 1.0 by themselves
    min_steps: int = 8          # no verdict before this many tool results
    similar: float = 0.9        # fingerprint similarity at or above which two results are "the same"
    empty_weight: float = 0.25  # how much an empty result counts toward streaks and the novelty average
    distinct_share: float = 0.4  # a full window with at most this share of distinct calls is recurring
    recurrence_hold: int = 1    # consecutive recurring windows before the verdict (the window already spans steps)
    same_outputs: int = 8       # the same call returning a similar result this many times, other calls between
    same_results: int = 12      # this many results in a row each similar to a recent one, whatever the calls


class _Run:
    __slots__ = ("fps", "actions", "counts", "last_action", "streak", "err_fp", "err_kind", "errors", "novelty", "held",
                 "steps", "fired", "last_hash", "recurring", "outputs", "repeats")

    def __init__(self, window: int) -> None:
        self.fps: deque[int] = deque(maxlen=window)
        self.actions: deque[tuple[str | None, str | None]] = deque(maxlen=window)
        self.counts: dict[tuple[str | None, str | None], int] = {}   # of the actions in the window
        self.last_action: tuple[str | None, str | None] | None = None
        self.streak = 0.0
        self.err_fp: int | None = None
        self.err_kind: str | None = None
        self.errors = 0.0
        self.novelty = 1.0    # moving average of result novelty
        self.held = 0
        self.steps = 0
        self.fired = False
        self.last_hash: str | None = None
        self.recurring = 0
        self.outputs: dict[tuple[str | None, str | None], tuple[int, int]] = {}   # call -> (last fp, repeats)
        self.repeats = 0      # results in a row each similar to one in the window (empty ones skipped)


def _fp(value: str | None) -> int | None:
    if not value or value == EMPTY:
        return None
    try:
        return int(value, 16)
    except ValueError:
        return None


_FP_INTS: dict[str, int | None] = {}   # fingerprint -> _fp of it: results repeat (bounded, cleared when full)


def _fp_int(value: str) -> int | None:
    n = _FP_INTS.get(value, _MISSING)
    if n is _MISSING:
        n = _fp(value)
        if len(_FP_INTS) >= 4096:
            _FP_INTS.clear()
        _FP_INTS[value] = n
    return n  # type: ignore[return-value]


_MISSING = object()


_CLOGC = tuple(c * math.log(c) if c else 0.0 for c in range(1025))


_ENTROPY: dict[tuple[int, ...], float] = {}   # the counts, in order -> their entropy (bounded, cleared when full)


def _entropy(counts: dict, n: int) -> float:
    """Shannon entropy of the window's actions, normalised to [0, 1] by the window's length:
    H = log n − Σ c·log c / n. A window holds few distinct count patterns: each is computed once (keyed by the
    counts in order, so the float sum is the same one)."""
    if n < 2:
        return 1.0
    key = tuple(counts.values())
    h = _ENTROPY.get(key)
    if h is None:
        log_n = math.log(n)
        h = max(0.0, (log_n - sum(map(_CLOGC.__getitem__, key)) / n) / log_n)
        if len(_ENTROPY) >= 4096:
            _ENTROPY.clear()
        _ENTROPY[key] = h
    return h


class StuckDetector:
    name = STUCK
    family = "loop"
    consumes = frozenset({ev.TOOL_END, ev.RUN_END})
    batch_lane = name   # keeps only its own state (Pipeline.emit_batch)

    def __init__(self, policy: StuckPolicy | None = None):
        self.policy = policy or StuckPolicy()
        self._runs: PerRun[_Run] = PerRun(lambda: _Run(self.policy.window))
        p = self.policy   # the per-event divisors, computed once (the same floats)
        self._streak_div = max(1.0, p.identical_calls - 1.0)
        self._errors_div = max(1.0, p.same_errors - 1.0)
        self._novelty_div = p.similar - 0.5
        self._recurring_max = int(p.distinct_share * p.window + 1e-9)   # distinct calls in a recurring window

    def feed(self, event: Event) -> list[Event] | None:
        # Hot (every tool result): PerRun.tool_result's shortcut and the score are inlined, and min()/max() of
        # two or three floats are written out as comparisons in the order the builtins make them (the first of
        # equal values wins), so every float is the one they return.
        runs = self._runs
        if event.event_type == ev.RUN_END or event.status == "rejected":
            runs.tool_result(event)   # forgets the run at its end
            return None
        s = runs._last
        if s is None or (event.run_id or event.task_id) != runs._rid or event.session_id != runs._sid:
            s = runs.get(event)
        if s.fired:
            return None
        p = self.policy
        s.steps += 1
        result_fp = event.result_fingerprint
        empty = result_fp == EMPTY
        weight = p.empty_weight if empty else 1.0
        action = (event.tool_name, event.args_hash)
        s.streak = s.streak + weight if action == s.last_action else weight
        s.last_action = action
        actions, counts = s.actions, s.counts
        if len(actions) == actions.maxlen:
            old = actions[0]
            left = counts[old] - 1
            if left:
                counts[old] = left
            else:
                del counts[old]
        actions.append(action)
        counts[action] = counts.get(action, 0) + 1

        fp = None if result_fp is None or empty else _fp_int(result_fp)   # a recording without fingerprints: no call
        stale = 0   # repeats of this call's similar result (only results with a fingerprint are compared)
        result_hash = event.result_hash
        if fp is not None:
            fps = s.fps
            if fps:
                # the most similar recent result: the fewest differing bits (an identical one is the usual case)
                best = 1.0 if fp in fps else 1.0 - min(map(int.bit_count, map(fp.__xor__, fps))) / 64.0
                # unrelated fingerprints sit near 0.5 similarity: map [0.5, similar] onto novelty [1, 0]
                novelty = (p.similar - best) / self._novelty_div
                s.repeats = s.repeats + 1 if best >= p.similar else 0
                if not novelty > 0.0:
                    novelty = 0.0
                if not novelty < 1.0:
                    novelty = 1.0
            else:
                novelty = 1.0
                s.repeats = 0
            fps.append(fp)
            # the same call's last result, whatever ran in between: an edit-and-test cycle whose test keeps
            # failing the same way is not converging
            outputs = s.outputs
            last = outputs.get(action)
            if last is not None and 1.0 - (fp ^ last[0]).bit_count() / 64.0 >= p.similar:
                stale = last[1] + 1
            else:
                stale = 1
                if last is None and len(outputs) >= MAX_CALLS:
                    outputs.clear()
            outputs[action] = (fp, stale)
        elif empty or result_hash is None:
            novelty = 0.5   # nothing to judge by: neither progress nor repetition
        else:
            novelty = 0.0 if result_hash == s.last_hash else 1.0   # results recorded without fingerprint
        s.last_hash = result_hash
        s.novelty += 0.3 * weight * (novelty - s.novelty)

        if event.status == "error":
            same = (fp is not None and s.err_fp is not None and 1.0 - (fp ^ s.err_fp).bit_count() / 64.0 >= p.similar) \
                or (fp is None and event.error_kind is not None and event.error_kind == s.err_kind)
            s.errors = s.errors + 1.0 if same else 1.0
            s.err_fp, s.err_kind = fp, event.error_kind
        elif novelty > 0.5 and not empty:
            s.errors = 0.0

        score = 1.0 - s.novelty   # repetition
        if score >= p.off_score:   # entropy can only lower it: skip the O(window) count otherwise
            score *= 0.6 + 0.4 * (1.0 - _entropy(counts, len(actions)))
        streak = (s.streak - 1.0) / self._streak_div
        if streak < 1.0:
            if streak > score:
                score = streak
        elif 1.0 > score:
            score = 1.0
        errors = (s.errors - 1.0) / self._errors_div
        if errors < 1.0:
            if errors > score:
                score = errors
        elif 1.0 > score:
            score = 1.0

        if score >= p.on_score:
            s.held += 1
        elif score < p.off_score:
            s.held = 0
        # recurrence: the window is a few calls over and over (interleaved, so no streak), whatever the results
        if len(actions) == actions.maxlen and len(counts) <= self._recurring_max:
            s.recurring += 1
        else:
            s.recurring = 0
        if (s.held < p.hold and s.recurring < p.recurrence_hold and stale < p.same_outputs
                and s.repeats < p.same_results) or s.steps < p.min_steps:
            return None
        s.fired = True
        # which condition fired, in the order the message names them (several can hold at once)
        why = ("stall_score" if s.held >= p.hold else "same_outputs" if stale >= p.same_outputs
               else "same_results" if s.repeats >= p.same_results else "recurrence")
        detail = {"why": why, "score": round(score, 3), "held_steps": s.held, "steps": s.steps,
                  "novelty": round(s.novelty, 3), "entropy": round(_entropy(counts, len(actions)), 3),
                  "identical_calls": round(s.streak, 2), "same_errors": round(s.errors, 2),
                  "distinct_calls": len(counts), "recurring_steps": s.recurring, "same_outputs": stale,
                  "same_results": s.repeats}
        if why == "stall_score":
            message = f"run stalled for {s.held} steps (stall score {score:.2f}, {s.steps} tool results)"
        elif why == "same_outputs":
            message = (f"the same call returned the same result {stale} times "
                       f"({event.tool_name}, {s.steps} tool results)")
        elif why == "same_results":
            message = f"{s.repeats} results in a row repeat recent ones, whatever the calls ({s.steps} tool results)"
        else:
            message = (f"run repeating {len(counts)} distinct calls over its last {len(actions)} tool results "
                       f"for {s.recurring} steps ({s.steps} tool results)")
        return [detection(event, STUCK, detail, message)]

    def tick(self, now: float) -> None:
        return None
