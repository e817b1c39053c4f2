"""Cost of an LLM call from maintained price data, and a rolling per-agent cost baseline.

Prices come from ``genai-prices`` (pydantic's maintained, MIT-licensed price database, bundled snapshot,
no network at run time). It is imported on the first priced call so ``import agentvigil`` stays cheap.
User overrides win over the database. An unknown model prices as ``None`` — never silently 0.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, fields
from statistics import median
from typing import Any

from .._safety import internal_error

log = logging.getLogger("agentvigil")
_warned_files: set[str] = set()


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens. ``input`` applies to uncached input tokens."""

    input: float
    output: float
    cache_read: float | None = None   # defaults to input
    cache_write: float | None = None  # defaults to input

    def __post_init__(self) -> None:
        # A NaN or negative price would poison every cost sum it touches, so refuse it where it is made.
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in ("cache_read", "cache_write"):
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"ModelPrice.{f.name} must be a finite number >= 0, got {value!r}")

    def cost(self, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int) -> float:
        uncached = max(input_tokens - cache_read - cache_write, 0)
        read = self.input if self.cache_read is None else self.cache_read
        write = self.input if self.cache_write is None else self.cache_write
        return (uncached * self.input + cache_read * read + cache_write * write + output_tokens * self.output) / 1e6


class PriceBook:
    """Looks up the cost of a call. Thread-safe; never raises from ``cost``.

    Lookups are cached per model, found or not, so each model costs one database lookup. The caches hold at
    most ``cache_size`` models each (oldest out first; ``cache_evictions`` counts the overflow), so a stream
    of distinct model names cannot grow memory without bound.
    """

    def __init__(self, overrides: dict[str, ModelPrice] | None = None, use_database: bool = True, *,
                 cache_size: int = 4096):
        if cache_size < 1:
            raise ValueError("cache_size must be >= 1")
        self._overrides = dict(overrides or {})
        self._use_database = use_database
        self.cache_size = cache_size
        self.cache_evictions = 0
        self._unknown: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()
        self._calc: Any = None
        self._rates: OrderedDict[tuple[str, str], ModelPrice] = OrderedDict()

    @classmethod
    def from_env(cls) -> "PriceBook":
        """``AGENTVIGIL_PRICES_FILE``: JSON ``{"model" or "provider/model": {"input": .., "output": ..,
        "cache_read": .., "cache_write": ..}}`` in USD per million tokens.

        Never raises: an unreadable file or a file that is not such an object is ignored, and entries with
        missing, unknown, non-numeric, negative or non-finite prices are skipped; either way the problem is
        logged once per file and counted in ``agentvigil_internal_errors_total{component="pricing"}``."""
        from ..settings import env_str

        path = env_str("AGENTVIGIL_PRICES_FILE")
        return cls(_load_prices(path) if path else None)

    def set_price(self, model: str, price: ModelPrice, provider: str | None = None) -> None:
        with self._lock:
            self._overrides[f"{provider}/{model}" if provider else model] = price
            self._unknown.pop((provider or "", model), None)

    def cost(self, provider: str, model: str, input_tokens: int, output_tokens: int,
             cache_read: int = 0, cache_write: int = 0) -> float | None:
        """Cost in USD, or ``None`` when the model is unknown. ``input_tokens`` includes cached tokens.

        Never raises: token counts that are not finite numbers >= 0, or a failure of the price database, price
        the call as ``None`` and are counted as internal errors (component ``pricing``)."""
        try:
            tokens = _token_counts(input_tokens, output_tokens, cache_read, cache_write)
            override = self._overrides.get(f"{provider}/{model}") or self._overrides.get(model)
            if override is not None:
                return override.cost(*tokens)
            key = (provider, model)
            if not self._use_database or key in self._unknown:
                return None
        except Exception as exc:
            internal_error("pricing", exc)
            return None
        try:
            return self._database_cost(provider, model, *tokens)
        except Exception as exc:
            if not isinstance(exc, LookupError):  # LookupError is the database's "unknown model"
                internal_error("pricing", exc)
            with self._lock:
                self._remember(self._unknown, key, None)
            return None

    def _remember(self, cache: OrderedDict, key: tuple[str, str], value: Any) -> None:
        """Insert into a bounded cache, evicting the oldest entry when full; caller holds the lock."""
        if key not in cache and len(cache) >= self.cache_size:
            cache.popitem(last=False)
            self.cache_evictions += 1
        cache[key] = value

    def _trim_database_caches(self) -> None:
        # genai-prices memoises every model name it is asked about, found or not, without a bound. Our own
        # bounded caches stand in front of it, so emptying its memo when it outgrows ours only costs a
        # re-lookup. Its internals may change: then this quietly does nothing.
        try:
            snapshot = self._calc.data_snapshot.get_snapshot()
            for name in ("_provider_cache", "_provider_misses", "_lookup_cache"):
                memo = getattr(snapshot, name, None)
                if memo is not None and len(memo) > self.cache_size:
                    memo.clear()
        except Exception as exc:
            internal_error("pricing", exc)

    def _database_cost(self, provider: str, model: str, input_tokens: int, output_tokens: int, cache_read: int,
                       cache_write: int) -> float:
        # Linear per-token rates are probed once per model (a genai-prices lookup costs ~100 µs). Requests
        # large enough to reach long-context price tiers still go through the exact calculation.
        rates = self._rates.get((provider, model))
        if rates is None:
            rates = self._probe(provider, model)
        if input_tokens > _TIER_SAFE_TOKENS:
            return self._exact(provider, model, input_tokens, output_tokens, cache_read, cache_write)
        return rates.cost(input_tokens, output_tokens, cache_read, cache_write)

    def _exact(self, provider: str, model: str, input_tokens: int, output_tokens: int, cache_read: int,
               cache_write: int) -> float:
        if self._calc is None:
            import genai_prices  # deferred: ~100 ms import

            self._calc = genai_prices
        usage = self._calc.Usage(input_tokens=input_tokens, output_tokens=output_tokens,
                                 cache_read_tokens=cache_read or None, cache_write_tokens=cache_write or None)
        try:
            try:
                result = self._calc.calc_price(usage, model, provider_id=provider)
            except LookupError:
                result = self._calc.calc_price(usage, model)  # provider name we don't know (e.g. a proxy)
        finally:
            self._trim_database_caches()
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
            self._remember(self._rates, (provider, model), rates)
        return rates


def _token_counts(*counts: Any) -> tuple[int, int, int, int]:
    """Token counts as ints; None means 0 (a provider that does not report cache use)."""
    out = []
    for n in counts:
        if n is None:
            n = 0
        real = isinstance(n, numbers.Real) and not isinstance(n, bool)
        if not real or not math.isfinite(float(n)) or n < 0:
            raise ValueError(f"token count must be a finite number >= 0, got {n!r}")
        out.append(int(n))
    return out[0], out[1], out[2], out[3]


_PRICE_FIELDS = frozenset(f.name for f in fields(ModelPrice))


def _load_prices(path: str) -> dict[str, ModelPrice]:
    """Parse a prices file, keeping the valid entries. Problems are counted, and logged once per file."""
    problems: list[str] = []
    prices: dict[str, ModelPrice] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
        if not isinstance(raw, dict):
            raise ValueError(f"expected a JSON object of model prices, got {type(raw).__name__}")
    except Exception as exc:  # also RecursionError from absurdly nested JSON
        problems.append(f"file ignored: {exc}")
        raw = {}
    for key, value in raw.items():
        try:
            if not isinstance(value, dict):
                raise ValueError(f"expected an object, got {type(value).__name__}")
            unknown = sorted(set(value) - _PRICE_FIELDS)
            if unknown:
                raise ValueError(f"unknown field {unknown[0]!r}")
            missing = [name for name in ("input", "output") if name not in value]
            if missing:
                raise ValueError(f"missing field {missing[0]!r}")
            prices[key] = ModelPrice(**value)
        except Exception as exc:
            problems.append(f"entry {key!r} skipped: {exc}")
    for problem in problems:
        internal_error("pricing", ValueError(f"AGENTVIGIL_PRICES_FILE={path}: {problem}"))
    if problems and path not in _warned_files:
        _warned_files.add(path)
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        log.warning("agentvigil: AGENTVIGIL_PRICES_FILE=%s: %s", path, shown)
    return prices


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
