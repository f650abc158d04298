"""The genesis of a chain: the validators, the trust policy derived from them, the files.

Two files describe a running validator (the node config is :mod:`ledger.config`):

* **the genesis** (``genesis.json``, shared by every institution, byte-for-byte the same): the
  chain id bound into every consensus signature, the log origin, the genesis time, and the
  validators with their public keys. Institutions compare its *genesis hash* out of band (read
  aloud, on paper) before the chain starts: if two operators computed the same hash, they run
  the same chain with the same validator set and the same trust policy.
* **the node config** (``node.toml``, private to one operator): where to listen, the peers'
  URLs, the data directory, the key file, the hashes of the client tokens, batch limits and
  timeouts.

Genesis file (JSON, UTF-8)
--------------------------
JSON because the genesis is exchanged between institutions and hashed, and JSON has one obvious
canonical form in the standard library; TOML is kept for the hand-edited node config::

    {
      "format": "ledger-genesis/v1",
      "chain_id": "ledger-devnet",
      "origin": "ledger.example.org/devnet",
      "genesis_time": 1732240800000,          // Unix time in milliseconds; null in a draft
      "validators": [
        {"name": "validator-1",
         "log_vkey": "ledger.example.org/devnet+1a2b3c4d+AQ...",
         "cosigner_vkey": "validator-1+5e6f7a8b+BA...",
         "consensus_key": "<64 hex digits: Ed25519 public key of consensus messages>",
         "url": "https://v1.example.org:7000"}  // optional
      ]
    }

A *draft* (``genesis_time`` null) is what the ceremony edits (``ledger genesis init`` and
``add-validator``); ``ledger genesis finalize`` sets the time and freezes it. A node only loads a
final genesis (:func:`load_genesis`).

The genesis time is in milliseconds because it is the BFT time of block 1 in the consensus core
(:class:`ledger.consensus.ConsensusCore` takes ``genesis_time`` in ms).

Validators are kept sorted by name, whatever the order they were added in, so that two
institutions who assemble the same validators independently get the same genesis hash.

Genesis hash
------------
``SHA-256`` of the canonical encoding (:meth:`Genesis.canonical_bytes`): the JSON object above
with exactly the keys shown (``url`` present only when set), keys sorted, no insignificant
whitespace, non-ASCII characters escaped (``json.dumps(..., sort_keys=True,
separators=(",", ":"), ensure_ascii=True)``). Every field, the URLs included, changes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from ledger.consensus.reconfig import ValidatorInfo, ValidatorRoster
from ledger.consensus.validators import MAX_VALIDATORS, fault_tolerance, quorum
from ledger.crypto import ValidatorKeys, check_key_name
from ledger.errors import ConfigError, MalformedError
from ledger.note import Verifier
from ledger.policy import Policy, policy_text

__all__ = [
    "GENESIS_FORMAT",
    "MAX_CHAIN_ID_BYTES",
    "MAX_VALIDATORS",
    "Genesis",
    "GenesisDraft",
    "ValidatorInfo",
    "check_url",
    "format_genesis",
    "format_vkeys",
    "load_genesis",
    "load_genesis_draft",
    "parse_genesis",
    "parse_vkeys",
    "read_small_file",
    "trust_policy",
    "validator_for_keys",
    "validator_json",
]

GENESIS_FORMAT: Final = "ledger-genesis/v1"

#: The consensus core binds the chain id into every signature and accepts 1 to 64 bytes.
MAX_CHAIN_ID_BYTES: Final = 64

#: Genesis and config files are small; a larger file is a mistake, not a config.
MAX_FILE_SIZE: Final = 1 << 20

_HEX64 = re.compile(r"[0-9a-f]{64}")


def read_small_file(path: Path, what: str) -> bytes:
    """The bytes of a genesis or config file (at most :data:`MAX_FILE_SIZE`).

    Raises:
        ConfigError: unreadable or too large.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_SIZE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > MAX_FILE_SIZE:
        raise ConfigError(f"{what} {path} is larger than {MAX_FILE_SIZE} bytes")
    return data


def check_url(url: str, *, where: str) -> str:
    """``url`` without a trailing slash, if it is an http(s) URL with a host.

    Raises:
        ConfigError: it is not, has an invalid port, or has a query or fragment.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: {url!r} is not an http(s) URL with a host")
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(f"{where}: {url!r} has an invalid port") from None
    if parts.query or parts.fragment:
        raise ConfigError(f"{where}: {url!r} must not have a query or fragment")
    return url.rstrip("/")


def validator_json(v: ValidatorInfo) -> dict[str, str]:
    """The JSON object of a validator in the genesis file (``url`` only when set)."""
    out = {"name": v.name, "log_vkey": v.log_vkey, "cosigner_vkey": v.cosigner_vkey,
           "consensus_key": v.consensus_key.hex()}
    if v.url is not None:
        out["url"] = v.url
    return out


def _verifier(vkey: str, what: str) -> Verifier:
    try:
        return Verifier.from_vkey(vkey)
    except MalformedError as exc:
        raise ConfigError(f"{what}: {exc.diagnostics()}") from None


def _check_chain(chain_id: str, origin: str) -> None:
    encoded = chain_id.encode("utf-8", errors="surrogatepass")
    if not 1 <= len(encoded) <= MAX_CHAIN_ID_BYTES:
        raise ConfigError(f"chain_id must be 1 to {MAX_CHAIN_ID_BYTES} bytes")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in chain_id):
        raise ConfigError("chain_id must not contain spaces or control characters")
    try:
        check_key_name(origin, what="origin")
    except MalformedError as exc:
        raise ConfigError(exc.diagnostics()) from None


def _check_validators(origin: str, validators: Sequence[ValidatorInfo]) -> None:
    if len(validators) > MAX_VALIDATORS:
        raise ConfigError(f"a genesis holds at most {MAX_VALIDATORS} validators")
    seen_names: set[str] = set()
    seen_keys: set[bytes] = set()
    for v in validators:
        if v.name in seen_names:
            raise ConfigError(f"validator {v.name!r} is listed twice")
        seen_names.add(v.name)
        if v.url is not None and check_url(v.url, where=f"validator {v.name!r} url") != v.url:
            raise ConfigError(f"validator {v.name!r}: url must not end with a slash")
        log = v.log_verifier
        if log.name != origin:
            raise ConfigError(
                f"validator {v.name!r}: log vkey is for origin {log.name!r}, "
                f"but the genesis origin is {origin!r}"
            )
        # One key in two roles, or shared by two validators, would let one signature count
        # twice (in the policy or in a consensus quorum).
        for key, role in (
            (log.public_key, "log key"),
            (v.cosigner_verifier.public_key, "cosigner key"),
            (v.consensus_key, "consensus key"),
        ):
            if key in seen_keys:
                raise ConfigError(f"validator {v.name!r}: {role} duplicates a key already listed")
            seen_keys.add(key)


def _sorted(validators: Iterable[ValidatorInfo]) -> tuple[ValidatorInfo, ...]:
    return tuple(sorted(validators, key=lambda v: v.name.encode("utf-8", "surrogatepass")))


@dataclass(frozen=True, kw_only=True)
class GenesisDraft:
    """A genesis under construction: no time yet, validators may still be added.

    Validators are stored sorted by name (the order they are added in does not matter).

    Raises (on construction):
        ConfigError: an invalid chain id or origin, too many validators, a duplicate name or
            key, or a log vkey for another origin.
    """

    chain_id: str
    origin: str
    validators: tuple[ValidatorInfo, ...] = ()

    def __post_init__(self) -> None:
        _check_chain(self.chain_id, self.origin)
        object.__setattr__(self, "validators", _sorted(self.validators))
        _check_validators(self.origin, self.validators)

    def with_validator(self, validator: ValidatorInfo) -> GenesisDraft:
        """A copy with ``validator`` added.

        Raises:
            ConfigError: the name or a key is already present, or the log vkey is for another
                origin.
        """
        return replace(self, validators=(*self.validators, validator))

    def finalize(self, *, genesis_time: int) -> Genesis:
        """Freeze this draft at ``genesis_time`` (Unix milliseconds).

        Raises:
            ConfigError: no validators, or a negative time.
        """
        return Genesis(
            chain_id=self.chain_id,
            origin=self.origin,
            genesis_time=genesis_time,
            validators=self.validators,
        )


@dataclass(frozen=True, kw_only=True)
class Genesis:
    """A final genesis: chain id, log origin, genesis time (Unix ms) and validators.

    Raises (on construction):
        ConfigError: as :class:`GenesisDraft`, or no validators, or a negative genesis time.
    """

    chain_id: str
    origin: str
    genesis_time: int
    validators: tuple[ValidatorInfo, ...]

    def __post_init__(self) -> None:
        _check_chain(self.chain_id, self.origin)
        if isinstance(self.genesis_time, bool) or not 0 <= self.genesis_time < 1 << 63:
            raise ConfigError("genesis_time must be a non-negative integer (Unix milliseconds)")
        object.__setattr__(self, "validators", _sorted(self.validators))
        if not self.validators:
            raise ConfigError("a genesis needs at least one validator")
        _check_validators(self.origin, self.validators)

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the genesis file."""
        return {
            "format": GENESIS_FORMAT,
            "chain_id": self.chain_id,
            "origin": self.origin,
            "genesis_time": self.genesis_time,
            "validators": [validator_json(v) for v in self.validators],
        }

    def canonical_bytes(self) -> bytes:
        """The canonical encoding that :meth:`genesis_hash` hashes (see the module docstring)."""
        return json.dumps(
            self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode("ascii")

    def genesis_hash(self) -> str:
        """SHA-256 of :meth:`canonical_bytes`, as 64 lowercase hex digits."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    @property
    def n(self) -> int:
        """The number of validators."""
        return len(self.validators)

    def validator(self, name: str) -> ValidatorInfo:
        """The validator called ``name``.

        Raises:
            ConfigError: there is none.
        """
        for v in self.validators:
            if v.name == name:
                return v
        raise ConfigError(f"validator {name!r} is not in the genesis of {self.chain_id!r}")

    def trust_policy(self) -> str:
        """The trust policy text of this chain (:func:`trust_policy`)."""
        return trust_policy(self)

    def consensus_keys(self) -> tuple[bytes, ...]:
        """The validators' consensus public keys in genesis order (the proposer rotation order);
        pass them to :class:`ledger.consensus.ValidatorSet`."""
        return tuple(v.consensus_key for v in self.validators)

    def roster(self) -> ValidatorRoster:
        """The genesis validators as the consensus roster (proposer order)."""
        return ValidatorRoster(members=self.validators)

    def policy(self) -> Policy:
        """The trust policy of this chain (:meth:`ValidatorRoster.policy`)."""
        return self.roster().policy()


def trust_policy(genesis: Genesis) -> str:
    """The c2sp.org/tlog-policy text that verifies this chain's receipts.

    Every validator's log key is a ``log`` (any of them may sign a checkpoint as the log), every
    cosigner key is a ``witness``, and the quorum is ``group validators <k> <names>`` with
    k = n - f (2f + 1 when n = 3f + 1). A comment header names the chain and its genesis hash;
    the text parses back with :func:`ledger.policy.parse_policy` to the same policy.
    """
    return policy_text(genesis.policy(), comments=(
        f"Trust policy for the ledger {genesis.origin} (chain {genesis.chain_id})",
        f"genesis hash {genesis.genesis_hash()}",
        f"{genesis.n} validators tolerate f = {fault_tolerance(genesis.n)} faults; "
        f"a checkpoint needs {quorum(genesis.n)} cosignatures.",
    ))


def validator_for_keys(genesis: Genesis, keys: ValidatorKeys) -> ValidatorInfo:
    """The genesis entry of the validator whose key file is ``keys``, checked key by key.

    Raises:
        ConfigError: the name is not in the genesis, the origin differs, or any public key
            differs from the genesis (a wrong key file or a wrong genesis).
    """
    entry = genesis.validator(keys.name)
    if keys.origin != genesis.origin:
        raise ConfigError(
            f"key file is for origin {keys.origin!r}, the genesis for {genesis.origin!r}"
        )
    mine = ValidatorInfo.from_keys(keys, url=entry.url)
    if mine != entry:
        raise ConfigError(f"the key file of {keys.name!r} does not match its keys in the genesis")
    return entry


# ---- vkeys files (what an institution hands to the genesis ceremony)

_VKEY_LABELS: Final = {
    "name": "name",
    "origin": "origin",
    "log vkey": "log_vkey",
    "cosigner vkey": "cosigner_vkey",
    "consensus key": "consensus_key",
}


def parse_vkeys(text: str, *, source: str = "vkeys", url: str | None = None) -> ValidatorInfo:
    """Parse the public keys printed by ``ledger keys generate`` / ``ledger keys show``.

    Lines are ``<label>: <value>`` with the labels ``name``, ``origin``, ``log vkey``,
    ``cosigner vkey`` and ``consensus key`` (64 hex digits), each exactly once. Blank lines,
    ``#`` comments and the ``wrote <file>`` line of ``keys generate`` are skipped, so its output
    can be saved as is. The origin must be the key name of the log vkey.

    Raises:
        ConfigError: an unknown or repeated label, a missing one, or an invalid key (``source``
            and the line number name the place).
    """
    fields: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("wrote "):
            continue
        label, sep, value = stripped.partition(":")
        key = _VKEY_LABELS.get(label.strip())
        if not sep or key is None:
            raise ConfigError(
                f"{source} line {number}: expected '<label>: <value>' with a label among "
                + ", ".join(_VKEY_LABELS)
            )
        if key in fields:
            raise ConfigError(f"{source} line {number}: {label.strip()!r} given twice")
        fields[key] = value.strip()
    missing = [label for label, key in _VKEY_LABELS.items() if key not in fields]
    if missing:
        raise ConfigError(f"{source}: missing {', '.join(repr(m) for m in missing)}")
    if not _HEX64.fullmatch(fields["consensus_key"]):
        raise ConfigError(f"{source}: consensus key must be 64 lowercase hex digits")
    try:
        validator = ValidatorInfo(
            name=fields["name"],
            log_vkey=fields["log_vkey"],
            cosigner_vkey=fields["cosigner_vkey"],
            consensus_key=bytes.fromhex(fields["consensus_key"]),
            url=url,
        )
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.diagnostics()}") from None
    if validator.log_verifier.name != fields["origin"]:
        raise ConfigError(f"{source}: the log vkey is not for origin {fields['origin']!r}")
    return validator


def format_vkeys(keys: ValidatorKeys) -> str:
    """The public keys of a key file in the format :func:`parse_vkeys` reads."""
    return (
        f"name:          {keys.name}\n"
        f"origin:        {keys.origin}\n"
        f"log vkey:      {keys.log_vkey}\n"
        f"cosigner vkey: {keys.cosigner_vkey}\n"
        f"consensus key: {keys.consensus_key.public_key.hex()}\n"
    )


# ---- genesis files


def _obj(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be an object")
    return value


def _str(obj: Mapping[str, Any], key: str, where: str) -> str:
    if key not in obj:
        raise ConfigError(f"{where}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, str):
        raise ConfigError(f"{where}: field {key!r} must be a string")
    return value


def _only(obj: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}")


def _parse_validator(value: object, where: str) -> ValidatorInfo:
    obj = _obj(value, where)
    _only(obj, ("name", "log_vkey", "cosigner_vkey", "consensus_key", "url"), where)
    name = _str(obj, "name", where)
    key_hex = _str(obj, "consensus_key", where)
    if not _HEX64.fullmatch(key_hex):
        raise ConfigError(f"{where}: consensus_key must be 64 lowercase hex digits")
    url = _str(obj, "url", where) if "url" in obj else None
    try:
        return ValidatorInfo(
            name=name,
            log_vkey=_str(obj, "log_vkey", where),
            cosigner_vkey=_str(obj, "cosigner_vkey", where),
            consensus_key=bytes.fromhex(key_hex),
            url=url,
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.diagnostics()}") from None


def _parse_genesis_json(data: bytes, where: str) -> tuple[GenesisDraft, int | None]:
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(f"{where}: not valid UTF-8 JSON ({exc})") from None
    obj = _obj(raw, where)
    _only(obj, ("format", "chain_id", "origin", "genesis_time", "validators"), where)
    fmt = _str(obj, "format", where)
    if fmt != GENESIS_FORMAT:
        raise ConfigError(f"{where}: field 'format' is {fmt!r}, expected {GENESIS_FORMAT!r}")
    stamp = obj.get("genesis_time")
    if stamp is not None and (isinstance(stamp, bool) or not isinstance(stamp, int)):
        raise ConfigError(f"{where}: field 'genesis_time' must be an integer (Unix ms) or null")
    validators_raw = obj.get("validators", [])
    if not isinstance(validators_raw, list):
        raise ConfigError(f"{where}: field 'validators' must be a list")
    validators = tuple(
        _parse_validator(v, f"{where}: validators[{i}]") for i, v in enumerate(validators_raw)
    )
    try:
        draft = GenesisDraft(
            chain_id=_str(obj, "chain_id", where),
            origin=_str(obj, "origin", where),
            validators=validators,
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.diagnostics()}") from None
    return draft, stamp


def parse_genesis(data: bytes, *, source: str = "genesis") -> Genesis:
    """Parse a final genesis file's bytes; ``source`` names it in errors.

    Raises:
        ConfigError: invalid JSON, a missing, unknown or mistyped field, an invalid validator, or
            a draft (no ``genesis_time``).
    """
    draft, stamp = _parse_genesis_json(data, source)
    if stamp is None:
        raise ConfigError(
            f"{source}: the genesis is a draft (no genesis_time); run 'ledger genesis finalize'"
        )
    try:
        return draft.finalize(genesis_time=stamp)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.diagnostics()}") from None


def load_genesis(path: str | os.PathLike[str]) -> Genesis:
    """Read and parse a final genesis file.

    Raises:
        ConfigError: the file is unreadable or too large, or as :func:`parse_genesis`.
    """
    target = Path(path)
    return parse_genesis(read_small_file(target, "genesis file"), source=f"genesis file {target}")


def load_genesis_draft(path: str | os.PathLike[str]) -> GenesisDraft:
    """Read a genesis draft (a file whose ``genesis_time`` is null).

    Raises:
        ConfigError: the file is unreadable, malformed, or already final.
    """
    target = Path(path)
    where = f"genesis file {target}"
    draft, stamp = _parse_genesis_json(read_small_file(target, "genesis file"), where)
    if stamp is not None:
        raise ConfigError(f"{where}: the genesis is already final and cannot be changed")
    return draft


def format_genesis(genesis: Genesis | GenesisDraft) -> str:
    """The genesis file text (indented JSON) of a final genesis or a draft."""
    if isinstance(genesis, Genesis):
        obj = genesis.to_json()
    else:
        obj = {
            "format": GENESIS_FORMAT,
            "chain_id": genesis.chain_id,
            "origin": genesis.origin,
            "genesis_time": None,
            "validators": [validator_json(v) for v in genesis.validators],
        }
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
