import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.type import date_pb2 as _date_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExpiredHolds(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPIRED_HOLDS_UNSPECIFIED: _ClassVar[ExpiredHolds]
    EXPIRED_HOLDS_PLAN: _ClassVar[ExpiredHolds]
    EXPIRED_HOLDS_RELEASE: _ClassVar[ExpiredHolds]
    EXPIRED_HOLDS_CHARGE: _ClassVar[ExpiredHolds]

class Pool(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POOL_UNSPECIFIED: _ClassVar[Pool]
    POOL_ALLOWANCE: _ClassVar[Pool]
    POOL_PURCHASED: _ClassVar[Pool]
    POOL_DEBT: _ClassVar[Pool]
    POOL_GRANT: _ClassVar[Pool]

class GrantSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GRANT_SOURCE_UNSPECIFIED: _ClassVar[GrantSource]
    GRANT_SOURCE_ALLOWANCE: _ClassVar[GrantSource]
    GRANT_SOURCE_PURCHASE: _ClassVar[GrantSource]
    GRANT_SOURCE_PROMOTION: _ClassVar[GrantSource]
    GRANT_SOURCE_ROLLOVER: _ClassVar[GrantSource]
    GRANT_SOURCE_ADJUSTMENT: _ClassVar[GrantSource]

class WarningLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WARNING_LEVEL_UNSPECIFIED: _ClassVar[WarningLevel]
    WARNING_LEVEL_NONE: _ClassVar[WarningLevel]
    WARNING_LEVEL_PERCENT_80: _ClassVar[WarningLevel]
    WARNING_LEVEL_PERCENT_90: _ClassVar[WarningLevel]
    WARNING_LEVEL_PERCENT_95: _ClassVar[WarningLevel]
    WARNING_LEVEL_EXHAUSTED: _ClassVar[WarningLevel]

class ReversalKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REVERSAL_KIND_UNSPECIFIED: _ClassVar[ReversalKind]
    REVERSAL_KIND_REFUND: _ClassVar[ReversalKind]
    REVERSAL_KIND_DISPUTE: _ClassVar[ReversalKind]
    REVERSAL_KIND_DISPUTE_WON: _ClassVar[ReversalKind]
    REVERSAL_KIND_DISPUTE_LOST: _ClassVar[ReversalKind]

class EventStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_STATUS_UNSPECIFIED: _ClassVar[EventStatus]
    EVENT_STATUS_APPLIED: _ClassVar[EventStatus]
    EVENT_STATUS_IGNORED: _ClassVar[EventStatus]
    EVENT_STATUS_REJECTED: _ClassVar[EventStatus]
    EVENT_STATUS_DUPLICATE: _ClassVar[EventStatus]
    EVENT_STATUS_PENDING: _ClassVar[EventStatus]

class ReservationStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESERVATION_STATUS_UNSPECIFIED: _ClassVar[ReservationStatus]
    RESERVATION_STATUS_OPEN: _ClassVar[ReservationStatus]
    RESERVATION_STATUS_COMMITTED: _ClassVar[ReservationStatus]
    RESERVATION_STATUS_RELEASED: _ClassVar[ReservationStatus]
    RESERVATION_STATUS_EXPIRED: _ClassVar[ReservationStatus]

class CancelledAllowance(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CANCELLED_ALLOWANCE_UNSPECIFIED: _ClassVar[CancelledAllowance]
    CANCELLED_ALLOWANCE_ENDS_NOW: _ClassVar[CancelledAllowance]
    CANCELLED_ALLOWANCE_ENDS_WITH_PERIOD: _ClassVar[CancelledAllowance]
    CANCELLED_ALLOWANCE_CONVERTS: _ClassVar[CancelledAllowance]

class CheckoutStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECKOUT_STATUS_UNSPECIFIED: _ClassVar[CheckoutStatus]
    CHECKOUT_STATUS_OPEN: _ClassVar[CheckoutStatus]
    CHECKOUT_STATUS_PAID: _ClassVar[CheckoutStatus]
    CHECKOUT_STATUS_EXPIRED: _ClassVar[CheckoutStatus]

class RefusedPurchaseState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFUSED_PURCHASE_STATE_UNSPECIFIED: _ClassVar[RefusedPurchaseState]
    REFUSED_PURCHASE_STATE_OPEN: _ClassVar[RefusedPurchaseState]
    REFUSED_PURCHASE_STATE_REFUND_REQUESTED: _ClassVar[RefusedPurchaseState]
    REFUSED_PURCHASE_STATE_REFUNDED: _ClassVar[RefusedPurchaseState]
    REFUSED_PURCHASE_STATE_RESOLVED: _ClassVar[RefusedPurchaseState]

class EntryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTRY_KIND_UNSPECIFIED: _ClassVar[EntryKind]
    ENTRY_KIND_SUBSCRIPTION_GRANT: _ClassVar[EntryKind]
    ENTRY_KIND_EXPIRY: _ClassVar[EntryKind]
    ENTRY_KIND_USAGE: _ClassVar[EntryKind]
    ENTRY_KIND_PURCHASE: _ClassVar[EntryKind]
    ENTRY_KIND_ADJUSTMENT: _ClassVar[EntryKind]
    ENTRY_KIND_DEBT_PAYMENT: _ClassVar[EntryKind]
    ENTRY_KIND_REFUND: _ClassVar[EntryKind]
    ENTRY_KIND_DISPUTE_FREEZE: _ClassVar[EntryKind]
    ENTRY_KIND_DISPUTE_RELEASE: _ClassVar[EntryKind]
    ENTRY_KIND_GRANT: _ClassVar[EntryKind]
    ENTRY_KIND_REVOCATION: _ClassVar[EntryKind]

class UsageGrouping(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USAGE_GROUPING_UNSPECIFIED: _ClassVar[UsageGrouping]
    USAGE_GROUPING_DAY: _ClassVar[UsageGrouping]
    USAGE_GROUPING_MODEL: _ClassVar[UsageGrouping]
    USAGE_GROUPING_PROVIDER: _ClassVar[UsageGrouping]
    USAGE_GROUPING_LABELS: _ClassVar[UsageGrouping]

class BudgetUnit(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUDGET_UNIT_UNSPECIFIED: _ClassVar[BudgetUnit]
    BUDGET_UNIT_TOKENS: _ClassVar[BudgetUnit]
    BUDGET_UNIT_COST_MICROS: _ClassVar[BudgetUnit]

class BudgetWindow(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUDGET_WINDOW_UNSPECIFIED: _ClassVar[BudgetWindow]
    BUDGET_WINDOW_ACCOUNT_MONTH: _ClassVar[BudgetWindow]
    BUDGET_WINDOW_DAY: _ClassVar[BudgetWindow]
    BUDGET_WINDOW_WEEK: _ClassVar[BudgetWindow]
    BUDGET_WINDOW_CALENDAR_MONTH: _ClassVar[BudgetWindow]
EXPIRED_HOLDS_UNSPECIFIED: ExpiredHolds
EXPIRED_HOLDS_PLAN: ExpiredHolds
EXPIRED_HOLDS_RELEASE: ExpiredHolds
EXPIRED_HOLDS_CHARGE: ExpiredHolds
POOL_UNSPECIFIED: Pool
POOL_ALLOWANCE: Pool
POOL_PURCHASED: Pool
POOL_DEBT: Pool
POOL_GRANT: Pool
GRANT_SOURCE_UNSPECIFIED: GrantSource
GRANT_SOURCE_ALLOWANCE: GrantSource
GRANT_SOURCE_PURCHASE: GrantSource
GRANT_SOURCE_PROMOTION: GrantSource
GRANT_SOURCE_ROLLOVER: GrantSource
GRANT_SOURCE_ADJUSTMENT: GrantSource
WARNING_LEVEL_UNSPECIFIED: WarningLevel
WARNING_LEVEL_NONE: WarningLevel
WARNING_LEVEL_PERCENT_80: WarningLevel
WARNING_LEVEL_PERCENT_90: WarningLevel
WARNING_LEVEL_PERCENT_95: WarningLevel
WARNING_LEVEL_EXHAUSTED: WarningLevel
REVERSAL_KIND_UNSPECIFIED: ReversalKind
REVERSAL_KIND_REFUND: ReversalKind
REVERSAL_KIND_DISPUTE: ReversalKind
REVERSAL_KIND_DISPUTE_WON: ReversalKind
REVERSAL_KIND_DISPUTE_LOST: ReversalKind
EVENT_STATUS_UNSPECIFIED: EventStatus
EVENT_STATUS_APPLIED: EventStatus
EVENT_STATUS_IGNORED: EventStatus
EVENT_STATUS_REJECTED: EventStatus
EVENT_STATUS_DUPLICATE: EventStatus
EVENT_STATUS_PENDING: EventStatus
RESERVATION_STATUS_UNSPECIFIED: ReservationStatus
RESERVATION_STATUS_OPEN: ReservationStatus
RESERVATION_STATUS_COMMITTED: ReservationStatus
RESERVATION_STATUS_RELEASED: ReservationStatus
RESERVATION_STATUS_EXPIRED: ReservationStatus
CANCELLED_ALLOWANCE_UNSPECIFIED: CancelledAllowance
CANCELLED_ALLOWANCE_ENDS_NOW: CancelledAllowance
CANCELLED_ALLOWANCE_ENDS_WITH_PERIOD: CancelledAllowance
CANCELLED_ALLOWANCE_CONVERTS: CancelledAllowance
CHECKOUT_STATUS_UNSPECIFIED: CheckoutStatus
CHECKOUT_STATUS_OPEN: CheckoutStatus
CHECKOUT_STATUS_PAID: CheckoutStatus
CHECKOUT_STATUS_EXPIRED: CheckoutStatus
REFUSED_PURCHASE_STATE_UNSPECIFIED: RefusedPurchaseState
REFUSED_PURCHASE_STATE_OPEN: RefusedPurchaseState
REFUSED_PURCHASE_STATE_REFUND_REQUESTED: RefusedPurchaseState
REFUSED_PURCHASE_STATE_REFUNDED: RefusedPurchaseState
REFUSED_PURCHASE_STATE_RESOLVED: RefusedPurchaseState
ENTRY_KIND_UNSPECIFIED: EntryKind
ENTRY_KIND_SUBSCRIPTION_GRANT: EntryKind
ENTRY_KIND_EXPIRY: EntryKind
ENTRY_KIND_USAGE: EntryKind
ENTRY_KIND_PURCHASE: EntryKind
ENTRY_KIND_ADJUSTMENT: EntryKind
ENTRY_KIND_DEBT_PAYMENT: EntryKind
ENTRY_KIND_REFUND: EntryKind
ENTRY_KIND_DISPUTE_FREEZE: EntryKind
ENTRY_KIND_DISPUTE_RELEASE: EntryKind
ENTRY_KIND_GRANT: EntryKind
ENTRY_KIND_REVOCATION: EntryKind
USAGE_GROUPING_UNSPECIFIED: UsageGrouping
USAGE_GROUPING_DAY: UsageGrouping
USAGE_GROUPING_MODEL: UsageGrouping
USAGE_GROUPING_PROVIDER: UsageGrouping
USAGE_GROUPING_LABELS: UsageGrouping
BUDGET_UNIT_UNSPECIFIED: BudgetUnit
BUDGET_UNIT_TOKENS: BudgetUnit
BUDGET_UNIT_COST_MICROS: BudgetUnit
BUDGET_WINDOW_UNSPECIFIED: BudgetWindow
BUDGET_WINDOW_ACCOUNT_MONTH: BudgetWindow
BUDGET_WINDOW_DAY: BudgetWindow
BUDGET_WINDOW_WEEK: BudgetWindow
BUDGET_WINDOW_CALENDAR_MONTH: BudgetWindow

class Grant(_message.Message):
    __slots__ = ("grant_id", "source", "remaining", "held", "priority", "expires_at", "tokens", "reason", "request_id", "created_at")
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    grant_id: int
    source: GrantSource
    remaining: int
    held: int
    priority: int
    expires_at: _timestamp_pb2.Timestamp
    tokens: int
    reason: str
    request_id: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, grant_id: _Optional[int] = ..., source: _Optional[_Union[GrantSource, str]] = ..., remaining: _Optional[int] = ..., held: _Optional[int] = ..., priority: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tokens: _Optional[int] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GrantRequest(_message.Message):
    __slots__ = ("account_id", "request_id", "tokens", "source", "priority", "expires_at", "reason")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    request_id: str
    tokens: int
    source: GrantSource
    priority: int
    expires_at: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, account_id: _Optional[str] = ..., request_id: _Optional[str] = ..., tokens: _Optional[int] = ..., source: _Optional[_Union[GrantSource, str]] = ..., priority: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class GrantResponse(_message.Message):
    __slots__ = ("grant", "balance", "created")
    GRANT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    grant: Grant
    balance: Balance
    created: bool
    def __init__(self, grant: _Optional[_Union[Grant, _Mapping]] = ..., balance: _Optional[_Union[Balance, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class RevokeGrantRequest(_message.Message):
    __slots__ = ("account_id", "grant_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    grant_id: int
    def __init__(self, account_id: _Optional[str] = ..., grant_id: _Optional[int] = ...) -> None: ...

class RevokeGrantResponse(_message.Message):
    __slots__ = ("revoked_tokens", "revoked", "balance")
    REVOKED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    revoked_tokens: int
    revoked: bool
    balance: Balance
    def __init__(self, revoked_tokens: _Optional[int] = ..., revoked: _Optional[bool] = ..., balance: _Optional[_Union[Balance, _Mapping]] = ...) -> None: ...

class Balance(_message.Message):
    __slots__ = ("account_id", "allowance_remaining", "purchased_remaining", "held", "available", "debt", "plan_id", "period_start", "period_end", "allowance_total", "used_this_period", "warning_level", "paid_through", "granted_remaining")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOWANCE_REMAINING_FIELD_NUMBER: _ClassVar[int]
    PURCHASED_REMAINING_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    DEBT_FIELD_NUMBER: _ClassVar[int]
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    ALLOWANCE_TOTAL_FIELD_NUMBER: _ClassVar[int]
    USED_THIS_PERIOD_FIELD_NUMBER: _ClassVar[int]
    WARNING_LEVEL_FIELD_NUMBER: _ClassVar[int]
    PAID_THROUGH_FIELD_NUMBER: _ClassVar[int]
    GRANTED_REMAINING_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    allowance_remaining: int
    purchased_remaining: int
    held: int
    available: int
    debt: int
    plan_id: str
    period_start: _timestamp_pb2.Timestamp
    period_end: _timestamp_pb2.Timestamp
    allowance_total: int
    used_this_period: int
    warning_level: WarningLevel
    paid_through: _timestamp_pb2.Timestamp
    granted_remaining: int
    def __init__(self, account_id: _Optional[str] = ..., allowance_remaining: _Optional[int] = ..., purchased_remaining: _Optional[int] = ..., held: _Optional[int] = ..., available: _Optional[int] = ..., debt: _Optional[int] = ..., plan_id: _Optional[str] = ..., period_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., allowance_total: _Optional[int] = ..., used_this_period: _Optional[int] = ..., warning_level: _Optional[_Union[WarningLevel, str]] = ..., paid_through: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., granted_remaining: _Optional[int] = ...) -> None: ...

class ReserveRequest(_message.Message):
    __slots__ = ("account_id", "request_id", "model", "input_tokens", "max_output_tokens", "ttl_seconds", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    request_id: str
    model: str
    input_tokens: int
    max_output_tokens: int
    ttl_seconds: int
    labels: _containers.ScalarMap[str, str]
    def __init__(self, account_id: _Optional[str] = ..., request_id: _Optional[str] = ..., model: _Optional[str] = ..., input_tokens: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., ttl_seconds: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ReserveResponse(_message.Message):
    __slots__ = ("reservation_id", "held_tokens", "expires_at", "balance", "catalog_version", "status")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    HELD_TOKENS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    CATALOG_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    held_tokens: int
    expires_at: _timestamp_pb2.Timestamp
    balance: Balance
    catalog_version: str
    status: ReservationStatus
    def __init__(self, reservation_id: _Optional[str] = ..., held_tokens: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., balance: _Optional[_Union[Balance, _Mapping]] = ..., catalog_version: _Optional[str] = ..., status: _Optional[_Union[ReservationStatus, str]] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("reservation_id", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    def __init__(self, reservation_id: _Optional[str] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cached_input_tokens: _Optional[int] = ..., cache_write_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("charged_tokens", "cost_micros", "unbilled_tokens", "balance", "late")
    CHARGED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    UNBILLED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    charged_tokens: int
    cost_micros: int
    unbilled_tokens: int
    balance: Balance
    late: bool
    def __init__(self, charged_tokens: _Optional[int] = ..., cost_micros: _Optional[int] = ..., unbilled_tokens: _Optional[int] = ..., balance: _Optional[_Union[Balance, _Mapping]] = ..., late: _Optional[bool] = ...) -> None: ...

class ChargeUsageRequest(_message.Message):
    __slots__ = ("account_id", "request_id", "model", "input_tokens", "output_tokens", "labels", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    request_id: str
    model: str
    input_tokens: int
    output_tokens: int
    labels: _containers.ScalarMap[str, str]
    cached_input_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    def __init__(self, account_id: _Optional[str] = ..., request_id: _Optional[str] = ..., model: _Optional[str] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., cached_input_tokens: _Optional[int] = ..., cache_write_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ...) -> None: ...

class ChargeUsageResponse(_message.Message):
    __slots__ = ("reservation_id", "charged_tokens", "cost_micros", "unbilled_tokens", "balance")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    CHARGED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    UNBILLED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    charged_tokens: int
    cost_micros: int
    unbilled_tokens: int
    balance: Balance
    def __init__(self, reservation_id: _Optional[str] = ..., charged_tokens: _Optional[int] = ..., cost_micros: _Optional[int] = ..., unbilled_tokens: _Optional[int] = ..., balance: _Optional[_Union[Balance, _Mapping]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("reservation_id",)
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    def __init__(self, reservation_id: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("balance",)
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    balance: Balance
    def __init__(self, balance: _Optional[_Union[Balance, _Mapping]] = ...) -> None: ...

class ExtendReservationRequest(_message.Message):
    __slots__ = ("reservation_id", "ttl_seconds")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    ttl_seconds: int
    def __init__(self, reservation_id: _Optional[str] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class ExtendReservationResponse(_message.Message):
    __slots__ = ("expires_at",)
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetBalanceRequest(_message.Message):
    __slots__ = ("account_id",)
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    def __init__(self, account_id: _Optional[str] = ...) -> None: ...

class GetBalanceResponse(_message.Message):
    __slots__ = ("balance", "limits", "headroom", "grants", "next_expiry")
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    HEADROOM_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_EXPIRY_FIELD_NUMBER: _ClassVar[int]
    balance: Balance
    limits: RateLimits
    headroom: RateHeadroom
    grants: _containers.RepeatedCompositeFieldContainer[Grant]
    next_expiry: Grant
    def __init__(self, balance: _Optional[_Union[Balance, _Mapping]] = ..., limits: _Optional[_Union[RateLimits, _Mapping]] = ..., headroom: _Optional[_Union[RateHeadroom, _Mapping]] = ..., grants: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ..., next_expiry: _Optional[_Union[Grant, _Mapping]] = ...) -> None: ...

class RateHeadroom(_message.Message):
    __slots__ = ("requests_this_minute", "tokens_this_minute", "holds", "minute_ends")
    REQUESTS_THIS_MINUTE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_THIS_MINUTE_FIELD_NUMBER: _ClassVar[int]
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    MINUTE_ENDS_FIELD_NUMBER: _ClassVar[int]
    requests_this_minute: int
    tokens_this_minute: int
    holds: int
    minute_ends: _timestamp_pb2.Timestamp
    def __init__(self, requests_this_minute: _Optional[int] = ..., tokens_this_minute: _Optional[int] = ..., holds: _Optional[int] = ..., minute_ends: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WebhookEvent(_message.Message):
    __slots__ = ("event_id", "type", "payload", "received_time")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_TIME_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    type: str
    payload: bytes
    received_time: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., type: _Optional[str] = ..., payload: _Optional[bytes] = ..., received_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreditPurchaseRequest(_message.Message):
    __slots__ = ("account_id", "pack_id", "tokens", "amount_minor", "currency", "payment_ref", "payment_intent", "event_id", "source_event")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PACK_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_REF_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_INTENT_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_EVENT_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    pack_id: str
    tokens: int
    amount_minor: int
    currency: str
    payment_ref: str
    payment_intent: str
    event_id: str
    source_event: WebhookEvent
    def __init__(self, account_id: _Optional[str] = ..., pack_id: _Optional[str] = ..., tokens: _Optional[int] = ..., amount_minor: _Optional[int] = ..., currency: _Optional[str] = ..., payment_ref: _Optional[str] = ..., payment_intent: _Optional[str] = ..., event_id: _Optional[str] = ..., source_event: _Optional[_Union[WebhookEvent, _Mapping]] = ...) -> None: ...

class CreditPurchaseResponse(_message.Message):
    __slots__ = ("balance", "credited_tokens", "newly_credited", "event_status")
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    CREDITED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NEWLY_CREDITED_FIELD_NUMBER: _ClassVar[int]
    EVENT_STATUS_FIELD_NUMBER: _ClassVar[int]
    balance: Balance
    credited_tokens: int
    newly_credited: bool
    event_status: EventStatus
    def __init__(self, balance: _Optional[_Union[Balance, _Mapping]] = ..., credited_tokens: _Optional[int] = ..., newly_credited: _Optional[bool] = ..., event_status: _Optional[_Union[EventStatus, str]] = ...) -> None: ...

class SetPlanRequest(_message.Message):
    __slots__ = ("account_id", "plan_id", "period_start", "period_end", "subscription_ref", "event_time", "monthly_allowance_tokens", "expire_allowance_now", "source_event", "limits", "stripe_prices", "expired_holds", "subscription_cancelled", "subscription_status")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_REF_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    MONTHLY_ALLOWANCE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_ALLOWANCE_NOW_FIELD_NUMBER: _ClassVar[int]
    SOURCE_EVENT_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    STRIPE_PRICES_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_HOLDS_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_CANCELLED_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_STATUS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    plan_id: str
    period_start: _timestamp_pb2.Timestamp
    period_end: _timestamp_pb2.Timestamp
    subscription_ref: str
    event_time: _timestamp_pb2.Timestamp
    monthly_allowance_tokens: int
    expire_allowance_now: bool
    source_event: WebhookEvent
    limits: RateLimits
    stripe_prices: _containers.RepeatedScalarFieldContainer[str]
    expired_holds: ExpiredHolds
    subscription_cancelled: bool
    subscription_status: str
    def __init__(self, account_id: _Optional[str] = ..., plan_id: _Optional[str] = ..., period_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., subscription_ref: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., monthly_allowance_tokens: _Optional[int] = ..., expire_allowance_now: _Optional[bool] = ..., source_event: _Optional[_Union[WebhookEvent, _Mapping]] = ..., limits: _Optional[_Union[RateLimits, _Mapping]] = ..., stripe_prices: _Optional[_Iterable[str]] = ..., expired_holds: _Optional[_Union[ExpiredHolds, str]] = ..., subscription_cancelled: _Optional[bool] = ..., subscription_status: _Optional[str] = ...) -> None: ...

class SetPlanResponse(_message.Message):
    __slots__ = ("balance", "applied", "event_status")
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    EVENT_STATUS_FIELD_NUMBER: _ClassVar[int]
    balance: Balance
    applied: bool
    event_status: EventStatus
    def __init__(self, balance: _Optional[_Union[Balance, _Mapping]] = ..., applied: _Optional[bool] = ..., event_status: _Optional[_Union[EventStatus, str]] = ...) -> None: ...

class AdjustRequest(_message.Message):
    __slots__ = ("account_id", "pool", "delta", "reason", "request_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    pool: Pool
    delta: int
    reason: str
    request_id: str
    def __init__(self, account_id: _Optional[str] = ..., pool: _Optional[_Union[Pool, str]] = ..., delta: _Optional[int] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class AdjustResponse(_message.Message):
    __slots__ = ("balance",)
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    balance: Balance
    def __init__(self, balance: _Optional[_Union[Balance, _Mapping]] = ...) -> None: ...

class GetCatalogRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCatalogResponse(_message.Message):
    __slots__ = ("version", "models", "packs", "plans", "usage_label_keys", "default_plan")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    PACKS_FIELD_NUMBER: _ClassVar[int]
    PLANS_FIELD_NUMBER: _ClassVar[int]
    USAGE_LABEL_KEYS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PLAN_FIELD_NUMBER: _ClassVar[int]
    version: str
    models: _containers.RepeatedCompositeFieldContainer[Model]
    packs: _containers.RepeatedCompositeFieldContainer[Pack]
    plans: _containers.RepeatedCompositeFieldContainer[Plan]
    usage_label_keys: _containers.RepeatedScalarFieldContainer[str]
    default_plan: str
    def __init__(self, version: _Optional[str] = ..., models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., packs: _Optional[_Iterable[_Union[Pack, _Mapping]]] = ..., plans: _Optional[_Iterable[_Union[Plan, _Mapping]]] = ..., usage_label_keys: _Optional[_Iterable[str]] = ..., default_plan: _Optional[str] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("id", "provider", "input_price_micros_per_million", "output_price_micros_per_million", "input_weight", "output_weight", "cached_input_price_micros_per_million", "cache_write_price_micros_per_million", "reasoning_price_micros_per_million", "cached_input_weight", "cache_write_weight", "reasoning_weight")
    ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    INPUT_PRICE_MICROS_PER_MILLION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PRICE_MICROS_PER_MILLION_FIELD_NUMBER: _ClassVar[int]
    INPUT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_PRICE_MICROS_PER_MILLION_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_PRICE_MICROS_PER_MILLION_FIELD_NUMBER: _ClassVar[int]
    REASONING_PRICE_MICROS_PER_MILLION_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    REASONING_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    id: str
    provider: str
    input_price_micros_per_million: int
    output_price_micros_per_million: int
    input_weight: str
    output_weight: str
    cached_input_price_micros_per_million: int
    cache_write_price_micros_per_million: int
    reasoning_price_micros_per_million: int
    cached_input_weight: str
    cache_write_weight: str
    reasoning_weight: str
    def __init__(self, id: _Optional[str] = ..., provider: _Optional[str] = ..., input_price_micros_per_million: _Optional[int] = ..., output_price_micros_per_million: _Optional[int] = ..., input_weight: _Optional[str] = ..., output_weight: _Optional[str] = ..., cached_input_price_micros_per_million: _Optional[int] = ..., cache_write_price_micros_per_million: _Optional[int] = ..., reasoning_price_micros_per_million: _Optional[int] = ..., cached_input_weight: _Optional[str] = ..., cache_write_weight: _Optional[str] = ..., reasoning_weight: _Optional[str] = ...) -> None: ...

class Pack(_message.Message):
    __slots__ = ("id", "tokens", "price_minor", "currency", "active", "name", "expires_after_days")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    PRICE_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AFTER_DAYS_FIELD_NUMBER: _ClassVar[int]
    id: str
    tokens: int
    price_minor: int
    currency: str
    active: bool
    name: str
    expires_after_days: int
    def __init__(self, id: _Optional[str] = ..., tokens: _Optional[int] = ..., price_minor: _Optional[int] = ..., currency: _Optional[str] = ..., active: _Optional[bool] = ..., name: _Optional[str] = ..., expires_after_days: _Optional[int] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("id", "monthly_allowance_tokens", "per_account", "limits", "stripe_prices", "cancelled_allowance", "past_due_grace_days")
    ID_FIELD_NUMBER: _ClassVar[int]
    MONTHLY_ALLOWANCE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PER_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    STRIPE_PRICES_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_ALLOWANCE_FIELD_NUMBER: _ClassVar[int]
    PAST_DUE_GRACE_DAYS_FIELD_NUMBER: _ClassVar[int]
    id: str
    monthly_allowance_tokens: int
    per_account: bool
    limits: RateLimits
    stripe_prices: _containers.RepeatedScalarFieldContainer[str]
    cancelled_allowance: CancelledAllowance
    past_due_grace_days: int
    def __init__(self, id: _Optional[str] = ..., monthly_allowance_tokens: _Optional[int] = ..., per_account: _Optional[bool] = ..., limits: _Optional[_Union[RateLimits, _Mapping]] = ..., stripe_prices: _Optional[_Iterable[str]] = ..., cancelled_allowance: _Optional[_Union[CancelledAllowance, str]] = ..., past_due_grace_days: _Optional[int] = ...) -> None: ...

class CreateCheckoutSessionRequest(_message.Message):
    __slots__ = ("account_id", "pack_id", "success_url", "cancel_url", "request_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PACK_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_URL_FIELD_NUMBER: _ClassVar[int]
    CANCEL_URL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    pack_id: str
    success_url: str
    cancel_url: str
    request_id: str
    def __init__(self, account_id: _Optional[str] = ..., pack_id: _Optional[str] = ..., success_url: _Optional[str] = ..., cancel_url: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateCheckoutSessionResponse(_message.Message):
    __slots__ = ("session", "created")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    session: CheckoutSession
    created: bool
    def __init__(self, session: _Optional[_Union[CheckoutSession, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class CheckoutSession(_message.Message):
    __slots__ = ("session_id", "url", "account_id", "pack_id", "tokens", "price_minor", "currency", "catalog_version", "expires_time", "created_time", "request_id", "status")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PACK_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    PRICE_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    CATALOG_VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATED_TIME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    url: str
    account_id: str
    pack_id: str
    tokens: int
    price_minor: int
    currency: str
    catalog_version: str
    expires_time: _timestamp_pb2.Timestamp
    created_time: _timestamp_pb2.Timestamp
    request_id: str
    status: CheckoutStatus
    def __init__(self, session_id: _Optional[str] = ..., url: _Optional[str] = ..., account_id: _Optional[str] = ..., pack_id: _Optional[str] = ..., tokens: _Optional[int] = ..., price_minor: _Optional[int] = ..., currency: _Optional[str] = ..., catalog_version: _Optional[str] = ..., expires_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ..., status: _Optional[_Union[CheckoutStatus, str]] = ...) -> None: ...

class ListRefusedPurchasesRequest(_message.Message):
    __slots__ = ("account_id", "page_size", "page_token", "unsettled_only")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    UNSETTLED_ONLY_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    page_size: int
    page_token: str
    unsettled_only: bool
    def __init__(self, account_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., unsettled_only: _Optional[bool] = ...) -> None: ...

class ListRefusedPurchasesResponse(_message.Message):
    __slots__ = ("purchases", "next_page_token")
    PURCHASES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    purchases: _containers.RepeatedCompositeFieldContainer[RefusedPurchase]
    next_page_token: str
    def __init__(self, purchases: _Optional[_Iterable[_Union[RefusedPurchase, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RefusedPurchase(_message.Message):
    __slots__ = ("account_id", "payment_ref", "pack_id", "tokens", "amount_minor", "currency", "payment_intent", "reason", "message", "refused_time", "event_id", "state", "refunded_minor", "refund_ref", "note", "settled_time", "settled_by")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_REF_FIELD_NUMBER: _ClassVar[int]
    PACK_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_INTENT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REFUSED_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_MINOR_FIELD_NUMBER: _ClassVar[int]
    REFUND_REF_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    SETTLED_TIME_FIELD_NUMBER: _ClassVar[int]
    SETTLED_BY_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    payment_ref: str
    pack_id: str
    tokens: int
    amount_minor: int
    currency: str
    payment_intent: str
    reason: str
    message: str
    refused_time: _timestamp_pb2.Timestamp
    event_id: str
    state: RefusedPurchaseState
    refunded_minor: int
    refund_ref: str
    note: str
    settled_time: _timestamp_pb2.Timestamp
    settled_by: str
    def __init__(self, account_id: _Optional[str] = ..., payment_ref: _Optional[str] = ..., pack_id: _Optional[str] = ..., tokens: _Optional[int] = ..., amount_minor: _Optional[int] = ..., currency: _Optional[str] = ..., payment_intent: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., refused_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_id: _Optional[str] = ..., state: _Optional[_Union[RefusedPurchaseState, str]] = ..., refunded_minor: _Optional[int] = ..., refund_ref: _Optional[str] = ..., note: _Optional[str] = ..., settled_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., settled_by: _Optional[str] = ...) -> None: ...

class RefundRefusedPurchaseRequest(_message.Message):
    __slots__ = ("account_id", "payment_ref")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_REF_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    payment_ref: str
    def __init__(self, account_id: _Optional[str] = ..., payment_ref: _Optional[str] = ...) -> None: ...

class RefundRefusedPurchaseResponse(_message.Message):
    __slots__ = ("purchase",)
    PURCHASE_FIELD_NUMBER: _ClassVar[int]
    purchase: RefusedPurchase
    def __init__(self, purchase: _Optional[_Union[RefusedPurchase, _Mapping]] = ...) -> None: ...

class ResolveRefusedPurchaseRequest(_message.Message):
    __slots__ = ("account_id", "payment_ref", "note")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_REF_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    payment_ref: str
    note: str
    def __init__(self, account_id: _Optional[str] = ..., payment_ref: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class ResolveRefusedPurchaseResponse(_message.Message):
    __slots__ = ("purchase",)
    PURCHASE_FIELD_NUMBER: _ClassVar[int]
    purchase: RefusedPurchase
    def __init__(self, purchase: _Optional[_Union[RefusedPurchase, _Mapping]] = ...) -> None: ...

class RateLimits(_message.Message):
    __slots__ = ("requests_per_minute", "tokens_per_minute", "concurrent_holds")
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    CONCURRENT_HOLDS_FIELD_NUMBER: _ClassVar[int]
    requests_per_minute: int
    tokens_per_minute: int
    concurrent_holds: int
    def __init__(self, requests_per_minute: _Optional[int] = ..., tokens_per_minute: _Optional[int] = ..., concurrent_holds: _Optional[int] = ...) -> None: ...

class ReverseCreditRequest(_message.Message):
    __slots__ = ("account_id", "payment_ref", "payment_intent", "kind", "amount_minor", "reversal_ref", "source_event", "invoice_ref")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_REF_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_INTENT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    REVERSAL_REF_FIELD_NUMBER: _ClassVar[int]
    SOURCE_EVENT_FIELD_NUMBER: _ClassVar[int]
    INVOICE_REF_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    payment_ref: str
    payment_intent: str
    kind: ReversalKind
    amount_minor: int
    reversal_ref: str
    source_event: WebhookEvent
    invoice_ref: str
    def __init__(self, account_id: _Optional[str] = ..., payment_ref: _Optional[str] = ..., payment_intent: _Optional[str] = ..., kind: _Optional[_Union[ReversalKind, str]] = ..., amount_minor: _Optional[int] = ..., reversal_ref: _Optional[str] = ..., source_event: _Optional[_Union[WebhookEvent, _Mapping]] = ..., invoice_ref: _Optional[str] = ...) -> None: ...

class ReverseCreditResponse(_message.Message):
    __slots__ = ("balance", "reversed_tokens", "unbilled_tokens", "event_status")
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    REVERSED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    UNBILLED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    EVENT_STATUS_FIELD_NUMBER: _ClassVar[int]
    balance: Balance
    reversed_tokens: int
    unbilled_tokens: int
    event_status: EventStatus
    def __init__(self, balance: _Optional[_Union[Balance, _Mapping]] = ..., reversed_tokens: _Optional[int] = ..., unbilled_tokens: _Optional[int] = ..., event_status: _Optional[_Union[EventStatus, str]] = ...) -> None: ...

class GrantPeriodAllowanceRequest(_message.Message):
    __slots__ = ("subscription_ref", "invoice_ref", "period_start", "period_end", "source_event", "account_id", "amount_minor", "currency", "lines", "payment_intent")
    SUBSCRIPTION_REF_FIELD_NUMBER: _ClassVar[int]
    INVOICE_REF_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    SOURCE_EVENT_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_INTENT_FIELD_NUMBER: _ClassVar[int]
    subscription_ref: str
    invoice_ref: str
    period_start: _timestamp_pb2.Timestamp
    period_end: _timestamp_pb2.Timestamp
    source_event: WebhookEvent
    account_id: str
    amount_minor: int
    currency: str
    lines: _containers.RepeatedCompositeFieldContainer[InvoiceLine]
    payment_intent: str
    def __init__(self, subscription_ref: _Optional[str] = ..., invoice_ref: _Optional[str] = ..., period_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source_event: _Optional[_Union[WebhookEvent, _Mapping]] = ..., account_id: _Optional[str] = ..., amount_minor: _Optional[int] = ..., currency: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[InvoiceLine, _Mapping]]] = ..., payment_intent: _Optional[str] = ...) -> None: ...

class InvoiceLine(_message.Message):
    __slots__ = ("period_start", "period_end", "proration", "stripe_price", "amount_minor")
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    PRORATION_FIELD_NUMBER: _ClassVar[int]
    STRIPE_PRICE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    period_start: _timestamp_pb2.Timestamp
    period_end: _timestamp_pb2.Timestamp
    proration: bool
    stripe_price: str
    amount_minor: int
    def __init__(self, period_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., proration: _Optional[bool] = ..., stripe_price: _Optional[str] = ..., amount_minor: _Optional[int] = ...) -> None: ...

class GrantPeriodAllowanceResponse(_message.Message):
    __slots__ = ("balance", "granted", "event_status")
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    EVENT_STATUS_FIELD_NUMBER: _ClassVar[int]
    balance: Balance
    granted: bool
    event_status: EventStatus
    def __init__(self, balance: _Optional[_Union[Balance, _Mapping]] = ..., granted: _Optional[bool] = ..., event_status: _Optional[_Union[EventStatus, str]] = ...) -> None: ...

class LinkInvoicePaymentRequest(_message.Message):
    __slots__ = ("invoice_ref", "payment_intent", "source_event")
    INVOICE_REF_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_INTENT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_EVENT_FIELD_NUMBER: _ClassVar[int]
    invoice_ref: str
    payment_intent: str
    source_event: WebhookEvent
    def __init__(self, invoice_ref: _Optional[str] = ..., payment_intent: _Optional[str] = ..., source_event: _Optional[_Union[WebhookEvent, _Mapping]] = ...) -> None: ...

class LinkInvoicePaymentResponse(_message.Message):
    __slots__ = ("balance", "event_status")
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_STATUS_FIELD_NUMBER: _ClassVar[int]
    balance: Balance
    event_status: EventStatus
    def __init__(self, balance: _Optional[_Union[Balance, _Mapping]] = ..., event_status: _Optional[_Union[EventStatus, str]] = ...) -> None: ...

class RecordPaymentFailureRequest(_message.Message):
    __slots__ = ("subscription_ref", "invoice_ref", "account_id", "amount_minor", "currency", "attempt_count", "next_attempt_time", "billing_reason", "source_event")
    SUBSCRIPTION_REF_FIELD_NUMBER: _ClassVar[int]
    INVOICE_REF_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_COUNT_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_TIME_FIELD_NUMBER: _ClassVar[int]
    BILLING_REASON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_EVENT_FIELD_NUMBER: _ClassVar[int]
    subscription_ref: str
    invoice_ref: str
    account_id: str
    amount_minor: int
    currency: str
    attempt_count: int
    next_attempt_time: _timestamp_pb2.Timestamp
    billing_reason: str
    source_event: WebhookEvent
    def __init__(self, subscription_ref: _Optional[str] = ..., invoice_ref: _Optional[str] = ..., account_id: _Optional[str] = ..., amount_minor: _Optional[int] = ..., currency: _Optional[str] = ..., attempt_count: _Optional[int] = ..., next_attempt_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., billing_reason: _Optional[str] = ..., source_event: _Optional[_Union[WebhookEvent, _Mapping]] = ...) -> None: ...

class RecordPaymentFailureResponse(_message.Message):
    __slots__ = ("balance", "event_status")
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_STATUS_FIELD_NUMBER: _ClassVar[int]
    balance: Balance
    event_status: EventStatus
    def __init__(self, balance: _Optional[_Union[Balance, _Mapping]] = ..., event_status: _Optional[_Union[EventStatus, str]] = ...) -> None: ...

class RecordWebhookEventRequest(_message.Message):
    __slots__ = ("event", "account_id", "status", "reason")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    event: WebhookEvent
    account_id: str
    status: EventStatus
    reason: str
    def __init__(self, event: _Optional[_Union[WebhookEvent, _Mapping]] = ..., account_id: _Optional[str] = ..., status: _Optional[_Union[EventStatus, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class RecordWebhookEventResponse(_message.Message):
    __slots__ = ("event_status",)
    EVENT_STATUS_FIELD_NUMBER: _ClassVar[int]
    event_status: EventStatus
    def __init__(self, event_status: _Optional[_Union[EventStatus, str]] = ...) -> None: ...

class GetWebhookEventRequest(_message.Message):
    __slots__ = ("event_id",)
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    def __init__(self, event_id: _Optional[str] = ...) -> None: ...

class GetWebhookEventResponse(_message.Message):
    __slots__ = ("event", "account_id", "status", "reason")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    event: WebhookEvent
    account_id: str
    status: EventStatus
    reason: str
    def __init__(self, event: _Optional[_Union[WebhookEvent, _Mapping]] = ..., account_id: _Optional[str] = ..., status: _Optional[_Union[EventStatus, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class LedgerEntry(_message.Message):
    __slots__ = ("entry_id", "created_at", "kind", "pool", "amount", "reservation_id", "ref", "note", "usage", "caller", "grant_id")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    entry_id: int
    created_at: _timestamp_pb2.Timestamp
    kind: EntryKind
    pool: Pool
    amount: int
    reservation_id: str
    ref: str
    note: str
    usage: UsageRecord
    caller: str
    grant_id: int
    def __init__(self, entry_id: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[_Union[EntryKind, str]] = ..., pool: _Optional[_Union[Pool, str]] = ..., amount: _Optional[int] = ..., reservation_id: _Optional[str] = ..., ref: _Optional[str] = ..., note: _Optional[str] = ..., usage: _Optional[_Union[UsageRecord, _Mapping]] = ..., caller: _Optional[str] = ..., grant_id: _Optional[int] = ...) -> None: ...

class UsageRecord(_message.Message):
    __slots__ = ("model", "catalog_version", "input_tokens", "output_tokens", "charged_tokens", "cost_micros", "unbilled_tokens", "late", "labels", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CATALOG_VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CHARGED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    UNBILLED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    model: str
    catalog_version: str
    input_tokens: int
    output_tokens: int
    charged_tokens: int
    cost_micros: int
    unbilled_tokens: int
    late: bool
    labels: _containers.ScalarMap[str, str]
    cached_input_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    def __init__(self, model: _Optional[str] = ..., catalog_version: _Optional[str] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., charged_tokens: _Optional[int] = ..., cost_micros: _Optional[int] = ..., unbilled_tokens: _Optional[int] = ..., late: _Optional[bool] = ..., labels: _Optional[_Mapping[str, str]] = ..., cached_input_tokens: _Optional[int] = ..., cache_write_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ...) -> None: ...

class ListLedgerEntriesRequest(_message.Message):
    __slots__ = ("account_id", "page_size", "page_token", "kind", "to")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    page_size: int
    page_token: str
    kind: EntryKind
    to: _timestamp_pb2.Timestamp
    def __init__(self, account_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., kind: _Optional[_Union[EntryKind, str]] = ..., to: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., **kwargs) -> None: ...

class ListLedgerEntriesResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[LedgerEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[LedgerEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UsageTotals(_message.Message):
    __slots__ = ("requests", "input_tokens", "output_tokens", "charged_tokens", "cost_micros", "unbilled_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CHARGED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    UNBILLED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    requests: int
    input_tokens: int
    output_tokens: int
    charged_tokens: int
    cost_micros: int
    unbilled_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    def __init__(self, requests: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., charged_tokens: _Optional[int] = ..., cost_micros: _Optional[int] = ..., unbilled_tokens: _Optional[int] = ..., cached_input_tokens: _Optional[int] = ..., cache_write_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ...) -> None: ...

class UsageRow(_message.Message):
    __slots__ = ("day", "model", "totals", "provider", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DAY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    day: _date_pb2.Date
    model: str
    totals: UsageTotals
    provider: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, day: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., model: _Optional[str] = ..., totals: _Optional[_Union[UsageTotals, _Mapping]] = ..., provider: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("account_id", "to", "group_by", "group_by_labels", "label_filter")
    class LabelFilterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_LABELS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FILTER_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    to: _date_pb2.Date
    group_by: UsageGrouping
    group_by_labels: _containers.RepeatedScalarFieldContainer[str]
    label_filter: _containers.ScalarMap[str, str]
    def __init__(self, account_id: _Optional[str] = ..., to: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., group_by: _Optional[_Union[UsageGrouping, str]] = ..., group_by_labels: _Optional[_Iterable[str]] = ..., label_filter: _Optional[_Mapping[str, str]] = ..., **kwargs) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("rows", "total")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[UsageRow]
    total: UsageTotals
    def __init__(self, rows: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ..., total: _Optional[_Union[UsageTotals, _Mapping]] = ...) -> None: ...

class ListOpenReservationsRequest(_message.Message):
    __slots__ = ("account_id", "limit")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    limit: int
    def __init__(self, account_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListOpenReservationsResponse(_message.Message):
    __slots__ = ("reservations", "open_count")
    RESERVATIONS_FIELD_NUMBER: _ClassVar[int]
    OPEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    reservations: _containers.RepeatedCompositeFieldContainer[Reservation]
    open_count: int
    def __init__(self, reservations: _Optional[_Iterable[_Union[Reservation, _Mapping]]] = ..., open_count: _Optional[int] = ...) -> None: ...

class Reservation(_message.Message):
    __slots__ = ("reservation_id", "request_id", "model", "input_tokens", "max_output_tokens", "held_tokens", "created_at", "expires_at", "catalog_version", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    HELD_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CATALOG_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    request_id: str
    model: str
    input_tokens: int
    max_output_tokens: int
    held_tokens: int
    created_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    catalog_version: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, reservation_id: _Optional[str] = ..., request_id: _Optional[str] = ..., model: _Optional[str] = ..., input_tokens: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., held_tokens: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., catalog_version: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class BalanceEvent(_message.Message):
    __slots__ = ("event_id", "account_id", "sequence", "type", "occurred_at", "data", "balance", "position")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    account_id: str
    sequence: int
    type: str
    occurred_at: _timestamp_pb2.Timestamp
    data: _struct_pb2.Struct
    balance: Balance
    position: str
    def __init__(self, event_id: _Optional[str] = ..., account_id: _Optional[str] = ..., sequence: _Optional[int] = ..., type: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., balance: _Optional[_Union[Balance, _Mapping]] = ..., position: _Optional[str] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("account_id", "after_sequence", "page_size")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    after_sequence: int
    page_size: int
    def __init__(self, account_id: _Optional[str] = ..., after_sequence: _Optional[int] = ..., page_size: _Optional[int] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events", "last_sequence", "more")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[BalanceEvent]
    last_sequence: int
    more: bool
    def __init__(self, events: _Optional[_Iterable[_Union[BalanceEvent, _Mapping]]] = ..., last_sequence: _Optional[int] = ..., more: _Optional[bool] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("account_id", "after_sequence", "after_position")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    AFTER_POSITION_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    after_sequence: int
    after_position: str
    def __init__(self, account_id: _Optional[str] = ..., after_sequence: _Optional[int] = ..., after_position: _Optional[str] = ...) -> None: ...

class WatchEventsResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: BalanceEvent
    def __init__(self, event: _Optional[_Union[BalanceEvent, _Mapping]] = ...) -> None: ...

class Budget(_message.Message):
    __slots__ = ("label_key", "label_value", "unit", "cap", "used", "held", "remaining", "period_start", "period_end", "window")
    LABEL_KEY_FIELD_NUMBER: _ClassVar[int]
    LABEL_VALUE_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    CAP_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    label_key: str
    label_value: str
    unit: BudgetUnit
    cap: int
    used: int
    held: int
    remaining: int
    period_start: _timestamp_pb2.Timestamp
    period_end: _timestamp_pb2.Timestamp
    window: BudgetWindow
    def __init__(self, label_key: _Optional[str] = ..., label_value: _Optional[str] = ..., unit: _Optional[_Union[BudgetUnit, str]] = ..., cap: _Optional[int] = ..., used: _Optional[int] = ..., held: _Optional[int] = ..., remaining: _Optional[int] = ..., period_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window: _Optional[_Union[BudgetWindow, str]] = ...) -> None: ...

class SetBudgetRequest(_message.Message):
    __slots__ = ("account_id", "label_key", "label_value", "unit", "cap", "window")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_KEY_FIELD_NUMBER: _ClassVar[int]
    LABEL_VALUE_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    CAP_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    label_key: str
    label_value: str
    unit: BudgetUnit
    cap: int
    window: BudgetWindow
    def __init__(self, account_id: _Optional[str] = ..., label_key: _Optional[str] = ..., label_value: _Optional[str] = ..., unit: _Optional[_Union[BudgetUnit, str]] = ..., cap: _Optional[int] = ..., window: _Optional[_Union[BudgetWindow, str]] = ...) -> None: ...

class SetBudgetResponse(_message.Message):
    __slots__ = ("budget", "created")
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    budget: Budget
    created: bool
    def __init__(self, budget: _Optional[_Union[Budget, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class DeleteBudgetRequest(_message.Message):
    __slots__ = ("account_id", "label_key", "label_value")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_KEY_FIELD_NUMBER: _ClassVar[int]
    LABEL_VALUE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    label_key: str
    label_value: str
    def __init__(self, account_id: _Optional[str] = ..., label_key: _Optional[str] = ..., label_value: _Optional[str] = ...) -> None: ...

class DeleteBudgetResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class ListBudgetsRequest(_message.Message):
    __slots__ = ("account_id",)
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    def __init__(self, account_id: _Optional[str] = ...) -> None: ...

class ListBudgetsResponse(_message.Message):
    __slots__ = ("budgets",)
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    budgets: _containers.RepeatedCompositeFieldContainer[Budget]
    def __init__(self, budgets: _Optional[_Iterable[_Union[Budget, _Mapping]]] = ...) -> None: ...
