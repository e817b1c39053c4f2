from __future__ import annotations

from contextvars import ContextVar

# The active Run of this thread / asyncio task; guards use it to attribute their events to an agent.
current_run_var: ContextVar = ContextVar("agentvigil_current_run", default=None)


def current_run():
    """The Run active in this context (thread or asyncio task), or None. A run that has ended is never current:
    runs ended out of order (an outer one before an inner one, as callback frameworks do) leave it behind in
    the context."""
    run = current_run_var.get()
    return None if run is None or run._ended else run
