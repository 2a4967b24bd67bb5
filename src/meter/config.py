"""Settings from METER_* environment variables, each declared once, below, with its default, its
bounds and what it means; read in one place and validated at start.

Each field is one setting: the variable is METER_ and the field's name in capitals unless the
field names another (`env`); pydantic turns the variable's text into the field's type and checks
its bounds; a malformed value stops the start with a message naming the variable. The settings
reference (docs/reference/settings.md) is written from these declarations by
scripts/generate_reference.py, and a test fails when it is stale.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass

from meter.domain.holds import LONGEST_TTL_SECONDS
from meter.domain.webhook_deliveries import DEFAULT_RETRY_SECONDS
from meter.health_probe import DEFAULT_HTTP_ADDR

MAX_RETRY_WAITS = 50
# The database URLs meter takes (storage/engine.py connects with asyncpg whichever is written).
DATABASE_URL_SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg")
WEEK = 7 * 86_400


class ConfigError(ValueError):
    """A METER_* variable is malformed; the message names it."""


def _listed(value: Any) -> Any:
    """A variable's comma-separated list, as a tuple (a tuple given in code passes as it is)."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def setting(default: Any, meaning: str, *, env: str = "", unset: str = "", **bounds: Any) -> Any:
    """A setting's declaration: its default, what it means, its bounds (ge, le, ...) and, when it
    is not METER_ + the field's name, its variable; `unset` says what no value means."""
    return Field(default, description=meaning, json_schema_extra={"env": env, "unset": unset}, **bounds)


Secrets = Annotated[tuple[str, ...], BeforeValidator(_listed)]
Waits = Annotated[tuple[Annotated[float, Field(ge=0, le=WEEK)], ...], BeforeValidator(_listed)]
Choice = BeforeValidator(_lower)


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Settings:
    database_url: str | None = setting(
        None, "PostgreSQL to use, postgresql://user:pass@host:5432/db", unset="an embedded PostgreSQL"
    )
    data_dir: Path = setting(Path(".meter"), "the embedded PostgreSQL's data and local state")
    grpc_addr: str = setting("127.0.0.1:50051", "gRPC listen address")
    connect_addr: str = setting(
        "127.0.0.1:8081", "HTTP/JSON (Connect) listen address: the contract for runtimes without gRPC; off: none"
    )
    http_addr: str = setting(DEFAULT_HTTP_ADDR, "listen address of the Stripe webhook endpoint, /metrics and /healthz")
    stripe_webhook_secrets: Secrets = setting(
        (),
        "the webhook signing secret(s) (whsec_...), comma-separated during a rotation",
        env="METER_STRIPE_WEBHOOK_SECRET",
        unset="webhooks are answered 503",
    )
    buckets: int = setting(16, "bucket rows per pool for new accounts (1: one row per pool)", ge=1, le=1024)
    catalog_path: Path | None = setting(
        None, "the catalog file", env="METER_CATALOG", unset="the packaged catalog.toml"
    )
    default_ttl_seconds: int = setting(600, "hold lifetime when Reserve gives none", ge=1, le=LONGEST_TTL_SECONDS)
    max_ttl_seconds: int = setting(
        3600, "longest lifetime a Reserve or ExtendReservation may ask for", ge=1, le=LONGEST_TTL_SECONDS
    )
    max_credit_tokens: int = setting(1_000_000_000, "largest single purchase, adjustment or grant", ge=1, le=2**62)
    sweep_interval_seconds: float = setting(
        1.0, "how often expired holds, ended periods and due payloads are swept", ge=0.01, le=3600
    )
    expiring_notice_hours: int = setting(
        72,
        "how long before a month's allowance expires with tokens left balance.expiring is told (0: never)",
        ge=0,
        le=744,
    )
    db_pool_size: int = setting(20, "database connections per process (the one pool)", ge=1, le=1000)
    statement_timeout_ms: int = setting(5_000, "statement_timeout of every connection", ge=1, le=3_600_000)
    lock_timeout_ms: int = setting(3_000, "lock_timeout of every connection", ge=1, le=3_600_000)
    reserve_wait_ms: int = setting(
        200,
        "how long a Reserve waits for a locked balance row that has its tokens before it takes them from all the "
        "account's rows (0: no wait)",
        ge=0,
        le=60_000,
    )
    coalesce: int = setting(
        1,
        "Reserve (and Commit) statements one process keeps in flight; calls that arrive meanwhile go together in "
        "the next (0: a statement per call)",
        ge=0,
        le=1000,
    )
    idle_in_transaction_timeout_ms: int = setting(
        10_000, "idle_in_transaction_session_timeout of every connection", ge=1, le=3_600_000
    )
    shutdown_grace_seconds: float = setting(10.0, "in-flight RPCs get this long to finish on SIGTERM", ge=0, le=3600)
    webhook_rpc_timeout_seconds: float = setting(
        5.0, "how long the webhook adapter waits for meter before answering 503", ge=0.1, le=60
    )
    # What a client may hold of each listener (gRPC, HTTP/JSON, webhooks and metrics): meter.listeners.
    max_connections: int | None = setting(
        None,
        "connections each listener (gRPC, HTTP/JSON, webhooks and metrics) holds at once; one more is closed as "
        "soon as it is accepted, unread",
        unset="a quarter of the process's open-file limit (RLIMIT_NOFILE)",
        ge=1,
        le=1_000_000,
    )
    head_timeout_seconds: float = setting(
        10.0,
        "how long an HTTP client has, from connecting or from its previous answer, to send a request's line and "
        "headers (an idle keep-alive connection is closed after it too), and a gRPC client to begin HTTP/2",
        ge=0.05,
        le=3600,
    )
    body_timeout_seconds: float = setting(
        10.0,
        "how long an HTTP request's body may take to arrive after its headers; a slower webhook is answered 408, a "
        "slower HTTP/JSON call's connection closed",
        ge=0.05,
        le=300,
    )
    grpc_idle_seconds: float = setting(
        300.0,
        "a gRPC connection without a call for this long is closed (clients reconnect on their next call)",
        ge=1,
        le=86_400,
    )
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(str.upper)] = (
        setting("INFO", "logging level")
    )
    log_format: Annotated[Literal["auto", "json", "text"], Choice] = setting(
        "auto",
        "json (one object per line), text, or auto: text when stderr is a terminal, else json; serve and webhooks "
        "only, other commands log text",
    )
    rpc_log: Annotated[Literal["all", "failures"], Choice] = setting(
        "all", "all: a log line per RPC; failures: only for calls that did not end OK"
    )
    callers_file: Path | None = setting(
        None, "TOML file of callers: name, role or methods, token_sha256", unset="no callers: loopback only"
    )
    callers_toml: str | None = setting(None, "the same TOML, in the variable itself", env="METER_CALLERS")
    webhook_token: str | None = setting(None, "the bearer token the webhook adapter presents (a billing caller's)")
    token: str | None = setting(
        None, "the bearer token of the CLI's client commands (account, usage, purchases, replay)"
    )
    tls_cert_file: Path | None = setting(None, "server certificate chain (PEM); with the key, gRPC listens with TLS")
    tls_key_file: Path | None = setting(None, "server private key (PEM)")
    tls_client_ca_file: Path | None = setting(
        None, "CA (PEM) of client certificates: set, every client must present one (mutual TLS)"
    )
    tls_ca_file: Path | None = setting(
        None, "for meter's own clients (CLI, webhook adapter alone): CA (PEM) of meter's certificate; set: TLS"
    )
    tls_client_cert_file: Path | None = setting(
        None, "for meter's own clients: the certificate they present (mutual TLS)"
    )
    tls_client_key_file: Path | None = setting(None, "for meter's own clients: its private key")
    migrate_on_start: bool = setting(True, "`meter serve` migrates the database; false: it waits for `meter migrate`")
    service_role: str | None = setting(
        None,
        "the PostgreSQL role replicas serve with, when it is not the one that migrates: each migration grants it "
        "exactly what serving needs (it may not write the ledger, rows or money but through meter's functions)",
        unset="the migrating role serves too",
        max_length=63,
    )
    caller_rate_sync_ms: int = setting(100, "how often replicas share their per-caller counts", ge=10, le=60_000)
    delivery_retry_seconds: Waits = setting(
        DEFAULT_RETRY_SECONDS,
        "the waits between a webhook's attempts (comma-separated seconds); once spent, the delivery is dead",
        min_length=0,
        max_length=MAX_RETRY_WAITS,
    )
    delivery_timeout_seconds: float = setting(10.0, "how long an endpoint has to answer a webhook", ge=0.1, le=300)
    delivery_poll_seconds: float = setting(1.0, "how often each replica looks for webhooks to send", ge=0.01, le=60)
    delivery_concurrency: int = setting(64, "webhooks each replica sends at once, in all", ge=1, le=1000)
    delivery_endpoint_concurrency: int = setting(
        8,
        "webhooks each replica sends at once to one endpoint (at most METER_DELIVERY_CONCURRENCY): a slow "
        "endpoint holds no more places than these",
        ge=1,
        le=1000,
    )
    delivery_backoff_max_seconds: float = setting(
        600.0,
        "the longest an endpoint that does not answer in time is sent nothing (first the timeout, then twice as "
        "long after each further timeout)",
        ge=0.1,
        le=86_400,
    )
    stripe_api_key: str | None = setting(
        None,
        "the Stripe secret key meter calls Stripe's API with (Checkout Sessions, refunds of refused purchases, "
        "meter reconcile's events)",
        unset="meter does not sell",
    )
    stripe_api_base: str | None = setting(
        None, "another address for Stripe's API (an emulator, in tests)", unset="Stripe's"
    )
    checkout_open_sessions: int = setting(
        5, "Checkout Sessions an account may have open (unpaid, unexpired) at once", ge=1, le=1000
    )
    checkout_sessions_per_hour: int = setting(
        20, "Checkout Sessions an account may open in any hour (at least METER_CHECKOUT_OPEN_SESSIONS)", ge=1, le=10_000
    )
    checkout_session_minutes: int = setting(
        30, "how long a Checkout Session takes payment (Stripe's bounds)", ge=30, le=1440
    )
    watch_reads: int = setting(
        2,
        "reads of WatchEvents watchers (history replays and catch-ups) one process runs at once; the others wait "
        "their turn, so that watchers never take the database pool from Reserve and Commit",
        ge=1,
        le=1000,
    )
    reconcile_interval_seconds: int = setting(
        3600,
        "how often the webhook adapter reconciles with Stripe's events (meter reconcile), with METER_STRIPE_API_KEY "
        "set (0: never; run `meter reconcile` yourself)",
        ge=0,
        le=86_400,
    )
    reconcile_days: int = setting(
        3, "how far back each scheduled reconciliation looks (Stripe keeps 30 days)", ge=1, le=30
    )
    webhook_payload_retention_days: int = setting(
        30,
        "days a Stripe event's raw payload is kept after the event last changed; then the sweeper deletes it and "
        "keeps the event's id, type, status and reason (0: keep forever)",
        ge=0,
        le=36_500,
    )

    @property
    def caller_rate_sync_seconds(self) -> float:
        return self.caller_rate_sync_ms / 1000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        if "METER_DB_FAST_POOL_SIZE" in env:
            # Refused rather than ignored: an operator who sized two pools should size the one.
            raise ConfigError("METER_DB_FAST_POOL_SIZE was removed: meter has one pool, sized by METER_DB_POOL_SIZE")
        if "METER_WEBHOOK_BODY_TIMEOUT_SECONDS" in env:
            raise ConfigError(
                "METER_WEBHOOK_BODY_TIMEOUT_SECONDS was renamed METER_BODY_TIMEOUT_SECONDS: it bounds the body on both "
                "HTTP listeners (webhooks and HTTP/JSON)"
            )
        given: dict[str, Any] = {name: env[variable] for name, variable in VARIABLES.items() if env.get(variable)}
        try:
            settings = cls(**given)
        except ValidationError as invalid:
            raise ConfigError("; ".join(_problem(error, given) for error in invalid.errors())) from None
        settings.check()
        return settings

    def check(self) -> None:
        """Combinations that cannot work, refused before anything starts."""
        if self.default_ttl_seconds > self.max_ttl_seconds:
            raise ConfigError("METER_DEFAULT_TTL_SECONDS must not exceed METER_MAX_TTL_SECONDS")
        if self.callers_file and self.callers_toml:
            raise ConfigError("set METER_CALLERS_FILE or METER_CALLERS, not both")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("METER_TLS_CERT_FILE and METER_TLS_KEY_FILE go together")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ConfigError("METER_TLS_CLIENT_CA_FILE (mutual TLS) needs METER_TLS_CERT_FILE and METER_TLS_KEY_FILE")
        if bool(self.tls_client_cert_file) != bool(self.tls_client_key_file):
            raise ConfigError("METER_TLS_CLIENT_CERT_FILE and METER_TLS_CLIENT_KEY_FILE go together")
        if self.delivery_endpoint_concurrency > self.delivery_concurrency:
            raise ConfigError("METER_DELIVERY_ENDPOINT_CONCURRENCY must not exceed METER_DELIVERY_CONCURRENCY")
        if self.checkout_sessions_per_hour < self.checkout_open_sessions:
            raise ConfigError("METER_CHECKOUT_SESSIONS_PER_HOUR must be at least METER_CHECKOUT_OPEN_SESSIONS")
        if self.stripe_api_base and not self.stripe_api_base.startswith(("http://", "https://")):
            raise ConfigError("METER_STRIPE_API_BASE must be an http(s) address")
        if self.database_url and (problem := _database_url_problem(self.database_url)):
            raise ConfigError(f"METER_DATABASE_URL: {problem}; write it postgresql://user:password@host:5432/dbname")


def _database_url_problem(url: str) -> str:
    """What is wrong with a database URL, read as SQLAlchemy will (scheme://...), or ""."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return f"{url.split('@')[-1]!r} is not a URL"  # no password shown
    if scheme not in DATABASE_URL_SCHEMES:
        return f"the scheme {scheme!r} is not PostgreSQL's"
    if not rest.rpartition("@")[2].strip("/"):
        return "it names no host or database"
    return ""


def _variable(name: str, extra: Any) -> str:
    named = extra.get("env") if isinstance(extra, dict) else ""
    return named or f"METER_{name.upper()}"


# Each setting's variable, by field name.
VARIABLES: dict[str, str] = {
    field.name: _variable(field.name, field.default.json_schema_extra)  # type: ignore[union-attr]
    for field in fields(Settings)
}


def _problem(error: Any, given: Mapping[str, str]) -> str:
    """One validation error, as the operator wrote it: the variable, its value, what is wrong."""
    name = str(error["loc"][0]) if error["loc"] else ""
    variable = VARIABLES.get(name, name)
    return f"{variable}={given.get(name, '')!r}: {error['msg']}"
