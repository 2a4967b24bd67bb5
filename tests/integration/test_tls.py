"""TLS and mutual TLS with certificates made here (the `cryptography` package): handshakes that
must succeed do, and those that must fail (wrong CA, plaintext, no or a foreign client
certificate) fail before any call runs."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from conftest import StartMeter
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from stripe_events import deliver, paid_checkout

from meter.client import MeterClient
from meter.v1 import meter_pb2 as pb
from meter.v1 import meter_pb2_grpc
from support import RunningMeter, new_id, run_cli


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    path: Path

    @classmethod
    def create(cls, folder: Path, name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            _builder(subject, subject, key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256())
        )
        path = folder / f"{name}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(name, key, cert, path)

    def issue(self, folder: Path, name: str, *, server: bool) -> Pair:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = _builder(subject, self.cert.subject, key).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        pair = Pair(folder / f"{name}.crt", folder / f"{name}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pair.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return pair


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


@dataclass(frozen=True)
class Certificates:
    ca: Authority
    rogue: Authority
    server: Pair
    client: Pair
    rogue_client: Pair


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    folder = tmp_path_factory.mktemp("tls")
    ca = Authority.create(folder, "meter-test-ca")
    rogue = Authority.create(folder, "rogue-ca")
    return Certificates(
        ca,
        rogue,
        ca.issue(folder, "meter-server", server=True),
        ca.issue(folder, "proxy-client", server=False),
        rogue.issue(folder, "rogue-client", server=False),
    )


def credentials(ca: Authority, client: Pair | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.cert.public_bytes(serialization.Encoding.PEM),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None,
    )


async def catalog_over(channel: grpc.aio.Channel) -> pb.GetCatalogResponse:
    return await meter_pb2_grpc.MeterServiceStub(channel).GetCatalog(pb.GetCatalogRequest(), timeout=5)


async def refused_handshake(channel: grpc.aio.Channel) -> None:
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await catalog_over(channel)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value


async def tls_meter(meters: StartMeter, certs: Certificates, *, mutual: bool) -> RunningMeter:
    return await meters(
        tls_cert_file=certs.server.cert,
        tls_key_file=certs.server.key,
        tls_client_ca_file=certs.ca.path if mutual else None,
    )


async def test_tls_handshakes(meters: StartMeter, certificates: Certificates) -> None:
    meter = await tls_meter(meters, certificates, mutual=False)
    async with grpc.aio.secure_channel(meter.address, credentials(certificates.ca)) as channel:
        assert (await catalog_over(channel)).version
    # A client that trusts another CA, and a plaintext client, never get a call through.
    await refused_handshake(grpc.aio.secure_channel(meter.address, credentials(certificates.rogue)))
    await refused_handshake(grpc.aio.insecure_channel(meter.address))


async def test_mutual_tls_handshakes(meters: StartMeter, certificates: Certificates) -> None:
    meter = await tls_meter(meters, certificates, mutual=True)
    certs = certificates
    async with grpc.aio.secure_channel(meter.address, credentials(certs.ca, certs.client)) as channel:
        assert (await catalog_over(channel)).version
    await refused_handshake(grpc.aio.secure_channel(meter.address, credentials(certs.ca)))  # no client cert
    await refused_handshake(grpc.aio.secure_channel(meter.address, credentials(certs.ca, certs.rogue_client)))
    await refused_handshake(grpc.aio.insecure_channel(meter.address))


async def test_clients_and_the_webhook_adapter_work_under_mutual_tls(
    meters: StartMeter, certificates: Certificates
) -> None:
    certs = certificates
    meter = await tls_meter(meters, certs, mutual=True)
    account = new_id()
    async with MeterClient(meter.address, credentials=credentials(certs.ca, certs.client)) as client:
        await client.set_plan(account_id=account, plan_id="free")
    # The in-process adapter reaches meter through its private socket: no client certificate.
    status, body = await deliver(meter.webhook_url, paid_checkout(account))
    assert (status, body["status"]) == (200, "applied")

    env = {
        "METER_TLS_CA_FILE": str(certs.ca.path),
        "METER_TLS_CLIENT_CERT_FILE": str(certs.client.cert),
        "METER_TLS_CLIENT_KEY_FILE": str(certs.client.key),
    }
    code, out, err = await run_cli("account", "show", account, "--target", meter.address, env=env)
    assert code == 0, err
    assert "purchased  1,000 left" in out
    only_ca = {"METER_TLS_CA_FILE": str(certs.ca.path)}  # no client certificate
    code, out, err = await run_cli("account", "show", account, "--target", meter.address, env=only_ca)
    assert code == 1 and "UNAVAILABLE" in err
    assert "METER_TLS_CLIENT_CERT_FILE" in err, err  # the error names its fix
    code, out, err = await run_cli("account", "show", account, "--target", meter.address)  # plaintext
    assert code == 1 and "if meter serves TLS there, set METER_TLS_CA_FILE" in err, err
