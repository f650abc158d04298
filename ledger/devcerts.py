"""A private CA and node certificates for a devnet or a rehearsal, made with the ``openssl``
command (no Python dependency): what ``ledger devnet init --tls`` writes, and the same steps
docs/operators.md shows for an institution's own CA.

Keys are ECDSA P-256, written 0600. A node certificate names its hosts as subject alternative
names (``IP:`` for addresses, ``DNS:`` for names) and may serve and authenticate as a client
(``extendedKeyUsage = serverAuth, clientAuth``): a node presents the same certificate to its
peers.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from ledger.errors import ConfigError

__all__ = ["CA_DAYS", "NODE_DAYS", "make_ca", "make_node_certificate"]

CA_DAYS: Final = 3650
#: 825 days: the longest validity clients such as browsers accept for a server certificate.
NODE_DAYS: Final = 825


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise ConfigError("the openssl command is needed to make certificates; install OpenSSL")
    result = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise ConfigError(f"openssl {args[0]} failed: {lines[-1] if lines else 'no output'}")


def _key_args(key: Path) -> list[str]:
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            str(key)]


def make_ca(directory: Path, *, name: str = "ledger devnet CA",
            days: int = CA_DAYS) -> tuple[Path, Path]:
    """A self-signed CA in ``directory``: ``ca.crt`` and ``ca.key`` (0600).

    Raises:
        ConfigError: openssl is missing or fails.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "ca.crt", directory / "ca.key"
    old = os.umask(0o077)
    try:
        _openssl("req", "-x509", *_key_args(key), "-out", str(cert), "-days", str(days),
                 "-subj", f"/CN={name}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 "-addext", "subjectKeyIdentifier=hash")
    finally:
        os.umask(old)
    cert.chmod(0o644)
    return cert, key


def _san(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"DNS:{host}"
    return f"IP:{host}"


def make_node_certificate(directory: Path, name: str, hosts: Sequence[str], *,
                          ca_cert: Path, ca_key: Path, days: int = NODE_DAYS
                          ) -> tuple[Path, Path]:
    """``NAME.crt`` and ``NAME.key`` (0600) in ``directory``, signed by the CA, valid for
    ``hosts`` (addresses or DNS names), usable as server and as client certificate.

    Raises:
        ConfigError: no hosts, or openssl is missing or fails.
    """
    if not hosts:
        raise ConfigError("a node certificate needs at least one host name or address")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    old = os.umask(0o077)
    try:
        with tempfile.TemporaryDirectory() as work:
            csr, ext = Path(work) / "node.csr", Path(work) / "node.ext"
            ext.write_text(
                "basicConstraints = CA:FALSE\n"
                "keyUsage = critical, digitalSignature, keyEncipherment\n"
                "extendedKeyUsage = serverAuth, clientAuth\n"
                f"subjectAltName = {', '.join(_san(h) for h in hosts)}\n"
                "subjectKeyIdentifier = hash\n"
                "authorityKeyIdentifier = keyid, issuer\n", encoding="ascii")
            _openssl("req", "-new", *_key_args(key), "-out", str(csr), "-subj", f"/CN={name}")
            _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey",
                     str(ca_key), "-set_serial", str(int.from_bytes(os.urandom(8), "big")),
                     "-days", str(days), "-extfile", str(ext), "-out", str(cert))
    finally:
        os.umask(old)
    cert.chmod(0o644)
    return cert, key
