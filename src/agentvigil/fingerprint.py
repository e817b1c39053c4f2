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
_TOKEN = re.compile(r"<[a-z]+>|\w+|[^\w\s]")


def normalise(text: str) -> list[str]:
    """Lower-case, mask volatile values, split into tokens (the fingerprint's input)."""
    if len(text) > HEAD_CHARS + TAIL_CHARS:
        text = text[:HEAD_CHARS] + "\n" + text[-TAIL_CHARS:]
    text = text.lower()
    for pattern, repl in _MASKS:
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


# Bit-sliced SimHash: each 64-bit shingle hash is spread into 64 lanes of 16 bits (one per bit), so summing
# the spread ints counts, per bit, how many shingles set it — one big-int add per shingle.
_LANE = 16
_SPREAD = tuple(sum(((b >> i) & 1) << (_LANE * i) for i in range(8)) for b in range(256))


def _spread(h: int) -> int:
    out = 0
    for j in range(8):
        out |= _SPREAD[(h >> (8 * j)) & 0xFF] << (_LANE * 8 * j)
    return out


def simhash(tokens: list[str]) -> int:
    if not tokens:
        return 0
    if len(tokens) < 3:
        shingles = {" ".join(tokens)}
    else:
        shingles = {f"{a} {b} {c}" for a, b, c in zip(tokens, tokens[1:], tokens[2:], strict=False)}
    if len(shingles) > MAX_SHINGLES:
        shingles = set(sorted(shingles)[:MAX_SHINGLES])
    total = 0
    for s in shingles:
        total += _spread(int.from_bytes(blake2b(s.encode("utf-8"), digest_size=8).digest(), "little"))
    half = len(shingles)
    out = 0
    mask = (1 << _LANE) - 1
    for i in range(64):
        if 2 * ((total >> (_LANE * i)) & mask) > half:
            out |= 1 << i
    return out


def result_fingerprint(value: Any) -> str | None:
    """The similarity fingerprint of a tool result (None for None). Never raises."""
    if value is None:
        return None
    try:
        text = _text(value)
        if not text.strip():
            return EMPTY
        return f"{simhash(normalise(text)):016x}"
    except Exception:   # a fingerprint is a hint: a result we cannot read gets none
        return None


def similarity(a: str | None, b: str | None) -> float:
    """1.0 for identical fingerprints, about 0.5 for unrelated ones; 0.0 when either is missing."""
    if not a or not b:
        return 0.0
    try:
        return 1.0 - (int(a, 16) ^ int(b, 16)).bit_count() / 64.0
    except ValueError:
        return 0.0
