"""Every detector, registered once. The in-process Monitor, ``replay``, ``watch`` and ``supervise`` build
theirs from this table (``agentvigil.pipeline.build``), so they judge alike.

A registration is: the detector's name, the key of ``.agent-watch.json``'s ``watchers`` section that
enables it and chooses its actions, and a factory from a ``DetectorContext``. To add a detector: write one
module with a class that has ``name``, ``family``, ``consumes``, ``feed(event)`` and ``tick(now)``, then
add one ``register(...)`` line below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

from ..policy import WatchConfig
from ..settings import Settings
from ..signals.loops import LOOP_DETECTORS, LoopPolicy
from ..verdicts import Detector
from .breaker import BreakerDetector
from .budget import BudgetDetector
from .correlation import CORRELATED, CorrelationDetector
from .cost_baseline import COST_OVER_BASELINE, CostBaselineDetector, CostPolicy
from .cost_limit import CostLimitDetector
from .cycle_cost import COST_SPIKE, CycleBaseline, CycleCostDetector
from .duration import DurationDetector
from .liveness import LIVENESS_LOST, ZOMBIE, LivenessDetector
from .loops import LoopDetector
from .retry import RetryDetector
from .run_limit import RunLimitDetector
from .runaway import RunawayDetector, RunawayHistory, RunawayPolicy
from .scope import ScopeDetector, ScopePolicy
from .sequence import SequenceDetector
from .silence import SilenceDetector
from .stuck import StuckDetector, StuckPolicy


@dataclass
class DetectorContext:
    """What a factory may use: the environment settings, the watchers policy, the session start."""

    settings: Settings
    policy: WatchConfig
    started_at: float | None = None
    scope_policy: ScopePolicy | None = None
    families: dict[str, str] = field(default_factory=dict)   # verdict → family of what is built so far
    # supervise only: the child's health thresholds (heartbeat_interval, liveness_timeout, startup_timeout,
    # progress_timeout, cost_spike_factor, baseline_cycles, min_cycles) and its clock. None elsewhere: the
    # liveness and cycle-cost detectors are then not built.
    health: Any = None
    clock: Callable[[], float] | None = None
    # what detectors learn across runs, kept for the next pipeline of the same command (replay's sessions, in
    # the order they started, as the state file carries it across processes in production; supervise's cycle
    # costs across restarts), by detector name
    shared: dict[str, Any] | None = None

    def kept(self, name: str, make: Callable[[], Any]) -> Any:
        """``make()``, or the one an earlier pipeline of this command made."""
        if self.shared is None:
            return make()
        if name not in self.shared:
            self.shared[name] = make()
        return self.shared[name]

    def param(self, spec: str, key: str) -> Any:
        return self.policy.watchers[spec].params[key]


class Registration(NamedTuple):
    name: str
    spec: str                     # the watchers.<spec> entry that enables it and holds its actions
    make: Callable[[DetectorContext], Detector | None]
    emits: tuple[str, ...]        # verdict names it writes (its name unless it has several)


REGISTRY: list[Registration] = []


def register(name: str, spec: str, make: Callable[[DetectorContext], Detector | None],
             emits: tuple[str, ...] = ()) -> None:
    REGISTRY.append(Registration(name, spec, make, emits or (name,)))


def _component(c: DetectorContext, key: str) -> Any:
    """A threshold of the components (``watchers.detectors.<key>``), or the environment's setting of that name."""
    value = c.param("detectors", key)
    return getattr(c.settings, key) if value is None else value


def _loop_policy(c: DetectorContext) -> LoopPolicy:
    return LoopPolicy(max_repeats=_component(c, "loop_max_repeats"), window=_component(c, "loop_window"),
                      sequence_repeats=_component(c, "loop_sequence_repeats"))


def _cost_policy(c: DetectorContext) -> CostPolicy:
    return CostPolicy(spike_factor=_component(c, "cost_spike_factor"),
                      baseline_runs=_component(c, "cost_baseline_runs"), min_runs=_component(c, "cost_min_runs"))


def _duration(c: DetectorContext) -> DurationDetector:
    seconds = c.param("duration", "max_seconds") or c.param("duration", "max_minutes") * 60.0
    return DurationDetector(seconds, c.started_at)


def _history(c: DetectorContext) -> RunawayHistory:
    """What ended runs taught runaway and cost_over_baseline, one for both (its state file holds both)."""
    return c.kept("runaway", lambda: RunawayHistory(_runaway_policy(c)))


def _runaway_policy(c: DetectorContext) -> RunawayPolicy:
    return RunawayPolicy(**c.policy.watchers["runaway"].params)


def _runaway(c: DetectorContext) -> RunawayDetector:
    return RunawayDetector(_runaway_policy(c), _history(c))


def _liveness(c: DetectorContext) -> LivenessDetector | None:
    h = c.health
    if h is None:
        return None
    return LivenessDetector(h.liveness_timeout, h.startup_timeout, h.progress_timeout, c.started_at, c.clock)


def _cycle_cost(c: DetectorContext) -> CycleCostDetector | None:
    h = c.health
    if h is None or not h.cost_spike_factor:
        return None
    baseline = c.kept(COST_SPIKE, lambda: CycleBaseline(h.baseline_cycles, h.min_cycles))
    return CycleCostDetector(h.cost_spike_factor, h.heartbeat_interval, baseline, c.clock)


register("loops", "detectors", lambda c: LoopDetector(_loop_policy(c)), LOOP_DETECTORS)
register(COST_OVER_BASELINE, "detectors", lambda c: CostBaselineDetector(_cost_policy(c), _history(c)))
register("breaker", "detectors", lambda c: BreakerDetector())
register("retry", "retry", lambda c: RetryDetector(c.param("retry", "max")))
register("cost", "cost", lambda c: CostLimitDetector(c.param("cost", "max_dollars")))
register("scope", "scope", lambda c: ScopeDetector(c.scope_policy) if c.scope_policy is not None else None)
register("duration", "duration", _duration)
register("loop", "loop", lambda c: SequenceDetector(c.param("loop", "sequence_length"), c.param("loop", "max_repeats")))
register("silence", "silence", lambda c: SilenceDetector(c.param("silence", "max_seconds")))
register("budget", "budget", lambda c: BudgetDetector(c.param("budget", "max_tokens")))
register("stuck", "stuck", lambda c: StuckDetector(StuckPolicy(**c.policy.watchers["stuck"].params)))
register("runaway", "runaway", _runaway)
register(LIVENESS_LOST, "liveness", lambda c: _liveness(c), (LIVENESS_LOST, ZOMBIE))
register(COST_SPIKE, "cost_spike", _cycle_cost)
# The run's own declared limits: always on (asking for a limit is the opt-in).
register("run_limit", "run_limit", lambda c: RunLimitDetector())
# Correlation last: it judges the verdicts of all the others (the pipeline feeds it every detection).
register(CORRELATED, "correlated", lambda c: CorrelationDetector(
    c.families, c.param("correlated", "window_seconds"), c.param("correlated", "min_watchers")))


def spec_of(verdict: str) -> str:
    """The watchers.<spec> entry whose actions apply to a verdict name."""
    for reg in REGISTRY:
        if verdict in reg.emits:
            return reg.spec
    return verdict


def build_detectors(context: DetectorContext) -> list[Detector]:
    """The enabled detectors, in registration order."""
    out = []
    watchers = context.policy.watchers
    for reg in REGISTRY:
        spec = watchers.get(reg.spec)
        if spec is not None and not spec.enabled:
            continue
        detector = reg.make(context)
        if detector is not None:
            out.append(detector)
            for verdict in reg.emits:
                context.families[verdict] = detector.family
    return out
