"""GetBalance: one consistent snapshot (crossing a period boundary first if one has passed)."""

from __future__ import annotations

from dataclasses import dataclass

from meter.domain import ids
from meter.domain.balance import Balance
from meter.domain.errors import AccountNotFound
from meter.domain.limits import Headroom, RateLimits, headroom
from meter.service.context import Meter
from meter.service.periods import current_account
from meter.service.ports import Store


@dataclass(frozen=True)
class AccountBalance:
    balance: Balance
    limits: RateLimits  # the account's own where set, its plan's elsewhere
    headroom: Headroom | None  # None when the account has no limit at all


async def get_balance(meter: Meter, *, account_id: str) -> AccountBalance:
    ids.account_id(account_id)

    async def work(store: Store) -> AccountBalance:
        account, now = await store.account_state(account_id)
        if account is None:
            raise AccountNotFound(account_id)
        if account.period.has_ended(now):
            account = await current_account(store, account_id)
            assert account is not None
        limits = await store.rate_limits(account_id, meter.catalog.plan_limits())
        # Only an account with limits pays for reading its counts.
        room = headroom(limits, await store.rate_usage(account_id, now)) if limits.any else None
        return AccountBalance(await store.balance(account_id), limits, room)

    return await meter.storage.transaction(work)
