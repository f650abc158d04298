"""The node's side of validator-set changes (package-private; pure except the HTTP handlers).

The rules live in :mod:`ledger.consensus.reconfig` (what a change is, who approves it, when it
takes effect) and the consensus core applies them; docs/reconfiguration.md has the operator's
procedure. What a node adds, and what this module owns:

* :class:`NodeValidators`: the node's copy of the :class:`ValidatorHistory` (replayed from the
  stored blocks on every start, so restarts are safe, then advanced by each committed block),
  the *boundary size* of every change in force (the tree size of block ``E - 1``, exactly as in
  :mod:`ledger.policy_chain`), and from those:

  - which roster a checkpoint of a given tree size belongs to. A checkpoint is cosigned by the
    set of the block that produced it; blocks from ``E`` on that add anchors make the tree larger
    than the boundary, so ``size <= boundary`` is the old set and ``size > boundary`` the new
    one -- the same rule an offline verifier applies with the policy chain, so what the node
    collects is what the auditor checks. One :class:`~ledger.node_state.CosignatureCollector`
    per period, each with that roster's cosigner keys and quorum (2f + 1 of *that* set);
  - which of the keys the node holds is the one of a height (consensus messages, envelopes)
    or of a period (log signature and cosignature);
  - which consensus keys may send peer envelopes: the members of every roster from the one of
    the previous height on (a peer one height behind at the switch still gets through; a removed
    validator is refused once the chain is two heights past its last one);
  - the policy chain served at ``GET /v1/policy-chain``.

* **Keys across a rotation.** A node holds its key file plus optional further key files
  (``Node(..., extra_keys=...)``); at every height it signs with the one in that height's set.
  A rotated validator can therefore either (a) be restarted *before* ``E`` holding the old and
  the new key, and switch at ``E`` with no gap, or (b) be restarted *after* ``E`` with only the
  new key file in place of the old one (the simple procedure of docs/reconfiguration.md; the
  set has one validator fewer between ``E`` and the restart). A node whose keys are in no
  roster of the chain refuses to start (:meth:`NodeValidators.check_keys`).

* :class:`ChangePool`: changes an operator submitted (``POST /v1/admin/validator-changes``, an
  ``admin`` client token) or a peer gossiped, already approved by a quorum of the newest
  roster. :class:`ReconfigApplication` offers the oldest to the core in ``Batch.changes``; the
  core leaves out one that is not valid at that height, so offering early or twice is harmless.
  A change leaves the pool when a committed block carries it, when it can no longer be carried
  (``height >= E - 2``), or when the newest roster changed under it (it names another
  ``prev_set_hash``).

What is not here: ``/v1/policy`` keeps serving the *genesis* trust policy (it is the trust
anchor auditors pin; the policy chain extends it), and a validator ADDed by a change needs a
``[peers]`` entry in every node's config (peers are configured, not discovered), so the nodes
must be restarted with it before ``E``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Final, Protocol

from aiohttp import web

from ledger.config import NodeConfig
from ledger.consensus import Batch, Block
from ledger.consensus.messages import decode_block
from ledger.consensus.reconfig import (
    MAX_CHANGE_BYTES,
    MAX_CHANGE_LEAD,
    MIN_CHANGE_LEAD,
    Epoch,
    ValidatorHistory,
    ValidatorRoster,
    ValidatorSetChange,
    decode_change,
)
from ledger.crypto import Ed25519Key, ValidatorKeys
from ledger.errors import (
    ConfigError,
    CorruptionError,
    MalformedError,
    ProtocolError,
    VerificationError,
)
from ledger.node_state import CosignatureCollector, LogApplication
from ledger.policy import Policy
from ledger.policy_chain import PolicyChain
from ledger.storage.base import Store

__all__ = [
    "ADMIN_CHANGES_PATH",
    "MAX_PENDING_CHANGES",
    "POLICY_CHAIN_PATH",
    "ChangePool",
    "NodeValidators",
    "ReconfigApplication",
    "ReconfigHost",
    "add_reconfig_routes",
]

#: Changes waiting for a block at most (an operator submits one at a time; gossip duplicates).
MAX_PENDING_CHANGES: Final = 16
ADMIN_CHANGES_PATH: Final = "/v1/admin/validator-changes"
POLICY_CHAIN_PATH: Final = "/v1/policy-chain"
#: A JSON body holds the base64 of at most MAX_CHANGE_BYTES, plus a little.
_MAX_ADMIN_BODY: Final = MAX_CHANGE_BYTES * 4 // 3 + 1024


class ChangePool:
    """Pending quorum-approved changes in arrival order, each once (by ``change_id``)."""

    def __init__(self, *, capacity: int = MAX_PENDING_CHANGES) -> None:
        self._capacity = capacity
        self._pending: dict[bytes, ValidatorSetChange] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, change_id: object) -> bool:
        return change_id in self._pending

    def changes(self) -> list[ValidatorSetChange]:
        """The pending changes, oldest first."""
        return list(self._pending.values())

    def add(self, change: ValidatorSetChange) -> bool:
        """Add a change the caller verified; return false if it was pending already.

        A change with more approvals than the pending copy replaces it (same ``change_id``).

        Raises:
            VerificationError: the pool is full.
        """
        old = self._pending.get(change.change_id)
        if old is not None:
            if len(change.approvals) > len(old.approvals):
                self._pending[change.change_id] = change
            return False
        if len(self._pending) >= self._capacity:
            raise VerificationError(f"{self._capacity} validator-set changes are pending already")
        self._pending[change.change_id] = change
        return True

    def candidate(self, height: int) -> ValidatorSetChange | None:
        """The oldest change a block at ``height`` may carry under the lead rule."""
        for change in self._pending.values():
            if MIN_CHANGE_LEAD <= change.effective_height - height <= MAX_CHANGE_LEAD:
                return change
        return None

    def on_commit(self, block: Block, *, latest: ValidatorRoster | None) -> None:
        """Drop what ``block`` carried, what expired and what no longer fits the newest roster
        ``latest`` (see the module docstring)."""
        carried = {c.change_id for c in block.changes}
        for cid, change in list(self._pending.items()):
            if (cid in carried or block.height >= change.effective_height - MIN_CHANGE_LEAD
                    or latest is None or change.prev_set_hash != latest.hash):
                del self._pending[cid]


class ReconfigApplication:
    """The node's ``Application``: the log's batch plus the oldest pending change."""

    def __init__(self, *, log_app: LogApplication, pool: ChangePool) -> None:
        self._log_app = log_app
        self._pool = pool

    def propose(self, height: int, prev_block: Block | None, now: int) -> Batch:
        """:meth:`LogApplication.propose`, with a change that may be carried at ``height``.

        Raises:
            StorageError: as :meth:`LogApplication.propose`.
        """
        batch = self._log_app.propose(height, prev_block, now)
        change = self._pool.candidate(height)
        if change is None:
            return batch
        return dataclasses.replace(batch, changes=(change,))

    def validate(self, block: Block) -> None:
        """:meth:`LogApplication.validate` (the core checks ``block.changes`` itself).

        Raises:
            MalformedError, VerificationError: as :meth:`LogApplication.validate`.
        """
        self._log_app.validate(block)


class NodeValidators:
    """The validator history as the node uses it (see the module docstring).

    ``keys``: every key file the node holds, the configured one first.
    """

    def __init__(
        self, *, chain_id: str, genesis: ValidatorRoster, keys: Sequence[ValidatorKeys]
    ) -> None:
        if not keys:
            raise ConfigError("a node holds at least one validator key")
        self.chain_id = chain_id
        self.genesis = genesis
        self.keys = tuple(keys)
        self.history = ValidatorHistory.genesis(genesis)
        #: effective height E -> tree size of block E - 1, for every change in force.
        self._boundaries: dict[int, int] = {}
        self._collectors: dict[int, CosignatureCollector | None] = {}
        self._senders: tuple[int, int, dict[bytes, str]] | None = None

    # -- following the chain ---------------------------------------------------------------

    def sync(self, store: Store) -> ValidatorHistory:
        """Apply the stored blocks after :attr:`history`'s height (all of them on a start).

        Raises:
            CorruptionError: a stored block is missing or does not decode.
            ConfigError: a stored block holds a change this chain cannot have made (the data
                directory is not of this genesis).
        """
        for height in range(self.history.height + 1, store.last_height() + 1):
            record = store.block(height)
            if record is None:
                raise CorruptionError(f"block {height} is missing from the store")
            try:
                block = decode_block(record.block)
            except ProtocolError as exc:
                raise CorruptionError(f"stored block {height}: {exc.diagnostics()}") from None
            try:
                self.apply(block)
            except VerificationError as exc:
                raise ConfigError(
                    f"stored block {height} does not follow this genesis's validator sets: "
                    f"{exc.diagnostics()}"
                ) from None
        return self.history

    def apply(self, block: Block) -> None:
        """Advance by committed ``block`` (the next height).

        Raises:
            VerificationError: ``block`` is not the next height or carries an invalid change
                (the core never commits one: a bug or a foreign store).
        """
        self.history = self.history.apply(block, chain_id=self.chain_id)
        for epoch in self.history.epochs[1:]:
            if epoch.start_height == block.height + 1:
                self._boundaries[epoch.start_height] = block.tree_size

    def check_keys(self) -> None:
        """Check that one of the held keys is a validator of some roster of the chain so far
        (the genesis included), with the configured name.

        Raises:
            ConfigError: none is (a wrong key file, or a rotation not committed yet).
        """
        for epoch in self.history.epochs:
            if epoch.roster is not None and self._held(epoch.roster) is not None:
                return
        raise ConfigError(
            "none of this node's keys is a validator of the genesis or of a committed "
            "validator-set change (wrong key file, or the rotation is not committed yet)"
        )

    # -- which set, which key -----------------------------------------------------------------

    def _held(self, roster: ValidatorRoster) -> ValidatorKeys | None:
        for keys in self.keys:
            member = roster.member(keys.consensus_key.public_key)
            if (member is not None and member.name == keys.name
                    and member.cosigner_vkey == keys.cosigner_vkey
                    and member.log_vkey == keys.log_vkey):
                return keys
        return None

    def roster_at(self, height: int) -> ValidatorRoster:
        """The roster of ``height`` (``max(height, 1)``)."""
        roster = self.history.roster_at(max(height, 1))
        assert roster is not None  # built from a roster: never a fixed history
        return roster

    def epoch_for_size(self, size: int) -> Epoch:
        """The period whose set cosigns checkpoints of tree size ``size`` (module docstring)."""
        chosen = self.history.epochs[0]
        for epoch in self.history.epochs[1:]:
            boundary = self._boundaries.get(epoch.start_height)
            if boundary is not None and size > boundary:
                chosen = epoch
        return chosen

    def roster_for_size(self, size: int) -> ValidatorRoster:
        """The roster that cosigns checkpoints of tree size ``size``."""
        roster = self.epoch_for_size(size).roster
        assert roster is not None
        return roster

    def policy_for_size(self, size: int) -> Policy:
        """The trust policy a checkpoint of tree size ``size`` must satisfy."""
        return self.roster_for_size(size).policy()

    def keys_at(self, height: int) -> ValidatorKeys:
        """The held keys of the set of ``height`` (the configured ones if none is)."""
        return self._held(self.roster_at(height)) or self.keys[0]

    def envelope_key(self, height: int) -> Ed25519Key:
        """The consensus key to sign peer envelopes with while working on ``height``."""
        return self.keys_at(height).consensus_key

    def senders(self, last_height: int) -> Mapping[bytes, str]:
        """Consensus key -> name of every validator that may send us envelopes when our last
        committed block is ``last_height`` (module docstring). Cached per height."""
        cached = self._senders
        if cached is not None and cached[:2] == (last_height, len(self.history.epochs)):
            return cached[2]
        floor = max(last_height - 1, 1)
        first = max(e.start_height for e in self.history.epochs if e.start_height <= floor)
        out: dict[bytes, str] = {}
        for epoch in self.history.epochs:
            if epoch.start_height >= first and epoch.roster is not None:
                out.update((m.consensus_key, m.name) for m in epoch.roster.members)
        self._senders = (last_height, len(self.history.epochs), out)
        return out

    # -- checkpoint cosignatures -------------------------------------------------------------

    def collector(self, size: int) -> CosignatureCollector | None:
        """The collector of the period of tree size ``size``; ``None`` if the node holds no key
        of that set (it then neither cosigns nor builds notes for it)."""
        epoch = self.epoch_for_size(size)
        if epoch.start_height not in self._collectors:
            roster = epoch.roster
            assert roster is not None
            keys = self._held(roster)
            self._collectors[epoch.start_height] = None if keys is None else CosignatureCollector(
                keys=keys,
                cosigners={m.name: m.cosigner_verifier for m in roster.members},
                quorum=roster.validator_set.quorum,
            )
        return self._collectors[epoch.start_height]

    def collectors_for_peer(self, size: int, *, latest_size: int) -> list[CosignatureCollector]:
        """Where a peer's cosignature for ``size`` goes. Beyond our own tree the period may not
        be known yet (a pending change whose block ``E - 1`` we lack): then it is buffered in
        the collector of the newest period too, and verified once we reach that size."""
        out = [self.collector(size)]
        if size > latest_size and self.history.latest.start_height not in self._boundaries \
                and len(self.history.epochs) > 1:
            newest = self.history.latest
            if newest.start_height not in self._collectors:
                roster = newest.roster
                assert roster is not None
                keys = self._held(roster)
                self._collectors[newest.start_height] = None if keys is None else \
                    CosignatureCollector(
                        keys=keys,
                        cosigners={m.name: m.cosigner_verifier for m in roster.members},
                        quorum=roster.validator_set.quorum,
                    )
            out.append(self._collectors[newest.start_height])
        return [c for i, c in enumerate(out) if c is not None and c not in out[:i]]

    def rejected(self) -> int:
        """Peer cosignatures the collectors refused (for the metrics)."""
        return sum(c.rejected for c in self._collectors.values() if c is not None)

    # -- changes -----------------------------------------------------------------------------

    def check_change(self, change: ValidatorSetChange, *, next_height: int) -> None:
        """Check a change for the pool: approved by a quorum of the newest roster and still
        includable in a block at ``next_height`` or later.

        Raises:
            VerificationError: another chain or roster, an op that does not apply, too few or
                bad approvals (:meth:`ValidatorSetChange.verify`), or ``effective_height`` too
                close (``E - next_height < 2``: the change is void) or too far.
        """
        latest = self.history.latest.roster
        if latest is None:
            raise VerificationError("this chain's validator set is fixed")
        change.verify(latest, chain_id=self.chain_id)
        lead = change.effective_height - next_height
        if lead < MIN_CHANGE_LEAD:
            raise VerificationError(
                f"effective height {change.effective_height} is too close: the next block is "
                f"{next_height}, a change needs a lead of {MIN_CHANGE_LEAD}; sign a new one"
            )
        if lead > MAX_CHANGE_LEAD:
            raise VerificationError(f"effective height is more than {MAX_CHANGE_LEAD} ahead")

    def policy_chain(self) -> PolicyChain:
        """The policy chain of every change in force (equal to
        :func:`ledger.policy_chain.policy_chain_from_blocks` over the stored blocks)."""
        chain = PolicyChain(chain_id=self.chain_id, genesis=self.genesis)
        for epoch in self.history.epochs[1:]:
            boundary = self._boundaries.get(epoch.start_height)
            if epoch.change is not None and boundary is not None:
                chain = chain.with_change(epoch.change, boundary_size=boundary)
        return chain


# --------------------------------------------------------------------------- HTTP


class ReconfigHost(Protocol):
    """What the routes need of a node (:class:`ledger.node.Node` has all of it)."""

    config: NodeConfig
    halted: str | None

    @property
    def validator_state(self) -> NodeValidators: ...

    def submit_change(self, change: ValidatorSetChange) -> bool: ...


def _error(status: int, code: str, message: str) -> web.Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return web.json_response({"error": {"code": code, "message": message}}, status=status,
                             headers=headers)


def _admin_refusal(request: web.Request, config: NodeConfig) -> web.Response | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _error(401, "unauthorized", "a bearer token is required")
    client = config.client_for_token(token.strip())
    if client is None:
        return _error(401, "unauthorized", "unknown bearer token")
    if client.revoked:
        return _error(403, "forbidden", f"the token of client {client.name!r} is revoked")
    if not client.admin:
        return _error(403, "forbidden", f"client {client.name!r} is not an operator (admin)")
    return None


def parse_change_body(body: bytes) -> ValidatorSetChange:
    """The change of a ``{"change": "<base64 of the canonical bytes>"}`` body.

    Raises:
        MalformedError: not that JSON, not base64, or bytes :func:`decode_change` refuses
            (a :class:`ProtocolError`).
    """
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MalformedError("the body is not valid JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("change"), str):
        raise MalformedError('the body must be {"change": "<base64>"}')
    try:
        raw = base64.b64decode(obj["change"], validate=True)
    except (binascii.Error, ValueError):
        raise MalformedError("change is not base64") from None
    return decode_change(raw)


def _post_change(host: ReconfigHost) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        refusal = _admin_refusal(request, host.config)
        if refusal is not None:
            return refusal
        if request.content_length is not None and request.content_length > _MAX_ADMIN_BODY:
            return _error(413, "body_too_large", f"body exceeds {_MAX_ADMIN_BODY} bytes")
        body = await request.content.read(_MAX_ADMIN_BODY + 1)
        if len(body) > _MAX_ADMIN_BODY:
            return _error(413, "body_too_large", f"body exceeds {_MAX_ADMIN_BODY} bytes")
        if host.halted is not None:
            return _error(503, "unavailable", f"the node is not running: {host.halted}")
        try:
            change = parse_change_body(body)
        except MalformedError as exc:
            return _error(400, exc.code, exc.diagnostics())
        try:
            added = host.submit_change(change)
        except VerificationError as exc:
            return _error(422, "invalid_change", exc.diagnostics())
        return web.json_response(
            {"change_id": change.change_id.hex(), "effective_height": change.effective_height,
             "status": "pending", "new": added},
            status=202,
        )
    return handler


def _get_policy_chain(host: ReconfigHost) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=host.validator_state.policy_chain().format(),
                            content_type="text/plain")
    return handler


def add_reconfig_routes(app: web.Application, host: ReconfigHost) -> None:
    """``POST /v1/admin/validator-changes`` (admin token; 202, or 400/401/403/413/422/503) and
    ``GET /v1/policy-chain`` (text, the ``ledger-policy-chain/v1`` file)."""
    app.router.add_post(ADMIN_CHANGES_PATH, _post_change(host))
    app.router.add_get(POLICY_CHAIN_PATH, _get_policy_chain(host))


def decode_change_item(payload: bytes) -> ValidatorSetChange:
    """A gossiped change (envelope item ``KIND_CHANGE``: the canonical change bytes).

    Raises:
        ProtocolError: as :func:`decode_change`.
    """
    return decode_change(payload)


def held_keys(keys: ValidatorKeys, extra: Iterable[ValidatorKeys]) -> tuple[ValidatorKeys, ...]:
    """The configured key then the extra ones, each once (by consensus key).

    Raises:
        ConfigError: an extra key has another name than the configured one (a node is one
            validator; a rotation may rename it only with a new config).
    """
    out = [keys]
    for k in extra:
        if k.name != keys.name:
            raise ConfigError(f"extra key file is for {k.name!r}, the node is {keys.name!r}")
        if all(k.consensus_key.public_key != o.consensus_key.public_key for o in out):
            out.append(k)
    return tuple(out)

