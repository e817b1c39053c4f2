"""Settings, read once from ``AGENTVIGIL_*`` environment variables when a Monitor is created. Keyword
arguments to ``Monitor`` win over the environment. Invalid values are logged (with what is valid) and
replaced by the default: configuration must never crash the agent."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields, replace

log = logging.getLogger("agentvigil")

ENV = {
    "record_dir": ("AGENTVIGIL_RECORD_DIR", "Directory for NDJSON flight-recorder sessions; unset = off."),
    "loop_action": ("AGENTVIGIL_LOOP_ACTION", "record (default) or raise: raise LoopDetected at the next "
                    "boundary after a loop detection."),
    "loop_max_repeats": ("AGENTVIGIL_LOOP_MAX_REPEATS", "Repeats of the same call that make a loop (3)."),
    "loop_window": ("AGENTVIGIL_LOOP_WINDOW", "Calls within which repeats chain (20)."),
    "loop_sequence_repeats": ("AGENTVIGIL_LOOP_SEQUENCE_REPEATS", "Back-to-back repeats of a sequence (3)."),
    "cost_spike_factor": ("AGENTVIGIL_COST_SPIKE_FACTOR", "Run cost / baseline that is a spike (3.0)."),
    "cost_baseline_runs": ("AGENTVIGIL_COST_BASELINE_RUNS", "Finished runs in the rolling median (50)."),
    "cost_min_runs": ("AGENTVIGIL_COST_MIN_RUNS", "Runs before the baseline is used (5)."),
    "heartbeat_interval": ("AGENTVIGIL_HEARTBEAT_INTERVAL", "Seconds between liveness ticks (5)."),
    "capture_content": ("AGENTVIGIL_CAPTURE_CONTENT", "true: put raw tool arguments on spans (off; "
                        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT is honoured too)."),
}


@dataclass(frozen=True)
class Settings:
    record_dir: str | None = None
    loop_action: str = "record"
    loop_max_repeats: int = 3
    loop_window: int = 20
    loop_sequence_repeats: int = 3
    cost_spike_factor: float = 3.0
    cost_baseline_runs: int = 50
    cost_min_runs: int = 5
    heartbeat_interval: float = 5.0
    capture_content: bool = False

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        values = {}
        defaults = cls()
        for f in fields(cls):
            raw = os.environ.get(ENV[f.name][0])
            if raw is None or raw == "":
                continue
            parsed = _parse(f.name, raw, getattr(defaults, f.name))
            if parsed is not _INVALID:
                values[f.name] = parsed
        if "capture_content" not in values:
            raw = os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
            values["capture_content"] = raw.strip().lower() in ("1", "true", "yes", "on")
        settings = replace(defaults, **values)
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
        if settings.loop_action not in ("record", "raise"):
            log.warning("agentvigil: loop_action must be 'record' or 'raise', got %r; using 'record'",
                        settings.loop_action)
            settings = replace(settings, loop_action="record")
        return settings


_INVALID = object()


def _parse(name: str, raw: str, default):
    env = ENV[name][0]
    try:
        if isinstance(default, bool):
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if isinstance(default, int):
            value = int(raw)
            if value < 1:
                raise ValueError("expected a positive integer")
            return value
        if isinstance(default, float):
            value = float(raw)
            if not value > 0:
                raise ValueError("expected a positive number")
            return value
        return raw
    except ValueError as exc:
        log.warning("agentvigil: ignoring %s=%r (%s); using %r", env, raw, exc, default)
        return _INVALID
