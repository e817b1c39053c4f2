"""Settings: every ``AGENTVIGIL_*`` environment variable is read here, through one parser for numbers,
booleans and durations. Keyword arguments to ``Monitor`` win over the environment. Invalid values are
logged once (with what is valid), counted, and replaced by the default: configuration never crashes the
agent."""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, fields, replace
from typing import Any

log = logging.getLogger("agentvigil")

ENV = {
    "record_dir": ("AGENTVIGIL_RECORD_DIR", "Directory for NDJSON flight-recorder sessions; unset = off."),
    "loop_action": ("AGENTVIGIL_LOOP_ACTION", "record (default) or raise: raise LoopDetected at the next "
                    "boundary after a loop detection."),
    "loop_max_repeats": ("AGENTVIGIL_LOOP_MAX_REPEATS", "Repeats of the same call that make a loop (3)."),
    "loop_window": ("AGENTVIGIL_LOOP_WINDOW", "Calls within which repeats chain (20)."),
    "loop_sequence_repeats": ("AGENTVIGIL_LOOP_SEQUENCE_REPEATS", "Back-to-back repeats of a sequence (3)."),
    "cost_spike_factor": ("AGENTVIGIL_COST_SPIKE_FACTOR", "Run cost / baseline that is a spike (3.0)."),
    "cost_baseline_runs": ("AGENTVIGIL_COST_BASELINE_RUNS", "Finished runs in the rolling median (50; at most 200)."),
    "cost_min_runs": ("AGENTVIGIL_COST_MIN_RUNS", "Runs before the baseline is used (5)."),
    "heartbeat_interval": ("AGENTVIGIL_HEARTBEAT_INTERVAL", "Seconds between liveness ticks (5)."),
    "agent": ("AGENTVIGIL_AGENT", "Agent name for SDK calls made outside any run (else OTEL_SERVICE_NAME, "
              "else default)."),
    "config_file": ("AGENTVIGIL_CONFIG", "A .agent-watch.json file: detector thresholds and actions, "
                    "in-process as in watch."),
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
    agent: str | None = None
    config_file: str | None = None
    capture_content: bool = False

    @classmethod
    def from_env(cls, **overrides: Any) -> "Settings":
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
        settings = settings._checked(defaults)
        if settings.loop_action not in ("record", "raise"):
            log.warning("agentvigil: loop_action must be 'record' or 'raise', got %r; using 'record'",
                        settings.loop_action)
            settings = replace(settings, loop_action="record")
        return settings

    def _checked(self, defaults: "Settings") -> "Settings":
        """Keyword arguments get the same checks as the environment: a bad one is logged and replaced."""
        bad: dict[str, Any] = {}
        for f in fields(self):
            value, default = getattr(self, f.name), getattr(defaults, f.name)
            if isinstance(default, bool):
                # capture_content="false" must not be truthy: a switch given as text is read as the
                # environment reads it, anything else that is not a bool is refused (the default: off)
                if not isinstance(value, bool):
                    try:
                        parsed: bool | None = parse_bool(value) if isinstance(value, str) else None
                    except ValueError:
                        parsed = None
                    if parsed is None:
                        _invalid(f.name, value, "expected true or false", default)
                    bad[f.name] = default if parsed is None else parsed
                continue
            if value is None or f.name in ("loop_action", "record_dir", "agent", "config_file"):
                continue
            least = _AT_LEAST.get(f.name)
            # the range first: it compares an int of any size exactly, where isfinite would overflow
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= MAX_SECONDS
                  and math.isfinite(value) and (not isinstance(default, int) or float(value).is_integer())
                  and (least is None or value >= least))
            if not ok:
                why = (f"expected a whole number from {least} to {MAX_SECONDS:.0f}" if least is not None
                       else "expected a positive finite number")
                _invalid(f.name, value, why, default)
                bad[f.name] = default
            elif isinstance(default, int) and not isinstance(value, int):
                bad[f.name] = int(value)
        return replace(self, **bad) if bad else self


_INVALID = object()
# Lower bounds beyond "positive" (LoopPolicy's): a loop is a call seen twice at least, a sequence repeated twice.
_AT_LEAST = {"loop_max_repeats": 2, "loop_sequence_repeats": 2}
_warned: set[str] = set()
MAX_SECONDS = 86_400.0 * 365   # a finite ceiling: threads wait with timeouts, inf would stop them for good


# Called on every invalid value; agentvigil._safety counts them in agentvigil_internal_errors_total (kept as a
# hook so this module, read by everything, imports nothing of ours).
on_invalid: list[Any] = []


def _invalid(name: str, raw: object, why: str, default: object) -> object:
    if name not in _warned:
        _warned.add(name)
        log.warning("agentvigil: ignoring %s=%r (%s); using %r", name, raw, why, default)
    for hook in on_invalid:
        try:
            hook()
        except Exception:  # pragma: no cover - counting must not raise either
            pass
    return _INVALID


def report_invalid(name: str, raw: object, why: str, default: object) -> None:
    """For settings read elsewhere (e.g. ``AGENTVIGIL_LABELS``): logged once, counted, the default used."""
    _invalid(name, raw, why, default)


def parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def parse_positive_int(raw: str) -> int:
    value = int(raw.strip())
    if value < 1:
        raise ValueError("expected a positive integer")
    return value


def parse_positive_float(raw: str) -> float:
    value = float(raw.strip())
    if not math.isfinite(value) or value <= 0 or value > MAX_SECONDS:
        raise ValueError("expected a positive finite number")
    return value


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(raw: object, allow_zero: bool = False, maximum: float = MAX_SECONDS) -> float:
    """The one duration parser: ``500ms``, ``30s``, ``10m``, ``1.5h``, ``2d``, or a number of seconds.
    Finite, at most ``maximum`` (a year: what a timer may wait), greater than 0 (or 0 itself with
    ``allow_zero``, meaning "off")."""
    if isinstance(raw, bool):
        raise ValueError("expected a duration like 30s, 10m or 1h")
    if isinstance(raw, (int, float)):
        value = float(raw)
    else:
        match = _DURATION.match(str(raw))
        if not match:
            raise ValueError(f"expected a duration like 30s, 10m or 1h, got {raw!r}")
        value = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(value) or value > maximum or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"must be {'at least 0' if allow_zero else 'greater than 0'} and at most {maximum:g}s")
    return value


def _env(name: str, parse: Any, default: Any) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse(raw)
    except (ValueError, TypeError, OverflowError) as exc:
        _invalid(name, raw, str(exc), default)
        return default


def env_int(name: str, default: int) -> int:
    return _env(name, parse_positive_int, default)


def env_float(name: str, default: float) -> float:
    return _env(name, parse_positive_float, default)


def env_bool(name: str, default: bool) -> bool:
    return _env(name, parse_bool, default)


def env_duration(name: str, default: float, allow_zero: bool = False) -> float:
    return _env(name, lambda raw: parse_duration(raw, allow_zero), default)


# Label caps (docs/fleet.md#series): values past a cap fold into __overflow__, counted per label. An agent costs
# ~50 series plus ~18 per tool and ~23 per model (the histograms dominate), so 20 agent kinds of 5 tools and 2
# models stay near 4,100 series on a pod, whatever the number of workers.
LABEL_CAPS = {
    "label": ("AGENTVIGIL_MAX_LABEL_VALUES", 200, "Distinct values per label before __overflow__."),
    "agent": ("AGENTVIGIL_MAX_AGENTS", 20, "Distinct agent names per process and per pod (at most the label "
              "cap): an agent is a kind, its replicas are told apart by instance."),
    "tool/agent": ("AGENTVIGIL_MAX_TOOLS_PER_AGENT", 25, "Distinct tools of one agent."),
    "model/agent": ("AGENTVIGIL_MAX_MODELS_PER_AGENT", 10, "Distinct models of one agent."),
}


def label_caps() -> dict[str, int]:
    """The label caps, keyed as LABEL_CAPS; an invalid value is logged, counted and replaced by the default."""
    return {key: env_int(name, default) for key, (name, default, _) in LABEL_CAPS.items()}


def env_str(name: str, default: str | None = None) -> str | None:
    raw = os.environ.get(name)
    return default if raw is None or raw == "" else raw


def _parse(name: str, raw: str, default: Any) -> Any:
    env = ENV[name][0]
    try:
        if isinstance(default, bool):
            return parse_bool(raw)
        if isinstance(default, int):
            return parse_positive_int(raw)
        if isinstance(default, float):
            return parse_duration(raw) if name == "heartbeat_interval" else parse_positive_float(raw)
        return raw
    except (ValueError, OverflowError) as exc:
        return _invalid(env, raw, str(exc), default)
