"""The checks of subscriber accounts (`billing.subscribe`): whatever order their events came in,
and however often, the period's allowance was granted once (the proration invoice never
refilling it), each invoice remembers what it bought, and each refund took back its share of that
once; nothing was taken back that was not granted."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from meterlab.chaos.billing import BUSINESS, PERIOD_TOKENS, PRORATION_TOKENS
from meterlab.chaos.history import History, Op, Outcome

if TYPE_CHECKING:
    from meterlab.chaos.checker import Findings

KINDS = {"subscription", "invoice", "invoice_payment", "sub_refund"}
EXPLAINED_KINDS = {"subscription_grant", "expiry", "refund", "debt_payment"}


def check(
    found: Findings,
    ledger: list[dict[str, Any]],
    invoices: dict[str, dict[str, Any]],
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
        _grants(found, account, entries[account], ops[account])
        _refunds(found, account, entries[account], ops[account], invoices)


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
        taken_in_all += due - row["withheld_tokens"]  # withheld from months not begun: never granted
    granted = sum(e["amount"] for e in entries if e["kind"] == "subscription_grant")
    found.expect(taken_in_all <= granted, "refund", account, f"{taken_in_all} taken back of {granted} granted")
