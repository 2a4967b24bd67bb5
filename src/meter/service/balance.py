"""GetBalance: one consistent snapshot (crossing a period boundary first if one has passed)."""

from __future__ import annotations

from meter.domain import ids
from meter.domain.balance import Balance
from meter.domain.errors import AccountNotFound
from meter.service.context import Meter
from meter.service.periods import roll_over_if_ended
from meter.service.ports import Store


async def get_balance(meter: Meter, *, account_id: str) -> Balance:
    ids.account_id(account_id)

    async def work(store: Store) -> Balance:
        account, now = await store.account_state(account_id)
        if account is None:
            raise AccountNotFound(account_id)
        await roll_over_if_ended(store, account, now)
        return await store.balance(account_id)

    return await meter.storage.transaction(work)
