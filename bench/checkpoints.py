"""What keeping every block's cosigned checkpoint costs on disk (issue 11, docs/performance.md).

Run::

    python bench/checkpoints.py                 # 2,000 one-digest blocks, 4 validators
    python bench/checkpoints.py --blocks 500 --validators 7

A real ``LmdbStore`` (sync on) gets one digest and one checkpoint note per block, each note
carrying the log signature and every validator's timestamped cosignature (the most a node
stores: it keeps every valid cosignature it receives). Prints the note's size as text (what
``GET /v1/checkpoints/{size}`` serves and a receipt carries) and the pages the checkpoint
database takes per note (what the node keeps on disk: format 2 packs the signatures).
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time

from ledger.crypto import ValidatorKeys
from ledger.prover import LocalLog
from ledger.storage.lmdb_store import LmdbStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--validators", type=int, default=4)
    args = parser.parse_args()
    keys = [ValidatorKeys(name=f"validator-{i}", origin="bench.ledger.localhost/log",
                          seed=hashlib.sha256(b"bench %d" % i).digest())
            for i in range(1, args.validators + 1)]
    with tempfile.TemporaryDirectory() as directory:
        store = LmdbStore.open(directory)
        try:
            log = LocalLog(store, validators=keys)
            text_bytes = 0
            started = time.perf_counter()
            for i in range(args.blocks):
                log.append([hashlib.sha256(b"document %d" % i).digest()])
                text_bytes += len(log.checkpoint(timestamp=1_800_000_000 + i).encode("utf-8"))
            elapsed = time.perf_counter() - started
            stats = store.stats()
        finally:
            store.close()
    page = stats["page_size"]
    on_disk = stats["checkpoints"] * page / args.blocks
    print(f"validators: {args.validators}; blocks: {args.blocks} (one digest, one note each; "
          f"{args.blocks / elapsed:,.0f} blocks/s with sync)")
    print(f"checkpoint note as text:  {text_bytes / args.blocks:,.0f} B "
          f"(log signature + {args.validators} cosignatures)")
    print(f"checkpoint note on disk:  {on_disk:,.0f} B per block "
          f"({stats['checkpoints']} pages of {page} B)")


if __name__ == "__main__":
    main()
