"""The ``ledger`` command line: a thin click layer over library calls.

Command groups (one section each below; other groups are added here the same way):

* ``ledger hash FILE...``      SHA-256 of files, printed like ``sha256sum``;
* ``ledger verify``            offline receipt verification for auditors;
* ``ledger keys ...``          validator key files;
* ``ledger log ...``           the local proving ground (:mod:`ledger.prover`).

Exit status, the same for every command: 0 success; 1 a well-formed proof, note or quorum that
does not verify (:class:`~ledger.errors.VerificationError`); 2 unreadable or malformed input, bad
usage, or any other :class:`~ledger.errors.LedgerError`. Errors print one line to stderr, never a
traceback. The library below never reads a clock: commands pass the time in.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final, NoReturn, ParamSpec, TypeVar

import click

from ledger.crypto import ValidatorKeys, read_key_file, write_key_file
from ledger.errors import LedgerError, MalformedError, VerificationError
from ledger.policy import parse_policy
from ledger.receipt import MAX_RECEIPT_SIZE, verify_receipt

if TYPE_CHECKING:
    from ledger.prover import LocalLog

__all__ = ["EXIT_ERROR", "EXIT_INVALID", "EXIT_OK", "main"]

EXIT_OK: Final = 0
EXIT_INVALID: Final = 1
EXIT_ERROR: Final = 2

_CHUNK: Final = 1 << 20
_MAX_POLICY_FILE: Final = 1 << 20

P = ParamSpec("P")
R = TypeVar("R")


class _Exit(Exception):
    """Raised inside commands to end with a status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _fail(status: int, message: str) -> NoReturn:
    raise _Exit(status, message)


def _errors_to_exit(func: Callable[P, R]) -> Callable[P, R]:
    """Map our errors to exit statuses and one-line messages on stderr."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except _Exit as exc:
            prefix = "invalid" if exc.status == EXIT_INVALID else "error"
            click.echo(f"{prefix}: {exc}", err=True)
            sys.exit(exc.status)
        except VerificationError as exc:
            click.echo(f"invalid: {exc.diagnostics()}", err=True)
            sys.exit(EXIT_INVALID)
        except LedgerError as exc:
            click.echo(f"error: {exc.diagnostics()}", err=True)
            sys.exit(EXIT_ERROR)

    return wrapper


def _read_bytes(path: str, *, what: str, limit: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        _fail(EXIT_ERROR, f"cannot read {what} {path}: {exc.strerror}")
    if len(data) > limit:
        _fail(EXIT_ERROR, f"{what} {path} is larger than {limit} bytes")
    return data


def _sha256_stream(handle: BinaryIO) -> bytes:
    h = hashlib.sha256()
    while chunk := handle.read(_CHUNK):
        h.update(chunk)
    return h.digest()


def _hash_file(path: str) -> bytes:
    """SHA-256 of a file (``-`` = stdin), streamed in 1 MiB chunks."""
    if path == "-":
        return _sha256_stream(sys.stdin.buffer)
    try:
        with open(path, "rb") as handle:
            return _sha256_stream(handle)
    except OSError as exc:
        _fail(EXIT_ERROR, f"cannot read {path}: {exc.strerror}")


def _parse_digest(text: str) -> bytes:
    cleaned = text.strip()
    if len(cleaned) != 64:
        _fail(EXIT_ERROR, "--digest must be 64 hex digits (a SHA-256 digest)")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        _fail(EXIT_ERROR, "--digest must be 64 hex digits (a SHA-256 digest)")


def _digest_from(digest_hex: str | None, file: str | None) -> bytes:
    if (digest_hex is None) == (file is None):
        _fail(EXIT_ERROR, "give exactly one of --digest HEX or FILE")
    if digest_hex is not None:
        return _parse_digest(digest_hex)
    assert file is not None
    return _hash_file(file)


def _utc(timestamp: int) -> str:
    try:
        return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return f"{timestamp} seconds after the Unix epoch"


# ---------------------------------------------------------------------------------- the group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Permissioned hash-ledger for document notarisation.

    Anchors SHA-256 digests of documents in an RFC 9162 Merkle log and issues receipts
    (c2sp.org/tlog-proof) that anyone can verify offline with the document and the published
    trust policy.
    """


# ----------------------------------------------------------------------------------- hash


@main.command("hash")
@click.argument("files", nargs=-1, required=True)
@_errors_to_exit
def hash_command(files: tuple[str, ...]) -> None:
    """Print the SHA-256 digest of each FILE ('-' for stdin), like sha256sum."""
    failed = False
    for path in files:
        try:
            digest = _hash_file(path)
        except _Exit as exc:
            click.echo(f"error: {exc}", err=True)
            failed = True
            continue
        click.echo(f"{digest.hex()}  {path}")
    if failed:
        sys.exit(EXIT_ERROR)


# --------------------------------------------------------------------------------- verify


@main.command("verify")
@click.option(
    "--policy",
    "policy_path",
    required=True,
    metavar="FILE",
    help="Trust policy (c2sp.org/tlog-policy).",
)
@click.option("--proof", "proof_path", required=True, metavar="FILE", help="Receipt (.tlog-proof).")
@click.option(
    "--digest", "digest_hex", metavar="HEX", help="SHA-256 of the document, 64 hex digits."
)
@click.argument("file", required=False)
@_errors_to_exit
def verify_command(
    policy_path: str, proof_path: str, digest_hex: str | None, file: str | None
) -> None:
    """Verify a receipt for a document FILE (or --digest) against a trust policy, offline.

    Exit 0 if valid, 1 if invalid (with the reason), 2 if an input is unreadable or malformed.
    """
    digest = _digest_from(digest_hex, file)
    policy_bytes = _read_bytes(policy_path, what="policy", limit=_MAX_POLICY_FILE)
    proof_bytes = _read_bytes(proof_path, what="receipt", limit=MAX_RECEIPT_SIZE)
    try:
        policy = parse_policy(policy_bytes)
    except MalformedError as exc:
        _fail(EXIT_ERROR, f"malformed policy {policy_path}: {exc.diagnostics()}")
    try:
        result = verify_receipt(proof_bytes, policy, digest)
    except MalformedError as exc:
        _fail(EXIT_ERROR, f"malformed receipt {proof_path}: {exc.diagnostics()}")
    click.echo("valid: the document is in the ledger")
    click.echo(f"  digest:       {digest.hex()}")
    click.echo(f"  index:        {result.index}")
    click.echo(f"  tree size:    {result.size}")
    click.echo(f"  origin:       {result.origin}")
    click.echo(
        f"  cosignatures: {len(result.cosigners)} validators ({', '.join(result.cosigners)})"
    )
    click.echo(f"  time bound:   {_utc(result.time_bound)} (existed no later than this)")


# ----------------------------------------------------------------------------------- keys


@main.group("keys")
def keys_group() -> None:
    """Validator key files."""


@keys_group.command("generate")
@click.option("--name", required=True, help="Validator (cosigner) name, e.g. v1.example.org.")
@click.option("--origin", required=True, help="Log origin, e.g. ledger.example.org/main.")
@click.option("--out", "out_path", required=True, help="Key file to write (mode 0600).")
@click.option("--force", is_flag=True, help="Replace an existing key file.")
@_errors_to_exit
def keys_generate(name: str, origin: str, out_path: str, force: bool) -> None:
    """Generate a validator key file and print its verifier keys."""
    keys = ValidatorKeys.generate(name=name, origin=origin)
    write_key_file(out_path, keys, overwrite=force)
    click.echo(f"wrote {out_path} (mode 0600)")
    _echo_vkeys(keys)


@keys_group.command("show")
@click.argument("key_file")
@_errors_to_exit
def keys_show(key_file: str) -> None:
    """Print the verifier keys of a validator key file."""
    _echo_vkeys(read_key_file(key_file))


def _echo_vkeys(keys: ValidatorKeys) -> None:
    click.echo(f"name:          {keys.name}")
    click.echo(f"origin:        {keys.origin}")
    click.echo(f"log vkey:      {keys.log_vkey}")
    click.echo(f"cosigner vkey: {keys.cosigner_vkey}")


# ------------------------------------------------------------------------------------ log
#
# A proving-ground directory holds:
#   store/          the LMDB store (tree, digest index, checkpoints)
#   keys/NNN.key    the validator key files, in policy order (the first one signs as the log)
#   trust-policy    the tlog-policy that verifies the receipts

_POLICY_FILE: Final = "trust-policy"
_KEYS_DIR: Final = "keys"
_STORE_DIR: Final = "store"
_MAX_VALIDATORS: Final = 99  # plus the log signature: the 100 signatures of a note


@main.group("log")
def log_group() -> None:
    """Local proving ground: a single-machine ledger issuing real receipts."""


@log_group.command("init")
@click.argument("directory")
@click.option("--origin", required=True, help="Log origin, e.g. ledger.example.org/test.")
@click.option(
    "--validators", "count", type=click.IntRange(1, _MAX_VALIDATORS), default=4, show_default=True
)
@click.option("--name-prefix", default="validator-", show_default=True)
@_errors_to_exit
def log_init(directory: str, origin: str, count: int, name_prefix: str) -> None:
    """Create a proving ground in DIRECTORY: store, validator keys and trust policy."""
    from ledger.prover import trust_policy

    root = Path(directory)
    if (root / _POLICY_FILE).exists() or (root / _KEYS_DIR).exists():
        _fail(EXIT_ERROR, f"{root} already holds a proving ground")
    validators = [
        ValidatorKeys.generate(name=f"{name_prefix}{i}", origin=origin) for i in range(1, count + 1)
    ]
    policy_text = trust_policy(validators)
    try:
        (root / _KEYS_DIR).mkdir(parents=True, mode=0o700)
    except OSError as exc:
        _fail(EXIT_ERROR, f"cannot create {root / _KEYS_DIR}: {exc.strerror}")
    for i, keys in enumerate(validators, start=1):
        write_key_file(root / _KEYS_DIR / f"{i:03d}.key", keys)
    with _open_log(root, create=True):
        pass
    _write_text(root / _POLICY_FILE, policy_text)
    click.echo(f"initialised {root}: {count} validators, origin {origin}")
    click.echo(f"trust policy: {root / _POLICY_FILE}")


@log_group.command("append")
@click.argument("directory")
@click.argument("files", nargs=-1)
@click.option(
    "--digest", "digests_hex", multiple=True, metavar="HEX", help="A digest to append (repeatable)."
)
@_errors_to_exit
def log_append(directory: str, files: tuple[str, ...], digests_hex: tuple[str, ...]) -> None:
    """Append FILES (hashed) and/or --digest values, then issue a cosigned checkpoint."""
    if not files and not digests_hex:
        _fail(EXIT_ERROR, "nothing to append: give FILES or --digest")
    items = [(_parse_digest(d), "") for d in digests_hex]
    items += [(_hash_file(f), f"  {f}") for f in files]
    with _open_log(Path(directory)) as log:
        indices = log.append([digest for digest, _ in items])
        log.checkpoint(timestamp=int(time.time()))
    for (digest, label), index in zip(items, indices, strict=True):
        click.echo(f"{index}  {digest.hex()}{label}")


@log_group.command("prove")
@click.argument("directory")
@click.argument("file", required=False)
@click.option("--digest", "digest_hex", metavar="HEX", help="Digest to prove, 64 hex digits.")
@click.option("--out", "out_path", help="Receipt path [default: FILE.tlog-proof or HEX.tlog-proof]")
@_errors_to_exit
def log_prove(
    directory: str, file: str | None, digest_hex: str | None, out_path: str | None
) -> None:
    """Write a receipt (.tlog-proof) for FILE or --digest from the latest checkpoint."""
    digest = _digest_from(digest_hex, file)
    with _open_log(Path(directory)) as log:
        receipt = log.prove(digest)
    target = Path(out_path or f"{file if file is not None else digest.hex()}.tlog-proof")
    _write_text(target, receipt)
    click.echo(f"wrote {target}")


@contextmanager
def _open_log(root: Path, *, create: bool = False) -> Iterator[LocalLog]:
    """Open the proving ground at ``root``; the store is closed on exit."""
    from ledger.prover import LocalLog
    from ledger.storage.lmdb_store import LmdbStore

    key_files = sorted((root / _KEYS_DIR).glob("*.key"))
    if not key_files:
        _fail(
            EXIT_ERROR,
            f"{root} is not a proving ground (no {_KEYS_DIR}/*.key); run 'ledger log init'",
        )
    validators = [read_key_file(path) for path in key_files]
    if not create and not (root / _STORE_DIR).is_dir():
        _fail(EXIT_ERROR, f"{root / _STORE_DIR} is missing")
    store = LmdbStore.open(str(root / _STORE_DIR))
    try:
        yield LocalLog(store, validators=validators)
    finally:
        store.close()


def _write_text(path: Path, text: str) -> None:
    try:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        _fail(EXIT_ERROR, f"cannot write {path}: {exc.strerror}")
