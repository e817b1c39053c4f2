"""Circuit breaker: closed → open → half-open → closed, on a monotonic clock.

Only provider-side error kinds (rate_limit, timeout, server_error, network) count as failures; a bad request
proves the provider is answering, so it counts as a success. A guard stop (GuardError) or a cancellation
inside the protected call is neither: the provider never answered, so the call's probe slot is released and
nothing is recorded. The lock guards bookkeeping only and is never held across the protected call, so the
breaker never serialises an agent's calls.

``backend=`` (a ``redis://`` URL or a backend object, see ``agentvigil.backends``) moves the state into a
store shared by every worker and host: one breaker for the fleet. The decisions are then made there,
atomically; this object only mirrors the last state it saw.
"""

from __future__ import annotations

import functools
import inspect
import math
import time
from typing import Any, Callable

from . import events as ev
from ._safety import fork_safe_lock, internal_error
from .errors import PROVIDER_KINDS, classify_exception
from .exceptions import CircuitOpenError, GuardError

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
STATE_VALUE = {CLOSED: 0.0, HALF_OPEN: 0.5, OPEN: 1.0}


class CircuitBreaker:
    """Protect calls to one dependency (usually a provider).

    Use as ``breaker.call(fn, ...)``, ``await breaker.call_async(fn, ...)``, ``with breaker:``,
    ``async with breaker:``, as a decorator, or by hand with ``allow()`` then one of ``record_success()`` /
    ``record_failure(exc)`` / ``release()``. Raises ``CircuitOpenError`` while open.
    """

    def __init__(self, name: str, failure_threshold: int = 5, recovery_timeout: float = 30.0, *,
                 half_open_max_calls: int = 1, success_threshold: int = 1,
                 failure_kinds: frozenset[str] = PROVIDER_KINDS, clock: Callable[[], float] = time.monotonic,
                 monitor: Any = None, registry: Any = None, backend: Any = None):
        # written as "not ok" so NaN (which fails every comparison) is refused, not a breaker that never opens
        if not (failure_threshold >= 1 and half_open_max_calls >= 1 and success_threshold >= 1
                and 0 <= recovery_timeout < math.inf):
            raise ValueError("failure_threshold, half_open_max_calls, success_threshold >= 1; recovery_timeout a "
                             f"finite number >= 0; got {failure_threshold!r}, {half_open_max_calls!r}, "
                             f"{success_threshold!r}, {recovery_timeout!r}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self.half_open_max_calls = half_open_max_calls
        self.success_threshold = success_threshold
        self.failure_kinds = frozenset(failure_kinds)
        self._clock = clock
        self._monitor = monitor
        self._lock = fork_safe_lock()
        self._state = CLOSED
        self._failures = 0
        self._successes = 0
        self._probes = 0
        self._opened_at = 0.0
        self.last_failure_kind: str | None = None
        self._registry = registry
        self._backend = None
        if backend is not None:
            from .backends import breaker_backend

            self._backend = breaker_backend(backend)
            self._state = self._backend.read(self).state
        self._emit(ev.Event(ev.GUARD_STATE, time.time(), name=self.name, state=CLOSED,
                            detail={"guard": "breaker"}), outside_run=True)

    # -- state -------------------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """closed, open or half_open. An open breaker whose timeout elapsed reports half_open only once a
        call probes it: the state changes on calls, as in pybreaker."""
        return self._state

    def retry_after(self) -> float:
        if self._backend is not None:
            return self._shared(self._backend.read(self)).remaining
        with self._lock:
            if self._state != OPEN:
                return 0.0
            return max(self._opened_at + self.recovery_timeout - self._clock(), 0.0)

    def allow(self) -> None:
        """Ask to make a call. Raises CircuitOpenError if the call must not be made."""
        if self._backend is not None:
            decision = self._shared(self._backend.allow(self))
            if not decision.allowed:
                raise CircuitOpenError(self.name, decision.remaining)
            return
        transition = None
        with self._lock:
            if self._state == OPEN:
                remaining = self._opened_at + self.recovery_timeout - self._clock()
                if remaining > 0:
                    raise CircuitOpenError(self.name, remaining)
                transition = self._enter(HALF_OPEN, "recovery_timeout")
            # Entering half-open just reset the probe count, so a fresh transition always gets a slot.
            if self._state == HALF_OPEN:
                if self._probes >= self.half_open_max_calls:
                    raise CircuitOpenError(self.name, 0.0)
                self._probes += 1
        self._publish(transition)

    def record_success(self) -> None:
        if self._backend is not None:
            self._shared(self._backend.record(self, True))
            return
        transition = None
        with self._lock:
            if self._state == HALF_OPEN:
                self._probes = max(self._probes - 1, 0)
                self._successes += 1
                if self._successes >= self.success_threshold:
                    transition = self._enter(CLOSED, "probe_succeeded")
            elif self._state == CLOSED:
                self._failures = 0
        self._publish(transition)

    def record_failure(self, error: BaseException | str | None = None) -> str:
        """Record a failed call; returns its error kind. Non-provider kinds count as a success."""
        kind = error if isinstance(error, str) else classify_exception(error)
        if kind not in self.failure_kinds:
            self.record_success()
            return kind
        if self._backend is not None:
            self.last_failure_kind = kind
            self._shared(self._backend.record(self, False, kind))
            return kind
        transition = None
        with self._lock:
            self.last_failure_kind = kind
            if self._state == HALF_OPEN:
                self._probes = max(self._probes - 1, 0)
                transition = self._enter(OPEN, kind)
            elif self._state == CLOSED:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    transition = self._enter(OPEN, kind)
        self._publish(transition)
        return kind

    def release(self) -> None:
        """Give back a call allowed by ``allow()`` that never reached the provider (a guard stopped it, or it
        was cancelled): frees its half-open probe slot and records neither success nor failure."""
        if self._backend is not None:
            self._backend.release(self)
            return
        with self._lock:
            if self._state == HALF_OPEN:
                self._probes = max(self._probes - 1, 0)

    def _settle(self, exc: BaseException | None) -> None:
        """Record how an allowed call ended."""
        if exc is None:
            self.record_success()
        elif isinstance(exc, GuardError) or not isinstance(exc, Exception):
            self.release()  # our own stop, or CancelledError / KeyboardInterrupt: the provider never answered
        else:
            self.record_failure(exc)

    def reset(self) -> None:
        """Close the breaker by hand (after a fix), whatever its state."""
        if self._backend is not None:
            self._shared(self._backend.reset(self))
            return
        with self._lock:
            transition = self._enter(CLOSED, "manual") if self._state != CLOSED else None
        self._publish(transition)

    def _enter(self, state: str, reason: str) -> tuple[str, str]:
        """Change state; caller holds the lock. Returns the transition to publish after releasing it."""
        self._state = state
        self._failures = 0
        self._successes = 0
        self._probes = 0
        if state == OPEN:
            self._opened_at = self._clock()
        return state, reason

    def _shared(self, decision: Any) -> Any:
        """Mirror a shared decision: publish the transition this process made, or, when another process
        changed the state, the new state (so this process's gauge follows the fleet's breaker)."""
        if decision.shared:
            changed = decision.state != self._state
            self._state = decision.state
            if decision.transition is not None:
                self._publish(decision.transition)
            elif changed:
                self._emit(ev.Event(ev.GUARD_STATE, time.time(), name=self.name, state=decision.state,
                                    detail={"guard": "breaker"}), outside_run=True)
        return decision

    def _publish(self, transition: tuple[str, str] | None) -> None:
        if transition is None:
            return
        state, reason = transition
        self._emit(ev.Event(ev.BREAKER_TRANSITION, time.time(), name=self.name, state=state, reason=reason))

    def _emit(self, event: ev.Event, outside_run: bool = False) -> None:
        """Guards only build events; the pipeline writes the metrics and tells the subscribers."""
        try:
            # imported on first publish: routing brings in prometheus_client, which a guard may never need
            from .pipeline.routing import publish_guard

            publish_guard(event, self._monitor, self._registry, outside_run)
        except Exception as exc:
            internal_error("breaker", exc)

    # -- ways to use it ---------------------------------------------------------------------------------
    def call(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """Call ``fn(*args, **kwargs)`` through the breaker.

        Raises TypeError, without counting anything, if ``fn`` is asynchronous (a coroutine function or
        returns an awaitable): the outcome is only known once awaited, so use ``await call_async(fn, ...)``.
        """
        if _is_async_callable(fn):
            raise TypeError(f"{fn!r} is asynchronous: use 'await breaker.call_async(fn, ...)'")
        self.allow()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._settle(exc)
            raise
        if inspect.isawaitable(result):
            self.release()
            if inspect.iscoroutine(result):
                result.close()  # never awaited: close it so Python does not warn about it
            raise TypeError(f"{fn!r} returned an awaitable: use 'await breaker.call_async(fn, ...)'")
        self.record_success()
        return result

    async def call_async(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """Await ``fn(*args, **kwargs)`` through the breaker: ``fn`` may be a coroutine function or any callable
        returning an awaitable (or, harmlessly, a plain value)."""
        self.allow()
        try:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except BaseException as exc:
            self._settle(exc)
            raise
        self.record_success()
        return result

    def __enter__(self) -> "CircuitBreaker":
        self.allow()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._settle(exc)

    async def __aenter__(self) -> "CircuitBreaker":
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, fn: Callable) -> Callable:
        """Decorate ``fn``; coroutine functions (also partials of them and objects with an async ``__call__``)
        get an async wrapper that goes through ``call_async``."""
        if _is_async_callable(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await self.call_async(fn, *args, **kwargs)
            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return self.call(fn, *args, **kwargs)
        return wrapper

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self._state})"


def _is_async_callable(fn: Any) -> bool:
    """True for coroutine functions, partials of them, and instances whose ``__call__`` is one."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    # A class is called to build an instance, so its async __call__ says nothing about calling the class.
    return not isinstance(fn, type) and inspect.iscoroutinefunction(type(fn).__call__) if callable(fn) else False
