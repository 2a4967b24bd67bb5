"""SetBudget, DeleteBudget and ListBudgets: caps on what one label value's calls may use each
period of a budget's window. The hot path enforces and counts them (meter_hold_budgets, meter_settle_budgets); this
validates the requests and reads the budgets back."""

from __future__ import annotations

from dataclasses import dataclass

from meter.domain import ids
from meter.domain.budgets import Budget, BudgetKey, BudgetUnit, BudgetWindow, budget_cap
from meter.domain.errors import AccountNotFound, InvalidField
from meter.service.context import Meter
from meter.service.periods import current_account
from meter.service.ports import Store


@dataclass(frozen=True)
class SetBudget:
    budget: Budget
    created: bool


async def set_budget(
    meter: Meter,
    *,
    account_id: str,
    key: BudgetKey,
    unit: BudgetUnit | None,
    cap: int,
    window: BudgetWindow | None = None,
) -> SetBudget:
    """`window` None: the budget's own (the account's month for a new one)."""
    ids.account_id(account_id)
    key.checked()
    if unit is None:
        raise InvalidField("unit", "must be BUDGET_UNIT_TOKENS or BUDGET_UNIT_COST_MICROS")
    budget_cap(cap)

    async def work(store: Store) -> SetBudget:
        outcome = await store.set_budget(account_id, key, unit, cap, window)
        if outcome == "account_not_found":
            raise AccountNotFound(account_id)
        if outcome == "unit_changed":
            raise InvalidField("unit", "a budget keeps the unit it was created with: delete it to count in another")
        if outcome == "window_changed":
            raise InvalidField("window", "a budget keeps the window it was created with: delete it to count in another")
        [budget] = await store.budgets(account_id, key)
        return SetBudget(budget, created=outcome == "created")

    return await meter.storage.transaction(work)


async def delete_budget(meter: Meter, *, account_id: str, key: BudgetKey) -> bool:
    ids.account_id(account_id)
    key.checked()

    async def work(store: Store) -> bool:
        return await store.delete_budget(account_id, key)

    return await meter.storage.transaction(work)


async def list_budgets(meter: Meter, *, account_id: str) -> list[Budget]:
    ids.account_id(account_id)

    async def work(store: Store) -> list[Budget]:
        account, now = await store.account_state(account_id)
        if account is None:
            raise AccountNotFound(account_id)
        if account.period.has_ended(now):
            await current_account(store, account_id)  # a period that has passed shows as such
        return await store.budgets(account_id)

    return await meter.storage.transaction(work)
