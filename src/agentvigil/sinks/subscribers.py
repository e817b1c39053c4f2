"""Subscribers: user handlers for verdicts, guard events and kills (``Monitor.subscribe``, ``subscribe``).

Handlers run on the producing thread: keep them quick. A coroutine function is accepted only where an event
loop runs at subscribe time; its calls are scheduled on that loop (thread-safe), never left un-awaited.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable

from .. import events as ev
from .._safety import internal_error
from ..events import Event

if TYPE_CHECKING:
    import asyncio

Handler = Callable[[Event], Any]
GLOBAL_HANDLERS: list[Handler] = []   # agentvigil.subscribe(): every Monitor's and every guard's events
DELIVERED = frozenset({ev.DETECTION, ev.BREAKER_TRANSITION, ev.BUDGET_EXCEEDED, ev.KILL})


def prepare(handler: Handler) -> Handler:
    """The callable to store for ``handler``: async handlers are bound to the running loop."""
    if not callable(handler):
        raise TypeError(f"subscribe() needs a callable, got {type(handler).__name__}")
    if not inspect.iscoroutinefunction(handler):
        return handler
    import asyncio  # only async subscribers need it (~14 ms to import)

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise TypeError("an async subscriber needs a running event loop: subscribe it from inside the "
                        "loop (async code), or pass a plain function") from None
    tasks: set[asyncio.Task] = set()

    def schedule(event: Event) -> None:
        def start() -> None:
            task = loop.create_task(handler(event))
            tasks.add(task)   # keep a reference until done (asyncio holds tasks weakly)
            task.add_done_callback(_finished(tasks))
        if not loop.is_closed():
            loop.call_soon_threadsafe(start)

    schedule.__wrapped__ = handler  # type: ignore[attr-defined]
    return schedule


def _finished(tasks: set) -> Callable[[asyncio.Task], None]:
    def done(task: asyncio.Task) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            internal_error("subscriber", task.exception())
    return done


def deliver(handlers: list[Handler], event: Event, metrics: object = None) -> None:
    for handler in tuple(handlers):
        try:
            handler(event)
        except Exception as exc:  # a broken subscriber must not break the agent or other subscribers
            internal_error("subscriber", exc, metrics)


def remove(handlers: list[Handler], handler: Handler) -> None:
    for stored in tuple(handlers):
        if stored is handler or getattr(stored, "__wrapped__", None) is handler:
            handlers.remove(stored)


class SubscriberSink:
    consumes = DELIVERED

    def __init__(self, handlers: list[Handler], global_handlers: list[Handler], metrics: object = None):
        self.handlers = handlers
        self.global_handlers = global_handlers
        self.metrics = metrics   # where a failing handler is counted (the Monitor's registry)

    def handle(self, event: Event) -> None:
        if self.handlers:
            deliver(self.handlers, event, self.metrics)
        if self.global_handlers:
            deliver(self.global_handlers, event, self.metrics)
