"""The bundled LLM price snapshot (agentvigil/data/prices.json) and the lookup and arithmetic it needs.

The data is genai-prices' (pydantic's maintained price database, MIT licence, see data/LICENSE-genai-prices),
trimmed by scripts/update_prices.py to what PriceBook bills. This module follows genai-prices' own rules, so a
price here equals its ``calc_price`` (tests/core/test_price_snapshot.py checks every model):

- provider: by id, else by the provider's ``provider_match``; ``litellm`` with ``"provider/model"`` names the
  provider in the model; an unknown provider is a LookupError.
- model: the provider's models in order, first ``match`` wins (clauses equals / starts_with / ends_with /
  contains, case-insensitive; regex, on the lower-cased name; or / and), then the providers it falls back to
  (e.g. Azure serves OpenAI's models); a name with a compact date (``-20251211``) is retried dashed.
- prices: USD per million tokens; cache reads and writes are billed at their own price when the model has
  one, else as input; a tiered price applies the highest tier whose start the whole prompt exceeds to all
  tokens; a per-request fee is per thousand requests. Of a model's dated or time-of-day price sets the last
  one in force wins, else the first.
Stdlib only, loaded on first use (a few ms).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Callable

from .._safety import fork_safe_lock

SNAPSHOT = Path(__file__).resolve().parent.parent / "data" / "prices.json"

Matcher = Callable[[str], bool]
Price = Any  # float, or (base, ((start, price), ...)) for a price tiered by prompt size


def compile_clause(raw: dict[str, Any]) -> Matcher:
    """A match clause of genai-prices' data model as a predicate on a name."""
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ValueError(f"a match clause has exactly one key, got {raw!r}")
    (kind, arg), = raw.items()
    if kind in ("or", "and"):
        parts = [compile_clause(c) for c in arg]
        if kind == "or":
            return lambda text: any(p(text) for p in parts)
        return lambda text: all(p(text) for p in parts)
    if kind == "regex":
        pattern = re.compile(arg)
        return lambda text: pattern.search(text) is not None
    value = str(arg).lower()
    if kind == "equals":
        return lambda text: text.lower() == value
    if kind == "starts_with":
        return lambda text: text.lower().startswith(value)
    if kind == "ends_with":
        return lambda text: text.lower().endswith(value)
    if kind == "contains":
        return lambda text: value in text.lower()
    raise ValueError(f"unknown match clause {kind!r}")


def _price(raw: Any) -> Price:
    if isinstance(raw, dict):
        return float(raw["base"]), tuple((int(start), float(p)) for start, p in raw["tiers"])
    return float(raw)


@dataclass(frozen=True, slots=True)
class PriceSet:
    """One model's prices in force under one constraint (USD per million tokens; per thousand requests)."""

    input: Price = None
    output: Price = None
    cache_read: Price = None
    cache_write: Price = None
    requests: Price = None
    start_date: date | None = None
    start_second: int | None = None  # time-of-day window in UTC seconds, [start, end), may wrap midnight
    end_second: int | None = None

    @classmethod
    def parse(cls, raw: dict[str, Any], constraint: dict[str, Any]) -> "PriceSet":
        prices = {name: _price(raw[key]) for name, key in _KEYS if key in raw}
        start = constraint.get("start_date")
        return cls(**prices, start_date=date.fromisoformat(start) if start else None,
                   start_second=constraint.get("start_time"), end_second=constraint.get("end_time"))

    def active(self, now: datetime) -> bool:
        if self.start_date is not None:
            return now.date() >= self.start_date
        if self.start_second is not None and self.end_second is not None:
            second = now.hour * 3600 + now.minute * 60 + now.second + now.microsecond / 1e6
            if self.end_second < self.start_second:
                return second >= self.start_second or second < self.end_second
            return self.start_second <= second < self.end_second
        return True

    def cost(self, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int) -> float:
        # Cached tokens are part of input_tokens; those the model has no cache price for are billed as input.
        read = cache_read if self.cache_read is not None else 0
        write = cache_write if self.cache_write is not None else 0
        uncached = max(input_tokens - read - write, 0)
        total = (_rate(self.input, input_tokens) * uncached + _rate(self.output, input_tokens) * output_tokens
                 + _rate(self.cache_read, input_tokens) * read + _rate(self.cache_write, input_tokens) * write) / 1e6
        return total + _rate(self.requests, input_tokens) / 1000


def _rate(price: Price, prompt_tokens: int) -> float:
    if price is None:
        return 0.0
    if isinstance(price, float):
        return price
    base, tiers = price
    for start, tier_price in reversed(tiers):
        if prompt_tokens > start:
            return tier_price  # type: ignore[no-any-return]
    return base  # type: ignore[no-any-return]


_KEYS = (("input", "input_mtok"), ("output", "output_mtok"), ("cache_read", "cache_read_mtok"),
         ("cache_write", "cache_write_mtok"), ("requests", "requests_kcount"))


@dataclass(frozen=True, slots=True)
class ModelEntry:
    id: str
    match: Matcher
    prices: tuple[PriceSet, ...]

    def prices_at(self, now: datetime | None = None) -> PriceSet:
        """The last price set in force at ``now`` (default: the current time), else the first."""
        if len(self.prices) == 1:
            return self.prices[0]
        # as genai-prices: constraints are in UTC, and a naive time is UTC
        now = datetime.now(UTC) if now is None else now.astimezone(UTC) if now.tzinfo else now
        for price_set in reversed(self.prices):
            if price_set.active(now):
                return price_set
        return self.prices[0]


@dataclass(frozen=True, slots=True)
class ProviderEntry:
    id: str
    model_match: Matcher | None
    provider_match: Matcher | None
    fallback: tuple[str, ...]
    models: tuple[ModelEntry, ...]


_COMPACT_DATE = re.compile(r"(-)(20\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?=-|:|$)")


def _dashed_date(name: str) -> str:
    def replace(m: re.Match[str]) -> str:
        year, month, day = int(m.group(2)), int(m.group(3)), int(m.group(4))
        try:
            date(year, month, day)
        except ValueError:
            return m.group(0)
        return f"-{year:04d}-{month:02d}-{day:02d}"

    return _COMPACT_DATE.sub(replace, name)


class PriceData:
    """The parsed snapshot. Lookups keep no memo of their own: PriceBook's bounded caches stand in front."""

    def __init__(self, raw: dict[str, Any]):
        self.version: str = str(raw.get("version", "?"))
        providers = []
        for p in raw["providers"]:
            models = tuple(ModelEntry(
                id=m["id"], match=compile_clause(m["match"]),
                prices=(PriceSet.parse(m["prices"], {}),) if isinstance(m["prices"], dict) else
                tuple(PriceSet.parse(c["prices"], c) for c in m["prices"])) for m in p["models"])
            providers.append(ProviderEntry(
                id=p["id"], model_match=compile_clause(p["model_match"]) if "model_match" in p else None,
                provider_match=compile_clause(p["provider_match"]) if "provider_match" in p else None,
                fallback=tuple(p.get("fallback", ())), models=models))
        self.providers: tuple[ProviderEntry, ...] = tuple(providers)
        self._by_id = {p.id: p for p in self.providers}

    def provider_by_id(self, provider_id: str) -> ProviderEntry | None:
        wanted = provider_id.lower().strip()
        found = self._by_id.get(wanted)
        if found is not None:
            return found
        return next((p for p in self.providers if p.provider_match is not None and p.provider_match(wanted)), None)

    def find(self, model: str, provider_id: str | None = None) -> tuple[ProviderEntry, ModelEntry]:
        """The provider and model a call is priced as; LookupError when there is none."""
        name = model.lower()
        if provider_id and provider_id.lower() == "litellm" and "/" in name:
            actual, rest = name.split("/", 1)
            if actual and self.provider_by_id(actual) is not None:
                provider_id, name = actual, rest
        provider = None
        if provider_id is not None:
            provider = self.provider_by_id(provider_id)
            if provider is None and provider_id.lower() != "litellm":
                raise LookupError(f"unknown provider {provider_id!r}")
        if provider is None:
            provider = next((p for p in self.providers if p.model_match is not None and p.model_match(name)), None)
            if provider is None:
                raise LookupError(f"no provider matches model {model!r}")
        found = self._match(provider, name, fallback=True)
        if found is None:
            dashed = _dashed_date(name)
            if dashed != name:
                found = self._match(provider, dashed, fallback=True)
        if found is None:
            raise LookupError(f"unknown model {model!r} for provider {provider.id!r}")
        return provider, found

    def _match(self, provider: ProviderEntry, name: str, fallback: bool) -> ModelEntry | None:
        for entry in provider.models:
            if entry.match(name):
                return entry
        if fallback:
            for other_id in provider.fallback:  # one step only, as genai-prices does
                other = self._by_id.get(other_id)
                found = self._match(other, name, fallback=False) if other is not None else None
                if found is not None:
                    return found
        return None


_loaded: PriceData | None = None
_load_lock = fork_safe_lock()


def price_data() -> PriceData:
    """The bundled snapshot, parsed on first use."""
    global _loaded
    if _loaded is None:
        with _load_lock:
            if _loaded is None:
                with open(SNAPSHOT, encoding="utf-8") as fh:
                    _loaded = PriceData(json.load(fh))
    return _loaded
