"""``ledger validators``: the operators' side of a validator-set change (docs/reconfiguration.md).

A change travels as a small JSON file between the operators of the institutions::

    ledger validators propose --genesis genesis.json --node URL --rotate v2 \\
        --vkeys-file v2-new.vkeys --effective-height 1200 --out change.json
    ledger validators approve change.json --key v1.key      # each of a quorum, in turn
    ledger validators submit change.json --node URL --admin-token-file admin-token
    ledger validators policy-chain --node URL --genesis genesis.json --out chain.txt

``--node`` may be left out when ``$LEDGER_NODE`` is set. The operator (admin) token is read from
``--admin-token-file``, ``$LEDGER_ADMIN_TOKEN_FILE`` or ``$LEDGER_ADMIN_TOKEN``, never from an
argument, which ``ps`` and the shell history would show.

``propose`` builds the unsigned change against the node's *current* validator set, which it
takes from the node's policy chain after verifying that chain from the local genesis (so a
lying node can at worst make the change fail, never make an approver sign for another set: the
approvals bind the roster hash). The file::

    {"format": "ledger-validator-change/v1", "change": "<base64 canonical bytes>",
     "change_id": "<hex>", "effective_height": E, "approvals": n}

Only ``change`` counts; the other fields are for the humans reading it. The HTTP calls use the
standard library (as :mod:`ledger.client`), bounded by a timeout.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, Final, ParamSpec, TypeVar

import click

from ledger.config import write_text_atomic
from ledger.consensus.reconfig import (
    MAX_CHANGE_BYTES,
    ChangeOp,
    ValidatorInfo,
    ValidatorRoster,
    ValidatorSetChange,
    apply_ops,
    decode_change,
)
from ledger.crypto import read_key_file
from ledger.errors import ConfigError, LedgerError, MalformedError, VerificationError
from ledger.genesis import load_genesis, parse_vkeys
from ledger.policy_chain import (
    MAX_CHAIN_SIZE,
    PolicyChain,
    parse_policy_chain,
    verify_policy_chain,
)

__all__ = ["CHANGE_FILE_FORMAT", "validators_group"]

CHANGE_FILE_FORMAT: Final = "ledger-validator-change/v1"
_TIMEOUT_SECONDS: Final = 30.0
_MAX_CHANGE_FILE: Final = 2 * MAX_CHANGE_BYTES


class _CliError(LedgerError):
    """A failed step of a ``ledger validators`` command (exit status 2)."""

    code = "validators"


def _http(url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None,
          limit: int = MAX_CHAIN_SIZE, cacert: str | None = None) -> tuple[int, bytes]:
    from ledger.client import tls_context

    request = urllib.request.Request(url, data=data, headers=headers or {},
                                     method="POST" if data is not None else "GET")
    context = tls_context(cacert)
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_SECONDS,
                                    context=context) as response:
            return response.status, response.read(limit + 1)[:limit]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(64 * 1024)
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            reason = (f"its TLS certificate is not trusted ({reason.verify_message}); give its "
                      "CA with --cacert or $LEDGER_CACERT")
        elif isinstance(reason, ssl.SSLError):
            reason = f"TLS handshake failed ({reason.reason or reason})"
        elif isinstance(reason, OSError):
            reason = reason.strerror or type(reason).__name__
        text = str(reason)
        raise _CliError(
            f"cannot reach the node at {_base(url)}: {text[:1].lower()}{text[1:]}"
        ) from None
    except TimeoutError:
        raise _CliError(
            f"the node at {_base(url)} did not answer within {_TIMEOUT_SECONDS:g} s"
        ) from None
    except (OSError, ValueError) as exc:
        raise _CliError(f"cannot reach the node at {_base(url)}: {exc}") from None


def _base(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def fetch_policy_chain(node: str, *, genesis_path: str | None,
                       cacert: str | None = None) -> PolicyChain:
    """The node's policy chain, verified from the genesis file (if given).

    Raises:
        _CliError: the node cannot be reached or answers an error.
        MalformedError: the chain does not parse.
        VerificationError: it does not verify, or does not start from this genesis.
    """
    status, body = _http(node.rstrip("/") + "/v1/policy-chain", cacert=cacert)
    if status != 200:
        raise _CliError(f"GET /v1/policy-chain answered {status}: {_error_text(body)}")
    chain = parse_policy_chain(body)
    verify_policy_chain(chain)
    if genesis_path is not None:
        genesis = load_genesis(genesis_path)
        if chain.chain_id != genesis.chain_id or chain.genesis != genesis.roster():
            raise VerificationError("the node's policy chain does not start from this genesis")
    return chain


def _node_height(node: str) -> int:
    """The node's last committed height (``GET /v1/status``).

    Raises:
        _CliError: the node cannot be reached, answers an error or no height.
    """
    status, body = _http(node.rstrip("/") + "/v1/status")
    if status != 200:
        raise _CliError(f"GET /v1/status answered {status}: {_error_text(body)}")
    try:
        height = json.loads(body)["height"]
    except (ValueError, KeyError, TypeError):
        height = None
    if not isinstance(height, int) or isinstance(height, bool) or height < 0:
        raise _CliError(f"{node}/v1/status did not say its height")
    return height


def _current_roster(chain: PolicyChain) -> ValidatorRoster:
    return verify_policy_chain(chain)[-1].roster


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read(_MAX_CHANGE_FILE)
    except OSError as exc:
        raise _CliError(f"cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise _CliError(f"cannot read {what} {path}: it is not UTF-8 text") from None


def read_change_file(path: str) -> ValidatorSetChange:
    """The change in a change file.

    Raises:
        _CliError: unreadable.
        MalformedError: not a change file, or the change bytes do not decode.
    """
    try:
        obj = json.loads(_read_text(path, "change file"))
        if not isinstance(obj, dict) or obj.get("format") != CHANGE_FILE_FORMAT:
            raise MalformedError(f"{path} is not a {CHANGE_FILE_FORMAT} file")
        raw = base64.b64decode(obj["change"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise MalformedError(f"{path} is not a {CHANGE_FILE_FORMAT} file") from None
    return decode_change(raw)


def change_file_text(change: ValidatorSetChange) -> str:
    """The JSON text of a change file."""
    obj: dict[str, Any] = {
        "format": CHANGE_FILE_FORMAT,
        "change": base64.b64encode(change.encode()).decode("ascii"),
        "change_id": change.change_id.hex(),
        "effective_height": change.effective_height,
        "approvals": len(change.approvals),
    }
    return json.dumps(obj, indent=2) + "\n"


def _info_from_vkeys(path: str) -> ValidatorInfo:
    v = parse_vkeys(_read_text(path, "vkeys file"), source=path)
    return ValidatorInfo(name=v.name, consensus_key=v.consensus_key, log_vkey=v.log_vkey,
                         cosigner_vkey=v.cosigner_vkey)


def _member_key(roster: ValidatorRoster, name: str) -> bytes:
    for m in roster.members:
        if m.name == name:
            return m.consensus_key
    raise ConfigError(f"{name!r} is not a validator of the current set")


P = ParamSpec("P")
R = TypeVar("R")


def _exit_on_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Exit 1 (``invalid:``) on a failed verification, 2 (``error:``) on any other error."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except VerificationError as exc:
            click.echo(f"invalid: {exc.diagnostics()}", err=True)
            sys.exit(1)
        except LedgerError as exc:
            click.echo(f"error: {exc.diagnostics()}", err=True)
            sys.exit(2)
    return wrapper


@click.group("validators")
def validators_group() -> None:
    """Validator-set changes: propose, approve, submit; the policy chain."""


@validators_group.command("propose")
@click.option("--genesis", "genesis_path", required=True, metavar="FILE",
              help="The chain's genesis (the node's policy chain is verified from it).")
@click.option("--node", envvar="LEDGER_NODE", show_envvar=True, metavar="URL",
              help="A node of the chain.")
@click.option("--cacert", envvar="LEDGER_CACERT", show_envvar=True, metavar="FILE",
              help="CA bundle (PEM) to verify an https node's certificate against.")
@click.option("--add", "add_vkeys", metavar="VKEYS_FILE", help="Add this validator.")
@click.option("--remove", "remove_name", metavar="NAME", help="Remove this validator.")
@click.option("--rotate", "rotate_name", metavar="NAME",
              help="Give this validator the keys of --vkeys-file.")
@click.option("--vkeys-file", "vkeys_file", metavar="FILE", help="New keys for --rotate.")
@click.option("--effective-height", "effective_height", type=click.IntRange(2),
              help="First height decided by the new set (at least 2 above the block that "
                   "will carry the change).")
@click.option("--effective-in", "effective_in", type=click.IntRange(3, 100_000),
              help="Instead of --effective-height: this many heights after the node's "
                   "current one (enough to collect the approvals and reach a block).")
@click.option("--out", "out_path", required=True, metavar="FILE", help="Change file to write.")
@_exit_on_errors
def propose(genesis_path: str, node: str | None, cacert: str | None, add_vkeys: str | None,
            remove_name: str | None, rotate_name: str | None, vkeys_file: str | None,
            effective_height: int | None, effective_in: int | None, out_path: str) -> None:
    """Write an unsigned change of the node's current validator set."""
    chosen = [x for x in (add_vkeys, remove_name, rotate_name) if x is not None]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --add, --remove, --rotate")
    if (rotate_name is None) != (vkeys_file is None):
        raise click.UsageError("--vkeys-file goes with --rotate (and only with it)")
    if (effective_height is None) == (effective_in is None):
        raise click.UsageError("give exactly one of --effective-height, --effective-in")
    from ledger.client import resolve_node

    url = resolve_node(node)
    chain = fetch_policy_chain(url, genesis_path=genesis_path, cacert=cacert)
    if effective_in is not None:
        effective_height = _node_height(url) + effective_in
    assert effective_height is not None
    roster = _current_roster(chain)
    if add_vkeys is not None:
        op = ChangeOp.add(_info_from_vkeys(add_vkeys))
    elif remove_name is not None:
        op = ChangeOp.remove(_member_key(roster, remove_name))
    else:
        assert rotate_name is not None and vkeys_file is not None
        op = ChangeOp.rotate(_member_key(roster, rotate_name), _info_from_vkeys(vkeys_file))
    change = ValidatorSetChange.create(chain_id=chain.chain_id,
                                       effective_height=effective_height, prev=roster, ops=[op])
    try:
        apply_ops(roster, change.ops)  # fail now rather than after a quorum signed it
    except VerificationError as exc:
        raise ConfigError(exc.diagnostics()) from None
    write_text_atomic(out_path, change_file_text(change))
    click.echo(f"wrote {out_path}: change {change.change_id.hex()[:16]} of a set of "
               f"{len(roster.members)}, effective at height {effective_height}; "
               f"needs {roster.validator_set.quorum} approvals")


@validators_group.command("approve")
@click.argument("change_file")
@click.option("--key", "key_file", required=True, metavar="KEYFILE",
              help="This validator's key file (its consensus key signs the approval).")
@_exit_on_errors
def approve(change_file: str, key_file: str) -> None:
    """Add this validator's approval to CHANGE_FILE (in place)."""
    change = read_change_file(change_file)
    keys = read_key_file(key_file)
    approved = change.approve(keys.consensus_key)
    write_text_atomic(change_file, change_file_text(approved))
    click.echo(f"{keys.name} approved change {change.change_id.hex()[:16]}: "
               f"{len(approved.approvals)} approvals")


@validators_group.command("submit")
@click.argument("change_file")
@click.option("--node", envvar="LEDGER_NODE", show_envvar=True, metavar="URL",
              help="A node of the chain.")
@click.option("--cacert", envvar="LEDGER_CACERT", show_envvar=True, metavar="FILE",
              help="CA bundle (PEM) to verify an https node's certificate against.")
@click.option("--admin-token-file", envvar="LEDGER_ADMIN_TOKEN_FILE", show_envvar=True,
              metavar="FILE",
              help="File holding the operator (admin) token; without it the token is taken from "
                   "$LEDGER_ADMIN_TOKEN.")
@_exit_on_errors
def submit(change_file: str, node: str | None, cacert: str | None,
           admin_token_file: str | None) -> None:
    """Submit an approved change to a node (it gossips it to the others).

    Sends POST /v1/admin/validator-changes with the operator token of a [[clients]] entry that
    has admin = true.
    """
    from ledger.client import resolve_node, resolve_token

    url = resolve_node(node)
    token = resolve_token(admin_token_file, token_env="LEDGER_ADMIN_TOKEN",
                          file_env="LEDGER_ADMIN_TOKEN_FILE", option="--admin-token-file")
    change = read_change_file(change_file)
    body = json.dumps({"change": base64.b64encode(change.encode()).decode("ascii")})
    status, answer = _http(url.rstrip("/") + "/v1/admin/validator-changes",
                           data=body.encode(), headers={
                               "Authorization": f"Bearer {token}",
                               "Content-Type": "application/json"}, limit=64 * 1024,
                           cacert=cacert)
    if status == 422:
        raise VerificationError(f"the node refused the change: {_error_text(answer)}")
    if status != 202:
        raise _CliError(f"the node answered {status}: {_error_text(answer)}")
    click.echo(f"change {change.change_id.hex()[:16]} pending, effective at height "
               f"{change.effective_height}")


def _error_text(answer: bytes) -> str:
    """The message of an error body ``{"error": {"code", "message"}}``, or its first bytes."""
    try:
        error = json.loads(answer)["error"]
        return f"{error['code']}: {error['message']}"[:300]
    except (ValueError, KeyError, TypeError):
        return answer[:300].decode(errors="replace").replace("\n", " ")


@validators_group.command("policy-chain")
@click.option("--node", envvar="LEDGER_NODE", show_envvar=True, metavar="URL",
              help="A node of the chain.")
@click.option("--cacert", envvar="LEDGER_CACERT", show_envvar=True, metavar="FILE",
              help="CA bundle (PEM) to verify an https node's certificate against.")
@click.option("--genesis", "genesis_path", default=None, metavar="FILE",
              help="Check that the chain starts from this genesis.")
@click.option("--out", "out_path", required=True, metavar="FILE", help="File to write.")
@_exit_on_errors
def policy_chain(node: str | None, cacert: str | None, genesis_path: str | None,
                 out_path: str) -> None:
    """Fetch and verify the node's policy chain (for ledger verify --policy-chain)."""
    from ledger.client import resolve_node

    chain = fetch_policy_chain(resolve_node(node), genesis_path=genesis_path, cacert=cacert)
    write_text_atomic(out_path, chain.format())
    click.echo(f"wrote {out_path}: {len(chain.links)} validator-set changes")
