"""Alias of ``agentvigil.policy``: the detector/action configuration is shared by every command."""

from ..policy import (
                      ACTIONS,
                      DEFAULT_ACTIONS,
                      DEFAULT_ALERTS_LOG,
                      DEFAULT_SCOPE_POLICY,
                      DEFAULT_SESSION_IDLE,
                      MAX_COUNT,
                      MAX_KILL_GRACE,
                      MAX_PID,
                      MAX_SEQUENCE_LENGTH,
                      MAX_WEBHOOK_TIMEOUT,
                      MIN_SESSION_IDLE,
                      WATCHER_PARAMS,
                      ConfigError,
                      WatchConfig,
                      WatcherSpec,
                      apply_setting,
                      check_kill_grace,
                      check_path,
                      check_positive,
                      check_session_idle,
                      check_url,
                      parse_actions,
                      parse_duration,
)

__all__ = ["ACTIONS", "DEFAULT_ACTIONS", "DEFAULT_ALERTS_LOG", "DEFAULT_SCOPE_POLICY", "DEFAULT_SESSION_IDLE",
           "MAX_COUNT", "MAX_KILL_GRACE", "MAX_PID", "MAX_SEQUENCE_LENGTH", "MAX_WEBHOOK_TIMEOUT", "MIN_SESSION_IDLE",
           "WATCHER_PARAMS", "ConfigError", "WatchConfig", "WatcherSpec", "apply_setting", "check_kill_grace",
           "check_path", "check_positive", "check_session_idle", "check_url", "parse_actions", "parse_duration"]
