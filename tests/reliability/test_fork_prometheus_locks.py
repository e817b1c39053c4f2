"""A fork while another thread holds a prometheus_client lock of our metrics leaves the child working."""

from __future__ import annotations

import pytest

from .forkheld import run_script

_FORK_WHILE_PROMETHEUS_HELD = r"""
import sys
from forkheld import fork_while_held
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.metrics import MetricWrapperBase
import agentvigil

kind = sys.argv[1]
registry = CollectorRegistry()
mon = agentvigil.Monitor("forked-prom", registry=registry, heartbeat=False)
with mon.run() as run:   # the parent's series exist: the child updates them and creates new ones
    with run.tool_call("warm"):
        pass
    run.llm_usage("openai", "warm-model", 10, 5)
m = mon.metrics
families = [v for v in vars(m).values() if isinstance(v, MetricWrapperBase)]

def values(metric):
    children = list(metric._metrics.values()) if hasattr(metric, "_metrics") else [metric]
    for child in children:
        for name in ("_value", "_sum", "_count"):
            if hasattr(getattr(child, name, None), "_lock"):
                yield getattr(child, name)
        yield from getattr(child, "_buckets", ())

if kind == "values":        # a thread inside inc()/set()/observe() at the fork
    locks = [v._lock for f in families for v in values(f)]
elif kind == "families":    # a thread inside .labels() (creating a child) or a scrape of one family
    locks = [f._lock for f in families if hasattr(f, "_metrics")]
else:                       # a thread inside a scrape (registry.collect) or a registration
    locks = [registry._lock]
assert locks
# a metric of the user's own, on a registry of its own: left as prometheus_client leaves it
user_registry = CollectorRegistry()
user = Counter("user_requests", "The user's.", ["path"], registry=user_registry)
user.labels("/").inc()
locks.append(user._lock)
def child():
    with mon.run(task_id="child") as run:
        with run.tool_call("warm"):             # existing children: their value locks
            pass
        with run.tool_call("never-seen-tool"):  # new children: the families' locks
            pass
        run.llm_usage("openai", "warm-model", 10, 5)
    text = generate_latest(registry).decode()   # the registry's lock, then every family and value
    expected = ['agent_tool_calls_total{agent="forked-prom",status="ok",tool="warm"} 2.0',
                'agent_tool_calls_total{agent="forked-prom",status="ok",tool="never-seen-tool"} 1.0',
                'model="warm-model",provider="openai",type="input"} 20.0']
    missing = [line for line in expected if line not in text]
    errors = [line for line in text.splitlines()
              if line.startswith("agentvigil_internal_errors_total") and not line.endswith(" 0.0")]
    if missing or errors or not user._lock.locked():
        print("missing:", missing, "errors:", errors, "user lock:", user._lock.locked(), file=sys.stderr)
        return 2
    return 0

code = fork_while_held(locks, child)
mon.close()
sys.exit(code)
"""


@pytest.mark.parametrize("held", ["values", "families", "registry"])
def test_a_fork_while_other_threads_hold_prometheus_locks_of_our_metrics_leaves_the_child_working(held):
    """prometheus_client's locks (each value's, each labelled family's, the registry's) are plain Locks it never
    resets at fork: one held by another thread at that moment (an update, a ``.labels()`` creating a series, a
    scrape) stayed locked forever in the child, whose first update or scrape then hung. The child must update
    the series it inherited (keeping the parent's values), create new ones and render /metrics; a metric of the
    user's own is left as prometheus_client leaves it."""
    run_script(_FORK_WHILE_PROMETHEUS_HELD, held)


_FORK_WITH_A_FAILING_RESET = r"""
import sys, threading
from forkheld import fork_while_held
from prometheus_client import CollectorRegistry, generate_latest
from agentvigil.metrics import AgentMetrics

registry = CollectorRegistry()
m = AgentMetrics(registry)

class Stubborn:
    '''A working lock that cannot be reset.'''
    def __init__(self):
        self._inner = threading.Lock()
    def __enter__(self):
        return self._inner.__enter__()
    def __exit__(self, *exc):
        return self._inner.__exit__(*exc)
    def _at_fork_reinit(self):
        raise RuntimeError("cannot reset")

m.tool("a", "stubborn").ok._value._lock = Stubborn()   # reset before the held ones: the walk goes on past it
held_value = m.tool("a", "held").ok._value._lock
held_family = m.internal_errors._lock

def child():
    m.tool("a", "held").ok.inc()
    m.tool("a", "stubborn").ok.inc()
    text = generate_latest(registry).decode()
    if 'agentvigil_internal_errors_total{component="fork"} 1.0' not in text:
        print(text, file=sys.stderr)
        return 2
    return 0

sys.exit(fork_while_held([held_value, held_family], child))
"""


def test_a_lock_that_cannot_be_reset_at_fork_is_counted_and_the_others_still_are():
    """The reset never raises into the child: a failure is counted in the metrics' own registry
    (``component="fork"``) once every other lock is reset, including the counter's own, held across the fork."""
    done = run_script(_FORK_WITH_A_FAILING_RESET)
    assert "Exception ignored" not in done.stderr   # how Python reports a fork hook that raised
