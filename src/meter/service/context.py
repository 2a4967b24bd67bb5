"""What every use case is given: the catalog, the storage, what applies each kind of waiting request,
the service's parameters (bounds on requests, buckets per account, the sweep interval, the limits on
Checkout Sessions; rate limits are something else: domain.limits), a source of spread, and Stripe's
Checkout when meter sells through it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from meter.catalog import Catalog
from meter.domain.checkout import CheckoutLimits
from meter.service.ports import Storage, Store, StripeProvider


@dataclass(frozen=True)
class Parameters:
    """The service's settings that use cases need, from meter.config.Settings."""

    buckets: int = 16  # bucket rows per pool for new accounts
    default_ttl_seconds: int = 600
    max_ttl_seconds: int = 3600
    max_credit_tokens: int = 1_000_000_000  # one purchase or adjustment never exceeds this
    sweep_seconds: float = 1.0  # how often expired holds are given back (a rate limit's retry delay)
    checkout: CheckoutLimits = CheckoutLimits()
    webhook_payload_retention_days: int = 30  # a Stripe payload is deleted this long after its event last changed
    expiring_notice_hours: int = 72  # balance.expiring this long before the allowance expires (0: never)


@dataclass
class Meter:
    catalog: Catalog
    storage: Storage
    # By kind, what applies a request that waited for what it refers to (service.waiting), once
    # that has arrived. Given, not imported by waiting.py: the use cases that apply them store and
    # release their requests through it (service.arrivals lists them).
    waiting_appliers: Mapping[str, WaitingApplier]
    parameters: Parameters = field(default_factory=Parameters)
    # Picks the bucket a hold starts looking at, so concurrent holds spread over the rows.
    spread: random.Random = field(default_factory=random.Random)
    # Stripe's API (None without METER_STRIPE_API_KEY: the RPCs that call Stripe are refused).
    stripe: StripeProvider | None = None
    # Watchers' reads (WatchEvents) running at once in this process (METER_WATCH_READS).
    watch_reads: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))


# What a kind of waiting request does once what it waits for has arrived, in that transaction
# (the account's row locked): (meter, store, account_id, request, now) -> None. It checks before
# it writes, so a refusal leaves nothing half done.
WaitingApplier = Callable[[Meter, Store, str, dict[str, Any], datetime], Awaitable[None]]
