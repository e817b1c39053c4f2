import asyncio
import threading
import time

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from agentvigil import BudgetExceeded, CircuitBreaker, CircuitOpenError, RunKilled
from prometheus_client import CollectorRegistry


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Err(Exception):
    def __init__(self, status):
        super().__init__(f"status {status}")
        self.status_code = status


def make(registry, **kw):
    clock = Clock()
    kw.setdefault("failure_threshold", 3)
    kw.setdefault("recovery_timeout", 30)
    return CircuitBreaker("openai", clock=clock, registry=registry, **kw), clock


def test_opens_after_threshold_with_reason_and_gauge(registry, sample):
    b, _ = make(registry)
    for _ in range(2):
        b.record_failure(Err(503))
    assert b.state == "closed" and sample("agent_circuit_breaker_state", breaker="openai") == 0
    b.record_failure(Err(429))
    assert b.state == "open"
    assert sample("agent_circuit_breaker_state", breaker="openai") == 1.0
    assert sample("agent_circuit_breaker_transitions_total", breaker="openai", to="open", reason="rate_limit") == 1


def test_only_provider_kinds_count(registry):
    b, _ = make(registry)
    for _ in range(10):
        b.record_failure(Err(400))   # invalid_request: our fault, not the provider's
        b.record_failure(Err(401))
    assert b.state == "closed"


def test_success_resets_consecutive_failures(registry):
    b, _ = make(registry)
    for _ in range(5):
        b.record_failure(Err(500))
        b.record_failure(Err(500))
        b.record_success()
    assert b.state == "closed"


def test_open_rejects_then_half_open_probe_closes(registry, sample):
    b, clock = make(registry)
    for _ in range(3):
        b.record_failure(Err(500))
    with pytest.raises(CircuitOpenError) as info:
        b.allow()
    assert 29 < info.value.retry_after <= 30
    clock.now += 30
    b.allow()  # the probe
    assert b.state == "half_open" and sample("agent_circuit_breaker_state", breaker="openai") == 0.5
    with pytest.raises(CircuitOpenError):
        b.allow()  # only one probe at a time
    b.record_success()
    assert b.state == "closed"
    assert sample("agent_circuit_breaker_transitions_total", breaker="openai", to="closed", reason="probe_succeeded") == 1


def test_failed_probe_reopens(registry):
    b, clock = make(registry)
    for _ in range(3):
        b.record_failure(Err(500))
    clock.now += 31
    with pytest.raises(Err):
        b.call(lambda: (_ for _ in ()).throw(Err(503)))
    assert b.state == "open"
    with pytest.raises(CircuitOpenError):
        b.allow()


def test_call_decorator_and_context_manager(registry):
    b, _ = make(registry)

    @b
    def ok(x):
        return x * 2

    assert ok(2) == 4
    for _ in range(3):
        with pytest.raises(TimeoutError):
            with b:
                raise TimeoutError()
    assert b.state == "open"
    with pytest.raises(CircuitOpenError):
        ok(1)


def test_async_usage(registry):
    b, _ = make(registry)

    async def fails():
        raise Err(502)

    @b
    async def works():
        return "ok"

    async def main():
        assert await works() == "ok"
        for _ in range(3):
            with pytest.raises(Err):
                await b.call_async(fails)
        with pytest.raises(CircuitOpenError):
            async with b:
                pass

    asyncio.run(main())
    assert b.state == "open"


def test_no_lock_held_across_the_call(registry):
    b = CircuitBreaker("slow", failure_threshold=3, registry=registry)
    entered, release = threading.Event(), threading.Event()

    def slow():
        entered.set()
        release.wait(5)

    t = threading.Thread(target=b.call, args=(slow,))
    t.start()
    assert entered.wait(2)
    start = time.monotonic()
    assert b.call(lambda: 42) == 42   # would deadlock / wait if the breaker serialised calls
    assert time.monotonic() - start < 0.5
    release.set()
    t.join(2)


class BreakerMachine(RuleBasedStateMachine):
    """Random sequences of outcomes and clock jumps; the breaker must match a simple model."""

    def __init__(self):
        super().__init__()
        self.registry = CollectorRegistry()
        self.clock = Clock()
        self.b = CircuitBreaker("m", failure_threshold=3, recovery_timeout=10, clock=self.clock, registry=self.registry)
        self.consecutive = 0

    @rule(provider_error=st.booleans())
    def call_fails(self, provider_error):
        before = self.b.state
        try:
            self.b.allow()
        except CircuitOpenError:
            assert before in ("open", "half_open")
            return
        self.b.record_failure(Err(503 if provider_error else 400))
        if provider_error:
            if before == "closed":
                self.consecutive += 1
                assert (self.b.state == "open") == (self.consecutive >= 3)
            else:
                assert self.b.state == "open"
            if self.b.state == "open":
                self.consecutive = 0
        else:
            self.consecutive = 0 if before == "closed" else self.consecutive
            assert self.b.state == "closed"

    @rule()
    def call_succeeds(self):
        try:
            self.b.allow()
        except CircuitOpenError:
            return
        self.b.record_success()
        self.consecutive = 0
        assert self.b.state == "closed"

    @rule(stop=st.sampled_from([RunKilled("x"), BudgetExceeded("b", 1, 0), asyncio.CancelledError()]))
    def call_stopped_by_guard(self, stop):
        before = self.b.state

        def stopped():
            raise stop

        try:
            self.b.call(stopped)
        except CircuitOpenError:
            return
        except BaseException as exc:
            assert exc is stop
        # Neither a success nor a failure (an open breaker past its timeout let this call probe it).
        assert self.b.state == ("half_open" if before == "open" else before)
        if self.b.state == "half_open":
            self.b.allow()                     # the probe slot was given back
            self.b.release()

    @rule(seconds=st.floats(0, 20))
    def time_passes(self, seconds):
        self.clock.now += seconds

    @invariant()
    def gauge_matches_state(self):
        value = self.registry.get_sample_value("agent_circuit_breaker_state", {"breaker": "m"})
        assert value == {"closed": 0.0, "half_open": 0.5, "open": 1.0}[self.b.state]


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
