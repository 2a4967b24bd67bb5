"""`meter account show` and `meter usage` against a running server, and ListOpenReservations
behind the first: aligned tables with the figures the RPCs give."""

from __future__ import annotations

from datetime import UTC

import grpc

from meter.v1 import meter_pb2 as pb
from support import RunningMeter, expect_error, funded_account, new_id, reserve_request, run_cli


async def test_open_reservations_soonest_to_expire_first_with_the_count(meter: RunningMeter) -> None:
    account = await funded_account(meter.stub, 10_000)
    later = await meter.stub.Reserve(reserve_request(account, ttl_seconds=600, labels={"session": "s9"}))
    sooner = await meter.stub.Reserve(reserve_request(account, ttl_seconds=60, model="gpt-4o"))
    done = await meter.stub.Reserve(reserve_request(account))
    await meter.stub.Release(pb.ReleaseRequest(reservation_id=done.reservation_id))

    listed = await meter.stub.ListOpenReservations(pb.ListOpenReservationsRequest(account_id=account))
    assert [r.reservation_id for r in listed.reservations] == [sooner.reservation_id, later.reservation_id]
    assert listed.open_count == 2
    first = listed.reservations[0]
    assert (first.model, first.input_tokens, first.max_output_tokens, first.held_tokens) == ("gpt-4o", 50, 50, 250)
    assert first.expires_at == sooner.expires_at and first.created_at.seconds > 0
    assert listed.reservations[1].labels == {"session": "s9"}

    one = await meter.stub.ListOpenReservations(pb.ListOpenReservationsRequest(account_id=account, limit=1))
    assert [r.reservation_id for r in one.reservations] == [sooner.reservation_id] and one.open_count == 2
    for limit in (-1, 1001):
        await expect_error(
            meter.stub.ListOpenReservations(pb.ListOpenReservationsRequest(account_id=account, limit=limit)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
        )
    await expect_error(
        meter.stub.ListOpenReservations(pb.ListOpenReservationsRequest(account_id=new_id())),
        grpc.StatusCode.NOT_FOUND,
        "ACCOUNT_NOT_FOUND",
    )


async def test_account_show_and_usage_print_aligned_tables(meter: RunningMeter) -> None:
    account = await funded_account(meter.stub, 1_000_000)
    hold = await meter.stub.Reserve(
        reserve_request(account, model="claude-sonnet-4-5", input_tokens=1000, max_output_tokens=500)
    )
    await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=1000, output_tokens=300))
    cheap = await meter.stub.Reserve(reserve_request(account, model="claude-haiku-4-5", input_tokens=1001))
    await meter.stub.Commit(pb.CommitRequest(reservation_id=cheap.reservation_id, input_tokens=1001, output_tokens=37))
    still_open = await meter.stub.Reserve(reserve_request(account, labels={"agent": "planner"}))

    code, out, err = await run_cli("account", "show", account, "--target", meter.address)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"account {account}"
    assert "plan       free" in out
    assert "purchased  997,103 left" in out  # 1 000 000 - 2 500 - 297 - 100 held
    assert "held       100 in 1 open hold\n" in out
    assert "used       2,797 this period (0 %; warning: none)" in out
    holds_at = lines.index("open holds (1 of 1, soonest to expire first)")
    assert lines[holds_at + 1].split() == ["RESERVATION", "MODEL", "HELD", "CREATED", "EXPIRES", "LABELS"]
    assert lines[holds_at + 2].startswith(still_open.reservation_id)
    assert lines[holds_at + 2].endswith("agent=planner")
    entries_at = lines.index("recent entries (newest 3)")
    header = lines[entries_at + 1]
    assert header.split() == ["ID", "TIME", "KIND", "POOL", "AMOUNT", "MODEL", "COST", "CALLER", "REFERENCE"]
    rows = lines[entries_at + 2 :]
    assert len(rows) == 3
    amount_end = header.index("AMOUNT") + len("AMOUNT")
    assert [row[:amount_end].split()[-1] for row in rows] == ["-297", "-2,500", "+1,000,000"]
    assert "claude-haiku-4-5" in rows[0] and "$0.001186" in rows[0] and cheap.reservation_id in rows[0]
    assert "claude-sonnet-4-5" in rows[1] and "$0.007500" in rows[1]
    caller_at = header.index("CALLER")
    assert [row[caller_at:].split()[0] for row in rows] == ["anonymous"] * 3  # no callers configured

    # The Commits' UTC day (not the hold's expiry, ten minutes later: the next day near midnight).
    usage = await meter.stub.ListLedgerEntries(
        pb.ListLedgerEntriesRequest(account_id=account, kind=pb.ENTRY_KIND_USAGE)
    )
    day = usage.entries[0].created_at.ToDatetime(tzinfo=UTC).date().isoformat()
    code, out, err = await run_cli(
        "usage", account, "--from", day, "--to", day, "--by", "model", "--target", meter.address
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"usage of {account}, {day} to {day} (UTC days, both included), by model"
    assert [line.split() for line in lines[1:]] == [
        [
            "MODEL",
            "REQUESTS",
            "INPUT",
            "CACHE-READ",
            "CACHE-WRITE",
            "OUTPUT",
            "REASONING",
            "CHARGED",
            "COST",
            "UNBILLED",
        ],
        ["claude-haiku-4-5", "1", "1,001", "0", "0", "37", "0", "297", "$0.001186", "0"],
        ["claude-sonnet-4-5", "1", "1,000", "0", "0", "300", "0", "2,500", "$0.007500", "0"],
        ["total", "2", "2,001", "0", "0", "337", "0", "2,797", "$0.008686", "0"],
    ]
    widths = {len(line) for line in lines[1:]}
    assert len(widths) == 1  # right-aligned numbers: every row ends at the same column

    code, out, err = await run_cli(
        "usage", account, "--from", day, "--to", day, "--by", "day", "--target", meter.address
    )
    assert code == 0, err
    assert out.splitlines()[2].split() == [day, "2", "2,001", "0", "0", "337", "0", "2,797", "$0.008686", "0"]

    code, out, err = await run_cli("usage", new_id(), "--target", meter.address)
    assert code == 1 and "NOT_FOUND" in err
