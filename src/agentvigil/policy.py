"""``.agent-watch.json`` (seed 004's format, extended) and CLI flags → ``WatchConfig``.

Every error names the offending key (``watchers.cost.max_dollars: expected a number, got "five"``). CLI flags
win over the file. See docs/watch.md for the format.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .settings import parse_duration as _parse_duration

ACTIONS = ("terminal", "file", "webhook", "kill")
DEFAULT_ALERTS_LOG = ".agentvigil/alerts.ndjson"
DEFAULT_SCOPE_POLICY = ".agent-scope.json"

# watcher -> {key: (type, default)}; every watcher also takes "alert" and "enabled".
WATCHER_PARAMS: dict[str, dict[str, tuple[type, object]]] = {
    "retry": {"max": (int, 5)},
    "cost": {"max_dollars": (float, 10.0)},
    "scope": {"policy": (str, DEFAULT_SCOPE_POLICY)},
    "duration": {"max_minutes": (float, 30.0), "max_seconds": (float, None)},
    "loop": {"sequence_length": (int, 3), "max_repeats": (int, 3)},
    "silence": {"max_seconds": (float, 30.0)},
    "budget": {"max_tokens": (int, None)},
    # the components (loops: repeat_call/same_result/repeated_sequence; cost_over_baseline); None: the
    # environment's setting of the same name (AGENTVIGIL_LOOP_MAX_REPEATS, ...), whose defaults are 3, 20, 3,
    # 3.0, 50 (at most 200) and 5
    "detectors": {"loop_max_repeats": (int, None), "loop_window": (int, None), "loop_sequence_repeats": (int, None),
                  "cost_spike_factor": (float, None), "cost_baseline_runs": (int, None),
                  "cost_min_runs": (int, None)},
    "correlated": {"window_seconds": (float, 60.0), "min_watchers": (int, 2)},
    # docs/detection.md says what each threshold does and how the defaults were chosen
    "stuck": {"window": (int, 8), "on_score": (float, 0.75), "off_score": (float, 0.45), "hold": (int, 6),
              "identical_calls": (int, 6), "same_errors": (int, 5), "min_steps": (int, 8),
              "similar": (float, 0.9), "empty_weight": (float, 0.25), "distinct_share": (float, 0.4),
              "recurrence_hold": (int, 1), "same_outputs": (int, 8),
              "same_results": (int, 12)},
    "runaway": {"quantile": (float, 0.95), "length_factor": (float, 2.5), "spend_factor": (float, 2.0),
                "min_runs": (int, 20), "baseline_runs": (int, 200), "limit_fraction": (float, 0.8),
                "limit_distinct": (float, 0.75),
                "state_file": (str, None), "hold": (int, 2), "slope_window": (int, 8), "slope_factor": (float, 2.0),
                "min_slope": (float, 500.0), "slope_horizon": (int, 10), "context_window": (int, None),
                "unfinished_share": (float, 0.95), "unfinished_runs": (int, 10)},
}
DEFAULT_ACTIONS: dict[str, tuple[str, ...]] = {}   # every watcher alerts on the terminal; kill only when asked
WEBHOOK_PARAMS = {"url": str, "events": list, "slack": bool, "timeout_seconds": float, "retries": int}
KILL_PARAMS = {"grace_seconds": float}
SESSION_PARAMS = {"idle_seconds": float}
TOP_LEVEL = ("watchers", "webhook", "alerts_log", "kill", "sessions")
MAX_KILL_GRACE = 3600.0        # kill.grace_seconds / --kill-grace: at most an hour between SIGTERM and SIGKILL
MAX_WEBHOOK_TIMEOUT = 300.0    # webhook.timeout_seconds: per request, and what closing the sender may wait
MAX_PID = 2**31 - 1            # --pid: what a pid_t holds
MAX_COUNT = 10**12             # any integer threshold (counts, tokens, windows): what the detectors can size
MAX_SEQUENCE_LENGTH = 1000     # loop.sequence_length: the loop watcher keeps 2 × this many counters per run
# sessions.idle_seconds: watch --all releases a session with no process to watch after this long without a
# byte written (20 × the silence watcher's 30 s); at least a second, as each resume reads the file again
DEFAULT_SESSION_IDLE = 600.0
MIN_SESSION_IDLE = 1.0
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


class ConfigError(ValueError):
    """Bad configuration; ``key`` is the dotted path of the offending key."""

    def __init__(self, key: str, message: str):
        super().__init__(_printable(f"{key}: {message}"))   # one line, whatever the key or value holds
        self.key = key


@dataclass
class WatcherSpec:
    enabled: bool = True
    actions: tuple[str, ...] = ("terminal",)
    params: dict = field(default_factory=dict)
    explicit: bool = False   # named in the config file or by a flag (scope: a missing policy is then an error)


@dataclass
class WatchConfig:
    watchers: dict[str, WatcherSpec] = field(default_factory=dict)
    webhook_url: str | None = None
    webhook_events: frozenset[str] | None = None    # None: every watcher's breaches
    webhook_slack: bool = False
    webhook_timeout: float = 5.0
    webhook_retries: int = 3
    alerts_log: str = DEFAULT_ALERTS_LOG
    kill_grace: float = 5.0
    session_idle: float = DEFAULT_SESSION_IDLE

    @classmethod
    def defaults(cls) -> WatchConfig:
        watchers = {}
        for name, params in WATCHER_PARAMS.items():
            watchers[name] = WatcherSpec(actions=DEFAULT_ACTIONS.get(name, ("terminal",)),
                                         params={k: default for k, (_, default) in params.items()})
        return cls(watchers=watchers)

    @classmethod
    def from_dict(cls, data: object, base_dir: str = ".") -> WatchConfig:
        config = cls.defaults()
        if not isinstance(data, dict):
            raise ConfigError("(top level)", f"expected a JSON object, got {_kind(data)}")
        for key in data:
            if key not in TOP_LEVEL:
                raise ConfigError(key, f"unknown key; valid: {', '.join(TOP_LEVEL)}")
        watchers = data.get("watchers", {})
        if not isinstance(watchers, dict):
            raise ConfigError("watchers", f"expected an object, got {_kind(watchers)}")
        for name, body in watchers.items():
            config._apply_watcher(name, body, base_dir)
        if "webhook" in data:
            config._apply_webhook(data["webhook"])
        if "alerts_log" in data:
            config.alerts_log = check_path("alerts_log", _typed("alerts_log", data["alerts_log"], str))
        for _, path, value in _section("kill", data.get("kill", {}), KILL_PARAMS):
            config.kill_grace = check_kill_grace(path, _positive(path, value))
        if "sessions" in data:
            config._apply_sessions(data["sessions"])
        return config

    @classmethod
    def load(cls, path: str) -> WatchConfig:
        if "\0" in path:
            raise ConfigError(path, "cannot read: the path contains a NUL byte")
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except OSError as exc:
            raise ConfigError(path, f"cannot read: {exc.strerror or exc}") from None
        except RecursionError:
            raise ConfigError(path, "not valid JSON: nested too deeply") from None
        except ValueError as exc:
            raise ConfigError(path, f"not valid JSON: {exc}") from None
        return cls.from_dict(data, os.path.dirname(os.path.abspath(path)))

    def _apply_watcher(self, name: str, body: object, base_dir: str) -> None:
        where = f"watchers.{name}"
        if name not in WATCHER_PARAMS:
            raise ConfigError(where, f"unknown watcher; valid: {', '.join(WATCHER_PARAMS)}")
        if not isinstance(body, dict):
            raise ConfigError(where, f"expected an object, got {_kind(body)}")
        spec = self.watchers[name]
        spec.explicit = True
        params = WATCHER_PARAMS[name]
        for key, value in body.items():
            path = f"{where}.{key}"
            if key == "alert":
                spec.actions = parse_actions(value, path)
            elif key == "enabled":
                spec.enabled = _typed(path, value, bool)
            elif key in params:
                typ = params[key][0]
                value = _typed(path, value, typ)
                if typ in (int, float):
                    value = _positive(path, value)
                if typ is int and value > MAX_COUNT:
                    raise ConfigError(path, f"must be at most {MAX_COUNT:.0e}, got {_shown(value)}")
                if name == "scope" and key == "policy" and not os.path.isabs(value):
                    value = os.path.join(base_dir, value)
                if typ is str:   # scope.policy, runaway.state_file: files
                    value = check_path(path, value)
                spec.params[key] = value
            else:
                valid = ", ".join([*params, "alert", "enabled"])
                raise ConfigError(path, f"unknown key; valid: {valid}")
        if name == "loop":
            if spec.params["sequence_length"] < 2:
                raise ConfigError(f"{where}.sequence_length", "must be at least 2")
            if spec.params["sequence_length"] > MAX_SEQUENCE_LENGTH:
                raise ConfigError(f"{where}.sequence_length", f"must be at most {MAX_SEQUENCE_LENGTH}")
            if spec.params["max_repeats"] < 2:
                raise ConfigError(f"{where}.max_repeats", "must be at least 2")
        for key in ("on_score", "off_score", "similar", "empty_weight", "quantile", "limit_fraction",
                    "distinct_share", "limit_distinct"):
            if key in params and key in body and not 0 < spec.params[key] <= 1:
                raise ConfigError(f"{where}.{key}", f"must be in (0, 1], got {spec.params[key]}")
        if name == "detectors":
            for key, least in (("loop_max_repeats", 2), ("loop_sequence_repeats", 2)):
                if key in body and spec.params[key] < least:
                    raise ConfigError(f"{where}.{key}", f"must be at least {least}")
        if name == "stuck" and not 2 <= spec.params["window"] <= 1024:
            raise ConfigError(f"{where}.window", "must be between 2 and 1024")
        if name == "correlated" and spec.params["min_watchers"] < 2:
            raise ConfigError(f"{where}.min_watchers", "must be at least 2")

    def _apply_sessions(self, body: object) -> None:
        for _, path, value in _section("sessions", body, SESSION_PARAMS):
            self.session_idle = check_session_idle(path, _positive(path, value))

    def _apply_webhook(self, body: object) -> None:
        for key, path, value in _section("webhook", body, WEBHOOK_PARAMS):
            if key == "url":
                self.webhook_url = check_url(path, value)
            elif key == "events":
                for i, name in enumerate(value):
                    if not isinstance(name, str) or name not in WATCHER_PARAMS:
                        shown = repr(name[:80]) if isinstance(name, str) else _shown(name)
                        raise ConfigError(f"{path}[{i}]", f"unknown watcher {shown}; valid: "
                                                          f"{', '.join(WATCHER_PARAMS)}")
                self.webhook_events = frozenset(value)
            elif key == "slack":
                self.webhook_slack = value
            elif key == "timeout_seconds":
                value = _positive(path, value)
                if value > MAX_WEBHOOK_TIMEOUT:
                    raise ConfigError(path, f"must be at most {MAX_WEBHOOK_TIMEOUT:g} seconds, got {value:g}")
                self.webhook_timeout = value
            elif key == "retries":
                if value < 0:
                    raise ConfigError(path, "must be >= 0")
                self.webhook_retries = value

    # -- CLI flags win over the file ------------------------------------------------------------------------
    def override(self, name: str, key: str, value: object) -> None:
        if value is None:
            return
        spec = self.watchers[name]
        spec.params[key] = value
        spec.explicit = True

    def set_actions(self, actions: tuple[str, ...], include_correlated: bool = False) -> None:
        for name, spec in self.watchers.items():
            if name != "correlated" or include_correlated:
                spec.actions = actions

    def add_action(self, action: str) -> None:
        for spec in self.watchers.values():
            if action not in spec.actions:
                spec.actions = (*spec.actions, action)

    def uses(self, action: str) -> bool:
        return any(action in spec.actions for spec in self.watchers.values() if spec.enabled)


def parse_actions(value: object, key: str) -> tuple[str, ...]:
    """``"kill"``, ``"terminal,file"`` or ``["file", "webhook"]``."""
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = value
    else:
        raise ConfigError(key, f"expected an action name or a list of them, got {_kind(value)}")
    for item in items:
        if item not in ACTIONS:
            raise ConfigError(key, f"unknown action {item!r}; valid: {', '.join(ACTIONS)}")
    if not items:
        raise ConfigError(key, "no action given")
    return tuple(dict.fromkeys(items))




def parse_duration(text: str, key: str = "duration") -> float:
    """``settings.parse_duration`` with the offending key named in the error."""
    try:
        return _parse_duration(text)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _section(name: str, body: object, params: Mapping[str, type]) -> Iterator[tuple[str, str, Any]]:
    """A config section's keys, checked against ``params`` and typed: (key, its path for errors, value)."""
    if not isinstance(body, dict):
        raise ConfigError(name, f"expected an object, got {_kind(body)}")
    for key, value in body.items():
        path = f"{name}.{key}"
        if key not in params:
            raise ConfigError(path, f"unknown key; valid: {', '.join(params)}")
        yield key, path, _typed(path, value, params[key])


def _typed(key: str, value: object, typ: type) -> Any:
    if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:   # an integer beyond float range (1e400 written out): no threshold
            raise ConfigError(key, f"must be a finite number, got {_shown(value)}") from None
    if typ is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if typ in (str, bool, list, dict) and isinstance(value, typ):
        return value
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list"}
    raise ConfigError(key, f"expected {names.get(typ, typ.__name__)}, got {_shown(value)}")


def _shown(value: object, limit: int = 80) -> str:
    """A value as JSON for an error message: one short line."""
    try:
        text = json.dumps(value)
    except (ValueError, TypeError, RecursionError):
        text = _kind(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _printable(text: str) -> str:
    """Control characters (C0, C1, DEL, bidi overrides, line separators) as escapes: nothing from a file or an
    event moves the cursor, colours the terminal or starts a line of its own."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _positive(key: str, value: Any) -> Any:
    if not 0 < value < math.inf:   # NaN and Infinity (JSON accepts both) are not thresholds
        raise ConfigError(key, f"must be a finite number greater than 0, got {value}")
    return value


def check_positive(key: str, value: Any) -> Any:
    """A threshold given by a flag: finite and greater than 0, as in the config file."""
    return _positive(key, value)


def check_kill_grace(key: str, value: float) -> float:
    if value > MAX_KILL_GRACE:
        raise ConfigError(key, f"must be at most {MAX_KILL_GRACE:g} seconds, got {value:g}")
    return value


def check_session_idle(key: str, value: float) -> float:
    if value < MIN_SESSION_IDLE:
        raise ConfigError(key, f"must be at least {MIN_SESSION_IDLE:g} second, got {value:g}")
    return value


def check_path(key: str, value: str) -> str:
    """A file the watch writes or reads later: refused now rather than at its first use."""
    if "\0" in value:
        raise ConfigError(key, "the path contains a NUL byte")
    if value and os.path.isdir(value):
        raise ConfigError(key, f"{value!r} is a directory, expected a file")
    return value


def check_url(key: str, value: str) -> str:
    """An http(s) URL the webhook can post to."""
    from urllib.parse import urlsplit

    if not re.match(r"^https?://", value):
        raise ConfigError(key, f"expected an http:// or https:// URL, got {_shown(value)}")
    if re.search(r"[\x00-\x20\x7f]", value):
        raise ConfigError(key, f"the URL contains a space or a control character: {_shown(value)}")
    try:
        parts = urlsplit(value)
        parts.port   # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ConfigError(key, f"not a valid URL ({exc}): {_shown(value)}") from None
    if not parts.hostname:
        raise ConfigError(key, f"the URL has no host: {_shown(value)}")
    return value


def apply_setting(config: WatchConfig, text: str) -> None:
    """``watcher.key=value`` (a CLI ``--set``): any threshold of ``WATCHER_PARAMS``, or ``sessions.key=value``
    (``SESSION_PARAMS``), typed and checked like the config file."""
    name_key, sep, raw = text.partition("=")
    name, dot, key = name_key.strip().partition(".")
    if not sep or not dot:
        raise ConfigError(text, "expected watcher.key=value, e.g. stuck.hold=4")
    where = f"sessions.{key}" if name == "sessions" else f"watchers.{name}.{key}"
    try:
        value = json.loads(raw)
    except RecursionError:
        raise ConfigError(where, "the value is nested too deeply") from None
    except ValueError:
        value = raw   # a bare string (a path)
    if name == "sessions":
        config._apply_sessions({key: value})
    else:
        config._apply_watcher(name, {key: value}, ".")
