"""Grant and RevokeGrant: an account's own tokens (promotions, goodwill) with a priority and an
optional expiry, each granted once by its request_id. How grants are drawn, ended and taken back
is SQL's (meter_grant, meter_end_grants, meter_revoke_grant, meter_reserve, meter_settle); this
validates the requests and reads the results back."""

from __future__ import annotations

from dataclasses import dataclass

from meter.domain import ids
from meter.domain.balance import Balance
from meter.domain.errors import AccountNotFound, GrantNotFound, InvalidField, RequestIdReused
from meter.domain.grants import Grant, Granted, GrantRequest, Revoked
from meter.service import balance_warnings
from meter.service.context import Meter
from meter.service.periods import current_account
from meter.service.ports import Store


@dataclass(frozen=True)
class GrantAnswer:
    granted: Granted
    balance: Balance


@dataclass(frozen=True)
class RevokeAnswer:
    revoked: Revoked
    balance: Balance


async def grant_tokens(meter: Meter, request: GrantRequest) -> GrantAnswer:
    limit = meter.parameters.max_credit_tokens
    if request.tokens > limit:
        raise InvalidField("tokens", f"must be at most {limit}")

    async def work(store: Store) -> GrantAnswer:
        request.checked(await store.now())
        if await current_account(store, request.account_id) is None:
            raise AccountNotFound(request.account_id)
        outcome, reused_field, grant = await store.grant(request)
        if outcome == "account_not_found":
            raise AccountNotFound(request.account_id)
        if outcome == "request_reused":
            raise RequestIdReused(request.request_id, reused_field or "tokens")
        assert grant is not None
        now_grant = await store.granted(request.account_id, grant.grant_id)
        assert now_grant is not None
        return GrantAnswer(Granted(now_grant, created=outcome == "granted"), await store.balance(request.account_id))

    answer = await meter.storage.transaction(work)
    await balance_warnings.announce(meter, answer.balance)
    return answer


async def revoke_grant(meter: Meter, *, account_id: str, grant_id: int) -> RevokeAnswer:
    ids.account_id(account_id)
    if grant_id <= 0:
        raise InvalidField("grant_id", "is required: a grant's id, as Grant answered it")

    async def work(store: Store) -> RevokeAnswer:
        if await current_account(store, account_id) is None:
            raise AccountNotFound(account_id)
        outcome, tokens = await store.revoke_grant(account_id, grant_id)
        if outcome == "not_found":
            raise GrantNotFound(account_id, grant_id)
        return RevokeAnswer(Revoked(tokens, revoked=outcome == "revoked"), await store.balance(account_id))

    answer = await meter.storage.transaction(work)
    await balance_warnings.announce(meter, answer.balance)
    return answer


def next_expiry(grants: list[Grant]) -> Grant | None:
    """The part of the balance that expires next with tokens left."""
    expiring = [g for g in grants if g.expires_at is not None and g.remaining > 0]
    return min(expiring, key=lambda g: g.expires_at or 0) if expiring else None
