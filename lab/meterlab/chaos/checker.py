"""Hold the database to the history: Jepsen's bank test, for tokens.

Every ledger entry must be explained by an operation a client sent, and applied at most once;
every acknowledged operation must be in the database exactly as it was answered; per account the
ledger must sum to what the model computes from the operations that were applied; `meter audit`
must be clean; no Reserve may have been admitted beyond what the account could have had; and each
purchase and adjustment applied must be told exactly once as a balance event, on its account.
Run only while no operation is in flight.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meterlab.chaos import subscriber_checks
from meterlab.chaos.billing import PACK
from meterlab.chaos.history import History, Op, Outcome
from meterlab.testbed import audit

EXPLAINED_KINDS = {"usage", "purchase", "adjustment", "refund", "debt_payment", "dispute_freeze", "dispute_release"}
EXPLAINED_KINDS |= {"grant", "expiry", "revocation"}  # a grant's, its expiry's and its revocation's


@dataclass(frozen=True)
class Violation:
    check: str
    account: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.account}: {self.detail}"


@dataclass
class Findings:
    checks: int = 0
    violations: list[Violation] = field(default_factory=list)

    def expect(self, ok: bool, check: str, account: str, detail: str) -> None:
        self.checks += 1
        if not ok:
            self.violations.append(Violation(check, account, detail))


@dataclass
class _Database:
    holds: dict[tuple[str, str], dict[str, Any]]  # (account, request_id) -> hold row
    ledger: list[dict[str, Any]]
    purchases: dict[str, dict[str, Any]]  # payment_ref -> row
    purchase_rows: int
    adjustments: dict[tuple[str, str], int]  # (account, request_id) -> delta
    invoices: dict[str, dict[str, Any]]  # invoice_ref -> subscription_payments row
    accounts: dict[str, dict[str, Any]]  # account_id -> its month and what it paid through
    # (type, payment_ref or request_id) -> the accounts of the balance events that tell of it
    told: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    grants: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (account, request_id) -> row


@dataclass
class _Evidence:
    """What every check reads: the database, the history, its operations by (kind, key), the
    ledger entries by (kind, reservation or ref), and what left each grant by its expiry or
    revocation (or, given back by a hold, after its end) by (account, grant_id)."""

    db: _Database
    history: History
    by_key: dict[tuple[str, str], list[Op]]
    entries: dict[tuple[str, str], list[dict[str, Any]]]
    gone: dict[tuple[str, int], int] = field(default_factory=dict)

    def expired_of(self, purchase: dict[str, Any] | None) -> int:
        """What left a pack's grant (0 for a pack that never expires): a refund or dispute takes it
        back from nothing, so what the ledger moves for them may fall short by at most that."""
        if purchase is None or purchase["grant_id"] is None:
            return 0
        return self.gone.get((purchase["account_id"], purchase["grant_id"]), 0)


async def _read(engine: AsyncEngine, accounts: list[str] | None) -> _Database:
    scope = " WHERE CAST(:accounts AS text[]) IS NULL OR account_id = ANY(CAST(:accounts AS text[]))"
    params = {"accounts": accounts}
    async with engine.connect() as c:
        await c.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        holds = (
            await c.execute(
                text(
                    "SELECT account_id, request_id, account_id || '/' || replace(hold_id::text, '-', '') AS rid, "
                    "status, held, input_tokens, max_output_tokens, "
                    "usage_input_tokens, usage_output_tokens, charged_tokens, late FROM holds" + scope
                ),
                params,
            )
        ).mappings()
        hold_rows = {(h["account_id"], h["request_id"]): dict(h) for h in holds}
        ledger = [
            dict(r)
            for r in (
                await c.execute(
                    text("SELECT account_id, kind, pool, amount, reservation_id, ref FROM ledger_entries" + scope),
                    params,
                )
            ).mappings()
        ]
        purchases = [
            dict(r)
            for r in (
                await c.execute(
                    text(
                        "SELECT account_id, payment_ref, tokens, refunded_minor, frozen_tokens, dispute_status, "
                        "grant_id FROM purchases" + scope
                    ),
                    params,
                )
            ).mappings()
        ]
        adjustments = (
            await c.execute(text("SELECT account_id, request_id, delta FROM adjustments" + scope), params)
        ).all()
        invoices = (await c.execute(text("SELECT * FROM subscription_payments" + scope), params)).mappings().all()
        months = (
            await c.execute(text("SELECT account_id, period_start, paid_through FROM accounts" + scope), params)
        ).mappings()
        account_rows = {row["account_id"]: dict(row) for row in months}
        grant_rows = (
            await c.execute(
                text("SELECT account_id, request_id, grant_id, tokens, ended_how FROM grants" + scope), params
            )
        ).mappings()
        grants = {(g["account_id"], g["request_id"]): dict(g) for g in grant_rows}
        told: dict[tuple[str, str], list[str]] = defaultdict(list)
        told_query = (
            "SELECT account_id, type, coalesce(payload ->> 'payment_ref', payload ->> 'request_id') "
            "FROM balance_events WHERE type IN ('purchase.credited', 'balance.adjusted') "
            "AND (CAST(:accounts AS text[]) IS NULL OR account_id = ANY(CAST(:accounts AS text[])))"
        )
        for account, kind, key in (await c.execute(text(told_query), params)).all():
            told[(kind, key)].append(account)
        await c.rollback()
    return _Database(
        hold_rows,
        ledger,
        {p["payment_ref"]: p for p in purchases},
        len(purchases),
        {(a, k): d for a, k, d in adjustments},
        {row["invoice_ref"]: dict(row) for row in invoices},
        account_rows,
        dict(told),
        grants,
    )


async def check(engine: AsyncEngine, history: History, accounts: list[str] | None = None) -> Findings:
    """Check the whole database, or only `accounts` (when other traffic shares the database)."""
    assert all(op.outcome is not Outcome.PENDING for op in history.ops), "check only while nothing is in flight"
    found = Findings()
    clean, printed = await asyncio.to_thread(audit, engine.url.render_as_string(hide_password=False))
    found.expect(clean, "audit", "*", printed[:2000])
    db = await _read(engine, accounts)
    by_key: dict[tuple[str, str], list[Op]] = defaultdict(list)
    for op in history.ops:
        by_key[(op.kind, op.key)].append(op)
    subscribers = {op.account for op in history.ops if op.kind in subscriber_checks.KINDS}
    entries: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)  # (kind, ref) -> entries
    for entry in db.ledger:
        entries[(entry["kind"], entry["reservation_id"] or entry["ref"] or "")].append(entry)
        explained = subscriber_checks.EXPLAINED_KINDS if entry["account_id"] in subscribers else EXPLAINED_KINDS
        found.expect(entry["kind"] in explained, "ledger", entry["account_id"], f"unexpected entry {entry}")

    gone: dict[tuple[str, int], int] = defaultdict(int)
    for entry in db.ledger:
        if entry["kind"] in ("expiry", "revocation") and str(entry["pool"]).startswith("grant:"):
            gone[(entry["account_id"], int(str(entry["pool"]).removeprefix("grant:")))] -= entry["amount"]
    evidence = _Evidence(db, history, by_key, entries, dict(gone))
    charged = _holds(found, evidence)
    credited = _purchases(found, evidence)
    refunded = _refunds(found, evidence)
    disputed = _disputes(found, evidence)
    adjusted = _adjustments(found, evidence)
    granted = _grants(found, evidence)
    _debt_payments(found, entries)
    _balances(found, history)
    _admission(found, db, history, by_key)
    _told_once(found, db)
    subscriber_checks.check(found, db.ledger, db.invoices, db.accounts, history, subscribers)

    ledger_sum: dict[str, int] = defaultdict(int)
    for entry in db.ledger:
        ledger_sum[entry["account_id"]] += entry["amount"]
    for account in ({op.account for op in history.ops} | set(ledger_sum)) - subscribers:
        model = (
            adjusted[account] + granted[account] + credited[account] - refunded[account] - disputed[account]
            - charged[account]
        )  # fmt: skip
        found.expect(
            ledger_sum[account] == model,
            "ledger = model",
            account,
            f"ledger sums to {ledger_sum[account]}, the applied operations to {model} (adjusted "
            f"{adjusted[account]}, granted {granted[account]}, bought {credited[account]}, "
            f"refunded {refunded[account]}, disputed {disputed[account]}, charged {charged[account]})",
        )
    return found


def _told_once(found: Findings, db: _Database) -> None:
    """Each purchase and adjustment in the database is one balance event on its account, and
    every such event tells of one of them: once per fact, through redeliveries and restarts."""
    facts = {("purchase.credited", ref): p["account_id"] for ref, p in db.purchases.items()}
    facts |= {("balance.adjusted", key): account for (account, key) in db.adjustments}
    for fact, account in facts.items():
        found.expect(db.told.get(fact) == [account], "told once", account, f"{fact}: events on {db.told.get(fact)}")
    for fact, accounts in db.told.items():
        found.expect(fact in facts, "told once", accounts[0], f"{fact}: an event of nothing applied")


def _holds(found: Findings, ev: _Evidence) -> dict[str, int]:
    """Reserve, Commit, Release: each hold asked for once, settled once, charged what was used."""
    db, history, by_key, entries = ev.db, ev.history, ev.by_key, ev.entries
    charged: dict[str, int] = defaultdict(int)
    reserves = [op for op in history.of("reserve") if not op.args["reuse"]]
    sent = {(op.account, op.key): op for op in reserves}
    for account, request_id in db.holds:
        found.expect((account, request_id) in sent, "reserve", account, f"hold {request_id} that no client asked for")
    for op in history.of("reserve"):
        hold = db.holds.get((op.account, op.key))
        if op.args["reuse"]:
            found.expect(
                op.outcome is not Outcome.ACKED
                and (op.outcome is Outcome.UNKNOWN or op.reason == "IDEMPOTENCY_KEY_REUSED"),
                "idempotency",
                op.account,
                f"Reserve {op.key} with other parameters answered {op.outcome.value} {op.reason}",
            )
            continue
        worst = op.args["input_tokens"] + op.args["max_output_tokens"]
        if op.acked:
            found.expect(
                hold is not None and hold["rid"] == op.result["reservation_id"] and hold["held"] == worst,
                "reserve",
                op.account,
                f"acknowledged Reserve {op.key} ({op.result}) is not the hold in the database ({hold})",
            )
            found.expect(op.result["held"] == worst, "reserve", op.account, f"held {op.result['held']}, not {worst}")
        elif op.outcome is Outcome.REFUSED and not any(o.acked for o in by_key[("reserve", op.key)]):
            found.expect(hold is None, "reserve", op.account, f"refused Reserve {op.key} ({op.reason}) left a hold")

    for hold in db.holds.values():
        rid, account = hold["rid"], hold["account_id"]
        commits, releases = by_key[("commit", rid)], by_key[("release", rid)]
        usage_sum = -sum(e["amount"] for e in entries[("usage", rid)])
        acked_commits = [op for op in commits if op.acked]
        acked_releases = [op for op in releases if op.acked]
        found.expect(
            not (acked_commits and acked_releases),
            "committed and released",
            account,
            f"{rid}: a Commit and a Release were both acknowledged",
        )
        if hold["status"] == "committed":
            usage = (hold["usage_input_tokens"], hold["usage_output_tokens"])
            sent_usages = {(op.args["input"], op.args["output"]) for op in commits}
            found.expect(usage in sent_usages, "commit", account, f"{rid} charged for usage {usage} nobody sent")
            found.expect(hold["charged_tokens"] == sum(usage), "commit", account, f"{rid} charged {hold} for {usage}")
            found.expect(usage_sum == hold["charged_tokens"], "commit", account, f"{rid} ledger {usage_sum} ≠ {hold}")
            charged[account] += sum(usage)  # the model's price of what was used (model `basic`)
            for op in acked_commits:
                found.expect(
                    op.result["charged"] == hold["charged_tokens"] and (op.args["input"], op.args["output"]) == usage,
                    "commit",
                    account,
                    f"{rid}: Commit {op.args} answered {op.result}, the database has {hold}",
                )
        else:
            found.expect(not entries[("usage", rid)], "commit", account, f"{rid} is {hold['status']} but charged")
            found.expect(not acked_commits, "commit", account, f"{rid}: acknowledged Commit lost ({hold['status']})")
        if acked_releases:
            # Releasing a hold the sweeper expired already is answered OK: either way it is given back.
            found.expect(
                hold["status"] in ("released", "expired"), "release", account, f"{rid} released but {hold['status']}"
            )
        for op in commits + releases:
            if op.outcome is Outcome.REFUSED:
                expected = {"RESERVATION_RELEASED": "released", "RESERVATION_COMMITTED": "committed"}.get(op.reason)
                found.expect(
                    expected == hold["status"],
                    op.kind,
                    account,
                    f"{rid}: {op.kind} refused {op.reason} but the hold is {hold['status']}",
                )
    return charged


def _purchases(found: Findings, ev: _Evidence) -> dict[str, int]:
    """Every payment credited exactly once if acknowledged, at most once if not, never unasked."""
    db, history, entries = ev.db, ev.history, ev.entries
    credited: dict[str, int] = defaultdict(int)
    sent = {op.key: op.account for op in history.of("purchase")}
    found.expect(db.purchase_rows == len(db.purchases), "purchase", "*", "a payment_ref recorded on two accounts")
    for (kind, ref), group in entries.items():
        if kind != "purchase":
            continue
        account = group[0]["account_id"]
        found.expect(len(group) == 1, "credited twice", account, f"{ref}: {len(group)} purchase entries")
        found.expect(sent.get(ref) == account, "purchase", account, f"{ref} credited but never paid for")
        found.expect(all(e["amount"] == PACK.tokens for e in group), "purchase", account, f"{ref}: {group}")
        credited[account] += PACK.tokens  # the model: one pack per payment, however many entries
    for op in history.of("purchase"):
        if op.acked:
            found.expect(bool(entries[("purchase", op.key)]), "purchase", op.account, f"acknowledged {op.key} lost")
        elif op.outcome is Outcome.REFUSED:
            found.expect(False, "purchase", op.account, f"a valid purchase {op.key} was refused: {op.reason}")
    return credited


def _refunds(found: Findings, ev: _Evidence) -> dict[str, int]:
    """Refunds take the refunded share of the pack back once, whatever the order of the events."""
    db, history, entries = ev.db, ev.history, ev.entries
    refunded: dict[str, int] = defaultdict(int)
    amounts: dict[str, list[Op]] = defaultdict(list)
    for op in history.of("refund"):
        amounts[op.key].append(op)
        found.expect(op.outcome is not Outcome.REFUSED, "refund", op.account, f"{op.key} refused: {op.reason}")
    for session, ops in amounts.items():
        purchase = db.purchases.get(session)
        account = ops[0].account
        final = purchase["refunded_minor"] if purchase else 0
        acked = max((op.args["amount"] for op in ops if op.acked), default=0)
        sent = {op.args["amount"] for op in ops} | {0}
        found.expect(final in sent and final >= acked, "refund", account, f"{session}: refunded {final}, acked {acked}")
        charge = "ch_" + session.removeprefix("cs_")
        taken = -sum(e["amount"] for e in entries[("refund", charge)])
        due = PACK.tokens * final // PACK.price_minor
        expired = ev.expired_of(purchase)
        found.expect(
            due - expired <= taken <= due,
            "refund",
            account,
            f"{session}: {taken} tokens taken back for {final} refunded ({expired} of the pack expired)",
        )
        refunded[account] += taken
    return refunded


def _disputes(found: Findings, ev: _Evidence) -> dict[str, int]:
    """A dispute ends as its closing status says, whatever order its events came in: won, nothing
    frozen; lost (or still open), the whole pack frozen; and the ledger moved exactly that."""
    db, history, entries = ev.db, ev.history, ev.entries
    frozen: dict[str, int] = defaultdict(int)
    by_purchase: dict[str, list[Op]] = defaultdict(list)
    for op in history.of("dispute"):
        by_purchase[op.key].append(op)
        found.expect(op.outcome is not Outcome.REFUSED, "dispute", op.account, f"{op.key} refused: {op.reason}")
    for session, ops in by_purchase.items():
        purchase, account = db.purchases.get(session), ops[0].account
        if purchase is None:
            continue  # the purchase itself was never acknowledged: its disputes wait for it
        closed = {op.args["status"] for op in ops if op.args["status"] != "needs_response" and op.acked}
        expected = closed.pop() if closed else None
        status = purchase["dispute_status"]
        if expected is not None:
            found.expect(status == expected, "dispute order", account, f"{session}: closed {expected}, is {status}")
        held = PACK.tokens if status in ("open", "lost") else 0
        found.expect(purchase["frozen_tokens"] == held, "dispute", account, f"{session}: {purchase} ({status})")
        moved = sum(e["amount"] for d in {op.args["dispute"] for op in ops} for e in _dispute_entries(entries, d))
        # A pack's grant that expired while the dispute was open or frozen keeps out what the freeze
        # took from it (it would have expired) and what it had lost by then (taken from nothing).
        expired = ev.expired_of(purchase)
        lowest = -PACK.tokens if expired else -held
        found.expect(
            lowest <= moved <= -held + expired and moved <= 0,
            "dispute",
            account,
            f"{session}: the ledger moved {moved} for {held} frozen ({expired} of the pack expired)",
        )
        frozen[account] += -moved
    return frozen


def _dispute_entries(entries: dict[tuple[str, str], list[dict[str, Any]]], dispute: str) -> list[dict[str, Any]]:
    """Each dispute's entries once, however many of its events were sent."""
    return [e for kind in ("dispute_freeze", "dispute_release") for e in entries.get((kind, dispute), [])]


def _adjustments(found: Findings, ev: _Evidence) -> dict[str, int]:
    """Adjustments applied once, as sent; acknowledged ones all there."""
    db, history, by_key, entries = ev.db, ev.history, ev.by_key, ev.entries
    adjusted: dict[str, int] = defaultdict(int)
    sent = {(op.account, op.key): op.args["delta"] for op in history.of("adjust")}
    for (account, key), delta in db.adjustments.items():
        found.expect(sent.get((account, key)) == delta, "adjust", account, f"{key}: {delta} applied, never sent")
        amount = sum(e["amount"] for e in entries[("adjustment", key)])
        found.expect(amount == delta, "adjust", account, f"{key}: ledger {amount}, delta {delta}")
        adjusted[account] += delta
    for op in history.of("adjust"):
        applied = (op.account, op.key) in db.adjustments
        if op.acked:
            found.expect(applied, "adjust", op.account, f"acknowledged Adjust {op.key} lost")
        elif op.outcome is Outcome.REFUSED and not any(o.acked for o in by_key[("adjust", op.key)]):
            found.expect(not applied, "adjust", op.account, f"refused Adjust {op.key} ({op.reason}) applied")
    return adjusted


def _grants(found: Findings, ev: _Evidence) -> dict[str, int]:
    """Each grant applied once, as sent, its tokens in its own pool; what left it (its expiry, its
    revocation, what holds gave back after its end) is at most what it was granted and only once it
    ended, and every acknowledged Grant is applied; a pack that expires is a grant too, credited by
    its purchase. Returns per account what grants added, less what left them."""
    db, history, entries = ev.db, ev.history, ev.entries
    net: dict[str, int] = defaultdict(int)
    sent = {(op.account, op.key): op.args["tokens"] for op in history.of("grant")}
    for (account, key), row in db.grants.items():
        bought = key.startswith("purchase:")  # a pack that expires: its purchase credited it (_purchases)
        if not bought:
            found.expect(sent.get((account, key)) == row["tokens"], "grant", account, f"{key}: {row} not as sent")
            granted = sum(e["amount"] for e in entries[("grant", key)])
            found.expect(granted == row["tokens"], "grant", account, f"{key}: ledger {granted} of {row['tokens']}")
        left = ev.gone.get((account, row["grant_id"]), 0)
        found.expect(
            0 <= left <= row["tokens"] and (left == 0 or row["ended_how"] is not None),
            "grant",
            account,
            f"{key}: {left} of {row['tokens']} left it ({row['ended_how'] or 'not ended'})",
        )
        net[account] += (0 if bought else row["tokens"]) - left
    for op in history.of("grant"):
        if op.acked:
            found.expect((op.account, op.key) in db.grants, "grant", op.account, f"acknowledged Grant {op.key} lost")
    for entry in db.ledger:  # an expiry is a grant's or, for a subscriber, its month's allowance
        if entry["kind"] in ("expiry", "revocation") and not str(entry["pool"]).startswith("grant:"):
            found.expect(
                (entry["kind"], entry["pool"]) == ("expiry", "allowance"),
                "grant",
                entry["account_id"],
                f"an {entry['kind']} of no grant: {entry}",
            )
    return net


def _debt_payments(found: Findings, entries: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
    for (kind, ref), group in entries.items():
        if kind == "debt_payment":
            total = sum(e["amount"] for e in group)
            found.expect(total == 0, "debt payment", group[0]["account_id"], f"{ref}: moves {total}, not 0")


def _balances(found: Findings, history: History) -> None:
    """Every balance answered: nothing negative, nothing available while in debt."""
    for op in history.of("balance"):
        if op.acked:
            b = op.result
            found.expect(
                min(b.values()) >= 0 and (b["debt"] == 0 or b["available"] == 0),
                "balance",
                op.account,
                f"GetBalance answered {b}",
            )


def _admission(found: Findings, db: _Database, history: History, by_key: dict[tuple[str, str], list[Op]]) -> None:
    """No Reserve admitted beyond an upper bound of what was available while it ran: every credit
    that may have landed before its answer, minus what was surely charged and surely held."""
    per_account: dict[str, list[Op]] = defaultdict(list)
    for op in history.ops:
        per_account[op.account].append(op)
    for account, ops in per_account.items():
        credits = []  # (sent, tokens) of credits that were applied
        for op in ops:
            if op.kind == "adjust" and op.args["delta"] > 0 and (account, op.key) in db.adjustments:
                credits.append((op.sent, op.args["delta"]))
            elif op.kind == "purchase" and op.key in db.purchases and op is by_key[("purchase", op.key)][0]:
                credits.append((op.sent, PACK.tokens))
        debits = []  # (acknowledged, tokens) of what surely left the account
        for op in ops:
            if op.kind == "adjust" and op.acked and op.args["delta"] < 0 and op is by_key[("adjust", op.key)][0]:
                debits.append((op.done, -op.args["delta"]))
            elif op.kind == "commit" and op.acked and op is _first_acked(by_key[("commit", op.key)]):
                debits.append((op.done, op.result["charged"]))
        reserves = [op for op in ops if op.kind == "reserve" and op.acked and not op.args["reuse"]]
        firsts = [op for op in reserves if op is _first_acked(by_key[("reserve", op.key)])]
        # Holds surely open while a Reserve ran: answered before it was sent, and neither
        # committed nor released (nor swept) before it was answered.
        held = []  # (answered, first settling call sent, tokens)
        for other in firsts:
            rid = other.result["reservation_id"]
            settling = [op.sent for op in by_key[("commit", rid)] + by_key[("release", rid)]]
            hold = db.holds.get((account, other.key))
            if other.args["ttl_seconds"] >= 60 and hold and hold["status"] != "expired" and not hold["late"]:
                held.append((other.done, min(settling, default=_NEVER), other.result["held"]))
        credit_sum, debit_sum = _Prefix(credits), _Prefix(debits)
        open_holds = _OpenHolds(held)
        for r in sorted(firsts, key=lambda op: op.sent):
            bound = credit_sum.before(r.done) - debit_sum.before(r.sent) - open_holds.during(r.sent, r.done)
            found.expect(
                r.result["held"] <= bound,
                "admission",
                account,
                f"Reserve {r.key} held {r.result['held']} when at most {bound} could have been available",
            )


_NEVER = 2**62


class _Prefix:
    """Sum of tokens of the events before a logical time."""

    def __init__(self, events: list[tuple[int, int]]) -> None:
        events = sorted(events)
        self.times = [t for t, _ in events]
        self.sums = list(itertools.accumulate((n for _, n in events), initial=0))

    def before(self, time: int) -> int:
        return self.sums[bisect.bisect_left(self.times, time)]


class _OpenHolds:
    """Tokens of holds answered before `sent` whose first settling call came after `done`: a
    sweep over Reserves in order of sending, with a Fenwick tree keyed by settling time."""

    def __init__(self, holds: list[tuple[int, int, int]]) -> None:
        self.holds = sorted(holds)
        self.keys = sorted({settled for _, settled, _ in holds})
        self.tree = [0] * (len(self.keys) + 1)
        self.added = self.total = 0

    def during(self, sent: int, done: int) -> int:
        """Call with non-decreasing `sent`."""
        while self.added < len(self.holds) and self.holds[self.added][0] < sent:
            _, settled, tokens = self.holds[self.added]
            i = bisect.bisect_left(self.keys, settled) + 1
            while i < len(self.tree):
                self.tree[i] += tokens
                i += i & -i
            self.total += tokens
            self.added += 1
        i, settled_by_done = bisect.bisect_right(self.keys, done), 0
        while i > 0:
            settled_by_done += self.tree[i]
            i -= i & -i
        return self.total - settled_by_done


def _first_acked(ops: list[Op]) -> Op | None:
    return next((op for op in ops if op.acked), None)
