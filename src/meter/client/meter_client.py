"""The typed async client for Python callers.

    async with MeterClient("127.0.0.1:50051") as meter:
        async with meter.reserve(account_id="acme", model="gpt-4o", input_tokens=1200,
                                 max_output_tokens=800) as hold:
            reply = await call_the_model(...)
            hold.report(input_tokens=reply.input_tokens, output_tokens=reply.output_tokens)
        # committed on the way out; released instead if nothing was reported

Every meter RPC is idempotent by its key (Reserve by request_id, Commit/Release/Extend by the
reservation, CreditPurchase by payment_ref, Adjust by request_id), so a call that failed with
UNAVAILABLE is retried with the same key; nothing else is retried: a refusal is an answer.

Deadlines and retries per method come from the contract's gRPC service config
(`protos/meter/v1/service_config.json`, loaded into every channel): Reserve fails fast (a user
is waiting), while Commit, Release and ExtendReservation keep trying for `settle_budget_seconds`
(30 s by default, longer than meter takes to restart): a call that is never delivered would make
the model call free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from datetime import datetime
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from meter.client.fail_open import RESERVATION_PREFIX, FailOpen, FailOpenBudget, let_through_tokens
from meter.client.spool import CommitSpool, SpooledCall, SpoolUnwritable
from meter.domain.errors import MeterError
from meter.domain.events import EventStatus, WebhookEvent
from meter.domain.invoices import InvoiceLine
from meter.grpc.errors import code_name
from meter.v1 import meter_pb2 as pb
from meter.v1 import meter_pb2_grpc

Response = TypeVar("Response")

SERVICE_CONFIG = (resources.files("meter.v1") / "service_config.json").read_text()
_CHANNEL_OPTIONS = [
    # Reconnect within a second of meter coming back (gRPC's default backoff grows to two minutes).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
]
_SETTLE_RETRY_ON = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_SETTLE_MAX_BACKOFF_SECONDS = 1.0
_SPOOL_MAX_WAIT_SECONDS = 5.0
# Failures that leave a Reserve undecided (meter, or its database, could not be reached), as
# opposed to refusals: only these may be let through by a fail-open budget.
_UNDECIDED = frozenset({"", "STORAGE_UNAVAILABLE", "NOT_READY", "SHUTTING_DOWN"})
_SPOOLED_REQUESTS = {"Commit": pb.CommitRequest, "Release": pb.ReleaseRequest, "ChargeUsage": pb.ChargeUsageRequest}

# The package's name, which operators filter on (docs/integrate.md), not this module's.
log = logging.getLogger("meter.client")

_WRITES_RETRY_ON = frozenset({grpc.StatusCode.UNAVAILABLE})
# A read that timed out changed nothing, so it may also be retried.
_READS_RETRY_ON = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class MeterRpcError(Exception):
    """A meter call that failed; `reason` is the ErrorInfo reason ("" when the failure came from
    the transport, e.g. a server that cannot be reached)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        metadata: dict[str, str],
        message: str,
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(f"{code.name} {reason}: {message}" if reason else f"{code.name}: {message}")
        self.code = code
        self.reason = reason
        self.metadata = metadata
        self.message = message
        self.retry_delay = retry_delay  # seconds, from google.rpc.RetryInfo when the server gave one

    @classmethod
    def from_rpc_error(cls, error: grpc.aio.AioRpcError) -> MeterRpcError:
        reason, metadata, delay = "", {}, None
        status = rpc_status.from_call(error)
        for detail in status.details if status else ():
            info = error_details_pb2.ErrorInfo()
            retry = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Unpack(retry):
                delay = retry.retry_delay.ToNanoseconds() / 1e9
        return cls(error.code(), reason, metadata, error.details() or "", delay)

    @classmethod
    def from_refusal(cls, error: MeterError) -> MeterRpcError:
        """The error meter answers `error` with, for a refusal the client makes itself."""
        return cls(grpc.StatusCode[code_name(error)], error.reason, error.metadata, error.message)


class Spooled(MeterRpcError):
    """A Commit or Release that meter could not be reached for: it is in the client's spool,
    and will be sent again (the same request, so it is applied once) when meter answers."""

    def __init__(self, failure: MeterRpcError) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, "SPOOLED", {}, f"spooled until meter answers: {failure}")


class NotSpooled(MeterRpcError):
    """A Commit, Release or ChargeUsage that could be neither written to the spool nor delivered:
    meter has not got it, and nothing will send it again (the caller may, with the same request)."""

    def __init__(self, failure: MeterRpcError, unwritable: SpoolUnwritable) -> None:
        message = f"not spooled ({unwritable}) and not delivered ({failure})"
        super().__init__(grpc.StatusCode.UNAVAILABLE, "NOT_SPOOLED", {}, message)


class MeterClient:
    """A connection to meter. Use as an async context manager, or call close()."""

    def __init__(
        self,
        target: str | None = None,
        *,
        channel: grpc.aio.Channel | None = None,
        attempts: int = 3,
        backoff_seconds: float = 0.05,
        timeout_seconds: float | None = None,
        wait_for_ready: bool = False,
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        rate_limit_wait_seconds: float = 0.0,
        settle_budget_seconds: float = 30.0,
        spool: str | Path | None = None,
        spool_max_bytes: int | None = None,
        fail_open: FailOpen | None = None,
    ) -> None:
        """`wait_for_ready`: while meter is unreachable, calls wait (up to their timeout) for it
        to come back instead of failing at once; for callers that would rather be late than fail.
        `token`: the caller's bearer token, sent with every call. `credentials`: TLS (e.g.
        `grpc.ssl_channel_credentials(ca, key, chain)`); plaintext without.
        `rate_limit_wait_seconds`: a call refused RATE_LIMITED is tried again after the delay the
        server advised (RetryInfo), the same request with the same key, as long as the waits add
        up to no more than this; 0 (the default): the refusal is raised at once.
        `timeout_seconds`: each call's deadline (None: the service config's for its method: 3 s
        for Reserve, 5 s for reads, 10 s for billing writes). `settle_budget_seconds`: how long
        Commit, Release and ExtendReservation keep trying (waiting for meter to come back, and
        again after UNAVAILABLE or a deadline) before they raise.
        `spool`: a local file (sqlite3) that keeps every Commit and Release until meter has
        answered it, across restarts of this process; one meter could not be reached for within
        the budget raises `Spooled` and is sent again, oldest first, in the background (and by
        `drain_spool`) once meter answers. `spool_max_bytes`: the most the spool file may hold
        (None: what the disk holds). A spool that cannot be written (disk full, the bound
        reached, locked, corrupt, removed) does not stop a call: it is sent without it, and
        raises `NotSpooled` only if meter cannot be reached either.
        `fail_open`: None (the default) fails closed: a Reserve meter cannot answer raises. With a
        budget, such a Reserve is let through while the account's admissions this minute stay
        within it and meter would take it; its Commit is charged through ChargeUsage once meter
        answers (spooled)."""
        if (target is None) == (channel is None):
            raise ValueError("give either a target address or a channel")
        self._owns_channel = channel is None
        if channel is not None:
            self._channel = channel
        elif credentials is not None:
            self._channel = grpc.aio.secure_channel(target or "", credentials, options=_CHANNEL_OPTIONS)
        else:
            self._channel = grpc.aio.insecure_channel(target or "", options=_CHANNEL_OPTIONS)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._rate_limit_wait_seconds = rate_limit_wait_seconds
        self._wait_for_ready = wait_for_ready
        self._stub = meter_pb2_grpc.MeterServiceStub(self._channel)
        self._attempts = attempts
        self._backoff_seconds = backoff_seconds
        self._timeout_seconds = timeout_seconds
        self._settle_budget_seconds = settle_budget_seconds
        self._spool = CommitSpool(spool, max_bytes=spool_max_bytes) if spool is not None else None
        self._in_flight: set[int] = set()  # spooled calls being sent by their first attempt
        self._draining: asyncio.Task[None] | None = None
        self._fail_open = FailOpenBudget(fail_open) if fail_open is not None else None
        self._let_through: dict[str, pb.ReserveRequest] = {}  # fail-open reservation id: its Reserve
        self._catalog_models: frozenset[str] | None = None  # from the last GetCatalog answer

    async def __aenter__(self) -> MeterClient:
        self._ensure_draining()  # what a previous run of this process left undelivered
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connected(self, within: float) -> bool:
        """Whether the channel reaches meter within `within` seconds (nothing is called): a tool
        that will wait for meter anyway can say so first."""
        try:
            await asyncio.wait_for(self._channel.channel_ready(), within)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        if self._draining is not None:
            self._draining.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._draining
        if self._spool is not None:
            self._spool.close()
        if self._owns_channel:
            await self._channel.close()

    @property
    def spool_depth(self) -> int:
        """Commits and Releases in the spool: sent and not answered yet, or waiting for meter."""
        return self._spool.depth if self._spool is not None else 0

    async def _call(
        self,
        method: Callable[..., Awaitable[Response]],
        request: Any,
        retry_on: frozenset[grpc.StatusCode] = _WRITES_RETRY_ON,
    ) -> Response:
        waited = 0.0
        while True:
            try:
                return await self._attempts_of(method, request, retry_on)
            except MeterRpcError as refused:
                delay = refused.retry_delay
                if refused.reason != "RATE_LIMITED" or delay is None:
                    raise
                if waited + delay > self._rate_limit_wait_seconds:
                    raise
                await asyncio.sleep(delay)
                waited += delay

    async def _attempts_of(
        self,
        method: Callable[..., Awaitable[Response]],
        request: Any,
        retry_on: frozenset[grpc.StatusCode],
    ) -> Response:
        """One call, retried (same request, same key) while the server cannot be reached."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, MeterRpcError) and exc.code in retry_on),
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=self._backoff_seconds, max=2.0),
            reraise=True,
        ):
            with attempt:
                try:
                    return await method(
                        request,
                        timeout=self._timeout_seconds,
                        wait_for_ready=self._wait_for_ready,
                        metadata=self._metadata,
                    )
                except grpc.aio.AioRpcError as error:
                    raise MeterRpcError.from_rpc_error(error) from error
        raise AssertionError("unreachable: tenacity reraises the last failure")

    def reserve(
        self,
        *,
        account_id: str,
        model: str,
        input_tokens: int,
        max_output_tokens: int,
        request_id: str | None = None,
        ttl_seconds: int = 0,
        labels: dict[str, str] | None = None,
    ) -> PendingReservation:
        """`await` it for the ReserveResponse, or `async with` it for a Hold that commits the
        reported usage (or releases) on the way out. The request_id is fixed here, before the
        first attempt, so every retry is the same Reserve."""
        request = pb.ReserveRequest(
            account_id=account_id,
            request_id=request_id or uuid.uuid4().hex,
            model=model,
            input_tokens=input_tokens,
            max_output_tokens=max_output_tokens,
            ttl_seconds=ttl_seconds,
            labels=labels or {},
        )
        return PendingReservation(self, request)

    async def _reserve(self, request: pb.ReserveRequest) -> pb.ReserveResponse:
        try:
            return await self._call(self._stub.Reserve, request)
        except MeterRpcError as failure:
            unreachable = failure.code in _SETTLE_RETRY_ON and failure.reason in _UNDECIDED
            if not unreachable or self._fail_open is None:
                raise
            try:
                worst = let_through_tokens(
                    account_id=request.account_id,
                    request_id=request.request_id,
                    model=request.model,
                    input_tokens=request.input_tokens,
                    max_output_tokens=request.max_output_tokens,
                    ttl_seconds=request.ttl_seconds,
                    labels=request.labels,
                    models=self._catalog_models,
                )
            except MeterError as invalid:  # what meter would have answered
                raise MeterRpcError.from_refusal(invalid) from failure
            if not self._fail_open.admit(request.account_id, worst):
                raise
        reservation_id = f"{RESERVATION_PREFIX}{request.account_id}/{request.request_id}"
        self._let_through[reservation_id] = request
        log.warning("meter unreachable: %s let through (fail open)", reservation_id)
        return pb.ReserveResponse(reservation_id=reservation_id, held_tokens=worst, status=pb.RESERVATION_STATUS_OPEN)

    async def commit(
        self,
        *,
        reservation_id: str,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> pb.CommitResponse:
        """Charge a hold for what its call used; each token in one class (see CommitRequest)."""
        classes = {
            "cached_input_tokens": cached_input_tokens,
            "cache_write_tokens": cache_write_tokens,
            "reasoning_tokens": reasoning_tokens,
        }
        let_through = self._let_through.pop(reservation_id, None)
        if let_through is not None:  # no hold: the call is charged as it was
            charged = await self.charge_usage(
                account_id=let_through.account_id,
                request_id=let_through.request_id,
                model=let_through.model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                labels=dict(let_through.labels),
                **classes,
            )
            return pb.CommitResponse(
                charged_tokens=charged.charged_tokens,
                cost_micros=charged.cost_micros,
                unbilled_tokens=charged.unbilled_tokens,
                balance=charged.balance,
            )
        request = pb.CommitRequest(
            reservation_id=reservation_id, input_tokens=input_tokens, output_tokens=output_tokens, **classes
        )
        return await self._spooled("Commit", request)

    async def release(self, *, reservation_id: str) -> pb.ReleaseResponse:
        if self._let_through.pop(reservation_id, None) is not None:
            return pb.ReleaseResponse()  # let through, and unused: nothing to charge
        return await self._spooled("Release", pb.ReleaseRequest(reservation_id=reservation_id))

    async def charge_usage(
        self,
        *,
        account_id: str,
        request_id: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        labels: dict[str, str] | None = None,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> pb.ChargeUsageResponse:
        """A call that had no hold, charged once by its request_id (spooled like a Commit)."""
        request = pb.ChargeUsageRequest(
            account_id=account_id,
            request_id=request_id,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            labels=labels or {},
            cached_input_tokens=cached_input_tokens,
            cache_write_tokens=cache_write_tokens,
            reasoning_tokens=reasoning_tokens,
        )
        return await self._spooled("ChargeUsage", request)

    async def _spooled(self, method: str, request: Any) -> Any:
        """Commit, Release or ChargeUsage, written to the spool (when there is one) before it is
        sent and deleted once answered; left there, and `Spooled` raised, when meter could not be
        reached. A spool that cannot be written does not stop the call (see `_unspooled`)."""
        send = getattr(self._stub, method)
        if self._spool is None:
            return await self._settle(send, request)
        try:
            call_id = self._spool.add(method, request.SerializeToString())
        except SpoolUnwritable as unwritable:
            return await self._unspooled(method, request, unwritable)
        self._in_flight.add(call_id)
        try:
            answer = await self._settle(send, request)
        except MeterRpcError as failure:
            self._in_flight.discard(call_id)
            if failure.code not in _SETTLE_RETRY_ON:
                self._answered(call_id)  # a refusal is an answer: nothing to send again
                raise
            self._spool.failed(call_id, str(failure))
            self._ensure_draining()
            raise Spooled(failure) from failure
        finally:
            self._in_flight.discard(call_id)  # also when cancelled: the row stays for a later drain
        self._answered(call_id)
        return answer

    def _answered(self, call_id: int) -> None:
        assert self._spool is not None
        if not self._spool.answered(call_id):
            self._ensure_draining()  # the row stayed: sent again (a replay), until it can be deleted

    async def _unspooled(self, method: str, request: Any, unwritable: SpoolUnwritable) -> Any:
        """A call the spool could not take, sent all the same: it fails only if meter cannot be
        reached either, and then says both (`NotSpooled`)."""
        log.error("%s %s sent without the spool: %s", method, _key(request), unwritable)
        try:
            return await self._settle(getattr(self._stub, method), request)
        except MeterRpcError as failure:
            if failure.code not in _SETTLE_RETRY_ON:
                raise
            raise NotSpooled(failure, unwritable) from failure

    async def drain_spool(self) -> int:
        """Send the spooled calls again, oldest first, until the spool is empty (the number
        answered) or meter cannot be reached (they stay: try again later). A row that cannot be
        read as a call is set aside, and the next one sent."""
        if self._spool is None:
            return 0
        answered, after = 0, 0
        while batch := self._spool.oldest(after_id=after):
            for call in batch:
                after = call.id
                request = None if call.id in self._in_flight else self._spooled_request(call)
                if request is None:
                    continue
                try:
                    await self._settle(getattr(self._stub, call.method), request)
                except MeterRpcError as failure:
                    if failure.code in _SETTLE_RETRY_ON:
                        self._spool.failed(call.id, str(failure))
                        return answered
                    log.warning("spooled %s %s refused: %s", call.method, _key(request), failure)
                if not self._spool.answered(call.id):
                    return answered  # the spool cannot be written now: later, not in a loop
                answered += 1
        return answered

    def _spooled_request(self, call: SpooledCall) -> Any | None:
        """The request a spooled row holds; None when it cannot be read as one (set aside)."""
        kind = _SPOOLED_REQUESTS.get(call.method)
        if kind is None:
            reason = f"unknown method {call.method!r} (written by another client version?)"
        else:
            try:
                return kind.FromString(call.request)
            except (DecodeError, TypeError) as error:
                reason = f"the request does not parse as {kind.DESCRIPTOR.name}: {error}"
        assert self._spool is not None
        self._spool.set_aside(call, reason)
        return None

    def _ensure_draining(self) -> None:
        spool = self._spool
        waiting = spool is not None and spool.depth > len(self._in_flight)
        if waiting and (self._draining is None or self._draining.done()):
            self._draining = asyncio.create_task(self._drain_until_empty(), name="meter-spool-drain")

    async def _drain_until_empty(self) -> None:
        wait = self._backoff_seconds
        while self._spool is not None and self._spool.depth > len(self._in_flight):
            if await self.drain_spool():
                wait = self._backoff_seconds
            else:
                await asyncio.sleep(wait)
                wait = min(wait * 2, _SPOOL_MAX_WAIT_SECONDS)

    async def extend_reservation(self, *, reservation_id: str, ttl_seconds: int = 0) -> pb.ExtendReservationResponse:
        if reservation_id in self._let_through:
            return pb.ExtendReservationResponse()  # no hold to keep alive
        request = pb.ExtendReservationRequest(reservation_id=reservation_id, ttl_seconds=ttl_seconds)
        return await self._settle(self._stub.ExtendReservation, request)

    async def _settle(self, method: Callable[..., Awaitable[Response]], request: Any) -> Response:
        """A call that settles a hold: sent again (the same request: the reservation is its key)
        until it is answered or the budget is spent, waiting for meter while it cannot be reached."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settle_budget_seconds
        backoff = self._backoff_seconds
        while True:
            remaining = deadline - loop.time()
            try:
                return await method(
                    request,
                    timeout=min(remaining, self._timeout_seconds or remaining),
                    wait_for_ready=True,
                    metadata=self._metadata,
                )
            except grpc.aio.AioRpcError as error:
                failure = MeterRpcError.from_rpc_error(error)
                if failure.code not in _SETTLE_RETRY_ON or loop.time() + backoff >= deadline:
                    raise failure from error
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _SETTLE_MAX_BACKOFF_SECONDS)

    async def get_balance(self, *, account_id: str) -> pb.Balance:
        return (await self.get_balance_details(account_id=account_id)).balance

    async def get_balance_details(self, *, account_id: str) -> pb.GetBalanceResponse:
        """The balance with its limits, headroom and the grants it is made of (in the order drawn)."""
        request = pb.GetBalanceRequest(account_id=account_id)
        return await self._call(self._stub.GetBalance, request, _READS_RETRY_ON)

    async def grant(
        self,
        *,
        account_id: str,
        request_id: str,
        tokens: int,
        reason: str,
        priority: int = 0,
        expires_at: datetime | None = None,
        source: int = pb.GRANT_SOURCE_PROMOTION,
    ) -> pb.GrantResponse:
        """Grant an account tokens of their own (see docs/integrate.md, Grants)."""
        request = pb.GrantRequest(
            account_id=account_id, request_id=request_id, tokens=tokens, reason=reason, priority=priority, source=source
        )
        if expires_at is not None:
            request.expires_at.FromDatetime(expires_at)
        return await self._call(self._stub.Grant, request)

    async def revoke_grant(self, *, account_id: str, grant_id: int) -> pb.RevokeGrantResponse:
        request = pb.RevokeGrantRequest(account_id=account_id, grant_id=grant_id)
        return await self._call(self._stub.RevokeGrant, request)

    async def get_catalog(self) -> pb.GetCatalogResponse:
        """The catalog in force; the client keeps its models, so that failing open refuses a
        model meter would refuse."""
        catalog = await self._call(self._stub.GetCatalog, pb.GetCatalogRequest(), _READS_RETRY_ON)
        self._catalog_models = frozenset(model.id for model in catalog.models)
        return catalog

    async def list_ledger_entries(self, request: pb.ListLedgerEntriesRequest) -> pb.ListLedgerEntriesResponse:
        return await self._call(self._stub.ListLedgerEntries, request, _READS_RETRY_ON)

    async def list_events(
        self, *, account_id: str, after_sequence: int = 0, page_size: int = 0
    ) -> pb.ListEventsResponse:
        request = pb.ListEventsRequest(account_id=account_id, after_sequence=after_sequence, page_size=page_size)
        return await self._call(self._stub.ListEvents, request, _READS_RETRY_ON)

    async def watch_events(
        self, *, account_id: str = "", after_sequence: int = 0, after_position: str = "", reconnect_seconds: float = 1.0
    ) -> AsyncIterator[pb.BalanceEvent]:
        """The account's events after `after_sequence` (no account: every account's, after
        `after_position`), then each new one as it commits, for as long as the caller iterates. A
        stream that ends (a deploy stops the server) or breaks (meter unreachable) is opened again
        from the last event yielded: no gap, no duplicate. Refusals (unknown account, not
        allowed) are raised."""
        while True:
            call = self._stub.WatchEvents(
                pb.WatchEventsRequest(
                    account_id=account_id, after_sequence=after_sequence, after_position=after_position
                ),
                wait_for_ready=True,
                metadata=self._metadata,
            )
            try:
                async for answer in call:
                    if account_id:
                        after_sequence = answer.event.sequence
                    else:
                        after_position = answer.event.position
                    yield answer.event
            except grpc.aio.AioRpcError as error:
                if error.code() not in _READS_RETRY_ON:
                    raise MeterRpcError.from_rpc_error(error) from error
            finally:
                call.cancel()
            await asyncio.sleep(reconnect_seconds)

    async def get_usage(self, request: pb.GetUsageRequest) -> pb.GetUsageResponse:
        return await self._call(self._stub.GetUsage, request, _READS_RETRY_ON)

    async def set_budget(
        self,
        *,
        account_id: str,
        label_key: str,
        label_value: str,
        unit: int,
        cap: int,
        window: int = pb.BUDGET_WINDOW_UNSPECIFIED,
    ) -> pb.SetBudgetResponse:
        """`unit`: pb.BUDGET_UNIT_TOKENS or pb.BUDGET_UNIT_COST_MICROS; `window`: a pb.BudgetWindow,
        unspecified keeping the budget's (the account's month for a new one). See
        docs/integrate.md, Budgets."""
        request = pb.SetBudgetRequest(
            account_id=account_id, label_key=label_key, label_value=label_value, unit=unit, cap=cap, window=window
        )
        return await self._call(self._stub.SetBudget, request)

    async def delete_budget(self, *, account_id: str, label_key: str, label_value: str) -> pb.DeleteBudgetResponse:
        request = pb.DeleteBudgetRequest(account_id=account_id, label_key=label_key, label_value=label_value)
        return await self._call(self._stub.DeleteBudget, request)

    async def list_budgets(self, *, account_id: str) -> pb.ListBudgetsResponse:
        request = pb.ListBudgetsRequest(account_id=account_id)
        return await self._call(self._stub.ListBudgets, request, _READS_RETRY_ON)

    async def create_checkout_session(
        self, *, account_id: str, pack_id: str, success_url: str, cancel_url: str, request_id: str
    ) -> pb.CreateCheckoutSessionResponse:
        """A Stripe Checkout Session selling the pack; the same request_id gives the same session."""
        request = pb.CreateCheckoutSessionRequest(
            account_id=account_id,
            pack_id=pack_id,
            success_url=success_url,
            cancel_url=cancel_url,
            request_id=request_id,
        )
        return await self._call(self._stub.CreateCheckoutSession, request)

    async def list_refused_purchases(
        self, *, account_id: str = "", page_size: int = 0, page_token: str = "", unsettled_only: bool = False
    ) -> pb.ListRefusedPurchasesResponse:
        request = pb.ListRefusedPurchasesRequest(
            account_id=account_id, page_size=page_size, page_token=page_token, unsettled_only=unsettled_only
        )
        return await self._call(self._stub.ListRefusedPurchases, request, _READS_RETRY_ON)

    async def refund_refused_purchase(self, *, account_id: str, payment_ref: str) -> pb.RefundRefusedPurchaseResponse:
        request = pb.RefundRefusedPurchaseRequest(account_id=account_id, payment_ref=payment_ref)
        return await self._call(self._stub.RefundRefusedPurchase, request)

    async def resolve_refused_purchase(
        self, *, account_id: str, payment_ref: str, note: str
    ) -> pb.ResolveRefusedPurchaseResponse:
        request = pb.ResolveRefusedPurchaseRequest(account_id=account_id, payment_ref=payment_ref, note=note)
        return await self._call(self._stub.ResolveRefusedPurchase, request)

    async def list_open_reservations(self, *, account_id: str, limit: int = 0) -> pb.ListOpenReservationsResponse:
        request = pb.ListOpenReservationsRequest(account_id=account_id, limit=limit)
        return await self._call(self._stub.ListOpenReservations, request, _READS_RETRY_ON)

    async def credit_purchase(
        self,
        *,
        account_id: str,
        pack_id: str,
        tokens: int,
        amount_minor: int,
        currency: str,
        payment_ref: str,
        payment_intent: str = "",
        event_id: str = "",
        source_event: WebhookEvent | None = None,
    ) -> pb.CreditPurchaseResponse:
        request = pb.CreditPurchaseRequest(
            account_id=account_id,
            pack_id=pack_id,
            tokens=tokens,
            amount_minor=amount_minor,
            currency=currency,
            payment_ref=payment_ref,
            payment_intent=payment_intent,
            event_id=event_id,
            source_event=_event(source_event),
        )
        return await self._call(self._stub.CreditPurchase, request)

    async def set_plan(
        self,
        *,
        account_id: str,
        plan_id: str,
        period_start: datetime | None = None,
        period_end: datetime | None = None,
        subscription_ref: str = "",
        event_time: datetime | None = None,
        monthly_allowance_tokens: int = 0,
        expire_allowance_now: bool = False,
        source_event: WebhookEvent | None = None,
        stripe_prices: Sequence[str] = (),
        subscription_cancelled: bool = False,
        subscription_status: str = "",
    ) -> pb.SetPlanResponse:
        request = pb.SetPlanRequest(
            account_id=account_id,
            plan_id=plan_id,
            subscription_ref=subscription_ref,
            monthly_allowance_tokens=monthly_allowance_tokens,
            expire_allowance_now=expire_allowance_now,
            source_event=_event(source_event),
            stripe_prices=stripe_prices,
            subscription_cancelled=subscription_cancelled,
            subscription_status=subscription_status,
        )
        _set_times(request, period_start=period_start, period_end=period_end, event_time=event_time)
        return await self._call(self._stub.SetPlan, request)

    async def reverse_credit(
        self,
        *,
        kind: str,
        account_id: str = "",
        payment_ref: str = "",
        payment_intent: str = "",
        amount_minor: int = 0,
        reversal_ref: str = "",
        source_event: WebhookEvent | None = None,
        invoice_ref: str = "",
    ) -> pb.ReverseCreditResponse:
        """`kind` is "refund", "dispute", "dispute_won" or "dispute_lost"."""
        request = pb.ReverseCreditRequest(
            account_id=account_id,
            payment_ref=payment_ref,
            payment_intent=payment_intent,
            invoice_ref=invoice_ref,
            kind=pb.ReversalKind.Value(f"REVERSAL_KIND_{kind.upper()}"),
            amount_minor=amount_minor,
            reversal_ref=reversal_ref,
            source_event=_event(source_event),
        )
        return await self._call(self._stub.ReverseCredit, request)

    async def grant_period_allowance(
        self,
        *,
        subscription_ref: str,
        invoice_ref: str,
        period_start: datetime | None = None,
        period_end: datetime | None = None,
        account_id: str = "",
        source_event: WebhookEvent | None = None,
        amount_minor: int = 0,
        currency: str = "",
        lines: Sequence[InvoiceLine] = (),
        payment_intent: str = "",
    ) -> pb.GrantPeriodAllowanceResponse:
        """A paid subscription invoice: its `lines`, or without them the paid period."""
        request = pb.GrantPeriodAllowanceRequest(
            subscription_ref=subscription_ref,
            invoice_ref=invoice_ref,
            account_id=account_id,
            source_event=_event(source_event),
            amount_minor=amount_minor,
            currency=currency,
            payment_intent=payment_intent,
        )
        _set_times(request, period_start=period_start, period_end=period_end)
        for line in lines:
            message = request.lines.add(
                proration=line.proration, stripe_price=line.stripe_price, amount_minor=line.amount_minor
            )
            if line.period is not None:
                _set_times(message, period_start=line.period.start, period_end=line.period.end)
        return await self._call(self._stub.GrantPeriodAllowance, request)

    async def link_invoice_payment(
        self, *, invoice_ref: str, payment_intent: str, source_event: WebhookEvent | None = None
    ) -> pb.LinkInvoicePaymentResponse:
        request = pb.LinkInvoicePaymentRequest(
            invoice_ref=invoice_ref, payment_intent=payment_intent, source_event=_event(source_event)
        )
        return await self._call(self._stub.LinkInvoicePayment, request)

    async def record_payment_failure(
        self,
        *,
        subscription_ref: str,
        invoice_ref: str,
        account_id: str = "",
        amount_minor: int = 0,
        currency: str = "",
        attempt_count: int = 0,
        next_attempt: datetime | None = None,
        billing_reason: str = "",
        source_event: WebhookEvent | None = None,
    ) -> pb.RecordPaymentFailureResponse:
        request = pb.RecordPaymentFailureRequest(
            subscription_ref=subscription_ref,
            invoice_ref=invoice_ref,
            account_id=account_id,
            amount_minor=amount_minor,
            currency=currency,
            attempt_count=attempt_count,
            billing_reason=billing_reason,
            source_event=_event(source_event),
        )
        if next_attempt is not None:
            request.next_attempt_time.FromDatetime(next_attempt)
        return await self._call(self._stub.RecordPaymentFailure, request)

    async def record_webhook_event(
        self, *, event: WebhookEvent, status: EventStatus, reason: str, account_id: str = ""
    ) -> pb.RecordWebhookEventResponse:
        """`status` is EventStatus.IGNORED or EventStatus.REJECTED."""
        request = pb.RecordWebhookEventRequest(
            event=_event(event),
            account_id=account_id,
            status=pb.EventStatus.Value(f"EVENT_STATUS_{status.name}"),
            reason=reason,
        )
        return await self._call(self._stub.RecordWebhookEvent, request)

    async def get_webhook_event(self, *, event_id: str) -> pb.GetWebhookEventResponse:
        request = pb.GetWebhookEventRequest(event_id=event_id)
        return await self._call(self._stub.GetWebhookEvent, request, _READS_RETRY_ON)

    async def adjust(
        self, *, account_id: str, pool: int, delta: int, reason: str, request_id: str | None = None
    ) -> pb.AdjustResponse:
        """`pool` is pb.POOL_ALLOWANCE or pb.POOL_PURCHASED."""
        request = pb.AdjustRequest(
            account_id=account_id, pool=pool, delta=delta, reason=reason, request_id=request_id or uuid.uuid4().hex
        )
        return await self._call(self._stub.Adjust, request)


def _key(request: Any) -> str:
    """What a settling request is known by in logs: its reservation, or its request_id."""
    return str(getattr(request, "reservation_id", "") or getattr(request, "request_id", ""))


def event_status(value: int) -> EventStatus | None:
    """The EventStatus of a response's event_status field (None when unset)."""
    name = pb.EventStatus.Name(value).removeprefix("EVENT_STATUS_")
    return None if name == "UNSPECIFIED" else EventStatus[name]


def _event(event: WebhookEvent | None) -> pb.WebhookEvent | None:
    if event is None:
        return None
    message = pb.WebhookEvent(event_id=event.event_id, type=event.type, payload=event.payload)
    message.received_time.FromDatetime(event.received_at)
    return message


def _set_times(request: Any, **times: datetime | None) -> None:
    for field, value in times.items():
        if value is not None:
            getattr(request, field).FromDatetime(value)


class Hold:
    """An admitted reservation inside `async with client.reserve(...)`."""

    def __init__(self, client: MeterClient, reservation: pb.ReserveResponse) -> None:
        self._client = client
        self.reservation = reservation
        self.usage: dict[str, int] | None = None  # Commit's token classes
        self.commit_response: pb.CommitResponse | None = None
        self.spooled = False  # settled into the client's spool: meter will get it when it answers

    @property
    def reservation_id(self) -> str:
        return self.reservation.reservation_id

    @property
    def held_tokens(self) -> int:
        return self.reservation.held_tokens

    def report(
        self,
        *,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> None:
        """Record what the model call used (each token in one class: see CommitRequest); committed
        when the block ends, even if it raises afterwards (the tokens were used all the same). For
        a stream, report the running count after each chunk: a stream cut short is charged what it
        produced."""
        self.usage = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cached_input_tokens": cached_input_tokens,
            "cache_write_tokens": cache_write_tokens,
            "reasoning_tokens": reasoning_tokens,
        }

    @contextlib.asynccontextmanager
    async def kept_alive(self, *, ttl_seconds: int, every_seconds: float) -> AsyncIterator[Hold]:
        """Extend the hold every `every_seconds` to expire `ttl_seconds` later, for as long as the
        block runs (a streamed completion that may outlast the hold's TTL). A proxy that dies
        mid-stream stops extending: the hold then expires, and what an expired hold does is the
        plan's setting."""

        async def extend() -> None:
            while True:
                await asyncio.sleep(every_seconds)
                try:
                    await self._client.extend_reservation(reservation_id=self.reservation_id, ttl_seconds=ttl_seconds)
                except MeterRpcError as refused:  # expired or settled meanwhile: the Commit will say
                    log.warning("extending %s stopped: %s", self.reservation_id, refused)
                    return

        extending = asyncio.create_task(extend(), name=f"extend {self.reservation_id}")
        try:
            yield self
        finally:
            extending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await extending

    async def _settle(self) -> None:
        """A spooled Commit or Release is not an error here: it is on disk, and will be sent."""
        try:
            if self.usage is None:
                await self._client.release(reservation_id=self.reservation_id)
                return
            self.commit_response = await self._client.commit(reservation_id=self.reservation_id, **self.usage)
        except Spooled:
            self.spooled = True


class PendingReservation:
    """What `client.reserve(...)` returns: awaitable, or an async context manager."""

    def __init__(self, client: MeterClient, request: pb.ReserveRequest) -> None:
        self._client = client
        self.request = request
        self._hold: Hold | None = None

    def __await__(self) -> Generator[Any, None, pb.ReserveResponse]:
        return self._client._reserve(self.request).__await__()

    async def __aenter__(self) -> Hold:
        self._hold = Hold(self._client, await self._client._reserve(self.request))
        return self._hold

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        assert self._hold is not None
        await self._hold._settle()
