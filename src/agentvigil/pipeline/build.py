"""Assemble a pipeline from settings: the same detectors everywhere, then the sinks a command needs."""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

from .._safety import error_counter
from ..detectors import DetectorContext, build_detectors
from ..detectors.cost_baseline import CostBaselineDetector
from ..metrics import AgentMetrics
from ..policy import ConfigError, WatchConfig
from ..settings import Settings
from ..sinks.prometheus import PrometheusSink
from . import Pipeline, Sink

log = logging.getLogger("agentvigil")


def load_policy(settings: Settings) -> WatchConfig:
    """The watchers policy of ``settings.config_file`` (``AGENTVIGIL_CONFIG``), or the defaults. In-process a
    broken file is logged and ignored: configuration never stops the agent."""
    if not settings.config_file:
        return WatchConfig.defaults()
    try:
        return WatchConfig.load(settings.config_file)
    except ConfigError as exc:
        log.warning("agentvigil: ignoring AGENTVIGIL_CONFIG (%s); using the default detectors", exc)
        return WatchConfig.defaults()


def build_pipeline(settings: Settings, policy: WatchConfig | None = None, *, metrics: AgentMetrics | None = None,
                   before: Iterable[Sink] = (), after: Iterable[Sink] = (), started_at: float | None = None,
                   scope_policy: object = None, health: object = None, clock: Callable[[], float] | None = None,
                   on_error: Callable[[str, BaseException], None] | None = None,
                   shared: dict[str, Any] | None = None) -> tuple[Pipeline, DetectorContext]:
    """Detectors from the registry; sinks: ``before`` (spans: they stamp trace ids), Prometheus when
    ``metrics`` is given, then ``after`` (recorder, subscribers, actions). ``health`` and ``clock``: supervise's
    child-health thresholds and its clock; ``shared``: what the detectors learned in an earlier pipeline of the
    same command, carried into this one (``DetectorContext``)."""
    policy = policy if policy is not None else load_policy(settings)
    context = DetectorContext(settings, policy, started_at, scope_policy,  # type: ignore[arg-type]
                              health=health, clock=clock, shared=shared)
    detectors = build_detectors(context)
    sinks: list[Sink] = list(before)
    if metrics is not None:
        cost = next((d for d in detectors if isinstance(d, CostBaselineDetector)), None)
        sinks.append(PrometheusSink(metrics, cost.baseline if cost is not None else None))
    sinks.extend(after)
    if on_error is None and metrics is not None:   # count failures in the registry we were given
        on_error = error_counter(metrics)
    return Pipeline(detectors, sinks, on_error), context
