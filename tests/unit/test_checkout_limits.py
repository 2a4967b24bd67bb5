"""The limits on an account's Checkout Sessions (domain.checkout.refusal) against their statement:
one more session may be opened while fewer than the limit are open and fewer than the hourly limit
were opened in the last hour; refused, the retry delay is exactly when the first of those stops
counting, so a retry then passes and none sooner does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from meter.domain.checkout import HOUR, CheckoutLimits, RecentSessions, refusal

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
seconds = st.integers(min_value=1, max_value=3600)


def counted(recent: RecentSessions, at: datetime) -> tuple[int, int]:
    """(open, opened in the last hour) at `at`, by the limits' statement."""
    return (
        sum(1 for until in recent.open_until if until > at),
        sum(1 for created in recent.created_at if created > at - HOUR),
    )


@given(
    open_for=st.lists(seconds, max_size=8),
    ago=st.lists(st.integers(min_value=0, max_value=3599), max_size=12),
    open_sessions=st.integers(min_value=1, max_value=5),
    extra_per_hour=st.integers(min_value=0, max_value=6),
)
def test_refused_exactly_while_a_limit_is_reached_and_told_when_it_frees(
    open_for: list[int], ago: list[int], open_sessions: int, extra_per_hour: int
) -> None:
    limits = CheckoutLimits(open_sessions=open_sessions, sessions_per_hour=open_sessions + extra_per_hour)
    recent = RecentSessions(
        open_until=[NOW + timedelta(seconds=s) for s in open_for],
        created_at=[NOW - timedelta(seconds=s) for s in ago],
    )
    opened, hourly = counted(recent, NOW)
    refused = refusal(limits, recent, NOW)
    assert (refused is not None) == (opened >= limits.open_sessions or hourly >= limits.sessions_per_hour)
    if refused is None:
        return
    assert refused.retry_after is not None and refused.retry_after > 0
    later = NOW + timedelta(seconds=refused.retry_after)
    if refused.limit == "openCheckoutSessions":
        assert counted(recent, later)[0] < limits.open_sessions
        assert counted(recent, later - timedelta(milliseconds=1))[0] >= limits.open_sessions
    else:
        assert refused.limit == "checkoutSessionsPerHour"
        assert counted(recent, later)[1] < limits.sessions_per_hour
        assert counted(recent, later - timedelta(milliseconds=1))[1] >= limits.sessions_per_hour
