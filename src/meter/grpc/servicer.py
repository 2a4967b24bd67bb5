"""MeterService: translates protobuf requests into use-case calls and results back. Nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc

from meter.domain.budgets import BudgetKey
from meter.domain.errors import InvalidField
from meter.domain.grants import GrantRequest
from meter.service import balance as balance_case
from meter.service import (
    balance_events,
    budgets,
    checkout,
    credits,
    events,
    extend,
    grants,
    invoices,
    ledger,
    payment_failures,
    plans,
    purchases,
    refused_purchases,
    reservations,
    reserve,
    reversals,
    settle,
    usage,
)
from meter.service.context import Meter
from meter.v1 import meter_pb2 as pb
from meter.v1 import meter_pb2_grpc

from . import convert

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class MeterServicer(meter_pb2_grpc.MeterServiceServicer):
    def __init__(self, meter: Meter, stopping: asyncio.Event) -> None:
        """`stopping`: set when the server starts to stop; streams end then (their readers
        resume elsewhere from their last sequence) rather than hold the stop."""
        self._meter = meter
        self._stopping = stopping

    async def Reserve(self, request: pb.ReserveRequest, context: Context) -> pb.ReserveResponse:
        result = await reserve.reserve(
            self._meter,
            account_id=request.account_id,
            request_id=request.request_id,
            model=request.model,
            input_tokens=request.input_tokens,
            max_output_tokens=request.max_output_tokens,
            ttl_seconds=request.ttl_seconds,
            labels=dict(request.labels),
        )
        return pb.ReserveResponse(
            reservation_id=result.reservation_id,
            held_tokens=result.held_tokens,
            expires_at=convert.timestamp(result.expires_at),
            balance=convert.balance(result.balance),
            catalog_version=result.catalog_version,
            status=convert.hold_status(result.status),
        )

    async def Commit(self, request: pb.CommitRequest, context: Context) -> pb.CommitResponse:
        result = await settle.commit(
            self._meter, reservation_id=request.reservation_id, tokens=convert.call_tokens(request)
        )
        return pb.CommitResponse(
            charged_tokens=result.usage.charged_tokens,
            cost_micros=result.usage.cost_micros,
            unbilled_tokens=result.usage.unbilled_tokens,
            balance=convert.balance(result.balance),
            late=result.usage.late,
        )

    async def ChargeUsage(self, request: pb.ChargeUsageRequest, context: Context) -> pb.ChargeUsageResponse:
        result = await settle.charge_usage(
            self._meter,
            account_id=request.account_id,
            request_id=request.request_id,
            model=request.model,
            tokens=convert.call_tokens(request),
            labels=dict(request.labels),
        )
        usage = result.charge.usage
        return pb.ChargeUsageResponse(
            reservation_id=result.reservation_id,
            charged_tokens=usage.charged_tokens,
            cost_micros=usage.cost_micros,
            unbilled_tokens=usage.unbilled_tokens,
            balance=convert.balance(result.charge.balance),
        )

    async def Release(self, request: pb.ReleaseRequest, context: Context) -> pb.ReleaseResponse:
        result = await settle.release(self._meter, reservation_id=request.reservation_id)
        return pb.ReleaseResponse(balance=convert.balance(result))

    async def ExtendReservation(
        self, request: pb.ExtendReservationRequest, context: Context
    ) -> pb.ExtendReservationResponse:
        expires_at = await extend.extend(
            self._meter, reservation_id=request.reservation_id, ttl_seconds=request.ttl_seconds
        )
        return pb.ExtendReservationResponse(expires_at=convert.timestamp(expires_at))

    async def GetBalance(self, request: pb.GetBalanceRequest, context: Context) -> pb.GetBalanceResponse:
        result = await balance_case.get_balance(self._meter, account_id=request.account_id)
        return convert.account_balance(result)

    async def CreditPurchase(self, request: pb.CreditPurchaseRequest, context: Context) -> pb.CreditPurchaseResponse:
        result = await purchases.credit_purchase(
            self._meter,
            account_id=request.account_id,
            pack_id=request.pack_id,
            tokens=request.tokens,
            amount_minor=request.amount_minor,
            currency=request.currency,
            payment_ref=request.payment_ref,
            payment_intent=request.payment_intent,
            event_id=request.event_id,
            source_event=convert.source_event(request),
        )
        return pb.CreditPurchaseResponse(
            balance=convert.balance(result.balance),
            credited_tokens=result.tokens,
            newly_credited=result.newly_credited,
            event_status=convert.event_status(result.event_status),
        )

    async def SetPlan(self, request: pb.SetPlanRequest, context: Context) -> pb.SetPlanResponse:
        result = await plans.set_plan(
            self._meter,
            account_id=request.account_id,
            plan_id=request.plan_id,
            period=convert.optional_period(request),
            subscription_ref=request.subscription_ref,
            event_time=convert.optional_datetime(request, "event_time"),
            monthly_allowance_tokens=request.monthly_allowance_tokens,
            expire_allowance_now=request.expire_allowance_now,
            source_event=convert.source_event(request),
            limits=convert.optional_limits(request),
            stripe_prices=list(request.stripe_prices),
            expired_holds=convert.expired_holds(request.expired_holds),
            subscription_cancelled=request.subscription_cancelled,
            subscription_status=request.subscription_status,
        )
        return pb.SetPlanResponse(
            balance=convert.balance(result.balance),
            applied=result.applied,
            event_status=convert.event_status(result.event_status),
        )

    async def Adjust(self, request: pb.AdjustRequest, context: Context) -> pb.AdjustResponse:
        result = await credits.adjust(
            self._meter,
            account_id=request.account_id,
            pool=convert.pool(request.pool),
            delta=request.delta,
            reason=request.reason,
            request_id=request.request_id,
        )
        return pb.AdjustResponse(balance=convert.balance(result))

    async def Grant(self, request: pb.GrantRequest, context: Context) -> pb.GrantResponse:
        result = await grants.grant_tokens(
            self._meter,
            GrantRequest(
                account_id=request.account_id,
                request_id=request.request_id,
                tokens=request.tokens,
                source=convert.grant_source(request.source),
                priority=request.priority,
                expires_at=convert.optional_datetime(request, "expires_at"),
                reason=request.reason,
            ),
        )
        return pb.GrantResponse(
            grant=convert.grant(result.granted.grant),
            balance=convert.balance(result.balance),
            created=result.granted.created,
        )

    async def RevokeGrant(self, request: pb.RevokeGrantRequest, context: Context) -> pb.RevokeGrantResponse:
        result = await grants.revoke_grant(self._meter, account_id=request.account_id, grant_id=request.grant_id)
        return pb.RevokeGrantResponse(
            revoked_tokens=result.revoked.tokens,
            revoked=result.revoked.revoked,
            balance=convert.balance(result.balance),
        )

    async def GetCatalog(self, request: pb.GetCatalogRequest, context: Context) -> pb.GetCatalogResponse:
        return convert.catalog(self._meter.catalog)

    async def ReverseCredit(self, request: pb.ReverseCreditRequest, context: Context) -> pb.ReverseCreditResponse:
        reversal = reversals.ReversalRequest(
            kind=convert.reversal_kind(request.kind),
            account_id=request.account_id,
            payment_ref=request.payment_ref,
            payment_intent=request.payment_intent,
            invoice_ref=request.invoice_ref,
            amount_minor=request.amount_minor,
            reversal_ref=request.reversal_ref,
        )
        result = await reversals.reverse_credit(self._meter, reversal, convert.source_event(request))
        return pb.ReverseCreditResponse(
            balance=convert.optional_balance(result.balance),
            reversed_tokens=result.tokens,
            unbilled_tokens=result.unbilled,
            event_status=convert.event_status(result.event_status),
        )

    async def GrantPeriodAllowance(
        self, request: pb.GrantPeriodAllowanceRequest, context: Context
    ) -> pb.GrantPeriodAllowanceResponse:
        paid = invoices.PaidInvoice(
            subscription_ref=request.subscription_ref,
            invoice_ref=request.invoice_ref,
            account_id=request.account_id,
            amount_minor=request.amount_minor,
            currency=request.currency,
            lines=convert.invoice_lines(request),
            payment_intent=request.payment_intent,
        )
        result = await invoices.grant_period_allowance(self._meter, paid, convert.source_event(request))
        return pb.GrantPeriodAllowanceResponse(
            balance=convert.optional_balance(result.balance),
            granted=result.granted,
            event_status=convert.event_status(result.event_status),
        )

    async def RecordPaymentFailure(
        self, request: pb.RecordPaymentFailureRequest, context: Context
    ) -> pb.RecordPaymentFailureResponse:
        failure = payment_failures.PaymentFailure(
            subscription_ref=request.subscription_ref,
            invoice_ref=request.invoice_ref,
            account_id=request.account_id,
            amount_minor=request.amount_minor,
            currency=request.currency,
            attempt_count=request.attempt_count,
            next_attempt=convert.optional_datetime(request, "next_attempt_time"),
            billing_reason=request.billing_reason,
        )
        recorded = await payment_failures.record_payment_failure(self._meter, failure, convert.source_event(request))
        return pb.RecordPaymentFailureResponse(
            balance=convert.balance(recorded.balance) if recorded.balance else None,
            event_status=convert.event_status(recorded.event_status),
        )

    async def LinkInvoicePayment(
        self, request: pb.LinkInvoicePaymentRequest, context: Context
    ) -> pb.LinkInvoicePaymentResponse:
        result = await invoices.link_invoice_payment(
            self._meter,
            invoice_ref=request.invoice_ref,
            payment_intent=request.payment_intent,
            source_event=convert.source_event(request),
        )
        return pb.LinkInvoicePaymentResponse(
            balance=convert.optional_balance(result.balance), event_status=convert.event_status(result.event_status)
        )

    async def RecordWebhookEvent(
        self, request: pb.RecordWebhookEventRequest, context: Context
    ) -> pb.RecordWebhookEventResponse:
        event = convert.source_event(request, "event")
        if event is None:
            raise InvalidField("event", "is required")
        status = await events.record(
            self._meter,
            account_id=request.account_id,
            event=event,
            status=convert.stored_status(request.status),
            reason=request.reason,
        )
        return pb.RecordWebhookEventResponse(event_status=convert.event_status(status))

    async def GetWebhookEvent(self, request: pb.GetWebhookEventRequest, context: Context) -> pb.GetWebhookEventResponse:
        return convert.stored_event(await events.get(self._meter, event_id=request.event_id))

    async def ListLedgerEntries(
        self, request: pb.ListLedgerEntriesRequest, context: Context
    ) -> pb.ListLedgerEntriesResponse:
        page = await ledger.list_entries(
            self._meter,
            account_id=request.account_id,
            page_size=request.page_size,
            page_token=request.page_token,
            kind=convert.entry_kind_filter(request.kind),
            start=convert.optional_datetime(request, "from"),
            end=convert.optional_datetime(request, "to"),
        )
        return pb.ListLedgerEntriesResponse(
            entries=[convert.ledger_entry(e) for e in page.entries], next_page_token=page.next_page_token
        )

    async def ListEvents(self, request: pb.ListEventsRequest, context: Context) -> pb.ListEventsResponse:
        page = await balance_events.list_events(
            self._meter,
            account_id=request.account_id,
            after_sequence=request.after_sequence,
            page_size=request.page_size,
        )
        return pb.ListEventsResponse(
            events=[convert.balance_event(e) for e in page.events], last_sequence=page.last_sequence, more=page.more
        )

    async def WatchEvents(
        self, request: pb.WatchEventsRequest, context: Context
    ) -> AsyncIterator[pb.WatchEventsResponse]:
        async for event in balance_events.watch_events(
            self._meter,
            account_id=request.account_id,
            after_sequence=request.after_sequence,
            after_position=request.after_position,
            until=self._stopping,
        ):
            yield pb.WatchEventsResponse(event=convert.balance_event(event))

    async def GetUsage(self, request: pb.GetUsageRequest, context: Context) -> pb.GetUsageResponse:
        report = await usage.get_usage(
            self._meter,
            account_id=request.account_id,
            first_day=convert.optional_date(request, "from"),
            last_day=convert.optional_date(request, "to"),
            grouping=convert.usage_grouping(request.group_by),
            label_keys=list(request.group_by_labels),
            label_filter=dict(request.label_filter),
        )
        return convert.usage_report(report)

    async def SetBudget(self, request: pb.SetBudgetRequest, context: Context) -> pb.SetBudgetResponse:
        result = await budgets.set_budget(
            self._meter,
            account_id=request.account_id,
            key=BudgetKey(request.label_key, request.label_value),
            unit=convert.budget_unit(request.unit),
            cap=request.cap,
            window=convert.budget_window(request.window),
        )
        return pb.SetBudgetResponse(budget=convert.budget(result.budget), created=result.created)

    async def DeleteBudget(self, request: pb.DeleteBudgetRequest, context: Context) -> pb.DeleteBudgetResponse:
        deleted = await budgets.delete_budget(
            self._meter, account_id=request.account_id, key=BudgetKey(request.label_key, request.label_value)
        )
        return pb.DeleteBudgetResponse(deleted=deleted)

    async def ListBudgets(self, request: pb.ListBudgetsRequest, context: Context) -> pb.ListBudgetsResponse:
        found = await budgets.list_budgets(self._meter, account_id=request.account_id)
        return pb.ListBudgetsResponse(budgets=[convert.budget(b) for b in found])

    async def CreateCheckoutSession(
        self, request: pb.CreateCheckoutSessionRequest, context: Context
    ) -> pb.CreateCheckoutSessionResponse:
        opened = await checkout.create_checkout_session(
            self._meter,
            account_id=request.account_id,
            pack_id=request.pack_id,
            success_url=request.success_url,
            cancel_url=request.cancel_url,
            request_id=request.request_id,
        )
        return pb.CreateCheckoutSessionResponse(
            session=convert.checkout_session(opened.session, opened.now), created=opened.created
        )

    async def ListRefusedPurchases(
        self, request: pb.ListRefusedPurchasesRequest, context: Context
    ) -> pb.ListRefusedPurchasesResponse:
        page = await checkout.refused_purchases(
            self._meter,
            account_id=request.account_id,
            page_size_=request.page_size,
            page_token=request.page_token,
            unsettled_only=request.unsettled_only,
        )
        return pb.ListRefusedPurchasesResponse(
            purchases=[convert.refused_purchase(p) for p in page.purchases], next_page_token=page.next_page_token
        )

    async def RefundRefusedPurchase(
        self, request: pb.RefundRefusedPurchaseRequest, context: Context
    ) -> pb.RefundRefusedPurchaseResponse:
        refused = await refused_purchases.refund_refused_purchase(
            self._meter, account_id=request.account_id, payment_ref=request.payment_ref
        )
        return pb.RefundRefusedPurchaseResponse(purchase=convert.refused_purchase(refused))

    async def ResolveRefusedPurchase(
        self, request: pb.ResolveRefusedPurchaseRequest, context: Context
    ) -> pb.ResolveRefusedPurchaseResponse:
        refused = await refused_purchases.resolve_refused_purchase(
            self._meter, account_id=request.account_id, payment_ref=request.payment_ref, note=request.note
        )
        return pb.ResolveRefusedPurchaseResponse(purchase=convert.refused_purchase(refused))

    async def ListOpenReservations(
        self, request: pb.ListOpenReservationsRequest, context: Context
    ) -> pb.ListOpenReservationsResponse:
        found = await reservations.list_open(self._meter, account_id=request.account_id, limit=request.limit)
        return convert.open_reservations(found)
