"""Per-job budgets (wall time, turns, cost, attempts) and the live cost meter.

Cost is metered from each assistant message's ``usage`` with a price table per model, so
a run is stopped mid-flight when it crosses its budget; the CLI's own ``total_cost_usd``
replaces the estimate when the result arrives. The CLI's ``--max-budget-usd`` and
``--max-turns`` are passed too, but have been seen to overshoot: the meter is the guard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["DEFAULT_PRICES", "Budget", "CostMeter", "Price", "price_for"]


class Price(BaseModel):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float = Field(ge=0)
    cache_read: float = Field(ge=0)

    def cost(self, usage: dict[str, Any]) -> float:
        tokens = (
            self.input * _count(usage, "input_tokens")
            + self.output * _count(usage, "output_tokens")
            + self.cache_write * _count(usage, "cache_creation_input_tokens")
            + self.cache_read * _count(usage, "cache_read_input_tokens")
        )
        return tokens / 1_000_000


# matched by family name inside the model id; list prices of the current generation
DEFAULT_PRICES: dict[str, Price] = {
    "opus": Price(input=5, output=25, cache_write=6.25, cache_read=0.5),
    "sonnet": Price(input=3, output=15, cache_write=3.75, cache_read=0.3),
    "haiku": Price(input=1, output=5, cache_write=1.25, cache_read=0.1),
}
FALLBACK_FAMILY = "opus"  # unknown models are priced high: better stopped early than late


def price_for(model: str | None, table: dict[str, Price]) -> Price:
    name = (model or "").lower()
    for family, price in table.items():
        if family in name:
            return price
    return table.get(FALLBACK_FAMILY) or max(table.values(), key=lambda p: p.output)


@dataclass(frozen=True)
class Budget:
    wall_seconds: float
    max_turns: int | None = None
    max_cost_usd: float | None = None
    max_attempts: int = 1


@dataclass
class CostMeter:
    """Follows the stream: turns and estimated spend, checked against a budget."""

    price: Price
    budget: Budget
    estimated_usd: float = 0.0
    turns: int = 0
    _messages: set[str] = field(default_factory=set)

    def observe(self, event: dict[str, Any]) -> str | None:
        """Takes one stream event; returns ``budget_exceeded: …`` once a limit is crossed."""
        if event.get("type") == "assistant":
            message = event.get("message") or {}
            # the CLI repeats a message (and its usage) once per content block
            key = str(message.get("id") or id(message))
            if key not in self._messages:
                self._messages.add(key)
                self.turns += 1
                self.estimated_usd += self.price.cost(message.get("usage") or {})
        elif event.get("type") == "result":
            total = event.get("total_cost_usd")
            if isinstance(total, int | float):
                self.estimated_usd = float(total)
        return self.exceeded()

    def exceeded(self) -> str | None:
        if self.budget.max_cost_usd is not None and self.estimated_usd > self.budget.max_cost_usd:
            return "budget_exceeded: cost"
        if self.budget.max_turns is not None and self.turns > self.budget.max_turns:
            return "budget_exceeded: turns"
        return None


def _count(usage: dict[str, Any], key: str) -> float:
    value = usage.get(key)
    return float(value) if isinstance(value, int | float) else 0.0
