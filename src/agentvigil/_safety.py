"""Never hurt the agent: our own failures are caught, counted and logged once per component."""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("agentvigil")
_logged: set[str] = set()
_inside = threading.local()


def internal_error(component: str, exc: BaseException | None = None, metrics: Any = None) -> None:
    """Count an internal failure in ``agentvigil_internal_errors_total{component}``; log the first one.
    ``metrics``: the ``AgentMetrics`` (or the Monitor) it happened in, so a Monitor given its own registry
    counts there; without one, the default registry's (code that has no Monitor)."""
    if getattr(_inside, "active", False):
        return   # a failure while counting a failure (e.g. building the metrics): do not recurse
    _inside.active = True
    try:
        metrics = getattr(metrics, "metrics", metrics)   # a Monitor: its AgentMetrics
        if metrics is None:
            from .metrics import default_metrics

            metrics = default_metrics()
        metrics.internal_errors.labels(component).inc()
        if component not in _logged and exc is not None:
            _logged.add(component)
            log.warning("agentvigil: internal error in %s (further ones are only counted): %r", component, exc,
                        exc_info=True)
    except Exception:  # pragma: no cover - the last line of defence must not raise either
        pass
    finally:
        _inside.active = False


def error_counter(metrics: Any) -> Any:
    """``internal_error`` bound to ``metrics``: what a Monitor hands to its pipeline as ``on_error``."""

    def count(component: str, exc: BaseException | None = None) -> None:
        internal_error(component, exc, metrics)

    return count


def _count_invalid_setting() -> None:
    internal_error("settings")


def _hook_settings() -> None:
    from . import settings

    if _count_invalid_setting not in settings.on_invalid:
        settings.on_invalid.append(_count_invalid_setting)


_hook_settings()
