from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_FIELD: _ClassVar[ErrorReason]
    ERROR_REASON_UNKNOWN_MODEL: _ClassVar[ErrorReason]
    ERROR_REASON_UNKNOWN_PACK: _ClassVar[ErrorReason]
    ERROR_REASON_UNKNOWN_PLAN: _ClassVar[ErrorReason]
    ERROR_REASON_PURCHASE_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_ACCOUNT_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_RESERVATION_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_INSUFFICIENT_TOKENS: _ClassVar[ErrorReason]
    ERROR_REASON_ACCOUNT_IN_DEBT: _ClassVar[ErrorReason]
    ERROR_REASON_RESERVATION_RELEASED: _ClassVar[ErrorReason]
    ERROR_REASON_RESERVATION_COMMITTED: _ClassVar[ErrorReason]
    ERROR_REASON_RESERVATION_EXPIRED: _ClassVar[ErrorReason]
    ERROR_REASON_IDEMPOTENCY_KEY_REUSED: _ClassVar[ErrorReason]
    ERROR_REASON_STORAGE_UNAVAILABLE: _ClassVar[ErrorReason]
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_INVALID_FIELD: ErrorReason
ERROR_REASON_UNKNOWN_MODEL: ErrorReason
ERROR_REASON_UNKNOWN_PACK: ErrorReason
ERROR_REASON_UNKNOWN_PLAN: ErrorReason
ERROR_REASON_PURCHASE_MISMATCH: ErrorReason
ERROR_REASON_ACCOUNT_NOT_FOUND: ErrorReason
ERROR_REASON_RESERVATION_NOT_FOUND: ErrorReason
ERROR_REASON_INSUFFICIENT_TOKENS: ErrorReason
ERROR_REASON_ACCOUNT_IN_DEBT: ErrorReason
ERROR_REASON_RESERVATION_RELEASED: ErrorReason
ERROR_REASON_RESERVATION_COMMITTED: ErrorReason
ERROR_REASON_RESERVATION_EXPIRED: ErrorReason
ERROR_REASON_IDEMPOTENCY_KEY_REUSED: ErrorReason
ERROR_REASON_STORAGE_UNAVAILABLE: ErrorReason
