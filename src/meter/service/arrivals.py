"""Which use case applies each kind of request that waited for what it refers to (service.waiting),
once that has arrived. The use cases store and release their waiting requests through waiting.py,
and an arrival can apply another's (an invoice brings the reversals and links that waited for it),
so waiting.py cannot import them: it is given this table, as Meter.waiting_appliers."""

from __future__ import annotations

from collections.abc import Mapping

from meter.service import invoices, payment_failures, reversals
from meter.service.context import WaitingApplier

WAITING_APPLIERS: Mapping[str, WaitingApplier] = {
    "reversal": reversals.apply_waiting,
    "invoice": invoices.apply_waiting_invoice,
    "payment_link": invoices.apply_waiting_link,
    "payment_failure": payment_failures.apply_waiting_failure,
}
