"""One codec for every writer and reader: Event ↔ one JSON line, and the digests of tool arguments/results.

Whatever the recorder writes, ``replay``, ``watch`` and ``supervise`` read back: lines are written with the
stdlib encoder (``ensure_ascii``, so a lone surrogate becomes a ``\\udXXX`` escape instead of a broken
byte), and read with orjson when it is installed, falling back to the stdlib decoder for the rare line
orjson refuses (lone surrogates, very deep nesting is refused by both and counted).
"""

from __future__ import annotations

import json
from hashlib import blake2b
from typing import Any, Callable

from .events import Event, InvalidEvent, event_from_dict

_std_decode = json.JSONDecoder().decode  # skips json.loads' encoding detection on str lines

try:  # optional (`pip install agentvigil[fast]`): ~2.5x faster decoding
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - depends on the environment
    _fast_loads = None  # type: ignore[assignment]

# Built once: json.dumps with options builds a new encoder per call (~1 µs on the hot path).
_line_encoder = json.JSONEncoder(separators=(",", ":"), default=str).encode
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=repr).encode


def encode(event: Event) -> str:
    """The event as one compact JSON object (no newline); ``None`` fields omitted."""
    return _line_encoder(event.to_dict())


def _loads_fallback(text: str | bytes) -> Any:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
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
            data = _canonical(value).encode("utf-8", "surrogatepass")
        return blake2b(data, digest_size=8).hexdigest()
    except Exception:
        try:
            return blake2b(repr(value).encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
        except Exception:
            return None
