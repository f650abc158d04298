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
@click.option("--proof", "proof_path", required=True, metavar="FILE", help="Receipt (.tlog-proof).")
@click.option(
    "--digest", "digest_hex", metavar="HEX", help="SHA-256 of the document, 64 hex digits."
)
@click.argument("file", required=False)
@_errors_to_exit
def verify_command(
    policy_path: str | None, chain_path: str | None, proof_path: str, digest_hex: str | None,
    file: str | None,
) -> None:
    """Verify a receipt for a document FILE (or --digest) against a trust policy, offline.

    Give --policy, or --policy-chain (optionally pinned with --policy to the genesis policy).
    Exit 0 if valid, 1 if invalid (with the reason), 2 if an input is unreadable or malformed.
    """
    from ledger.policy_chain import MAX_CHAIN_SIZE, parse_policy_chain, verify_receipt_with_chain

    if policy_path is None and chain_path is None:
        _fail(EXIT_ERROR, "give --policy FILE or --policy-chain FILE")
    digest = _digest_from(digest_hex, file)
    policy = None
    if policy_path is not None:
        policy_bytes = _read_bytes(policy_path, what="policy", limit=_MAX_POLICY_FILE)
        try:
            policy = parse_policy(policy_bytes)
        except MalformedError as exc:
            _fail(EXIT_ERROR, f"malformed policy {policy_path}: {exc.diagnostics()}")
    proof_bytes = _read_bytes(proof_path, what="receipt", limit=MAX_RECEIPT_SIZE)
    try:
        if chain_path is None:
            assert policy is not None
            result = verify_receipt(proof_bytes, policy, digest)
        else:
            chain_bytes = _read_bytes(chain_path, what="policy chain", limit=MAX_CHAIN_SIZE)
            try:
                chain = parse_policy_chain(chain_bytes)
            except MalformedError as exc:
                _fail(EXIT_ERROR, f"malformed policy chain {chain_path}: {exc.diagnostics()}")
            result = verify_receipt_with_chain(proof_bytes, chain, digest, genesis_policy=policy)
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


# ================================================================================================
# The sections below (genesis, node, status, devnet, anchor, proof) are the operator and client
# commands of issue 4; they are thin over ledger.config, ledger.devnet and ledger.client.
# ================================================================================================

if TYPE_CHECKING:
    from ledger.config import Genesis
    from ledger.devnet import Devnet
    from ledger.policy import Policy

_TOKEN_ENV: Final = "LEDGER_TOKEN"
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
    from ledger.config import GenesisDraft, format_genesis, write_text_atomic

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
    from ledger.config import format_genesis, load_genesis_draft, parse_vkeys, write_text_atomic

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
    from ledger.config import format_genesis, load_genesis_draft, trust_policy, write_text_atomic
    from ledger.prover import fault_tolerance

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
    from ledger.config import load_genesis

    _echo_genesis(load_genesis(genesis_path))


def _echo_genesis(genesis: Genesis) -> None:
    from ledger.prover import fault_tolerance, quorum_threshold

    click.echo(f"chain id:     {genesis.chain_id}")
    click.echo(f"origin:       {genesis.origin}")
    click.echo(f"genesis time: {_utc_ms(genesis.genesis_time)} ({genesis.genesis_time} ms)")
    click.echo(
        f"validators:   {genesis.n} (tolerates f = {fault_tolerance(genesis.n)}, "
        f"quorum {quorum_threshold(genesis.n)})"
    )
    for v in genesis.validators:
        click.echo(f"  {v.name}  {v.url or '(no URL)'}")
    click.echo(f"genesis hash: {genesis.genesis_hash()}")


# ----------------------------------------------------------------------------------- node


@main.command("node")
@click.option("--config", "config_path", required=True, help="Node config (TOML).")
@_errors_to_exit
def node_command(config_path: str) -> None:
    """Run a validator node until SIGTERM or Ctrl-C."""
    import asyncio
    import contextlib

    from ledger.config import load_node_config

    config = load_node_config(config_path)
    from ledger.node import run_node  # lazy: aiohttp and the storage load only for a node

    # run_node handles SIGINT and SIGTERM itself; this only covers a Ctrl-C during start-up.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_node(config))


# --------------------------------------------------------------------------------- status


@main.command("status")
@click.option("--node", "node_url", required=True, help="Base URL of a node.")
@click.option("--timeout", type=click.FloatRange(0.1, 600), default=5.0, show_default=True)
@_errors_to_exit
def status_command(node_url: str, timeout: float) -> None:
    """Show a node's readiness, consensus status, latest checkpoint and key metrics."""
    import json

    from ledger.checkpoint import parse_checkpoint_body
    from ledger.client import LedgerClient, TransportError, parse_metrics
    from ledger.note import parse_note

    with LedgerClient(node_url, timeout=timeout) as client:
        try:
            ready = client.ready()
        except TransportError as exc:
            _fail(EXIT_ERROR, exc.diagnostics())
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


# --------------------------------------------------------------------------------- devnet


@main.group("devnet")
def devnet_group() -> None:
    """A local validator network on 127.0.0.1 for development."""


_devnet_dir = click.option("--dir", "directory", required=True, help="Devnet directory.")
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


@devnet_group.command("init")
@_devnet_dir
@_devnet_nodes
@_devnet_port
@_errors_to_exit
def devnet_init(directory: str, nodes: int, base_port: int) -> None:
    """Write keys, genesis, trust policy, node configs and a client token into DIR."""
    from ledger.devnet import init_devnet

    net = init_devnet(Path(directory), nodes=nodes, base_port=base_port, genesis_time_ms=_now_ms())
    _echo_devnet(net)


def _echo_devnet(net: Devnet) -> None:
    click.echo(f"devnet in {net.directory}: {len(net.configs)} nodes")
    for name, url in net.urls:
        click.echo(f"  {name}  {url}")
    click.echo(f"genesis hash: {net.genesis_hash}")
    click.echo(f"trust policy: {net.policy_file}")
    click.echo(f"client token: {net.token_file}")


@devnet_group.command("up")
@_devnet_dir
@_devnet_nodes
@_devnet_port
@click.option(
    "--grace",
    type=click.FloatRange(0, 600),
    default=10.0,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL when stopping.",
)
@_errors_to_exit
def devnet_up(directory: str, nodes: int, base_port: int, grace: float) -> None:
    """Run every node of DIR in the foreground (initialising DIR first if needed).

    The nodes' logs are merged into one stream, each line prefixed with the node's name. Ctrl-C
    or SIGTERM stops every node (SIGTERM, then SIGKILL after --grace seconds).
    """
    import signal
    import threading

    from ledger.devnet import GENESIS_FILE, Supervisor, init_devnet, load_devnet, node_command

    root = Path(directory)
    if (root / GENESIS_FILE).exists():
        net = load_devnet(root)
    else:
        net = init_devnet(root, nodes=nodes, base_port=base_port, genesis_time_ms=_now_ms())
    _echo_devnet(net)
    first_url = net.urls[0][1]
    click.echo(
        f"try:  ledger anchor --node {first_url} --token-file {net.token_file} FILE\n"
        f"      ledger verify --policy {net.policy_file} --proof FILE.tlog-proof FILE"
    )
    width = max(len(name) for name, _ in net.configs)
    palette = ("cyan", "green", "yellow", "magenta", "blue", "red")
    colors = {name: palette[i % len(palette)] for i, (name, _) in enumerate(net.configs)}
    color = sys.stdout.isatty()

    def emit(name: str, line: str) -> None:
        prefix = f"{name:<{width}} |"
        if color:
            prefix = click.style(prefix, fg=colors.get(name, "white"), bold=name == "devnet")
        click.echo(f"{prefix} {line}")

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        supervisor = Supervisor(
            {name: node_command(path) for name, path in net.configs}, emit=emit, grace=grace
        )
        status = supervisor.run(stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if status:
        _fail(EXIT_ERROR, "a node exited on its own; see its log above")


# --------------------------------------------------------------------------- anchor, proof


def _resolve_token(token: str | None, token_file: str | None) -> str:
    if token is not None and token_file is not None:
        _fail(EXIT_ERROR, "give --token or --token-file, not both")
    if token_file is not None:
        token = _read_bytes(token_file, what="token file", limit=4096).decode("utf-8", "replace")
        token = token.strip()
    if not token:
        _fail(EXIT_ERROR, f"a token is needed: --token, --token-file or ${_TOKEN_ENV}")
    return token


@main.command("anchor")
@click.option("--node", "node_url", required=True, help="Base URL of a node.")
@click.option("--token", envvar=_TOKEN_ENV, help=f"Bearer token [env: {_TOKEN_ENV}].")
@click.option("--token-file", help="File holding the bearer token.")
@click.option("--policy", "policy_path", help="Trust policy: verify each receipt before saving.")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=60.0, show_default=True)
@click.argument("files", nargs=-1, required=True)
@_errors_to_exit
def anchor_command(
    node_url: str,
    token: str | None,
    token_file: str | None,
    policy_path: str | None,
    timeout: float,
    files: tuple[str, ...],
) -> None:
    """Anchor FILES and write FILE.tlog-proof next to each.

    Files are hashed here (SHA-256); only their digests are sent, in requests of up to 1,000.
    """
    from ledger.client import LedgerClient

    secret = _resolve_token(token, token_file)
    policy = _load_policy_file(policy_path) if policy_path is not None else None
    show = len(files) >= _PROGRESS_MIN_FILES
    digests: list[bytes] = []
    with click.progressbar(files, label="hashing", file=sys.stderr, hidden=not show) as bar:
        for path in bar:
            digests.append(_hash_file(path))
    with (
        LedgerClient(node_url, secret, timeout=timeout, policy=policy) as client,
        click.progressbar(
            length=len(files), label="anchoring", file=sys.stderr, hidden=not show
        ) as bar,
    ):
        for start in range(0, len(files), _ANCHOR_BATCH):
            chunk = slice(start, start + _ANCHOR_BATCH)
            results = client.anchor(digests[chunk], wait=True)
            for path, result in zip(files[chunk], results, strict=True):
                assert result.receipt is not None  # wait=True returns receipts or raises
                target = Path(f"{path}.tlog-proof")
                _write_text(target, result.receipt)
                if not show:
                    click.echo(f"{result.index}  {result.digest.hex()}  {path} -> {target}")
            bar.update(len(results))
    if show:
        click.echo(f"anchored {len(files)} files; receipts written as FILE.tlog-proof")


@main.command("proof")
@click.argument("digest_hex", metavar="DIGEST")
@click.option("--node", "node_url", required=True, help="Base URL of a node.")
@click.option("--out", "out_path", help="Write the receipt here [default: stdout].")
@click.option("--policy", "policy_path", help="Trust policy: verify the receipt first.")
@click.option("--timeout", type=click.FloatRange(0.1, 600), default=30.0, show_default=True)
@_errors_to_exit
def proof_command(
    digest_hex: str, node_url: str, out_path: str | None, policy_path: str | None, timeout: float
) -> None:
    """Fetch the receipt (.tlog-proof) of an anchored DIGEST (64 hex digits)."""
    from ledger.client import LedgerClient, parse_digest

    digest = parse_digest(digest_hex)
    policy = _load_policy_file(policy_path) if policy_path is not None else None
    with LedgerClient(node_url, timeout=timeout, policy=policy) as client:
        receipt = client.proof(digest)
    if out_path is None:
        click.echo(receipt, nl=False)
    else:
        _write_text(Path(out_path), receipt)
        click.echo(f"wrote {out_path}", err=True)


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
@_errors_to_exit
def simulate_command(
    nodes: int, byzantine: int, schedules: int, seed: int, faults: str | None, heights: int
) -> None:
    """Run the deterministic consensus simulator over random fault schedules.

    Prints a JSON summary (schedules, commits, safety_violations, liveness_failures,
    first_failing_seed, evidence) and exits 0 only if no property failed.
    """
    from ledger.consensus.sim import run_simulations

    names = [f.strip() for f in faults.split(",") if f.strip()] if faults else None
    try:
        with click.progressbar(length=schedules, label="schedules", file=sys.stderr) as bar:
            summary = run_simulations(nodes=nodes, byzantine=byzantine, schedules=schedules,
                                      seed=seed, faults=names, heights=heights,
                                      progress=bar.update)
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
    from ledger.config import load_genesis, load_node_config

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


from ledger.eod.cli import eod_group  # noqa: E402  (the EOD workflow client, issue 5)

main.add_command(eod_group)


# ------------------------------------------------------------------------------ validators
# Validator-set changes (issue 6): the group lives in ledger/reconfig_cli.py.
from ledger.reconfig_cli import validators_group  # noqa: E402

main.add_command(validators_group)


if __name__ == "__main__":
    main()
