"""What every use case is given: the catalog, the storage, the service's parameters (bounds on requests,
buckets per account, the sweep interval; rate limits are something else: domain.limits) and a
source of spread."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from meter.catalog import Catalog
from meter.service.ports import Database


@dataclass(frozen=True)
class Parameters:
    """The service's settings that use cases need, from meter.config.Settings."""

    buckets: int = 16  # bucket rows per pool for new accounts
    default_ttl_seconds: int = 600
    max_ttl_seconds: int = 3600
    max_credit_tokens: int = 1_000_000_000  # one purchase or adjustment never exceeds this
    sweep_seconds: float = 1.0  # how often expired holds are given back (a rate limit's retry delay)


@dataclass
class Meter:
    catalog: Catalog
    storage: Database
    parameters: Parameters = field(default_factory=Parameters)
    # Picks the bucket a hold starts looking at, so concurrent holds spread over the rows.
    spread: random.Random = field(default_factory=random.Random)
