"""Refunds and disputes of a payment, in tokens.

A payment is a token pack bought through Checkout or a paid subscription invoice; its tokens are
what it bought (the pack, or the allowance the invoice granted). A refund removes tokens in
proportion to the payment's cumulative refunded amount, applying only what changed since the last
refund seen. A dispute freezes what is left of the payment's tokens while it is open, and for good
once lost; once won, the frozen tokens come back. A closed dispute stays closed, so whatever order
a dispute's events arrive in, the end state is the one its last status implies. Tokens frozen by
a dispute count toward a later refund, so nothing is taken twice.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace


class DisputeStatus(enum.StrEnum):
    OPEN = "open"  # needs a response, under review, an inquiry: the tokens are frozen
    WON = "won"  # closed for the merchant (or an inquiry closed): the tokens come back
    LOST = "lost"  # closed for the customer: the tokens stay taken

    @property
    def closed(self) -> bool:
        return self is not DisputeStatus.OPEN


@dataclass(frozen=True)
class PaymentState:
    tokens: int
    amount_minor: int
    refunded_minor: int
    refund_reversed_tokens: int
    frozen_tokens: int
    dispute: DisputeStatus | None = None

    def __post_init__(self) -> None:
        assert 0 <= self.refund_reversed_tokens + self.frozen_tokens <= self.tokens


@dataclass(frozen=True)
class Reversal:
    """`take` tokens to remove from the payment's pool (negative: tokens given back)."""

    state: PaymentState
    take: int


def refund(state: PaymentState, cumulative_refunded_minor: int) -> Reversal:
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


def dispute(state: PaymentState, status: DisputeStatus) -> Reversal:
    """The payment's dispute moves to `status`: open or lost freezes what is not frozen yet, won
    gives back what is. Once closed, nothing moves it again (a late `created` is stale)."""
    if state.dispute is not None and state.dispute.closed:
        return Reversal(state, 0)
    if status is DisputeStatus.WON:
        return Reversal(replace(state, frozen_tokens=0, dispute=status), -state.frozen_tokens)
    freeze = state.tokens - state.refund_reversed_tokens - state.frozen_tokens
    return Reversal(replace(state, frozen_tokens=state.frozen_tokens + freeze, dispute=status), freeze)
