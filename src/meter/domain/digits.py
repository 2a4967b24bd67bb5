"""Whole numbers written as text, read one way everywhere: the ASCII digits 0-9 and nothing else.

Python reads more than that: `int()` takes "1_0", " 10 " and "１０" (full-width digits) as 10,
and `str.isdigit()` accepts "²", which `int()` then refuses. Every number meter reads from text
(an event position, a listen address's port, a Stripe metadata value or signature time, a 64-bit
integer in an HTTP/JSON body) is read here, bounded before it is converted: a number of
thousands of digits is refused by its length, not converted first.
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]+")
_SIGNED = re.compile(r"-?[0-9]+")


def is_decimal(text: str, *, signed: bool = False) -> bool:
    """`text` is one or more ASCII digits (with `signed`, after an optional minus sign)."""
    return (_SIGNED if signed else _DIGITS).fullmatch(text) is not None


def whole_number(text: str, maximum: int) -> int | None:
    """`text` as a number from 0 to `maximum`; None when it is not ASCII digits or is larger."""
    if len(text) > len(str(maximum)) or not _DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if value <= maximum else None
