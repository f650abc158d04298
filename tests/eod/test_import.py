"""Bulk import: matters anchored in batches (one anchoring call per batch), trails that verify
offline, resumable after an interruption, a refused matter stores nothing of its batch."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from eod.casework import Setup, bundle_bytes, make_office
from ledger.eod.importer import import_file
from ledger.eod.rules import WorkflowError
from ledger.eod.trail import verify_trail
from ledger.errors import LedgerError


def matter(n: int) -> dict[str, Any]:
    invoice = hashlib.sha256(b"invoice %d" % n).hexdigest()
    order = hashlib.sha256(b"order %d" % n).hexdigest()
    return {
        "id": f"FV/{n}",
        "steps": [
            {"op": "register", "as": "kanc-1", "document": invoice, "channel": "ksef",
             "kind": "invoice", "attachments": 1, "sender_ref": f"FV/{n}",
             "at": "2023-05-04T10:00:00"},
            {"op": "assign", "as": "dyr", "to": "ref-fk"},
            {"op": "open-case", "as": "ref-fk", "unit": "FK", "class": "3026", "kind": "cost"},
            {"op": "attach", "as": "ref-fk", "document": order, "kind": "order"},
            {"op": "accept", "as": "kier-sp", "step": "substantive"},
            {"op": "accept", "as": "ksieg-1", "step": "formal"},
            {"op": "accept", "as": "ksieg-2", "step": "coding", "accounts": "Wn 401"},
            {"op": "accept", "as": "gk", "step": "countersign"},
            {"op": "accept", "as": "dyr", "step": "approve"},
            {"op": "close", "as": "ref-fk"},
        ],
    }


class Counting:
    def __init__(self, inner: Any, fail_after: int | None = None) -> None:
        self.inner = inner
        self.calls = 0
        self.fail_after = fail_after

    def anchor(self, digests: Sequence[bytes]) -> list[str]:
        if self.fail_after is not None and self.calls >= self.fail_after:
            from ledger.client import TransportError

            raise TransportError("the node went away")
        self.calls += 1
        result: list[str] = self.inner.anchor(digests)
        return result

    def checkpoint(self) -> str | None:
        note: str | None = self.inner.checkpoint()
        return note

    def policy(self) -> str:
        text: str = self.inner.policy()
        return text


def _write(path: Path, matters: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(m) + "\n" for m in matters), encoding="utf-8")
    return path


def _office_with(setup: Setup, anchorer: Counting) -> Any:
    from ledger.eod.office import Office

    return Office(setup.office.store, anchorer, clock=setup.clock)  # type: ignore[arg-type]


def test_an_import_anchors_in_batches_and_every_trail_verifies(tmp_path: Path) -> None:
    setup = make_office(tmp_path / "office")
    counting = Counting(setup.office._need_anchorer())
    office = _office_with(setup, counting)
    source = _write(tmp_path / "year.jsonl", [matter(n) for n in range(25)])
    reported: list[int] = []
    skipped, imported = import_file(office, source, batch=10, report=reported.append)
    assert (skipped, imported, reported) == (0, 25, [10, 10, 5])
    assert counting.calls == 3  # one anchoring call per batch
    cases = office.store.cases()
    assert len(cases) == 25
    for sign, _ in cases[:5]:
        bundle = office.trail(sign)
        trail = verify_trail(bundle_bytes(bundle))
        assert len(trail.entries) == 10
        assert trail.flagged == (0,)  # the historical time is declared, not proven
    assert counting.calls == 3  # the heads were anchored with their batch
    assert office.store.query("SELECT count(*) FROM matters WHERE status = 'closed'") == [(25,)]


def test_an_interrupted_import_resumes_after_its_last_stored_batch(tmp_path: Path) -> None:
    setup = make_office(tmp_path / "office")
    inner = setup.office._need_anchorer()
    source = _write(tmp_path / "year.jsonl", [matter(n) for n in range(12)])
    with pytest.raises(LedgerError, match="went away"):
        import_file(_office_with(setup, Counting(inner, fail_after=1)), source, batch=5)
    assert len(setup.office.store.cases()) == 5
    skipped, imported = import_file(_office_with(setup, Counting(inner)), source, batch=5)
    assert (skipped, imported) == (5, 7)
    signs = [s for s, _ in setup.office.store.cases()]
    assert len(signs) == 12 and len(set(signs)) == 12
    registers = sorted(
        int(r[0].split("/")[1]) for r in setup.office.store.query("SELECT register FROM matters")
    )
    assert registers == list(range(1, 13))  # no number lost to the failed batch
    other = _write(tmp_path / "other.jsonl", [matter(99)])
    other.rename(tmp_path / "year2.jsonl")
    with pytest.raises(LedgerError, match="another file"):
        import_file(_office_with(setup, Counting(inner)), tmp_path / "year2.jsonl",
                    name="year.jsonl")


def test_a_refused_matter_stores_nothing_of_its_batch(tmp_path: Path) -> None:
    setup = make_office(tmp_path / "office")
    bad = matter(3)
    bad["steps"] = [s for s in bad["steps"] if s["op"] != "attach"]  # no order: refused
    source = _write(tmp_path / "bad.jsonl", [matter(1), matter(2), bad])
    with pytest.raises(WorkflowError, match=r"line 3, step 3 \(accept\): .*attachment"):
        import_file(setup.office, source, batch=10)
    assert setup.office.store.cases() == []
    assert setup.office.store.query("SELECT count(*) FROM events") == [(0,)]
