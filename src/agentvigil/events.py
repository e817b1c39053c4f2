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

    Hot in ``replay``. A recording has few shapes (keys, and value classes), so a shape that validated once is
    remembered, under its event type, as a generated function that checks exactly those keys and classes and the
    numeric ranges, and builds the Event positionally. Anything else, and every failure, takes the full check
    below, which names the bad field."""
    if data.__class__ is dict:
        kind = data.get("event_type")
        # Looked up by the event type, not by the tuple of keys: building and hashing that tuple cost more than
        # the rest of the lookup. A shape's function checks the key set itself (see ``_maker``).
        makers = _SHAPES.get(kind) if kind.__class__ is str else None
        if makers is not None:
            try:   # free until raised (3.11+): no check per field for what only a hostile line holds
                for make in makers:
                    event = make(data)
                    if event is not None:
                        return event
            except OverflowError:   # an integer beyond float range (10**400) in a number field:
                pass                # the full check below names it
    event = _checked(data)
    _remember(data)
    return event


def _remember(data: dict) -> None:
    """Remember the shape of a dict that validated. Only shapes of known fields (bounded names, so bounded
    memory) whose classes are what the check saw; at most ``_MAX_SHAPES`` per event type (a file with more
    shapes of one type has the rest take the full check)."""
    if any(k not in _CHECKS for k in data) or any(type(v) is not v.__class__ for v in data.values()):
        return
    keys, classes = tuple(data), tuple(map(type, data.values()))
    shape = frozenset(zip(keys, classes, strict=True))   # in any key order, the same Event
    kind = data["event_type"]
    makers = _SHAPES.setdefault(kind, [])
    known = _SHAPE_KEYS.setdefault(kind, set())
    if shape not in known and len(makers) < _MAX_SHAPES:
        known.add(shape)
        makers.append(_maker(keys, classes))


def _maker(keys: tuple[str, ...], classes: tuple[type, ...]) -> Callable[[dict], Event | None]:
    """A function of a dict with exactly these keys (in any order): the Event when every value has the class
    seen here and passes ``_checked``'s range checks, else None (the caller then runs the full check). The key
    set is checked as the length and a lookup of each key (dict keys are unique, so that is set equality). The
    event type is not checked again: the shape is found under it. As a positional call, about twice as fast as
    matching keyword arguments. Generated from the Event's own field names and the builtin class names only."""
    names = {str: "_str", int: "_int", float: "_float", dict: "_dict", NoneType: "_none"}
    lines = ["def make(d):", f"    if len(d) != {len(keys)}:", "        return None", "    try:"]
    conds = []
    for i, (key, cls) in enumerate(zip(keys, classes, strict=True)):
        lines.append(f"        v{i} = d[{key!r}]")
        if key == "event_type":
            continue
        cond = f"v{i}.__class__ is {names[cls]}"
        if _CHECKS[key] is int and cls is int:
            cond += f" and 0 <= v{i} <= _MAX_INT"
        elif _CHECKS[key] is float and cls is not NoneType:
            cond += f" and _isfinite(v{i})"   # an int beyond float range raises OverflowError: event_from_dict
        elif _CHECKS[key] is dict and cls is dict:
            cond += f" and _finite_tree(v{i})"
        conds.append(f"({cond})")
    lines += ["    except KeyError:", "        return None"]
    index = {key: i for i, key in enumerate(keys)}
    args = ", ".join(f"v{index[name]}" if name in index else "None" for name in _FIELD_NAMES)
    lines.append(f"    if {' and '.join(conds) or 'True'}:")
    lines.append(f"        return Event({args})")
    lines.append("    return None")
    namespace: dict[str, Any] = {"Event": Event, "_MAX_INT": _MAX_INT, "_isfinite": _isfinite,
                                 "_finite_tree": _finite_tree,
                                 "_str": str, "_int": int, "_float": float, "_dict": dict, "_none": NoneType}
    exec("\n".join(lines), namespace)   # source built from known field names and fixed class names only
    return namespace["make"]


def _checked(data: Any) -> Event:
    if data.__class__ is not dict:
        raise InvalidEvent("not_an_object", f"expected a JSON object, got {type(data).__name__}")
    kind = data.get("event_type")
    if kind.__class__ is not str or kind not in EVENT_TYPES:   # a list or an object is unhashable: no lookup
        raise InvalidEvent("unknown_event_type", f"unknown or missing event_type: {kind!r}"[:200])
    ts = data.get("ts")
    if (ts.__class__ is not float and ts.__class__ is not int) or not _finite(ts):
        raise InvalidEvent("bad_field", f"ts must be a finite number, got {_short(ts)}")
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
            if check is float and not _finite(value):
                raise InvalidEvent("bad_field", f"{key} must be a finite number, got {_short(value)}")
            if check is dict and not _finite_tree(value):
                raise InvalidEvent("bad_field", f"{key} must hold finite numbers only (no NaN or Infinity)")
            continue
        raise InvalidEvent("bad_field", f"{key} must be {_CHECK_NAMES[check]}, got {type(value).__name__}")
    if unknown:
        return Event(**{k: v for k, v in data.items() if k in _CHECKS})
    return Event(**data)


def _finite(value: float) -> bool:
    """``math.isfinite``, False for an int beyond float range (10**400) instead of OverflowError."""
    try:
        return _isfinite(value)
    except OverflowError:
        return False


def _finite_tree(value: dict) -> bool:
    """No NaN or Infinity anywhere in ``value`` (a ``detail``: the stdlib decoder accepts both, and JSON
    written back out would not be standard). Integers of any size are numbers JSON can write: kept. A flat
    detail (the usual one) takes one loop; nested values are walked by ``_finite_nested``."""
    for item in value.values():
        cls = item.__class__
        if cls is float:
            if not _isfinite(item):
                return False
        elif cls is dict or cls is list:
            return _finite_nested(value)
    return True


def _finite_nested(value: dict) -> bool:
    """``_finite_tree`` for any nesting: iterative, so whatever depth the decoder accepted is walked without
    recursion."""
    todo: list[Any] = [value]
    pop, push = todo.pop, todo.append
    while todo:
        node = pop()
        for item in (node.values() if node.__class__ is dict else node):
            cls = item.__class__
            if cls is float:
                if not _isfinite(item):
                    return False
            elif cls is dict or cls is list:
                push(item)
    return True


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:40]}...({len(text)} characters)"


NoneType = type(None)
_MAX_INT = 2**63 - 1
_isfinite = math.isfinite
_CHECKS: dict[str, type] = {name: (str if name in _STR_FIELDS else int if name in _INT_FIELDS
                                   else float if name in _NUM_FIELDS else dict) for name in _FIELD_NAMES}
_CHECK_NAMES = {str: "a string", int: "a non-negative integer", float: "a number", dict: "an object"}
# event type -> the checking constructors of the shapes (key sets and value classes) that validated, and those
# shapes. Bounded: a hostile file of ever-new shapes only makes the lists stop growing.
_SHAPES: dict[str, list[Callable[[dict], Event | None]]] = {}
_SHAPE_KEYS: dict[str, set[frozenset[tuple[str, type]]]] = {}
_MAX_SHAPES = 8   # per event type: a recording has 1–4; a hostile one must not make every line try many


_FIELD_SET = frozenset(_FIELD_NAMES)
