"""A price change in the catalog never changes a hold already made."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from meter import catalog
from meter.v1 import meter_pb2 as pb
from support import funded_account, reserve_request


def _catalog(
    version: str, input_weight: str, output_weight: str, output_price: str, cached: str, label_key: str
) -> catalog.Catalog:
    """`cached`: the cache reads' weight and price; `label_key`: the one label usage is summed by."""
    data: dict[str, Any] = {
        "version": version,
        "models": [
            {
                "id": "basic",
                "provider": "internal",
                "input_usd_per_million": "1",
                "output_usd_per_million": output_price,
                "input_weight": input_weight,
                "output_weight": output_weight,
                "cached_input_weight": cached,
                "cached_input_usd_per_million": cached,
            }
        ],
        "usage": {"label_keys": [label_key]},
        "packs": [{"id": "pack_1000_tokens", "tokens": 1000, "price_minor": 100, "currency": "usd"}],
        "plans": [{"id": "free", "monthly_allowance_tokens": 0}],
    }
    return catalog.parse(data)


async def test_commit_uses_the_catalog_version_pinned_at_reserve(meters, engine) -> None:  # type: ignore[no-untyped-def]
    before = await meters(catalog=_catalog("v1", "1", "1", "2", "0.5", "team"))
    account = await funded_account(before.stub, 10_000)
    labels = {"team": "search", "agent": "a1"}
    hold = await before.stub.Reserve(reserve_request(account, input_tokens=100, max_output_tokens=100, labels=labels))
    assert (hold.held_tokens, hold.catalog_version) == (200, "v1")

    # A new deployment with new weights, prices and summed labels serves the Commit.
    after = await meters(catalog=_catalog("v2", "2", "3", "50", "0.9", "agent"))
    charge = await after.stub.Commit(
        pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=100, output_tokens=50, cached_input_tokens=11)
    )
    assert charge.charged_tokens == 156  # v1 weights: 100 * 1 + 50 * 1 + 11 * 0.5, rounded up
    assert charge.cost_micros == 206  # v1 prices: (100 * 1 + 50 * 2 + 11 * 0.5) micro-USD, rounded up
    async with engine.connect() as connection:
        summed = (
            await connection.execute(text("SELECT labels FROM usage_daily WHERE account_id = :a"), {"a": account})
        ).scalar_one()
    assert summed == {"team": "search"}  # v1's summed labels, pinned to the hold
    fresh = await after.stub.Reserve(reserve_request(account, input_tokens=100, max_output_tokens=100))
    assert (fresh.held_tokens, fresh.catalog_version) == (500, "v2")
    await after.stub.Release(pb.ReleaseRequest(reservation_id=fresh.reservation_id))
