"""Alias of ``agentvigil.policy``: the detector/action configuration is shared by every command."""

from ..policy import (
                      ACTIONS,
                      DEFAULT_ACTIONS,
                      DEFAULT_ALERTS_LOG,
                      DEFAULT_SCOPE_POLICY,
                      WATCHER_PARAMS,
                      ConfigError,
                      WatchConfig,
                      WatcherSpec,
                      apply_setting,
                      parse_actions,
                      parse_duration,
)

__all__ = ["ACTIONS", "DEFAULT_ACTIONS", "DEFAULT_ALERTS_LOG", "DEFAULT_SCOPE_POLICY", "WATCHER_PARAMS",
           "ConfigError", "WatchConfig", "WatcherSpec", "apply_setting", "parse_actions", "parse_duration"]
