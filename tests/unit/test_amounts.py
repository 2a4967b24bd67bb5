"""Whole-token arithmetic: weights and prices are exact integers, charges round up."""

from __future__ import annotations

import pytest

from meter.domain import amounts, ids
from meter.domain.errors import InvalidField


class TestWeightsAndCosts:
    """Charges are ceil(input * w_in + output * w_out); costs are rounded up to a micro-USD."""

    @pytest.mark.parametrize(
        ("text", "millionths"),
        [("1", 1_000_000), ("0.25", 250_000), ("15.00", 15_000_000), ("0.000001", 1), ("0", 0)],
    )
    def test_decimal_text_becomes_exact_millionths(self, text: str, millionths: int) -> None:
        assert amounts.millionths(text, "w") == millionths

    @pytest.mark.parametrize("text", ["0.0000001", "-1", "abc", "NaN", "Infinity"])
    def test_inexact_or_negative_decimals_are_refused(self, text: str) -> None:
        with pytest.raises(ValueError):
            amounts.millionths(text, "w")

    @pytest.mark.parametrize(("value", "text"), [(1_000_000, "1"), (250_000, "0.25"), (1_250_000, "1.25"), (0, "0")])
    def test_millionths_print_as_the_shortest_decimal(self, value: int, text: str) -> None:
        assert amounts.format_millionths(value) == text


class TestBounds:
    def test_amounts_outside_the_bounds_name_the_field(self) -> None:
        assert amounts.require_tokens("n", 5, minimum=1, maximum=10) == 5
        for value in (0, 11):
            with pytest.raises(InvalidField) as refused:
                amounts.require_tokens("n", value, minimum=1, maximum=10)
            assert refused.value.metadata["field"] == "n"


class TestIds:
    """Account ids are 1-128 of [A-Za-z0-9._:@-]; reservation ids name their account."""

    @pytest.mark.parametrize("value", ["a", "user_123", "org:acme@eu-1.prod", "x" * 128])
    def test_valid_account_ids(self, value: str) -> None:
        assert ids.account_id(value) == value

    @pytest.mark.parametrize("value", ["", "x" * 129, "a/b", "a b", "ümlaut", "a\nb"])
    def test_invalid_account_ids(self, value: str) -> None:
        with pytest.raises(InvalidField):
            ids.account_id(value)

    def test_a_reservation_id_names_its_account_and_hold(self) -> None:
        reservation = "org:acme/" + ids.new_hold_id()  # as meter_reservation_id composes it
        assert ids.reservation_account(reservation) == "org:acme"
        assert len(ids.hold_id(reservation)) == 32

    @pytest.mark.parametrize("value", ["", "acme", "acme/xyz", "/" + "a" * 32, "a b/" + "0" * 32])
    def test_malformed_reservation_ids(self, value: str) -> None:
        with pytest.raises(InvalidField):
            ids.reservation_account(value)

    @pytest.mark.parametrize("value", ["", "has space", "x" * 129, "tab\t"])
    def test_invalid_idempotency_keys(self, value: str) -> None:
        with pytest.raises(InvalidField):
            ids.idempotency_key(value, "request_id")
