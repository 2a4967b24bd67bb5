"""The fail-open budget against its statement: whatever a proxy's callers ask for (negative,
zero, absurd or overflowing counts, any account), what it lets through for an account in one
minute never exceeds `tokens_per_minute`, and nothing meter would refuse is counted at all."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meter.client.fail_open import FailOpen, FailOpenBudget, let_through_tokens
from meter.domain.amounts import MAX_CALL_TOKENS
from meter.domain.errors import MeterError

counts = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.integers(min_value=-5, max_value=1_500), st.just(-(10**12))
)
calls = st.lists(
    st.tuples(
        st.sampled_from(["acme", "globex", "", "a b"]),
        counts,
        counts,
        st.floats(min_value=0, max_value=90, allow_nan=False),
    ),
    max_size=60,
)


@given(calls=calls, budget=st.integers(min_value=1, max_value=5_000))
def test_never_more_than_the_budget_per_account_per_minute(
    calls: list[tuple[str, int, int, float]], budget: int
) -> None:
    now = [0.0]
    fail_open = FailOpenBudget(FailOpen(tokens_per_minute=budget), clock=lambda: now[0])
    admitted: Counter[tuple[str, int]] = Counter()
    for account, input_tokens, max_output_tokens, wait in calls:
        now[0] += wait
        try:
            tokens = let_through_tokens(
                account_id=account, request_id="r1", model="basic", input_tokens=input_tokens,
                max_output_tokens=max_output_tokens, ttl_seconds=0, labels={}, models=None,
            )  # fmt: skip
        except MeterError:
            valid = account in ("acme", "globex") and 0 <= input_tokens <= MAX_CALL_TOKENS >= max_output_tokens >= 1
            assert not valid
            continue
        assert tokens == input_tokens + max_output_tokens >= 1
        if fail_open.admit(account, tokens):
            admitted[account, int(now[0] // 60)] += tokens
    assert all(used <= budget for used in admitted.values()), admitted


@given(tokens=counts)
def test_a_count_below_one_is_never_admitted(tokens: int) -> None:
    fail_open = FailOpenBudget(FailOpen(tokens_per_minute=1_000), clock=lambda: 0.0)
    assert fail_open.admit("acme", tokens) == (1 <= tokens <= 1_000)
    assert fail_open.admit("acme", 1_000) == (tokens < 1 or tokens > 1_000)


def test_a_budget_admits_at_least_one_token() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FailOpen(tokens_per_minute=0)
