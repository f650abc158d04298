"""TLS contexts of a node: the server side of its listeners and the client side of its peer links.

Validators of different institutions talk over the public network. With ``[tls]`` in the node
config (:class:`ledger.config.TlsSettings`):

* every listener serves HTTPS with the node's certificate and key;
* the node connects to each peer over https, verifying the peer's certificate against
  ``ca_file`` (or the system's trust store) and the host name of the peer's URL, and, when the
  peer is pinned, that the SHA-256 of the certificate's DER is one of its pins;
* it presents the same certificate as a client certificate, and a listener that serves
  ``/peer/`` asks for one: on a shared port it is optional at the TLS level (public clients have
  none; a certificate that is presented must verify) and ``/peer/`` refuses a connection
  without one (403); on a separate peer listener it is required at the handshake.

Envelopes between validators are signed end to end by their consensus keys whatever the
transport, so TLS adds confidentiality of metadata, and keeps out of the peer routes anyone who
holds no certificate of the institutions' CA.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterable
from pathlib import Path

from ledger.config import TlsSettings
from ledger.errors import ConfigError

__all__ = ["PinMismatchError", "certificate_fingerprint", "client_context", "server_context"]


class PinMismatchError(ssl.SSLCertVerificationError):
    """A peer's certificate verified, but its fingerprint is not one of the peer's pins."""


def certificate_fingerprint(path: str | Path) -> str:
    """The SHA-256 (lowercase hex) of the DER of the first certificate in PEM file ``path``
    (what ``[tls.pins]`` holds; ``openssl x509 -noout -fingerprint -sha256`` shows the same).

    Raises:
        ConfigError: the file is unreadable or holds no PEM certificate.
    """
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read certificate {path}: {exc}") from None
    start = text.find("-----BEGIN CERTIFICATE-----")
    end = text.find("-----END CERTIFICATE-----", start)
    if start < 0 or end < 0:
        raise ConfigError(f"{path} holds no PEM certificate")
    try:
        der = ssl.PEM_cert_to_DER_cert(text[start:end + len("-----END CERTIFICATE-----")])
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return hashlib.sha256(der).hexdigest()


def _load_chain(context: ssl.SSLContext, tls: TlsSettings) -> None:
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls: cannot load certificate {tls.cert_file} with key "
                          f"{tls.key_file}: {getattr(exc, 'reason', None) or exc}") from None


def _load_ca(context: ssl.SSLContext, tls: TlsSettings, purpose: ssl.Purpose) -> None:
    if tls.ca_file is None:
        context.load_default_certs(purpose)
        return
    try:
        context.load_verify_locations(cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls: cannot load CA bundle {tls.ca_file}: "
                          f"{getattr(exc, 'reason', None) or exc}") from None


def server_context(tls: TlsSettings, *, peers: bool, public: bool) -> ssl.SSLContext:
    """The server context of a listener that serves peer routes (``peers``) and/or the public
    API (``public``): client certificates required (peers only), optional (both) or not asked.

    Raises:
        ConfigError: the certificate, key or CA bundle cannot be loaded.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, tls)
    if peers and tls.require_peer_certificate:
        _load_ca(context, tls, ssl.Purpose.CLIENT_AUTH)
        context.verify_mode = ssl.CERT_OPTIONAL if public else ssl.CERT_REQUIRED
    return context


def client_context(tls: TlsSettings | None, *, pins: Iterable[str] = ()) -> ssl.SSLContext:
    """The context of one peer link: verify the peer's certificate and host name against the
    CA bundle, check its pins (lowercase hex SHA-256 of the DER) if any, and present the node's
    own certificate.

    Raises:
        ConfigError: the certificate, key or CA bundle cannot be loaded.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        return context
    _load_ca(context, tls, ssl.Purpose.SERVER_AUTH)
    _load_chain(context, tls)
    wanted = frozenset(bytes.fromhex(p) for p in pins)
    if wanted:
        context.sslobject_class = _pinned(wanted)
    return context


def _pinned(pins: frozenset[bytes]) -> type[ssl.SSLObject]:
    """An ``SSLObject`` whose handshake also checks the peer's fingerprint, so a pin mismatch
    fails the handshake itself: nothing is sent to a peer that does not match."""

    class PinnedSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            der = self.getpeercert(binary_form=True)
            if der is None or hashlib.sha256(der).digest() not in pins:
                found = "none" if der is None else hashlib.sha256(der).hexdigest()
                error = PinMismatchError(
                    1, f"certificate fingerprint {found} is not one of the pinned ones")
                error.verify_message = (
                    f"certificate fingerprint sha256 {found} does not match the pins")
                error.reason = "PIN_MISMATCH"
                raise error

    return PinnedSSLObject
