"""CreateCheckoutSession: sell a pack through Stripe Checkout, as the catalog prices it now, and
remember what was sold; and the refused purchases support lists.

The session is claimed in the database before Stripe is asked (so the account's limits count it
while it is being made, and a concurrent replay finds it), then Stripe creates it under an
idempotency key of the account and request_id, then its id is recorded. A replay of an unfinished
claim asks Stripe again with the same key and the same terms, and gets the same session.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from meter.domain import ids
from meter.domain.checkout import CheckoutOrder, CheckoutSession, refusal
from meter.domain.credits import RefusedPurchase
from meter.domain.errors import RequestIdReused, StripeNotConfigured, StripeRefused
from meter.domain.pages import Cursor, decode, encode, page_size
from meter.domain.urls import http_url
from meter.service.context import Meter
from meter.service.ledger import PAGE_TOKEN_KEY
from meter.service.ports import Store

REFUSED_PAGE = 100
REFUSED_PAGE_MAX = 1000


@dataclass(frozen=True)
class Opened:
    session: CheckoutSession
    created: bool  # False: a replay of the request_id
    now: datetime  # the database's time of the answer (whether the session is still open)


async def create_checkout_session(
    meter: Meter, *, account_id: str, pack_id: str, success_url: str, cancel_url: str, request_id: str
) -> Opened:
    ids.account_id(account_id)
    ids.idempotency_key(request_id, "request_id")
    http_url(success_url, "success_url")
    http_url(cancel_url, "cancel_url")
    provider = meter.stripe
    if provider is None:
        raise StripeNotConfigured()
    sold = meter.catalog.sold_now(pack_id)
    order = CheckoutOrder(account_id, request_id, sold, meter.catalog.pack(pack_id).name, success_url, cancel_url)
    session, claimed, now = await meter.storage.transaction(lambda store: _claim(meter, store, order))
    if session.session_id:
        return Opened(session, created=False, now=now)
    # Sold as the claim recorded it: a replay after a price change asks Stripe for the same terms.
    order = replace(order, sold=session.sold)
    try:
        made = await provider.create_session(order, session.expires_at)
    except StripeRefused:
        await meter.storage.transaction(lambda store: store.forget_session(account_id, request_id))
        raise
    await meter.storage.transaction(
        lambda store: store.record_created_session(account_id, request_id, made.session_id, made.url)
    )
    return Opened(replace(session, session_id=made.session_id, url=made.url), created=claimed, now=now)


async def _claim(meter: Meter, store: Store, order: CheckoutOrder) -> tuple[CheckoutSession, bool, datetime]:
    """The session this request_id claimed before, or a new claim if the limits allow one."""
    now = await store.now()
    await store.lock_checkouts(order.account_id)
    existing = await store.checkout_session(order.account_id, order.request_id)
    if existing is not None:
        if (differing := order.differing_field(existing)) is not None:
            raise RequestIdReused(order.request_id, differing)
        return existing, False, now
    limits = meter.parameters.checkout
    refused = refusal(limits, await store.recent_sessions(order.account_id, now), now)
    if refused is not None:
        raise refused
    session = CheckoutSession(
        account_id=order.account_id,
        request_id=order.request_id,
        sold=order.sold,
        success_url=order.success_url,
        cancel_url=order.cancel_url,
        created_at=now,
        expires_at=now + limits.lifetime,
    )
    await store.insert_checkout_session(session)
    return session, True, now


@dataclass(frozen=True)
class RefusedPage:
    purchases: list[RefusedPurchase]
    next_page_token: str


async def refused_purchases(
    meter: Meter, *, account_id: str, page_size_: int, page_token: str, unsettled_only: bool = False
) -> RefusedPage:
    """Newest first. A page token is signed (as the ledger's are) for the listing it continues."""
    if account_id:
        ids.account_id(account_id)
    size = page_size("page_size", page_size_, default=REFUSED_PAGE, maximum=REFUSED_PAGE_MAX)

    async def work(store: Store) -> RefusedPage:
        key = await store.secret(PAGE_TOKEN_KEY)
        listing = Cursor(account_id, "refused_purchases", "unsettled" if unsettled_only else "", "", 0)
        before = decode(page_token, key, listing) if page_token else 0
        rows = list(await store.refused_purchases(account_id, before, size + 1, unsettled_only=unsettled_only))
        more = len(rows) > size
        rows = rows[:size]
        token = encode(replace(listing, after=rows[-1].number), key) if more else ""
        return RefusedPage(rows, token)

    return await meter.storage.transaction(work)
