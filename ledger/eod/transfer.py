"""Transfer to the state archive (przekazanie materiałów archiwalnych do archiwum państwowego).

Category A cases (materiały archiwalne) are kept in the office archive for
:data:`~ledger.eod.rules.ARCHIVE_TRANSFER_YEARS` years from 1 January after their proven
closing, then handed over to the state archive with a handover list (spis zdawczo-odbiorczy).
:func:`transfer` does it in three steps:

1. build the **handover list**: the office record, the receiving archive, and per case (in the
   order of their signs) its number on the list, its sign, JRWA class and title, category, the
   local dates of its first and last event, its number of events and the digests of all its
   documents;
2. record a ``transferred`` event in each case's trail (ledger.eod.rules): its document is the
   SHA-256 of the list's canonical JSON, so the list is anchored, and the trail proves which
   list took the case away and when; nothing can follow it;
3. write the **transfer package**: one canonical JSON file ``{"format":
   "ledger-eod-transfer/v1", "list": <handover list>, "trails": [<trail bundle>, ...],
   "signature": <base64>}`` with each case's full trail (ledger.eod.trail, ending in a fresh
   signed head after the transfer), which carries every receipt, certificate and checkpoint
   the archive needs, signed by the office CA (Ed25519 over :data:`PACKAGE_DOMAIN` and the
   canonical JSON of the package without its signature): the parts of a trail bundle a
   verifier does not otherwise rely on (its copy of the policy when one is pinned, the names
   in its certificates) are covered too.

:func:`verify_package` checks a package offline (``ledger eod verify-package``): the file is
exactly the canonical encoding of its content, its signature verifies under the office CA key
of the list's office record (pinned with ``office_key``), so any altered byte fails; each
trail verifies under the pinned policy and office key, ends with the
``transferred`` event naming this very list and archive, and the list's entries are exactly the
package's cases with exactly their documents and event counts.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ledger.crypto import b64decode_strict, verify_ed25519
from ledger.eod import canonical
from ledger.eod.model import EventType
from ledger.eod.office import Office, Recorded
from ledger.eod.pki import fingerprint
from ledger.eod.records import OfficeRecord
from ledger.eod.trail import MAX_BUNDLE_SIZE, VerifiedTrail, verify_trail
from ledger.errors import LedgerError, MalformedError, VerificationError
from ledger.policy import Policy

__all__ = [
    "LIST_FORMAT",
    "PACKAGE_DOMAIN",
    "PACKAGE_FORMAT",
    "VerifiedPackage",
    "due_for_transfer",
    "handover_list",
    "transfer",
    "verify_package",
]

PACKAGE_FORMAT: Final = "ledger-eod-transfer/v1"
PACKAGE_DOMAIN: Final = b"ledger/eod-transfer-package/v1\n"
LIST_FORMAT: Final = "ledger-eod-handover-list/v1"
#: Documents a list names per case, at most (a case file is large, never this large).
_MAX_DOCUMENTS: Final = 100_000


def due_for_transfer(office: Office, *, now: int) -> list[str]:
    """The archived category A cases whose office-archive period has run by ``now``, judged
    from the proven closing (the rules check it again, from the step's proven time)."""
    from ledger.eod.model import Category
    from ledger.eod.rules import ARCHIVE_TRANSFER_YEARS

    period = Category(text=f"B{ARCHIVE_TRANSFER_YEARS}", years=ARCHIVE_TRANSFER_YEARS)
    due = []
    for sign, closed in office.store.query(
        "SELECT case_sign, closed_before FROM matters WHERE status = 'archived' AND "
        "category = 'A' AND case_sign IS NOT NULL ORDER BY case_sign"
    ):
        allowed = office.calendar.destruction_allowed_from(period, int(closed))
        if allowed is not None and allowed <= now:
            due.append(str(sign))
    return due


def handover_list(office: Office, cases: Sequence[str], *, archive: str) -> dict[str, Any]:
    """The handover list of ``cases`` for ``archive`` (step 1 of the module docstring).

    Raises:
        NotFoundError: an unknown case.
        MalformedError: no case, a case twice, or no archive name.
    """
    if not cases:
        raise MalformedError("name at least one case to transfer")
    if len(set(cases)) != len(cases):
        raise MalformedError("a case is named twice")
    if not archive.strip():
        raise MalformedError("name the state archive that takes the cases (--archive)")
    entries = []
    for number, ref in enumerate(sorted(cases), start=1):
        _, events, state = office.chain(ref)
        opened = next(e for e in events if e.record.type is EventType.CASE_OPENED)
        jrwa = opened.record.data["jrwa"]
        documents = sorted({e.record.document.hex() for e in events if e.record.document})
        entries.append(
            {
                "no": number,
                "case": state.case or ref,
                "class": jrwa["class"],
                "title": jrwa["title"],
                "category": None if state.category is None else state.category.text,
                "from": office.calendar.date_of(events[0].record.time).isoformat(),
                "to": office.calendar.date_of(events[-1].record.time).isoformat(),
                "events": len(events),
                "documents": documents,
            }
        )
    return {
        "format": LIST_FORMAT,
        "office": office.record.to_json(),
        "archive": archive.strip(),
        "entries": entries,
    }


def transfer(
    office: Office, cases: Sequence[str], *, actor: str, archive: str
) -> tuple[bytes, list[Recorded]]:
    """Transfer ``cases`` (steps 1-3 of the module docstring); returns the package's bytes and
    the recorded ``transferred`` events.

    Raises:
        WorkflowError: a case may not be transferred (not category A, not archived, its
            period not run); cases before it in the list are then transferred already, and the
            error names them.
        LedgerError: as the steps and :meth:`Office.trail`.
    """
    listing = handover_list(office, cases, archive=archive)
    digest = canonical.sha256(canonical.encode(listing))
    recorded: list[Recorded] = []
    for entry in listing["entries"]:
        try:
            recorded.append(office.transfer(entry["case"], digest, actor=actor, archive=archive))
        except LedgerError as exc:
            done = ", ".join(e["case"] for e in listing["entries"][: len(recorded)]) or "none"
            raise type(exc)(
                f"{entry['case']}: {exc.diagnostics()} (already transferred: {done})"
            ) from None
    trails = [office.trail(entry["case"]) for entry in listing["entries"]]
    package: dict[str, Any] = {"format": PACKAGE_FORMAT, "list": listing, "trails": trails}
    signature = office.store.identity("ca").key.sign(PACKAGE_DOMAIN + canonical.encode(package))
    package["signature"] = base64.b64encode(signature).decode("ascii")
    return canonical.encode(package), recorded


@dataclass(frozen=True, kw_only=True)
class VerifiedPackage:
    archive: str
    list_digest: bytes
    trails: tuple[VerifiedTrail, ...]


def _fail(message: str) -> VerificationError:
    return VerificationError(f"transfer package: {message}")


def verify_package(
    data: bytes, *, policy: Policy | None = None, office_key: str | None = None
) -> VerifiedPackage:
    """Verify a transfer package offline (see the module docstring).

    Raises:
        MalformedError: not a transfer package.
        VerificationError: any check fails, named.
    """
    if len(data) > MAX_BUNDLE_SIZE:
        raise MalformedError(f"the transfer package is larger than {MAX_BUNDLE_SIZE} bytes")
    package = canonical.loads(data, what="transfer package")
    if package.get("format") != PACKAGE_FORMAT:
        raise MalformedError(f"not a {PACKAGE_FORMAT} file")
    if canonical.encode(package) != data:
        raise _fail("the file is not the canonical encoding of its content (it was altered)")
    listing = package.get("list")
    trails = package.get("trails")
    if not isinstance(listing, dict) or listing.get("format") != LIST_FORMAT:
        raise _fail("it holds no handover list")
    if not isinstance(trails, list) or not trails:
        raise _fail("it holds no trails")
    entries = listing.get("entries")
    archive = listing.get("archive")
    if not isinstance(entries, list) or not isinstance(archive, str):
        raise _fail("the handover list lacks its entries or its archive")
    record = OfficeRecord.from_json(listing.get("office"))
    if office_key is not None and office_key.strip() not in (
        fingerprint(record.ca_public_key),
        base64.b64encode(record.ca_public_key).decode("ascii"),
    ):
        found = fingerprint(record.ca_public_key)
        raise _fail(f"the office CA key ({found}) is not the pinned key")
    unsigned = {k: v for k, v in package.items() if k != "signature"}
    signature = package.get("signature")
    if not isinstance(signature, str):
        raise _fail("it is not signed")
    try:
        verify_ed25519(
            record.ca_public_key,
            PACKAGE_DOMAIN + canonical.encode(unsigned),
            b64decode_strict(signature, what="package signature"),
        )
    except (VerificationError, MalformedError):
        raise _fail("the office CA's signature does not verify (the package was altered)") from None
    digest = canonical.sha256(canonical.encode(listing))
    by_case: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("case"), str):
            raise _fail("a list entry has no case")
        by_case[entry["case"]] = entry
    if len(by_case) != len(entries) or len(trails) != len(entries):
        raise _fail(f"the list names {len(entries)} cases, the package holds {len(trails)}")
    verified = []
    for i, bundle in enumerate(trails):
        if not isinstance(bundle, dict):
            raise MalformedError(f"trails[{i}] is not a trail bundle")
        try:
            trail = verify_trail(
                json.dumps(bundle, ensure_ascii=False).encode("utf-8"),
                policy=policy,
                office_key=office_key,
            )
        except VerificationError as exc:
            raise _fail(f"trail {i}: {exc.diagnostics()}") from None
        entry = by_case.pop(trail.case, None)
        if entry is None:
            raise _fail(f"trail {i} is of case {trail.case}, which the list does not name")
        if listing.get("office") != trail.office.to_json():
            raise _fail(f"{trail.case}: the list is of another office")
        last = trail.entries[-1].event.record
        if last.type is not EventType.TRANSFERRED:
            raise _fail(f"{trail.case}: its trail does not end with the transfer")
        if last.document != digest or last.data.get("archive") != archive:
            raise _fail(f"{trail.case}: its transfer names another handover list or archive")
        documents = sorted(
            {e.event.record.document.hex() for e in trail.entries[:-1] if e.event.record.document}
        )
        if entry.get("documents") != documents or len(documents) > _MAX_DOCUMENTS:
            raise _fail(f"{trail.case}: the list's documents are not the trail's")
        if entry.get("events") != len(trail.entries) - 1:
            raise _fail(f"{trail.case}: the list's event count is not the trail's")
        verified.append(trail)
    return VerifiedPackage(archive=archive, list_digest=digest, trails=tuple(verified))
