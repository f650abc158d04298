"""Bulk import of historical items: whole matters from a JSON Lines file, anchored in batches.

An office moving to the ledger brings its past: thousands of registered items and cases with
their steps. Each line of the import file is one matter::

    {"id": "FV/2025/000123",
     "steps": [{"op": "register", "as": "kancelaria", "document": "<64 hex>",
                "channel": "ksef", "kind": "invoice", "attachments": 1,
                "at": "2025-03-02T10:00:00"},
               {"op": "assign", "as": "dyrektor", "to": "referent-fk"},
               {"op": "open-case", "as": "referent-fk", "unit": "FK", "class": "3026",
                "kind": "cost"},
               {"op": "attach", "as": "referent-fk", "document": "<64 hex>", "kind": "order"},
               {"op": "accept", "as": "kierownik-sp7", "step": "substantive"}, ...]}

Each step is a body of :func:`ledger.eod.steps.run_step` with its name in ``op``; ``ref`` may be
left out: it is then the matter's own (its register number, or its case sign once opened).
``at`` is the historical time of the act: a *declared* time, recorded next to the proven one
(the ledger proves only that the step was recorded at import time) and flagged as such in the
trail. The rules are the office's: a matter whose steps break them stops the import at its
line, with the reason, and nothing of that batch is stored.

Matters go in batches (:meth:`ledger.eod.office.Office.batch`: one anchoring call per batch).
Progress is stored with each batch, in the same transaction, under the import's name with the
file's SHA-256: running the same import again resumes after the last stored batch, and a
different file under the same name is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from ledger.eod.office import Office
from ledger.eod.steps import run_step
from ledger.errors import ConfigError, LedgerError, MalformedError

__all__ = ["DEFAULT_BATCH", "import_file", "import_matters", "progress"]

DEFAULT_BATCH: Final = 500
_MAX_LINE: Final = 1 << 20


def _run_matter(office: Office, matter: Mapping[str, Any], where: str) -> dict[str, Any]:
    steps = matter.get("steps")
    if not isinstance(steps, list) or not steps:
        raise MalformedError(f"{where}: a matter has a non-empty list 'steps'")
    ref: str | None = None
    first: dict[str, Any] = {}
    for i, raw in enumerate(steps):
        if not isinstance(raw, dict) or not isinstance(raw.get("op"), str):
            raise MalformedError(f"{where}: step {i} is not an object with its name in 'op'")
        body = {k: v for k, v in raw.items() if k != "op"}
        name = raw["op"]
        if ref is not None and "ref" not in body and name != "register":
            body["ref"] = ref
        try:
            result = run_step(office, name, body)
        except LedgerError as exc:
            raise type(exc)(f"{where}, step {i} ({name}): {exc.diagnostics()}") from None
        if i == 0:
            first = result
        if name == "register" and ref is None:
            ref = result["register"]
        if result.get("case"):
            ref = result["case"]
    return {"id": matter.get("id"), "register": first.get("register"), "ref": ref}


def import_matters(
    office: Office,
    matters: Sequence[Mapping[str, Any]],
    *,
    first_line: int = 1,
    on_commit: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Import ``matters`` as one batch; returns ``{"id", "register", "ref"}`` per matter.

    Raises:
        MalformedError, WorkflowError, NotFoundError: a matter (named by its line) is refused;
            nothing of the batch is stored.
        LedgerError: the ledger could not anchor the batch; nothing is stored.
    """
    results = []
    with office.batch(on_commit=on_commit):
        for offset, matter in enumerate(matters):
            if not isinstance(matter, Mapping):
                raise MalformedError(f"line {first_line + offset}: not a JSON object")
            results.append(_run_matter(office, matter, f"line {first_line + offset}"))
    return results


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if len(raw) > _MAX_LINE:
                    raise MalformedError(f"{path}:{number}: a line longer than {_MAX_LINE} bytes")
                if not raw.strip():
                    continue
                try:
                    value = json.loads(raw)
                except (UnicodeDecodeError, ValueError):
                    raise MalformedError(f"{path}:{number}: not a JSON object") from None
                if not isinstance(value, dict):
                    raise MalformedError(f"{path}:{number}: not a JSON object")
                yield number, value
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                h.update(chunk)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return h.hexdigest()


def progress(office: Office, name: str) -> tuple[str, int] | None:
    """The stored progress of import ``name``: (file digest, matters done), or ``None``."""
    rows = office.store.query("SELECT digest, done FROM imports WHERE name = ?", name)
    return None if not rows else (str(rows[0][0]), int(rows[0][1]))


def import_file(
    office: Office,
    path: Path,
    *,
    name: str | None = None,
    batch: int = DEFAULT_BATCH,
    report: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Import the matters of ``path`` in batches of ``batch``, resuming after the last stored
    batch of the same import (``name``, default the file name); ``report(n)`` is called after
    each stored batch with its number of matters. Returns (matters skipped as done before,
    matters imported now).

    Raises:
        ConfigError: the file cannot be read, or ``name`` was used for another file.
        MalformedError, WorkflowError, LedgerError: as :func:`import_matters`.
    """
    if not 1 <= batch <= 10_000:
        raise MalformedError("the batch size is 1-10000 matters")
    name = name or path.name
    digest = _digest(path)
    known = progress(office, name)
    if known is not None and known[0] != digest:
        raise ConfigError(
            f"import {name!r} was started with another file (SHA-256 {known[0][:16]}...); "
            "give the import another --name"
        )
    done = 0 if known is None else known[1]
    skipped = done
    imported = 0
    pending: list[tuple[int, dict[str, Any]]] = []

    def flush(items: Iterable[tuple[int, dict[str, Any]]]) -> None:
        nonlocal done, imported
        chunk = list(items)
        if not chunk:
            return
        after = done + len(chunk)

        def keep_progress() -> None:
            office.store.execute(
                "INSERT INTO imports (name, digest, done) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET done = excluded.done",
                name,
                digest,
                after,
            )

        import_matters(office, [m for _, m in chunk], first_line=chunk[0][0],
                       on_commit=keep_progress)
        done = after
        imported += len(chunk)
        if report is not None:
            report(len(chunk))

    seen = 0
    for number, matter in _lines(path):
        seen += 1
        if seen <= skipped:
            continue
        pending.append((number, matter))
        if len(pending) >= batch:
            flush(pending)
            pending = []
    flush(pending)
    return skipped, imported


def count_matters(path: Path) -> int:
    """How many matters (non-empty lines) ``path`` holds, for a progress bar."""
    try:
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
