"""How a refused purchase is settled: refunded (meter asks Stripe, or a refund made elsewhere
arrives as an event) or resolved with a note. Pure rules over `Settlement`; each answers the
settlement after the step, or refuses a step that would undo a settlement (a refunded payment is
not also resolved otherwise, a resolved one is not refunded through meter)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from meter.domain.credits import RefusalState, Settlement
from meter.domain.errors import RefusedPurchaseSettled

MAX_NOTE = 1000


def refund_requested(payment_ref: str, settlement: Settlement, now: datetime, caller: str) -> Settlement:
    """Asking again while the refund is on its way asks Stripe again (the same idempotency key
    gets the same refund); a refunded payment's answer is its settlement as it is."""
    if settlement.state is RefusalState.RESOLVED:
        raise RefusedPurchaseSettled(payment_ref, settlement.state.value, "refunded")
    if settlement.state is RefusalState.OPEN:
        return replace(settlement, state=RefusalState.REFUND_REQUESTED, settled_at=now, settled_by=caller)
    return settlement


def resolved(payment_ref: str, settlement: Settlement, note: str, now: datetime, caller: str) -> Settlement:
    """Resolving again keeps the first resolution; a refund asked for or made stays what settled it."""
    if settlement.state in (RefusalState.REFUND_REQUESTED, RefusalState.REFUNDED):
        raise RefusedPurchaseSettled(payment_ref, settlement.state.value, "resolved")
    if settlement.state is RefusalState.RESOLVED:
        return settlement
    return replace(settlement, state=RefusalState.RESOLVED, note=note, settled_at=now, settled_by=caller)


def refunded(
    settlement: Settlement, cumulative_minor: int, amount_minor: int, refund_ref: str, now: datetime
) -> Settlement:
    """A refund's event (Stripe's cumulative amount_refunded): an older or repeated one changes
    nothing; the whole amount refunded makes it refunded, whoever settled it before. The refund
    meter asked for stays the one named (an event names its charge)."""
    if cumulative_minor <= settlement.refunded_minor:
        return settlement
    after = replace(settlement, refunded_minor=cumulative_minor, refund_ref=settlement.refund_ref or refund_ref)
    if cumulative_minor >= amount_minor and settlement.state is not RefusalState.REFUNDED:
        after = replace(after, state=RefusalState.REFUNDED, settled_at=now, settled_by=settlement.settled_by)
    return after


def check_creditable(payment_ref: str, settlement: Settlement) -> None:
    """A refused payment a later event would credit after all: only while nothing was done about
    it (no refund asked for or made, not resolved), so that no payment is credited and given back."""
    if not settlement.creditable:
        state = settlement.state.value if settlement.state is not RefusalState.OPEN else "partly refunded"
        raise RefusedPurchaseSettled(payment_ref, state, "credited")
