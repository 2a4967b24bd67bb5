"""`meter account show`, `meter usage` and `meter purchases refused`: an account (and what support
acts on) as a human reads it, or as JSON (`--json`, the RPCs' own proto3 JSON), over gRPC.

They call a running meter (any replica) with the same RPCs a billing page uses, so what an
engineer sees is what the product sees; nothing here reads the database.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from google.type import date_pb2

from meter.client import MeterClient, MeterRpcError
from meter.domain.balance_events import whole_numbers
from meter.domain.usage import UsageGrouping
from meter.v1 import meter_pb2 as pb

RECENT_ENTRIES = 10
OPEN_HOLDS_SHOWN = 20

_WARNINGS = {
    pb.WARNING_LEVEL_NONE: "none",
    pb.WARNING_LEVEL_PERCENT_80: "80 %",
    pb.WARNING_LEVEL_PERCENT_90: "90 %",
    pb.WARNING_LEVEL_PERCENT_95: "95 %",
    pb.WARNING_LEVEL_EXHAUSTED: "exhausted",
}


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; columns listed in `right` (numbers) aligned right."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            str(cell).rjust(width) if i in right else str(cell).ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def fields(pairs: Sequence[Sequence[str]]) -> str:
    """Label and value lines, the values aligned."""
    width = max(len(label) for label, _ in pairs)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in pairs)


def tokens(value: int) -> str:
    return f"{value:,}"


def usd(micros: int) -> str:
    """Micro-USD as dollars, exact to the micro-dollar."""
    sign, micros = ("-" if micros < 0 else ""), abs(micros)
    return f"{sign}${micros // 1_000_000:,}.{micros % 1_000_000:06d}"


def when(stamp: timestamp_pb2.Timestamp) -> str:
    return stamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S")


def event_line(event: pb.BalanceEvent) -> str:
    """A balance event as a person watches it: when, whose, which, what it said, and the balance
    right after."""
    data = json_format.MessageToDict(event.data)
    said = " ".join(f"{key}={_plain(value)}" for key, value in sorted(data.items()) if key != "balance")
    balance = event.balance
    after = (
        f"available {tokens(balance.available)} (allowance {tokens(balance.allowance_remaining)}, "
        f"purchased {tokens(balance.purchased_remaining)}, held {tokens(balance.held)}, debt {tokens(balance.debt)})"
    )
    return f"{when(event.occurred_at)}  {event.account_id}  #{event.sequence}  {event.type}  {said}  -> {after}"


def _plain(value: Any) -> str:
    return f"{int(value):,}" if isinstance(value, float) and value.is_integer() else str(value)


def event_json(event: pb.BalanceEvent) -> str:
    """One line of proto3 JSON (the .proto field names), for a pipe; the data's amounts whole JSON
    numbers, as the webhook body gives them (a Struct holds every number as a double)."""
    shown = json_format.MessageToDict(event, preserving_proto_field_name=True)
    shown["data"] = whole_numbers(shown.get("data", {}))
    return json.dumps(shown, separators=(",", ":"))


def as_json(value: Message | Sequence[Message] | Mapping[str, Any]) -> str:
    """Messages as proto3 JSON with the .proto field names (what grpcurl prints), indented."""

    def plain(item: Any) -> Any:
        if isinstance(item, Message):
            return json_format.MessageToDict(item, preserving_proto_field_name=True)
        if isinstance(item, Mapping):
            return {key: plain(inner) for key, inner in item.items()}
        if isinstance(item, list | tuple):
            return [plain(inner) for inner in item]
        return item

    return json.dumps(plain(value), indent=2)


@dataclass(frozen=True)
class AccountView:
    """What `meter account show` reads: the balance, open holds, budgets and newest entries."""

    balance: pb.Balance
    holds: pb.ListOpenReservationsResponse
    budgets: list[pb.Budget]
    entries: pb.ListLedgerEntriesResponse
    grants: list[pb.Grant]

    def as_json(self) -> str:
        return as_json(
            {
                "balance": self.balance,
                "grants": self.grants,
                "open_reservations": self.holds,
                "budgets": self.budgets,
                "recent_entries": list(self.entries.entries),
            }
        )


async def account_view(client: MeterClient, account_id: str) -> AccountView:
    details = await client.get_balance_details(account_id=account_id)
    holds = await client.list_open_reservations(account_id=account_id, limit=OPEN_HOLDS_SHOWN)
    entries = await client.list_ledger_entries(
        pb.ListLedgerEntriesRequest(account_id=account_id, page_size=RECENT_ENTRIES)
    )
    return AccountView(details.balance, holds, await _budgets(client, account_id), entries, list(details.grants))


async def account_show(client: MeterClient, account_id: str) -> str:
    return account_text(await account_view(client, account_id))


def account_text(view: AccountView) -> str:
    b, holds, entries = view.balance, view.holds, view.entries
    period_tokens = b.used_this_period + b.held + b.allowance_remaining + b.purchased_remaining + b.granted_remaining
    share = f"{b.used_this_period * 100 // period_tokens} %" if period_tokens else "-"
    summary = fields(
        [
            ["plan", b.plan_id],
            ["period", f"{when(b.period_start)} to {when(b.period_end)} UTC"],
            ["allowance", f"{tokens(b.allowance_remaining)} left of {tokens(b.allowance_total)}"],
            ["purchased", f"{tokens(b.purchased_remaining)} left"],
            *([["granted", f"{tokens(b.granted_remaining)} left"]] if b.granted_remaining else []),
            ["held", f"{tokens(b.held)} in {holds.open_count} open hold{'' if holds.open_count == 1 else 's'}"],
            ["available", tokens(b.available)],
            ["debt", tokens(b.debt)],
            ["used", f"{tokens(b.used_this_period)} this period ({share}; warning: {_WARNINGS[b.warning_level]})"],
        ]
    )
    parts = [f"account {b.account_id}", summary]
    if view.grants:
        parts.append("\ngrants (in the order drawn)")
        parts.append(
            table(
                ["GRANT", "SOURCE", "PRIORITY", "REMAINING", "HELD", "EXPIRES", "REASON"],
                [
                    [
                        str(g.grant_id) if g.grant_id else "-",
                        pb.GrantSource.Name(g.source).removeprefix("GRANT_SOURCE_").lower(),
                        str(g.priority),
                        tokens(g.remaining),
                        tokens(g.held),
                        when(g.expires_at) if g.HasField("expires_at") else "never",
                        g.reason,
                    ]
                    for g in view.grants
                ],
                right=[2, 3, 4],
            )
        )
    if holds.reservations:
        shown = len(holds.reservations)
        parts.append(f"\nopen holds ({shown} of {holds.open_count}, soonest to expire first)")
        parts.append(
            table(
                ["RESERVATION", "MODEL", "HELD", "CREATED", "EXPIRES", "LABELS"],
                [
                    [
                        r.reservation_id,
                        r.model,
                        tokens(r.held_tokens),
                        when(r.created_at),
                        when(r.expires_at),
                        " ".join(f"{k}={v}" for k, v in sorted(r.labels.items())),
                    ]
                    for r in holds.reservations
                ],
                right=[2],
            )
        )
    budgets = view.budgets
    if budgets:
        parts.append("\nbudgets (their current period)")
        parts.append(
            table(
                ["LABEL", "UNIT", "CAP", "USED", "HELD", "REMAINING", "PERIOD"],
                [[f"{g.label_key}={g.label_value}", *_budget_amounts(g), _budget_period(g)] for g in budgets],
                right=[2, 3, 4, 5],
            )
        )
    parts.append(f"\nrecent entries (newest {len(entries.entries)})")
    parts.append(
        table(
            ["ID", "TIME", "KIND", "POOL", "AMOUNT", "MODEL", "COST", "CALLER", "REFERENCE"],
            [
                [
                    str(e.entry_id),
                    when(e.created_at),
                    pb.EntryKind.Name(e.kind).removeprefix("ENTRY_KIND_").lower(),
                    pb.Pool.Name(e.pool).removeprefix("POOL_").lower(),
                    f"{e.amount:+,}",
                    e.usage.model if e.HasField("usage") else "",
                    usd(e.usage.cost_micros) if e.HasField("usage") else "",
                    e.caller,
                    e.reservation_id or e.ref,
                ]
                for e in entries.entries
            ],
            right=[0, 4, 6],
        )
    )
    return "\n".join(parts)


async def _budgets(client: MeterClient, account_id: str) -> list[pb.Budget]:
    """The account's budgets; none shown to a caller that may not list them."""
    try:
        return list((await client.list_budgets(account_id=account_id)).budgets)
    except MeterRpcError as refused:
        if refused.reason == "METHOD_NOT_ALLOWED":
            return []
        raise


_WINDOWS = {
    pb.BUDGET_WINDOW_DAY: "day",
    pb.BUDGET_WINDOW_WEEK: "week",
    pb.BUDGET_WINDOW_CALENDAR_MONTH: "calendar-month",
}


def _budget_period(budget: pb.Budget) -> str:
    """The budget's window (the account's month unless it has its own) and when its period ends."""
    return f"{_WINDOWS.get(budget.window, 'month')}, to {when(budget.period_end)}"


def _budget_amounts(budget: pb.Budget) -> list[str]:
    amount = usd if budget.unit == pb.BUDGET_UNIT_COST_MICROS else tokens
    unit = "cost" if budget.unit == pb.BUDGET_UNIT_COST_MICROS else "tokens"
    return [unit, *(amount(value) for value in (budget.cap, budget.used, budget.held, budget.remaining))]


_GROUPINGS = {
    UsageGrouping.DAY.value: pb.USAGE_GROUPING_DAY,
    UsageGrouping.MODEL.value: pb.USAGE_GROUPING_MODEL,
    UsageGrouping.PROVIDER.value: pb.USAGE_GROUPING_PROVIDER,
    UsageGrouping.LABELS.value: pb.USAGE_GROUPING_LABELS,
}


@dataclass(frozen=True)
class UsageQuery:
    """`by` day, model, provider or only `labels`; one column per label key, rows of the calls
    labelled with `where`'s values only."""

    account_id: str
    first: date
    last: date
    by: str
    labels: Sequence[str] = ()
    where: Mapping[str, str] | None = None


async def usage(client: MeterClient, query: UsageQuery) -> pb.GetUsageResponse:
    request = pb.GetUsageRequest(
        account_id=query.account_id,
        group_by=_GROUPINGS[query.by],
        group_by_labels=query.labels,
        label_filter=query.where or {},
        to=_date(query.last),
        **{"from": _date(query.first)},
    )
    return await client.get_usage(request)


async def usage_report(
    client: MeterClient,
    account_id: str,
    first: date,
    last: date,
    by: str,
    labels: Sequence[str] = (),
    where: Mapping[str, str] | None = None,
) -> str:
    query = UsageQuery(account_id, first, last, by, labels, where)
    return usage_text(query, await usage(client, query))


def usage_text(query: UsageQuery, report: pb.GetUsageResponse) -> str:
    account_id, first, last, by, labels, where = (
        query.account_id,
        query.first,
        query.last,
        query.by,
        query.labels,
        query.where,
    )

    def cells(group: list[str], t: pb.UsageTotals) -> list[str]:
        return [
            *group,
            tokens(t.requests),
            tokens(t.input_tokens),
            tokens(t.cached_input_tokens),
            tokens(t.cache_write_tokens),
            tokens(t.output_tokens),
            tokens(t.reasoning_tokens),
            tokens(t.charged_tokens),
            usd(t.cost_micros),
            tokens(t.unbilled_tokens),
        ]

    def group_of(r: pb.UsageRow) -> list[str]:
        by_labels = [r.labels.get(key, "-") for key in labels]
        if by == "labels":
            return by_labels
        first_cell = {"day": f"{r.day.year:04d}-{r.day.month:02d}-{r.day.day:02d}", "model": r.model}
        return [first_cell.get(by, r.provider), *by_labels]

    group_headers = [by.upper()] * (by != "labels") + [key.upper() for key in labels]
    rows = [cells(group_of(r), r.totals) for r in report.rows]
    total = cells(["total"] + [""] * (len(group_headers) - 1), report.total)
    heading = f"usage of {account_id}, {first} to {last} (UTC days, both included), by {by}"
    if labels and by != "labels":
        heading += " and " + ", ".join(labels)
    elif labels:
        heading = heading.removesuffix("labels") + ", ".join(labels)
    if where:
        heading += ", only " + ", ".join(f"{key}={value}" for key, value in where.items())
    classes = ["INPUT", "CACHE-READ", "CACHE-WRITE", "OUTPUT", "REASONING"]
    headers = [*group_headers, "REQUESTS", *classes, "CHARGED", "COST", "UNBILLED"]
    numbers = range(len(group_headers), len(headers))
    return heading + "\n" + table(headers, [*rows, total], right=numbers)


def default_range(today: date | None = None) -> tuple[date, date]:
    """The last 30 UTC days, today included."""
    last = today or datetime.now(UTC).date()
    return last - timedelta(days=29), last


def _date(value: date) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


async def refused_purchases(
    client: MeterClient, account_id: str, limit: int, *, unsettled_only: bool = False
) -> list[pb.RefusedPurchase]:
    """Newest first, as many pages as `limit` takes."""
    found: list[pb.RefusedPurchase] = []
    token = ""
    while len(found) < limit:
        page = await client.list_refused_purchases(
            account_id=account_id,
            page_size=min(limit - len(found), 1000),
            page_token=token,
            unsettled_only=unsettled_only,
        )
        found.extend(page.purchases)
        token = page.next_page_token
        if not token:
            break
    return found


def refused_text(found: Sequence[pb.RefusedPurchase], account_id: str) -> str:
    """What was paid, for what, why it was refused, and the PaymentIntent to refund."""
    if not found:
        return "no refused purchases" + (f" for {account_id}" if account_id else "")
    rows = [
        [
            when(p.refused_time),
            p.account_id,
            p.pack_id,
            f"{p.amount_minor:,} {p.currency}",
            p.payment_intent or "-",
            p.reason,
            refusal_state(p),
        ]
        for p in found
    ]
    headers = ["refused", "account", "pack", "paid (minor unit)", "payment_intent", "reason", "state"]
    listing = table(headers, rows, right=[3])
    reasons = "\n".join(f"{p.payment_ref}: {p.message}" + (f" (note: {p.note})" if p.note else "") for p in found)
    return f"{listing}\n\n{reasons}"


def refusal_state(purchase: pb.RefusedPurchase) -> str:
    """open, refund requested, refunded, resolved; with what was refunded of a partial refund."""
    state = pb.RefusedPurchaseState.Name(purchase.state).removeprefix("REFUSED_PURCHASE_STATE_").lower()
    if purchase.refunded_minor and purchase.state != pb.REFUSED_PURCHASE_STATE_REFUNDED:
        state += f" ({purchase.refunded_minor:,} refunded)"
    return state.replace("_", " ")


def settled_text(purchase: pb.RefusedPurchase) -> str:
    """A refused purchase after support's step: its state and what settles it."""
    said = f"{purchase.payment_ref} ({purchase.account_id}): {refusal_state(purchase)}"
    if purchase.refund_ref:
        said += f", refund {purchase.refund_ref}"
    if purchase.note:
        said += f", note: {purchase.note}"
    if purchase.state == pb.REFUSED_PURCHASE_STATE_REFUND_REQUESTED:
        said += "; the refund's event from Stripe makes it refunded"
    return said
