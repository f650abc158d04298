"""Incoming e-forms: XAdES signatures verified with signxml against the office's trust
anchors, the outcome recorded in the signed registration; a test CA made here, in the test."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml.xades.xades import XAdESSigner

from eod.casework import bundle_bytes, make_office
from eod.service_harness import running_service
from ledger.eod.rules import WorkflowError
from ledger.eod.trail import verify_trail
from ledger.errors import ConfigError

NOW = datetime.datetime.now(datetime.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=not ca,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=ca, crl_sign=ca, encipher_only=False,
                         decipher_only=False)


def make_ca(cn: str) -> tuple[Any, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_signer(ca_key: Any, ca: x509.Certificate, cn: str) -> tuple[Any, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(ca=False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


FORM = (b"<Wniosek xmlns='http://crd.gov.pl/wzor/2024/01/01/1/'><Tresc>Wniosek o wydanie "
        b"zaswiadczenia</Tresc></Wniosek>")


def signed_form(key: Any, cert: x509.Certificate, body: bytes = FORM) -> bytes:
    signed = XAdESSigner().sign(etree.fromstring(body), key=key, cert=[cert])
    result: bytes = etree.tostring(signed)
    return result


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def pki() -> dict[str, Any]:
    ca_key, ca = make_ca("Testowe Centrum Certyfikacji")
    key, cert = make_signer(ca_key, ca, "Jan Kowalski")
    rogue_key, rogue_ca = make_ca("Nieznane CA")
    rogue, rogue_cert = make_signer(rogue_key, rogue_ca, "Jan Kowalski")
    return {"ca": ca, "key": key, "cert": cert, "rogue": rogue, "rogue_cert": rogue_cert}


def test_a_signed_e_form_is_verified_and_the_outcome_is_in_the_trail(
    tmp_path: Path, pki: dict[str, Any]
) -> None:
    setup = make_office(tmp_path)
    office = setup.office
    with pytest.raises(ConfigError, match="no e-form trust anchors"):
        office.verify_eform(b"<x/>")
    assert office.set_eform_anchors(pem(pki["ca"])) == 1
    xml = signed_form(pki["key"], pki["cert"])
    outcome = office.verify_eform(xml)
    assert outcome.valid, outcome.reason
    assert outcome.signer == "CN=Jan Kowalski"
    der = pki["cert"].public_bytes(serialization.Encoding.DER)
    assert outcome.certificate == hashlib.sha256(der).hexdigest()
    setup.clock.tick()
    register, recorded, _ = office.register(hashlib.sha256(xml).digest(), actor="kanc-1",
                                            channel="epuap", eform=outcome.to_json())
    assert recorded.event.record.data["eform"]["valid"] is True
    office.open_case(register, actor="kier-or", unit="OR", jrwa_class="0152")
    trail = verify_trail(bundle_bytes(office.trail(register)))
    assert trail.entries[0].event.record.data["eform"]["signer"] == "CN=Jan Kowalski"


def test_a_changed_form_an_unknown_ca_and_garbage_are_recorded_as_invalid(
    tmp_path: Path, pki: dict[str, Any]
) -> None:
    office = make_office(tmp_path).office
    office.set_eform_anchors(pem(pki["ca"]))
    xml = signed_form(pki["key"], pki["cert"])
    changed = xml.replace(b"zaswiadczenia", b"zaswiadczenib")
    for data, why in [
        (changed, "changed"),
        (signed_form(pki["rogue"], pki["rogue_cert"]), "not trusted"),
        (FORM, "does not verify"),
        (b"<<not xml", "not XML"),
    ]:
        outcome = office.verify_eform(data)
        assert not outcome.valid and why in outcome.reason, (why, outcome.reason)


def test_an_ill_formed_outcome_is_refused_by_the_rules(tmp_path: Path) -> None:
    setup = make_office(tmp_path)
    with pytest.raises(WorkflowError, match="data field 'eform'"):
        setup.office.register(b"\x07" * 32, actor="kanc-1", channel="epuap",
                              eform={"valid": "yes", "signer": None, "certificate": None,
                                     "reason": "x"})


def test_the_service_registers_an_e_form_sent_in_base64(
    tmp_path: Path, pki: dict[str, Any]
) -> None:
    from ledger.eod.office import Office
    from ledger.eod.store import OfficeStore

    with running_service(tmp_path) as svc:
        store = OfficeStore.open(svc.roots["cuw"])
        Office(store, None, clock=svc.clock).set_eform_anchors(pem(pki["ca"]))
        store.close()
        xml = signed_form(pki["key"], pki["cert"])
        result = svc.step("register", {"as": "kanc-1", "channel": "epuap",
                                       "eform": base64.b64encode(xml).decode()})
        assert result["eform"]["valid"] and result["eform"]["signer"] == "CN=Jan Kowalski"
        _, course, _ = svc.call("GET", f"/v1/offices/cuw/case?ref={result['register']}")
        assert course["events"][0]["hash"] == result["event"]
        status, error, _ = svc.call("POST", "/v1/offices/cuw/steps/register",
                                    {"as": "kanc-1", "channel": "epuap", "document": "00" * 32,
                                     "eform": base64.b64encode(xml).decode()})
        assert status == 400 and "SHA-256 of the e-form" in error["error"]["message"]
        assert json.dumps(result)
