"""The checks of subscriber accounts (`billing.subscribe`, `billing.subscribe_yearly`): whatever
order their events came in, and however often, each allowance month was granted once (the
proration invoice never refilling it; a yearly subscriber's only within its paid year, each month
begun the Pro allowance less what refunds withheld from it), each invoice remembers what it
bought, and each refund took back its share of that once; nothing was taken back from the
balance that was not granted and still there."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from meter.domain.periods import add_months
from meterlab.chaos.billing import BUSINESS, PERIOD_TOKENS, PRORATION_TOKENS, YEAR_MONTHS, YEARLY_PRICE
from meterlab.chaos.history import History, Op, Outcome

if TYPE_CHECKING:
    from meterlab.chaos.checker import Findings

KINDS = {"subscription", "invoice", "invoice_payment", "sub_refund"}
EXPLAINED_KINDS = {"subscription_grant", "expiry", "refund", "debt_payment"}


def check(
    found: Findings,
    ledger: list[dict[str, Any]],
    invoices: dict[str, dict[str, Any]],
    accounts: dict[str, dict[str, Any]],
    history: History,
    subscribers: set[str],
) -> None:
    ops: dict[str, list[Op]] = defaultdict(list)
    for op in history.ops:
        if op.account in subscribers:
            ops[op.account].append(op)
            found.expect(op.outcome is not Outcome.REFUSED, op.kind, op.account, f"{op.key} refused: {op.reason}")
    entries: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in ledger:
        if entry["account_id"] in subscribers:
            entries[entry["account_id"]].append(entry)
    for account in subscribers:
        year = _year(ops[account])
        if year is None:
            _grants(found, account, entries[account], ops[account])
        else:
            paid = [row for row in invoices.values() if row["account_id"] == account]
            _yearly_grants(found, account, entries[account], ops[account], year, accounts.get(account), paid)
        _refunds(found, account, entries[account], ops[account], invoices)


def _year(ops: list[Op]) -> list[datetime] | None:
    """A yearly subscriber's allowance months (the starts of the twelve, then the year's end), as
    its subscription was sent; None for another subscriber."""
    for op in ops:
        if op.kind == "subscription" and op.args.get("price") == YEARLY_PRICE:
            start = datetime.fromtimestamp(op.args["start"], UTC)
            assert add_months(start, YEAR_MONTHS) == datetime.fromtimestamp(op.args["end"], UTC)
            return [add_months(start, k) for k in range(YEAR_MONTHS + 1)]
    return None


def _grants(found: Findings, account: str, entries: list[dict[str, Any]], ops: list[Op]) -> None:
    """Each allowance month the invoice paid for is granted once, at most the business plan's
    allowance (the upgrade's difference comes with the month it happened in); a clock jump may
    begin another month of the paid period, which is granted too."""
    months: dict[str, int] = {}
    for entry in entries:
        if entry["kind"] == "subscription_grant":
            month = entry["ref"] if str(entry["ref"]).startswith("period:") else "upgrade"
            months[month] = months.get(month, 0) + entry["amount"]
    upgrade = months.pop("upgrade", 0)
    twice = [month for month, granted in months.items() if granted > BUSINESS.monthly_allowance_tokens]
    found.expect(not twice, "allowance", account, f"months granted more than once: {twice}")
    everything_landed = all(op.acked for op in ops if op.kind in ("subscription", "invoice"))
    if everything_landed:
        first = min(months, default="")
        found.expect(
            months.get(first, 0) + upgrade == BUSINESS.monthly_allowance_tokens,
            "allowance",
            account,
            f"the first month got {months.get(first, 0)} + {upgrade}, not the business allowance once",
        )


def _yearly_grants(
    found: Findings,
    account: str,
    entries: list[dict[str, Any]],
    ops: list[Op],
    year: list[datetime],
    row: dict[str, Any] | None,
    paid: list[dict[str, Any]],
) -> None:
    """A yearly subscriber's months, counted from its year's start: each granted at most once and
    only by its month's start (named after it), none outside the paid year nor after paid_through
    nor after the month the account is in; and once the subscription and its invoice landed, every
    month from the first granted to the current one granted the Pro allowance less its part of
    what refunds withheld (from the year's last months first: a refund can withhold only from
    months not begun, so the part of a month begun is the same now as when it began)."""
    months, end = year[:YEAR_MONTHS], year[YEAR_MONTHS]
    grants: dict[datetime, list[int]] = defaultdict(list)
    for entry in entries:
        if entry["kind"] == "subscription_grant":
            ref = str(entry["ref"])
            found.expect(ref.startswith("period:"), "yearly", account, f"a grant that names no month: {entry}")
            if ref.startswith("period:"):
                grants[datetime.fromisoformat(ref.removeprefix("period:"))].append(entry["amount"])
    twice = sorted(month.isoformat() for month, amounts in grants.items() if len(amounts) > 1)
    found.expect(not twice, "yearly", account, f"months granted more than once: {twice}")
    outside = sorted(month.isoformat() for month in grants if month not in months)
    found.expect(not outside, "yearly", account, f"months granted outside the paid year to {end}: {outside}")
    if row is None:
        return  # none of its events landed
    later = sorted(m.isoformat() for m in grants if m > row["period_start"] or (row["paid_through"] or end) <= m)
    found.expect(not later, "yearly", account, f"months granted after the current one or paid_through: {later}")
    landed = all(op.acked for op in ops if op.kind in ("subscription", "invoice"))
    if not landed or not paid:
        return
    found.expect(len(paid) == 1 and paid[0]["months"] == YEAR_MONTHS, "yearly", account, f"the year paid as {paid}")
    found.expect(row["paid_through"] == end, "yearly", account, f"paid through {row['paid_through']}, not {end}")
    found.expect(row["period_start"] in months, "yearly", account, f"in a month not of its year: {row}")
    if row["period_start"] not in months:
        return
    current = months.index(row["period_start"])
    first = min((k for k, month in enumerate(months) if month in grants), default=current)
    withheld = paid[0]["withheld_tokens"]
    for k in range(first, current + 1):
        expected = PERIOD_TOKENS - min(PERIOD_TOKENS, max(0, withheld - (YEAR_MONTHS - 1 - k) * PERIOD_TOKENS))
        granted = sum(grants.get(months[k], []))
        found.expect(
            granted == expected,
            "yearly",
            account,
            f"month {k} ({months[k].isoformat()}) granted {granted}, not {expected} ({withheld} withheld)",
        )


def _refunds(
    found: Findings, account: str, entries: list[dict[str, Any]], ops: list[Op], invoices: dict[str, dict[str, Any]]
) -> None:
    refunds = [op for op in ops if op.kind == "sub_refund"]
    taken_in_all = 0
    for invoice_ref in {op.args["invoice"] for op in refunds}:
        row = invoices.get(invoice_ref)
        if row is None:
            continue  # the invoice never landed: its refunds still wait for it
        # A period invoice bought the allowance months that begin in its period (several here).
        expected_tokens = PRORATION_TOKENS if row["proration"] else PERIOD_TOKENS * row["months"]
        found.expect(row["tokens"] == expected_tokens, "invoice", account, f"{invoice_ref} bought {row['tokens']}")
        sent = [op for op in refunds if op.args["invoice"] == invoice_ref]
        charge = sent[0].args["charge"]
        final, amount, tokens = row["refunded_minor"], row["amount_minor"], row["tokens"]
        linked = row["payment_intent"] is not None
        acked = max((op.args["amount"] for op in sent if op.acked), default=0)
        found.expect(
            final in {op.args["amount"] for op in sent} | {0} and (final >= acked or not linked),
            "refund",
            account,
            f"{invoice_ref}: refunded {final}, acknowledged {acked}",
        )
        due = tokens if final == amount else tokens * final // amount
        taken = -sum(e["amount"] for e in entries if e["kind"] == "refund" and e["ref"] == charge)
        found.expect(
            taken + row["cover_claimed"] + row["withheld_tokens"] == due,
            "refund",
            account,
            f"{invoice_ref}: took {taken} (+{row['cover_claimed']} expired, +{row['withheld_tokens']} from months "
            f"not begun) for {final} of {amount} refunded",
        )
        taken_in_all += taken
    # Months not begun (withheld) and ended months' leftovers (expired, or never granted when the
    # invoice came after them) are taken back from nothing: what refunds took from the balance,
    # or made debt, was granted and had not expired.
    granted = sum(e["amount"] for e in entries if e["kind"] == "subscription_grant")
    expired = -sum(e["amount"] for e in entries if e["kind"] == "expiry" and e["pool"] == "allowance")
    found.expect(
        taken_in_all <= granted - expired,
        "refund",
        account,
        f"{taken_in_all} taken back of {granted} granted ({expired} expired)",
    )
