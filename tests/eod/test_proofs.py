"""ReceiptVerifier proves what verify_receipt proves: a note checked once, but every receipt's
head (index, proof) parsed strictly and its inclusion proof checked, on the fast path too."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from eod.casework import make_office
from ledger.eod.proofs import ReceiptVerifier
from ledger.errors import LedgerError
from ledger.receipt import verify_receipt


def test_the_fast_path_refuses_what_the_full_verification_refuses(tmp_path: Path) -> None:
    setup = make_office(tmp_path)
    digests = [hashlib.sha256(b"%d" % i).digest() for i in range(8)]
    receipts = setup.office._need_anchorer().anchor(digests)
    policy = setup.office.policy
    verifier = ReceiptVerifier(policy)
    for digest, receipt in zip(digests, receipts, strict=True):
        assert verifier.verify(receipt, digest) == verify_receipt(receipt, policy, digest)
    receipt, digest = receipts[3], digests[3]
    lines = receipt.split("\n")
    index = int(lines[1].split()[1])
    bad = [
        receipt.replace(f"index {index}", f"index {index + 1}", 1),
        receipt.replace(f"index {index}", "index 03", 1),
        "\n".join([lines[0], lines[1], lines[2][:-2] + "AA", *lines[3:]]),
        "\n".join([lines[0], lines[1], *lines[3:]]),  # a proof hash dropped
        "\n".join([lines[0], lines[1], "not base64!", *lines[3:]]),
        receipt.replace("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2", 1),
    ]
    for text in bad:
        with pytest.raises(LedgerError):
            verify_receipt(text, policy, digest)
        with pytest.raises(LedgerError):
            verifier.verify(text, digest)
    with pytest.raises(LedgerError):
        verifier.verify(receipt, digests[4])
