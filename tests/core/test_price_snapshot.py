"""The bundled price snapshot is genai-prices' data, and pricing from it equals genai-prices' ``calc_price``.

genai-prices is a test dependency only: these tests are the contract that lets the core drop it (and its ten
dependencies) from a clean install.
"""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agentvigil.signals import price_data as pd
from agentvigil.signals.cost import PriceBook

genai_prices = pytest.importorskip("genai_prices")
from genai_prices import Usage, calc_price  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("update_prices", ROOT / "scripts" / "update_prices.py")
assert _spec is not None and _spec.loader is not None
update_prices = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(update_prices)

# (input, output, cache read, cache write): plain, cached, and prompts past the 128k / 200k / 1M tiers
USAGES = [(1000, 500, 0, 0), (1000, 500, 300, 100), (150_000, 2000, 0, 0), (250_000, 1000, 50_000, 10_000),
          (1_200_000, 10, 0, 0), (0, 0, 0, 0)]
NOW = datetime.now(UTC)


def genai(model: str, provider: str | None, tokens: tuple[int, int, int, int],
          when: datetime = NOW) -> tuple[str, str, float] | None:
    inp, out, read, write = tokens
    usage = Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=read or None,
                  cache_write_tokens=write or None)
    try:
        got = calc_price(usage, model, provider_id=provider, genai_request_timestamp=when)
    except LookupError:
        return None
    return got.provider.id, got.model.id, float(got.total_price)


def ours(model: str, provider: str | None, tokens: tuple[int, int, int, int],
         when: datetime = NOW) -> tuple[str, str, float] | None:
    try:
        found_provider, entry = pd.price_data().find(model, provider)
    except LookupError:
        return None
    return found_provider.id, entry.id, entry.prices_at(when).cost(*tokens)


def assert_same(model: str, provider: str | None, tokens: tuple[int, int, int, int], when: datetime = NOW) -> None:
    theirs, mine = genai(model, provider, tokens, when), ours(model, provider, tokens, when)
    if theirs is None or mine is None:
        assert mine == theirs, (model, provider, tokens)
    else:
        assert mine[:2] == theirs[:2], (model, provider)
        assert mine[2] == pytest.approx(theirs[2], rel=1e-12, abs=1e-9), (model, provider, tokens, when)


def names(clause: dict[str, Any]) -> list[str]:
    """Names a clause was written for: its equals and starts_with strings."""
    (kind, arg), = clause.items()
    if kind in ("or", "and"):
        return [n for c in arg for n in names(c)]
    return [arg] if kind in ("equals", "starts_with") else []


def snapshot_raw() -> dict[str, Any]:
    return json.loads(pd.SNAPSHOT.read_text(encoding="utf-8"))


def test_snapshot_is_current_with_the_installed_genai_prices() -> None:
    committed = pd.SNAPSHOT.read_text(encoding="utf-8")
    fresh = update_prices.render(update_prices.build())
    version = json.loads(committed)["version"]
    assert fresh == committed, (
        f"src/agentvigil/data/prices.json (genai-prices {version}) differs from the installed genai-prices "
        f"{genai_prices.__version__}: run python scripts/update_prices.py and commit the result")


def test_snapshot_keeps_the_licence_and_attribution() -> None:
    raw = snapshot_raw()
    assert raw["source"] == "genai-prices" and "MIT" in raw["license"]
    notice = (pd.SNAPSHOT.parent / "LICENSE-genai-prices").read_text(encoding="utf-8")
    assert "MIT" in notice and "Pydantic" in notice


@pytest.mark.parametrize("tokens", USAGES, ids=lambda t: "-".join(map(str, t)))
def test_every_model_prices_as_genai_prices(tokens: tuple[int, int, int, int]) -> None:
    checked = 0
    for provider in snapshot_raw()["providers"]:
        for model in provider["models"]:
            for name in {model["id"], *names(model["match"])}:
                assert_same(name, provider["id"], tokens)
                checked += 1
    assert checked > 2000


def test_dated_and_time_of_day_prices_follow_genai_prices() -> None:
    checked = 0
    for provider in snapshot_raw()["providers"]:
        for model in provider["models"]:
            if not isinstance(model["prices"], list):
                continue
            moments = [NOW, datetime(2023, 1, 1, tzinfo=UTC)]
            for conditional in model["prices"]:
                if "start_date" in conditional:
                    day = datetime.fromisoformat(conditional["start_date"]).replace(tzinfo=UTC)
                    moments += [day - timedelta(seconds=1), day, day + timedelta(hours=12)]
                if "start_time" in conditional:
                    midnight = NOW.replace(hour=0, minute=0, second=0, microsecond=0)
                    for second in (conditional["start_time"], conditional["end_time"]):
                        moments += [midnight + timedelta(seconds=second + d) for d in (-1, 0, 1)]
                    moments.append(midnight.replace(tzinfo=None) + timedelta(seconds=conditional["start_time"]))
            for when in moments:
                assert_same(model["id"], provider["id"], (1000, 500, 200, 0), when)
                checked += 1
    assert checked > 100


# Names users pass, with the provider they report (None: no provider, "proxy": one genai-prices doesn't know)
ALIASES = [
    ("openai", "gpt-4o-mini-2024-07-18"), ("openai", "gpt-4o-2024-08-06"), ("openai", "gpt-4.1"),
    ("openai", "o3-mini"), ("openai", "gpt-5.2-20251211"), ("openai", "GPT-4o"), ("azure", "gpt-4o"),
    ("anthropic", "claude-3-5-sonnet-latest"), ("anthropic", "claude-3-5-sonnet-20241022"),
    ("anthropic", "claude-sonnet-4-20250514"), ("anthropic", "claude-opus-4-1"), ("anthropic", "claude-3-haiku"),
    ("aws", "anthropic.claude-3-5-sonnet-20240620-v1:0"), ("aws", "us.anthropic.claude-3-7-sonnet-20250219-v1:0"),
    ("aws_bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0"), ("aws", "amazon.nova-pro-v1:0"),
    ("google", "gemini-1.5-pro"), ("google", "gemini-2.5-pro"), ("google", "gemini-2.0-flash-001"),
    ("gcp.gemini", "gemini-2.5-flash"), ("google", "models/gemini-1.5-flash-002"), ("google", "claude-3-5-sonnet"),
    ("gemini", "gemini-2.5-pro"), ("mistral", "mistral-large-latest"), ("deepseek", "deepseek-chat"),
    ("groq", "llama-3.3-70b-versatile"), ("x-ai", "grok-3"), ("litellm", "anthropic/claude-3-5-haiku-20241022"),
    ("litellm", "gpt-4o"), ("openrouter", "openai/gpt-4o"), ("proxy", "gpt-4o-mini"), ("proxy", "claude-3-opus"),
    (None, "gpt-4o-mini"), (None, "claude-3-5-sonnet-latest"), (None, "gemini-1.5-flash"), ("", "gpt-4o"),
    ("openai", "no-such-model"), (None, "no-such-model"), ("acme", "mystery-model-9"),
]


@pytest.mark.parametrize("provider,model", ALIASES)
def test_aliases_price_as_genai_prices(provider: str | None, model: str) -> None:
    for tokens in USAGES:
        assert_same(model, provider, tokens)


@pytest.mark.parametrize("provider,model", [a for a in ALIASES if a[0] is not None])
def test_price_book_equals_genai_prices_with_its_provider_fallback(provider: str, model: str) -> None:
    book = PriceBook()
    for tokens in USAGES:
        expected = genai(model, provider, tokens) or genai(model, None, tokens)  # PriceBook's two-step lookup
        got = book.cost(provider, model, *tokens)
        if expected is None:
            assert got is None
        else:
            assert got == pytest.approx(expected[2], rel=1e-12, abs=1e-9)


def test_known_aliases_resolve() -> None:
    """The alias list above is not all misses: the common names find their model."""
    book = PriceBook()
    for provider, model in [("openai", "gpt-4o-mini-2024-07-18"), ("anthropic", "claude-3-5-sonnet-latest"),
                            ("aws", "anthropic.claude-3-5-sonnet-20240620-v1:0"), ("google", "gemini-1.5-pro")]:
        assert book.cost(provider, model, 1000, 100), (provider, model)


def test_tiers_apply_to_the_whole_prompt() -> None:
    """At and just past every tier's start, for every tiered model, the price is genai-prices' ("cliff" model:
    past the start every token pays the tier's price)."""
    checked = 0
    for provider in snapshot_raw()["providers"]:
        for model in provider["models"]:
            sets = model["prices"] if isinstance(model["prices"], list) else [{"prices": model["prices"]}]
            for price in (v for s in sets for v in s["prices"].values() if isinstance(v, dict)):
                for start, _ in price["tiers"]:
                    for inp in (start, start + 1):
                        assert_same(model["id"], provider["id"], (inp, 1000, inp // 4, 0))
                        checked += 1
    assert checked > 500
    entry = pd.price_data().find("gemini-1.5-pro", "google")[1].prices_at()
    start = entry.input[1][0][0]
    assert entry.cost(start + 1, 0, 0, 0) / (start + 1) > 1.5 * entry.cost(start, 0, 0, 0) / start


@pytest.mark.parametrize("start,end", [(3600, 14400), (79200, 3600), (0, 86399)])
def test_time_of_day_window_matches_genai_prices(start: int, end: int) -> None:
    """Off-peak windows, including one that wraps midnight (none in today's data), as genai-prices reads them."""
    from datetime import time

    from genai_prices.types import TimeOfDateConstraint

    theirs = TimeOfDateConstraint(start_time=time(start // 3600, start // 60 % 60, start % 60, tzinfo=UTC),
                                  end_time=time(end // 3600, end // 60 % 60, end % 60, tzinfo=UTC))
    mine = pd.PriceSet(input=1.0, start_second=start, end_second=end)
    day = datetime(2026, 3, 1, tzinfo=UTC)
    for second in sorted({0, 1, start - 1, start, start + 1, end - 1, end, end + 1, 43200, 86399}):
        when = day + timedelta(seconds=second % 86400)
        assert mine.active(when) == theirs.active(when), when


def test_lookup_keeps_no_unbounded_memo() -> None:
    """Unlike genai-prices, the snapshot remembers nothing per name: PriceBook's bounded caches are the only ones."""
    data = pd.price_data()
    before = {k: len(v) for k, v in vars(data).items() if isinstance(v, (dict, list, set))}
    for i in range(300):
        with pytest.raises(LookupError):
            data.find(f"no-such-model-{i}", "openai")
    assert {k: len(v) for k, v in vars(data).items() if isinstance(v, (dict, list, set))} == before
