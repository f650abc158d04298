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

import contextlib
import dataclasses
import functools
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final, NoReturn, ParamSpec, TypeVar

import click

from ledger import __version__
from ledger.consensus.validators import MAX_VALIDATORS
from ledger.crypto import ValidatorKeys, read_key_file, write_key_file
from ledger.errors import ConfigError, LedgerError, MalformedError, VerificationError
from ledger.policy import parse_policy
from ledger.receipt import MAX_RECEIPT_SIZE, VerifiedReceipt, verify_receipt

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


def _utc_and_local(timestamp: int) -> str:
    """``T`` in UTC and in this machine's time zone (``TZ``), e.g. ``2026-12-02T14:20:01Z
    (15:20:01 CET, local time)``."""
    try:
        local = datetime.fromtimestamp(timestamp, tz=UTC).astimezone()
    except (OverflowError, ValueError, OSError):
        return _utc(timestamp)
    return f"{_utc(timestamp)} ({local.strftime('%Y-%m-%d %H:%M:%S %Z')}, local time)"


# ---------------------------------------------------------------------------------- the group


def _usage_line(exc: click.UsageError) -> str:
    where = exc.ctx.command_path if exc.ctx is not None else "ledger"
    message = " ".join(exc.format_message().split())  # click lists choices on lines of their own
    return f"error: {where}: {message} (see '{where} --help')"


class _LedgerGroup(click.Group):
    """The top-level group: every failure ends as one line on stderr, never a traceback.

    Click's own usage errors (a missing argument, an unknown option) are shortened to one line
    with the command path; errors of our own that a command did not map itself, and operating
    system errors, are mapped as :func:`_errors_to_exit` does. Anything else is a bug: one line
    naming it, and the traceback only with ``LEDGER_DEBUG=1``. ``ledger node`` is the exception:
    a node's own fault keeps its traceback for the operator's log.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            status = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            click.echo(_usage_line(exc), err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort as exc:  # click's wrapper around a Ctrl-C (KeyboardInterrupt)
            interrupted = isinstance(exc.__cause__, KeyboardInterrupt)
            click.echo("interrupted" if interrupted else "aborted", err=True)
            sys.exit(130)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            sys.exit(130)
        sys.exit(status if isinstance(status, int) else EXIT_OK)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            raise
        except BrokenPipeError:
            # `ledger status | head -1`: the reader has all it wanted. Exit 0 (as click would
            # not), so that a pipeline under `set -o pipefail` does not fail for it.
            with contextlib.suppress(OSError):
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (closed at exit)
            sys.exit(EXIT_OK)
        except VerificationError as exc:
            click.echo(f"invalid: {exc.diagnostics()}", err=True)
            sys.exit(EXIT_INVALID)
        except LedgerError as exc:
            click.echo(f"error: {exc.diagnostics()}", err=True)
            sys.exit(EXIT_ERROR)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {where}{exc.strerror or exc}", err=True)
            sys.exit(EXIT_ERROR)
        except Exception as exc:
            if ctx.invoked_subcommand == "node" or os.environ.get("LEDGER_DEBUG"):
                raise
            click.echo(
                f"error: unexpected {type(exc).__name__}: {exc} (a bug; LEDGER_DEBUG=1 shows "
                "where)",
                err=True,
            )
            sys.exit(EXIT_ERROR)


@click.group("ledger", cls=_LedgerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="ledger", message="%(prog)s %(version)s")
def main() -> None:
    """Permissioned hash-ledger for document notarisation.

    Anchors SHA-256 digests of documents in an RFC 9162 Merkle log and issues receipts
    (c2sp.org/tlog-proof) that anyone can verify offline with the document and the published
    trust policy.

    Commands that talk to a node take --node URL or LEDGER_NODE, and --cacert FILE or
    LEDGER_CACERT for an https node whose certificate is from a private CA; those that anchor
    take the client token from --token-file FILE, LEDGER_TOKEN_FILE or LEDGER_TOKEN.
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
    metavar="FILE",
    help="Trust policy (c2sp.org/tlog-policy); with --policy-chain, the genesis policy it must "
    "start from.",
)
@click.option(
    "--policy-chain",
    "chain_path",
    metavar="FILE",
    help="Policy chain (genesis validators and every validator-set change) instead of a single "
    "policy: the receipt is checked against the policy in force at its checkpoint.",
)
@click.option(
    "--proof",
    "proof_path",
    metavar="FILE",
    help="Receipt (.tlog-proof) [default: FILE.tlog-proof, beside the document].",
)
@click.option(
    "--digest", "digest_hex", metavar="HEX", help="SHA-256 of the document, 64 hex digits."
)
@click.argument("file", required=False)
@_errors_to_exit
def verify_command(
    policy_path: str | None, chain_path: str | None, proof_path: str | None,
    digest_hex: str | None, file: str | None,
) -> None:
    """Verify a receipt for a document FILE (or --digest) against a trust policy, offline.

    Give --policy, or --policy-chain (optionally pinned with --policy to the genesis policy).
    The receipt is FILE.tlog-proof unless --proof names another. Exit 0 if valid, 1 if invalid
    (with the reason), 2 if an input is unreadable or malformed.
    """
    from ledger.policy_chain import MAX_CHAIN_SIZE, parse_policy_chain, verify_receipt_with_chain

    if policy_path is None and chain_path is None:
        _fail(EXIT_ERROR, "give --policy FILE or --policy-chain FILE")
    digest = _digest_from(digest_hex, file)
    if proof_path is None:
        if file is None or file == "-":
            _fail(EXIT_ERROR, "give --proof FILE (with --digest or stdin there is no FILE)")
        proof_path = f"{file}.tlog-proof"
    policy = None
    if policy_path is not None:
        policy = _load_policy_file(policy_path)
    proof_bytes = _read_bytes(proof_path, what="receipt", limit=MAX_RECEIPT_SIZE)
    try:
        if chain_path is None:
            assert policy is not None
            try:
                result = verify_receipt(proof_bytes, policy, digest,
                                        earlier_policy=_bridge_policy(policy))
            except VerificationError as exc:
                reason = _explain_failure(proof_bytes, policy, digest, exc)
                raise VerificationError(reason) from None
        else:
            chain_bytes = _read_bytes(chain_path, what="policy chain", limit=MAX_CHAIN_SIZE)
            try:
                chain = parse_policy_chain(chain_bytes)
            except MalformedError as exc:
                _fail(EXIT_ERROR, f"malformed policy chain {chain_path}: {exc.diagnostics()}")
            result = verify_receipt_with_chain(proof_bytes, chain, digest, genesis_policy=policy)
    except MalformedError as exc:
        _fail(EXIT_ERROR, f"malformed receipt {proof_path}: {exc.diagnostics()}")
    first = result.earliest or result
    click.echo("valid: the document is in the ledger")
    click.echo(f"  digest:       {digest.hex()}")
    click.echo(f"  receipt:      {proof_path}")
    click.echo(f"  index:        {result.index}")
    click.echo(f"  tree size:    {first.size}")
    click.echo(f"  origin:       {result.origin}")
    outside = _outside_witnesses(policy)
    shown = [n for n in first.cosigners if n not in outside]
    click.echo(f"  cosignatures: {len(shown)} validators ({', '.join(shown)})")
    witnessed = [n for n in result.cosigners if n in outside]
    if witnessed:
        click.echo(f"  outside witnesses: {', '.join(witnessed)} (at tree size {result.size})")
    click.echo(f"  anchored no later than {_utc_and_local(first.time_bound)}")
    if result.earliest is not None:
        later = [n for n in result.cosigners if n not in outside]
        click.echo(f"  still in the log at tree size {result.size}, cosigned by "
                   f"{len(later)} validators no later than "
                   f"{_utc(result.time_bound)} (the receipt's checkpoint extends the first)")
        if outside and _bridge_policy(policy) is not None:
            click.echo("  the first checkpoint is proven by the validators' quorum alone: the "
                       "outside witnesses cosigned the later one, which extends it")



def _bridge_policy(policy: Policy | None) -> Callable[[int], Policy] | None:
    """For a policy that also requires outside witnesses, the policy an earliest bridge's first
    checkpoint is checked against: the validators' part (a witness cosigns only the
    checkpoints pushed to it, and the later checkpoint it cosigned extends the first)."""
    from ledger.policy import VALIDATORS_GROUP

    if policy is None or policy.quorum == VALIDATORS_GROUP \
            or all(g.name != VALIDATORS_GROUP for g in policy.groups):
        return None
    validators = policy.subpolicy(VALIDATORS_GROUP)
    return lambda _size: validators


def _outside_witnesses(policy: Policy | None) -> set[str]:
    """The names of a policy's quorum witnesses outside its validators' group."""
    from ledger.policy import VALIDATORS_GROUP

    if _bridge_policy(policy) is None:
        return set()
    assert policy is not None
    inside = {w.name for w in policy.subpolicy(VALIDATORS_GROUP).witnesses}
    return {w.name for w in policy.quorum_witnesses()} - inside


def _names(items: Iterable[str]) -> str:
    listed = sorted(set(items))
    return ", ".join(repr(n) for n in listed) if listed else "none"


def _explain_failure(
    proof: bytes, policy: Policy, digest: bytes, failure: VerificationError
) -> str:
    """A reason a person can act on, for a receipt that failed :func:`verify_receipt`.

    The receipt is taken apart again to tell the three common cases apart: the document is not
    the one anchored (the checkpoint verifies, the inclusion proof does not), the trust policy
    is another ledger's (none of the receipt's signers is a key of the policy), or the
    checkpoint itself was altered or falls short of the quorum (the library's own reason).
    """
    from ledger.checkpoint import open_checkpoint, parse_checkpoint_body
    from ledger.merkle.hashing import leaf_hash
    from ledger.merkle.proof import verify_inclusion
    from ledger.note import parse_note
    from ledger.receipt import parse_receipt

    try:
        receipt = parse_receipt(proof)
        note = parse_note(receipt.checkpoint)
        body = parse_checkpoint_body(note.text)
    except MalformedError:
        return failure.diagnostics()
    try:
        verify_inclusion(leaf_hash(digest), receipt.index, body.size, receipt.proof, body.root)
    except VerificationError:
        included = False
    else:
        included = True
    known = {(v.name, v.key_id) for v in policy.verifiers()}
    signers = [(s.name, s.key_id) for s in note.signatures]
    if not any(signer in known for signer in signers):
        expected_names = {v.name for v in policy.verifiers()}
        found_names = {name for name, _ in signers}
        if expected_names & found_names:
            cause = (
                "the names are the same but the keys differ: a trust policy of another chain "
                "with the same validator names (for instance a devnet initialised again), or of "
                "the validators before a key rotation (verify with --policy-chain)"
            )
        else:
            cause = "the trust policy belongs to another ledger, or the receipt to another chain"
        return (
            "the receipt's checkpoint is signed by none of the keys in this trust policy: the "
            f"policy expects log {_names(log.verifier.name for log in policy.logs)} and "
            f"cosigners {_names(w.name for w in policy.quorum_witnesses())}; the receipt is "
            f"signed by {_names(found_names)}. Likely cause: {cause}"
        )
    if not included:
        try:
            opened = open_checkpoint(note, policy.verifiers())
            policy.evaluate((v.verifier for v in opened.note.verified), origin=body.origin)
        except VerificationError:
            return failure.diagnostics()  # the checkpoint itself fails: that is the news
        return (
            f"the document's digest {digest.hex()} does not match leaf {receipt.index} of the "
            f"receipt (tree size {body.size}): the document is not the one anchored (it was "
            "changed, or it is another file), or the receipt's proof lines were altered"
        )
    unknown = sorted({name for name, key in signers if (name, key) not in known})
    if unknown and "quorum" in failure.diagnostics():
        return (
            f"{failure.diagnostics()}; signers the policy does not list: {', '.join(unknown)} "
            "(a policy from before a validator-set change? verify with --policy-chain)"
        )
    return failure.diagnostics()


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
    click.echo(f"consensus key: {keys.consensus_key.public_key.hex()}")


# ------------------------------------------------------------------------------------ log
#
# A proving-ground directory holds:
#   store/          the LMDB store (tree, digest index, checkpoints)
#   keys/NNN.key    the validator key files, in policy order (the first one signs as the log)
#   trust-policy    the tlog-policy that verifies the receipts

_POLICY_FILE: Final = "trust-policy"
_KEYS_DIR: Final = "keys"
_STORE_DIR: Final = "store"


@main.group("log")
def log_group() -> None:
    """Local proving ground: a single-machine ledger issuing real receipts."""


@log_group.command("init")
@click.argument("directory")
@click.option("--origin", required=True, help="Log origin, e.g. ledger.example.org/test.")
@click.option(
    "--validators", "count", type=click.IntRange(1, MAX_VALIDATORS), default=4, show_default=True
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
    from ledger.fileio import make_private_dir

    make_private_dir(root / _KEYS_DIR)
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
@click.option("--force", is_flag=True,
              help="Replace an existing file that is unreadable or not a receipt of FILE.")
@_errors_to_exit
def log_prove(
    directory: str, file: str | None, digest_hex: str | None, out_path: str | None, force: bool
) -> None:
    """Write a receipt (.tlog-proof) for FILE or --digest from the latest checkpoint.

    An existing receipt that proves an equal or earlier moment is kept as it is.
    """
    digest = _digest_from(digest_hex, file)
    root = Path(directory)
    with _open_log(root) as log:
        receipt = log.prove(digest)
    policy = _load_policy_file(str(root / _POLICY_FILE))
    target = Path(out_path or f"{file if file is not None else digest.hex()}.tlog-proof")
    outcome, message = _save_receipt(target, receipt, digest, policy, force=force)
    if outcome.startswith("refused"):
        _fail(EXIT_INVALID if outcome == "refused" else EXIT_ERROR, message)
    click.echo(message)


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


def _write_text(path: Path, text: str, *, replace: bool = True) -> None:
    """Write a file the CLI produces, atomically (:func:`ledger.fileio.write_atomic`).

    Raises:
        FileExistsRefused: ``replace`` is false and ``path`` exists.
        FileWriteError: it cannot be written.
    """
    from ledger.fileio import write_atomic

    write_atomic(path, text, replace=replace)


# ================================================================================================
# The sections below (genesis, node, status, devnet, anchor, proof) are the operator and client
# commands of issue 4; they are thin over ledger.config, ledger.devnet and ledger.client.
# ================================================================================================

if TYPE_CHECKING:
    from ledger.devnet import Devnet
    from ledger.genesis import Genesis
    from ledger.policy import Policy

_ANCHOR_BATCH: Final = 1_000
_PROGRESS_MIN_FILES: Final = 20


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _parse_time_ms(text: str) -> int:
    """Unix milliseconds from an integer or an RFC 3339 UTC time such as 2025-01-01T00:00:00Z."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        _fail(EXIT_ERROR, f"--time {text!r} is neither Unix milliseconds nor an RFC 3339 time")
    if moment.tzinfo is None:
        _fail(EXIT_ERROR, "--time needs a time zone, e.g. 2025-01-01T00:00:00Z")
    return int(moment.timestamp() * 1000)


def _utc_ms(ms: int) -> str:
    return _utc(ms // 1000)


def _load_policy_file(path: str) -> Policy:
    data = _read_bytes(path, what="policy", limit=_MAX_POLICY_FILE)
    try:
        return parse_policy(data)
    except MalformedError as exc:
        _fail(EXIT_ERROR, f"malformed policy {path}: {exc.diagnostics()}")


# -------------------------------------------------------------------------------- genesis
#
# The ceremony: one coordinator runs `genesis init`, each institution runs `keys generate` on its
# own machine and hands over only the printed public keys (a .vkeys file), the coordinator runs
# `genesis add-validator` for each and `genesis finalize`, and every institution checks the
# printed genesis hash with `genesis show` on the file it received, comparing it out of band.


@main.group("genesis")
def genesis_group() -> None:
    """Create the genesis of a chain with the validators of several institutions."""


@genesis_group.command("init")
@click.option("--chain-id", required=True, help="Chain id bound into every consensus signature.")
@click.option("--origin", required=True, help="Log origin, e.g. ledger.example.org/main.")
@click.option("--out", "out_path", required=True, help="Genesis draft to write (JSON).")
@click.option("--force", is_flag=True, help="Replace an existing file.")
@_errors_to_exit
def genesis_init(chain_id: str, origin: str, out_path: str, force: bool) -> None:
    """Start a genesis draft (JSON) with no validators yet."""
    from ledger.config import write_text_atomic
    from ledger.genesis import GenesisDraft, format_genesis

    if Path(out_path).exists() and not force:
        _fail(EXIT_ERROR, f"{out_path} already exists (use --force to replace it)")
    draft = GenesisDraft(chain_id=chain_id, origin=origin)
    write_text_atomic(out_path, format_genesis(draft))
    click.echo(f"wrote genesis draft {out_path} (chain {chain_id}, origin {origin})")
    click.echo("next: ledger genesis add-validator --genesis FILE --vkeys-file V.vkeys")


@genesis_group.command("add-validator")
@click.option("--genesis", "genesis_path", required=True, help="Genesis draft to extend.")
@click.option(
    "--vkeys-file",
    required=True,
    help="Public keys of the validator, as printed by 'ledger keys generate' or 'keys show'.",
)
@click.option("--name", help="Expected validator name (checked against the vkeys file).")
@click.option("--url", help="Public URL of the validator's node, e.g. https://v1.example.org.")
@_errors_to_exit
def genesis_add_validator(
    genesis_path: str, vkeys_file: str, name: str | None, url: str | None
) -> None:
    """Add one validator's public keys to a genesis draft."""
    from ledger.config import write_text_atomic
    from ledger.genesis import format_genesis, load_genesis_draft, parse_vkeys

    draft = load_genesis_draft(genesis_path)
    text = _read_bytes(vkeys_file, what="vkeys file", limit=64 * 1024).decode("utf-8", "replace")
    validator = parse_vkeys(text, source=f"vkeys file {vkeys_file}", url=url)
    if name is not None and validator.name != name:
        _fail(EXIT_ERROR, f"{vkeys_file} holds the keys of {validator.name!r}, not {name!r}")
    draft = draft.with_validator(validator)
    write_text_atomic(genesis_path, format_genesis(draft))
    click.echo(f"added {validator.name} to {genesis_path} ({len(draft.validators)} validators)")


@genesis_group.command("finalize")
@click.option("--genesis", "genesis_path", required=True, help="Genesis draft to freeze.")
@click.option(
    "--time",
    "time_text",
    help="Genesis time: RFC 3339 (2025-01-01T00:00:00Z) or Unix ms [default: now].",
)
@click.option(
    "--policy-out", help="Where to write the trust policy [default: trust-policy next to it]."
)
@_errors_to_exit
def genesis_finalize(genesis_path: str, time_text: str | None, policy_out: str | None) -> None:
    """Freeze a genesis draft, write its trust policy and print the genesis hash."""
    from ledger.config import write_text_atomic
    from ledger.consensus.validators import fault_tolerance
    from ledger.genesis import format_genesis, load_genesis_draft, trust_policy

    draft = load_genesis_draft(genesis_path)
    genesis = draft.finalize(
        genesis_time=_now_ms() if time_text is None else _parse_time_ms(time_text)
    )
    policy_path = Path(policy_out) if policy_out else Path(genesis_path).parent / "trust-policy"
    write_text_atomic(policy_path, trust_policy(genesis))
    write_text_atomic(genesis_path, format_genesis(genesis))
    click.echo(f"finalized {genesis_path}; trust policy written to {policy_path}")
    _echo_genesis(genesis)
    if fault_tolerance(genesis.n) == 0:
        click.echo(
            f"warning: {genesis.n} validators tolerate no faulty validator; use 4 or more",
            err=True,
        )


@genesis_group.command("show")
@click.argument("genesis_path", metavar="GENESIS")
@_errors_to_exit
def genesis_show(genesis_path: str) -> None:
    """Print a final genesis and its hash, to compare with the other institutions."""
    from ledger.genesis import load_genesis

    _echo_genesis(load_genesis(genesis_path))


def _echo_genesis(genesis: Genesis) -> None:
    from ledger.consensus.validators import fault_tolerance, quorum

    click.echo(f"chain id:     {genesis.chain_id}")
    click.echo(f"origin:       {genesis.origin}")
    click.echo(f"genesis time: {_utc_ms(genesis.genesis_time)} ({genesis.genesis_time} ms)")
    click.echo(
        f"validators:   {genesis.n} (tolerates f = {fault_tolerance(genesis.n)}, "
        f"quorum {quorum(genesis.n)})"
    )
    for v in genesis.validators:
        click.echo(f"  {v.name}  {v.url or '(no URL)'}")
    click.echo(f"genesis hash: {genesis.genesis_hash()}")


# --------------------------------------------------------------------------------- config


@main.group("config")
def config_group() -> None:
    """Change a node's config file (a running node picks up [peers] changes by itself)."""


@config_group.command("add-peer")
@click.option("--config", "config_path", required=True, metavar="FILE", help="Node config (TOML).")
@click.argument("name")
@click.argument("url")
@_errors_to_exit
def config_add_peer(config_path: str, name: str, url: str) -> None:
    """Add (or move) peer NAME at URL in the [peers] table of FILE.

    For a validator that joined the set by a change: every other node needs its URL. A running
    node reads the new [peers] within seconds (or at once on SIGHUP); nothing else changes.
    """
    from ledger.config import Peer, format_node_config, load_node_config, write_text_atomic
    from ledger.genesis import check_url

    path = Path(config_path)
    config = load_node_config(path)
    if name == config.name:
        _fail(EXIT_ERROR, f"{name} is the node of {path} itself")
    peer = Peer(name=name, url=check_url(url, where="URL"))
    peers = [p for p in config.peers if p.name != name]
    known = [p.name for p in config.peers]
    peers.insert(known.index(name) if name in known else len(peers), peer)
    updated = dataclasses.replace(config, peers=tuple(peers))
    load_check = format_node_config(updated, relative_to=path.parent.absolute())
    write_text_atomic(path, load_check)
    load_node_config(path)  # it reads back
    click.echo(f"{path}: peer {name} at {peer.url}")


# ----------------------------------------------------------------------------------- node


@main.command("node")
@click.option("--config", "config_path", required=True, help="Node config (TOML).")
@click.option("--unsafe-clock-skew-ms", "clock_skew_ms", type=int, default=0, hidden=True,
              help="TESTS ONLY: add this many milliseconds to the node's clock.")
@_errors_to_exit
def node_command(config_path: str, clock_skew_ms: int) -> None:
    """Run a validator node until SIGTERM or Ctrl-C."""
    import asyncio
    import contextlib

    from ledger.config import load_node_config

    config = load_node_config(config_path)
    from ledger.node import SystemClock, run_node  # lazy: aiohttp and LMDB only for a node

    # run_node handles SIGINT and SIGTERM itself; this only covers a Ctrl-C during start-up.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_node(config, clock=SystemClock(skew_ms=clock_skew_ms)))


# --------------------------------------------------------------------------------- status
#
# Every command that talks to a node takes --node URL or $LEDGER_NODE; those that anchor take
# the client token from --token-file FILE, $LEDGER_TOKEN_FILE or $LEDGER_TOKEN (never from an
# argument: it would show in `ps` and in the shell history).

_NODE_HELP: Final = "Base URL of a node, e.g. http://127.0.0.1:7100."


def _node_option(func: Callable[P, R]) -> Callable[P, R]:
    return click.option(
        "--node", "node_url", envvar="LEDGER_NODE", show_envvar=True, metavar="URL",
        help=_NODE_HELP,
    )(func)


def _token_file_option(func: Callable[P, R]) -> Callable[P, R]:
    return click.option(
        "--token-file", envvar="LEDGER_TOKEN_FILE", show_envvar=True, metavar="FILE",
        help="File holding the client bearer token. Without it the token is taken from "
        "$LEDGER_TOKEN.",
    )(func)


def _cacert_option(func: Callable[P, R]) -> Callable[P, R]:
    return click.option(
        "--cacert", envvar="LEDGER_CACERT", show_envvar=True, metavar="FILE",
        help="CA bundle (PEM) to verify an https node's certificate against, when it is not "
        "signed by a CA the system trusts (the institutions' own CA, a devnet's tls/ca.crt).",
    )(func)


def _tls(cacert: str | None) -> Any:
    from ledger.client import tls_context

    return tls_context(cacert)


def _node_url(node_url: str | None) -> str:
    from ledger.client import resolve_node

    return resolve_node(node_url)


@main.command("status")
@_node_option
@_cacert_option
@click.option("--timeout", type=click.FloatRange(0.1, 600), default=5.0, show_default=True)
@click.option("--wait-ready", "wait_ready", type=click.FloatRange(0, 86_400), default=None,
              metavar="SECONDS",
              help="Wait up to SECONDS for the node to be ready (reachable, caught up, voting); "
                   "exit 1 if it is not by then.")
@_errors_to_exit
def status_command(node_url: str | None, cacert: str | None, timeout: float,
                   wait_ready: float | None) -> None:
    """Show a node's readiness, consensus status, latest checkpoint and key metrics."""
    import json

    from ledger.checkpoint import parse_checkpoint_body
    from ledger.client import LedgerClient, TransportError, parse_metrics
    from ledger.note import parse_note

    with LedgerClient(_node_url(node_url), timeout=timeout,
                      ssl_context=_tls(cacert)) as client:
        deadline = time.monotonic() + (wait_ready or 0)
        while True:
            try:
                ready = client.ready()
            except TransportError as exc:
                if wait_ready is None or time.monotonic() > deadline:
                    _fail(EXIT_ERROR, exc.diagnostics())
                ready = False
            if ready or wait_ready is None or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        click.echo(f"node:       {client.base_url}")
        click.echo(f"ready:      {'yes' if ready else 'no'}")
        try:
            status = client.status()
            for key in sorted(status):
                click.echo(f"  {key}: {json.dumps(status[key], sort_keys=True)}")
        except LedgerError as exc:
            click.echo(f"status:     unavailable ({exc.diagnostics()})")
        try:
            note = parse_note(client.checkpoint())
            body = parse_checkpoint_body(note.text)
            click.echo(
                f"checkpoint: {body.origin} size {body.size} root {body.root.hex()} "
                f"({len(note.signatures)} signatures)"
            )
        except LedgerError as exc:
            click.echo(f"checkpoint: none ({exc.diagnostics()})")
        try:
            samples = [
                (name, value)
                for name, value in parse_metrics(client.metrics())
                if name.startswith("ledger_")
                and not name.split("{")[0].endswith(("_bucket", "_created"))
            ]
        except LedgerError as exc:
            click.echo(f"metrics:    unavailable ({exc.diagnostics()})")
        else:
            click.echo("metrics:")
            for name, value in samples:
                shown = str(int(value)) if value.is_integer() else f"{value:.6g}"
                click.echo(f"  {name} {shown}")
    if wait_ready is not None and not ready:
        _fail(EXIT_INVALID, f"the node was not ready within {wait_ready:g} s")


# --------------------------------------------------------------------------------- devnet


@main.group("devnet")
def devnet_group() -> None:
    """A local validator network on 127.0.0.1 for development.

    `ledger devnet up` runs it in the foreground (Ctrl-C stops every node), `up --detach` in
    the background, `ledger devnet down` stops it.
    """


_devnet_dir = click.option(
    "--dir", "directory", default="devnet", show_default=True, help="Devnet directory."
)
_devnet_nodes = click.option(
    "--nodes", type=click.IntRange(1, 64), default=4, show_default=True, help="Validators."
)
_devnet_port = click.option(
    "--base-port",
    type=click.IntRange(1, 65535),
    default=7100,
    show_default=True,
    help="Port of the first node; node N listens on base-port + N - 1.",
)


_devnet_tls = click.option(
    "--tls", is_flag=True,
    help="Make a devnet CA and node certificates (DIR/tls, needs openssl): every node serves "
    "HTTPS and its peers verify it; clients pass --cacert DIR/tls/ca.crt.",
)


@devnet_group.command("init")
@_devnet_dir
@_devnet_nodes
@_devnet_port
@_devnet_tls
@_errors_to_exit
def devnet_init(directory: str, nodes: int, base_port: int, tls: bool) -> None:
    """Write keys, genesis, trust policy, node configs and a client token into DIR."""
    from ledger.devnet import init_devnet

    net = init_devnet(Path(directory), nodes=nodes, base_port=base_port,
                      genesis_time_ms=_now_ms(), tls=tls)
    _echo_devnet(net)


def _echo_devnet(net: Devnet) -> None:
    click.echo(f"devnet in {_shown_path(net.directory)}: {len(net.configs)} nodes")
    for name, url in net.urls:
        click.echo(f"  {name}  {url}")
    click.echo(f"genesis hash: {net.genesis_hash}")
    click.echo(f"trust policy: {_shown_path(net.policy_file)}")
    click.echo(f"client token: {_shown_path(net.token_file)}")
    if net.cacert is not None:
        click.echo(f"CA certificate: {_shown_path(net.cacert)} (--cacert)")


def _shown_path(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when inside it."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _prepare_devnet(directory: str, nodes: int, base_port: int, tls: bool) -> Devnet:
    """Load (or initialise) the devnet in DIRECTORY and check that it can start right now."""
    from ledger.devnet import (
        GENESIS_FILE,
        DevnetRunningError,
        check_ports_free,
        devnet_ports,
        init_devnet,
        load_devnet,
        running_supervisor,
    )

    root = Path(directory)
    pid = running_supervisor(root.absolute())
    if pid is not None:
        raise DevnetRunningError(
            f"a devnet is already running from {_shown_path(root)} (pid {pid}): "
            "`ledger devnet down` stops it"
        )
    if (root / GENESIS_FILE).exists():
        net = load_devnet(root)
        check_ports_free(devnet_ports(net))
        return net
    # A fresh directory: check the ports it will use before writing anything.
    check_ports_free(range(base_port, base_port + nodes))
    return init_devnet(root, nodes=nodes, base_port=base_port, genesis_time_ms=_now_ms(),
                       tls=tls)


@devnet_group.command("up")
@_devnet_dir
@_devnet_nodes
@_devnet_port
@_devnet_tls
@click.option(
    "--grace",
    type=click.FloatRange(0, 600),
    default=10.0,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL when stopping.",
)
@click.option(
    "--detach",
    is_flag=True,
    help="Run in the background (log in DIR/devnet.log); stop it with `ledger devnet down`.",
)
@click.option(
    "--ready-timeout",
    type=click.FloatRange(1, 3600),
    default=60.0,
    show_default=True,
    help="Seconds to wait for every node to be ready.",
)
# Set by --detach for the background supervisor it starts: that one outlives its parent.
@click.option("--background", is_flag=True, hidden=True)
@_errors_to_exit
def devnet_up(
    directory: str, nodes: int, base_port: int, tls: bool, grace: float, detach: bool,
    ready_timeout: float, background: bool,
) -> None:
    """Run every node of DIR (initialising DIR first if needed) until Ctrl-C or SIGTERM.

    The nodes' logs are merged into one stream, each line prefixed with the node's name, and
    one "devnet ready" line says when every node is ready. Ctrl-C, SIGTERM, SIGHUP or
    `ledger devnet down` stop every node (SIGTERM, then SIGKILL after --grace seconds). With
    --detach it runs in the background and this command returns once the devnet is ready.
    """
    net = _prepare_devnet(directory, nodes, base_port, tls)
    if detach:
        _devnet_detach(net, grace=grace, ready_timeout=ready_timeout)
    else:
        _devnet_foreground(net, grace=grace, ready_timeout=ready_timeout, background=background)


def _devnet_foreground(
    net: Devnet, *, grace: float, ready_timeout: float, background: bool = False
) -> None:
    import signal
    import threading

    from ledger.devnet import (
        Supervisor,
        claim_pid_file,
        exit_with_parent,
        node_command,
        nodes_ready,
        ready_line,
        release_pid_file,
    )

    width = max(len(name) for name, _ in net.configs)
    palette = ("cyan", "green", "yellow", "magenta", "blue", "red")
    colors = {name: palette[i % len(palette)] for i, (name, _) in enumerate(net.configs)}
    color = sys.stdout.isatty()

    def emit(name: str, line: str) -> None:
        prefix = f"{name:<{max(width, 6)}} |"
        if color:
            prefix = click.style(prefix, fg=colors.get(name, "white"), bold=name == "devnet")
        click.echo(f"{prefix} {line}")

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    # Handlers first: a Ctrl-C from here on stops the nodes through the supervisor. The nodes
    # run in their own sessions, so the terminal's signal reaches only this process.
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, on_signal) for s in handled}
    try:
        if not background and not exit_with_parent():
            _fail(EXIT_ERROR, "the process that started the devnet is gone; not starting")
        claim_pid_file(net.directory)
        supervisor = Supervisor(
            {name: node_command(path) for name, path in net.configs}, emit=emit, grace=grace
        )
        supervisor.say(
            f"starting {len(net.configs)} nodes from {_shown_path(net.directory)} "
            f"(genesis {net.genesis_hash[:16]}); Ctrl-C stops them"
        )

        def watch() -> None:
            deadline = time.monotonic() + ready_timeout
            while not stop.wait(0.25):
                if nodes_ready(net):
                    supervisor.say(ready_line(net, relative_to=Path.cwd()))
                    return
                if time.monotonic() > deadline:
                    supervisor.say(f"not every node is ready after {ready_timeout:g} s; "
                                   "see the nodes' lines above")
                    return

        watcher = threading.Thread(target=watch, name="devnet-ready", daemon=True)
        watcher.start()
        status = supervisor.run(stop)
        stop.set()
        watcher.join(timeout=5)
    finally:
        release_pid_file(net.directory)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if status:
        _fail(EXIT_ERROR, "a node exited on its own; see its lines above")


def _devnet_detach(net: Devnet, *, grace: float, ready_timeout: float) -> None:
    import subprocess

    from ledger.devnet import LOG_FILE, ready_line, stop_supervisor

    log_path = net.directory / LOG_FILE
    command = [
        sys.executable, "-m", "ledger.cli", "devnet", "up", "--dir", str(net.directory),
        "--grace", f"{grace:g}", "--ready-timeout", f"{ready_timeout:g}", "--background",
    ]
    try:
        with open(log_path, "wb") as log:
            child = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives this command and the terminal
            )
    except OSError as exc:
        _fail(EXIT_ERROR, f"cannot start the devnet: {exc.strerror}")
    # The background supervisor says "devnet ready" in its log once every node is; wait for
    # that line (one definition of ready), for the supervisor to stop, or for the time limit.
    deadline = time.monotonic() + ready_timeout + 5
    while True:
        if child.poll() is not None:
            _fail(EXIT_ERROR, f"the devnet stopped while starting: {_last_line(log_path)} "
                              f"(whole log: {_shown_path(log_path)})")
        try:
            logged = log_path.read_text("utf-8", errors="replace")
        except OSError:
            logged = ""
        if "| devnet ready: " in logged:
            break
        if "| not every node is ready" in logged or time.monotonic() > deadline:
            stop_supervisor(net.directory, timeout=grace + 10)
            _fail(EXIT_ERROR, f"the devnet was not ready after {ready_timeout:g} s and was "
                              f"stopped; see {_shown_path(log_path)}")
        time.sleep(0.1)
    click.echo(ready_line(net, relative_to=Path.cwd()))
    click.echo(f"running in the background (pid {child.pid}, log {_shown_path(log_path)}); "
               "`ledger devnet down` stops it")


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text("utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    for line in reversed(lines):
        text = line.split("|", 1)[-1].strip()
        if text.startswith(("error:", "invalid:")) or "error" in text.lower():
            return text
    return lines[-1].strip() if lines else "(empty log)"


@devnet_group.command("down")
@_devnet_dir
@click.option(
    "--timeout",
    type=click.FloatRange(1, 600),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the nodes to stop before killing the supervisor.",
)
@_errors_to_exit
def devnet_down(directory: str, timeout: float) -> None:
    """Stop the devnet running from DIR (in the background or in another terminal)."""
    from ledger.devnet import stop_supervisor

    root = Path(directory).absolute()
    pid = stop_supervisor(root, timeout=timeout)
    if pid is None:
        click.echo(f"no devnet is running from {_shown_path(root)}")
    else:
        click.echo(f"devnet stopped (supervisor pid {pid}, every node of {_shown_path(root)})")


# --------------------------------------------------------------------------- anchor, proof
#
# Receipt files are never silently weakened (they prove the earliest moment the ledger can
# show): an existing FILE.tlog-proof that verifies for FILE is kept byte for byte and FILE is not
# sent again (which is also how an interrupted run resumes); one that does not verify is
# reported and kept unless --force; a receipt replaces another only when it proves an earlier
# moment. Every receipt is written atomically (ledger.fileio).


@dataclass(frozen=True)
class _Existing:
    """What an existing receipt file holds: ``valid`` with its moment, or a ``problem``."""

    path: Path
    valid: bool
    problem: str = ""
    malformed: bool = False
    index: int = 0
    size: int = 0
    time_bound: int | None = None  # only when checked against a policy

    def moment(self) -> str:
        when = f", no later than {_utc(self.time_bound)}" if self.time_bound is not None else ""
        return f"index {self.index}, tree size {self.size}{when}"


def _examine_receipt(path: Path, digest: bytes, policy: Policy | None) -> _Existing | None:
    """The state of the receipt file at ``path`` for ``digest``; None if there is none.

    With a policy the receipt is fully verified; without one only its inclusion proof is
    checked against its own checkpoint (enough to tell that it is this document's receipt,
    not that the validators signed it).
    """
    from ledger.checkpoint import parse_checkpoint_body
    from ledger.merkle.hashing import leaf_hash
    from ledger.merkle.proof import verify_inclusion
    from ledger.note import parse_note
    from ledger.receipt import parse_receipt

    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_RECEIPT_SIZE + 1)
    except FileNotFoundError:
        return None if not path.is_symlink() else _Existing(
            path, valid=False, malformed=True, problem="it is a dangling symbolic link"
        )
    except OSError as exc:
        return _Existing(path, valid=False, malformed=True, problem=f"unreadable: {exc.strerror}")
    if len(data) > MAX_RECEIPT_SIZE:
        return _Existing(path, valid=False, malformed=True, problem="too large for a receipt")
    try:
        if policy is not None:
            try:
                result = verify_receipt(data, policy, digest)
            except VerificationError as exc:
                return _Existing(
                    path, valid=False, problem=_explain_failure(data, policy, digest, exc)
                )
            return _proven(path, result)
        receipt = parse_receipt(data)
        body = parse_checkpoint_body(parse_note(receipt.checkpoint).text)
    except MalformedError as exc:
        return _Existing(path, valid=False, malformed=True,
                         problem=f"not a receipt: {exc.diagnostics()}")
    try:
        verify_inclusion(leaf_hash(digest), receipt.index, body.size, receipt.proof, body.root)
    except VerificationError:
        return _Existing(
            path, valid=False,
            problem=f"it is not a receipt of this file (digest {digest.hex()} is not its leaf "
            f"{receipt.index}: another document, or the file changed since it was anchored)",
        )
    return _Existing(path, valid=True, index=receipt.index, size=body.size)


def _proven(path: Path, result: VerifiedReceipt) -> _Existing:
    """What a verified receipt proves, as :class:`_Existing`: the moment of its earliest
    bridge when it carries one (verified with it), else of its own checkpoint."""
    first = result.earliest
    if first is not None:
        return _Existing(path, valid=True, index=result.index, size=first.size,
                         time_bound=first.time_bound)
    return _Existing(path, valid=True, index=result.index, size=result.size,
                     time_bound=result.time_bound)


def _moment_of(receipt: str, digest: bytes, policy: Policy | None) -> _Existing:
    """A freshly fetched receipt, examined as :func:`_examine_receipt` examines a file."""
    from ledger.checkpoint import parse_checkpoint_body
    from ledger.note import parse_note
    from ledger.receipt import parse_receipt

    if policy is not None:
        return _proven(Path("-"), verify_receipt(receipt, policy, digest))
    parsed = parse_receipt(receipt)
    body = parse_checkpoint_body(parse_note(parsed.checkpoint).text)
    return _Existing(Path("-"), valid=True, index=parsed.index, size=body.size)


def _not_later(kept: _Existing, new: _Existing) -> bool:
    """Whether the kept receipt proves a moment no later than the new one.

    With a policy both carry a time bound; otherwise the checkpoint's tree size orders them (a
    smaller tree of an append-only log was cosigned first).
    """
    if kept.time_bound is not None and new.time_bound is not None:
        return (kept.time_bound, kept.size) <= (new.time_bound, new.size)
    return kept.size <= new.size


def _save_receipt(
    target: Path, receipt: str, digest: bytes, policy: Policy | None, *, force: bool,
    existing: _Existing | None = None, examined: bool = False,
) -> tuple[str, str]:
    """Write ``receipt`` to ``target`` unless that would weaken what is there.

    Returns ``(outcome, message)``: outcome ``wrote``, ``kept`` (a valid receipt proving an
    equal or earlier moment stays), ``replaced`` (the new one proves an earlier moment, or
    --force over a broken file), or ``refused`` / ``refused-malformed`` (a file that does not
    verify / does not parse, kept, without --force).

    Raises:
        FileWriteError: the receipt cannot be written.
    """
    from ledger.fileio import FileExistsRefused

    if not examined:
        existing = _examine_receipt(target, digest, policy)
    if existing is None:
        try:
            _write_text(target, receipt, replace=False)
            return "wrote", f"wrote {target}"
        except FileExistsRefused:  # appeared meanwhile (another run): judge it like any other
            existing = _examine_receipt(target, digest, policy)
            if existing is None:
                raise
    if existing.valid:
        new = _moment_of(receipt, digest, policy)
        if _not_later(existing, new):
            return "kept", (f"kept {target}: it already proves this file ({existing.moment()}), "
                            "a moment no later than a new receipt would")
        _write_text(target, receipt)
        return "replaced", (f"replaced {target} ({existing.moment()}) with an earlier receipt "
                            f"({new.moment()})")
    if force:
        _write_text(target, receipt)
        return "replaced", f"replaced {target} (--force): {existing.problem}"
    return ("refused-malformed" if existing.malformed else "refused"), (
        f"{target} is kept as it is: {existing.problem}; check it, move it away or use --force "
        "to replace it"
    )


def _expand_paths(paths: Sequence[str]) -> list[str]:
    """The files named by PATHS: files as given, directories walked (in name order, skipping
    hidden entries and receipts), patterns expanded with ``*``, ``?``, ``[...]`` and ``**``
    (for lists longer than the shell's command line). Each file appears once.

    Raises:
        _Exit: a path that does not exist, or a pattern that matches no file.
    """
    import glob

    found: list[str] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        key = os.path.normpath(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            found.append(path)

    def walk(directory: str) -> None:
        for root, dirs, names in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if not name.startswith(".") and not name.endswith(_RECEIPT_SUFFIX):
                    add(os.path.join(root, name))

    for path in paths:
        if os.path.isdir(path):
            walk(path)
        elif os.path.exists(path) or path == "-":
            if path == "-":
                _fail(EXIT_ERROR, "ledger anchor needs files (a receipt is written beside each)")
            add(path)
        elif any(c in path for c in "*?["):
            matches = sorted(glob.glob(path, recursive=True))
            files = [m for m in matches if os.path.isfile(m) and not m.endswith(_RECEIPT_SUFFIX)]
            for m in matches:
                if os.path.isdir(m):
                    walk(m)
            if not files and not any(os.path.isdir(m) for m in matches):
                _fail(EXIT_ERROR, f"no file matches {path}")
            for m in files:
                add(m)
        else:
            _fail(EXIT_ERROR, f"cannot read {path}: No such file or directory")
    return found


_RECEIPT_SUFFIX: Final = ".tlog-proof"


@main.command("anchor")
@_node_option
@_token_file_option
@_cacert_option
@click.option(
    "--policy", "policy_path", metavar="FILE",
    help="Trust policy: verify every receipt (new and existing) against it.",
)
@click.option(
    "--force", is_flag=True,
    help="Replace an existing FILE.tlog-proof that is unreadable or not a receipt of FILE "
    "(a valid receipt is never replaced by a later one).",
)
@click.option("--batch", type=click.IntRange(1, 10_000), default=_ANCHOR_BATCH,
              show_default=True, help="Digests per request; receipts are saved after each.")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=60.0, show_default=True,
              help="Seconds to wait for one request.")
@click.argument("paths", nargs=-1, required=True, metavar="FILE|DIR|PATTERN...")
@_errors_to_exit
def anchor_command(
    node_url: str | None,
    token_file: str | None,
    cacert: str | None,
    policy_path: str | None,
    force: bool,
    batch: int,
    timeout: float,
    paths: tuple[str, ...],
) -> None:
    """Anchor files and write FILE.tlog-proof beside each.

    Give files, directories (every file inside, hidden files and receipts skipped) or quoted
    patterns ('scans/**/*.pdf'). Files are hashed here (SHA-256): only digests are sent, in
    requests of --batch, and each receipt is saved as soon as its request returns.

    A FILE.tlog-proof that already verifies for FILE is kept as it is and FILE is not sent
    again, so a run that was interrupted resumes where it stopped. One that does not (another
    document's receipt, an unreadable file) is reported and kept; --force replaces it. Exit 0
    when every file has a valid receipt, 1 if a receipt on disk does not verify, 2 on errors.

    The node is --node or $LEDGER_NODE; the token comes from --token-file,
    $LEDGER_TOKEN_FILE or $LEDGER_TOKEN.
    """
    from ledger.client import LedgerClient, resolve_token

    url = _node_url(node_url)
    secret = resolve_token(token_file)
    policy = _load_policy_file(policy_path) if policy_path is not None else None
    files = _expand_paths(paths)
    if not files:
        _fail(EXIT_ERROR, f"no files to anchor in {' '.join(paths)}")
    many = len(files) >= _PROGRESS_MIN_FILES
    pending: list[tuple[str, bytes, _Existing | None]] = []
    kept = refused_invalid = refused_malformed = 0
    with click.progressbar(files, label="checking", file=sys.stderr, hidden=not many) as bar:
        for path in bar:
            digest = _hash_file(path)
            existing = _examine_receipt(Path(path + _RECEIPT_SUFFIX), digest, policy)
            if existing is not None and existing.valid:
                kept += 1
                if not many:
                    click.echo(f"kept {existing.path}: a valid receipt of {path} "
                               f"({existing.moment()}); not sent again")
            elif existing is not None and not force:
                if existing.malformed:
                    refused_malformed += 1
                else:
                    refused_invalid += 1
                click.echo(f"error: {existing.path} is kept as it is and {path} was not "
                           f"anchored: {existing.problem} (--force replaces it)", err=True)
            else:
                pending.append((path, digest, existing))
    written = 0
    write_failures = 0
    if pending:
        with (
            LedgerClient(url, secret, timeout=timeout, policy=policy,
                         ssl_context=_tls(cacert)) as client,
            click.progressbar(length=len(pending), label="anchoring", file=sys.stderr,
                              hidden=not many) as bar,
        ):
            for start in range(0, len(pending), batch):
                chunk = pending[start : start + batch]
                results = client.anchor([d for _, d, _ in chunk], wait=True, batch_size=batch)
                for (path, digest, existing), result in zip(chunk, results, strict=True):
                    assert result.receipt is not None  # wait=True returns receipts or raises
                    target = Path(path + _RECEIPT_SUFFIX)
                    try:
                        outcome, message = _save_receipt(
                            target, result.receipt, digest, policy, force=force,
                            existing=existing, examined=existing is not None,
                        )
                    except LedgerError as exc:
                        write_failures += 1
                        click.echo(f"error: {exc.diagnostics()}", err=True)
                        continue
                    if outcome == "kept":
                        kept += 1
                    elif outcome.startswith("refused"):
                        if outcome == "refused":
                            refused_invalid += 1
                        else:
                            refused_malformed += 1
                        click.echo(f"error: {message}", err=True)
                    else:
                        written += 1
                    if not many and not outcome.startswith("refused"):
                        click.echo(f"{result.index}  {result.digest.hex()}  {path} -> {target}"
                                   if outcome == "wrote" else message)
                bar.update(len(chunk))
    if many:
        click.echo(f"anchored {written} files (receipts written as FILE{_RECEIPT_SUFFIX}); "
                   f"kept {kept} existing receipts")
    if write_failures or refused_malformed:
        sys.exit(EXIT_ERROR)
    if refused_invalid:
        sys.exit(EXIT_INVALID)


@main.command("proof")
@click.argument("digest_hex", metavar="DIGEST")
@_node_option
@_cacert_option
@click.option("--out", "out_path", metavar="FILE",
              help="Write the receipt here [default: stdout]. An existing receipt of DIGEST "
              "that proves an equal or earlier moment is kept.")
@click.option("--policy", "policy_path", metavar="FILE",
              help="Trust policy: verify the receipt first.")
@click.option("--force", is_flag=True,
              help="With --out: replace a file that is unreadable or not a receipt of DIGEST.")
@click.option("--latest", is_flag=True,
              help="Against the node's latest checkpoint (carrying the first one as an "
              "earliest bridge) instead of the first checkpoint that holds DIGEST.")
@click.option("--tiles", "tiles_url", metavar="URL",
              help="Build the receipt from the tiled log (c2sp.org/tlog-tiles) at URL instead: "
              "a static copy made by 'ledger tiles export' (a web server's URL or the "
              "directory), or a node; against its checkpoint.")
@click.option("--index", "leaf_index", type=click.IntRange(0), default=None, metavar="N",
              help="With --tiles: DIGEST's leaf index, which skips reading the entry bundles "
              "from the start to find it.")
@click.option("--timeout", type=click.FloatRange(0.1, 600), default=30.0, show_default=True)
@_errors_to_exit
def proof_command(
    digest_hex: str, node_url: str | None, cacert: str | None, out_path: str | None,
    policy_path: str | None, force: bool, latest: bool, tiles_url: str | None,
    leaf_index: int | None, timeout: float,
) -> None:
    """Fetch the receipt (.tlog-proof) of an anchored DIGEST (64 hex digits).

    The receipt is against the first cosigned checkpoint whose tree holds DIGEST (the earliest
    moment the ledger proves, the same on every node), or with --latest against the latest.
    The node is --node or $LEDGER_NODE.

    With --tiles URL no node is asked: the receipt is built from the log's checkpoint and tiles
    alone, against that checkpoint (a later moment than the first receipt's). Finding DIGEST
    reads every entry bundle up to its leaf (34 bytes per leaf); --index skips that.
    """
    from ledger.client import LedgerClient, parse_digest

    digest = parse_digest(digest_hex)
    policy = _load_policy_file(policy_path) if policy_path is not None else None
    if tiles_url is not None:
        if latest:
            _fail(EXIT_ERROR, "--latest does not go with --tiles (a receipt from tiles is "
                  "against the tiles' checkpoint)")
        receipt = _proof_from_tiles(tiles_url, digest, leaf_index, policy, cacert, timeout)
    else:
        if leaf_index is not None:
            _fail(EXIT_ERROR, "--index goes with --tiles")
        url = _node_url(node_url)
        with LedgerClient(url, timeout=timeout, policy=policy,
                          ssl_context=_tls(cacert)) as client:
            receipt = client.proof(digest, latest=latest)
    if out_path is None:
        click.echo(receipt, nl=False)
        return
    outcome, message = _save_receipt(Path(out_path), receipt, digest, policy, force=force)
    if outcome.startswith("refused"):
        _fail(EXIT_INVALID if outcome == "refused" else EXIT_ERROR, message)
    click.echo(message, err=True)


def _proof_from_tiles(url: str, digest: bytes, index: int | None, policy: Policy | None,
                      cacert: str | None, timeout: float) -> str:
    """The receipt of ``digest`` built from the tiled log at ``url`` (ledger.tiles.client),
    with a progress bar on a terminal while the entry bundles are searched."""
    from ledger.tiles.client import TileSource, prove_from_tiles

    with (
        TileSource(url, timeout=timeout, ssl_context=_tls(cacert)) as source,
        _phase_bars() as bars,
    ):
        result = prove_from_tiles(source, digest, index=index, policy=policy,
                                  progress=lambda done, total: bars("searching", done, total))
    searched = f", {result.searched} leaves searched" if index is None else ""
    click.echo(f"built from the tiles at {url}: leaf {result.index} of tree size {result.size}, "
               f"against its checkpoint ({result.fetched} files fetched{searched})", err=True)
    return result.receipt


# ------------------------------------------------------------------------------- simulate


@main.command("simulate")
@click.option("--nodes", type=click.IntRange(1, 31), default=4, show_default=True)
@click.option("--byzantine", type=click.IntRange(0, 31), default=1, show_default=True,
              help="Byzantine validators; above f the run is a negative control (a fork must "
              "be found).")
@click.option("--schedules", type=click.IntRange(0), default=100, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True,
              help="Schedule i runs seed SEED+i; `--seed S --schedules 1` replays schedule S.")
@click.option("--faults", default=None,
              help="Comma-separated faults and Byzantine behaviours to draw from "
              "[default: all].")
@click.option("--heights", type=click.IntRange(1), default=3, show_default=True,
              help="Heights each schedule must commit after the faults stop (liveness).")
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Processes to run schedules in (the summary does not depend on it).")
@_errors_to_exit
def simulate_command(
    nodes: int, byzantine: int, schedules: int, seed: int, faults: str | None, heights: int,
    jobs: int,
) -> None:
    """Run the deterministic simulator: the production replica on n simulated nodes, over
    random fault schedules.

    Prints a JSON summary (schedules, commits, safety_violations, liveness_failures,
    first_failing_seed, evidence) and exits 0 only if no property failed.
    """
    from ledger.sim import run_simulations

    names = [f.strip() for f in faults.split(",") if f.strip()] if faults else None
    try:
        with click.progressbar(length=schedules, label="schedules", file=sys.stderr) as bar:
            summary = run_simulations(nodes=nodes, byzantine=byzantine, schedules=schedules,
                                      seed=seed, faults=names, heights=heights,
                                      progress=bar.update, jobs=jobs)
    except ValueError as exc:
        _fail(EXIT_ERROR, str(exc))
    click.echo(summary.to_json())
    if not summary.ok:
        sys.exit(EXIT_INVALID)


# ===================================================================================== db
# Operator tools on a node's data directory (issue 6 item 4): thin over ledger.dbtools.
# `db check` exits 0 when every block, certificate, tree node and checkpoint verifies, 1 on
# the first inconsistency (also a truncated or damaged file found at open), 2 on bad usage or
# an unreadable input. Every db command maps CorruptionError to 1.

if TYPE_CHECKING:
    from ledger.dbtools import Progress
    from ledger.storage import Damage


def _db_location(
    config_path: str | None, data_dir: str | None, genesis_path: str | None
) -> tuple[Path, Genesis | None]:
    """The data directory and genesis named by --config, or by --data-dir [--genesis]."""
    from ledger.config import load_node_config
    from ledger.genesis import load_genesis

    if (config_path is None) == (data_dir is None):
        _fail(EXIT_ERROR, "give exactly one of --config FILE or --data-dir DIR")
    if config_path is not None:
        if genesis_path is not None:
            _fail(EXIT_ERROR, "--genesis goes with --data-dir; --config names its genesis")
        config = load_node_config(config_path)
        return config.data_dir, config.genesis
    assert data_dir is not None
    return Path(data_dir), None if genesis_path is None else load_genesis(genesis_path)


@contextmanager
def _corruption_exits(where: Path) -> Iterator[None]:
    """A damaged store exits 1 naming the first inconsistency, like a proof that fails."""
    from ledger.errors import CorruptionError

    try:
        yield
    except CorruptionError as exc:
        _fail(EXIT_INVALID, f"the store at {where} is damaged: {exc.diagnostics()}")


@contextmanager
def _phase_bars() -> Iterator[Progress]:
    """A click progress bar on stderr per check phase (tree, blocks, checkpoints)."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        current: dict[str, int] = {}
        bars: dict[str, click._termui_impl.ProgressBar[int]] = {}

        def report(phase: str, done: int, total: int) -> None:
            bar = bars.get(phase)
            if bar is None:
                stack.close()  # finish the previous phase's bar
                bar = click.progressbar(
                    length=max(total, 1),
                    label=f"{phase:<11}",
                    file=sys.stderr,
                    hidden=not sys.stderr.isatty(),  # no bar in logs and cron mails
                )
                stack.enter_context(bar)
                bars[phase] = bar
                current[phase] = 0
            bar.update(done - current[phase])
            current[phase] = done

        yield report


_db_config = click.option("--config", "config_path", metavar="FILE", help="Node config (TOML).")
_db_data_dir = click.option(
    "--data-dir", metavar="DIR", help="The node's data directory (instead of --config)."
)


@main.group("db")
def db_group() -> None:
    """Operator tools on a node's data directory: check, backup, restore, migrate."""


@db_group.command("check")
@_db_config
@_db_data_dir
@click.option("--genesis", "genesis_path", metavar="FILE", help="Genesis (with --data-dir).")
@click.option("--rebuild", is_flag=True,
              help="Rebuild damaged derived data (the digest index) first; stop the node.")
@_errors_to_exit
def db_check(
    config_path: str | None, data_dir: str | None, genesis_path: str | None, rebuild: bool
) -> None:
    """Re-verify every stored value, block, certificate, tree node and checkpoint of a store.

    Safe while the node runs (it reads a snapshot), except with --rebuild, which writes: it
    rebuilds damage to the digest index from the stored tree, then checks. Exit 0 if all
    verifies; 1 naming the first inconsistency (a stored value, block height, node (level,
    index), checkpoint size); 2 on unreadable input.
    """
    from ledger.dbtools import check_database

    directory, genesis = _db_location(config_path, data_dir, genesis_path)
    if genesis is None:
        _fail(EXIT_ERROR, "--data-dir needs --genesis FILE: blocks are checked against it")

    def rebuilt(damage: Damage) -> None:
        click.echo(f"rebuilt {damage.key}: {damage.detail}")

    with _corruption_exits(directory), _phase_bars() as progress:
        report = check_database(directory, genesis, progress,
                                rebuild=rebuilt if rebuild else None)
    click.echo(f"ok: {directory} verifies against chain {genesis.chain_id}")
    click.echo(f"  blocks:      {report.blocks} (each certificate a quorum of precommits)")
    click.echo(f"  leaves:      {report.leaves} (every tree node rehashed)")
    click.echo(f"  checkpoints: {report.checkpoints} (each a quorum note on the stored root)")
    click.echo(f"  tree head:   size {report.head.size} root {report.head.root.hex()}")


@db_group.command("backup")
@_db_config
@_db_data_dir
@click.argument("dest")
@_errors_to_exit
def db_backup(config_path: str | None, data_dir: str | None, dest: str) -> None:
    """Copy the store into the new directory DEST, while the node keeps running.

    The copy is one consistent LMDB snapshot, compacted, fsynced, and renamed into place only
    once complete. DEST must not exist or be empty.
    """
    from ledger.dbtools import backup

    directory, _ = _db_location(config_path, data_dir, None)
    with _corruption_exits(directory):
        result = backup(directory, dest)
    click.echo(
        f"backed up {directory} to {result.path}: height {result.height}, tree size "
        f"{result.head.size}, root {result.head.root.hex()}, {result.bytes} bytes"
    )


@db_group.command("restore")
@click.argument("backup_dir", metavar="BACKUP")
@_db_config
@_db_data_dir
@click.option(
    "--genesis", "genesis_path", metavar="FILE", help="Genesis to check the backup against."
)
@click.option(
    "--force", is_flag=True, help="Restore over a non-empty data dir (kept as DIR.replaced-N)."
)
@_errors_to_exit
def db_restore(
    backup_dir: str,
    config_path: str | None,
    data_dir: str | None,
    genesis_path: str | None,
    force: bool,
) -> None:
    """Check the backup in BACKUP and put a copy in place as the node's data directory.

    Stop the node first. The backup itself is never modified; an existing data directory is
    only replaced with --force, and then kept aside, never deleted.
    """
    from ledger.dbtools import restore

    directory, genesis = _db_location(config_path, data_dir, genesis_path)
    with _corruption_exits(Path(backup_dir)), _phase_bars() as progress:
        result = restore(backup_dir, directory, force=force, genesis=genesis, progress=progress)
    if result.set_aside is not None:
        click.echo(f"kept the previous data directory as {result.set_aside}")
    click.echo(
        f"restored {backup_dir} into {result.data_dir}: height {result.height}, tree size "
        f"{result.head.size}, root {result.head.root.hex()}"
        + ("" if genesis is not None else " (tree checked; no genesis, blocks not checked)")
    )


@db_group.command("migrate")
@click.argument("data_dir_arg", metavar="[DIR]", required=False)
@_db_config
@_errors_to_exit
def db_migrate(data_dir_arg: str | None, config_path: str | None) -> None:
    """Upgrade the store in DIR (or the node's, with --config) to the current format.

    Stop the node first (a node that opens an old store upgrades it too). The upgraded store is
    built beside the old one, checked value for value, then swapped in; the old data file is
    kept as DIR/data-format1.mdb. Exit 0 when upgraded or already current.
    """
    from ledger.dbtools import migrate

    if (config_path is None) == (data_dir_arg is None):
        _fail(EXIT_ERROR, "give the data directory DIR or --config FILE")
    directory, _ = _db_location(config_path, data_dir_arg, None)
    with _corruption_exits(directory):
        report = migrate(directory)
    if report is None:
        click.echo(f"{directory} is already in the current store format")
        return
    click.echo(
        f"upgraded {directory} to the current store format: {report.leaves} leaves, "
        f"{report.blocks} blocks, {report.checkpoints} checkpoints, {report.meta} metadata "
        f"values; {report.old_bytes} -> {report.new_bytes} bytes"
    )
    click.echo(f"kept the old data file as {report.kept} (remove it once the node runs well)")


# ---------------------------------------------------------------------------------- tiles
# Static, cacheable reads (c2sp.org/tlog-tiles): thin over ledger.tiles.export. A tile that
# contradicts the store's tree (a fork) exits 1, like a proof that fails; bad input exits 2.


@main.group("tiles")
def tiles_group() -> None:
    """Static, cacheable reads of the log (c2sp.org/tlog-tiles) for any web server or CDN."""


@tiles_group.command("export")
@_db_config
@_db_data_dir
@click.option("--verify", is_flag=True,
              help="Compare every tile already in DIR with the tree, not only the new ones.")
@click.argument("directory", metavar="DIR")
@_errors_to_exit
def tiles_export(config_path: str | None, data_dir: str | None, verify: bool,
                 directory: str) -> None:
    """Write the log as static files into DIR: checkpoint, tile/... and tile/entries/....

    Reads the store of a node (--config, or --data-dir; safe while it runs) and writes the tree
    of its latest cosigned checkpoint, each file atomically and the checkpoint last. Run it
    again into the same DIR to add only what is new (new full tiles, partial tiles, the
    checkpoint). A file in DIR that contradicts the tree (a fork, or damage) is never replaced:
    the export stops and names it (exit 1). Serve DIR with any web server; 'ledger proof
    --tiles URL' builds receipts from it.
    """
    from ledger.storage.lmdb_store import LmdbStore
    from ledger.tiles.export import export_tiles

    store_dir, _ = _db_location(config_path, data_dir, None)
    with (
        _corruption_exits(store_dir),
        LmdbStore.open(store_dir, readonly=True) as store,
        _phase_bars() as bars,
    ):
        report = export_tiles(store, directory, verify=verify,
                              progress=lambda done, total: bars("tiles", done, total))
    since = f" (it held tree size {report.previous})" if report.previous else ""
    click.echo(f"exported tree size {report.size} of {report.origin} to {directory}{since}: "
               f"{report.written} files written, {report.kept} already there; checkpoint "
               + ("written" if report.checkpoint_written else "unchanged"))


# ------------------------------------------------------------------------------------ eod
# The EOD workflow client (ledger/eod) talks to the ledger only through its anchoring
# interface and never imports the storage layer; its offline demo ledger (`ledger eod --ground
# DIR`) is a proving ground opened here and handed in behind that same interface.
from ledger.eod.anchor import Anchorer  # noqa: E402
from ledger.eod.cli import eod_group, use_ground  # noqa: E402


@contextmanager
def _eod_ground(root: Path, clock: Callable[[], int]) -> Iterator[Anchorer]:
    """A proving ground (``ledger log init``) as the EOD client's anchorer.

    Raises:
        ConfigError: ``root`` is not a proving ground.
    """
    from ledger.eod.anchor import LocalLogAnchorer
    from ledger.prover import LocalLog
    from ledger.storage.lmdb_store import LmdbStore

    key_files = sorted((root / _KEYS_DIR).glob("*.key"))
    if not key_files or not (root / _STORE_DIR).is_dir():
        raise ConfigError(f"{root} is not a proving ground; run 'ledger log init {root}'")
    validators = [read_key_file(path) for path in key_files]
    store = LmdbStore.open(str(root / _STORE_DIR))
    try:
        yield LocalLogAnchorer(LocalLog(store, validators=validators), clock=clock)
    finally:
        store.close()


use_ground(_eod_ground)
main.add_command(eod_group)


# ------------------------------------------------------------------------------ validators
# Validator-set changes (issue 6): the group lives in ledger/reconfig_cli.py.
from ledger.reconfig_cli import validators_group  # noqa: E402

main.add_command(validators_group)


# ------------------------------------------------------------------------------ witness
# A standalone outside witness (issue 11): the group lives in ledger/witness_cli.py.
from ledger.witness_cli import witness_group  # noqa: E402

main.add_command(witness_group)


if __name__ == "__main__":
    main()
