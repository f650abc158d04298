"""A local validator network for development and tests: files on disk and a process supervisor.

:func:`init_devnet` writes everything a cluster of ``n`` validators on 127.0.0.1 needs into one
directory, so that ``ledger devnet up`` (and ``make devnet``) start it from a fresh clone::

    D/genesis.json            final genesis (chain id, origin, validators with their URLs)
    D/trust-policy            c2sp.org/tlog-policy derived from the genesis (for ledger verify)
    D/client-token            a random bearer token for anchoring (mode 0600)
    D/keys/validator-N.key    each validator's key file (directory 0700, files 0600)
    D/nodes/validator-N.toml  each node's config; it stores only the token's SHA-256
    D/data/validator-N/       each node's store (created by the node)

Node ``N`` (1-based) listens on ``base_port + N - 1``. Every path inside the configs is relative
to the config file, so the directory can be moved as a whole. All keys sit in one directory on
one machine: a devnet proves nothing about independence and is for development only.

:class:`Supervisor` runs one process per node, hands each output line to a callback with the
node's name (the CLI prints them as one prefixed stream), and stops them in order: SIGTERM to
every child, a grace period, then SIGKILL to any that are left. Children get their own session,
so a Ctrl-C in the terminal reaches only the supervisor, which then stops them cleanly; on Linux
they also receive SIGTERM if the supervisor dies without cleaning up (``PR_SET_PDEATHSIG``).

The clock is read by the caller: :func:`init_devnet` takes the genesis time as an argument.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from ledger.config import (
    ClientToken,
    GenesisDraft,
    GenesisValidator,
    NodeConfig,
    Peer,
    format_genesis,
    format_node_config,
    hash_token,
    trust_policy,
    write_text_atomic,
)
from ledger.crypto import ValidatorKeys, write_key_file
from ledger.errors import ConfigError

__all__ = [
    "DEFAULT_BASE_PORT",
    "DEFAULT_CHAIN_ID",
    "DEFAULT_ORIGIN",
    "Devnet",
    "Supervisor",
    "init_devnet",
    "load_devnet",
    "node_command",
]

DEFAULT_BASE_PORT: Final = 7100
DEFAULT_CHAIN_ID: Final = "ledger-devnet"
DEFAULT_ORIGIN: Final = "devnet.ledger.localhost/log"
MAX_DEVNET_NODES: Final = 64

GENESIS_FILE: Final = "genesis.json"
POLICY_FILE: Final = "trust-policy"
TOKEN_FILE: Final = "client-token"
KEYS_DIR: Final = "keys"
NODES_DIR: Final = "nodes"
DATA_DIR: Final = "data"



def free_base_port(count: int, *, attempts: int = 100) -> int:
    """A port P such that P .. P + count - 1 are all free on 127.0.0.1 right now.

    Best effort: the ports are released again before returning, so a process binding them a
    moment later can still lose a race (callers bind them soon, or retry). For tests and
    benchmarks that start devnets beside others without colliding.

    Raises:
        ConfigError: no such run of ports was found in ``attempts`` tries.
    """
    for _ in range(attempts):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count > 65536:
            continue
        held: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise ConfigError(f"no run of {count} free ports on 127.0.0.1")

@dataclass(frozen=True, kw_only=True)
class Devnet:
    """An initialised devnet directory: its genesis hash and the node config files by name."""

    directory: Path
    genesis_hash: str
    configs: tuple[tuple[str, Path], ...]
    urls: tuple[tuple[str, str], ...]

    @property
    def policy_file(self) -> Path:
        return self.directory / POLICY_FILE

    @property
    def token_file(self) -> Path:
        return self.directory / TOKEN_FILE


def init_devnet(
    directory: Path,
    *,
    nodes: int,
    base_port: int = DEFAULT_BASE_PORT,
    genesis_time_ms: int,
    chain_id: str = DEFAULT_CHAIN_ID,
    origin: str = DEFAULT_ORIGIN,
) -> Devnet:
    """Write a fresh devnet of ``nodes`` validators into ``directory`` (see the module docstring).

    The genesis is written last, so a directory with a ``genesis.json`` is complete.

    Raises:
        ConfigError: ``directory`` already holds a devnet (or its keys), ``nodes`` or the ports
            are out of range, or a file cannot be written.
    """
    if not 1 <= nodes <= MAX_DEVNET_NODES:
        raise ConfigError(f"a devnet has 1 to {MAX_DEVNET_NODES} nodes, not {nodes}")
    if base_port < 1 or base_port + nodes - 1 > 65535:
        raise ConfigError(f"ports {base_port}..{base_port + nodes - 1} are not all valid")
    directory = directory.absolute()
    if (directory / GENESIS_FILE).exists() or (directory / KEYS_DIR).exists():
        raise ConfigError(f"{directory} already holds a devnet; remove it to start afresh")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / KEYS_DIR).mkdir(mode=0o700)
        (directory / NODES_DIR).mkdir(exist_ok=True)
        (directory / DATA_DIR).mkdir(exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the devnet directories in {directory}: {exc}") from None

    keys = [
        ValidatorKeys.generate(name=f"validator-{i}", origin=origin) for i in range(1, nodes + 1)
    ]
    urls = {k.name: f"http://127.0.0.1:{base_port + i}" for i, k in enumerate(keys)}
    draft = GenesisDraft(
        chain_id=chain_id,
        origin=origin,
        validators=tuple(GenesisValidator.from_keys(k, url=urls[k.name]) for k in keys),
    )
    genesis = draft.finalize(genesis_time=genesis_time_ms)

    token = secrets.token_urlsafe(32)
    write_text_atomic(directory / TOKEN_FILE, token + "\n", mode=0o600)
    client = ClientToken(name="devnet", token_sha256=hash_token(token))
    configs: list[tuple[str, Path]] = []
    for i, k in enumerate(keys):
        key_file = directory / KEYS_DIR / f"{k.name}.key"
        write_key_file(key_file, k)
        config_file = directory / NODES_DIR / f"{k.name}.toml"
        config = NodeConfig(
            name=k.name,
            listen_host="127.0.0.1",
            listen_port=base_port + i,
            public_url=urls[k.name],
            data_dir=directory / DATA_DIR / k.name,
            key_file=key_file,
            genesis_file=directory / GENESIS_FILE,
            genesis=genesis,
            peers=tuple(Peer(name=v.name, url=urls[v.name]) for v in keys if v.name != k.name),
            clients=(client,),
        )
        write_text_atomic(config_file, format_node_config(config, relative_to=config_file.parent))
        configs.append((k.name, config_file))
    write_text_atomic(directory / POLICY_FILE, trust_policy(genesis))
    write_text_atomic(directory / GENESIS_FILE, format_genesis(genesis))
    return Devnet(
        directory=directory,
        genesis_hash=genesis.genesis_hash(),
        configs=tuple(configs),
        urls=tuple(urls.items()),
    )


def load_devnet(directory: Path) -> Devnet:
    """Read back a devnet written by :func:`init_devnet`, checking every node config.

    Raises:
        ConfigError: no genesis in ``directory``, or a node config that does not load.
    """
    from ledger.config import load_genesis, load_node_config

    directory = directory.absolute()
    genesis = load_genesis(directory / GENESIS_FILE)
    configs: list[tuple[str, Path]] = []
    urls: list[tuple[str, str]] = []
    for v in genesis.validators:
        path = directory / NODES_DIR / f"{v.name}.toml"
        config = load_node_config(path)
        configs.append((v.name, path))
        urls.append((v.name, config.public_url))
    return Devnet(
        directory=directory,
        genesis_hash=genesis.genesis_hash(),
        configs=tuple(configs),
        urls=tuple(urls),
    )


def node_command(config_file: Path) -> list[str]:
    """The command that runs one node: this interpreter, ``-m ledger.cli node --config F``.

    Using ``sys.executable`` rather than a ``ledger`` script on PATH runs the nodes in the same
    environment (virtualenv) as the supervisor, installed or not.
    """
    return [sys.executable, "-m", "ledger.cli", "node", "--config", str(config_file)]


# -------------------------------------------------------------------------------- supervisor

_PR_SET_PDEATHSIG: Final = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # Linux only: ask the kernel to SIGTERM this child when the supervisor dies (even by
    # SIGKILL), so that no node is left running without its supervisor.
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(libc_name, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    reader: threading.Thread
    reported: bool = False


class Supervisor:
    """Run named commands as child processes and stop them cleanly.

    ``emit(name, line)`` is called (from reader threads, one call at a time) with each output
    line of each child (stdout and stderr merged, decoded as UTF-8 with replacement), and with
    ``name = "devnet"`` for the supervisor's own messages. ``grace`` is the number of seconds
    between SIGTERM and SIGKILL.
    """

    def __init__(
        self,
        commands: Mapping[str, Sequence[str]],
        *,
        emit: Callable[[str, str], None],
        grace: float = 10.0,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self._commands = dict(commands)
        self._emit_fn = emit
        self._grace = grace
        self._env = dict(os.environ if env is None else env)
        # Children print as they go, not in 8 KiB blocks: the merged log stays interleaved.
        self._env.setdefault("PYTHONUNBUFFERED", "1")
        self._cwd = cwd
        self._lock = threading.Lock()
        self._children: list[_Child] = []

    def _emit(self, name: str, line: str) -> None:
        with self._lock:
            self._emit_fn(name, line)

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                self._emit(name, raw.decode("utf-8", errors="replace").rstrip("\r\n"))

    def start(self) -> None:
        """Start every command.

        Raises:
            ConfigError: a command cannot be started (the ones already started are stopped).
        """
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        for name, argv in self._commands.items():
            try:
                process = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=self._env,
                    cwd=self._cwd,
                    start_new_session=True,
                    preexec_fn=preexec,
                )
            except OSError as exc:
                self.stop()
                raise ConfigError(f"cannot start {name} ({argv[0]}): {exc.strerror}") from None
            assert process.stdout is not None
            reader = threading.Thread(
                target=self._pump, args=(name, process.stdout), name=f"log-{name}", daemon=True
            )
            reader.start()
            self._children.append(_Child(name=name, process=process, reader=reader))
            self._emit("devnet", f"started {name} (pid {process.pid})")

    def poll(self) -> list[tuple[str, int]]:
        """Report children that exited since the last call: ``(name, exit status)`` each
        (negative = killed by that signal)."""
        exited: list[tuple[str, int]] = []
        for child in self._children:
            code = child.process.poll()
            if code is not None and not child.reported:
                child.reported = True
                exited.append((child.name, code))
        return exited

    @property
    def running(self) -> int:
        """How many children are still running."""
        return sum(1 for c in self._children if c.process.poll() is None)

    def stop(self) -> None:
        """SIGTERM every running child, wait up to the grace period, SIGKILL the rest, and wait
        for their output to be drained."""
        alive = [c for c in self._children if c.process.poll() is None]
        for child in alive:
            self._emit("devnet", f"stopping {child.name} (SIGTERM)")
            self._signal(child, signal.SIGTERM)
        deadline = time.monotonic() + self._grace
        for child in alive:
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._emit("devnet", f"{child.name} did not stop in {self._grace:g} s: SIGKILL")
                self._signal(child, signal.SIGKILL)
                child.process.wait()
        for child in self._children:
            # The pipe closes when the child exits; a grandchild holding it must not hang us.
            child.reader.join(timeout=2.0)
            if not child.reported:
                child.reported = True
                code = child.process.returncode
                self._emit("devnet", f"{child.name} exited ({_describe(code)})")

    @staticmethod
    def _signal(child: _Child, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):  # it exited between poll() and here
            child.process.send_signal(signum)

    def run(self, stop: threading.Event, *, poll_interval: float = 0.2) -> int:
        """Start the children, run until ``stop`` is set or every child has exited, then stop.

        Returns 0 when stopped on request with no child having failed before, 1 if any child
        exited on its own (a node that crashes is an error in a devnet).

        Raises:
            ConfigError: a command cannot be started.
        """
        self.start()
        failed = False
        try:
            while not stop.wait(poll_interval):
                for name, code in self.poll():
                    failed = True
                    self._emit("devnet", f"{name} exited on its own ({_describe(code)})")
                if self.running == 0:
                    self._emit("devnet", "every node has exited")
                    break
        finally:
            self.stop()
        return 1 if failed else 0


def _describe(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"
