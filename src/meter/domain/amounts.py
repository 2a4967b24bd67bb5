"""Whole-token and micro-USD arithmetic, and the bounds that make an amount absurd.

Integers only: weights and prices are held as exact integer millionths so that a charge is
reproducible to the token and never depends on float rounding.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from meter.domain.errors import InvalidField

MILLION = 1_000_000

# No single model call comes near this; anything above is a bug or an attack, not usage.
MAX_CALL_TOKENS = 100_000_000
INT64_MAX = 2**63 - 1


def millionths(text: str, what: str) -> int:
    """Parse an exact decimal ("0.25", "15.00") into integer millionths, refusing finer digits."""
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError) as exc:
        raise ValueError(f"{what}: {text!r} is not a decimal number") from exc
    if not value.is_finite() or value < 0:
        raise ValueError(f"{what}: {text!r} must be a finite, non-negative decimal")
    scaled = value * MILLION
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{what}: {text!r} has more than six decimal places")
    return int(scaled)


def format_millionths(value: int) -> str:
    """The shortest exact decimal for integer millionths (250000 -> "0.25")."""
    text = str(Decimal(value) / MILLION)
    return text.rstrip("0").rstrip(".") if "." in text else text


def require_tokens(field: str, value: int, *, minimum: int, maximum: int) -> int:
    """Refuse amounts below minimum (negative, or zero where a positive is needed) or above maximum."""
    if value < minimum:
        raise InvalidField(field, f"must be at least {minimum}, got {value}")
    if value > maximum:
        raise InvalidField(field, f"must be at most {maximum}, got {value}")
    return value
