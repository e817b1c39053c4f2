"""One codec for every writer and reader: Event ↔ one JSON line, and the digests of tool arguments/results.

Whatever the recorder writes, ``replay``, ``watch`` and ``supervise`` read back: lines are written with
orjson when installed (else the stdlib), lone surrogates replaced by U+FFFD so every strict decoder accepts
them; lines are read with orjson, falling back to the stdlib decoder for what orjson refuses (a lone
surrogate escape written by another tool); nesting too deep for either is counted as ``too_deep``.
"""

from __future__ import annotations

import json
import math
from hashlib import blake2b
from typing import Any, Callable

from .events import _FIELD_NAMES, Event, InvalidEvent, event_from_dict

_std_decoder = json.JSONDecoder()
_std_decode = _std_decoder.decode  # skips json.loads' encoding detection on str lines
_scan_once = _std_decoder.scan_once  # type: ignore[attr-defined]  # set by JSONDecoder.__init__

try:  # optional (`pip install agentvigil[fast]`): ~2.5x faster decoding
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - depends on the environment
    _fast_loads = None  # type: ignore[assignment]

# Built once: json.dumps with options builds a new encoder per call (~1 µs on the hot path).
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=repr).encode
try:
    # The C encoder that ``_canonical`` builds on every call, built once: same bytes, half the cost. It has
    # no circular-reference markers, so a cycle ends in RecursionError instead of ValueError; both fall
    # back to ``repr`` in ``digest``, so the hash is the same either way.
    from json.encoder import c_make_encoder as _c_make_encoder  # type: ignore[attr-defined]
    from json.encoder import encode_basestring_ascii as _ascii

    if _c_make_encoder is None:  # pragma: no cover - pure-Python json (e.g. PyPy)
        raise ImportError
    _c_canonical = _c_make_encoder(None, repr, _ascii, None, ":", ",", True, False, True)

    def _canonical_fast(value: Any) -> str:
        return "".join(_c_canonical(value, 0))
except ImportError:  # pragma: no cover
    _canonical_fast = _canonical  # type: ignore[assignment]

try:  # optional (`pip install agentvigil[fast]`): several times faster encoding; the stdlib otherwise
    from orjson import dumps as _orjson_dumps
except ImportError:  # pragma: no cover - depends on the environment
    _orjson_dumps = None  # type: ignore[assignment]

try:  # orjson >= 3.9: raw bytes inserted as they are (encode_lines)
    from orjson import Fragment as _Fragment

    _NEWLINE: Any = _Fragment(b"\n")
except ImportError:  # pragma: no cover - depends on the environment
    _NEWLINE = None


def _dict_builder() -> Callable[[Event], dict[str, Any]]:
    """``Event.to_dict`` unrolled into straight-line code, generated from the Event's fields: about a third
    of the loop's cost, and the writer shares the GIL with the agent."""
    lines = ["def as_dict(e):", "    d = {}"]
    for name in _FIELD_NAMES:
        lines += [f"    v = e.{name}", f"    if v is not None: d[{name!r}] = v"]
    lines.append("    return d")
    namespace: dict[str, Any] = {}
    exec("\n".join(lines), namespace)  # source built from the dataclass's own field names only
    return namespace["as_dict"]


_as_dict = _dict_builder()


def _fallback_encode(data: dict[str, Any]) -> bytes:
    # Lone surrogates cannot be UTF-8 and strict decoders (orjson, replay's) reject their \ud800 escapes:
    # pair what pairs, replace the rest with U+FFFD, so the line stays readable everywhere.
    text = json.dumps(data, separators=(",", ":"), default=str, ensure_ascii=False)
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def encode_bytes(event: Event) -> bytes:
    """One event as one NDJSON line (without the newline), ``None`` fields omitted, as ``Event.to_json``."""
    data = _as_dict(event)
    if _orjson_dumps is not None:
        try:
            return _orjson_dumps(data, default=str)
        except Exception:  # lone surrogates, ints beyond 64 bits, non-str keys: the stdlib copes
            pass
    return _fallback_encode(data)



def encode_lines(events: list[Event]) -> list[bytes]:
    """Many events as lines, byte for byte as ``encode_bytes`` makes them, in one orjson call: a call per
    event costs orjson more than the encoding itself. The events are encoded as one list with a raw
    newline between them, which orjson never emits otherwise (it escapes control characters), so the
    output splits back into one line per event. Raises if any event needs the slow path (orjson refuses
    it, or is not installed and the stdlib fails): the caller then encodes those events one by one."""
    if _orjson_dumps is None or _NEWLINE is None:
        return [encode_bytes(event) for event in events]
    if not events:
        return []
    items: list[Any] = [_NEWLINE] * (2 * len(events) - 1)
    items[::2] = map(_as_dict, events)
    lines = _orjson_dumps(items)[1:-1].split(b",\n,")
    if len(lines) != len(events):  # a raw fragment inside an event: not ours to split
        raise ValueError("batch did not split into one line per event")
    return lines


def encode(event: Event) -> str:
    """The event as one compact JSON object (no newline); ``None`` fields omitted."""
    return encode_bytes(event).decode("utf-8")


def _loads_fallback(text: str | bytes) -> Any:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    # JSONDecoder.decode without its two whitespace regexes for the usual line (a value, then at most
    # whitespace); anything else, errors included, goes through decode itself for the same result.
    try:
        value, end = _scan_once(text, 0)
    except StopIteration:
        return _std_decode(text)
    if end == len(text) or not text[end:].strip(" \t\n\r"):
        return value
    return _std_decode(text)


def _loads_fast(text: str | bytes) -> Any:
    try:
        return _fast_loads(text)  # type: ignore[misc]
    except ValueError:
        return _loads_fallback(text)


loads: Callable[[str | bytes], Any] = _loads_fast if _fast_loads is not None else _loads_fallback
"""Decode one JSON document (str or UTF-8 bytes). Raises ValueError (or RecursionError, which callers
count as ``too_deep``) on bad input."""


def decode(raw: str | bytes) -> Event:
    """One line → a validated Event. Raises InvalidEvent with a stable ``reason`` for skip counts."""
    if isinstance(raw, bytes) and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    elif isinstance(raw, str) and raw.startswith("\ufeff"):
        raw = raw[1:]
    try:
        data = loads(raw)
    except RecursionError:
        raise InvalidEvent("too_deep", "JSON nested too deeply") from None
    except ValueError as exc:
        truncated = not (raw.endswith(b"\n") if isinstance(raw, bytes) else raw.endswith("\n"))
        raise InvalidEvent("truncated" if truncated else "invalid_json", str(exc)) from None
    return event_from_dict(data)


def digest(value: Any) -> str | None:
    """A short stable hash of tool arguments or results. Raw values never leave the process; the hash is
    enough to tell "the same call again" from a new one. Lone surrogates hash like any other code point."""
    if value is None:
        return None
    try:
        if value.__class__ is str:
            data = value.encode("utf-8", "surrogatepass")
        elif value.__class__ is bytes:
            data = value
        else:
            data = _canonical_fast(value).encode("utf-8", "surrogatepass")
        return blake2b(data, digest_size=8).hexdigest()
    except Exception:
        try:
            return blake2b(repr(value).encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
        except Exception:
            return None


def finite_json(value: Any) -> Any:
    """``value`` with every NaN and ±Inf as None (a detector's or a query's arithmetic on extreme but valid
    input) and every lone surrogate (an id read from a ``\\ud800`` escape) as U+FFFD, as the recorder writes
    them: what ``--json`` output prints stays standard JSON that strict decoders (orjson, replay's) accept."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _whole_text(value)
    if isinstance(value, dict):
        return {_whole_text(k) if isinstance(k, str) else k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def _whole_text(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:   # pair what pairs, replace the rest (as _fallback_encode)
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
