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
from typing import Any

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
                         "tool_name", "args_hash", "result_hash", "status", "error_kind", "provider", "model",
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
    Hot in ``replay``: one dict lookup and one class check per field."""
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
        if cls is NoneType:
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


_FIELD_SET = frozenset(_FIELD_NAMES)
