"""Anchorers: how the EOD client gets ledger receipts and checkpoints.

The workflow needs two things from the ledger: "anchor these digests and give me a receipt for
each", and "what is your latest cosigned checkpoint?" (every event names it, which proves it
was made after that checkpoint: ledger.eod.timing). :class:`Anchorer` is that narrow
interface, with two implementations:

* :class:`ClientAnchorer`, over :class:`ledger.client.LedgerClient` (a validator node's public
  API: ``POST /v1/anchors?wait=true`` and ``GET /v1/checkpoint``): production;
* :class:`LocalLogAnchorer`, over a local proving ground (anything with the methods of
  :class:`LocalLogLike`, i.e. :class:`ledger.prover.LocalLog`): real receipts and real
  signatures from one process, for tests and offline demos. The top-level CLI builds it from a
  ``ledger log init`` directory (``ledger eod --ground DIR``) and hands it in.

Either way the office verifies every receipt and checkpoint against its pinned trust policy
before storing it (ledger.eod.office), so a faulty node cannot make the office keep a receipt
an auditor would later reject. This package never imports consensus or storage code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from ledger.errors import MalformedError, NotFoundError

if TYPE_CHECKING:
    from ledger.client import LedgerClient

__all__ = ["Anchorer", "ClientAnchorer", "LocalLogAnchorer", "LocalLogLike"]


class Anchorer(Protocol):
    """Anchors SHA-256 digests and returns one receipt (tlog-proof text) per digest, in order;
    tells the latest cosigned checkpoint.

    Anchoring a digest already in the ledger returns a receipt for its existing leaf.
    Implementations raise :class:`~ledger.errors.LedgerError` subclasses only.
    """

    def anchor(self, digests: Sequence[bytes]) -> list[str]: ...

    def checkpoint(self) -> str | None:
        """The latest cosigned checkpoint note, or ``None`` while the ledger has none."""
        ...

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

    def checkpoint(self) -> str | None:
        try:
            return self._client.checkpoint()
        except NotFoundError:
            return None

    def policy(self) -> str:
        return self._client.policy()


class LocalLogLike(Protocol):
    """What :class:`LocalLogAnchorer` needs of a ground (:class:`ledger.prover.LocalLog`)."""

    def append(self, digests: Sequence[bytes]) -> tuple[int, ...]: ...

    def checkpoint(self, *, timestamp: int) -> str: ...

    def prove(self, digest: bytes) -> str: ...

    def trust_policy(self) -> str: ...


class LocalLogAnchorer:
    """An :class:`Anchorer` over a local proving ground: append, cosign a checkpoint, prove.

    ``clock`` gives the cosignature timestamps (POSIX seconds); tests pass a fixed clock. The
    ground is the ledger, so its latest checkpoint is one it cosigns on the spot.
    """

    def __init__(self, log: LocalLogLike, *, clock: Callable[[], int]) -> None:
        self._log = log
        self._clock = clock

    def anchor(self, digests: Sequence[bytes]) -> list[str]:
        self._log.append(list(digests))
        self._log.checkpoint(timestamp=self._clock())
        return [self._log.prove(d) for d in digests]

    def checkpoint(self) -> str | None:
        return self._log.checkpoint(timestamp=self._clock())

    def policy(self) -> str:
        return self._log.trust_policy()
