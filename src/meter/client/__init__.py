"""`meter.client`: the typed async client for Python callers (a proxy in front of the model), with
its write-ahead spool of settling calls (`spool`) and its fail-open budget (`fail_open`).

    from meter.client import MeterClient, MeterRpcError

The client itself is `meter_client`; what a proxy imports is re-exported here, so that it does
not depend on how the package is split.
"""

from meter.client.fail_open import FailOpen, FailOpenBudget
from meter.client.meter_client import (
    SERVICE_CONFIG,
    Hold,
    MeterClient,
    MeterRpcError,
    NotSpooled,
    PendingReservation,
    Spooled,
    event_status,
)
from meter.client.spool import CommitSpool, SpoolUnwritable

__all__ = [
    "SERVICE_CONFIG",
    "CommitSpool",
    "FailOpen",
    "FailOpenBudget",
    "Hold",
    "MeterClient",
    "MeterRpcError",
    "NotSpooled",
    "PendingReservation",
    "SpoolUnwritable",
    "Spooled",
    "event_status",
]
