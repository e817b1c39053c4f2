"""Supervision policy: plain, frozen values, and the one table that defines every option.

``OPTIONS`` is the single source of truth: each option is a command-line flag (``--cooldown``), a key in
the config file (``cooldown = "5m"``) and a field of ``SupervisePolicy``. Precedence: defaults < config
file < flags. Unknown keys and bad values raise ``ConfigError`` naming the key.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, fields, replace
from typing import Any, Callable

from ..settings import parse_duration as _parse_duration

EXIT_ACTIONS = ("restart", "alert", "ignore")
MODES = ("service", "job")


class ConfigError(ValueError):
    """A bad option: the message names the key (or flag) and says what is valid."""


# -- value parsers --------------------------------------------------------------------------------------
def parse_duration(value: Any) -> float:
    """Seconds from ``300``, ``"300"``, ``"1.5s"``, ``"5m"``, ``"2h"``, ``"1d"``, ``"100ms"``; 0 means off.
    The one duration parser (``agentvigil.settings.parse_duration``)."""
    return _parse_duration(value, allow_zero=True, maximum=_REPORT_WINDOW_MAX)


_REPORT_WINDOW_MAX = 86_400.0 * 365 * 100   # report windows may reach far back; still finite


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected a whole number, got {value!r}")
    number = int(value)
    if number < 0:
        raise ValueError("expected a whole number >= 0")
    return number


def _non_negative_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    number = float(value)
    if not 0 <= number < math.inf:   # NaN and Infinity would turn the check off without a word
        raise ValueError(f"expected a finite number >= 0, got {value!r}")
    return number


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
        return text
    return parse


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    if "\0" in value:   # names, paths, URLs: the child's environment and the OS refuse a NUL
        raise ValueError("the value contains a NUL byte")
    return value


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _port(value: Any) -> int:
    number = _positive_int(value)
    if number > 65535:
        raise ValueError("expected a port number 0-65535")
    return number


@dataclass(frozen=True)
class Option:
    name: str                      # field, config key; the flag is --name-with-dashes
    parse: Callable[[Any], Any]
    default: Any
    help: str
    metavar: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    # identity and plumbing
    Option("agent", _text, "", "agent name for the supervisor's metrics and alerts; also passed to the child "
           "as AGENTVIGIL_AGENT (default: the command's name)", "NAME"),
    Option("mode", _choice(*MODES), "service", "service: any exit is unexpected, exit 0 is a silent exit; "
           "job: exit 0 after a run that ended ok is done (service)", "MODE"),
    Option("record_dir", _text, ".agentvigil/sessions", "where the child records its sessions and the "
           "supervisor its journal (.agentvigil/sessions)", "DIR"),
    Option("port", _port, 9465, "/metrics, /healthz, /readyz on 127.0.0.1 (9465; 0 = any free port)", "P"),
    Option("replicas", _positive_int, 1, "run N copies of CMD, each supervised alone with this policy: its own "
           "child, restarts, journal, and probes on port, port+1, ... (1)", "N"),
    Option("addr", _text, "127.0.0.1", "address to bind (127.0.0.1)", "ADDR"),
    Option("web_config_file", _text, "", "TLS and basic auth for the endpoints: a node_exporter web-config "
           "YAML file (default $AGENTVIGIL_WEB_CONFIG_FILE; docs/metrics-server.md)", "FILE"),
    Option("poll_interval", parse_duration, 0.2, "how often the supervisor looks at the child (0.2s)", "DUR"),
    # the child's health
    Option("heartbeat_interval", parse_duration, 5.0, "liveness tick asked of the child "
           "(AGENTVIGIL_HEARTBEAT_INTERVAL; 5s)", "DUR"),
    Option("liveness_timeout", parse_duration, 60.0, "no heartbeat for this long: liveness lost (60s; 0 = off)",
           "DUR"),
    Option("startup_timeout", parse_duration, 60.0, "the first heartbeat must come within this (60s; 0 = wait "
           "forever, for children without a Monitor)", "DUR"),
    Option("progress_timeout", parse_duration, 600.0, "busy with no completed step or run for this long, "
           "heartbeats fresh: zombie (10m; 0 = off)", "DUR"),
    Option("cost_spike_factor", _non_negative_float, 10.0, "cost of one heartbeat cycle above this × the "
           "rolling baseline: cost spike (10; 0 = off)", "X"),
    Option("baseline_cycles", _positive_int, 50, "active heartbeat cycles in the rolling baseline (50)", "N"),
    Option("min_cycles", _positive_int, 5, "active cycles before the baseline is used (5)", "N"),
    Option("on_liveness_lost", _choice(*EXIT_ACTIONS), "restart", "restart | alert | ignore (restart)", "ACTION"),
    Option("on_zombie", _choice(*EXIT_ACTIONS), "restart", "restart | alert | ignore (restart)", "ACTION"),
    Option("on_cost_spike", _choice(*EXIT_ACTIONS), "restart", "restart | alert | ignore (restart)", "ACTION"),
    # the restart policy
    Option("cooldown", parse_duration, 300.0, "minimum time between two starts of the child (5m)", "DUR"),
    Option("max_restarts", _positive_int, 3, "restarts allowed within --restart-window before giving up (3)",
           "N"),
    Option("restart_window", parse_duration, 3600.0, "window for --max-restarts (1h)", "DUR"),
    Option("stop_grace", parse_duration, 30.0, "after SIGTERM, wait this long before SIGKILL (30s)", "DUR"),
    # escalation
    Option("webhook_url", _text, "", "POST a Slack-compatible JSON message here on incidents and give-up", "URL"),
    Option("alertmanager_url", _text, "", "Alertmanager base URL: alerts go to <URL>/api/v2/alerts", "URL"),
    Option("notify_incidents", _bool, True, "also notify each incident, not only the give-up (true)", "BOOL"),
    Option("alert_ttl", parse_duration, 86400.0, "endsAt of Alertmanager alerts that nobody resolves (24h)",
           "DUR"),
    Option("watchdog", _bool, True, "systemd: sd_notify READY/STATUS/WATCHDOG when NOTIFY_SOCKET is set (true)",
           "BOOL"),
)
OPTION_BY_NAME = {option.name: option for option in OPTIONS}


@dataclass(frozen=True)
class RestartPolicy:
    """When may the child start again? Starts are spaced by ``cooldown``; at most ``max_restarts``
    restarts within ``window``, then give up (and escalate)."""

    cooldown: float = 300.0
    max_restarts: int = 3
    window: float = 3600.0

    def next_start(self, now: float, starts: list[float]) -> float | None:
        """The time the next start may happen, or None to give up. ``starts`` are the times of every
        start so far (the first is the initial start, the rest are restarts)."""
        if not starts:
            return now
        # a window of 0 is refused by SupervisePolicy.validate; a direct caller passing one gets every restart
        # counted (the give-up still happens), never none
        recent_restarts = [t for t in starts[1:] if self.window <= 0 or now - t < self.window]
        if len(recent_restarts) >= self.max_restarts:
            return None
        return max(now, starts[-1] + self.cooldown)


@dataclass(frozen=True)
class HealthPolicy:
    """Thresholds of the health core (``health.py``). 0 turns a check off."""

    heartbeat_interval: float = 5.0
    liveness_timeout: float = 60.0
    startup_timeout: float = 60.0
    progress_timeout: float = 600.0
    cost_spike_factor: float = 10.0
    baseline_cycles: int = 50
    min_cycles: int = 5


@dataclass(frozen=True)
class SupervisePolicy:
    """Everything ``agentvigil supervise`` is told, as plain values."""

    agent: str = ""
    mode: str = "service"
    record_dir: str = ".agentvigil/sessions"
    port: int = 9465
    replicas: int = 1
    addr: str = "127.0.0.1"
    web_config_file: str = ""
    poll_interval: float = 0.2
    heartbeat_interval: float = 5.0
    liveness_timeout: float = 60.0
    startup_timeout: float = 60.0
    progress_timeout: float = 600.0
    cost_spike_factor: float = 10.0
    baseline_cycles: int = 50
    min_cycles: int = 5
    on_liveness_lost: str = "restart"
    on_zombie: str = "restart"
    on_cost_spike: str = "restart"
    cooldown: float = 300.0
    max_restarts: int = 3
    restart_window: float = 3600.0
    stop_grace: float = 30.0
    webhook_url: str = ""
    alertmanager_url: str = ""
    notify_incidents: bool = True
    alert_ttl: float = 86400.0
    watchdog: bool = True

    @property
    def restart(self) -> RestartPolicy:
        return RestartPolicy(cooldown=self.cooldown, max_restarts=self.max_restarts, window=self.restart_window)

    @property
    def health(self) -> HealthPolicy:
        return HealthPolicy(heartbeat_interval=self.heartbeat_interval, liveness_timeout=self.liveness_timeout,
                            startup_timeout=self.startup_timeout, progress_timeout=self.progress_timeout,
                            cost_spike_factor=self.cost_spike_factor, baseline_cycles=self.baseline_cycles,
                            min_cycles=self.min_cycles)

    def action_for(self, kind: str) -> str:
        """restart | alert | ignore for a health finding."""
        return getattr(self, f"on_{kind}", "restart")

    def with_values(self, values: dict[str, Any], source: str = "option") -> "SupervisePolicy":
        """A copy with ``values`` parsed and validated; ``source`` prefixes error messages."""
        parsed = {}
        for key, raw in values.items():
            option = OPTION_BY_NAME.get(key)
            if option is None:
                raise ConfigError(f"{source}: unknown key {key!r}; valid keys: {', '.join(sorted(OPTION_BY_NAME))}")
            try:
                parsed[key] = option.parse(raw)
            except (ValueError, TypeError, OverflowError) as exc:
                raise ConfigError(f"{source}: bad value for {key!r}: {exc}") from None
        policy = replace(self, **parsed)
        policy.validate(source)
        return policy

    def validate(self, source: str = "option") -> None:
        if self.heartbeat_interval <= 0:
            raise ConfigError(f"{source}: 'heartbeat_interval' must be > 0")
        if self.liveness_timeout and self.liveness_timeout <= self.heartbeat_interval:
            raise ConfigError(f"{source}: 'liveness_timeout' ({self.liveness_timeout:g}s) must be longer than "
                              f"'heartbeat_interval' ({self.heartbeat_interval:g}s)")
        if self.poll_interval <= 0:
            raise ConfigError(f"{source}: 'poll_interval' must be > 0")
        if self.min_cycles < 1:
            raise ConfigError(f"{source}: 'min_cycles' must be >= 1")
        if self.replicas < 1:
            raise ConfigError(f"{source}: 'replicas' must be >= 1, got {self.replicas}")
        if self.restart_window <= 0:
            raise ConfigError(f"{source}: 'restart_window' must be > 0 (it is the window --max-restarts counts "
                              "restarts in)")
        for key in ("webhook_url", "alertmanager_url"):
            url = getattr(self, key)
            if url and not url.startswith(("http://", "https://")):
                raise ConfigError(f"{source}: {key!r} must start with http:// or https://, got {url!r}")


_POLICY_FIELDS = {f.name for f in fields(SupervisePolicy)}
assert _POLICY_FIELDS == set(OPTION_BY_NAME), "OPTIONS and SupervisePolicy must list the same names"


def load_config(path: str) -> dict[str, Any]:
    """Read a config file: TOML (``.toml``) or JSON (anything else). Keys are option names (``cooldown``,
    ``max_restarts``, ...); a ``[supervise]`` table is accepted too. Raises ConfigError."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    except ValueError:   # a NUL in the path
        raise ConfigError(f"{path!r}: cannot read config file: the path contains a NUL byte") from None
    if path.endswith(".toml"):
        try:
            import tomllib
        except ImportError:  # Python 3.10
            raise ConfigError(f"{path}: TOML needs Python 3.11+; use a JSON config file") from None
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except RecursionError:
            raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None
    else:
        try:
            data = json.loads(raw)
        except RecursionError:
            raise ConfigError(f"{path}: not valid JSON: nested too deeply") from None
        except ValueError as exc:
            raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table/object of options at the top level")
    if set(data) == {"supervise"} and isinstance(data["supervise"], dict):
        data = data["supervise"]
    nested = [key for key, value in data.items() if isinstance(value, dict)]
    if nested:
        raise ConfigError(f"{path}: unknown key {nested[0]!r} (options are flat: cooldown = \"5m\", ...)")
    return data


def build_policy(config_path: str | None, flags: dict[str, Any]) -> SupervisePolicy:
    """Defaults < config file < flags (flags given as {name: raw value}, None meaning not given)."""
    policy = SupervisePolicy()
    if config_path:
        policy = policy.with_values(load_config(config_path), source=os.fspath(config_path))
    given = {key: value for key, value in flags.items() if value is not None}
    if given:
        try:
            policy = policy.with_values(given, source="flags")
        except ConfigError as exc:
            message = str(exc)
            for key in given:  # name the flag the user typed, not the field
                message = message.replace(f"'{key}'", OPTION_BY_NAME[key].flag)
            raise ConfigError(message) from None
    return policy
