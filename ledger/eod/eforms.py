"""Incoming e-forms signed with XAdES (ePUAP, qualified signatures, the trusted profile).

An electronic submission arrives as signed XML. Registering it (``ledger eod register FILE
--eform``, or the service's ``register`` step with ``eform``) verifies the XAdES signature with
signxml (on lxml) against the office's configured trust anchors (``ledger eod eform-anchors
FILE``: the PEM certificates of the CAs it accepts, e.g. the national trusted-profile CA and
the qualified trust service providers) and records the outcome in the registration event's
``data.eform``::

    {"valid": true, "signer": "CN=Jan Kowalski,...", "certificate": "<SHA-256 of its DER>",
     "reason": "signature and certificate chain verified"}

An invalid signature does not stop the registration (the office received the submission
either way; the register must say so): ``valid`` is false and ``reason`` says why (the
signed content was changed, the certificate is not from a trusted CA, it was not valid at
signing, no signature at all, not XML). The registered document's digest is that of the XML
file as received, byte for byte. The outcome is the office's verification at the time of
registration: it is signed and anchored with the event, so an auditor sees what the office
saw; re-verifying the form later is the auditor's own business.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Final

from ledger.errors import ConfigError

__all__ = ["MAX_EFORM", "EformOutcome", "check_anchors", "verify_eform"]

MAX_EFORM: Final = 16 * 1024 * 1024
_DS: Final = "{http://www.w3.org/2000/09/xmldsig#}"


@dataclass(frozen=True, kw_only=True)
class EformOutcome:
    valid: bool
    signer: str | None
    certificate: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"valid": self.valid, "signer": self.signer, "certificate": self.certificate,
                "reason": self.reason}


def check_anchors(pem: str) -> int:
    """The number of certificates in the PEM text of trust anchors.

    Raises:
        ConfigError: no certificate in it, or one that does not parse.
    """
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ConfigError(f"the trust anchors are not PEM certificates: {exc}") from None
    if not certs:
        raise ConfigError("the trust anchors hold no certificate")
    return len(certs)


def _signer(signature_xml: Any, key_der: bytes) -> tuple[str | None, str | None]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    for element in signature_xml.iter(f"{_DS}X509Certificate"):
        try:
            import base64

            der = base64.b64decode("".join((element.text or "").split()))
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            continue
        public = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if public == key_der or not key_der:
            return cert.subject.rfc4514_string(), hashlib.sha256(der).hexdigest()
    return None, None


def verify_eform(data: bytes, anchors_pem: str | None) -> EformOutcome:
    """Verify the XAdES signature of ``data`` against ``anchors_pem`` (see the module
    docstring). Never raises for a bad form: the outcome says what is wrong.

    Raises:
        ConfigError: the office has no trust anchors configured.
    """
    if not anchors_pem:
        raise ConfigError("no e-form trust anchors configured: 'ledger eod eform-anchors FILE'")
    if len(data) > MAX_EFORM:
        return EformOutcome(valid=False, signer=None, certificate=None,
                            reason=f"the e-form is larger than {MAX_EFORM} bytes")
    from lxml import etree
    from signxml import exceptions
    from signxml.xades.xades import XAdESVerifier

    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        etree.fromstring(data, parser=parser)
    except etree.XMLSyntaxError as exc:
        return EformOutcome(valid=False, signer=None, certificate=None,
                            reason=f"not XML: {exc}"[:300])
    with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as handle:
        handle.write(anchors_pem)
        anchors = handle.name
    try:
        results = XAdESVerifier().verify(data, ca_pem_file=anchors, expect_references=3)
    except exceptions.InvalidCertificate as exc:
        return EformOutcome(valid=False, signer=None, certificate=None,
                            reason=f"the certificate is not trusted: {exc}"[:300])
    except exceptions.InvalidDigest as exc:
        return EformOutcome(valid=False, signer=None, certificate=None,
                            reason=f"the signed content was changed: {exc}"[:300])
    except (exceptions.SignXMLException, ValueError, etree.LxmlError) as exc:
        return EformOutcome(valid=False, signer=None, certificate=None,
                            reason=f"the signature does not verify: {exc}"[:300])
    finally:
        os.unlink(anchors)
    first = results[0] if isinstance(results, list) else results
    signer, fingerprint = _signer(first.signature_xml, _key_der(first.signature_key))
    return EformOutcome(valid=True, signer=signer, certificate=fingerprint,
                        reason="XAdES signature and certificate chain verified")


def _key_der(key: Any) -> bytes:
    if isinstance(key, bytes):
        try:
            from cryptography.hazmat.primitives import serialization

            public = serialization.load_pem_public_key(key)
            return public.public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)
        except ValueError:
            return b""
    return b""
