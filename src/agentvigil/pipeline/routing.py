"""Where guard events go. The guards (breaker, budget) only build events and call ``publish``: an event
goes to the pipeline of its guard's Monitor, else of the run it happened in (attributed to that run), else to
the guard pipeline of its registry (metrics and global subscribers only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._context import current_run
from .._safety import fork_safe_lock
from ..events import Event
from ..metrics import metrics_for
from ..sinks.prometheus import PrometheusSink
from ..sinks.subscribers import GLOBAL_HANDLERS, SubscriberSink
from . import Pipeline

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

_guard_pipelines: dict[int, tuple[Any, Pipeline]] = {}
_lock = fork_safe_lock()


def guard_pipeline(registry: CollectorRegistry | None = None) -> Pipeline:
    metrics = metrics_for(registry)
    found = _guard_pipelines.get(id(metrics))
    if found is None or found[0] is not metrics:
        with _lock:
            found = _guard_pipelines.get(id(metrics))
            if found is None or found[0] is not metrics:
                pipeline = Pipeline((), (PrometheusSink(metrics), SubscriberSink([], GLOBAL_HANDLERS)))
                found = _guard_pipelines[id(metrics)] = (metrics, pipeline)
    return found[1]


def publish_guard(event: Event, monitor: Any, registry: CollectorRegistry | None, outside_run: bool = False) -> None:
    """What breakers and budgets call: ``outside_run`` for their creation, which belongs to no run."""
    if outside_run and monitor is None:
        guard_pipeline(registry).emit(event)
    else:
        publish(event, monitor, registry)


def publish(event: Event, monitor: Any = None, registry: CollectorRegistry | None = None) -> None:
    """Publish a guard event. Never raises (the pipeline counts its own failures)."""
    run = current_run()
    if run is not None:
        event.run_id, event.task_id, event.step_index = run.run_id, run.task_id, run.step_index
        event.correlation_id = run.correlation_id
        event.scope = run
        if monitor is None:
            monitor = run.monitor
    if monitor is not None:
        monitor._emit(event)
    else:
        guard_pipeline(registry).emit(event)
