"""C2SP transparency-log trust policies (c2sp.org/tlog-policy): parse, format, evaluate.

A policy names the logs and witnesses a verifier trusts and the quorum of cosignatures it
requires. Lines, separated by newlines, items separated by ASCII spaces and tabs::

    log <vkey> [<url>]
    witness <name> <vkey> [<url>]
    group <name> <k>|all|any <member>...
    quorum <name>|none

Empty lines and lines starting with ``#`` (after optional whitespace) are ignored. The spec's
rules, each enforced by :func:`parse_policy` with the line number in the error:

* a group or the quorum may only name witnesses and groups defined on *preceding* lines, which
  rules out cycles; witnesses and groups share one namespace; ``none`` is predefined and may
  only be used as the quorum;
* a group lists at least one member; ``any`` means k = 1, ``all`` means k = n, and a number
  must satisfy 1 <= k <= n;
* "Each defined name can be listed as a group member at most once", anywhere in the file, so
  "each witness can contribute to a group, or to the quorum in particular, in only one way": the
  groups form a forest and no cosignature is ever counted twice;
* no two log lines and no two witness lines wrap the same public key. We also refuse a key
  that appears both as a log and as a witness: a key must not count in two roles;
* exactly one quorum line;
* the only control characters allowed are tab and newline.

This ledger's keys are Ed25519: a ``log`` key must have signature type 0x01 and a ``witness``
key type 0x04 (timestamped cosignature); other types are refused rather than silently never
matching.

Evaluation (:meth:`Policy.evaluate`): a checkpoint is valid when signed by one of the listed
logs *whose key name is the checkpoint's origin* and the quorum is met by the verified
cosignatures. For BFT time bounds the policy also exposes :meth:`Policy.fault_tolerance`: with a
top-level quorum group of n members and threshold k, f = n - k members may be faulty without
preventing or forging a quorum.

**Time bounds** (:meth:`Policy.time_bound`): every cosignature (type 0x04) carries the time its
signer saw the checkpoint, so each member of the quorum bounds the moment the tree existed.
The bound a group proves is computed from its members' bounds, bottom up:

* a group of *witnesses* (the validators, ``group validators 2f+1 v1 ... v3f+1``, or a BFT
  group of outside witnesses) is a Byzantine quorum: at most f = n - k of its members lie,
  so the (f + 1)-th smallest timestamp is no earlier than some honest member's and no later
  than the (f + 1)-th honest one (design brief, section 3);
* a group that has *groups* among its members combines separate trust domains, typically
  ``group required all validators audit`` (k of the validators AND an outside witness): its
  bound is the k-th smallest of its members' bounds, the one that still holds when k - 1 of
  the members lie, the trust a k-of-n threshold expresses. For "all" that is the latest
  member's bound: the document existed by then if *either* the validators' quorum or the
  outside witness is honest, so adding a witness to a policy never lets that witness, nor
  the validators, pull a receipt's time earlier than the other attests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from ledger.crypto import SIG_TYPE_COSIGNATURE_V1, SIG_TYPE_ED25519
from ledger.errors import MalformedError, VerificationError
from ledger.note import Verifier

__all__ = [
    "MAX_POLICY_ENTRIES",
    "MAX_POLICY_SIZE",
    "NONE",
    "VALIDATORS_GROUP",
    "Group",
    "Log",
    "Policy",
    "QuorumResult",
    "Witness",
    "parse_policy",
]

#: The predefined name of the empty quorum.
NONE: Final = "none"
#: The group a ledger's trust policy names its validators' quorum
#: (:meth:`ledger.consensus.reconfig.ValidatorRoster.policy`); a policy that also requires
#: outside witnesses keeps it as one member of its quorum.
VALIDATORS_GROUP: Final = "validators"
#: The spec recommends supporting at least 32 logs, 32 witnesses and 32 groups.
MAX_POLICY_ENTRIES: Final = 1024
MAX_POLICY_SIZE: Final = 1 << 20

_SPLIT = re.compile(r"[ \t]+")
_THRESHOLD = re.compile(r"[1-9][0-9]{0,5}")
# Allowed octets: tab, newline, 0x20-0x7E, and any octet with the high bit set.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True, kw_only=True)
class Log:
    """A trusted log key (type 0x01, key name = the log's origin) and an optional URL."""

    verifier: Verifier
    url: str | None = None


@dataclass(frozen=True, kw_only=True)
class Witness:
    """A named trusted cosigner key (type 0x04) and an optional URL."""

    name: str
    verifier: Verifier
    url: str | None = None


@dataclass(frozen=True, kw_only=True)
class Group:
    """``threshold``-of-``members``: witnessed when at least that many members witnessed."""

    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class QuorumResult:
    """The outcome of a successful :meth:`Policy.evaluate`.

    ``log`` is the trusted log whose signature counted; ``cosigners`` the names of the policy's
    witnesses with a verified cosignature, in policy order.
    """

    log: Log
    cosigners: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Policy:
    """A parsed trust policy. Build with :func:`parse_policy`, or directly (validated)."""

    logs: tuple[Log, ...]
    witnesses: tuple[Witness, ...]
    groups: tuple[Group, ...]
    quorum: str

    def __post_init__(self) -> None:
        # Re-check the structural rules so a Policy built in code obeys the same invariants as a
        # parsed one; the parser has already reported any violation with its line number.
        builder = _Builder()
        for log in self.logs:
            builder.add_log(log)
        for witness in self.witnesses:
            builder.add_witness(witness)
        for group in self.groups:
            builder.add_group(group)
        builder.set_quorum(self.quorum)

    # ----------------------------------------------------------------------------- queries

    def verifiers(self) -> tuple[Verifier, ...]:
        """Every key the policy trusts: the logs' and the witnesses'."""
        return tuple(log.verifier for log in self.logs) + tuple(w.verifier for w in self.witnesses)

    def quorum_witnesses(self) -> tuple[Witness, ...]:
        """The witnesses that can contribute to the quorum (its leaves), in policy order."""
        groups = {g.name: g for g in self.groups}
        wanted: set[str] = set()
        pending = [self.quorum] if self.quorum != NONE else []
        while pending:
            name = pending.pop()
            group = groups.get(name)
            if group is None:
                wanted.add(name)
            else:
                pending.extend(group.members)
        return tuple(w for w in self.witnesses if w.name in wanted)

    def subpolicy(self, group: str) -> Policy:
        """This policy with ``group`` as its quorum: the same logs, the witnesses and groups
        under ``group`` only (for instance the validators' part of a policy that also requires
        outside witnesses).

        Raises:
            MalformedError: ``group`` is not a group of this policy.
        """
        groups = {g.name: g for g in self.groups}
        if group not in groups:
            raise MalformedError(f"the policy has no group {group!r}")
        under: set[str] = set()
        pending = [group]
        while pending:
            name = pending.pop()
            under.add(name)
            pending.extend(groups[name].members if name in groups else ())
        return Policy(logs=self.logs,
                      witnesses=tuple(w for w in self.witnesses if w.name in under),
                      groups=tuple(g for g in self.groups if g.name in under), quorum=group)

    def fault_tolerance(self) -> int:
        """f = n - k of the quorum's top-level group: how many members may be faulty.

        A quorum of one witness or ``none`` tolerates no fault (f = 0).
        """
        for group in self.groups:
            if group.name == self.quorum:
                return len(group.members) - group.threshold
        return 0

    # -------------------------------------------------------------------------- evaluation

    def evaluate(self, signers: Iterable[Verifier], *, origin: str) -> QuorumResult:
        """Check that verified ``signers`` satisfy the policy for a checkpoint of ``origin``.

        ``signers`` must be keys whose signatures were verified (for instance the verifiers of
        :attr:`ledger.note.OpenedNote.verified`); a key listed twice counts once.

        Raises:
            VerificationError: no listed log with key name ``origin`` signed, or the quorum is
                not met (the message says by how much).
        """
        signed = set(signers)
        log = next(
            (
                entry
                for entry in self.logs
                if entry.verifier in signed and entry.verifier.name == origin
            ),
            None,
        )
        if log is None:
            raise VerificationError(
                f"checkpoint is not signed by a trusted log for origin {origin!r}"
            )
        cosigned = {w.name for w in self.witnesses if w.verifier in signed}
        satisfied = set(cosigned)
        # Groups may only name earlier definitions, so one pass in file order settles them all.
        for group in self.groups:
            if sum(1 for m in group.members if m in satisfied) >= group.threshold:
                satisfied.add(group.name)
        if self.quorum != NONE and self.quorum not in satisfied:
            raise VerificationError(self._shortfall(satisfied))
        return QuorumResult(
            log=log, cosigners=tuple(w.name for w in self.witnesses if w.name in cosigned)
        )

    def time_bound(self, timestamps: Mapping[str, int]) -> int:
        """The moment the checkpoint is proven to have existed by (module docstring, "Time
        bounds"), from the verified cosignature ``timestamps`` of the policy's witnesses, by
        name (POSIX seconds). Call it after :meth:`evaluate` accepted those cosigners.

        Raises:
            VerificationError: the quorum is ``none``, or a group of witnesses the quorum
                rests on has fewer than f + 1 timestamps.
        """
        if self.quorum == NONE:
            raise VerificationError("policy requires no cosignatures, so no time can be bounded")
        groups = {g.name: g for g in self.groups}
        satisfied = set(timestamps)
        for group in self.groups:  # as evaluate(): earlier definitions only, one pass
            if sum(1 for m in group.members if m in satisfied) >= group.threshold:
                satisfied.add(group.name)

        def bound(name: str) -> int | None:
            group = groups.get(name)
            if group is None:
                return timestamps.get(name)
            if name not in satisfied:
                return None
            found = sorted(b for m in group.members if (b := bound(m)) is not None)
            if any(m in groups for m in group.members):  # a group of groups: k-th smallest
                rank = group.threshold - 1
            else:  # a Byzantine group of witnesses: the (f + 1)-th smallest, f = n - k
                rank = len(group.members) - group.threshold
            if len(found) <= rank:
                raise VerificationError(
                    f"{len(found)} validator cosignatures cannot bound the time: "
                    f"f = {rank} needs {rank + 1}")
            return found[rank]

        result = bound(self.quorum)
        if result is None:
            raise VerificationError(
                "0 validator cosignatures cannot bound the time: f = 0 needs 1")
        return result

    def _shortfall(self, satisfied: set[str]) -> str:
        for group in self.groups:
            if group.name == self.quorum:
                have = sum(1 for m in group.members if m in satisfied)
                missing = ", ".join(
                    f"{'group' if m in {g.name for g in self.groups} else 'witness'} {m!r}"
                    for m in group.members if m not in satisfied)
                return (
                    f"quorum {self.quorum!r} not met: {have} of {len(group.members)} members "
                    f"witnessed, {group.threshold} required; not satisfied: {missing}"
                )
        return f"quorum {self.quorum!r} not met: witness {self.quorum!r} did not cosign"

    # ------------------------------------------------------------------------------ format

    def format(self) -> str:
        """The policy as tlog-policy text (comments are not kept)."""
        out: list[str] = []
        for log in self.logs:
            out.append(_join("log", log.verifier.vkey, log.url))
        for witness in self.witnesses:
            out.append(_join("witness", witness.name, witness.verifier.vkey, witness.url))
        for group in self.groups:
            n = len(group.members)
            k = "all" if group.threshold == n and n > 1 else str(group.threshold)
            out.append(_join("group", group.name, k, *group.members))
        out.append(f"quorum {self.quorum}")
        return "\n".join(out) + "\n"


def policy_text(policy: Policy, *, comments: Sequence[str]) -> str:
    """A trust policy file: ``#`` comment lines, then ``policy`` (:meth:`Policy.format`).

    Raises:
        MalformedError: the text does not read back as ``policy`` (a bug of the formatter or
            the parser: a policy we publish must read back as itself).
    """
    text = "".join(f"# {line}\n" for line in comments) + policy.format()
    if parse_policy(text) != policy:
        raise MalformedError("the trust policy does not read back as itself")
    return text


def _join(*items: str | None) -> str:
    return " ".join(item for item in items if item is not None)


class _Builder:
    """Accumulates definitions and enforces the spec's rules as each one is added."""

    def __init__(self) -> None:
        self.logs: list[Log] = []
        self.witnesses: list[Witness] = []
        self.groups: list[Group] = []
        self.quorum: str | None = None
        self.names: set[str] = set()
        self.members: set[str] = set()
        self.keys: set[bytes] = set()

    def _new_key(self, verifier: Verifier, what: str) -> None:
        if verifier.public_key in self.keys:
            raise MalformedError(f"{what} key {verifier.name} duplicates a key already listed")
        self.keys.add(verifier.public_key)

    def _new_name(self, name: str) -> None:
        if not name or _SPLIT.search(name):
            raise MalformedError("name is empty or contains whitespace")
        if name == NONE:
            raise MalformedError("'none' is predefined and cannot be redefined")
        if name in self.names:
            raise MalformedError(f"name {name!r} is already defined")
        if len(self.names) >= 2 * MAX_POLICY_ENTRIES:
            raise MalformedError("policy defines too many names")

    def add_log(self, log: Log) -> None:
        if log.verifier.sig_type != SIG_TYPE_ED25519:
            raise MalformedError("a log key must have signature type 0x01 (Ed25519)")
        if len(self.logs) >= MAX_POLICY_ENTRIES:
            raise MalformedError("policy lists too many logs")
        self._new_key(log.verifier, "log")
        self.logs.append(log)

    def add_witness(self, witness: Witness) -> None:
        if witness.verifier.sig_type != SIG_TYPE_COSIGNATURE_V1:
            raise MalformedError("a witness key must have signature type 0x04 (cosignature/v1)")
        self._new_name(witness.name)
        self._new_key(witness.verifier, "witness")
        self.names.add(witness.name)
        self.witnesses.append(witness)

    def add_group(self, group: Group) -> None:
        self._new_name(group.name)
        if not group.members:
            raise MalformedError(f"group {group.name!r} has no members")
        if not 1 <= group.threshold <= len(group.members):
            raise MalformedError(
                f"group {group.name!r} threshold {group.threshold} is not between 1 and "
                f"{len(group.members)}"
            )
        for member in group.members:
            if member == NONE:
                raise MalformedError("'none' cannot be a group member")
            if member not in self.names:
                raise MalformedError(f"group member {member!r} is not defined on an earlier line")
            if member in self.members:
                raise MalformedError(f"{member!r} is listed as a group member more than once")
            self.members.add(member)
        self.names.add(group.name)
        self.groups.append(group)

    def set_quorum(self, name: str) -> None:
        if self.quorum is not None:
            raise MalformedError("policy has more than one quorum line")
        if name != NONE and name not in self.names:
            raise MalformedError(f"quorum {name!r} is not defined on an earlier line")
        self.quorum = name

    def build(self) -> Policy:
        if self.quorum is None:
            raise MalformedError("policy has no quorum line")
        return Policy(
            logs=tuple(self.logs),
            witnesses=tuple(self.witnesses),
            groups=tuple(self.groups),
            quorum=self.quorum,
        )


def _threshold(text: str, n: int) -> int:
    if text == "any":
        return 1
    if text == "all":
        return n
    if not _THRESHOLD.fullmatch(text):
        raise MalformedError(f"threshold {text!r} is not 'all', 'any' or a positive decimal")
    return int(text)


def parse_policy(data: str | bytes) -> Policy:
    """Parse tlog-policy text.

    Bytes that are not UTF-8 are accepted in names, URLs and comments, as the spec treats high
    octets as opaque (they are kept as surrogate escapes, so names still compare octet-wise);
    verifier keys must be valid UTF-8 key names.

    Raises:
        MalformedError: on any violation, with ``policy line <n>:`` naming the offending line.
    """
    if isinstance(data, bytes):
        if len(data) > MAX_POLICY_SIZE:
            raise MalformedError(f"policy is larger than {MAX_POLICY_SIZE} bytes")
        text = data.decode("utf-8", errors="surrogateescape")
    else:
        if len(data) > MAX_POLICY_SIZE:
            raise MalformedError(f"policy is larger than {MAX_POLICY_SIZE} bytes")
        text = data
    builder = _Builder()
    for number, line in enumerate(text.split("\n"), start=1):
        try:
            _parse_line(builder, line)
        except MalformedError as exc:
            raise MalformedError(f"policy line {number}: {exc.diagnostics()}") from None
    return builder.build()


def _parse_line(builder: _Builder, line: str) -> None:
    if _FORBIDDEN.search(line):
        raise MalformedError("control characters other than tab are not allowed")
    items = [item for item in _SPLIT.split(line) if item]
    if not items or items[0].startswith("#"):
        return
    keyword, args = items[0], items[1:]
    if keyword == "log":
        if len(args) not in (1, 2):
            raise MalformedError("expected 'log <vkey> [<url>]'")
        builder.add_log(Log(verifier=_vkey(args[0]), url=args[1] if len(args) == 2 else None))
    elif keyword == "witness":
        if len(args) not in (2, 3):
            raise MalformedError("expected 'witness <name> <vkey> [<url>]'")
        builder.add_witness(
            Witness(name=args[0], verifier=_vkey(args[1]), url=args[2] if len(args) == 3 else None)
        )
    elif keyword == "group":
        if len(args) < 3:
            raise MalformedError("expected 'group <name> <k|all|any> <member>...'")
        members = tuple(args[2:])
        builder.add_group(
            Group(name=args[0], threshold=_threshold(args[1], len(members)), members=members)
        )
    elif keyword == "quorum":
        if len(args) != 1:
            raise MalformedError("expected 'quorum <name>'")
        builder.set_quorum(args[0])
    else:
        raise MalformedError(f"unknown keyword {keyword!r}")


def _vkey(text: str) -> Verifier:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedError("verifier key is not valid UTF-8") from None
    return Verifier.from_vkey(text)
