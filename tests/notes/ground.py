"""A deterministic proving ground for tests: fixed validator seeds, a MemoryStore, fixed times."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ledger.crypto import ValidatorKeys
from ledger.policy import Policy, parse_policy
from ledger.prover import LocalLog
from ledger.storage.memory import MemoryStore

ORIGIN = "ledger.example.org/test"
BASE_TIME = 1_700_000_000


def validator(i: int, *, origin: str = ORIGIN, tag: str = "") -> ValidatorKeys:
    """Validator ``i`` with a seed fixed by ``i`` and ``tag``."""
    seed = hashlib.sha256(f"test validator {tag}{i}".encode()).digest()
    return ValidatorKeys(name=f"v{i}.example.org", origin=origin, seed=seed)


def digest(i: int) -> bytes:
    """The SHA-256 of a made-up document number ``i``."""
    return hashlib.sha256(f"document {i}".encode()).digest()


@dataclass
class Ground:
    log: LocalLog
    policy_text: str
    policy: Policy
    digests: list[bytes]


def make_ground(
    n: int = 4,
    leaves: int = 11,
    *,
    timestamps: list[int] | None = None,
    cosigners: list[int] | None = None,
) -> Ground:
    """A log of ``n`` validators holding ``leaves`` digests and one checkpoint over them."""
    log = LocalLog(MemoryStore(), validators=[validator(i) for i in range(1, n + 1)])
    digests = [digest(i) for i in range(leaves)]
    log.append(digests)
    count = n if cosigners is None else len(cosigners)
    stamps = timestamps if timestamps is not None else [BASE_TIME + i for i in range(count)]
    log.checkpoint(timestamp=stamps, cosigners=cosigners)
    text = log.trust_policy()
    return Ground(log=log, policy_text=text, policy=parse_policy(text), digests=digests)
