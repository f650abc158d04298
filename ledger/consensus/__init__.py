"""Sans-I/O Tendermint consensus: messages, blocks, validator sets, safety state, evidence and
the state machine (:class:`~ledger.consensus.core.ConsensusCore`). See ``CORE_API.md`` for how a
driver (:mod:`ledger.replica.driver`, which the node and the simulator run) runs the core."""

from __future__ import annotations

from ledger.consensus.block import GENESIS_PREV_HASH, Block, bft_time
from ledger.consensus.core import (
    Action,
    Application,
    Batch,
    Broadcast,
    Commit,
    ConsensusCore,
    CoreStats,
    Persist,
    ScheduleTimeout,
    TimeoutConfig,
    TimeoutKind,
)
from ledger.consensus.evidence import DuplicateVoteEvidence, EvidencePool
from ledger.consensus.messages import (
    CommitCertificate,
    Decision,
    Ed25519Signer,
    Message,
    Proposal,
    Signer,
    Vote,
    VoteType,
    decode_message,
    encode_message,
    verify_certificate,
)
from ledger.consensus.reconfig import (
    Approval,
    ChangeOp,
    OpKind,
    ValidatorHistory,
    ValidatorInfo,
    ValidatorRoster,
    ValidatorSetChange,
    decode_change,
    validator_set_at,
)
from ledger.consensus.safety import DoubleSignRefused, SafetyState, Step
from ledger.consensus.validators import ValidatorSet

__all__ = [
    "GENESIS_PREV_HASH",
    "Action",
    "Application",
    "Approval",
    "Batch",
    "Block",
    "Broadcast",
    "ChangeOp",
    "Commit",
    "CommitCertificate",
    "ConsensusCore",
    "CoreStats",
    "Decision",
    "DoubleSignRefused",
    "DuplicateVoteEvidence",
    "Ed25519Signer",
    "EvidencePool",
    "Message",
    "OpKind",
    "Persist",
    "Proposal",
    "SafetyState",
    "ScheduleTimeout",
    "Signer",
    "Step",
    "TimeoutConfig",
    "TimeoutKind",
    "ValidatorHistory",
    "ValidatorInfo",
    "ValidatorRoster",
    "ValidatorSet",
    "ValidatorSetChange",
    "Vote",
    "VoteType",
    "bft_time",
    "decode_change",
    "decode_message",
    "encode_message",
    "validator_set_at",
    "verify_certificate",
]
