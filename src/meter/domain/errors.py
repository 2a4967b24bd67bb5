"""Errors named for the fact, each carrying its stable reason.

One place (`meter.grpc.errors`) turns them into gRPC statuses; the domain only says which
category a failure belongs to.

    MeterError                      base; .reason, .category, .metadata
    +-- InvalidField                INVALID_ARGUMENT  a field is missing, malformed or absurd
    +-- UnknownModel                INVALID_ARGUMENT  model not in the catalog
    +-- UnknownPack                 INVALID_ARGUMENT  pack missing or no longer sold
    +-- UnknownPlan                 INVALID_ARGUMENT  plan not in the catalog
    +-- UnknownPrice                INVALID_ARGUMENT  no plan is sold at a subscription's prices
    +-- PlanMismatch                INVALID_ARGUMENT  a subscription's prices and named plan differ
    +-- PurchaseMismatch            INVALID_ARGUMENT  purchase differs from its pack
    +-- AccountNotFound             NOT_FOUND
    +-- ReservationNotFound         NOT_FOUND
    +-- PaymentNotFound             NOT_FOUND  no credited purchase has this payment
    +-- SubscriptionNotFound        NOT_FOUND  no account has this subscription
    +-- EventNotFound               NOT_FOUND  no stored webhook event has this id
    +-- GrantNotFound               NOT_FOUND  the account has no grant of this id
    +-- RefusedPurchaseNotFound     NOT_FOUND  the account has no refused purchase of this payment
    +-- InsufficientTokens          FAILED_PRECONDITION  hold does not fit; available, required
    +-- AccountInDebt               FAILED_PRECONDITION  cannot reserve until the debt is paid
    +-- BudgetExceeded              FAILED_PRECONDITION  a budget of the call's labels has not got its worst case
    +-- ReservationReleased         FAILED_PRECONDITION
    +-- ReservationCommitted        FAILED_PRECONDITION
    +-- ReservationExpired          FAILED_PRECONDITION
    +-- StripeNotConfigured         FAILED_PRECONDITION  no Stripe API key: meter cannot sell
    +-- StripeRefused               FAILED_PRECONDITION  Stripe refused the request it was sent
    +-- RequestIdReused             ALREADY_EXISTS  same idempotency key, other parameters
    +-- RefusedPurchaseSettled      ALREADY_EXISTS  the refused purchase was settled otherwise already
    +-- StorageUnavailable          UNAVAILABLE  retry with the same key
    +-- ShuttingDown                UNAVAILABLE  this server is draining; retry elsewhere
    +-- NotReady                    UNAVAILABLE  the database is not reachable or not migrated yet
    +-- StripeUnavailable           UNAVAILABLE  Stripe could not be reached; retry with the same key
    +-- MissingCredentials          UNAUTHENTICATED  no bearer token
    +-- InvalidToken                UNAUTHENTICATED  not a configured caller's token
    +-- MultipleCredentials         UNAUTHENTICATED  more than one authorization header
    +-- MethodNotAllowed            PERMISSION_DENIED  the caller may not call this method
    +-- LoopbackOnly                PERMISSION_DENIED  no callers: a call naming another host than this machine
    +-- RateLimited                 RESOURCE_EXHAUSTED  over a rate limit; retry after retry_after
"""

from __future__ import annotations

import enum
from typing import ClassVar


class ErrorCategory(enum.Enum):
    """What kind of failure an error is; the gRPC layer maps each to one status code."""

    INVALID = "invalid"
    NOT_FOUND = "not_found"
    PRECONDITION = "precondition"
    ALREADY_EXISTS = "already_exists"
    UNAVAILABLE = "unavailable"
    UNAUTHENTICATED = "unauthenticated"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    PERMISSION_DENIED = "permission_denied"


class MeterError(Exception):
    """A refusal the caller can act on; nothing was changed by the call that raised it."""

    reason: ClassVar[str] = "UNSPECIFIED"
    category: ClassVar[ErrorCategory] = ErrorCategory.INVALID
    # Seconds after which a retry can succeed, sent as google.rpc.RetryInfo; None: no advice.
    retry_after: float | None = None

    def __init__(self, message: str, **metadata: object) -> None:
        super().__init__(message)
        self.message = message
        # ErrorInfo metadata is a string map with lowerCamelCase keys (AIP-193).
        self.metadata: dict[str, str] = {key: str(value) for key, value in metadata.items()}


class InvalidField(MeterError):
    reason = "INVALID_FIELD"
    category = ErrorCategory.INVALID

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}", field=field, problem=problem)
        self.field = field


class UnknownModel(MeterError):
    reason = "UNKNOWN_MODEL"
    category = ErrorCategory.INVALID

    def __init__(self, model: str) -> None:
        super().__init__(f"model {model!r} is not in the catalog", model=model)


class UnknownPack(MeterError):
    reason = "UNKNOWN_PACK"
    category = ErrorCategory.INVALID

    def __init__(self, pack_id: str) -> None:
        super().__init__(f"pack {pack_id!r} is not sold", packId=pack_id)


class UnknownPlan(MeterError):
    reason = "UNKNOWN_PLAN"
    category = ErrorCategory.INVALID

    def __init__(self, plan_id: str) -> None:
        super().__init__(f"plan {plan_id!r} is not in the catalog", planId=plan_id)


class UnknownPrice(MeterError):
    reason = "UNKNOWN_PRICE"
    category = ErrorCategory.INVALID

    def __init__(self, stripe_prices: list[str]) -> None:
        shown = ", ".join(p[:100] for p in stripe_prices[:5]) or "none"
        super().__init__(f"no plan in the catalog is sold at Stripe price(s) {shown}", stripePrices=shown)


class PlanMismatch(MeterError):
    reason = "PLAN_MISMATCH"
    category = ErrorCategory.INVALID

    def __init__(self, plan_id: str, price_plans: list[str]) -> None:
        sold = ", ".join(price_plans)
        named = f"metadata names plan {plan_id[:200]!r}, " if plan_id else ""
        super().__init__(f"{named}the subscription's prices are sold as {sold}", planId=plan_id[:200], pricePlans=sold)


class PurchaseMismatch(MeterError):
    reason = "PURCHASE_MISMATCH"
    category = ErrorCategory.INVALID

    def __init__(self, field: str, expected: object, actual: object, source: str = "the catalog says") -> None:
        super().__init__(
            f"{field} is {actual}, {source} {expected}",
            field=field,
            expected=expected,
            actual=actual,
        )


class AccountNotFound(MeterError):
    reason = "ACCOUNT_NOT_FOUND"
    category = ErrorCategory.NOT_FOUND

    def __init__(self, account_id: str) -> None:
        super().__init__(f"account {account_id!r} does not exist", accountId=account_id)


class ReservationNotFound(MeterError):
    reason = "RESERVATION_NOT_FOUND"
    category = ErrorCategory.NOT_FOUND

    def __init__(self, reservation_id: str) -> None:
        super().__init__(f"reservation {reservation_id!r} does not exist", reservationId=reservation_id)


class PaymentNotFound(MeterError):
    reason = "PAYMENT_NOT_FOUND"
    category = ErrorCategory.NOT_FOUND

    def __init__(self, **identity: str) -> None:
        super().__init__(f"no credited purchase has {identity}", **identity)


class GrantNotFound(MeterError):
    reason = "GRANT_NOT_FOUND"
    category = ErrorCategory.NOT_FOUND

    def __init__(self, account_id: str, grant_id: int) -> None:
        super().__init__(f"account {account_id!r} has no grant {grant_id}", accountId=account_id, grantId=str(grant_id))


class RefusedPurchaseNotFound(MeterError):
    reason = "REFUSED_PURCHASE_NOT_FOUND"
    category = ErrorCategory.NOT_FOUND

    def __init__(self, account_id: str, payment_ref: str) -> None:
        super().__init__(
            f"account {account_id!r} has no refused purchase {payment_ref!r} (never refused, or credited since)",
            accountId=account_id,
            paymentRef=payment_ref,
        )


class RefusedPurchaseSettled(MeterError):
    reason = "REFUSED_PURCHASE_SETTLED"
    category = ErrorCategory.ALREADY_EXISTS  # for good: a webhook's redelivery cannot change it

    def __init__(self, payment_ref: str, state: str, doing: str) -> None:
        super().__init__(f"the refused purchase {payment_ref!r} is {state}: it cannot be {doing}", state=state)


class SubscriptionNotFound(MeterError):
    reason = "SUBSCRIPTION_NOT_FOUND"
    category = ErrorCategory.NOT_FOUND

    def __init__(self, subscription_ref: str) -> None:
        super().__init__(f"no account has subscription {subscription_ref!r}", subscriptionRef=subscription_ref)


class EventNotFound(MeterError):
    reason = "EVENT_NOT_FOUND"
    category = ErrorCategory.NOT_FOUND

    def __init__(self, event_id: str) -> None:
        super().__init__(f"no webhook event {event_id!r} is stored", eventId=event_id)


class InsufficientTokens(MeterError):
    reason = "INSUFFICIENT_TOKENS"
    category = ErrorCategory.PRECONDITION

    def __init__(self, available: int, required: int) -> None:
        super().__init__(f"{required} tokens required, {available} available", available=available, required=required)
        self.available = available
        self.required = required


class AccountInDebt(MeterError):
    reason = "ACCOUNT_IN_DEBT"
    category = ErrorCategory.PRECONDITION

    def __init__(self, debt: int) -> None:
        super().__init__(f"the account owes {debt} tokens; a credit must pay them first", debt=debt)


class BudgetExceeded(MeterError):
    reason = "BUDGET_EXCEEDED"
    category = ErrorCategory.PRECONDITION

    def __init__(self, label_key: str, label_value: str, unit: str, cap: int, remaining: int, required: int) -> None:
        super().__init__(
            f"the budget of {label_key}={label_value} has {remaining} {unit} left of {cap} this period; "
            f"the call may use {required}",
            labelKey=label_key,
            labelValue=label_value,
            unit=unit,
            cap=cap,
            remaining=remaining,
            required=required,
        )


class ReservationReleased(MeterError):
    reason = "RESERVATION_RELEASED"
    category = ErrorCategory.PRECONDITION

    def __init__(self, reservation_id: str) -> None:
        super().__init__(f"reservation {reservation_id!r} was released", reservationId=reservation_id)


class ReservationCommitted(MeterError):
    reason = "RESERVATION_COMMITTED"
    category = ErrorCategory.PRECONDITION

    def __init__(self, reservation_id: str) -> None:
        super().__init__(f"reservation {reservation_id!r} was committed", reservationId=reservation_id)


class ReservationExpired(MeterError):
    reason = "RESERVATION_EXPIRED"
    category = ErrorCategory.PRECONDITION

    def __init__(self, reservation_id: str) -> None:
        super().__init__(
            f"reservation {reservation_id!r} expired and its hold was given back",
            reservationId=reservation_id,
        )


class StripeNotConfigured(MeterError):
    reason = "STRIPE_NOT_CONFIGURED"
    category = ErrorCategory.PRECONDITION

    def __init__(self) -> None:
        super().__init__("meter has no Stripe API key: set METER_STRIPE_API_KEY to sell through Checkout")


class StripeRefused(MeterError):
    reason = "STRIPE_REFUSED"
    category = ErrorCategory.PRECONDITION

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"Stripe refused the request: {detail}"[:1000], stripeCode=code)


class StripeUnavailable(MeterError):
    reason = "STRIPE_UNAVAILABLE"
    category = ErrorCategory.UNAVAILABLE
    retry_after = 1.0

    def __init__(self, detail: str) -> None:
        super().__init__(f"Stripe could not be reached: {detail}; retry with the same request_id"[:1000])


class RequestIdReused(MeterError):
    reason = "IDEMPOTENCY_KEY_REUSED"
    category = ErrorCategory.ALREADY_EXISTS

    def __init__(self, key: str, field: str) -> None:
        super().__init__(f"{key!r} was used before with a different {field}", key=key, field=field)


class StorageUnavailable(MeterError):
    reason = "STORAGE_UNAVAILABLE"
    category = ErrorCategory.UNAVAILABLE

    def __init__(self, detail: str) -> None:
        super().__init__(f"storage unavailable: {detail}; retry with the same key")


class ShuttingDown(MeterError):
    reason = "SHUTTING_DOWN"
    category = ErrorCategory.UNAVAILABLE

    def __init__(self) -> None:
        super().__init__("this server is shutting down and did not start the call; retry with the same key")


class NotReady(MeterError):
    reason = "NOT_READY"
    category = ErrorCategory.UNAVAILABLE

    def __init__(self, detail: str) -> None:
        super().__init__(f"meter is not ready: {detail}; retry with the same key")


class Unauthenticated(MeterError):
    category = ErrorCategory.UNAUTHENTICATED


class MissingCredentials(Unauthenticated):
    reason = "MISSING_CREDENTIALS"

    def __init__(self) -> None:
        super().__init__("no bearer token: send the metadata 'authorization: Bearer <token>'")


class InvalidToken(Unauthenticated):
    reason = "INVALID_TOKEN"

    def __init__(self) -> None:
        super().__init__("the bearer token is not a configured caller's")


class MultipleCredentials(Unauthenticated):
    """Two authorization headers: servers and proxies disagree on which one counts (gRPC read
    the last, HTTP/JSON the first), so a proxy that checks one would let the other through."""

    reason = "MULTIPLE_CREDENTIALS"

    def __init__(self) -> None:
        super().__init__("more than one 'authorization' header: send one, 'authorization: Bearer <token>'")


class MethodNotAllowed(MeterError):
    reason = "METHOD_NOT_ALLOWED"
    category = ErrorCategory.PERMISSION_DENIED

    def __init__(self, caller: str, method: str) -> None:
        super().__init__(f"caller {caller!r} may not call {method}", caller=caller, method=method)


class LoopbackOnly(MeterError):
    """Without callers meter is for this machine alone: a call whose Host or Origin names another
    host is a web page's request after DNS rebinding, or comes through a proxy from elsewhere."""

    reason = "LOOPBACK_ONLY"
    category = ErrorCategory.PERMISSION_DENIED

    def __init__(self, header: str, value: str) -> None:
        super().__init__(
            f"no callers are configured, so meter takes calls from this machine only, and this call's {header} "
            f"{value[:100]!r} is not a loopback name: configure callers to take calls from elsewhere",
            header=header,
            value=value[:100],
        )


class RateLimited(MeterError):
    reason = "RATE_LIMITED"
    category = ErrorCategory.RESOURCE_EXHAUSTED

    def __init__(self, limit: str, value: int, retry_after: float | None) -> None:
        advice = f"retry in {retry_after:.3f} s" if retry_after is not None else "it can never pass"
        super().__init__(f"over the {limit} limit of {value}; {advice}", limit=limit, value=value)
        self.limit = limit
        self.value = value
        self.retry_after = retry_after
