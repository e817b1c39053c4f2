"""The session layout, one for every writer and reader: ``<dir>/<session_id>/meta.json`` and
``<dir>/<session_id>/events.ndjson``. Reading meta.json never fails: a missing, broken or hostile file
(larger than ``MAX_META_BYTES``; a FIFO, device or directory, which is never opened for a blocking read)
reads as None, and every field is checked by type before use."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from .files import read_regular

EVENTS_FILE = "events.ndjson"
META_FILE = "meta.json"
DEFAULT_DIR = ".agentvigil/sessions"
MAX_META_BYTES = 64 * 1024


def read_meta(directory: str) -> dict | None:
    """meta.json of a session directory as a flat dict, or None."""
    try:   # a regular file of at most MAX_META_BYTES, else OSError (NotRegularFile, FileTooLarge)
        raw = read_regular(os.path.join(directory, META_FILE), MAX_META_BYTES)
        meta = json.loads(raw.decode("utf-8", "replace"))
    except (OSError, ValueError, RecursionError):
        return None
    return meta if isinstance(meta, dict) else None


def meta_number(meta: dict | None, key: str) -> float | None:
    value = (meta or {}).get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:   # an int past the largest float
        return None
    return value if math.isfinite(value) else None


def meta_pid(meta: dict | None, key: str = "pid") -> int | None:
    """A pid that can be signalled: an int in 2..2**22 (never 0, 1 or a group), else None."""
    value = (meta or {}).get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 < value <= 4_194_304:
        return None
    return value


def meta_str(meta: dict | None, *keys: str) -> str | None:
    for key in keys:
        value = (meta or {}).get(key)
        if isinstance(value, str) and value:
            return value
    return None


def session_start(events_path: str) -> float:
    """When a session started: meta.json started_at, else the file's mtime."""
    started = meta_number(read_meta(os.path.dirname(events_path)), "started_at")
    if started is not None:
        return started
    try:
        return os.path.getmtime(events_path)
    except OSError:
        return 0.0


def find_event_files(path: str) -> list[str]:
    """events.ndjson files under ``path``: the file itself, a session dir, or a dir of sessions. Sorted by
    the session's start so baselines build in time order."""
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
    return sorted(found, key=lambda p: (session_start(p), p))


def describe(meta: dict | None) -> dict[str, Any]:
    """The fields of meta.json the commands use, type-checked."""
    return {"agent": meta_str(meta, "agent", "agent_name"), "pid": meta_pid(meta),
            "uid": meta_pid(meta, "uid") if isinstance((meta or {}).get("uid"), int) else None,
            "started_at": meta_number(meta, "started_at"),
            "process_start_time": meta_number(meta, "process_start_time"), "host": meta_str(meta, "host")}
