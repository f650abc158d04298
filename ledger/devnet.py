"""A local validator network for development and tests: files on disk and a process supervisor.

:func:`init_devnet` writes everything a cluster of ``n`` validators on 127.0.0.1 needs into one
directory, so that ``ledger devnet up`` (and ``make devnet``) start it from a fresh clone::

    D/genesis.json            final genesis (chain id, origin, validators with their URLs)
    D/trust-policy            c2sp.org/tlog-policy derived from the genesis (for ledger verify)
    D/client-token            a random bearer token for anchoring (mode 0600)
    D/admin-token             a random operator token (validator-set changes; mode 0600)
    D/keys/validator-N.key    each validator's key file (directory 0700, files 0600)
    D/nodes/validator-N.toml  each node's config; it stores only the token's SHA-256
    D/data/validator-N/       each node's store (created by the node)
    D/devnet.pid              the pid of the running ``devnet up`` supervisor (while it runs)
    D/devnet.log              the merged log of a devnet started with ``devnet up --detach``
    D/tls/                    with ``--tls``: the devnet CA (ca.crt, ca.key) and each node's
                              certificate and key (validator-N.crt, validator-N.key)

With ``tls`` every node serves HTTPS with its certificate (names 127.0.0.1 and localhost), its
URLs are https, its peers verify each other against ``tls/ca.crt``, and clients pass
``--cacert D/tls/ca.crt``.

Every directory is created with mode 0700, whatever the umask.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from ledger.config import (
    LOCAL_TIMEOUTS,
    ClientToken,
    NodeConfig,
    Peer,
    TlsSettings,
    format_node_config,
    hash_token,
    write_text_atomic,
)
from ledger.crypto import ValidatorKeys, write_key_file
from ledger.errors import ConfigError
from ledger.fileio import FileWriteError, make_private_dir
from ledger.genesis import GenesisDraft, ValidatorInfo, format_genesis, trust_policy

__all__ = [
    "DEFAULT_BASE_PORT",
    "DEFAULT_CHAIN_ID",
    "DEFAULT_DIRECTORY",
    "DEFAULT_ORIGIN",
    "Devnet",
    "DevnetRunningError",
    "Supervisor",
    "check_ports_free",
    "claim_pid_file",
    "devnet_ports",
    "exit_with_parent",
    "init_devnet",
    "load_devnet",
    "node_command",
    "nodes_ready",
    "ready_line",
    "release_pid_file",
    "running_supervisor",
    "stop_supervisor",
]

DEFAULT_BASE_PORT: Final = 7100
DEFAULT_DIRECTORY: Final = "devnet"
DEFAULT_CHAIN_ID: Final = "ledger-devnet"
DEFAULT_ORIGIN: Final = "devnet.ledger.localhost/log"
MAX_DEVNET_NODES: Final = 64

GENESIS_FILE: Final = "genesis.json"
POLICY_FILE: Final = "trust-policy"
TOKEN_FILE: Final = "client-token"
ADMIN_TOKEN_FILE: Final = "admin-token"
KEYS_DIR: Final = "keys"
NODES_DIR: Final = "nodes"
DATA_DIR: Final = "data"
PID_FILE: Final = "devnet.pid"
LOG_FILE: Final = "devnet.log"
TLS_DIR: Final = "tls"



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
    tls: bool = False

    @property
    def policy_file(self) -> Path:
        return self.directory / POLICY_FILE

    @property
    def cacert(self) -> Path | None:
        """The devnet CA's certificate (``--cacert``) when it runs TLS."""
        return self.directory / TLS_DIR / "ca.crt" if self.tls else None

    @property
    def token_file(self) -> Path:
        return self.directory / TOKEN_FILE

    @property
    def admin_token_file(self) -> Path:
        return self.directory / ADMIN_TOKEN_FILE


def init_devnet(
    directory: Path,
    *,
    nodes: int,
    base_port: int = DEFAULT_BASE_PORT,
    genesis_time_ms: int,
    chain_id: str = DEFAULT_CHAIN_ID,
    origin: str = DEFAULT_ORIGIN,
    tls: bool = False,
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
    # Every directory 0700 whatever the umask: the keys and the client token are secrets, and
    # whoever can write into the configs or the trust policy decides what the devnet trusts.
    try:
        for sub in (directory, directory / KEYS_DIR, directory / NODES_DIR, directory / DATA_DIR):
            make_private_dir(sub)
    except FileWriteError as exc:
        raise ConfigError(f"cannot create the devnet directories: {exc.diagnostics()}") from None

    keys = [
        ValidatorKeys.generate(name=f"validator-{i}", origin=origin) for i in range(1, nodes + 1)
    ]
    scheme = "https" if tls else "http"
    urls = {k.name: f"{scheme}://127.0.0.1:{base_port + i}" for i, k in enumerate(keys)}
    certs: dict[str, TlsSettings] = {}
    if tls:
        from ledger.devcerts import make_ca, make_node_certificate

        tls_dir = directory / TLS_DIR
        try:
            make_private_dir(tls_dir)
        except FileWriteError as exc:
            raise ConfigError(f"cannot create {tls_dir}: {exc.diagnostics()}") from None
        ca_cert, ca_key = make_ca(tls_dir)
        for k in keys:
            cert, key = make_node_certificate(tls_dir, k.name, ["127.0.0.1", "localhost"],
                                              ca_cert=ca_cert, ca_key=ca_key)
            certs[k.name] = TlsSettings(cert_file=cert, key_file=key, ca_file=ca_cert)
    draft = GenesisDraft(
        chain_id=chain_id,
        origin=origin,
        validators=tuple(ValidatorInfo.from_keys(k, url=urls[k.name]) for k in keys),
    )
    genesis = draft.finalize(genesis_time=genesis_time_ms)

    token = secrets.token_urlsafe(32)
    write_text_atomic(directory / TOKEN_FILE, token + "\n", mode=0o600)
    client = ClientToken(name="devnet", token_sha256=hash_token(token))
    admin_token = secrets.token_urlsafe(32)
    write_text_atomic(directory / ADMIN_TOKEN_FILE, admin_token + "\n", mode=0o600)
    operator = ClientToken(name="devnet-operator", token_sha256=hash_token(admin_token),
                           admin=True)
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
            clients=(client, operator),
            timeouts=LOCAL_TIMEOUTS,  # one machine: a lost round costs under a second
            tls=certs.get(k.name),
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
        tls=tls,
    )


def load_devnet(directory: Path) -> Devnet:
    """Read back a devnet written by :func:`init_devnet`, checking every node config.

    Raises:
        ConfigError: no genesis in ``directory``, or a node config that does not load.
    """
    from ledger.config import load_node_config
    from ledger.genesis import load_genesis

    directory = directory.absolute()
    genesis = load_genesis(directory / GENESIS_FILE)
    configs: list[tuple[str, Path]] = []
    urls: list[tuple[str, str]] = []
    tls = False
    for v in genesis.validators:
        path = directory / NODES_DIR / f"{v.name}.toml"
        config = load_node_config(path)
        configs.append((v.name, path))
        urls.append((v.name, config.public_url))
        tls = tls or config.tls is not None
    return Devnet(
        directory=directory,
        genesis_hash=genesis.genesis_hash(),
        configs=tuple(configs),
        urls=tuple(urls),
        tls=tls,
    )


class DevnetRunningError(ConfigError):
    """A devnet already runs from this directory, or a port it needs is taken."""

    code = "devnet_running"


def _port_of(url: str) -> int | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).port
    except ValueError:
        return None


def devnet_ports(net: Devnet) -> list[int]:
    """The ports the nodes of ``net`` listen on (from their URLs)."""
    return [port for _, url in net.urls if (port := _port_of(url)) is not None]


def check_ports_free(ports: Iterable[int]) -> None:
    """Check that every port is free on 127.0.0.1 right now (before starting any node).

    The probe binds as the node does (``SO_REUSEADDR``, so a port in TIME_WAIT after a devnet
    that just stopped counts as free, as it does for the node).

    Raises:
        DevnetRunningError: a port is in use, naming it and the likely cause.
    """
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                raise DevnetRunningError(
                    f"port {port} is in use: is a devnet already running? `ledger devnet down`"
                ) from None


def _is_devnet_process(pid: int) -> bool:
    """Whether ``pid`` is alive and (where /proc tells) a ``devnet up`` supervisor."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process: not ours to report or to stop
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        words = cmdline.read_bytes().split(b"\0")
    except OSError:
        return not Path("/proc/self").exists()  # no /proc here: trust the live pid
    return b"devnet" in words and b"up" in words


def running_supervisor(directory: Path) -> int | None:
    """The pid of the ``devnet up`` supervisor running from ``directory``, if one is.

    A pid file left by a supervisor that was killed (or a pid reused by another process) is
    ignored.
    """
    try:
        text = (directory / PID_FILE).read_text(encoding="ascii").strip()
        pid = int(text)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return pid if pid > 0 and _is_devnet_process(pid) else None


def claim_pid_file(directory: Path) -> None:
    """Record this process as the devnet's supervisor in ``directory/devnet.pid``.

    Raises:
        DevnetRunningError: another live supervisor holds it.
        ConfigError: the file cannot be written.
    """
    from ledger.fileio import FileExistsRefused, write_atomic

    path = directory / PID_FILE
    for _ in range(2):
        try:
            write_atomic(path, f"{os.getpid()}\n", replace=False)
            return
        except FileExistsRefused:
            other = running_supervisor(directory)
            if other is not None and other != os.getpid():
                raise DevnetRunningError(
                    f"a devnet is already running from {directory} (pid {other}): "
                    "`ledger devnet down`"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # stale: its supervisor is gone
        except FileWriteError as exc:
            raise ConfigError(exc.diagnostics()) from None
    raise DevnetRunningError(f"{path} keeps reappearing: is another devnet starting?")


def release_pid_file(directory: Path) -> None:
    """Remove ``directory/devnet.pid`` if it names this process."""
    path = directory / PID_FILE
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text(encoding="ascii").strip()) == os.getpid():
            path.unlink()


def nodes_ready(net: Devnet, *, timeout: float = 1.0) -> bool:
    """Whether every node answers ``/readyz`` with 200 right now."""
    from ledger.client import LedgerClient, tls_context

    context = tls_context(net.cacert)
    for _, url in net.urls:
        try:
            with LedgerClient(url, timeout=timeout, ssl_context=context) as client:
                if not client.ready():
                    return False
        except Exception:  # any answer but "ready" means not ready yet
            return False
    return True


def ready_line(net: Devnet, *, relative_to: Path | None = None) -> str:
    """The one line that says the devnet is up: node URLs, token file, trust policy."""

    def shown(path: Path) -> str:
        if relative_to is not None:
            with contextlib.suppress(ValueError):
                return str(path.relative_to(relative_to.absolute()))
        return str(path)

    urls = " ".join(url for _, url in net.urls)
    ca = f"; CA certificate {shown(net.cacert)}" if net.cacert is not None else ""
    return (
        f"devnet ready: {urls}; token file {shown(net.token_file)}; "
        f"trust policy {shown(net.policy_file)}{ca}"
    )


def stop_supervisor(directory: Path, *, timeout: float) -> int | None:
    """Stop the devnet running from ``directory``: SIGTERM to its supervisor, which stops its
    nodes; SIGKILL after ``timeout`` seconds (the nodes then get SIGTERM from the kernel, see
    :func:`_die_with_parent`). Returns the supervisor's pid, or None if none was running."""
    pid = running_supervisor(directory)
    if pid is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _is_devnet_process(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    with contextlib.suppress(OSError):
        if running_supervisor(directory) is None:
            (directory / PID_FILE).unlink()
    return pid


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


def exit_with_parent() -> bool:
    """Ask the kernel to send this process SIGTERM when its parent dies (Linux; elsewhere a
    no-op). Used by a foreground ``devnet up``: when ``make devnet`` or the shell running it is
    killed, even by SIGKILL, the supervisor still stops its nodes.

    Returns False if the parent is already gone (the caller should stop at once).
    """
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        _die_with_parent()
    return parent != 1 and os.getppid() == parent


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

    def say(self, line: str) -> None:
        """Emit one of the supervisor's own lines (name ``devnet``), between the nodes' lines."""
        self._emit("devnet", line)

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
