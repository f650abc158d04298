"""Policy chains: verify a receipt offline across validator-set changes, from the genesis on.

A receipt (c2sp.org/tlog-proof) is checked against the trust policy *in force at its checkpoint*.
The genesis trust policy (:func:`ledger.config.trust_policy`) holds until the first
validator-set change takes effect (:mod:`ledger.consensus.reconfig`); after that the validators
that cosign checkpoints, and the quorum they must reach, are those of the new set. A *policy
chain* file lets an auditor follow that history offline, trusting nothing but the genesis::

    ledger-policy-chain/v1
    chain <chain id>
    validator <name> <consensus key, 64 hex> <log vkey> <cosigner vkey>     (genesis, in order)
    ...
    change <effective height> <tree size> <base64 of the change record>      (zero or more)
    ...

``#`` lines are comments. Each ``change`` line holds the canonical bytes of a
:class:`~ledger.consensus.reconfig.ValidatorSetChange` exactly as the block carried it, with the
approvals of its validators, and the *boundary size* ``S``: the tree size after the last block
decided by the previous set (block ``E - 1``). Checkpoints are cosigned by the set of the block
that produced them, and a block of the new set that adds anchors makes the tree larger than
``S``, so:

* a checkpoint of size ``<= S`` is verified with the previous policy (receipts from before the
  change keep verifying, with the keys that signed them);
* a checkpoint of size ``> S`` needs the new policy: a removed validator or a rotated-out key
  no longer counts towards its quorum.

**Verifying the chain** (:func:`verify_policy_chain`): starting from the genesis roster, every
change must be approved by a quorum of distinct members of the roster *before* it, with valid
Ed25519 signatures by their consensus keys over bytes that bind the chain id, the effective
height and the hash of that roster (:meth:`ValidatorSetChange.verify`); effective heights
increase by at least 2 (the core's lead rule) and boundary sizes never decrease. The policy of
each period is derived from its roster (:meth:`ValidatorRoster.policy`) exactly as the genesis
trust policy is derived from the genesis.

**The trust anchor** is the genesis roster at the top of the file. The auditor pins it to the
published trust policy (``genesis_policy=`` here, ``ledger verify --policy-chain F --policy P``
on the command line); the chain is then as trustworthy as that policy.

**What the chain does not authenticate:** the boundary sizes are facts of the ledger (the tree
size in block ``E - 1``), not signed by the change's approvers, who sign the change before it is
included. A forged larger ``S`` only widens the range where the *previous* quorum is accepted;
exploiting it still needs that previous quorum's keys, so it matters only once a whole old quorum
is compromised (a node can re-derive every ``S`` from its blocks with
:func:`policy_chain_from_blocks` and compare). docs/reconfiguration.md discusses it.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ledger.checkpoint import MAX_TREE_SIZE, parse_checkpoint_body, parse_decimal
from ledger.consensus.reconfig import (
    MIN_CHANGE_LEAD,
    ValidatorInfo,
    ValidatorRoster,
    ValidatorSetChange,
    decode_change,
)
from ledger.crypto import b64decode_strict
from ledger.errors import ConfigError, MalformedError, VerificationError
from ledger.note import parse_note
from ledger.policy import Group, Policy, Witness
from ledger.receipt import VerifiedReceipt, parse_receipt, verify_receipt

if TYPE_CHECKING:
    from ledger.consensus.block import Block

__all__ = [
    "CHAIN_HEADER",
    "MAX_CHAIN_LINKS",
    "MAX_CHAIN_SIZE",
    "ChainLink",
    "OutsideWitnesses",
    "PolicyChain",
    "PolicyPeriod",
    "parse_policy_chain",
    "policy_chain_from_blocks",
    "verify_policy_chain",
    "verify_receipt_with_chain",
]

#: The first line of a policy chain file.
CHAIN_HEADER: Final = "ledger-policy-chain/v1"
#: Largest policy chain file accepted.
MAX_CHAIN_SIZE: Final = 8 << 20
#: Most changes one file may list.
MAX_CHAIN_LINKS: Final = 4096

_SPLIT = re.compile(r"[ \t]+")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, kw_only=True)
class ChainLink:
    """One committed change and the boundary size after which its policy applies."""

    change: ValidatorSetChange
    boundary_size: int


@dataclass(frozen=True, kw_only=True)
class PolicyChain:
    """A parsed policy chain: chain id, genesis roster and the changes in order (unverified:
    see :func:`verify_policy_chain`)."""

    chain_id: str
    genesis: ValidatorRoster
    links: tuple[ChainLink, ...] = ()

    def with_change(self, change: ValidatorSetChange, *, boundary_size: int) -> PolicyChain:
        """A copy with one more link (appended; checked only by :func:`verify_policy_chain`)."""
        return PolicyChain(chain_id=self.chain_id, genesis=self.genesis,
                           links=(*self.links, ChainLink(change=change,
                                                         boundary_size=boundary_size)))

    def format(self) -> str:
        """The policy chain file text."""
        lines = [CHAIN_HEADER, f"chain {self.chain_id}"]
        for m in self.genesis.members:
            lines.append(
                f"validator {m.name} {m.consensus_key.hex()} {m.log_vkey} {m.cosigner_vkey}"
            )
        for link in self.links:
            blob = base64.b64encode(link.change.encode()).decode("ascii")
            lines.append(f"change {link.change.effective_height} {link.boundary_size} {blob}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True, kw_only=True)
class PolicyPeriod:
    """The policy for checkpoints of size ``> after_size`` (up to the next period's)."""

    after_size: int
    effective_height: int
    roster: ValidatorRoster
    policy: Policy


def policy_chain_from_blocks(
    chain_id: str, genesis: ValidatorRoster, blocks: Iterable[Block]
) -> PolicyChain:
    """The policy chain of committed ``blocks`` (heights 1, 2, ... in order): each change with
    the tree size of block ``E - 1`` as its boundary. A change whose block ``E - 1`` is not
    among ``blocks`` yet is left out (it is not in force). Nothing is verified here.

    Raises:
        MalformedError: the blocks are not consecutive from height 1.
    """
    sizes: dict[int, int] = {}
    changes: list[ValidatorSetChange] = []
    for expected, block in enumerate(blocks, start=1):
        if block.height != expected:
            raise MalformedError(f"block {block.height} where {expected} was expected")
        sizes[block.height] = block.tree_size
        changes.extend(block.changes)
    chain = PolicyChain(chain_id=chain_id, genesis=genesis)
    for change in changes:
        size = sizes.get(change.effective_height - 1)
        if size is not None:
            chain = chain.with_change(change, boundary_size=size)
    return chain


def parse_policy_chain(data: str | bytes) -> PolicyChain:
    """Parse a policy chain file (syntax and encodings only).

    Raises:
        MalformedError: wrong header, unknown or misplaced lines, bad numbers, keys or base64,
            a change record that does not decode, a genesis that is not a valid roster, too
            large; the message names the line.
    """
    if len(data) > MAX_CHAIN_SIZE:
        raise MalformedError(f"policy chain is larger than {MAX_CHAIN_SIZE} bytes")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedError("policy chain is not valid UTF-8") from None
    else:
        text = data
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or lines[0] != CHAIN_HEADER:
        raise MalformedError(f"policy chain does not start with {CHAIN_HEADER!r}")
    chain_id: str | None = None
    members: list[ValidatorInfo] = []
    links: list[ChainLink] = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            items = [item for item in _SPLIT.split(line) if item]
            if not items or items[0].startswith("#"):
                continue
            keyword, args = items[0], items[1:]
            if keyword == "chain" and len(args) == 1 and chain_id is None and not members:
                chain_id = args[0]
            elif keyword == "validator" and len(args) == 4 and chain_id is not None \
                    and not links:
                if not _HEX64.fullmatch(args[1]):
                    raise MalformedError("consensus key is not 64 lowercase hex digits")
                members.append(ValidatorInfo(name=args[0], consensus_key=bytes.fromhex(args[1]),
                                             log_vkey=args[2], cosigner_vkey=args[3]))
            elif keyword == "change" and len(args) == 3 and members:
                if len(links) >= MAX_CHAIN_LINKS:
                    raise MalformedError(f"more than {MAX_CHAIN_LINKS} changes")
                height = parse_decimal(args[0], what="effective height", limit=2**63 - 1)
                size = parse_decimal(args[1], what="boundary size", limit=MAX_TREE_SIZE)
                change = decode_change(b64decode_strict(args[2], what="change record"))
                if change.effective_height != height:
                    raise MalformedError("effective height differs from the change record's")
                links.append(ChainLink(change=change, boundary_size=size))
            else:
                raise MalformedError(f"unexpected {keyword!r} line")
        except (MalformedError, ConfigError) as exc:  # ProtocolError is a MalformedError
            raise MalformedError(f"policy chain line {number}: {exc.diagnostics()}") from None
    if chain_id is None or not members:
        raise MalformedError("policy chain lacks its chain line or genesis validators")
    try:
        genesis = ValidatorRoster(members=members)
    except ConfigError as exc:
        raise MalformedError(f"policy chain genesis: {exc.diagnostics()}") from None
    return PolicyChain(chain_id=chain_id, genesis=genesis, links=tuple(links))


def verify_policy_chain(chain: PolicyChain) -> tuple[PolicyPeriod, ...]:
    """Verify every link from the genesis; return the policy periods, oldest first (the first
    is the genesis policy, for every size).

    Raises:
        VerificationError: a change not approved by a quorum of the roster before it (or with
            a bad signature, for another chain or another roster, or that does not apply), an
            effective height less than 2 above the previous one, or a boundary size below the
            previous one.
    """
    roster = chain.genesis
    periods = [PolicyPeriod(after_size=-1, effective_height=1, roster=roster,
                            policy=roster.policy())]
    for i, link in enumerate(chain.links, start=1):
        change, prev = link.change, periods[-1]
        if change.effective_height < prev.effective_height + MIN_CHANGE_LEAD:
            raise VerificationError(
                f"change {i}: effective height {change.effective_height} is not at least "
                f"{MIN_CHANGE_LEAD} after {prev.effective_height}"
            )
        if link.boundary_size < max(prev.after_size, 0):
            raise VerificationError(f"change {i}: boundary size goes backwards")
        try:
            roster = change.verify(roster, chain_id=chain.chain_id)
        except VerificationError as exc:
            raise VerificationError(f"change {i}: {exc.diagnostics()}") from None
        periods.append(PolicyPeriod(after_size=link.boundary_size,
                                    effective_height=change.effective_height, roster=roster,
                                    policy=roster.policy()))
    return tuple(periods)


def _policy_for(periods: tuple[PolicyPeriod, ...], size: int) -> Policy:
    chosen = periods[0]
    for p in periods[1:]:
        if size > p.after_size:
            chosen = p
    return chosen.policy


@dataclass(frozen=True, kw_only=True)
class OutsideWitnesses:
    """What a pinned policy adds to the genesis policy: outside witnesses (c2sp.org/tlog-policy
    ``witness`` lines beyond the validators') and the groups over them and the validators'
    group, with the quorum that requires them (docs/witness.md). Every period's policy gets
    the same additions: the outside witnesses do not change when the validators do."""

    witnesses: tuple[Witness, ...]
    groups: tuple[Group, ...]
    quorum: str

    @classmethod
    def of(cls, pinned: Policy, genesis: Policy) -> OutsideWitnesses | None:
        """The additions of ``pinned`` to ``genesis`` (``None``: they are equal).

        Raises:
            VerificationError: ``pinned`` is not ``genesis`` plus outside witnesses and groups
                (its logs, validators or validators' group differ).
        """
        if pinned == genesis:
            return None
        base_witnesses = set(genesis.witnesses)
        base_groups = set(genesis.groups)
        if pinned.logs != genesis.logs or not base_witnesses <= set(pinned.witnesses) \
                or not base_groups <= set(pinned.groups) or pinned.quorum == genesis.quorum:
            raise VerificationError("the policy chain does not start from the given trust "
                                    "policy (nor from it with outside witnesses added)")
        return cls(witnesses=tuple(w for w in pinned.witnesses if w not in base_witnesses),
                   groups=tuple(g for g in pinned.groups if g not in base_groups),
                   quorum=pinned.quorum)

    def apply(self, period: Policy) -> Policy:
        """``period``'s policy (its validators) with these additions.

        Raises:
            VerificationError: an outside witness's key or name is one of the period's
                validators'.
        """
        try:
            return Policy(logs=period.logs, witnesses=(*period.witnesses, *self.witnesses),
                          groups=(*period.groups, *self.groups), quorum=self.quorum)
        except MalformedError as exc:
            raise VerificationError(f"the outside witnesses do not fit a period of the chain: "
                                    f"{exc.diagnostics()}") from None


def verify_receipt_with_chain(
    proof_text: str | bytes, chain: PolicyChain, digest: bytes, *,
    genesis_policy: Policy | None = None,
) -> VerifiedReceipt:
    """Verify a receipt for ``digest`` against the policy in force at its checkpoint's size.

    ``genesis_policy`` (recommended) pins the chain to the published genesis trust policy. It
    may be the genesis policy with outside witnesses added (:class:`OutsideWitnesses`): then
    every period's policy requires them the same way. An earliest bridge's first checkpoint is
    checked against the validators' policy of its period only (a witness cosigns the
    checkpoints pushed to it; the receipt's own, later checkpoint carries its cosignature and
    extends the first).

    Raises:
        MalformedError: the receipt or its checkpoint does not parse, or ``digest`` is not 32
            bytes.
        VerificationError: the chain does not verify (:func:`verify_policy_chain`), its genesis
            is not ``genesis_policy`` (with or without outside witnesses), or the receipt does
            not verify under the policy of its checkpoint size
            (:func:`ledger.receipt.verify_receipt`).
    """
    periods = verify_policy_chain(chain)
    outside = None if genesis_policy is None else OutsideWitnesses.of(genesis_policy,
                                                                      periods[0].policy)
    size = parse_checkpoint_body(parse_note(parse_receipt(proof_text).checkpoint).text).size
    policy = _policy_for(periods, size)
    return verify_receipt(proof_text, policy if outside is None else outside.apply(policy),
                          digest, earlier_policy=lambda earlier: _policy_for(periods, earlier))
