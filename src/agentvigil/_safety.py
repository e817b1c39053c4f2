"""Never hurt the agent: our own failures are caught, counted and logged once per component."""

from __future__ import annotations

import logging

log = logging.getLogger("agentvigil")
_logged: set[str] = set()


def internal_error(component: str, exc: BaseException | None = None) -> None:
    """Count an internal failure in ``agentvigil_internal_errors_total{component}``; log the first one."""
    try:
        from .metrics import default_metrics

        default_metrics().internal_errors.labels(component).inc()
        if component not in _logged:
            _logged.add(component)
            log.warning("agentvigil: internal error in %s (further ones are only counted): %r", component, exc,
                        exc_info=exc is not None)
    except Exception:  # pragma: no cover - the last line of defence must not raise either
        pass
