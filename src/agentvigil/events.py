"""The one event model: instrumentation produces these, and metrics, spans, detectors, the recorder,
``replay`` and ``watch`` all consume them.

Field names follow the "minimum viable event schema" of runtime-control practice (``agent_id``, ``task_id``,
``correlation_id``, ``step_index``, ``event_type``, ``tool_name``, ``token_count``, ``duration_ms``,
``status``) plus what the health signals need. Serialised as one compact JSON object per line, ``None``
fields omitted. The JSON Schema is ``agentvigil/schema/event.schema.json``; docs in ``docs/events.md``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable

SCHEMA_VERSION = 1

RUN_START = "run_start"
RUN_END = "run_end"
STEP_START = "step_start"
STEP_END = "step_end"
TOOL_START = "tool_start"
TOOL_END = "tool_end"
LLM_START = "llm_start"          # an LLM call began (only for calls timed live; llm_call closes it)
LLM_CALL = "llm_call"
HEARTBEAT = "heartbeat"
BREAKER_TRANSITION = "breaker_transition"
BUDGET_EXCEEDED = "budget_exceeded"
DETECTION = "detection"
KILL = "kill"
GUARD_STATE = "guard_state"      # a breaker or budget reports its state (created, reserve/commit/release)

EVENT_TYPES = frozenset({
    RUN_START, RUN_END, STEP_START, STEP_END, TOOL_START, TOOL_END, LLM_START, LLM_CALL, HEARTBEAT,
    BREAKER_TRANSITION, BUDGET_EXCEEDED, DETECTION, KILL, GUARD_STATE,
})


@dataclass(slots=True)
class Event:
    event_type: str
    ts: float
    agent_id: str | None = None
    session_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    correlation_id: str | None = None
    step_index: int | None = None
    tool_name: str | None = None
    args_hash: str | None = None
    result_hash: str | None = None
    result_fingerprint: str | None = None   # similarity fingerprint of the result (agentvigil.fingerprint)
    status: str | None = None
    error_kind: str | None = None
    duration_ms: float | None = None
    provider: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    token_count: int | None = None
    cost_usd: float | None = None
    name: str | None = None          # breaker or budget name
    state: str | None = None         # breaker state entered
    reason: str | None = None        # breaker trip reason, kill reason, run error
    detector: str | None = None      # for event_type == "detection"
    detail: dict | None = None       # detector details: small, JSON-safe, never raw content
    trace_id: str | None = None      # the OTel trace/span of the scope, when tracing is on (exemplars)
    span_id: str | None = None
    # In-process only, never serialised: the Run/Step/ToolCall/LLMCall that produced the event, so the
    # span sink can hang the span on it and the action sink can stop the right run.
    scope: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {name: value for name in _FIELD_NAMES if (value := getattr(self, name)) is not None}

    def to_json(self) -> str:
        """One JSON line (see ``agentvigil.codec``, which every writer and reader uses)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), default=str)


_FIELD_NAMES = tuple(f.name for f in fields(Event) if f.name != "scope")
_STR_FIELDS = frozenset({"event_type", "agent_id", "session_id", "run_id", "task_id", "correlation_id",
                         "tool_name", "args_hash", "result_hash",
                         "result_fingerprint", "status", "error_kind", "provider", "model",
                         "name", "state", "reason", "detector", "trace_id", "span_id"})
_INT_FIELDS = frozenset({"step_index", "input_tokens", "output_tokens", "cache_read_tokens",
                         "cache_write_tokens", "token_count"})
_NUM_FIELDS = frozenset({"ts", "duration_ms", "cost_usd"})


class InvalidEvent(ValueError):
    """A recorded line that is not a valid event; ``reason`` is a short, stable label for skip counts."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def event_from_dict(data: Any) -> Event:
    """Validate a decoded JSON object and build an Event. Unknown keys are ignored (forward compatible).

    Hot in ``replay``. A recording has few shapes (keys and value classes), so a shape that validated once
    is remembered: its lines then need only the event type and the numeric range checks. Anything else,
    and every failure, takes the full check below, which names the bad field."""
    if data.__class__ is dict:
        shape = _SHAPES.get((tuple(data), tuple(map(type, data.values()))))
        if shape is not None and data["event_type"] in EVENT_TYPES:
            ints, floats, make = shape
            for key in ints:
                if not 0 <= data[key] <= _MAX_INT:
                    break
            else:
                for key in floats:
                    if not _isfinite(data[key]):
                        break
                else:
                    return make(data)
    event = _checked(data)
    if len(_SHAPES) < _MAX_SHAPES:
        _remember(data)
    return event


def _remember(data: dict) -> None:
    """Remember the shape of a dict that validated. Only shapes of known fields (bounded names, so bounded
    memory) whose classes are what the check saw."""
    if any(k not in _CHECKS for k in data) or any(type(v) is not v.__class__ for v in data.values()):
        return
    classes = tuple(map(type, data.values()))
    ints = tuple(k for k, c in zip(data, classes, strict=True) if _CHECKS[k] is int and c is int)
    floats = tuple(k for k, c in zip(data, classes, strict=True) if _CHECKS[k] is float and c is not NoneType)
    _SHAPES[(tuple(data), classes)] = (ints, floats, _constructor(frozenset(data)))


def _constructor(keys: frozenset[str]) -> Callable[[dict], Event]:
    """``Event(**data)`` for dicts with exactly these keys, as a positional call (about twice as fast as
    matching keyword arguments). Generated from the Event's own field names only."""
    args = ", ".join(f"d[{name!r}]" if name in keys else "None" for name in _FIELD_NAMES)
    namespace: dict[str, Any] = {"Event": Event}
    exec(f"def make(d):\n    return Event({args})", namespace)
    return namespace["make"]


def _checked(data: Any) -> Event:
    if data.__class__ is not dict:
        raise InvalidEvent("not_an_object", f"expected a JSON object, got {type(data).__name__}")
    kind = data.get("event_type")
    if kind.__class__ is not str or kind not in EVENT_TYPES:   # a list or an object is unhashable: no lookup
        raise InvalidEvent("unknown_event_type", f"unknown or missing event_type: {kind!r}"[:200])
    ts = data.get("ts")
    if (ts.__class__ is not float and ts.__class__ is not int) or not _isfinite(ts):
        raise InvalidEvent("bad_field", f"ts must be a finite number, got {ts!r}"[:200])
    unknown = False
    for key, value in data.items():
        check = _CHECKS.get(key)
        if check is None:
            unknown = True
            continue
        cls = value.__class__
        if cls is NoneType:   # null is the field left out (it used to reach the range checks and raise TypeError)
            continue
        if cls is check or (check is float and cls is int):
            if check is int and not 0 <= value <= _MAX_INT:
                raise InvalidEvent("bad_field", f"{key} must be a non-negative integer, got {value!r}"[:200])
            if check is float and not _isfinite(value):
                raise InvalidEvent("bad_field", f"{key} must be a finite number, got {value!r}")
            continue
        raise InvalidEvent("bad_field", f"{key} must be {_CHECK_NAMES[check]}, got {type(value).__name__}")
    if unknown:
        return Event(**{k: v for k, v in data.items() if k in _CHECKS})
    return Event(**data)


NoneType = type(None)
_MAX_INT = 2**63 - 1
_isfinite = math.isfinite
_CHECKS: dict[str, type] = {name: (str if name in _STR_FIELDS else int if name in _INT_FIELDS
                                   else float if name in _NUM_FIELDS else dict) for name in _FIELD_NAMES}
_CHECK_NAMES = {str: "a string", int: "a non-negative integer", float: "a number", dict: "an object"}
# (keys, value classes) of dicts that validated -> (int keys, number keys, constructor). Bounded: a hostile file of
# ever-new shapes only makes the cache stop growing.
_SHAPES: dict[tuple[tuple, tuple], tuple[tuple[str, ...], tuple[str, ...], Callable[[dict], Event]]] = {}
_MAX_SHAPES = 1024


_FIELD_SET = frozenset(_FIELD_NAMES)
