"""meter_allowance_month (storage/sql), the one home of where an allowance month lies: calendar
months (UTC) without an anchor, else months counted from it, the 31st staying the 31st where a
month has one; whatever the session's time zone."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


async def month(engine: AsyncEngine, anchor: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    async with engine.connect() as connection:
        # Another session time zone (with a change of daylight saving time) moves no boundary.
        await connection.execute(text("SET TIME ZONE 'America/Los_Angeles'"))
        row = (
            await connection.execute(
                text("SELECT * FROM meter_allowance_month(:anchor, :now)"), {"anchor": anchor, "now": now}
            )
        ).one()
    return row.month_start.astimezone(UTC), row.month_end.astimezone(UTC)


async def months_beginning(engine: AsyncEngine, anchor: datetime | None, start: datetime, end: datetime) -> int:
    async with engine.connect() as connection:
        return int(
            await connection.scalar(
                text("SELECT meter_months_beginning(:anchor, :start, :end)"),
                {"anchor": anchor, "start": start, "end": end},
            )
        )


async def test_without_an_anchor_months_are_calendar_months(engine: AsyncEngine) -> None:
    assert await month(engine, None, utc(2026, 11, 24, 13, 5)) == (utc(2026, 11, 1), utc(2026, 12, 1))
    assert await month(engine, None, utc(2026, 12, 31, 23, 59)) == (utc(2026, 12, 1), utc(2027, 1, 1))


async def test_months_are_counted_from_the_anchor_and_the_31st_stays_the_31st(engine: AsyncEngine) -> None:
    anchor = utc(2026, 1, 31, 10)
    assert await month(engine, anchor, utc(2026, 2, 1)) == (utc(2026, 1, 31, 10), utc(2026, 2, 28, 10))
    assert await month(engine, anchor, utc(2026, 3, 1)) == (utc(2026, 2, 28, 10), utc(2026, 3, 31, 10))
    assert await month(engine, anchor, utc(2026, 6, 5)) == (utc(2026, 5, 31, 10), utc(2026, 6, 30, 10))
    assert await month(engine, anchor, utc(2026, 3, 31, 10)) == (utc(2026, 3, 31, 10), utc(2026, 4, 30, 10))
    assert await month(engine, anchor, utc(2028, 2, 29, 9)) == (utc(2028, 1, 31, 10), utc(2028, 2, 29, 10))


async def test_an_anchor_a_little_ahead_gives_its_first_month(engine: AsyncEngine) -> None:
    """Stripe's clock may be minutes ahead of the database's."""
    assert await month(engine, utc(2026, 11, 20, 12, 3), utc(2026, 11, 20, 12)) == (
        utc(2026, 11, 20, 12, 3),
        utc(2026, 12, 20, 12, 3),
    )


async def test_a_billing_period_pays_for_the_months_that_begin_in_it(engine: AsyncEngine) -> None:
    anchor = utc(2026, 1, 31)
    assert await months_beginning(engine, anchor, utc(2026, 1, 31), utc(2027, 1, 31)) == 12  # a year
    assert await months_beginning(engine, anchor, utc(2026, 1, 31), utc(2026, 2, 28)) == 1  # a month
    assert await months_beginning(engine, anchor, utc(2026, 2, 28), utc(2026, 3, 7)) == 1  # a week with a start
    assert await months_beginning(engine, anchor, utc(2026, 3, 7), utc(2026, 3, 14)) == 0  # a week without
    assert await months_beginning(engine, None, utc(2026, 11, 15), utc(2026, 12, 15)) == 1  # calendar
