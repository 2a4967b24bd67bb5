"""What to do about a failed call, for the commands that call a running meter: an error a person
reads names the setting or the step that fixes it, not only the status gRPC gave."""

from __future__ import annotations

import grpc

from meter.client import MeterRpcError

# Refusals by their ErrorInfo reason.
_BY_REASON = {
    "MISSING_CREDENTIALS": "meter takes calls from its configured callers only: set METER_TOKEN to a caller's token "
    "(the server's METER_CALLERS_FILE lists them; `meter callers` makes a new one)",
    "INVALID_TOKEN": "METER_TOKEN is not the token of one of the server's callers (METER_CALLERS_FILE)",
    "METHOD_NOT_ALLOWED": "the caller METER_TOKEN names may not call this method: allow it in the server's "
    "METER_CALLERS_FILE, or use an operator's token",
}
# What the transport says when nothing answered, or when TLS and plaintext met.
_REFUSED = ("Connection refused", "Name or service not known", "DNS resolution failed")
_HANDSHAKE = ("Socket closed", "handshake", "Connection reset", "SSL", "ssl")


def fix_for(error: MeterRpcError, target: str, tls: bool) -> str:
    """One line naming the fix, or "" when the error says it already (a refusal of the request)."""
    if error.reason in _BY_REASON:
        return _BY_REASON[error.reason]
    if error.code is not grpc.StatusCode.UNAVAILABLE or error.reason:
        return ""
    if any(text in error.message for text in _HANDSHAKE):
        if tls:
            return (
                f"the TLS handshake with {target} failed: check METER_TLS_CA_FILE (the CA that signed meter's "
                "certificate) and, if meter asks for client certificates, METER_TLS_CLIENT_CERT_FILE and "
                "METER_TLS_CLIENT_KEY_FILE"
            )
        return (
            f"{target} closed the connection: if meter serves TLS there, set METER_TLS_CA_FILE to the CA that "
            "signed its certificate"
        )
    if any(text in error.message for text in _REFUSED):
        return f"nothing answers at {target}: is meter running? --target HOST:PORT or METER_GRPC_ADDR names it"
    return ""
