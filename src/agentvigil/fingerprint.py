"""Similarity fingerprints of tool results: ``result_fingerprint(value)`` (spec: docs/events.md).

A 64-bit SimHash over the set of word 3-shingles of the normalised text, as 16 lowercase hex digits. Two
results that differ only in numbers, hex ids, timestamps or addresses get the same fingerprint; results that
differ a little get fingerprints a few bits apart (``similarity``). The raw text never leaves this function.
"""

from __future__ import annotations

import json
import re
from hashlib import blake2b
from typing import Any

EMPTY = "0" * 16          # the fingerprint of an empty or whitespace-only result
HEAD_CHARS = 32_768       # only the head and the tail of a long result are read (bounded cost)
TAIL_CHARS = 8_192
MAX_SHINGLES = 4_096      # lane width below allows 65,535

_MASKS = (
    # ISO dates / times / timestamps first, so their digits are not masked piecewise
    (re.compile(r"\d{4}-\d{2}-\d{2}(?:[t ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:z|[+-]\d{2}:?\d{2})?)?"), " <t> "),
    (re.compile(r"\b\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\b"), " <t> "),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), " <h> "),
    (re.compile(r"\b0x[0-9a-f]+\b"), " <h> "),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{6,}\b"), " <h> "),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), " <ip> "),
    (re.compile(r"\d+(?:\.\d+)?"), " <n> "),
)
# What each mask cannot match without (a digit; a substring): a mask is skipped when the text lacks it, which
# is exact, since the replacements hold neither digits nor any of these substrings.
_NEEDS = ((True, "-"), (True, ":"), (False, "-"), (True, "0x"), (True, ""), (True, "."), (True, ""))
_DIGIT = re.compile(r"\d")
_TOKEN = re.compile(r"<[a-z]+>|\w+|[^\w\s]")


def normalise(text: str) -> list[str]:
    """Lower-case, mask volatile values, split into tokens (the fingerprint's input)."""
    if len(text) > HEAD_CHARS + TAIL_CHARS:
        text = text[:HEAD_CHARS] + "\n" + text[-TAIL_CHARS:]
    text = text.lower()
    digits = _DIGIT.search(text) is not None
    for (pattern, repl), (digit, needle) in zip(_MASKS, _NEEDS, strict=True):
        if (digits or not digit) and needle in text:
            text = pattern.sub(repl, text)
    return _TOKEN.findall(text)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    except (TypeError, ValueError):   # e.g. non-string keys of mixed types
        return str(value)


# SimHash: bit i of the fingerprint is set when more than half of the shingle hashes set it. The per-bit counts
# are kept bit-sliced (plane j holds bit j of all 64 counters, a ripple-carry add per hash, ~2 steps on
# average), and the majority is a bit-sliced compare with the threshold: no per-bit Python loop.
_HASHES: dict[str, int] = {}   # shingle -> its 64-bit hash (results repeat; bounded, cleared when full)
_HASHES_MAX = 16_384


def _hash(shingle: str) -> int:
    h = _HASHES.get(shingle)
    if h is None:
        h = int.from_bytes(blake2b(shingle.encode("utf-8"), digest_size=8).digest(), "little")
        if len(_HASHES) >= _HASHES_MAX:
            _HASHES.clear()
        _HASHES[shingle] = h
    return h


def simhash(tokens: list[str]) -> int:
    if not tokens:
        return 0
    if len(tokens) < 3:
        shingles = {" ".join(tokens)}
    else:
        shingles = {f"{a} {b} {c}" for a, b, c in zip(tokens, tokens[1:], tokens[2:], strict=False)}
    if len(shingles) > MAX_SHINGLES:
        shingles = set(sorted(shingles)[:MAX_SHINGLES])
    n = len(shingles)
    if n == 1:
        return _hash(next(iter(shingles)))
    planes: list[int] = []
    for s in shingles:
        carry = _hash(s)
        j = 0
        while carry:
            if j == len(planes):
                planes.append(carry)
                break
            plane = planes[j]
            planes[j] = plane ^ carry
            carry &= plane
            j += 1
    # counter >= threshold, from the most significant plane down (threshold < 2 ** len(planes) as n >= 2)
    threshold = n // 2 + 1
    greater, equal = 0, (1 << 64) - 1
    for j in range(max(len(planes), threshold.bit_length()) - 1, -1, -1):
        plane = planes[j] if j < len(planes) else 0
        if (threshold >> j) & 1:
            equal &= plane
        else:
            greater |= equal & plane
            equal &= ~plane
    return greater | equal


# The fingerprint of a short token list (after masking, results that differ only in numbers, ids or times have one
# list). Bounded: 4,096 lists of at most 64 tokens, cleared when full.
_BY_TOKENS: dict[tuple[str, ...], str] = {}
_BY_TOKENS_MAX = 4_096


def result_fingerprint(value: Any) -> str | None:
    """The similarity fingerprint of a tool result (None for None). Never raises."""
    if value is None:
        return None
    try:
        text = _text(value)
        if not text.strip():
            return EMPTY
        tokens = tuple(normalise(text))
        fp = _BY_TOKENS.get(tokens)
        if fp is None:
            fp = f"{simhash(list(tokens)):016x}"
            if len(tokens) <= 64:   # short results: masked, they repeat even when the raw texts differ
                if len(_BY_TOKENS) >= _BY_TOKENS_MAX:
                    _BY_TOKENS.clear()
                _BY_TOKENS[tokens] = fp
        return fp
    except Exception:   # a fingerprint is a hint: a result we cannot read gets none
        return None


# A str result's fingerprint, keyed by its digest (``codec.digest``, which the tool call computes anyway): agents
# get the same answers back (polling, errors, loops), and the raw text is not kept. Bounded, cleared when full.
_BY_DIGEST: dict[str, str | None] = {}
_BY_DIGEST_MAX = 4_096


def text_fingerprint(text: str, text_digest: str | None) -> str | None:
    """``result_fingerprint(text)`` for a str whose ``codec.digest`` is ``text_digest``: computed once per distinct
    text (two texts with one 64-bit digest would share a fingerprint, as they already share a result hash)."""
    if text_digest is None:
        return result_fingerprint(text)
    try:
        return _BY_DIGEST[text_digest]
    except KeyError:
        pass
    fp = result_fingerprint(text)
    if len(_BY_DIGEST) >= _BY_DIGEST_MAX:
        _BY_DIGEST.clear()
    _BY_DIGEST[text_digest] = fp
    return fp


def similarity(a: str | None, b: str | None) -> float:
    """1.0 for identical fingerprints, about 0.5 for unrelated ones; 0.0 when either is missing."""
    if not a or not b:
        return 0.0
    try:
        return 1.0 - (int(a, 16) ^ int(b, 16)).bit_count() / 64.0
    except ValueError:
        return 0.0
