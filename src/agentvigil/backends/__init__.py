"""Shared state for guards: ``CircuitBreaker(..., backend=...)`` and ``TokenBudget(..., backend=...)`` keep
their state in a store every worker and host sees, instead of in the process. ``backend`` is a URL
(``redis://host:6379/0``, ``rediss://...``) or a backend object (e.g. ``RedisBreakerBackend(url,
fail="closed")``) to choose the policy when the store is unreachable. See docs/fleet.md.
"""

from __future__ import annotations

from typing import Any

FAIL_OPEN = "open"      # store down: behave as if there were no guard (calls allowed, tokens granted)
FAIL_CLOSED = "closed"  # store down: refuse (CircuitOpenError / BudgetExceeded)
POLICIES = (FAIL_OPEN, FAIL_CLOSED)


def breaker_backend(backend: Any) -> Any:
    """A breaker backend from a URL or an object (returned as is)."""
    if isinstance(backend, str):
        if backend.startswith(("redis://", "rediss://", "unix://")):
            from .redis import RedisBreakerBackend

            return RedisBreakerBackend(backend)
        raise ValueError(f"backend: unsupported URL scheme in {backend!r} (redis://, rediss://, unix://)")
    return backend


def budget_backend(backend: Any) -> Any:
    """A budget backend from a URL or an object (returned as is)."""
    if isinstance(backend, str):
        if backend.startswith(("redis://", "rediss://", "unix://")):
            from .redis import RedisBudgetBackend

            return RedisBudgetBackend(backend)
        raise ValueError(f"backend: unsupported URL scheme in {backend!r} (redis://, rediss://, unix://)")
    return backend
