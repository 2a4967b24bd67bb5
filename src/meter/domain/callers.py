"""Who may call meter, and who is acting now.

A caller is a configured name with a bearer token and the methods it may call. meter keeps only
the token's SHA-256: tokens are long random strings (`meter callers new-token`), so a plain hash
cannot be reversed by guessing, and hashing one costs a microsecond on every RPC (a password hash
such as bcrypt would cost milliseconds, as much as the Reserve it guards).

The name of the caller acting in the current task is kept in a context variable, so that every
ledger entry a call writes records it without each use case passing it down; work meter does on
its own (the sweeper) runs under `SYSTEM`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from meter.domain.errors import InvalidToken, MethodNotAllowed, MissingCredentials

SYSTEM = "meter"  # expiries, period rolls and anything else meter does by itself
ANONYMOUS = "anonymous"  # every call when no callers are configured (loopback only)
UNRECORDED = "unrecorded"  # ledger entries written before callers were recorded

# What each role's job needs. `operator` may call everything (None).
ROLES: Mapping[str, frozenset[str] | None] = {
    "proxy": frozenset({"Reserve", "Commit", "Release", "ExtendReservation", "ChargeUsage", "GetBalance"}),
    # The Stripe webhook adapter: credits, refunds and plan changes, plus what it needs to record
    # and replay the events it was sent.
    "billing": frozenset(
        {
            "CreditPurchase",
            "ReverseCredit",
            "SetPlan",
            "GrantPeriodAllowance",
            "LinkInvoicePayment",
            "RecordPaymentFailure",
            "RecordWebhookEvent",
            "GetWebhookEvent",
        }
    ),
    # The product's backend selling packs: Checkout Sessions, and what a pricing page shows.
    "storefront": frozenset({"CreateCheckoutSession", "GetCatalog", "GetBalance"}),
    "operator": None,
}

TOKEN_PREFIX = "meter_"


@dataclass(frozen=True)
class Caller:
    name: str
    methods: frozenset[str] | None  # None: every method
    # Requests per second it may send to each method (ANY_METHOD: to every method without its own).
    rates: Mapping[str, int] = field(default_factory=dict)

    def may_call(self, method: str) -> bool:
        return self.methods is None or method in self.methods

    def rate(self, method: str) -> int | None:
        return self.rates.get(method, self.rates.get(ANY_METHOD))


ANY_METHOD = "*"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A bearer token with 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class Callers:
    """The configured callers, found by the hash of the token they present."""

    def __init__(self, entries: Iterable[tuple[str, Caller]]) -> None:
        self._by_hash = dict(entries)

    def __len__(self) -> int:
        return len(self._by_hash)

    def __iter__(self) -> Iterator[Caller]:
        return iter(self._by_hash.values())

    def authenticate(self, token: str | None) -> Caller:
        """The caller whose token this is; MissingCredentials or InvalidToken otherwise."""
        if not token:
            raise MissingCredentials()
        # A lookup by the hash leaks no timing an attacker can use: they cannot choose the bytes
        # of the digest they would need to probe a stored one.
        caller = self._by_hash.get(hash_token(token))
        if caller is None:
            raise InvalidToken()
        return caller

    def admit(self, token: str | None, method: str) -> Caller:
        caller = self.authenticate(token)
        if not caller.may_call(method):
            raise MethodNotAllowed(caller.name, method)
        return caller


_ACTING: ContextVar[str] = ContextVar("meter_caller", default=SYSTEM)


def acting_caller() -> str:
    """The name to record on what the current task writes."""
    return _ACTING.get()


@contextmanager
def acting_as(name: str) -> Iterator[None]:
    reset = _ACTING.set(name)
    try:
        yield
    finally:
        _ACTING.reset(reset)


def act_as(name: str) -> None:
    """`name` for the rest of the current task: a stream's (its task is its own; a `with
    acting_as` across its messages would be undone in whichever task closes the stream, and
    contextvars refuse that)."""
    _ACTING.set(name)
