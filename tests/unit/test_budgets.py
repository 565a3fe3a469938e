"""Prices, the live cost meter and which budget ends a run."""

from __future__ import annotations

import pytest

from agenticore.budgets import DEFAULT_PRICES, Budget, CostMeter, Price, price_for


def assistant(message_id: str, **usage: int) -> dict[str, object]:
    return {"type": "assistant", "message": {"id": message_id, "usage": usage}}


def test_given_usage_then_cost_follows_the_price_per_million_tokens() -> None:
    price = Price(input=3, output=15, cache_write=3.75, cache_read=0.3)

    cost = price.cost(
        {"input_tokens": 1_000_000, "output_tokens": 100_000, "cache_read_input_tokens": 10}
    )

    assert cost == pytest.approx(3 + 1.5 + 0.000003)


def test_given_model_names_then_prices_match_by_family_and_unknowns_price_high() -> None:
    assert price_for("claude-sonnet-4-5", DEFAULT_PRICES) == DEFAULT_PRICES["sonnet"]
    assert price_for("haiku", DEFAULT_PRICES) == DEFAULT_PRICES["haiku"]
    assert price_for("some-new-model", DEFAULT_PRICES) == DEFAULT_PRICES["opus"]
    assert price_for(None, DEFAULT_PRICES) == DEFAULT_PRICES["opus"]


def test_given_a_message_repeated_per_content_block_then_it_is_counted_once() -> None:
    meter = CostMeter(Price(input=1, output=1, cache_write=0, cache_read=0), Budget(60))

    for _ in range(3):
        meter.observe(assistant("msg_1", input_tokens=500_000, output_tokens=500_000))
    meter.observe(assistant("msg_2", output_tokens=1_000_000))

    assert meter.turns == 2
    assert meter.estimated_usd == pytest.approx(2.0)


def test_given_a_cost_budget_when_crossed_mid_run_then_the_meter_says_so() -> None:
    meter = CostMeter(
        Price(input=0, output=10, cache_write=0, cache_read=0), Budget(60, max_cost_usd=1.5)
    )

    assert meter.observe(assistant("a", output_tokens=100_000)) is None
    assert meter.observe(assistant("b", output_tokens=100_000)) == "budget_exceeded: cost"


def test_given_a_turn_budget_when_overshot_then_the_meter_says_so() -> None:
    meter = CostMeter(DEFAULT_PRICES["haiku"], Budget(60, max_turns=2))

    verdicts = [meter.observe(assistant(f"m{n}")) for n in range(3)]

    assert verdicts == [None, None, "budget_exceeded: turns"]


def test_given_the_final_result_then_its_total_replaces_the_estimate() -> None:
    meter = CostMeter(DEFAULT_PRICES["opus"], Budget(60, max_cost_usd=5))
    meter.observe(assistant("a", output_tokens=10_000))

    meter.observe({"type": "result", "total_cost_usd": 0.42})

    assert meter.estimated_usd == 0.42
