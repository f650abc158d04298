"""One error root for the whole package, split by who is at fault.

Every parser of untrusted bytes (receipts, notes, checkpoints, policies, peer messages, API
bodies) raises :class:`MalformedError` or a subclass, never a bare ``ValueError``, ``KeyError``
or a third-party exception. A well-formed object that fails a cryptographic or logical check
raises :class:`VerificationError`. The CLI and the HTTP layer catch :class:`LedgerError` only and
map each subclass to one exit status or HTTP status through its ``code``.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Root of every error this package raises on purpose."""

    code: str = "ledger_error"

    def diagnostics(self) -> str:
        """A one-line, human-readable explanation suitable for a CLI or a JSON error body."""
        return str(self) or self.__class__.__name__


class MalformedError(LedgerError):
    """Input bytes do not parse: wrong syntax, wrong lengths, out-of-range numbers, oversize."""

    code = "malformed"


class VerificationError(LedgerError):
    """A well-formed proof, signature, note or quorum does not verify."""

    code = "verification_failed"


class NotFoundError(LedgerError):
    """The thing asked for does not exist (unknown digest, height beyond the chain, ...)."""

    code = "not_found"


class ConfigError(LedgerError):
    """A configuration, genesis or key file is missing, unreadable or inconsistent."""

    code = "config"


class StorageError(LedgerError):
    """The store failed to read or write."""

    code = "storage"


class CorruptionError(StorageError):
    """Stored bytes contradict themselves (a flipped byte, a truncated file): never serve them."""

    code = "corruption"


class ProtocolError(MalformedError):
    """A peer sent a message that is malformed, oversized, unsigned or from an unknown sender."""

    code = "protocol"
