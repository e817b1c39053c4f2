"""Faults in the guards (breaker, budget) and the price data: each must leave the agent unharmed."""

import asyncio
import functools
import gc
import inspect
import json
import logging
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from prometheus_client import REGISTRY, CollectorRegistry

import agentvigil
from agentvigil import BudgetExceeded, CircuitBreaker, CircuitOpenError, ModelPrice, PriceBook, RunKilled, TokenBudget
from agentvigil.instrumentation._common import Invocation, Options


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class RateLimited(Exception):
    status_code = 429


def internal_errors(component: str) -> float:
    return REGISTRY.get_sample_value("agentvigil_internal_errors_total", {"component": component}) or 0.0


def transitions(registry: CollectorRegistry, name: str, to: str, reason: str) -> float:
    labels = {"breaker": name, "to": to, "reason": reason}
    return registry.get_sample_value("agent_circuit_breaker_transitions_total", labels) or 0.0


def half_open_breaker(registry: CollectorRegistry, name: str = "b") -> CircuitBreaker:
    """A breaker whose recovery timeout has elapsed: the next allowed call is the probe."""
    clock = Clock()
    b = CircuitBreaker(name, failure_threshold=1, recovery_timeout=10, clock=clock, registry=registry)
    b.record_failure(RateLimited())
    assert b.state == "open"
    clock.now += 11
    return b


async def async_429() -> None:
    raise RateLimited()


class AsyncCallable:
    async def __call__(self) -> None:
        raise RateLimited()


# -- 1. async functions through the sync entry points ---------------------------------------------------------
def test_async_function_through_sync_call_is_refused_not_counted_as_success() -> None:
    reg = CollectorRegistry()
    b = CircuitBreaker("openai", failure_threshold=5, registry=reg)
    async_forms: list[Callable[..., Any]] = [async_429, functools.partial(async_429), AsyncCallable(), functools.partial(AsyncCallable())]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for fn in async_forms:
            with pytest.raises(TypeError, match="call_async"):
                b.call(fn)
        # A sync callable that returns a coroutine is only found out after the call: closed, then refused.
        for _ in range(5):
            with pytest.raises(TypeError, match="call_async"):
                b.call(lambda: async_429())
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]
    assert b.state == "closed" and b._failures == 0   # nothing recorded either way

    async def main() -> None:
        for fn in (async_429, lambda: async_429(), functools.partial(async_429), AsyncCallable()):
            with pytest.raises(RateLimited):
                await b.call_async(fn)
        assert b.state == "closed"
        with pytest.raises(RateLimited):
            await b(AsyncCallable())()          # the decorator form dispatches to call_async too
    asyncio.run(main())
    assert b.state == "open" and transitions(reg, "openai", "open", "rate_limit") == 1

    for fn in async_forms:
        assert inspect.iscoroutinefunction(b(fn))

    # Refusing in half-open takes no probe slot, and a refused returned coroutine gives its slot back.
    h = half_open_breaker(CollectorRegistry())
    with pytest.raises(TypeError):
        h.call(async_429)
    with pytest.raises(TypeError):
        h.call(lambda: async_429())
    assert h.state == "half_open"
    h.allow()                                   # the probe slot is still free
    with pytest.raises(CircuitOpenError):
        h.allow()


# -- 2. guard stops and cancellations during the half-open probe ----------------------------------------------
STOPS = [BudgetExceeded("b", 10, 0), RunKilled("operator"), asyncio.CancelledError(), KeyboardInterrupt()]


def _sync_paths(b: CircuitBreaker, stop: BaseException) -> list:
    def raiser() -> None:
        raise stop

    def with_block() -> None:
        with b:
            raise stop

    return [lambda: b.call(raiser), with_block, b(raiser)]


def _async_paths(b: CircuitBreaker, stop: BaseException) -> list:
    async def raiser() -> None:
        await asyncio.sleep(0)
        raise stop

    async def async_with() -> None:
        async with b:
            raise stop

    return [lambda: b.call_async(raiser), lambda: b.call_async(lambda: raiser()), async_with, b(raiser)]


@pytest.mark.parametrize("stop", STOPS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("path", range(7))
def test_guard_error_during_half_open_probe_releases_probe(stop: BaseException, path: int) -> None:
    reg = CollectorRegistry()
    b = half_open_breaker(reg)
    sync_paths, async_paths = _sync_paths(b, stop), _async_paths(b, stop)
    if path < len(sync_paths):
        with pytest.raises(type(stop)):
            sync_paths[path]()
    else:
        async def main() -> None:
            await async_paths[path - len(sync_paths)]()
        with pytest.raises(type(stop)):
            asyncio.run(main())
    assert b.state == "half_open"                           # the provider never answered: not closed
    assert transitions(reg, "b", "closed", "probe_succeeded") == 0
    b.allow()                                               # and the probe slot was given back
    b.record_success()
    assert b.state == "closed"


def test_guard_error_in_closed_state_neither_resets_nor_counts_failures() -> None:
    b = CircuitBreaker("c", failure_threshold=3, registry=CollectorRegistry())

    def fail() -> None:
        raise RateLimited()

    def stopped() -> None:
        raise RunKilled("x")

    for fn in (fail, fail, stopped, fail):
        with pytest.raises((RateLimited, RunKilled)):
            b.call(fn)
    assert b.state == "open"   # three consecutive provider failures; the stop in between was not a success


def test_budget_refusal_in_instrumented_probe_releases_probe() -> None:
    reg = CollectorRegistry()
    b = half_open_breaker(reg)
    budget = TokenBudget("tiny", limit=1, registry=reg)
    with pytest.raises(BudgetExceeded):
        Invocation.begin("openai", "chat", "gpt-4o", {"max_tokens": 100}, Options(breaker=b, budget=budget))
    assert b.state == "half_open"
    b.allow()


# -- 3. bad prices files ---------------------------------------------------------------------------------------
BAD_FILES = {
    "list": "[]",
    "null": "null",
    "string": '"prices"',
    "invalid_json": "{not json",
    "deeply_nested": "[" * 100_000,
    "entry_not_object": '{"m": 3}',
    "string_price": '{"m": {"input": "1", "output": 2}}',
    "bool_price": '{"m": {"input": true, "output": 2}}',
    "negative_price": '{"m": {"input": -1, "output": 2}}',
    "nan_price": '{"m": {"input": NaN, "output": 2}}',
    "infinite_price": '{"m": {"input": 1, "output": Infinity}}',
    "missing_output": '{"m": {"input": 1}}',
    "unknown_field": '{"m": {"input": 1, "output": 2, "ouptut": 3}}',
    "negative_cache_price": '{"m": {"input": 1, "output": 2, "cache_read": -0.5}}',
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_prices_file_is_counted_and_ignored(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "prices.json"
    path.write_text(BAD_FILES[name])
    monkeypatch.setenv("AGENTVIGIL_PRICES_FILE", str(path))
    before = internal_errors("pricing")
    mon = agentvigil.Monitor("prices-agent", registry=CollectorRegistry(), heartbeat=False)
    try:
        assert internal_errors("pricing") == before + 1
        assert mon.prices.cost("acme", "m", 1000, 1000) is None      # the bad entry was not used
    finally:
        mon.close()


def test_bad_prices_file_keeps_good_entries_and_logs_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps({"good": {"input": 1, "output": 2, "cache_read": 0.1}, "bad": {"input": "x"},
                                "worse": None}))
    monkeypatch.setenv("AGENTVIGIL_PRICES_FILE", str(path))
    before = internal_errors("pricing")
    with caplog.at_level(logging.WARNING, logger="agentvigil"):
        books = [PriceBook.from_env(), PriceBook.from_env()]
    assert internal_errors("pricing") == before + 4               # two skipped entries, counted per load
    warned = [r for r in caplog.records if str(path) in r.getMessage()]
    assert len(warned) == 1 and "'bad'" in warned[0].getMessage() and "'worse'" in warned[0].getMessage()
    assert books[0].cost("acme", "good", 1_000_000, 1_000_000, cache_read=500_000) == pytest.approx(
        0.5 + 0.05 + 2)


@pytest.mark.parametrize("tokens", [(None, 10), (math.nan, 10), (-1, 10), ("10", 10), (10, math.inf)])
def test_bad_token_counts_never_raise_from_pricing(tokens: tuple) -> None:
    book = PriceBook({"m": ModelPrice(input=1, output=2)})
    if tokens[0] is None:
        assert book.cost("acme", "m", *tokens) == pytest.approx(2e-5)   # None means "not reported": 0
    else:
        before = internal_errors("pricing")
        assert book.cost("acme", "m", *tokens) is None
        assert internal_errors("pricing") == before + 1


def test_model_price_names_the_bad_field() -> None:
    with pytest.raises(ValueError, match="ModelPrice.output"):
        ModelPrice(input=1, output=math.nan)


# -- 4. a flood of distinct unknown model names --------------------------------------------------------------
def test_unknown_model_flood_keeps_price_cache_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    book = PriceBook(cache_size=4096)
    lookups = []

    def unknown(provider: str, model: str, *tokens: int) -> float:
        lookups.append(model)
        raise LookupError(model)

    monkeypatch.setattr(book, "_database_cost", unknown)
    for i in range(200_000):
        assert book.cost("openai", f"model-{i}", 10, 10) is None
        assert len(book._unknown) <= 4096
    assert book.cache_evictions == 200_000 - 4096
    assert book.cost("openai", "model-199999", 10, 10) is None
    assert len(lookups) == 200_000                        # the most recent misses are still cached


def test_unknown_model_flood_keeps_price_database_memo_bounded() -> None:
    from agentvigil.metrics import default_metrics
    from agentvigil.signals.price_data import price_data

    def evictions() -> float:
        return default_metrics().registry.get_sample_value("agentvigil_price_cache_evictions_total") or 0.0

    before = evictions()
    book = PriceBook(cache_size=64)
    data = price_data()
    sizes = {k: len(v) for k, v in vars(data).items() if isinstance(v, (dict, list, set, tuple))}
    for i in range(300):
        assert book.cost("openai", f"no-such-model-{i}", 10, 10) is None
        assert len(book._unknown) <= 64
    # the price data keeps no per-name memo: PriceBook's bounded caches are the only ones
    assert {k: len(v) for k, v in vars(data).items() if isinstance(v, (dict, list, set, tuple))} == sizes
    assert book.cache_evictions == 300 - 64
    assert evictions() - before == 300 - 64
    assert book.cost("openai", "gpt-4o", 1000, 1000)        # known models still price after the evictions


# -- 5. non-finite and negative token amounts ----------------------------------------------------------------
@pytest.mark.parametrize("bad", [math.inf, math.nan, -1, -math.inf, None, "10", True])
def test_non_finite_tokens_never_corrupt_budget(bad: object) -> None:
    reg = CollectorRegistry()
    b = TokenBudget("t", limit=100, registry=reg)
    with pytest.raises(ValueError, match="tokens"):
        b.reserve(bad)  # type: ignore[arg-type]
    assert (b.committed, b.reserved) == (0, 0)
    assert reg.get_sample_value("agent_budget_utilization_ratio", {"budget": "t"}) == 0

    before = internal_errors("budget")
    r = b.reserve(30)
    r.commit(bad)  # type: ignore[arg-type]
    if bad is None:                                       # None is the documented "as reserved"
        assert internal_errors("budget") == before
    else:
        assert internal_errors("budget") == before + 1
    assert (b.committed, b.reserved) == (30, 0)
    assert reg.get_sample_value("agent_budget_utilization_ratio", {"budget": "t"}) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="limit"):
        TokenBudget("t2", limit=bad, registry=reg)  # type: ignore[arg-type]


# -- 6. a metrics registry that fails ------------------------------------------------------------------------
class RefusingRegistry(CollectorRegistry):
    def register(self, collector: object) -> None:
        raise RuntimeError("registry is read-only")


def test_failing_metrics_registry_does_not_break_guard_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    def exercise(registry: CollectorRegistry, name: str) -> None:
        clock = Clock()
        b = CircuitBreaker(name, failure_threshold=2, recovery_timeout=5, clock=clock, registry=registry)
        for _ in range(2):
            with pytest.raises(RateLimited):
                b.call(lambda: (_ for _ in ()).throw(RateLimited()))
        assert b.state == "open"                       # the decisions still work without metrics
        with pytest.raises(CircuitOpenError):
            b.call(lambda: None)
        budget = TokenBudget(name, limit=10, registry=registry)
        budget.reserve(8).commit()
        with pytest.raises(BudgetExceeded):
            budget.reserve(5)
        assert budget.committed == 8

    before = internal_errors("breaker"), internal_errors("budget")
    exercise(RefusingRegistry(), "refused")
    assert internal_errors("breaker") > before[0] and internal_errors("budget") > before[1]

    def broken_set(self: object, value: float) -> None:
        raise RuntimeError("gauge is broken")

    monkeypatch.setattr(prometheus_client.Gauge, "set", broken_set)
    before = internal_errors("breaker"), internal_errors("budget")
    exercise(CollectorRegistry(), "broken-gauge")
    assert internal_errors("breaker") > before[0] and internal_errors("budget") > before[1]
