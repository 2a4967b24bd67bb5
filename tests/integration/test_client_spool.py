"""The client's spool: a Commit meter cannot be reached for is kept on disk, across a restart of
the proxy, and charged exactly once when meter is back; a proxy that dies while it waits loses
nothing either (the call is written before it is sent). The spool is never why a call is lost: one
that cannot be written (full, locked) does not stop a call, and a row that cannot be read is set
aside without stopping the ones after it."""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
import shutil
import socket
import sqlite3
from pathlib import Path
from typing import Any

import grpc
import pytest

from meter.client import MeterClient, MeterRpcError, NotSpooled, Spooled
from meter.client.spool import SPOOL_DEPTH, SPOOL_ERRORS, SPOOL_SET_ASIDE, CommitSpool, SpoolUnwritable
from meter.v1 import meter_pb2 as pb
from support import balance, eventually, funded_account, ledger, reserve_request

DOCS = Path(__file__).resolve().parents[2] / "docs" / "integrate.md"


def documented_sql() -> list[str]:
    """The SQL of the sqlite3 commands docs/integrate.md gives for rows set aside (the listing,
    then giving one back to the spool)."""
    section = DOCS.read_text().split("### Rows set aside")[1].split("\n## ")[0]
    commands = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [shlex.split(command.replace("\\\n", " "))[2] for command in commands]


def free_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


async def reserved(meters: Any, address: str, tokens: int) -> tuple[Any, str, pb.ReserveResponse]:
    meter = await meters(grpc_addr=address)
    account = await funded_account(meter.stub, tokens)
    hold = await meter.stub.Reserve(
        pb.ReserveRequest(
            account_id=account, request_id=f"r-{account}", model="basic", input_tokens=100, max_output_tokens=100
        )
    )
    return meter, account, hold


async def test_a_commit_spooled_while_meter_is_down_is_charged_once_after_a_proxy_restart(
    meters: Any, tmp_path: Path, engine: Any
) -> None:
    address, spool = free_address(), tmp_path / "spool.sqlite"
    meter, account, hold = await reserved(meters, address, 1000)
    await meter.stop()
    async with MeterClient(address, spool=spool, settle_budget_seconds=0.5) as proxy:
        with pytest.raises(Spooled) as spooled:
            await proxy.commit(reservation_id=hold.reservation_id, input_tokens=100, output_tokens=40)
        assert (spooled.value.code, spooled.value.reason) == (grpc.StatusCode.UNAVAILABLE, "SPOOLED")
        assert proxy.spool_depth == 1
        assert SPOOL_DEPTH.labels(str(spool))._value.get() == 1
    # The proxy restarts (a new client on the same file) and meter is back: the spool drains.
    back = await meters(grpc_addr=address)
    async with MeterClient(address, spool=spool) as restarted:

        async def depth() -> int:
            return restarted.spool_depth

        await eventually(depth, lambda left: left == 0)
        again = await restarted.commit(reservation_id=hold.reservation_id, input_tokens=100, output_tokens=40)
        assert again.charged_tokens == 140  # a replay: the same answer, charged once
    assert (await balance(back.stub, account)).purchased_remaining == 860
    assert [e["amount"] for e in await ledger(engine, account) if e["kind"] == "usage"] == [-140]


async def test_a_proxy_that_dies_while_waiting_for_meter_leaves_the_commit_in_the_spool(
    meters: Any, tmp_path: Path
) -> None:
    address, spool = free_address(), tmp_path / "spool.sqlite"
    meter, account, hold = await reserved(meters, address, 1000)
    await meter.stop()
    proxy = MeterClient(address, spool=spool, settle_budget_seconds=60)
    waiting = asyncio.create_task(proxy.commit(reservation_id=hold.reservation_id, input_tokens=100, output_tokens=10))

    async def depth() -> int:
        return proxy.spool_depth

    await eventually(depth, lambda left: left == 1)  # written before it was sent
    waiting.cancel()  # the proxy dies
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await proxy.close()
    back = await meters(grpc_addr=address)
    async with MeterClient(address, spool=spool) as restarted:
        assert await restarted.drain_spool() == 1
        assert restarted.spool_depth == 0
    assert (await balance(back.stub, account)).purchased_remaining == 890


async def test_a_refused_spooled_call_is_answered_and_leaves_the_spool(meters: Any, tmp_path: Path) -> None:
    """A refusal is meter's answer (here: the hold was released meanwhile): it is not sent again."""
    address, spool = free_address(), tmp_path / "spool.sqlite"
    meter, account, hold = await reserved(meters, address, 1000)
    await meter.stub.Release(pb.ReleaseRequest(reservation_id=hold.reservation_id))
    async with MeterClient(address, spool=spool, settle_budget_seconds=0.5) as proxy:
        with pytest.raises(MeterRpcError) as refused:
            await proxy.commit(reservation_id=hold.reservation_id, input_tokens=1, output_tokens=1)
        assert refused.value.reason == "RESERVATION_RELEASED" and not isinstance(refused.value, Spooled)
        assert proxy.spool_depth == 0
        # A Hold whose settle is spooled does not raise: the call is safe on disk.
        hold_in_block = None
        async with proxy.reserve(account_id=account, model="basic", input_tokens=10, max_output_tokens=10) as held:
            hold_in_block = held
            held.report(input_tokens=10, output_tokens=5)
            await meter.stop()
        assert hold_in_block.spooled
        assert proxy.spool_depth == 1


async def test_a_full_spool_does_not_stop_a_call_which_fails_only_if_meter_cannot_be_reached_either(
    meters: Any, tmp_path: Path, engine: Any
) -> None:
    """The spool full (SQLITE_FULL, as a full disk gives it; here the spool's own bound, sqlite's
    max_page_count): a Commit and a Release are sent without it and reach meter; one meter cannot
    be reached for either raises an error that says both. What the spool held is still sent."""
    address, path, max_bytes = free_address(), tmp_path / "spool.sqlite", 6 * 4096
    meter, account, committed = await reserved(meters, address, 1000)
    released, lost = [await meter.stub.Reserve(reserve_request(account, input_tokens=100)) for _ in range(2)]
    full = CommitSpool(path, max_bytes=max_bytes)
    waiting = pb.ReleaseRequest(reservation_id=released.reservation_id).SerializeToString()
    with pytest.raises(SpoolUnwritable, match="full"):
        while True:  # the spool fills up with calls waiting for meter
            full.add("Release", waiting)
    kept = full.depth
    full.close()
    unspooled = SPOOL_ERRORS.labels(str(path), "add")
    before = unspooled._value.get()
    proxy = MeterClient(address, spool=path, spool_max_bytes=max_bytes, settle_budget_seconds=0.5)
    charged = await proxy.commit(reservation_id=committed.reservation_id, input_tokens=100, output_tokens=40)
    assert charged.charged_tokens == 140
    await proxy.release(reservation_id=released.reservation_id)
    assert (unspooled._value.get() - before, proxy.spool_depth) == (2, kept)
    await meter.stop()
    with pytest.raises(NotSpooled) as neither:
        await proxy.commit(reservation_id=lost.reservation_id, input_tokens=100, output_tokens=10)
    assert (neither.value.code, neither.value.reason) == (grpc.StatusCode.UNAVAILABLE, "NOT_SPOOLED")
    assert "not spooled" in neither.value.message and "database or disk is full" in neither.value.message
    assert "and not delivered (DEADLINE_EXCEEDED" in neither.value.message  # waited the settle budget
    back = await meters(grpc_addr=address)
    assert await proxy.drain_spool() == kept  # Releases of a released hold: answered as the first
    assert proxy.spool_depth == 0
    await proxy.close()
    assert [e["amount"] for e in await ledger(engine, account) if e["kind"] == "usage"] == [-140]
    after = await balance(back.stub, account)
    assert (after.purchased_remaining, after.held) == (1000 - 140 - 150, 150)  # the lost call: still held


async def test_an_answer_the_spool_cannot_record_is_returned_and_the_call_charged_once(
    meters: Any, tmp_path: Path, engine: Any
) -> None:
    """The spool locked by another writer (an operator's shell) when meter answers: the Commit
    returns meter's answer all the same; its row stays and is sent again once the spool can be
    written, a replay that charges nothing twice."""
    address, path = free_address(), tmp_path / "spool.sqlite"
    meter, account, hold = await reserved(meters, address, 1000)
    await meter.stop()
    unrecorded = SPOOL_ERRORS.labels(str(path), "answered")
    async with MeterClient(address, spool=path, settle_budget_seconds=30) as proxy:

        async def depth() -> int:
            return proxy.spool_depth

        committing = asyncio.create_task(
            proxy.commit(reservation_id=hold.reservation_id, input_tokens=100, output_tokens=40)
        )
        await eventually(depth, lambda left: left == 1)  # written; waiting for meter
        operator = sqlite3.connect(path, isolation_level=None)
        operator.execute("BEGIN IMMEDIATE")  # holds the spool's write lock
        before = unrecorded._value.get()
        back = await meters(grpc_addr=address)
        assert (await committing).charged_tokens == 140
        assert (proxy.spool_depth, unrecorded._value.get() - before >= 1) == (1, True)
        operator.execute("ROLLBACK")
        operator.close()
        await eventually(depth, lambda left: left == 0)
    assert [e["amount"] for e in await ledger(engine, account) if e["kind"] == "usage"] == [-140]
    assert (await balance(back.stub, account)).purchased_remaining == 860


async def test_rows_that_cannot_be_read_are_set_aside_and_the_later_calls_reach_meter(
    meters: Any, tmp_path: Path, engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows another client version wrote (a method this one does not know, a request it cannot
    parse) among good ones: on every start the good ones are sent, in order, and the others are
    kept in the file's set_aside table with why, logged once, counted."""
    address, path = free_address(), tmp_path / "spool.sqlite"
    meter, account, first = await reserved(meters, address, 1000)
    second = await meter.stub.Reserve(reserve_request(account, input_tokens=100))
    spool = CommitSpool(path)
    spool.add(
        "Commit",
        pb.CommitRequest(reservation_id=first.reservation_id, input_tokens=100, output_tokens=40).SerializeToString(),
    )
    spool.close()
    with sqlite3.connect(path) as other_version:
        other_version.executemany(
            "INSERT INTO spooled (method, request, spooled_at) VALUES (?, ?, 0)",
            [("CommitBatch", b"\x0a\x03abc"), ("Commit", b"\xff\xff\xff"), ("Release", "text, not bytes")],
        )
    spool = CommitSpool(path)
    spool.add(
        "Commit",
        pb.CommitRequest(reservation_id=second.reservation_id, input_tokens=50, output_tokens=10).SerializeToString(),
    )
    spool.close()
    caplog.set_level(logging.WARNING, logger="meter.client.spool")
    for _start in range(2):
        async with MeterClient(address, spool=path) as proxy:

            async def depth() -> int:
                return proxy.spool_depth

            await eventually(depth, lambda left: left == 0)
    assert [e["amount"] for e in await ledger(engine, account) if e["kind"] == "usage"] == [-140, -60]
    assert len([r for r in caplog.records if "set aside" in r.getMessage()]) == 3  # once each, over two starts
    assert SPOOL_SET_ASIDE.labels(str(path))._value.get() == 3
    listing, give_back = documented_sql()  # what the docs tell an operator to run
    with sqlite3.connect(path) as kept:
        aside = kept.execute(listing).fetchall()
        assert kept.execute("SELECT count(*) FROM spooled").fetchone() == (0,)
        assert [(row[0], row[1]) for row in aside] == [(2, "CommitBatch"), (3, "Commit"), (4, "Release")]
        assert "unknown method 'CommitBatch'" in aside[0][2] and aside[0][4] == "0A03616263"
        assert "does not parse as CommitRequest" in aside[1][2] and "does not parse as ReleaseRequest" in aside[2][2]
        kept.executescript(give_back.replace("42", "2"))
        assert kept.execute("SELECT id, method FROM spooled").fetchall() == [(2, "CommitBatch")]
        assert [row[0] for row in kept.execute(listing)] == [3, 4]


async def test_a_spool_file_that_is_not_a_database_does_not_stop_the_proxy(
    meters: Any, tmp_path: Path, engine: Any
) -> None:
    """A corrupt spool (here: not a database at all) cannot be opened: the client starts all the
    same, sends each call without it, and leaves the file as it was for an operator."""
    address, path = free_address(), tmp_path / "spool.sqlite"
    meter, account, hold = await reserved(meters, address, 1000)
    path.write_bytes(b"not a database " * 1000)
    async with MeterClient(address, spool=path) as proxy:
        charged = await proxy.commit(reservation_id=hold.reservation_id, input_tokens=100, output_tokens=40)
        assert (charged.charged_tokens, proxy.spool_depth) == (140, 0)
    assert SPOOL_ERRORS.labels(str(path), "open")._value.get() == 1
    assert SPOOL_ERRORS.labels(str(path), "add")._value.get() == 1
    assert path.read_bytes() == b"not a database " * 1000
    assert [e["amount"] for e in await ledger(engine, account) if e["kind"] == "usage"] == [-140]


async def test_a_spool_removed_while_open_is_not_trusted_with_a_call(meters: Any, tmp_path: Path, engine: Any) -> None:
    """The spool's folder deleted while the proxy runs: the open file still takes writes that no
    restart would see. While it holds a call, a new one is not spooled there (NotSpooled, meter
    being away); the call it holds is still sent from it; empty, the spool is made again."""
    address, folder = free_address(), tmp_path / "spool"
    meter, account, first = await reserved(meters, address, 1000)
    second = await meter.stub.Reserve(reserve_request(account, input_tokens=100))
    await meter.stop()
    async with MeterClient(address, spool=folder / "spool.sqlite", settle_budget_seconds=0.3) as proxy:
        with pytest.raises(Spooled):
            await proxy.commit(reservation_id=first.reservation_id, input_tokens=100, output_tokens=40)
        shutil.rmtree(folder)
        with pytest.raises(NotSpooled) as neither:
            await proxy.commit(reservation_id=second.reservation_id, input_tokens=50, output_tokens=10)
        assert "removed or replaced while open; its 1 calls are sent from the open file" in neither.value.message
        await meters(grpc_addr=address)

        async def depth() -> int:
            return proxy.spool_depth

        await eventually(depth, lambda left: left == 0)  # the first, from the open file
        again = await proxy.commit(reservation_id=second.reservation_id, input_tokens=50, output_tokens=10)
        assert again.charged_tokens == 60 and (folder / "spool.sqlite").exists()
    assert [e["amount"] for e in await ledger(engine, account) if e["kind"] == "usage"] == [-140, -60]
