"""Replay recorded sessions through the same Judge the Monitor uses in-process.

Bad input never stops a replay and never loses valid events: a line that is not JSON, is truncated, or is
not a valid event is skipped and counted by reason, with its line number available for messages.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

from . import events as ev
from .config import Settings
from .detect import CostPolicy, Judge
from .events import Event, InvalidEvent, event_from_dict
from .signals.loops import LoopPolicy

EVENTS_FILE = "events.ndjson"

try:  # optional (`pip install agentvigil[fast]`): 2.5× faster decoding; the stdlib decoder otherwise
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - depends on the environment
    _loads = json.JSONDecoder().decode  # str lines: skips json.loads' encoding detection
# Recorded guard facts that replay reports as they are (they depend on wall-clock state we cannot re-derive).
_GUARD_DETECTORS = {ev.BREAKER_TRANSITION: "breaker", ev.BUDGET_EXCEEDED: "budget", ev.KILL: "kill"}
_JUDGED = frozenset({ev.TOOL_END, ev.LLM_CALL, ev.RUN_END})


@dataclass
class ReplayStats:
    sessions: int = 0
    events: int = 0
    detections: int = 0
    skipped: Counter = field(default_factory=Counter)
    first_errors: list = field(default_factory=list)  # (path, line number, reason, message), first 20

    def skip(self, path: str, lineno: int, reason: str, message: str) -> None:
        self.skipped[reason] += 1
        if len(self.first_errors) < 20:
            self.first_errors.append((path, lineno, reason, message))


def find_event_files(path: str) -> list[str]:
    """events.ndjson files under ``path``: the file itself, a session dir, or a dir of sessions. Sorted by
    the session's start (meta.json started_at, else file mtime) so baselines build in time order."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no such file or directory: {path}")
    direct = os.path.join(path, EVENTS_FILE)
    if os.path.isfile(direct):
        return [direct]
    found = []
    for entry in os.scandir(path):
        candidate = os.path.join(entry.path, EVENTS_FILE)
        if entry.is_dir() and os.path.isfile(candidate):
            found.append(candidate)
    return sorted(found, key=_session_start)


def _session_start(events_path: str) -> float:
    meta = os.path.join(os.path.dirname(events_path), "meta.json")
    try:
        with open(meta, encoding="utf-8") as fh:
            return float(json.load(fh)["started_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return os.path.getmtime(events_path)


def read_events(path: str, stats: ReplayStats) -> Iterator[Event | dict]:
    """Yield events of one NDJSON file. Judged types come as Event objects; other valid lines as their
    dicts (cheaper, and enough for reporting)."""
    loads = _loads
    event_types = ev.EVENT_TYPES
    with open(path, encoding="utf-8", errors="replace", newline="\n") as fh:
        lineno = 0
        for raw in fh:
            lineno += 1
            if not raw.strip():
                continue
            try:
                data = loads(raw)
            except ValueError as exc:
                reason = "truncated" if not raw.endswith("\n") else "invalid_json"
                stats.skip(path, lineno, reason, str(exc))
                continue
            kind = data.get("event_type") if data.__class__ is dict else None
            if kind in _JUDGED:
                try:
                    event = event_from_dict(data)
                except InvalidEvent as exc:
                    stats.skip(path, lineno, exc.reason, str(exc))
                    continue
                stats.events += 1
                yield event
            elif kind in event_types:
                ts = data.get("ts")
                if ts.__class__ not in (int, float):
                    stats.skip(path, lineno, "bad_field", f"ts must be a number, got {ts!r}")
                    continue
                stats.events += 1
                yield data
            else:
                reason = "not_an_object" if data.__class__ is not dict else "unknown_event_type"
                stats.skip(path, lineno, reason, f"line is not a known event: {str(data)[:80]}")


def judge_for(settings: Settings) -> Judge:
    return Judge(LoopPolicy(max_repeats=settings.loop_max_repeats, window=settings.loop_window,
                            sequence_repeats=settings.loop_sequence_repeats),
                 CostPolicy(spike_factor=settings.cost_spike_factor, baseline_runs=settings.cost_baseline_runs,
                            min_runs=settings.cost_min_runs))


def detection_record(event: Event | dict) -> dict:
    """The JSON object printed per detection."""
    get = event.get if isinstance(event, dict) else (lambda k: getattr(event, k))
    kind = get("event_type")
    if kind == ev.DETECTION:
        detector, detail = get("detector"), get("detail") or {}
    else:
        detector = _GUARD_DETECTORS[kind]
        detail = dict(get("detail") or {})
        for key in ("name", "state", "reason", "token_count"):
            if get(key) is not None:
                detail[key] = get(key)
    return {"ts": get("ts"), "session_id": get("session_id"), "agent_id": get("agent_id"), "run_id": get("run_id"),
            "task_id": get("task_id"), "step_index": get("step_index"), "detector": detector, "detail": detail}


def replay(path: str, settings: Settings | None = None, stats: ReplayStats | None = None) -> Iterator[dict]:
    """Yield one detection record per detection, session by session (a fresh Judge per session, as
    in-process: one Monitor, one session)."""
    settings = settings or Settings.from_env()
    stats = stats if stats is not None else ReplayStats()
    for events_path in find_event_files(path):
        stats.sessions += 1
        judge = judge_for(settings)
        for event in read_events(events_path, stats):
            if event.__class__ is dict:
                if event["event_type"] in _GUARD_DETECTORS:
                    stats.detections += 1
                    yield detection_record(event)
                continue
            for detection in judge.feed(event):
                stats.detections += 1
                yield detection_record(detection)
