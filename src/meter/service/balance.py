"""GetBalance: one consistent snapshot (crossing a period boundary, or a grant's expiry, first if one
has passed), with the parts the balance is made of in the order Reserve draws them."""

from __future__ import annotations

from dataclasses import dataclass, field

from meter.domain import ids
from meter.domain.balance import Balance
from meter.domain.errors import AccountNotFound
from meter.domain.grants import Grant
from meter.domain.limits import Headroom, RateLimits, headroom
from meter.service.context import Meter
from meter.service.grants import next_expiry
from meter.service.periods import current_account
from meter.service.ports import Store


@dataclass(frozen=True)
class AccountBalance:
    balance: Balance
    limits: RateLimits  # the account's own where set, its plan's elsewhere
    headroom: Headroom | None  # None when the account has no limit at all
    grants: list[Grant] = field(default_factory=list)  # its pools and grants, in the order drawn
    next_expiry: Grant | None = None  # the part that expires next with tokens left


async def get_balance(meter: Meter, *, account_id: str) -> AccountBalance:
    ids.account_id(account_id)

    async def work(store: Store) -> AccountBalance:
        account = await current_account(store, account_id)  # a month ended or a grant expired: now
        if account is None:
            raise AccountNotFound(account_id)
        now = await store.now()
        limits = await store.rate_limits(account_id, meter.catalog.plan_limits())
        # Only an account with limits pays for reading its counts.
        room = headroom(limits, await store.rate_usage(account_id, now)) if limits.any else None
        grants = await store.live_grants(account_id)
        return AccountBalance(await store.balance(account_id), limits, room, grants, next_expiry(grants))

    return await meter.storage.transaction(work)
