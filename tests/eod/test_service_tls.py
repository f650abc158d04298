"""Client certificates as credentials: over TLS, a certificate's SHA-256 maps to an office's
client; an unknown certificate or none gets 401, and the office's name is no way around it."""

from __future__ import annotations

import datetime
import hashlib
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from eod.service_harness import running_service
from ledger.eod.service import Client, ServiceConfig

NOW = datetime.datetime.now(datetime.UTC)


def _cert(subject: str, key: Any, issuer: x509.Name, issuer_key: Any, *, ca: bool,
          usage: list[Any] | None = None, dns: str | None = None) -> x509.Certificate:
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW - datetime.timedelta(days=1))
               .not_valid_after(NOW + datetime.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if dns:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address(dns))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: Any | None = None) -> None:
    data = cert.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(data)
    if key is not None:
        path.with_suffix(".key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))


def test_a_client_certificate_maps_to_its_office(tmp_path: Path) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test service CA")])
    ca = _cert("Test service CA", ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert("eod service", server_key, ca_name, ca_key, ca=False,
                   usage=[ExtendedKeyUsageOID.SERVER_AUTH], dns="127.0.0.1")
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _cert("ezd backend", client_key, ca_name, ca_key, ca=False,
                   usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _cert("someone else", other_key, ca_name, ca_key, ca=False,
                  usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    pki = tmp_path / "pki"
    pki.mkdir()
    _write(pki / "ca.pem", ca)
    _write(pki / "server.pem", server, server_key)
    _write(pki / "client.pem", client, client_key)
    _write(pki / "other.pem", other, other_key)
    fingerprint = hashlib.sha256(client.public_bytes(serialization.Encoding.DER)).digest()

    def tweak(config: ServiceConfig) -> None:
        config.tls_cert, config.tls_key = pki / "server.pem", pki / "server.key"
        config.client_ca = pki / "ca.pem"
        config.offices[1].clients.append(Client(name="sp7-cert", office="sp7",
                                                positions=frozenset({"*"}),
                                                cert_sha256=fingerprint))

    def get(url: str, cert: str | None) -> tuple[int, Any]:
        context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        if cert is not None:
            context.load_cert_chain(pki / f"{cert}.pem", pki / f"{cert}.key")
        try:
            with urllib.request.urlopen(url, context=context, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    with running_service(tmp_path / "svc", tweak=tweak) as svc:
        assert svc.url.startswith("https://")
        assert get(svc.url + "/v1/offices/sp7/cases", "client") == (
            200, {"cases": [], "offset": 0, "limit": 100})
        assert get(svc.url + "/v1/offices/cuw/cases", "client")[0] == 404
        assert get(svc.url + "/v1/offices/sp7/cases", "other")[0] == 401
        assert get(svc.url + "/v1/offices/sp7/cases", None)[0] == 401
