"""Settings from METER_* environment variables, read in one place and validated at start.

| variable | default | meaning |
|---|---|---|
| METER_DATABASE_URL | (none: embedded PostgreSQL) | postgresql://user:pass@host:port/db |
| METER_DATA_DIR | ./.meter | embedded PostgreSQL and local state |
| METER_GRPC_ADDR | 127.0.0.1:50051 | gRPC listen address |
| METER_HTTP_ADDR | 127.0.0.1:8080 | webhooks and metrics listen address |
| METER_STRIPE_WEBHOOK_SECRET | (none) | comma-separated during rotation |
| METER_BUCKETS | 16 | bucket rows per pool for new accounts (1 = one row per pool) |
| METER_CATALOG | (the packaged catalog.toml) | catalog file |
| METER_DEFAULT_TTL_SECONDS | 600 | hold lifetime when Reserve gives none |
| METER_MAX_TTL_SECONDS | 3600 | longest hold lifetime a call may ask for |
| METER_MAX_CREDIT_TOKENS | 1000000000 | largest single purchase or adjustment |
| METER_SWEEP_INTERVAL_SECONDS | 1 | how often expired holds and ended periods are swept |
| METER_DB_POOL_SIZE | 20 | database connections per process (the one pool) |
| METER_STATEMENT_TIMEOUT_MS | 5000 | per-statement limit |
| METER_LOCK_TIMEOUT_MS | 3000 | longest wait for a row lock |
| METER_RESERVE_WAIT_MS | 200 | longest wait of a Reserve for a locked row that has its tokens (0: none) |
| METER_COALESCE | 1 | 0: a statement per Reserve and Commit; n: n of each in flight, later calls go together |
| METER_IDLE_IN_TRANSACTION_TIMEOUT_MS | 10000 | a stuck transaction is ended after this |
| METER_SHUTDOWN_GRACE_SECONDS | 10 | in-flight RPCs get this long to finish on SIGTERM |
| METER_WEBHOOK_RPC_TIMEOUT_SECONDS | 5 | how long the webhook adapter waits for meter before answering 503 |
| METER_WEBHOOK_BODY_TIMEOUT_SECONDS | 10 | how long a webhook's body may take to arrive before it is answered 408 |
| METER_LOG_LEVEL | INFO | logging level |
| METER_LOG_FORMAT | json | json (one JSON object per line) or text |
| METER_RPC_LOG | all | all: a log line per RPC; failures: only for calls that did not end OK |
| METER_CALLERS_FILE | (none) | TOML file of callers: name, role or methods, token_sha256 |
| METER_CALLERS | (none) | the same TOML, in the variable itself |
| METER_WEBHOOK_TOKEN | (none) | the bearer token the webhook adapter presents (a billing caller's) |
| METER_TOKEN | (none) | the bearer token the CLI's client commands present |
| METER_TLS_CERT_FILE | (none) | server certificate chain (PEM); with the key, gRPC listens with TLS |
| METER_TLS_KEY_FILE | (none) | server private key (PEM) |
| METER_TLS_CLIENT_CA_FILE | (none) | CA (PEM) of client certificates: set, clients must present one (mTLS) |
| METER_TLS_CA_FILE | (none) | clients (CLI, webhook adapter alone): CA (PEM) to verify meter; set: TLS |
| METER_TLS_CLIENT_CERT_FILE | (none) | clients: certificate to present for mutual TLS |
| METER_TLS_CLIENT_KEY_FILE | (none) | clients: its private key |
| METER_CALLER_RATE_SYNC_MS | 100 | how often replicas share their per-caller counts |
| METER_DELIVERY_RETRY_SECONDS | 5,300,1800,7200,18000,36000,36000 | waits between a webhook's attempts, then dead |
| METER_DELIVERY_TIMEOUT_SECONDS | 10 | how long an endpoint has to answer a webhook |
| METER_DELIVERY_POLL_SECONDS | 1 | how often each replica looks for webhooks to send |
| METER_MIGRATE_ON_START | true | `meter serve` migrates the database; false: it waits for `meter migrate` |
| METER_STRIPE_API_KEY | (none) | Stripe secret key (sk_...) CreateCheckoutSession opens sessions with |
| METER_STRIPE_API_BASE | (Stripe's) | another Stripe API address (an emulator, in tests) |
| METER_CHECKOUT_OPEN_SESSIONS | 5 | Checkout Sessions an account may have open (unpaid, unexpired) at once |
| METER_CHECKOUT_SESSIONS_PER_HOUR | 20 | Checkout Sessions an account may open in any hour |
| METER_CHECKOUT_SESSION_MINUTES | 30 | how long a Checkout Session takes payment (Stripe allows 30 to 1440) |
| METER_WEBHOOK_PAYLOAD_RETENTION_DAYS | 30 | days a Stripe payload is kept after its event last changed (0: forever) |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from meter.domain.webhook_deliveries import DEFAULT_RETRY_SECONDS


class ConfigError(ValueError):
    """A METER_* variable is malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    data_dir: Path = Path(".meter")
    grpc_addr: str = "127.0.0.1:50051"
    http_addr: str = "127.0.0.1:8080"
    stripe_webhook_secrets: tuple[str, ...] = ()
    buckets: int = 16
    catalog_path: Path | None = None
    default_ttl_seconds: int = 600
    max_ttl_seconds: int = 3600
    max_credit_tokens: int = 1_000_000_000
    sweep_interval_seconds: float = 1.0
    db_pool_size: int = 20
    statement_timeout_ms: int = 5_000
    lock_timeout_ms: int = 3_000
    reserve_wait_ms: int = 200
    coalesce: int = 1
    idle_in_transaction_timeout_ms: int = 10_000
    shutdown_grace_seconds: float = 10.0
    webhook_rpc_timeout_seconds: float = 5.0
    webhook_body_timeout_seconds: float = 10.0
    log_level: str = "INFO"
    log_format: str = "json"
    rpc_log: str = "all"
    callers_file: Path | None = None
    callers_toml: str | None = None
    webhook_token: str | None = None
    token: str | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    tls_ca_file: Path | None = None
    tls_client_cert_file: Path | None = None
    tls_client_key_file: Path | None = None
    migrate_on_start: bool = True
    caller_rate_sync_seconds: float = 0.1
    delivery_retry_seconds: tuple[float, ...] = DEFAULT_RETRY_SECONDS
    delivery_timeout_seconds: float = 10.0
    delivery_poll_seconds: float = 1.0
    stripe_api_key: str | None = None
    stripe_api_base: str | None = None
    checkout_open_sessions: int = 5
    checkout_sessions_per_hour: int = 20
    checkout_session_minutes: int = 30
    webhook_payload_retention_days: int = 30

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        if "METER_DB_FAST_POOL_SIZE" in env:
            # Refused rather than ignored: an operator who sized two pools should size the one.
            raise ConfigError("METER_DB_FAST_POOL_SIZE was removed: meter has one pool, sized by METER_DB_POOL_SIZE")
        settings = cls(
            database_url=env.get("METER_DATABASE_URL") or None,
            data_dir=Path(env.get("METER_DATA_DIR") or ".meter"),
            grpc_addr=env.get("METER_GRPC_ADDR") or "127.0.0.1:50051",
            http_addr=env.get("METER_HTTP_ADDR") or "127.0.0.1:8080",
            stripe_webhook_secrets=tuple(
                s.strip() for s in (env.get("METER_STRIPE_WEBHOOK_SECRET") or "").split(",") if s.strip()
            ),
            buckets=_int(env, "METER_BUCKETS", 16, 1, 1024),
            catalog_path=Path(env["METER_CATALOG"]) if env.get("METER_CATALOG") else None,
            default_ttl_seconds=_int(env, "METER_DEFAULT_TTL_SECONDS", 600, 1, 86_400),
            max_ttl_seconds=_int(env, "METER_MAX_TTL_SECONDS", 3600, 1, 86_400),
            max_credit_tokens=_int(env, "METER_MAX_CREDIT_TOKENS", 1_000_000_000, 1, 2**62),
            sweep_interval_seconds=_float(env, "METER_SWEEP_INTERVAL_SECONDS", 1.0, 0.01, 3600),
            db_pool_size=_int(env, "METER_DB_POOL_SIZE", 20, 1, 1000),
            statement_timeout_ms=_int(env, "METER_STATEMENT_TIMEOUT_MS", 5_000, 1, 3_600_000),
            lock_timeout_ms=_int(env, "METER_LOCK_TIMEOUT_MS", 3_000, 1, 3_600_000),
            reserve_wait_ms=_int(env, "METER_RESERVE_WAIT_MS", 200, 0, 60_000),
            coalesce=_int(env, "METER_COALESCE", 1, 0, 1000),
            idle_in_transaction_timeout_ms=_int(env, "METER_IDLE_IN_TRANSACTION_TIMEOUT_MS", 10_000, 1, 3_600_000),
            shutdown_grace_seconds=_float(env, "METER_SHUTDOWN_GRACE_SECONDS", 10.0, 0, 3600),
            webhook_rpc_timeout_seconds=_float(env, "METER_WEBHOOK_RPC_TIMEOUT_SECONDS", 5.0, 0.1, 60),
            webhook_body_timeout_seconds=_float(env, "METER_WEBHOOK_BODY_TIMEOUT_SECONDS", 10.0, 0.1, 300),
            log_level=(env.get("METER_LOG_LEVEL") or "INFO").upper(),
            log_format=_choice(env, "METER_LOG_FORMAT", "json", ("json", "text")),
            rpc_log=_choice(env, "METER_RPC_LOG", "all", ("all", "failures")),
            callers_file=_path(env, "METER_CALLERS_FILE"),
            callers_toml=env.get("METER_CALLERS") or None,
            webhook_token=env.get("METER_WEBHOOK_TOKEN") or None,
            token=env.get("METER_TOKEN") or None,
            tls_cert_file=_path(env, "METER_TLS_CERT_FILE"),
            tls_key_file=_path(env, "METER_TLS_KEY_FILE"),
            tls_client_ca_file=_path(env, "METER_TLS_CLIENT_CA_FILE"),
            tls_ca_file=_path(env, "METER_TLS_CA_FILE"),
            tls_client_cert_file=_path(env, "METER_TLS_CLIENT_CERT_FILE"),
            tls_client_key_file=_path(env, "METER_TLS_CLIENT_KEY_FILE"),
            caller_rate_sync_seconds=_int(env, "METER_CALLER_RATE_SYNC_MS", 100, 10, 60_000) / 1000,
            delivery_retry_seconds=_waits(env, "METER_DELIVERY_RETRY_SECONDS", DEFAULT_RETRY_SECONDS),
            delivery_timeout_seconds=_float(env, "METER_DELIVERY_TIMEOUT_SECONDS", 10.0, 0.1, 300),
            delivery_poll_seconds=_float(env, "METER_DELIVERY_POLL_SECONDS", 1.0, 0.01, 60),
            migrate_on_start=_choice(env, "METER_MIGRATE_ON_START", "true", ("true", "false")) == "true",
            stripe_api_key=env.get("METER_STRIPE_API_KEY") or None,
            stripe_api_base=env.get("METER_STRIPE_API_BASE") or None,
            checkout_open_sessions=_int(env, "METER_CHECKOUT_OPEN_SESSIONS", 5, 1, 1000),
            checkout_sessions_per_hour=_int(env, "METER_CHECKOUT_SESSIONS_PER_HOUR", 20, 1, 10_000),
            checkout_session_minutes=_int(env, "METER_CHECKOUT_SESSION_MINUTES", 30, 30, 1440),
            webhook_payload_retention_days=_int(env, "METER_WEBHOOK_PAYLOAD_RETENTION_DAYS", 30, 0, 36_500),
        )
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
        if self.checkout_sessions_per_hour < self.checkout_open_sessions:
            raise ConfigError("METER_CHECKOUT_SESSIONS_PER_HOUR must be at least METER_CHECKOUT_OPEN_SESSIONS")
        if self.stripe_api_base and not self.stripe_api_base.startswith(("http://", "https://")):
            raise ConfigError("METER_STRIPE_API_BASE must be an http(s) address")


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    return Path(raw) if raw else None


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (env.get(name) or default).lower()
    if value not in choices:
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


def _waits(env: Mapping[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    raw = env.get(name)
    if not raw:
        return default
    try:
        waits = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a comma-separated list of seconds") from None
    if not all(0 <= wait <= 7 * 86_400 for wait in waits) or len(waits) > 50:
        raise ConfigError(f"{name}: at most 50 waits, each between 0 and 604800 seconds")
    return waits


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    return int(_number(env, name, default, low, high, whole=True))


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    return _number(env, name, default, low, high, whole=False)


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float, *, whole: bool) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a {'whole number' if whole else 'number'}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} must be between {low} and {high}")
    return value
