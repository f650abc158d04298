"""Ed25519 keys for validators: derivation, key files, signing and verification.

This module wraps PyNaCl so that the rest of the package never sees a ``nacl`` exception: a
key or signature of the wrong shape raises :class:`~ledger.errors.MalformedError`, a signature
that does not verify raises :class:`~ledger.errors.VerificationError`.

One master seed, three keys
---------------------------
A validator keeps a single 32-byte master seed in its key file. From it we derive three
independent Ed25519 key pairs, each from ``SHA-256(DERIVATION_LABEL || purpose || 0x0A ||
master seed)``:

* ``log``: the checkpoint signature of c2sp.org/tlog-checkpoint, signature type 0x01, key
  name = the log origin;
* ``cosignature``: the timestamped cosignature of c2sp.org/tlog-cosignature, type 0x04, key
  name = the validator's name;
* ``consensus``: the signature of peer messages (prevotes, precommits, proposals).

Why separate keys rather than one key under three signature types: c2sp.org/signed-note says
that reusing one key for different types is allowed only "if domain separation can be
ensured". A type-0x01 signature covers the raw checkpoint body, which begins with the origin
line, while a type-0x04 cosignature covers ``cosignature/v1\\ntime <T>\\n`` + body; a log whose
origin were ``cosignature/v1`` would make one a prefix-collision of the other. Peer messages are
yet another byte format. Distinct keys make every cross-protocol replay impossible by
construction, and c2sp.org/tlog-cosignature already requires distinct keys per cosigner. The
derivation is one-way, so the compromise of one derived key reveals neither the master seed
nor the other two keys.

Key IDs and verifier keys (c2sp.org/signed-note)
------------------------------------------------
``key ID = SHA-256(key name || 0x0A || signature type || public key)[:4]``, and a verifier key
("vkey") is ``<name>+<hex key ID>+<base64(type || public key)>``. They live here, below the
note layer, so that a key can print its own vkey; :mod:`ledger.note` parses them.

Key file format
---------------
A text file, mode 0600, written atomically (temporary file, fsync, rename)::

    ledger-validator-key/v1
    name <validator name>
    origin <log origin>
    seed <base64 of the 32-byte master seed>

It holds a name and an origin next to the seed because both are bound into key IDs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Final

import nacl.exceptions
import nacl.signing

from ledger.errors import ConfigError, MalformedError, VerificationError

__all__ = [
    "DERIVATION_LABEL",
    "KEY_FILE_HEADER",
    "PUBLIC_KEY_SIZE",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "SIG_TYPE_COSIGNATURE_V1",
    "SIG_TYPE_ED25519",
    "Ed25519Key",
    "ValidatorKeys",
    "b64decode_strict",
    "check_key_name",
    "format_vkey",
    "key_id",
    "read_key_file",
    "verify_ed25519",
    "write_key_file",
]

#: Signature type of plain Ed25519 note signatures (c2sp.org/signed-note).
SIG_TYPE_ED25519: Final = 0x01
#: Signature type of timestamped Ed25519 cosignatures (c2sp.org/tlog-cosignature).
SIG_TYPE_COSIGNATURE_V1: Final = 0x04

SEED_SIZE: Final = 32
PUBLIC_KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64

#: Domain-separation label of the per-purpose seed derivation (see the module docstring).
DERIVATION_LABEL: Final = b"ledger/validator-key-derivation/v1\n"
KEY_FILE_HEADER: Final = "ledger-validator-key/v1"

_PURPOSE_LOG: Final = b"log"
_PURPOSE_COSIGNATURE: Final = b"cosignature"
_PURPOSE_CONSENSUS: Final = b"consensus"

#: A key file is a few hundred bytes; anything much larger is not one.
_MAX_KEY_FILE_SIZE: Final = 64 * 1024


def b64decode_strict(text: str, *, what: str) -> bytes:
    """Decode standard, padded base64 (RFC 4648 section 4) and accept only its canonical form.

    Python's decoder tolerates non-zero padding bits, so two different strings could decode to
    the same bytes; re-encoding and comparing rejects every such alias, which keeps signature
    lines and proof hashes non-malleable.

    Raises:
        MalformedError: ``text`` is not canonical base64 (``what`` names the field).
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise MalformedError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise MalformedError(f"{what} is not canonical base64")
    return raw


def check_key_name(name: str, *, what: str = "key name") -> str:
    """Return ``name`` if it is a valid c2sp.org/signed-note key name.

    Key names "MUST be non-empty and MUST NOT contain any Unicode spaces or plus (U+002B)
    characters"; a note "MUST NOT contain any ASCII control characters", so neither may a name.

    Raises:
        MalformedError: the name is empty, holds a space, a plus, a control character, or is not
            encodable as UTF-8.
    """
    if not name:
        raise MalformedError(f"{what} is empty")
    for ch in name:
        if ch.isspace() or ch == "+" or ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise MalformedError(f"{what} {name!r} contains a space, '+' or control character")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedError(f"{what} is not valid UTF-8") from None
    return name


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """The 4-byte key ID ``SHA-256(name || 0x0A || type || public key)[:4]`` (c2sp.org/signed-note).

    For type 0x04 this derivation is mandatory (c2sp.org/tlog-cosignature, "Format").
    """
    h = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([sig_type]) + public_key)
    return h.digest()[:4]


def format_vkey(name: str, sig_type: int, public_key: bytes) -> str:
    """The verifier key text ``<name>+<hex key ID>+<base64(type || public key)>``.

    Raises:
        MalformedError: ``name`` is not a valid key name.
    """
    check_key_name(name)
    kid = key_id(name, sig_type, public_key).hex()
    material = base64.b64encode(bytes([sig_type]) + public_key).decode("ascii")
    return f"{name}+{kid}+{material}"


def verify_ed25519(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Verify an RFC 8032 Ed25519 signature; return ``None`` on success.

    Raises:
        MalformedError: the public key is not 32 bytes.
        VerificationError: the signature is not 64 bytes, the key is not a valid curve point, or
            the signature does not verify.
    """
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise MalformedError(f"Ed25519 public key must be {PUBLIC_KEY_SIZE} bytes")
    if len(signature) != SIGNATURE_SIZE:
        raise VerificationError(f"Ed25519 signature must be {SIGNATURE_SIZE} bytes")
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        # BadSignatureError for a wrong signature; other CryptoErrors for keys that are not
        # valid points. To a verifier both mean the same thing: this signature is not good.
        raise VerificationError("Ed25519 signature does not verify") from None


@dataclass(frozen=True)
class Ed25519Key:
    """An Ed25519 signing key held as its 32-byte RFC 8032 seed.

    The seed is excluded from ``repr`` so that a key never ends up in a log line by accident.
    """

    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_SIZE:
            raise MalformedError(f"Ed25519 seed must be {SEED_SIZE} bytes")

    @cached_property
    def _signing(self) -> nacl.signing.SigningKey:
        # Expanding the seed into a key pair costs about as much as a signature: once per key.
        return nacl.signing.SigningKey(self.seed)

    @cached_property
    def public_key(self) -> bytes:
        """The 32-byte RFC 8032 public key."""
        return bytes(self._signing.verify_key)

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``message`` (deterministic, RFC 8032)."""
        return bytes(self._signing.sign(message).signature)


def _derive(master_seed: bytes, purpose: bytes) -> Ed25519Key:
    return Ed25519Key(hashlib.sha256(DERIVATION_LABEL + purpose + b"\n" + master_seed).digest())


@dataclass(frozen=True, kw_only=True)
class ValidatorKeys:
    """A validator's identity: its name, the log origin it signs for, and its master seed.

    Construct with keywords only; :meth:`generate` draws a fresh seed from the OS.

    Raises (on construction):
        MalformedError: the name or origin is not a valid key name, the name is the reserved
            policy name ``none``, or the seed is not 32 bytes.
    """

    name: str
    origin: str
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        check_key_name(self.name, what="validator name")
        check_key_name(self.origin, what="log origin")
        if self.name == "none":
            # "none" is predefined by c2sp.org/tlog-policy; a witness cannot be called that.
            raise MalformedError("validator name 'none' is reserved by tlog-policy")
        if len(self.seed) != SEED_SIZE:
            raise MalformedError(f"master seed must be {SEED_SIZE} bytes")

    @classmethod
    def generate(cls, *, name: str, origin: str) -> ValidatorKeys:
        """A new validator identity with a seed from ``os.urandom``.

        Raises:
            MalformedError: ``name`` or ``origin`` is not a valid key name, or ``name`` is
                ``none``.
        """
        return cls(name=name, origin=origin, seed=os.urandom(SEED_SIZE))

    @cached_property
    def log_key(self) -> Ed25519Key:
        """The checkpoint (type 0x01) signing key; its key name is :attr:`origin`."""
        return _derive(self.seed, _PURPOSE_LOG)

    @cached_property
    def cosigner_key(self) -> Ed25519Key:
        """The cosignature (type 0x04) signing key; its key name is :attr:`name`."""
        return _derive(self.seed, _PURPOSE_COSIGNATURE)

    @cached_property
    def consensus_key(self) -> Ed25519Key:
        """The key that signs consensus messages between validators."""
        return _derive(self.seed, _PURPOSE_CONSENSUS)

    @cached_property
    def log_vkey(self) -> str:
        """The verifier key of :attr:`log_key`: ``<origin>+<key ID>+<base64(0x01 || pk)>``."""
        return format_vkey(self.origin, SIG_TYPE_ED25519, self.log_key.public_key)

    @cached_property
    def cosigner_vkey(self) -> str:
        """The verifier key of :attr:`cosigner_key`: ``<name>+<key ID>+<base64(0x04 || pk)>``."""
        return format_vkey(self.name, SIG_TYPE_COSIGNATURE_V1, self.cosigner_key.public_key)

    def to_text(self) -> str:
        """The key file text (see the module docstring). It contains the secret seed."""
        seed = base64.b64encode(self.seed).decode("ascii")
        return f"{KEY_FILE_HEADER}\nname {self.name}\norigin {self.origin}\nseed {seed}\n"

    @classmethod
    def from_text(cls, text: str) -> ValidatorKeys:
        """Parse key file text.

        Raises:
            MalformedError: wrong header, missing, repeated or unknown fields, bad base64, or an
                invalid name, origin or seed.
        """
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if not lines or lines[0] != KEY_FILE_HEADER:
            raise MalformedError(f"key file does not start with {KEY_FILE_HEADER!r}")
        fields: dict[str, str] = {}
        for number, line in enumerate(lines[1:], start=2):
            key, sep, value = line.partition(" ")
            if not sep or key not in ("name", "origin", "seed"):
                raise MalformedError(f"key file line {number}: expected 'name', 'origin' or 'seed'")
            if key in fields:
                raise MalformedError(f"key file line {number}: {key!r} given twice")
            fields[key] = value
        missing = {"name", "origin", "seed"} - fields.keys()
        if missing:
            raise MalformedError(f"key file lacks {', '.join(sorted(missing))}")
        seed = b64decode_strict(fields["seed"], what="key file seed")
        return cls(name=fields["name"], origin=fields["origin"], seed=seed)


def write_key_file(
    path: str | os.PathLike[str], keys: ValidatorKeys, *, overwrite: bool = False
) -> None:
    """Write ``keys`` to ``path`` atomically with mode 0600.

    The text goes to a temporary file in the same directory (created 0600, never wider), is
    fsynced, and is then renamed into place, so a crash leaves either no file or a whole one.
    Without ``overwrite`` the final step is a hard link, which fails if ``path`` exists even
    when another process created it a moment ago.

    Raises:
        ConfigError: ``path`` exists and ``overwrite`` is false, or the file cannot be written.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    data = keys.to_text().encode("utf-8")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".key", dir=directory)
    except OSError as exc:
        raise ConfigError(f"cannot write key file in {directory}: {exc.strerror}") from None
    try:
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if overwrite:
                os.replace(tmp_name, target)
            else:
                os.link(tmp_name, target)
        except FileExistsError:
            raise ConfigError(f"{target} already exists (use --force to replace it)") from None
        except OSError as exc:
            raise ConfigError(f"cannot write key file {target}: {exc.strerror}") from None
    finally:
        if os.path.lexists(tmp_name):
            os.unlink(tmp_name)
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not every platform can open a directory; the rename is still atomic
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def read_key_file(path: str | os.PathLike[str]) -> ValidatorKeys:
    """Read a validator key file.

    A key file readable or writable by group or others is refused, as ssh refuses such a
    private key: a seed that others could read is no longer a secret.

    Raises:
        ConfigError: the file is missing, unreadable, too large, too permissive or malformed.
    """
    target = Path(path)
    try:
        info = target.stat()
        if info.st_size > _MAX_KEY_FILE_SIZE:
            raise ConfigError(f"{target} is too large to be a key file")
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise ConfigError(f"{target} is accessible by group or others; chmod 600 it")
        text = target.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read key file {target}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"key file {target} is not UTF-8 text") from None
    try:
        return ValidatorKeys.from_text(text)
    except MalformedError as exc:
        raise ConfigError(f"key file {target}: {exc.diagnostics()}") from None
