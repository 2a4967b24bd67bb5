"""ListLedgerEntries: newest first, every entry exactly once across pages even while new entries
are written, filters by kind and time, signed page tokens, and refusals of bad pages and ranges."""

from __future__ import annotations

import base64
from datetime import timedelta

import grpc
from google.protobuf import timestamp_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.v1 import meter_pb2 as pb
from support import (
    RunningMeter,
    database_now,
    expect_error,
    funded_account,
    ledger,
    new_id,
    pack_purchase,
    reserve_request,
)


async def _adjust(meter: RunningMeter, account: str, delta: int) -> None:
    request = pb.AdjustRequest(
        account_id=account, pool=pb.POOL_PURCHASED, delta=delta, reason=f"bonus {delta}", request_id=new_id("adj")
    )
    await meter.stub.Adjust(request)


async def test_pages_walk_every_entry_once_newest_first_while_entries_are_written(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    account = await funded_account(meter.stub, 1_000)
    for delta in range(1, 24):
        await _adjust(meter, account, delta)
    before = await ledger(engine, account)

    seen: list[pb.LedgerEntry] = []
    request = pb.ListLedgerEntriesRequest(account_id=account, page_size=5)
    pages = 0
    while True:
        page = await meter.stub.ListLedgerEntries(request)
        pages += 1
        assert len(page.entries) <= 5
        seen += page.entries
        await _adjust(meter, account, 1000 + pages)  # written while paging: newer than the listing
        if not page.next_page_token:
            break
        request = pb.ListLedgerEntriesRequest(account_id=account, page_size=5, page_token=page.next_page_token)

    assert pages == 5  # 24 entries, 5 a page
    ids = [e.entry_id for e in seen]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(before) == 24
    assert [(e.amount, e.ref) for e in reversed(seen)] == [(row["amount"], row["ref"]) for row in before]
    newest = seen[0]
    assert newest.kind == pb.ENTRY_KIND_ADJUSTMENT and newest.pool == pb.POOL_PURCHASED and newest.amount == 23
    assert newest.note == "bonus 23" and newest.created_at.seconds > 0


async def test_filters_by_kind_and_time(meter: RunningMeter, engine: AsyncEngine) -> None:
    account = await funded_account(meter.stub, 1_000)
    await meter.stub.CreditPurchase(pack_purchase(account))
    hold = await meter.stub.Reserve(reserve_request(account))
    await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=50, output_tokens=10))

    usage = await meter.stub.ListLedgerEntries(
        pb.ListLedgerEntriesRequest(account_id=account, kind=pb.ENTRY_KIND_USAGE)
    )
    assert [(e.kind, e.amount, e.reservation_id) for e in usage.entries] == [
        (pb.ENTRY_KIND_USAGE, -60, hold.reservation_id)
    ]
    assert not usage.next_page_token

    now = await database_now(engine)
    later, earlier = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    later.FromDatetime(now + timedelta(hours=1))
    earlier.FromDatetime(now - timedelta(hours=1))
    future = await meter.stub.ListLedgerEntries(pb.ListLedgerEntriesRequest(account_id=account, **{"from": later}))
    assert list(future.entries) == []
    window = await meter.stub.ListLedgerEntries(
        pb.ListLedgerEntriesRequest(account_id=account, to=later, **{"from": earlier})
    )
    assert len(window.entries) == len(await ledger(engine, account)) == 3


async def test_a_tampered_or_foreign_page_token_is_refused(meter: RunningMeter) -> None:
    account = await funded_account(meter.stub, 1_000)
    other = await funded_account(meter.stub, 1_000)
    for delta in (1, 2, 3):
        await _adjust(meter, account, delta)
    first = await meter.stub.ListLedgerEntries(pb.ListLedgerEntriesRequest(account_id=account, page_size=2))
    token = first.next_page_token
    body, mac = token.split(".")
    forged = base64.urlsafe_b64encode(base64.urlsafe_b64decode(body).replace(b'"after":', b'"after":1')).decode()

    for bad in (f"{forged}.{mac}", token[:-2] + "xx", "garbage", "a" * 5000):
        call = meter.stub.ListLedgerEntries(
            pb.ListLedgerEntriesRequest(account_id=account, page_size=2, page_token=bad)
        )
        await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    for listing in (
        pb.ListLedgerEntriesRequest(account_id=other, page_size=2, page_token=token),
        pb.ListLedgerEntriesRequest(account_id=account, page_size=2, page_token=token, kind=pb.ENTRY_KIND_USAGE),
    ):
        await expect_error(meter.stub.ListLedgerEntries(listing), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    rest = await meter.stub.ListLedgerEntries(
        pb.ListLedgerEntriesRequest(account_id=account, page_size=2, page_token=token)
    )
    assert [e.amount for e in rest.entries] == [1, 1000]  # a different page size is fine


async def test_bad_pages_ranges_and_accounts_are_refused(meter: RunningMeter) -> None:
    account = await funded_account(meter.stub, 1_000)
    stamp = timestamp_pb2.Timestamp(seconds=1_800_000_000)
    for request, field in (
        (pb.ListLedgerEntriesRequest(account_id=account, page_size=1001), "page_size"),
        (pb.ListLedgerEntriesRequest(account_id=account, page_size=-1), "page_size"),
        (pb.ListLedgerEntriesRequest(account_id=account, to=stamp, **{"from": stamp}), "to"),
        (pb.ListLedgerEntriesRequest(account_id=account, kind=99), "kind"),  # type: ignore[arg-type]
        (pb.ListLedgerEntriesRequest(account_id="no spaces"), "account_id"),
    ):
        info = await expect_error(
            meter.stub.ListLedgerEntries(request), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"
        )
        assert info.metadata["field"] == field
    await expect_error(
        meter.stub.ListLedgerEntries(pb.ListLedgerEntriesRequest(account_id=new_id())),
        grpc.StatusCode.NOT_FOUND,
        "ACCOUNT_NOT_FOUND",
    )
    default = await meter.stub.ListLedgerEntries(pb.ListLedgerEntriesRequest(account_id=account))
    assert len(default.entries) == 1 and not default.next_page_token
