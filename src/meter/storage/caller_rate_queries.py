"""Per-caller counts: this replica's written, the other replicas' read, in one statement."""

from __future__ import annotations

from collections.abc import Sequence

from meter.domain.caller_rates import Count
from meter.storage.queries import Queries


class CallerRateQueries(Queries):
    async def sync_caller_rates(self, replica: str, mine: Sequence[Count], since_second: int) -> list[Count]:
        """Write this replica's counts (replacing what it wrote before for the same second) and
        read the others' from `since_second` on. The read does not see this statement's own
        writes, and leaves this replica's rows out anyway."""
        rows = await self._rows(
            "WITH written AS (INSERT INTO caller_rate_counts (caller, method, second, replica, count) "
            "SELECT c, m, s, CAST(:replica AS uuid), n FROM unnest(CAST(:callers AS text[]), "
            "CAST(:methods AS text[]), CAST(:seconds AS bigint[]), CAST(:counts AS bigint[])) AS v(c, m, s, n) "
            "ON CONFLICT (caller, method, second, replica) DO UPDATE SET count = excluded.count) "
            "SELECT caller, method, second, sum(count) AS count FROM caller_rate_counts "
            "WHERE second >= :since AND replica <> CAST(:replica AS uuid) GROUP BY caller, method, second",
            replica=replica,
            callers=[c.caller for c in mine],
            methods=[c.method for c in mine],
            seconds=[c.second for c in mine],
            counts=[c.count for c in mine],
            since=since_second,
        )
        return [Count(r["caller"], r["method"], int(r["second"]), int(r["count"])) for r in rows]

    async def forget_caller_rates(self, before_second: int) -> None:
        await self._execute("DELETE FROM caller_rate_counts WHERE second < :before", before=before_second)
