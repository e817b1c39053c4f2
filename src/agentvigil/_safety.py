"""Never hurt the agent: our own failures are caught, counted and logged once per component."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("agentvigil")
_logged: set[str] = set()


_inside = threading.local()


def internal_error(component: str, exc: BaseException | None = None) -> None:
    """Count an internal failure in ``agentvigil_internal_errors_total{component}``; log the first one."""
    if getattr(_inside, "active", False):
        return   # a failure while counting a failure (e.g. building the metrics): do not recurse
    _inside.active = True
    try:
        from .metrics import default_metrics

        default_metrics().internal_errors.labels(component).inc()
        if component not in _logged and exc is not None:
            _logged.add(component)
            log.warning("agentvigil: internal error in %s (further ones are only counted): %r", component, exc,
                        exc_info=True)
    except Exception:  # pragma: no cover - the last line of defence must not raise either
        pass
    finally:
        _inside.active = False


def _count_invalid_setting() -> None:
    internal_error("settings")


def _hook_settings() -> None:
    from . import settings

    if _count_invalid_setting not in settings.on_invalid:
        settings.on_invalid.append(_count_invalid_setting)


_hook_settings()
