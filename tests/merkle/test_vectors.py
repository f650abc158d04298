"""RFC 9162 proof verification against the transparency-dev/merkle test vectors.

Every JSON file under ``tests/vectors/rfc9162`` (inclusion and consistency, the numbered
folders, ``additional`` and ``single-entry``) is one test id. A file with ``wantErr: false``
must verify; a file with ``wantErr: true`` must be rejected with ``VerificationError`` or, when
an input cannot be a hash at all (wrong length), ``MalformedError``: never any other exception.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from ledger.errors import MalformedError, VerificationError
from ledger.merkle import verify_consistency, verify_inclusion

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "rfc9162"
FILES = sorted(VECTORS.rglob("*.json"))


def _id(path: Path) -> str:
    return path.relative_to(VECTORS).as_posix()


def _b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _run(kind: str, v: dict[str, Any]) -> None:
    # The vectors come from Go, where an empty proof may be serialised as null (a nil slice).
    proof = [_b64(p) for p in v["proof"] or []]
    if kind == "inclusion":
        verify_inclusion(_b64(v["leafHash"]), v["leafIdx"], v["treeSize"], proof, _b64(v["root"]))
    else:
        verify_consistency(v["size1"], v["size2"], _b64(v["root1"]), _b64(v["root2"]), proof)


def test_every_vector_file_on_disk_is_collected() -> None:
    # Guards against a glob that silently matches nothing (or a folder that is skipped).
    on_disk = [
        Path(root) / name
        for root, _dirs, names in os.walk(VECTORS)
        for name in names
        if name.endswith(".json")
    ]
    assert len(on_disk) > 0
    assert len(FILES) == len(on_disk)
    kinds = {_id(f).split("/")[0] for f in FILES}
    assert kinds == {"inclusion", "consistency"}
    folders = {"/".join(_id(f).split("/")[:2]) for f in FILES}
    assert {"inclusion/additional", "consistency/additional", "inclusion/single-entry"} <= folders
    # Both outcomes are represented, so neither branch of the judged test is vacuous.
    wants = {_load(f)["wantErr"] for f in FILES}
    assert wants == {True, False}


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_vector_is_judged_right(path: Path) -> None:
    # Accept every wantErr=false file; reject every wantErr=true file with our own errors only.
    kind = _id(path).split("/")[0]
    vector = _load(path)
    if vector["wantErr"]:
        with pytest.raises((VerificationError, MalformedError)):
            _run(kind, vector)
    else:
        _run(kind, vector)
