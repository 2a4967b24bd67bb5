"""Locking an account must not wait for transactions that merely reference it.

Every insert of a hold, ledger entry, purchase or event takes a KEY SHARE lock on its account row
(the foreign key check). An account lock taken FOR UPDATE conflicts with those: two purchases of
one account each inserted their purchase row, then each waited for the other's KEY SHARE to lock
the account — a deadlock on every concurrent pair, found by `meter chaos`. FOR NO KEY UPDATE
serialises writers of the account just the same and lets the references through.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.v1 import meter_pb2 as pb
from support import RunningMeter, balance, funded_account, new_id, pack_purchase


async def test_an_account_lock_does_not_wait_for_a_reference_to_the_account(meters, engine: AsyncEngine) -> None:  # type: ignore[no-untyped-def]
    meter: RunningMeter = await meters(lock_timeout_ms=300)
    account = await funded_account(meter.stub, 0)
    async with engine.connect() as other:
        # What an insert referencing the account does, held open by a transaction in flight.
        await other.execute(text("SELECT 1 FROM accounts WHERE account_id = :a FOR KEY SHARE"), {"a": account})
        adjusted = await meter.stub.Adjust(
            pb.AdjustRequest(
                account_id=account, pool=pb.POOL_PURCHASED, delta=500, reason="bonus", request_id=new_id("adj")
            )
        )
        bought = await meter.stub.CreditPurchase(pack_purchase(account))
        await other.rollback()
    assert adjusted.balance.purchased_remaining == 500
    assert bought.newly_credited and bought.balance.purchased_remaining == 1500
    assert (await balance(meter.stub, account)).purchased_remaining == 1500
