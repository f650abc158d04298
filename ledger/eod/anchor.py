"""Anchorers: how the EOD client gets ledger receipts for its digests.

The workflow needs one thing from the ledger: "anchor these digests and give me a receipt for
each". :class:`Anchorer` is that narrow interface, with two implementations:

* :class:`ClientAnchorer`, over :class:`ledger.client.LedgerClient` (a validator node's public
  API, ``POST /v1/anchors?wait=true``): production;
* :class:`LocalLogAnchorer`, over :class:`ledger.prover.LocalLog`: real receipts and real
  signatures from a single process, for tests and offline demos (the CLI's ``--ground DIR``).

Either way the office verifies every receipt against its pinned trust policy before storing it
(:meth:`ledger.eod.office.Office`), so a faulty node cannot make the office keep a receipt an
auditor would later reject. This module never imports consensus or storage code; the LocalLog
is handed in ready-made.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from ledger.errors import MalformedError

if TYPE_CHECKING:
    from ledger.client import LedgerClient
    from ledger.prover import LocalLog

__all__ = ["Anchorer", "ClientAnchorer", "LocalLogAnchorer"]


class Anchorer(Protocol):
    """Anchors SHA-256 digests and returns one receipt (tlog-proof text) per digest, in order.

    Anchoring a digest already in the ledger returns a receipt for its existing leaf.
    Implementations raise :class:`~ledger.errors.LedgerError` subclasses only.
    """

    def anchor(self, digests: Sequence[bytes]) -> list[str]: ...

    def policy(self) -> str:
        """The ledger's trust policy text, as the ledger presents it (pin it; do not trust it)."""
        ...


class ClientAnchorer:
    """An :class:`Anchorer` over a node's public API."""

    def __init__(self, client: LedgerClient) -> None:
        self._client = client

    def anchor(self, digests: Sequence[bytes]) -> list[str]:
        results = self._client.anchor(list(digests), wait=True)
        receipts: list[str] = []
        for result in results:
            if result.receipt is None:
                raise MalformedError(f"the node returned no receipt for {result.digest.hex()}")
            receipts.append(result.receipt)
        return receipts

    def policy(self) -> str:
        return self._client.policy()


class LocalLogAnchorer:
    """An :class:`Anchorer` over a local proving ground: append, cosign a checkpoint, prove.

    ``clock`` gives the cosignature timestamps (POSIX seconds); tests pass a fixed clock.
    """

    def __init__(self, log: LocalLog, *, clock: Callable[[], int]) -> None:
        self._log = log
        self._clock = clock

    def anchor(self, digests: Sequence[bytes]) -> list[str]:
        self._log.append(list(digests))
        self._log.checkpoint(timestamp=self._clock())
        return [self._log.prove(d) for d in digests]

    def policy(self) -> str:
        return self._log.trust_policy()
