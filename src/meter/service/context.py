"""What every use case is given: the catalog, the storage, the limits and a source of spread."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from meter.catalog import Catalog
from meter.service.ports import Storage


@dataclass(frozen=True)
class Limits:
    buckets: int = 16  # bucket rows per pool for new accounts
    default_ttl_seconds: int = 600
    max_ttl_seconds: int = 3600
    max_credit_tokens: int = 1_000_000_000  # one purchase or adjustment never exceeds this
    sweep_seconds: float = 1.0  # how often expired holds are given back (a rate limit's retry delay)


@dataclass
class Meter:
    catalog: Catalog
    storage: Storage
    limits: Limits = field(default_factory=Limits)
    # Picks the bucket a hold starts looking at, so concurrent holds spread over the rows.
    spread: random.Random = field(default_factory=random.Random)
