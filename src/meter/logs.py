"""Logging for `meter serve` and `meter webhooks`: one JSON object per line on stderr (what log
shippers read), or plain text for a human at a terminal (METER_LOG_FORMAT=text).

Every RPC logs one line on `meter.rpc` and every webhook one on `meter.webhooks`, with their
fields as top-level keys (rpc or event, caller, account, code or status, reason, latency_ms,
request_id); see `meter.grpc.handling` and `meter.webhooks.app`.
"""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def json_formatter() -> logging.Formatter:
    """{"level", "logger", "message", "time" (ISO 8601, UTC), and the record's extra fields}."""
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
    )


def configure(level: str, format: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(json_formatter() if format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
