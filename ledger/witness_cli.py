"""``ledger witness``: run a standalone C2SP tlog-witness, as an outside institution does.

::

    ledger witness init --dir W --name audit.example/w1     # a key; prints the verifier key
    ledger witness key --dir W                              # prints it again
    ledger witness serve --dir W --policy trust-policy --port 7300

``W/witness.key`` (mode 0600) holds the witness's name and Ed25519 seed; ``W/state/`` is the
witness's record of the last checkpoint it cosigned per log (an LMDB store, synced before every
answer, as c2sp.org/tlog-witness requires). The logs it witnesses are the ``log`` lines of
``--policy`` (the ledger's trust policy, ``GET /v1/policy``). What it checks and signs is
:class:`ledger.replica.witness.Witness`; the HTTP side is
:func:`ledger.node.witness_api.witness_app`; docs/witness.md is the operator's guide.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final, NoReturn, ParamSpec, TypeVar

import click

from ledger.crypto import SIG_TYPE_COSIGNATURE_V1, Ed25519Key, check_key_name
from ledger.errors import LedgerError, MalformedError
from ledger.note import Verifier
from ledger.policy import Log, parse_policy

__all__ = ["KEY_HEADER", "read_witness_key", "witness_group", "write_witness_key"]

P = ParamSpec("P")
R = TypeVar("R")

#: The first line of a witness key file.
KEY_HEADER: Final = "ledger-witness-key/v1"
KEY_FILE: Final = "witness.key"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_POLICY: Final = 1 << 20


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _errors(func: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except LedgerError as exc:
            _fail(exc.diagnostics())

    return wrapper


def write_witness_key(path: Path, *, name: str, key: Ed25519Key) -> None:
    """Write a witness key file (mode 0600), never over an existing file.

    Raises:
        MalformedError: ``name`` is not a valid key name.
        FileWriteError: the file exists or cannot be written.
    """
    from ledger.fileio import write_atomic

    check_key_name(name, what="witness name")
    write_atomic(path, f"{KEY_HEADER}\nname {name}\nseed {key.seed.hex()}\n", mode=0o600,
                 replace=False)


def read_witness_key(path: Path) -> tuple[str, Ed25519Key]:
    """The name and key of a witness key file.

    Raises:
        MalformedError: the file is unreadable or not a witness key file.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MalformedError(f"cannot read witness key {path}: {exc}") from None
    lines = text.split("\n")
    if len(lines) != 4 or lines[0] != KEY_HEADER or lines[3] != "" \
            or not lines[1].startswith("name ") or not lines[2].startswith("seed ") \
            or not _HEX64.fullmatch(lines[2][5:]):
        raise MalformedError(f"{path} is not a witness key file ({KEY_HEADER})")
    name = check_key_name(lines[1][5:], what="witness name")
    return name, Ed25519Key(bytes.fromhex(lines[2][5:]))


def _vkey(name: str, key: Ed25519Key) -> str:
    return Verifier.for_key(name=name, sig_type=SIG_TYPE_COSIGNATURE_V1,
                            public_key=key.public_key).vkey


@click.group("witness")
def witness_group() -> None:
    """A standalone tlog-witness (an outside institution's): keys and the server."""


@witness_group.command("init")
@click.option("--dir", "directory", required=True, type=click.Path(path_type=Path),
              help="The witness's directory (created; holds witness.key and state/).")
@click.option("--name", required=True, help="The witness's key name, e.g. audit.example/w1.")
@_errors
def init_command(directory: Path, name: str) -> None:
    """Generate the witness key (DIR/witness.key, mode 0600) and print its verifier key."""
    import secrets

    from ledger.fileio import make_private_dir

    check_key_name(name, what="witness name")  # before anything is created
    make_private_dir(directory)
    key = Ed25519Key(secrets.token_bytes(32))
    write_witness_key(directory / KEY_FILE, name=name, key=key)
    click.echo(f"wrote {directory / KEY_FILE} (mode 0600)")
    click.echo(f"vkey: {_vkey(name, key)}")


@witness_group.command("key")
@click.option("--dir", "directory", required=True, type=click.Path(path_type=Path),
              help="The witness's directory.")
@_errors
def key_command(directory: Path) -> None:
    """Print the witness's verifier key (for the operators' [[witnesses]] and policy)."""
    name, key = read_witness_key(directory / KEY_FILE)
    click.echo(_vkey(name, key))


@witness_group.command("serve")
@click.option("--dir", "directory", required=True, type=click.Path(path_type=Path),
              help="The witness's directory (from `ledger witness init`).")
@click.option("--policy", "policy_path", required=True, type=click.Path(path_type=Path),
              help="Trust policy whose `log` keys are the logs this witness witnesses.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), required=True,
              help="Port to listen on (0: any free one, printed).")
@_errors
def serve_command(directory: Path, policy_path: Path, host: str, port: int) -> None:
    """Serve POST /add-checkpoint until SIGTERM or Ctrl-C."""
    name, key = read_witness_key(directory / KEY_FILE)
    try:
        data = policy_path.read_bytes()[:_MAX_POLICY + 1]
    except OSError as exc:
        _fail(f"cannot read policy {policy_path}: {exc.strerror}")
    try:
        policy = parse_policy(data)
    except MalformedError as exc:
        _fail(f"malformed policy {policy_path}: {exc.diagnostics()}")
    if not policy.logs:
        _fail(f"policy {policy_path} lists no log")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(directory, name, key, policy.logs, host, port))


async def _serve(directory: Path, name: str, key: Ed25519Key, logs: tuple[Log, ...],
                 host: str, port: int) -> None:
    from aiohttp import web

    from ledger.node.witness_api import witness_app
    from ledger.replica.witness import Witness
    from ledger.storage.lmdb_store import LmdbStore

    state = LmdbStore.open(directory / "state")
    try:
        witness = Witness(name=name, key=key, logs=[entry.verifier for entry in logs],
                          state=state)
        runner = web.AppRunner(witness_app(witness), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            _fail(f"cannot listen on {host}:{port}: {exc.strerror}")
        server = site._server
        bound = port if server is None else server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        click.echo(f"witness {name} serving on http://{host}:{bound} "
                   f"(vkey {_vkey(name, key)})", err=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()
    finally:
        state.close()
