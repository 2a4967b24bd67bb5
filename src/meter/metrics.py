"""The service's Prometheus metrics, in prometheus_client's default registry, served at /metrics
on the HTTP server (METER_HTTP_ADDR). Each process counts what it did; Prometheus sums the
replicas. docs/reference/metrics.md lists them (scripts/generate_reference.py writes it from here)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

BALANCE_WARNINGS = Counter(
    "meter_balance_warnings",
    "Accounts that crossed a balance warning level for the first time in their period.",
    ["level"],
)
BUDGET_WARNINGS = Counter(
    "meter_budget_warnings",
    "Budgets that crossed a warning level (80, 90, 95 %, exhausted) for the first time in their period.",
    ["level"],
)

RPCS = Counter("meter_rpcs", "gRPC calls answered, by method and status code.", ["method", "code"])
RPC_SECONDS = Histogram(
    "meter_rpc_duration_seconds",
    "Time from a call's arrival in the handler to its answer, by method and status code.",
    ["method", "code"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
)
REJECTIONS = Counter(
    "meter_rejections",
    "Calls refused with a meter error, by method and ErrorInfo reason (INSUFFICIENT_TOKENS, ...).",
    ["method", "reason"],
)

LISTENER_REFUSALS = Counter(
    "meter_listener_refusals",
    "Connections and requests an HTTP listener (http_json, webhooks) closed before they reached meter, by cause: "
    "connections (over METER_MAX_CONNECTIONS, closed unread); on http_json also head_size (request line and "
    "headers over 16 kB), head_time and body_time (slower than METER_HEAD_TIMEOUT_SECONDS or "
    "METER_BODY_TIMEOUT_SECONDS).",
    ["listener", "cause"],
)

RATE_LIMITED = Counter(
    "meter_rate_limited",
    "Calls refused RATE_LIMITED, by the limit that refused them (requestsPerMinute, tokensPerMinute, "
    "concurrentHolds, callerRate, openCheckoutSessions, checkoutSessionsPerHour).",
    ["limit"],
)

TOKENS = Counter(
    "meter_tokens",
    "Tokens moved: held by new Reserves, charged by new Commits, credited by new purchases, "
    "reversed by refunds and disputes.",
    ["movement"],
)
TOKENS_HELD = TOKENS.labels(movement="held")
TOKENS_CHARGED = TOKENS.labels(movement="charged")
TOKENS_CREDITED = TOKENS.labels(movement="credited")
TOKENS_REVERSED = TOKENS.labels(movement="reversed")

OPEN_HOLDS = Gauge(
    "meter_open_holds", "Holds not yet committed, released or expired (all accounts, read by the sweeper)."
)
SWEEPER_LAG = Gauge(
    "meter_sweeper_lag_seconds",
    "How long the longest-expired hold still open has been past its expiry (0: the sweeper is keeping up).",
)
RESERVES_ACROSS_ROWS = Counter(
    "meter_reserves_across_rows",
    "Reserves that no single balance row could take (the account's tokens spread thinner than the hold, "
    "or every row with them locked past METER_RESERVE_WAIT_MS), taken from all the account's rows at once: "
    "a rising share means accounts spread too thin or contended.",
)

COALESCED = Histogram(
    "meter_coalesced_calls",
    "Calls per Reserve or Commit statement sent (METER_COALESCE): 1 for a call that went alone, more "
    "for the calls that waited together while the database was busy; by call (reserve, commit).",
    ["call"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)


def observe_coalesced(call: str, size: int) -> None:
    COALESCED.labels(call=call).observe(size)


SWEEPS = Counter("meter_sweeps", "Sweeper passes, by outcome (ok, failed).", ["outcome"])

WEBHOOK_ATTEMPTS = Counter(
    "meter_webhook_attempts",
    "Balance events sent to webhook endpoints, by endpoint and outcome (delivered, failed: retried later, "
    "dead: the retry schedule is spent).",
    ["endpoint", "outcome"],
)

RECONCILED_EVENTS = Counter(
    "meter_reconciled_events",
    "Stripe events reconciling found that meter never received (its webhook lost), by what applying them did "
    "(applied, duplicate, ignored, pending, rejected, retry).",
    ["status"],
)
WEBHOOK_EVENTS = Counter(
    "meter_webhook_events",
    "Stripe webhook deliveries answered, by event type and outcome (applied, duplicate, ignored, pending, "
    "rejected, retry, refused).",
    ["type", "status"],
)

WEBHOOK_PAYLOADS_PRUNED = Counter(
    "meter_webhook_payloads_pruned",
    "Stored Stripe payloads this process's sweeper deleted past their retention "
    "(METER_WEBHOOK_PAYLOAD_RETENTION_DAYS); the events' rows stay. `meter retention` tells the bytes.",
)


PoolReading = Callable[[], tuple[int, int]]  # () -> (connections in use, pool size limit)


class _DatabasePools(Collector):
    """Reads the connection pools at scrape time. One collector for the process: the pools of
    every service started in it register here (tests start several)."""

    def __init__(self) -> None:
        self._pools: dict[tuple[int, str], PoolReading] = {}

    def watch(self, owner: object, name: str, reading: PoolReading) -> None:
        self._pools[(id(owner), name)] = reading

    def forget(self, owner: object) -> None:
        for key in [key for key in self._pools if key[0] == id(owner)]:
            del self._pools[key]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        in_use = GaugeMetricFamily("meter_db_connections_in_use", "Database connections lent out.", labels=["pool"])
        limit = GaugeMetricFamily("meter_db_connections_max", "Most connections a pool opens.", labels=["pool"])
        totals: dict[str, list[int]] = {}
        for (_, name), reading in list(self._pools.items()):
            used, size = reading()
            total = totals.setdefault(name, [0, 0])
            total[0] += used
            total[1] += size
        for name, (used, size) in sorted(totals.items()):
            in_use.add_metric([name], used)
            limit.add_metric([name], size)
        yield in_use
        yield limit

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


DATABASE_POOLS = _DatabasePools()
REGISTRY.register(DATABASE_POOLS)
