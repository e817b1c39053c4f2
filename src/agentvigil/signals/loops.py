"""Loop detection over a run's tool calls.

Three detectors share one pass over (tool, args digest, result digest):

* ``repeat_call``: the same tool with the same arguments, again and again, with no progress in between.
  Progress is any call not seen recently, or a call whose result differs from last time. That is what keeps
  edit-and-test cycles quiet: each edit has new arguments, so ``test`` repeating is not a loop.
* ``same_result``: the same call getting the same result back, even with other calls in between
  (edit → test → FAIL, edit → test → FAIL, ...).
* ``repeated_sequence``: a sequence of 2+ calls repeating back to back, (A→B→C)×N.

Each detector re-arms after firing, so a loop that keeps going keeps being counted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

REPEAT_CALL = "repeat_call"
SAME_RESULT = "same_result"
REPEATED_SEQUENCE = "repeated_sequence"
LOOP_DETECTORS = (REPEAT_CALL, SAME_RESULT, REPEATED_SEQUENCE)


@dataclass(frozen=True, slots=True)
class LoopPolicy:
    max_repeats: int = 3            # repeat_call / same_result fire on the Nth occurrence
    window: int = 20                # occurrences further apart than this many calls do not chain
    sequence_repeats: int = 3       # repeated_sequence fires when a sequence occurs this many times in a row
    max_sequence_length: int = 5    # longest sequence looked for (2..N)
    ignore_tools: frozenset[str] = frozenset()  # e.g. polling tools that legitimately repeat

    def __post_init__(self) -> None:
        if self.max_repeats < 2 or self.window < 1 or self.sequence_repeats < 2 or self.max_sequence_length < 2:
            raise ValueError("LoopPolicy: max_repeats>=2, window>=1, sequence_repeats>=2, max_sequence_length>=2")


class LoopState:
    """Per-run loop detection state. Memory is bounded by ``window`` and ``max_sequence_length``."""

    __slots__ = ("policy", "_index", "_progress", "_calls", "_results", "_history", "_runs", "_names", "_zeros")

    def __init__(self, policy: LoopPolicy):
        self.policy = policy
        self._index = 0
        self._progress = 0
        # symbol -> [count, last_index, progress_seen_at_last, last_result]
        self._calls: dict[str, list] = {}
        # (symbol, result) -> [count, last_index]
        self._results: dict[tuple[str, str], list] = {}
        span = policy.max_sequence_length * policy.sequence_repeats + 1
        self._history: deque[str] = deque(maxlen=span)
        self._names: deque[str] = deque(maxlen=span)
        self._runs = [0] * (policy.max_sequence_length + 1)
        self._zeros = (0,) * (policy.max_sequence_length + 1)

    def observe(self, tool: str, args_hash: str | None, result_hash: str | None = None) -> list[tuple[str, dict]]:
        """Feed one finished tool call; returns the (detector, detail) pairs it triggers (usually none)."""
        policy = self.policy
        if tool in policy.ignore_tools:
            return []
        index = self._index = self._index + 1
        symbol = f"{tool}\x1f{args_hash}"
        found: list[tuple[str, dict]] = []
        window, max_repeats = policy.window, policy.max_repeats

        # repeat_call: chain only if nothing made progress since this symbol's last occurrence.
        calls = self._calls
        entry = calls.get(symbol)
        if entry is None or index - entry[1] > window:
            progress = self._progress = self._progress + 1
            entry = calls[symbol] = [1, index, progress, result_hash]
        elif result_hash is not None and entry[3] is not None and result_hash != entry[3]:
            progress = self._progress = self._progress + 1  # same call, new answer: the world changed
            entry[0], entry[1], entry[2], entry[3] = 1, index, progress, result_hash
        else:
            progress = self._progress
            entry[0] = entry[0] + 1 if entry[2] == progress else 1
            entry[1], entry[2], entry[3] = index, progress, result_hash
        repeat_fired = entry[0] >= max_repeats
        if repeat_fired:
            entry[0] = 0

        # same_result: the same call answered identically, even with other calls in between.
        same_fired = False
        if result_hash is not None:
            key = (symbol, result_hash)
            results = self._results
            hit = results.get(key)
            if hit is None or index - hit[1] > window:
                hit = results[key] = [1, index]
            else:
                hit[0] += 1
                hit[1] = index
            if hit[0] >= max_repeats:
                same_fired = True
                hit[0] = 0
        if same_fired:
            found.append((SAME_RESULT, {"tool": tool, "repeats": policy.max_repeats}))
        elif repeat_fired:
            found.append((REPEAT_CALL, {"tool": tool, "repeats": policy.max_repeats}))

        # repeated_sequence: runs[L] counts consecutive positions where history[i] == history[i - L].
        history, runs = self._history, self._runs
        seen = symbol in history   # one C-level scan; a call not seen recently ends every run
        history.append(symbol)
        self._names.append(tool)
        if not seen:
            runs[:] = self._zeros
        else:
            size = len(history)
            need = policy.sequence_repeats - 1
            for length in range(2, policy.max_sequence_length + 1):
                if size > length and history[-1 - length] == symbol:
                    runs[length] += 1
                    if runs[length] >= length * need and len(set(list(history)[-length:])) > 1:
                        sequence = list(self._names)[-length:]
                        found.append((REPEATED_SEQUENCE, {"sequence": sequence, "length": length,
                                                          "repeats": policy.sequence_repeats}))
                        for i in range(len(runs)):
                            runs[i] = 0
                        break
                else:
                    runs[length] = 0

        if len(calls) > 4 * window:
            self._prune(index)
        return found

    def _prune(self, index: int) -> None:
        window = self.policy.window
        self._calls = {k: v for k, v in self._calls.items() if index - v[1] <= window}
        self._results = {k: v for k, v in self._results.items() if index - v[1] <= window}
