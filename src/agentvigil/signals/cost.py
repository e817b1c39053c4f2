"""Cost of an LLM call from maintained price data, and a rolling per-agent cost baseline.

Prices come from a snapshot of ``genai-prices`` (pydantic's maintained, MIT-licensed price database) bundled
as package data (price_data.py; no network at run time, no dependency). It is read on the first priced call so
``import agentvigil`` stays cheap. User overrides win over the database. An unknown model prices as ``None`` —
never silently 0.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from collections import OrderedDict, deque
from dataclasses import dataclass, fields
from statistics import median
from typing import TYPE_CHECKING, Any

from .._safety import fork_safe_lock, internal_error
from ..files import read_regular

if TYPE_CHECKING:
    from .price_data import ModelEntry

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

    Lookups are cached per (provider, model), found or not, so each model costs one database lookup. The caches
    hold at most ``cache_size`` models each (oldest out first; ``cache_evictions`` and
    ``agentvigil_price_cache_evictions_total`` count the overflow), so a stream of distinct model names cannot
    grow memory without bound.
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
        self._lock = fork_safe_lock()
        self._models: OrderedDict[tuple[str, str], ModelEntry] = OrderedDict()

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
            _count_eviction()
        cache[key] = value

    def _database_cost(self, provider: str, model: str, input_tokens: int, output_tokens: int, cache_read: int,
                       cache_write: int) -> float:
        entry = self._models.get((provider, model))
        if entry is None:
            entry = self._lookup(provider, model)
        return entry.prices_at().cost(input_tokens, output_tokens, cache_read, cache_write)

    def _lookup(self, provider: str, model: str) -> ModelEntry:
        from .price_data import price_data  # deferred: parsing the snapshot takes a few ms

        data = price_data()
        try:
            _, entry = data.find(model, provider)
        except LookupError:
            _, entry = data.find(model)  # a provider name we don't know (e.g. a proxy), or not its model
        with self._lock:
            self._remember(self._models, (provider, model), entry)
        return entry


def _count_eviction() -> None:
    # In the default registry, like the internal errors of pricing: a PriceBook may serve several Monitors.
    try:
        from ..metrics import default_metrics

        default_metrics().price_cache_evictions.inc()
    except Exception as exc:
        internal_error("pricing", exc)


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


MAX_PRICES_FILE = 16 * 1024 * 1024   # a prices file past this is ignored (it is read whole, at start)


def _load_prices(path: str) -> dict[str, ModelPrice]:
    """Parse a prices file, keeping the valid entries. Problems are counted, and logged once per file."""
    problems: list[str] = []
    prices: dict[str, ModelPrice] = {}
    try:
        raw = json.loads(read_regular(path, MAX_PRICES_FILE))   # not /dev/zero or a FIFO: read whole, at start
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
