"""Never hurt the agent: our own failures are caught, counted and logged once per component."""

from __future__ import annotations

import logging
import os
import threading
import weakref
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


# Every lock an agent's threads take in our code. A thread of the parent may hold one at the moment of a fork
# (gunicorn --preload, Celery prefork, multiprocessing "fork"); it does not exist in the child, so the child's
# copy would stay locked forever. The child gets them back unlocked, before any other fork hook of ours runs.
_FORK_LOCKS: weakref.WeakSet[Any] = weakref.WeakSet()


def fork_safe_lock(reentrant: bool = False) -> Any:
    """A ``threading.Lock`` (or ``RLock``) that a forked child gets back unlocked."""
    lock = threading.RLock() if reentrant else threading.Lock()
    _FORK_LOCKS.add(lock)
    return lock


# Objects whose locks are not ours to create (prometheus_client's, in AgentMetrics): each one's
# ``_unlock_in_child()`` resets them in the child, right after our own locks.
_FORK_OWNERS: weakref.WeakSet[Any] = weakref.WeakSet()


def fork_safe(owner: Any) -> None:
    """Have ``owner._unlock_in_child()`` called in every forked child; a failure is counted in ``owner``."""
    _FORK_OWNERS.add(owner)


def _unlock_in_child() -> None:
    for lock in list(_FORK_LOCKS):
        try:
            lock._at_fork_reinit()   # CPython's own (logging and threading use it): the same lock, unlocked
        except Exception:  # pragma: no cover - a fork hook must never raise
            pass
    failed = []
    for owner in list(_FORK_OWNERS):
        try:
            owner._unlock_in_child()
        except Exception as exc:
            failed.append((owner, exc))
    for owner, error in failed:   # counted once every lock is reset: counting takes some of them
        internal_error("fork", error, owner)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_unlock_in_child)


NAME_LIMIT = 256   # characters of a name kept (labels show 128): every cache keyed by names stays small


def safe_str(value: Any, component: str, metrics: Any = None, default: str = "unknown") -> str:
    """A name the user gave (tool, model, agent, reason) as text of at most ``NAME_LIMIT`` characters; an object
    whose ``__str__`` raises is counted and named ``default``, never raised into the agent."""
    if value.__class__ is not str:
        try:
            value = str(value)
        except Exception as exc:
            internal_error(component, exc, metrics)
            return default
    return value if len(value) <= NAME_LIMIT else value[:NAME_LIMIT]  # type: ignore[no-any-return]


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
