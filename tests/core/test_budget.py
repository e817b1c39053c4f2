import asyncio
import threading

import pytest
from hypothesis import given, settings, strategies as st

from agentvigil import BudgetExceeded, TokenBudget


def test_reserve_commit_release_and_gauges(registry, sample):
    b = TokenBudget("session", limit=1000, registry=registry)
    r1 = b.reserve(300)
    r2 = b.reserve(200)
    assert b.utilization == 0.5 and sample("agent_budget_utilization_ratio", budget="session") == 0.5
    r1.commit(250)     # actual usage below the estimate
    r2.release()       # the call failed
    assert (b.committed, b.reserved) == (250, 0)
    assert sample("agent_budget_tokens", budget="session", state="committed") == 250
    assert sample("agent_budget_limit_tokens", budget="session") == 1000
    r1.commit(999)     # settling twice is a no-op
    assert b.committed == 250


def test_exceeding_raises_counts_and_keeps_state(registry, sample):
    b = TokenBudget("session", limit=100, registry=registry)
    b.reserve(80).commit()
    with pytest.raises(BudgetExceeded) as info:
        b.reserve(30)
    assert info.value.available == 20 and info.value.requested == 30
    assert sample("agent_budget_exceeded_total", budget="session") == 1
    assert (b.committed, b.reserved) == (80, 0)


def test_commit_over_limit_is_counted_not_raised(registry, sample):
    b = TokenBudget("s", limit=100, registry=registry)
    b.reserve(50).commit(150)
    assert b.utilization == 1.5 and sample("agent_budget_exceeded_total", budget="s") == 1


def test_context_manager_releases_on_error_commits_on_success(registry):
    b = TokenBudget("s", limit=100, registry=registry)
    with pytest.raises(RuntimeError):
        with b.reserve(40):
            raise RuntimeError()
    assert (b.committed, b.reserved) == (0, 0)
    with b.reserve(40) as r:
        r.commit(10)
    assert b.committed == 10


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["reserve", "commit", "release"]), st.integers(0, 400)), max_size=60))
def test_accounting_invariants(ops):
    from prometheus_client import CollectorRegistry
    reg = CollectorRegistry()
    b = TokenBudget("p", limit=1000, registry=reg)
    open_reservations, committed = [], 0
    for op, n in ops:
        if op == "reserve":
            if b.committed + b.reserved + n > 1000:
                with pytest.raises(BudgetExceeded):
                    b.reserve(n)
            else:
                open_reservations.append(b.reserve(n))
        elif open_reservations:
            r = open_reservations.pop(0)
            if op == "commit":
                r.commit(n)
                committed += n
            else:
                r.release()
        assert b.reserved == sum(r.tokens for r in open_reservations)
        assert b.committed == committed
        assert reg.get_sample_value("agent_budget_utilization_ratio", {"budget": "p"}) == pytest.approx(
            (b.committed + b.reserved) / 1000)


BAD_AMOUNTS = st.sampled_from([float("inf"), float("nan"), -1, -0.5, float("-inf")])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["reserve", "commit", "release"]),
                          st.one_of(st.integers(0, 400), BAD_AMOUNTS)), max_size=60))
def test_accounting_invariants_with_bad_amounts(ops):
    from prometheus_client import CollectorRegistry
    b = TokenBudget("p", limit=1000, registry=CollectorRegistry())
    open_reservations, committed = [], 0
    for op, n in ops:
        bad = not (isinstance(n, int) and n >= 0)
        if op == "reserve":
            if bad:
                with pytest.raises(ValueError, match="tokens"):
                    b.reserve(n)
            elif b.committed + b.reserved + n <= 1000:
                open_reservations.append(b.reserve(n))
        elif open_reservations:
            r = open_reservations.pop(0)
            if op == "commit":
                r.commit(n)
                committed += r.tokens if bad else n   # bad usage data charges what was reserved
            else:
                r.release()
        assert b.reserved == sum(r.tokens for r in open_reservations)
        assert b.committed == committed


def test_thread_safety(registry):
    b = TokenBudget("t", limit=10**9, registry=registry)

    def work():
        for _ in range(2000):
            b.reserve(3).commit(2)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (b.committed, b.reserved) == (8 * 2000 * 2, 0)


def test_task_safety(registry):
    b = TokenBudget("a", limit=100, registry=registry)
    refused = 0

    async def agent():
        nonlocal refused
        for _ in range(50):
            try:
                async with b.reserve(10) as r:
                    await asyncio.sleep(0)
                    r.release()
            except BudgetExceeded:
                refused += 1

    async def main():
        await asyncio.gather(*(agent() for _ in range(20)))

    asyncio.run(main())
    assert b.reserved == 0 and b.committed == 0 and refused > 0  # 20 tasks hold up to 200 > 100
