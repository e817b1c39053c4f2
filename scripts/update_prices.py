"""Regenerate src/agentvigil/data/prices.json from the installed genai-prices (dev and test time only).

    pip install -U genai-prices && python scripts/update_prices.py

The snapshot keeps what PriceBook bills: provider and model match clauses, and per model its prices for text
token counts (input, output, cache read, cache write, in USD per million tokens, flat or tiered by prompt size)
and any per-request fee, each price set with the date or time-of-day constraint it carries. Other units
(audio seconds, images, web searches, ...) are left out: PriceBook is never given those counts, and genai-prices
bills a count it is not given as 0. Prices selected by a request context (service tiers, batch) are left out
too: PriceBook prices standard requests. tests/core/test_price_snapshot.py checks the file against the
installed genai-prices, call for call.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "src" / "agentvigil" / "data" / "prices.json"
# genai-prices' price keys that token-only usage can make non-zero; see the module docstring
PRICE_KEYS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "requests_kcount")


def _number(value: Decimal) -> float | int:
    as_int = int(value)
    return as_int if value == as_int else float(value)


def _clause(clause: Any) -> dict[str, Any]:
    from genai_prices import types as t

    if isinstance(clause, t.ClauseOr):
        return {"or": [_clause(c) for c in clause.or_]}
    if isinstance(clause, t.ClauseAnd):
        return {"and": [_clause(c) for c in clause.and_]}
    for kind in ("equals", "starts_with", "ends_with", "contains", "regex"):
        if hasattr(clause, kind):
            return {kind: getattr(clause, kind)}
    raise TypeError(f"unknown match clause {clause!r}")


def _prices(model_price: Any) -> dict[str, Any]:
    from genai_prices import types as t

    out: dict[str, Any] = {}
    for key in PRICE_KEYS:
        value = model_price.__dict__.get(key)
        if value is None:
            continue
        if isinstance(value, t.TieredPrices):
            out[key] = {"base": _number(value.base),
                        "tiers": [[tier.start, _number(tier.price)] for tier in sorted(value.tiers,
                                                                                       key=lambda x: x.start)]}
        else:
            out[key] = _number(value)
    return out


def _seconds_utc(value: time) -> int:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    utc = datetime.combine(date(1970, 1, 1), aware).astimezone(UTC)
    return utc.hour * 3600 + utc.minute * 60 + utc.second


def _constraint(constraint: Any) -> dict[str, Any]:
    from genai_prices import types as t

    if constraint is None:
        return {}
    if isinstance(constraint, t.StartDateConstraint):
        return {"start_date": constraint.start_date.isoformat()}
    if isinstance(constraint, t.TimeOfDateConstraint):
        if constraint.start_time.microsecond or constraint.end_time.microsecond:
            raise ValueError(f"sub-second time constraint {constraint!r}")
        return {"start_time": _seconds_utc(constraint.start_time), "end_time": _seconds_utc(constraint.end_time)}
    raise TypeError(f"unknown price constraint {constraint!r}")


def _model(model: Any) -> dict[str, Any]:
    from genai_prices import types as t

    out: dict[str, Any] = {"id": model.id, "match": _clause(model.match)}
    if isinstance(model.prices, t.ModelPrice):
        out["prices"] = _prices(model.prices)
    else:
        out["prices"] = [{**_constraint(c.constraint), "prices": _prices(c.prices)} for c in model.prices]
    return out


def build() -> dict[str, Any]:
    """The snapshot of the installed genai-prices' bundled data, as a JSON-ready dict."""
    import genai_prices
    from genai_prices.data import providers

    snapshot: dict[str, Any] = {
        "source": "genai-prices",
        "version": genai_prices.__version__,
        "license": "MIT, Copyright (c) Pydantic Services Inc. 2025 to present; see LICENSE-genai-prices",
        "providers": [],
    }
    for provider in providers:
        entry: dict[str, Any] = {"id": provider.id}
        if provider.model_match is not None:
            entry["model_match"] = _clause(provider.model_match)
        if provider.provider_match is not None:
            entry["provider_match"] = _clause(provider.provider_match)
        if provider.fallback_model_providers:
            entry["fallback"] = list(provider.fallback_model_providers)
        entry["models"] = [_model(m) for m in provider.models]
        snapshot["providers"].append(entry)
    return snapshot


def render(snapshot: dict[str, Any]) -> str:
    """One model a line: compact, and a price change shows as a one-line diff."""
    head = {k: v for k, v in snapshot.items() if k != "providers"}
    lines = ["{" + json.dumps(head, separators=(",", ":"))[1:-1] + ',"providers":[']
    for i, provider in enumerate(snapshot["providers"]):
        top = {k: v for k, v in provider.items() if k != "models"}
        lines.append(json.dumps(top, separators=(",", ":"))[:-1] + ',"models":[')
        models = provider["models"]
        for j, model in enumerate(models):
            lines.append(json.dumps(model, separators=(",", ":")) + ("," if j < len(models) - 1 else ""))
        lines.append("]}" + ("," if i < len(snapshot["providers"]) - 1 else ""))
    lines.append("]}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    text = render(build())
    args.out.write_text(text, encoding="utf-8")
    json.loads(text)  # the line layout must still be one JSON document
    print(f"wrote {args.out} ({len(text) / 1000:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
