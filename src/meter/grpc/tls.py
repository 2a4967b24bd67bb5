"""TLS and mutual TLS from the METER_TLS_* files, for the server and for meter's own clients
(the CLI and the standalone webhook adapter)."""

from __future__ import annotations

from pathlib import Path

import grpc

from meter.config import ConfigError, Settings


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """None without a certificate (plaintext). With METER_TLS_CLIENT_CA_FILE, every client must
    present a certificate that CA signed, or the handshake fails."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    chain = _read("METER_TLS_CERT_FILE", settings.tls_cert_file)
    key = _read("METER_TLS_KEY_FILE", settings.tls_key_file)
    client_ca = _read("METER_TLS_CLIENT_CA_FILE", settings.tls_client_ca_file) if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca, require_client_auth=bool(client_ca))


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """None unless a client TLS variable is set. Without METER_TLS_CA_FILE the system's roots
    verify meter's certificate."""
    if not (settings.tls_ca_file or settings.tls_client_cert_file):
        return None
    ca = _read("METER_TLS_CA_FILE", settings.tls_ca_file) if settings.tls_ca_file else None
    key = chain = None
    if settings.tls_client_cert_file and settings.tls_client_key_file:
        chain = _read("METER_TLS_CLIENT_CERT_FILE", settings.tls_client_cert_file)
        key = _read("METER_TLS_CLIENT_KEY_FILE", settings.tls_client_key_file)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain)


def _read(variable: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{variable}: cannot read {path}: {error.strerror}") from None
