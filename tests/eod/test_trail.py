"""Offline trail verification: every change, removal, reordering or insertion fails with a
reason; so does a tampered receipt or certificate, or a wrong pinned key."""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eod.broken import REASONS, broken_bundles
from eod.casework import bundle_bytes, cost_case, make_office
from ledger.eod.pki import fingerprint
from ledger.eod.trail import render_timeline, verify_trail
from ledger.errors import MalformedError, VerificationError

Bundle = dict[str, Any]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    setup = make_office(tmp_path_factory.mktemp("office") / "data")
    return setup.office.trail(cost_case(setup))


def _change_data(b: Bundle) -> None:
    b["events"][6]["event"]["event"]["data"]["accounts"] = "Wn 402 / Ma 201"


def _change_time(b: Bundle) -> None:
    b["events"][8]["event"]["event"]["time"] -= 3600


def _change_position(b: Bundle) -> None:
    b["events"][8]["event"]["event"]["position"] = "gk"


def _remove(b: Bundle) -> None:
    del b["events"][7]  # the countersignature


def _drop_tail(b: Bundle) -> None:
    del b["events"][-1]  # the archiving: a trail that stops early


def _reorder(b: Bundle) -> None:
    b["events"][5], b["events"][6] = b["events"][6], b["events"][5]


def _insert(b: Bundle) -> None:
    b["events"].insert(4, copy.deepcopy(b["events"][3]))


def _swap_receipts(b: Bundle) -> None:
    e = b["events"]
    e[2]["receipt"], e[3]["receipt"] = e[3]["receipt"], e[2]["receipt"]


def _corrupt_receipt(b: Bundle) -> None:
    text: str = b["events"][4]["receipt"]
    lines = text.split("\n")
    lines[2] = ("A" if lines[2][0] != "A" else "B") + lines[2][1:]  # first proof hash
    b["events"][4]["receipt"] = "\n".join(lines)


def _forge_role(b: Bundle) -> None:
    for cert in b["certificates"]:
        if cert["certificate"]["position"] == "ksieg-1":
            cert["certificate"]["roles"] = ["accounts", "chief-accountant"]


def _corrupt_document_receipt(b: Bundle) -> None:
    b["documents"][0]["receipt"] = b["documents"][1]["receipt"]


TAMPERINGS: dict[str, tuple[Callable[[Bundle], None], str]] = {
    "changed data": (
        _change_data,
        r"event #6 \(account-coding\): the signature .* does not verify",
    ),
    "changed time": (_change_time, r"event #8 .* does not verify"),
    "changed position": (_change_position, r"event #8 .* does not verify"),
    "removed event": (_remove, r"event #7 \(approved-for-payment\): event number 8 where 7"),
    "dropped tail": (_drop_tail, r"the trail holds 10 events, but its signed head counts 11"),
    "reordered": (_reorder, r"event #5 \(account-coding\): event number 6 where 5"),
    "inserted": (_insert, r"event #4 \(attached\): event number 3 where 4"),
    "swapped receipts": (_swap_receipts, r"event #2 .* ledger receipt does not verify"),
    "corrupted receipt": (_corrupt_receipt, r"event #4 .* ledger receipt does not verify"),
    "forged certificate": (_forge_role, r"certificate of position 'ksieg-1' is not signed"),
    "document receipt": (_corrupt_document_receipt, r"document [0-9a-f]{16}: the ledger receipt"),
}


def test_untouched_bundle_verifies(bundle: Bundle) -> None:
    assert len(verify_trail(bundle_bytes(bundle)).entries) == 11


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_tampering_fails_with_a_reason(bundle: Bundle, name: str) -> None:
    tamper, reason = TAMPERINGS[name]
    changed = copy.deepcopy(bundle)
    tamper(changed)
    with pytest.raises(VerificationError, match=reason):
        verify_trail(bundle_bytes(changed))


def test_resigned_event_with_a_stolen_key_fails_on_its_receipt(
    tmp_path: Path,
) -> None:
    """Even the holder of a position key cannot rewrite history: the ledger fixed the hash."""
    setup = make_office(tmp_path / "office")
    case = cost_case(setup)
    b = setup.office.trail(case)
    from ledger.eod.events import SignedEvent

    original = SignedEvent.from_json(b["events"][6]["event"])
    record = original.record
    forged_record = type(record)(**{**record.__dict__, "data": {"accounts": "Wn 999"}})
    forged = forged_record.sign(setup.office.store.identity("ksieg-2").key)
    b["events"][6]["event"] = forged.to_json()
    with pytest.raises(VerificationError, match=r"event #6 .* ledger receipt does not verify"):
        verify_trail(bundle_bytes(b))


def test_pins_and_document(bundle: Bundle) -> None:
    with pytest.raises(VerificationError, match="not the pinned key"):
        verify_trail(bundle_bytes(bundle), office_key="SHA256:somethingelse")
    with pytest.raises(VerificationError, match="is not part of this case"):
        verify_trail(bundle_bytes(bundle), document=hashlib.sha256(b"other").digest())


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_parses_or_raises_our_errors(data: bytes) -> None:
    with contextlib.suppress(MalformedError, VerificationError):
        verify_trail(data)


# ------------------------------------------------------ rule-breaking trails (issue 12)


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Bundle]:
    return broken_bundles(tmp_path_factory.mktemp("broken"))


@pytest.mark.parametrize("name", sorted(n for n, r in REASONS.items() if r is not None))
def test_rule_breaking_trail_fails_with_the_rule(broken: dict[str, Bundle], name: str) -> None:
    """Valid signatures and receipts, but a step the rules refuse: verify-trail names it."""
    with pytest.raises(VerificationError) as caught:
        verify_trail(bundle_bytes(broken[name]))
    assert caught.value.diagnostics() == REASONS[name]


def test_backdated_step_fails_against_the_checkpoint_it_names(broken: dict[str, Bundle]) -> None:
    with pytest.raises(
        VerificationError,
        match=r"event #5 \(formal-check\): dated 2024-02-27 .* before the ledger checkpoint it "
        r"names \(2024-03-01 ",
    ):
        verify_trail(bundle_bytes(broken["backdated"]))


def test_declared_time_outside_the_proven_interval_is_flagged(broken: dict[str, Bundle]) -> None:
    trail = verify_trail(bundle_bytes(broken["declared in the past"]))
    assert trail.flagged == (5,)
    text = render_timeline(trail)
    assert (
        "     declared: 2024-02-27 10:04:00 +01:00 (outside the proven interval: flagged)" in text
    )
    assert "flagged: a declared time outside the proven interval in events #5" in text


def test_a_bundle_without_its_head_fails(bundle: Bundle) -> None:
    changed = copy.deepcopy(bundle)
    del changed["head"]
    with pytest.raises(VerificationError, match="the trail has no signed head"):
        verify_trail(bundle_bytes(changed))


def test_changed_office_name_or_zone_fails(bundle: Bundle) -> None:
    for key, value in (("name", "Urząd Skarbowy"), ("zone", "UTC")):
        changed = copy.deepcopy(bundle)
        changed["office"]["office"][key] = value
        with pytest.raises(VerificationError, match="office record is not signed by its CA key"):
            verify_trail(bundle_bytes(changed))


def test_office_name_is_verified_only_with_a_pinned_key(bundle: Bundle) -> None:
    unpinned = render_timeline(verify_trail(bundle_bytes(bundle)))
    assert "(Centrum Usług Wspólnych; name not verified: pin the office key)" in unpinned
    key = fingerprint(base64.b64decode(bundle["office"]["office"]["ca_public_key"]))
    pinned = render_timeline(verify_trail(bundle_bytes(bundle), office_key=key))
    assert "office cuw-gdansk (Centrum Usług Wspólnych)\n" in pinned
