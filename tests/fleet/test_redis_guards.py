"""Guards shared through Redis (a private redis-server on 127.0.0.1): one budget and one breaker for every
process, reservations of killed workers expire, and a declared policy when Redis is down."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest
from fleet_support import free_port, redis_server, wait_for

pytest.importorskip("redis")

from agentvigil import CircuitBreaker, TokenBudget  # noqa: E402
from agentvigil.backends.redis import RedisBreakerBackend, RedisBudgetBackend  # noqa: E402
from agentvigil.exceptions import BudgetExceeded, CircuitOpenError  # noqa: E402
from agentvigil.metrics import default_metrics  # noqa: E402

FORK = multiprocessing.get_context("fork")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


def _spend(url: str, name: str, start, granted) -> None:
    budget = TokenBudget(name, limit=10_000, backend=url)
    start.wait(10)
    total = 0
    for i in range(10_000):  # bounded; ends at the first refusal
        tokens = 37 + (i * 53 + os.getpid()) % 300
        try:
            reservation = budget.reserve(tokens)
        except BudgetExceeded:
            break
        reservation.commit(tokens)
        total += tokens
    granted.put(total)


def test_two_processes_never_spend_past_a_shared_limit(redis_url):
    start, granted = FORK.Event(), FORK.Queue()
    workers = [FORK.Process(target=_spend, args=(redis_url, "shared-daily", start, granted)) for _ in range(2)]
    for worker in workers:
        worker.start()
    start.set()
    totals = [granted.get(timeout=40) for _ in workers]
    for worker in workers:
        worker.join(10)
    assert sum(totals) <= 10_000, totals
    assert sum(totals) > 10_000 - 337  # refused only when the next reservation really did not fit
    check = TokenBudget("shared-daily", limit=10_000, backend=redis_url)
    assert check.committed == sum(totals) and check.reserved == 0


def _trip(url: str, name: str, done) -> None:
    breaker = CircuitBreaker(name, failure_threshold=3, recovery_timeout=300, backend=url)
    for _ in range(3):
        breaker.allow()
        breaker.record_failure("rate_limit")
    done.put(breaker.state)


def test_a_breaker_opened_in_one_process_is_open_in_the_others(redis_url):
    ours = CircuitBreaker("provider-x", failure_threshold=3, recovery_timeout=300, backend=redis_url)
    ours.allow()  # closed for everyone at first
    ours.record_success()
    done = FORK.Queue()
    worker = FORK.Process(target=_trip, args=(redis_url, "provider-x", done))
    worker.start()
    assert done.get(timeout=20) == "open"
    worker.join(10)
    with pytest.raises(CircuitOpenError) as raised:
        ours.allow()
    assert raised.value.retry_after > 200  # from the other process's opening time, kept in Redis
    assert ours.state == "open"
    assert default_metrics().breaker_state.labels("provider-x")._value.get() == 1.0  # our gauge follows
    ours.reset()
    ours.allow()


def _reserve_and_die(url: str, name: str, ready) -> None:
    budget = TokenBudget(name, limit=10_000, backend=RedisBudgetBackend(url, reservation_ttl=1.0))
    budget.reserve(6_000)
    ready.set()
    os.kill(os.getpid(), signal.SIGKILL)  # never commits nor releases


def test_reservations_of_a_killed_worker_expire(redis_url):
    ready = FORK.Event()
    worker = FORK.Process(target=_reserve_and_die, args=(redis_url, "leaky", ready))
    worker.start()
    assert ready.wait(20)
    worker.join(10)
    assert worker.exitcode == -signal.SIGKILL
    budget = TokenBudget("leaky", limit=10_000, backend=RedisBudgetBackend(redis_url, reservation_ttl=1.0))
    assert budget.reserved == 6_000
    with pytest.raises(BudgetExceeded):
        budget.reserve(5_000)  # held by the dead worker for now

    def granted() -> bool:
        try:
            budget.reserve(5_000).commit()
        except BudgetExceeded:
            return False
        return True
    wait_for(granted, timeout=15, interval=0.2)
    assert budget.committed == 5_000 and budget.reserved == 0


def test_half_open_probe_of_a_dead_worker_expires(redis_url):
    backend = RedisBreakerBackend(redis_url, probe_lease=0.5)
    breaker = CircuitBreaker("probe-lease", failure_threshold=1, recovery_timeout=0, backend=backend)
    breaker.allow()
    breaker.record_failure("timeout")
    breaker.allow()  # takes the only half-open probe slot ... and never reports back
    other = CircuitBreaker("probe-lease", failure_threshold=1, recovery_timeout=0,
                           backend=RedisBreakerBackend(redis_url, probe_lease=0.5))
    with pytest.raises(CircuitOpenError):
        other.allow()
    wait_for(lambda: other.allow() is None, timeout=10, interval=0.1)
    other.record_success()
    assert other.state == "closed"


def _internal(component: str = "guard_backend") -> float:
    return default_metrics().internal_errors.labels(component)._value.get()


def test_redis_down_follows_the_declared_policy_and_is_counted():
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    before = _internal()
    open_breaker = CircuitBreaker("down-open", backend=RedisBreakerBackend(dead, fail="open"))
    open_breaker.allow()  # fail-open: the call goes ahead
    open_breaker.record_success()
    closed_breaker = CircuitBreaker("down-closed", backend=RedisBreakerBackend(dead, fail="closed"))
    with pytest.raises(CircuitOpenError):
        closed_breaker.allow()
    closed_budget = TokenBudget("down-closed", limit=1_000, backend=dead)  # budgets fail closed by default
    with pytest.raises(BudgetExceeded):
        closed_budget.reserve(10)
    open_budget = TokenBudget("down-open", limit=1_000, backend=RedisBudgetBackend(dead, fail="open"))
    open_budget.reserve(10).commit()
    assert _internal() >= before + 6  # every decision taken without Redis is counted


def test_redis_backoff_does_not_retry_on_every_call(monkeypatch):
    backend = RedisBreakerBackend(f"redis://127.0.0.1:{free_port()}/0", retry_interval=60)
    attempts = []
    real = backend._store._script
    monkeypatch.setattr(backend._store, "_script", lambda script: attempts.append(1) or real(script))
    breaker = CircuitBreaker("backoff", backend=backend)  # the constructor reads the state: one attempt
    for _ in range(20):
        breaker.allow()
    assert len(attempts) == 1


def test_redis_stopped_mid_run_fails_closed(tmp_path):
    with redis_server(tmp_path) as url:
        budget = TokenBudget("outage", limit=1_000, backend=RedisBudgetBackend(url, retry_interval=0.01))
        budget.reserve(100).commit()
    with pytest.raises(BudgetExceeded):  # the server is gone: fail-closed
        budget.reserve(100)


def test_bad_backend_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="unsupported URL scheme"):
        TokenBudget("x", limit=10, backend="memcached://127.0.0.1")
    with pytest.raises(ValueError, match="fail must be one of"):
        RedisBreakerBackend("redis://127.0.0.1:1/0", fail="maybe")
    with pytest.raises(ValueError, match="reservation_ttl"):
        RedisBudgetBackend("redis://127.0.0.1:1/0", reservation_ttl=0)


def test_an_unanswering_redis_costs_one_bounded_attempt(monkeypatch):
    """A Redis that accepts connections but never answers: the call gives up after the timeout, once."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts (kernel backlog) but never replies
    try:
        backend = RedisBudgetBackend(f"redis://127.0.0.1:{listener.getsockname()[1]}/0", timeout=0.2,
                                     retry_interval=60)
        attempts = []
        real = backend._store._script
        monkeypatch.setattr(backend._store, "_script", lambda script: attempts.append(1) or real(script))
        budget = TokenBudget("silent", limit=100, backend=backend)
        for _ in range(5):
            with pytest.raises(BudgetExceeded):
                budget.reserve(1)
        assert len(attempts) == 1
        assert backend._store._client.get_connection_kwargs()["socket_timeout"] == 0.2
    finally:
        listener.close()
