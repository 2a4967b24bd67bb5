"""Queries on checkout_sessions: what each Checkout Session sold, and how many an account has
opened."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meter.domain.checkout import CREATING, HOUR, CheckoutSession, RecentSessions, SoldPack
from meter.storage.queries import Queries

_SESSION_COLUMNS = (
    "account_id, request_id, pack_id, tokens, price_minor, currency, catalog_version, success_url, cancel_url, "
    "created_at, expires_at, session_id, url, paid_at, expires_after_days"
)


def _session(row: Mapping[str, Any]) -> CheckoutSession:
    return CheckoutSession(
        account_id=row["account_id"],
        request_id=row["request_id"],
        sold=SoldPack(
            row["pack_id"],
            row["tokens"],
            row["price_minor"],
            row["currency"],
            row["catalog_version"],
            row["expires_after_days"],
        ),
        success_url=row["success_url"],
        cancel_url=row["cancel_url"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        session_id=row["session_id"] or "",
        url=row["url"] or "",
        paid_at=row["paid_at"],
    )


class CheckoutQueries(Queries):
    async def lock_checkouts(self, account_id: str) -> None:
        """Serialise the account's session creations (not its Reserves: no row of theirs is
        locked), so that two concurrent creates cannot both pass a limit."""
        await self._execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('meter.checkout:' || :account_id, 0))",
            account_id=account_id,
        )

    async def checkout_session(self, account_id: str, request_id: str) -> CheckoutSession | None:
        row = await self._row(
            f"SELECT {_SESSION_COLUMNS} FROM checkout_sessions "
            "WHERE account_id = :account_id AND request_id = :request_id",
            account_id=account_id,
            request_id=request_id,
        )
        return _session(row) if row else None

    async def sold_session(self, session_id: str) -> CheckoutSession | None:
        """The session meter created with this Stripe id, if it created it, whatever account a
        payment's event names (a read across accounts: the event's account is what is checked)."""
        row = await self._row(
            f"SELECT {_SESSION_COLUMNS} FROM checkout_sessions WHERE session_id = :session_id LIMIT 1",
            session_id=session_id,
        )
        return _session(row) if row else None

    async def recent_sessions(self, account_id: str, now: datetime) -> RecentSessions:
        """Open sessions (one Stripe has not answered for yet counts for a while) and those
        created in the last hour."""
        rows = await self._rows(
            "SELECT CASE WHEN paid_at IS NOT NULL THEN NULL "
            "WHEN session_id IS NULL THEN least(expires_at, created_at + :creating) "
            "ELSE expires_at END AS open_until, created_at "
            "FROM checkout_sessions WHERE account_id = :account_id AND (created_at > :hour_ago OR "
            "(paid_at IS NULL AND expires_at > :now))",
            account_id=account_id,
            now=now,
            hour_ago=now - HOUR,
            creating=CREATING,
        )
        return RecentSessions(
            open_until=[row["open_until"] for row in rows if row["open_until"] and row["open_until"] > now],
            created_at=[row["created_at"] for row in rows if row["created_at"] > now - HOUR],
        )

    async def insert_checkout_session(self, session: CheckoutSession) -> bool:
        return bool(
            await self._execute(
                "INSERT INTO checkout_sessions (account_id, request_id, pack_id, tokens, price_minor, currency, "
                "catalog_version, success_url, cancel_url, created_at, expires_at, expires_after_days) VALUES "
                "(:account_id, :request_id, :pack_id, :tokens, :price_minor, :currency, :catalog_version, "
                ":success_url, :cancel_url, :created_at, :expires_at, :expires_after_days) "
                "ON CONFLICT (account_id, request_id) DO NOTHING",
                account_id=session.account_id,
                request_id=session.request_id,
                pack_id=session.sold.pack_id,
                tokens=session.sold.tokens,
                price_minor=session.sold.price_minor,
                currency=session.sold.currency,
                catalog_version=session.sold.catalog_version,
                expires_after_days=session.sold.expires_after_days,
                success_url=session.success_url,
                cancel_url=session.cancel_url,
                created_at=session.created_at,
                expires_at=session.expires_at,
            )
        )

    async def record_created_session(self, account_id: str, request_id: str, session_id: str, url: str) -> None:
        await self._execute(
            "UPDATE checkout_sessions SET session_id = :session_id, url = :url "
            "WHERE account_id = :account_id AND request_id = :request_id",
            account_id=account_id,
            request_id=request_id,
            session_id=session_id,
            url=url,
        )

    async def forget_session(self, account_id: str, request_id: str) -> None:
        """A session Stripe refused to create: it sold nothing and counts against nothing."""
        await self._execute(
            "DELETE FROM checkout_sessions WHERE account_id = :account_id AND request_id = :request_id "
            "AND session_id IS NULL",
            account_id=account_id,
            request_id=request_id,
        )

    async def mark_session_paid(self, account_id: str, session_id: str, now: datetime) -> None:
        await self._execute(
            "UPDATE checkout_sessions SET paid_at = :now "
            "WHERE account_id = :account_id AND session_id = :session_id AND paid_at IS NULL",
            account_id=account_id,
            session_id=session_id,
            now=now,
        )
