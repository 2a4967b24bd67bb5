"""Refunds and disputes of a purchase, in tokens.

A refund removes tokens in proportion to the payment's cumulative refunded amount, applying only
what changed since the last refund seen; a dispute freezes what is left of the pack; a won
dispute gives the frozen tokens back. Tokens frozen by a dispute count toward a later refund, so
nothing is taken twice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class PurchaseState:
    tokens: int
    amount_minor: int
    refunded_minor: int
    refund_reversed_tokens: int
    frozen_tokens: int

    def __post_init__(self) -> None:
        assert 0 <= self.refund_reversed_tokens + self.frozen_tokens <= self.tokens


@dataclass(frozen=True)
class Reversal:
    """`take` tokens to remove from the purchased pool (negative: tokens given back)."""

    state: PurchaseState
    take: int


def refund(state: PurchaseState, cumulative_refunded_minor: int) -> Reversal:
    if cumulative_refunded_minor <= state.refunded_minor:
        return Reversal(state, 0)  # an older or repeated refund event
    refunded = min(cumulative_refunded_minor, state.amount_minor)
    target = state.tokens if refunded == state.amount_minor else state.tokens * refunded // max(state.amount_minor, 1)
    due = max(0, target - state.refund_reversed_tokens)
    from_frozen = min(due, state.frozen_tokens)  # already removed by a dispute
    after = replace(
        state,
        refunded_minor=cumulative_refunded_minor,
        refund_reversed_tokens=max(target, state.refund_reversed_tokens),
        frozen_tokens=state.frozen_tokens - from_frozen,
    )
    return Reversal(after, due - from_frozen)


def dispute(state: PurchaseState) -> Reversal:
    freeze = state.tokens - state.refund_reversed_tokens - state.frozen_tokens
    return Reversal(replace(state, frozen_tokens=state.frozen_tokens + freeze), freeze)


def dispute_won(state: PurchaseState) -> Reversal:
    return Reversal(replace(state, frozen_tokens=0), -state.frozen_tokens)
