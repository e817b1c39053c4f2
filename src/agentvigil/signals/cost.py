"""Cost of an LLM call from maintained price data, and a rolling per-agent cost baseline.

Prices come from ``genai-prices`` (pydantic's maintained, MIT-licensed price database, bundled snapshot,
no network at run time). It is imported on the first priced call so ``import agentvigil`` stays cheap.
User overrides win over the database. An unknown model prices as ``None`` — never silently 0.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from dataclasses import dataclass
from statistics import median

log = logging.getLogger("agentvigil")


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens. ``input`` applies to uncached input tokens."""

    input: float
    output: float
    cache_read: float | None = None   # defaults to input
    cache_write: float | None = None  # defaults to input

    def cost(self, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int) -> float:
        uncached = max(input_tokens - cache_read - cache_write, 0)
        read = self.input if self.cache_read is None else self.cache_read
        write = self.input if self.cache_write is None else self.cache_write
        return (uncached * self.input + cache_read * read + cache_write * write + output_tokens * self.output) / 1e6


class PriceBook:
    """Looks up the cost of a call. Thread-safe; caches misses so unknown models cost one lookup."""

    def __init__(self, overrides: dict[str, ModelPrice] | None = None, use_database: bool = True):
        self._overrides = dict(overrides or {})
        self._use_database = use_database
        self._unknown: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._calc = None
        self._rates: dict[tuple[str, str], ModelPrice] = {}

    @classmethod
    def from_env(cls) -> "PriceBook":
        """``AGENTVIGIL_PRICES_FILE``: JSON ``{"model" or "provider/model": {"input": .., "output": ..,
        "cache_read": .., "cache_write": ..}}`` in USD per million tokens."""
        overrides: dict[str, ModelPrice] = {}
        path = os.environ.get("AGENTVIGIL_PRICES_FILE")
        if path:
            try:
                with open(path, encoding="utf-8") as fh:
                    raw = json.load(fh)
                overrides = {key: ModelPrice(**value) for key, value in raw.items()}
            except (OSError, ValueError, TypeError) as exc:
                log.warning("agentvigil: ignoring AGENTVIGIL_PRICES_FILE=%s: %s", path, exc)
        return cls(overrides)

    def set_price(self, model: str, price: ModelPrice, provider: str | None = None) -> None:
        with self._lock:
            self._overrides[f"{provider}/{model}" if provider else model] = price
            self._unknown.discard((provider or "", model))

    def cost(self, provider: str, model: str, input_tokens: int, output_tokens: int,
             cache_read: int = 0, cache_write: int = 0) -> float | None:
        """Cost in USD, or ``None`` when the model is unknown. ``input_tokens`` includes cached tokens."""
        override = self._overrides.get(f"{provider}/{model}") or self._overrides.get(model)
        if override is not None:
            return override.cost(input_tokens, output_tokens, cache_read, cache_write)
        if not self._use_database or (provider, model) in self._unknown:
            return None
        try:
            return self._database_cost(provider, model, input_tokens, output_tokens, cache_read, cache_write)
        except LookupError:
            with self._lock:
                self._unknown.add((provider, model))
            return None

    def _database_cost(self, provider, model, input_tokens, output_tokens, cache_read, cache_write) -> float:
        # Linear per-token rates are probed once per model (a genai-prices lookup costs ~100 µs). Requests
        # large enough to reach long-context price tiers still go through the exact calculation.
        rates = self._rates.get((provider, model))
        if rates is None:
            rates = self._probe(provider, model)
        if input_tokens > _TIER_SAFE_TOKENS:
            return self._exact(provider, model, input_tokens, output_tokens, cache_read, cache_write)
        return rates.cost(input_tokens, output_tokens, cache_read, cache_write)

    def _exact(self, provider, model, input_tokens, output_tokens, cache_read, cache_write) -> float:
        if self._calc is None:
            import genai_prices  # deferred: ~100 ms import

            self._calc = genai_prices
        usage = self._calc.Usage(input_tokens=input_tokens, output_tokens=output_tokens,
                                 cache_read_tokens=cache_read or None, cache_write_tokens=cache_write or None)
        try:
            result = self._calc.calc_price(usage, model, provider_id=provider)
        except LookupError:
            result = self._calc.calc_price(usage, model)  # provider name we don't know (e.g. a proxy)
        return float(result.total_price)

    def _probe(self, provider: str, model: str) -> ModelPrice:
        n = _PROBE_TOKENS
        scale = 1e6 / n
        uncached = self._exact(provider, model, n, 0, 0, 0) * scale
        rates = ModelPrice(
            input=uncached,
            output=self._exact(provider, model, 0, n, 0, 0) * scale,
            cache_read=self._exact(provider, model, n, 0, n, 0) * scale,
            cache_write=self._exact(provider, model, n, 0, 0, n) * scale,
        )
        with self._lock:
            self._rates[(provider, model)] = rates
        return rates


_PROBE_TOKENS = 100_000
_TIER_SAFE_TOKENS = 128_000  # long-context tiers start above this (e.g. 200k for Claude)


class CostBaseline:
    """Rolling median of the cost of recently completed runs. The median, not the mean: one runaway run
    must not drag the baseline up and hide the next one."""

    __slots__ = ("_costs", "min_runs", "_value")

    def __init__(self, window: int = 50, min_runs: int = 5):
        self._costs: deque[float] = deque(maxlen=window)
        self.min_runs = min_runs
        self._value: float | None = None

    @property
    def value(self) -> float | None:
        """The baseline, or None until ``min_runs`` runs have completed."""
        return self._value

    def add(self, cost: float) -> None:
        self._costs.append(cost)
        if len(self._costs) >= self.min_runs:
            self._value = median(self._costs)
