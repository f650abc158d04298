"""``ledger eod ...``: the EOD workflow client's commands, a thin click layer over
:class:`ledger.eod.office.Office` and :mod:`ledger.eod.trail`.

Global options select the office's data dir and the ledger: ``--node URL --token T`` (a
validator node's public API) or ``--ground DIR`` (a local proving ground, ``ledger log init``,
for offline demos). Exit status as for every ``ledger`` command: 0 success; 1 a trail or receipt
that does not verify; 2 a refused step, bad input or any other error, with one line on stderr.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, ParamSpec, TypeVar

import click

from ledger.eod.anchor import Anchorer, ClientAnchorer
from ledger.eod.model import ROLE_TERMS, EventType, Role
from ledger.eod.office import Office
from ledger.eod.pki import SigningIdentity, fingerprint
from ledger.eod.rules import WorkflowError
from ledger.eod.store import OfficeStore
from ledger.eod.trail import (
    MAX_BUNDLE_SIZE,
    render_timeline,
    verify_official,
    verify_trail,
)
from ledger.errors import ConfigError, LedgerError, MalformedError, VerificationError
from ledger.policy import Policy, parse_policy

__all__ = ["eod_group"]

_EXIT_INVALID: Final = 1
_EXIT_ERROR: Final = 2
_CHUNK: Final = 1 << 20

P = ParamSpec("P")
R = TypeVar("R")

_STEPS: Final = {
    "substantive": EventType.SUBSTANTIVE_CHECK,
    "formal": EventType.FORMAL_CHECK,
    "coding": EventType.ACCOUNT_CODING,
    "countersign": EventType.COUNTERSIGNED,
    "approve": EventType.APPROVED_FOR_PAYMENT,
}


def _errors(func: Callable[P, R]) -> Callable[P, R]:
    """Map our errors to exit statuses and one line on stderr, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except WorkflowError as exc:
            click.echo(f"refused: {exc.diagnostics()}", err=True)
            sys.exit(_EXIT_ERROR)
        except VerificationError as exc:
            click.echo(f"invalid: {exc.diagnostics()}", err=True)
            sys.exit(_EXIT_INVALID)
        except LedgerError as exc:
            click.echo(f"error: {exc.diagnostics()}", err=True)
            sys.exit(_EXIT_ERROR)

    return wrapper


@dataclass
class _Settings:
    data_dir: Path
    node: str | None
    token: str | None
    ground: Path | None
    at: int | None
    cacert: str | None = None

    def clock(self) -> int:
        return self.at if self.at is not None else int(time.time())


def _parse_time(text: str, *, what: str) -> int:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedError(f"{what} {text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _settings() -> _Settings:
    settings = click.get_current_context().find_object(_Settings)
    assert settings is not None
    return settings


@contextmanager
def _anchorer(settings: _Settings) -> Iterator[Anchorer | None]:
    if settings.node is not None and settings.ground is not None:
        raise ConfigError("give --node or --ground, not both")
    if settings.ground is not None:
        from ledger.eod.ground import open_ground

        with open_ground(settings.ground, clock=settings.clock) as anchorer:
            yield anchorer
    elif settings.node is not None:
        from ledger.client import LedgerClient, tls_context

        with LedgerClient(settings.node, token=settings.token,
                          ssl_context=tls_context(settings.cacert)) as client:
            yield ClientAnchorer(client)
    else:
        yield None


@contextmanager
def _office() -> Iterator[Office]:
    settings = _settings()
    with ExitStack() as stack:
        store = OfficeStore.open(settings.data_dir)
        stack.callback(store.close)
        anchorer = stack.enter_context(_anchorer(settings))
        yield Office(store, anchorer, clock=settings.clock)


def _hash_file(path: str) -> bytes:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                h.update(chunk)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return h.digest()


def _read(path: str, *, limit: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise MalformedError(f"{path} is larger than {limit} bytes")
    return data


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    try:
        path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


def _pinned_policy(path: str | None) -> Policy | None:
    return None if path is None else parse_policy(_read(path, limit=1 << 20))


def _done(office: Office, what: str, hash_: bytes) -> None:
    click.echo(f"{what}; event {hash_.hex()[:16]} anchored")


_as = click.option(
    "--as", "actor", required=True, metavar="POSITION", help="The acting position (stanowisko)."
)
_ref = click.argument("ref", metavar="CASE")

# ---------------------------------------------------------------------------- the group


@click.group("eod")
@click.option(
    "--data-dir",
    envvar="LEDGER_EOD_DATA",
    default="eod-data",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The office's own store (events, receipts, keys); env LEDGER_EOD_DATA.",
)
@click.option("--node", envvar="LEDGER_NODE", metavar="URL", help="A validator node's API.")
@click.option("--token", envvar="LEDGER_TOKEN", help="Bearer token for anchoring at --node.")
@click.option("--cacert", envvar="LEDGER_CACERT", metavar="FILE",
              help="CA bundle (PEM) to verify an https --node's certificate against.")
@click.option(
    "--ground",
    type=click.Path(file_okay=False, path_type=Path),
    help="A local proving ground (ledger log init) instead of --node, for offline demos.",
)
@click.option(
    "--at",
    "at_text",
    metavar="TIME",
    help="Record this ISO 8601 time instead of the clock (demos and tests).",
)
@click.pass_context
def eod_group(
    ctx: click.Context,
    data_dir: Path,
    node: str | None,
    token: str | None,
    cacert: str | None,
    ground: Path | None,
    at_text: str | None,
) -> None:
    """Electronic document workflow (EOD/EZD) on the ledger: register, assign (dekretacja),
    open cases, accept, sign, dispatch, archive; export and verify audit trails.

    Documents stay in the office: only SHA-256 digests of documents and of signed event
    records reach the ledger.
    """
    try:
        at = _parse_time(at_text, what="--at") if at_text is not None else None
    except MalformedError as exc:
        raise click.BadParameter(exc.diagnostics()) from None
    ctx.obj = _Settings(data_dir=data_dir, node=node, token=token, ground=ground, at=at,
                        cacert=cacert)


@eod_group.command("init")
@click.option("--office", "office_id", required=True, help="Office id, e.g. cuw-gdansk.")
@click.option("--name", required=True, help="The office's name (nazwa urzędu/jednostki).")
@click.option("--policy", "policy_path", metavar="FILE", help="The ledger's trust policy to pin.")
@_errors
def init_command(office_id: str, name: str, policy_path: str | None) -> None:
    """Set up the office's data dir and its CA key (lokalne centrum certyfikacji).

    The trust policy is pinned from --policy, else taken from --ground or --node.
    """
    settings = _settings()
    if policy_path is not None:
        policy_text = _read(policy_path, limit=1 << 20).decode("utf-8", "replace")
    else:
        with _anchorer(settings) as anchorer:
            if anchorer is None:
                raise ConfigError("give --policy FILE, --ground DIR or --node URL")
            policy_text = anchorer.policy()
    parse_policy(policy_text)
    ca = SigningIdentity.generate("ca")
    OfficeStore.create(
        settings.data_dir, office=office_id, name=name, ca=ca, policy_text=policy_text
    ).close()
    click.echo(f"office {office_id} set up in {settings.data_dir}")
    click.echo(f"office CA key: {fingerprint(ca.key.public_key)} (publish it for auditors)")


# ----------------------------------------------------------------------------- keys


@eod_group.group("keys")
def keys_group() -> None:
    """Positions' signing keys, certified by the office CA (lokalne centrum certyfikacji)."""


@keys_group.command("issue")
@click.argument("position")
@click.option("--unit", required=True, help="Unit symbol (symbol komórki), e.g. FK.")
@click.option("--title", required=True, help="Position title (stanowisko), never a name.")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    type=click.Choice([r.value for r in Role]),
    help="What the position may record (repeatable): "
    + "; ".join(f"{r.value} = {ROLE_TERMS[r][1]}" for r in Role),
)
@_errors
def keys_issue(position: str, unit: str, title: str, roles: tuple[str, ...]) -> None:
    """Issue a signing key and certificate for POSITION (wydanie certyfikatu stanowiska)."""
    with _office() as office:
        cert = office.issue_position(
            position=position, unit=unit, title=title, roles=[Role(r) for r in roles]
        )
    click.echo(f"issued {cert.position} ({cert.title}, unit {cert.unit}): {', '.join(roles)}")
    click.echo(f"key: {fingerprint(cert.public_key)}")


@keys_group.command("list")
@_errors
def keys_list() -> None:
    """List the office's positions and their roles."""
    with _office() as office:
        for cert in office.store.certificates():
            roles = ", ".join(r.value for r in cert.roles)
            click.echo(f"{cert.position}  {cert.unit}  {cert.title}  [{roles}]")


# ---------------------------------------------------------------------------- steps


@eod_group.command("register")
@click.argument("file")
@_as
@click.option("--channel", required=True, help="epuap, e-doreczenia, post, in-person, ksef ...")
@click.option(
    "--direction",
    type=click.Choice(["incoming", "outgoing", "internal"]),
    default="incoming",
    show_default=True,
)
@click.option("--kind", type=click.Choice(["letter", "invoice"]), default="letter")
@click.option("--attachments", type=click.IntRange(0, 10_000), default=0)
@click.option("--sender-ref", help="The letter's own reference (znak pisma nadawcy).")
@click.option("--case", "case", metavar="CASE", help="Register straight into an open case.")
@click.option("--receipt-out", type=click.Path(dir_okay=False, path_type=Path))
@_errors
def register_command(
    file: str,
    actor: str,
    channel: str,
    direction: str,
    kind: str,
    attachments: int,
    sender_ref: str | None,
    case: str | None,
    receipt_out: Path | None,
) -> None:
    """Register an item FILE (rejestracja przesyłki, RPW) and write its official receipt."""
    with _office() as office:
        register, _, receipt = office.register(
            _hash_file(file),
            actor=actor,
            direction=direction,
            channel=channel,
            kind=kind,
            attachments=attachments,
            sender_ref=sender_ref,
            case=case,
        )
    target = receipt_out or Path(register.replace("/", "-") + ".receipt.json")
    _write_json(target, receipt)
    click.echo(f"registered {register}; official receipt {target}")


@eod_group.command("assign")
@_ref
@_as
@click.option("--to", required=True, metavar="POSITION", help="Who becomes responsible.")
@click.option("--method", help="How to handle it (sposób załatwienia).")
@click.option("--deadline", metavar="YYYY-MM-DD", help="By when (termin).")
@_errors
def assign_command(ref: str, actor: str, to: str, method: str | None, deadline: str | None) -> None:
    """Assign an item or case (dekretacja). Only the original assigner may change the method
    or the deadline."""
    with _office() as office:
        recorded = office.assign(ref, actor=actor, to=to, method=method, deadline=deadline)
        _done(office, f"assigned {ref} to {to}", recorded.event.hash)


@eod_group.command("open-case")
@click.argument("item", required=False, metavar="[ITEM]")
@_as
@click.option("--unit", required=True, help="Unit symbol (symbol komórki organizacyjnej).")
@click.option("--class", "jrwa_class", required=True, help="JRWA class (symbol z wykazu akt).")
@click.option("--category", required=True, help="Archival category: A, Bc, B<n>, BE<n>.")
@click.option("--cost", is_flag=True, help="A cost document (invoice) case.")
@click.option("--sign", help="Use this existing case sign instead of the next number.")
@_errors
def open_case_command(
    item: str | None,
    actor: str,
    unit: str,
    jrwa_class: str,
    category: str,
    cost: bool,
    sign: str | None,
) -> None:
    """Open a case (założenie sprawy) for ITEM (a register number) or on its own, and give it
    its case sign (znak sprawy) UNIT.CLASS.N.YEAR."""
    with _office() as office:
        case, recorded = office.open_case(
            item,
            actor=actor,
            unit=unit,
            jrwa_class=jrwa_class,
            category=category,
            cost=cost,
            sign=sign,
        )
        _done(office, f"opened case {case}", recorded.event.hash)


@eod_group.command("attach")
@_ref
@click.argument("file")
@_as
@click.option("--kind", default="attachment", show_default=True, help="contract, order, ...")
@_errors
def attach_command(ref: str, file: str, actor: str, kind: str) -> None:
    """Attach a document FILE to a case by its digest (dołączenie dokumentu)."""
    with _office() as office:
        recorded = office.attach(ref, _hash_file(file), actor=actor, kind=kind)
        _done(office, f"attached {kind} to {ref}", recorded.event.hash)


@eod_group.command("submit")
@_ref
@click.argument("file")
@_as
@click.option("--levels", type=click.IntRange(1, 9), default=1, show_default=True)
@_errors
def submit_command(ref: str, file: str, actor: str, levels: int) -> None:
    """Submit a draft FILE for acceptance (projekt do akceptacji) at LEVELS levels."""
    with _office() as office:
        recorded = office.submit(ref, _hash_file(file), actor=actor, levels=levels)
        _done(office, f"submitted a draft in {ref}", recorded.event.hash)


@eod_group.command("accept")
@_ref
@_as
@click.option("--level", type=click.IntRange(1, 9), help="Acceptance level (default: next).")
@click.option(
    "--step",
    type=click.Choice(list(_STEPS)),
    help="A cost-document step instead: substantive = kontrola merytoryczna; formal = kontrola "
    "formalna i rachunkowa; coding = dekretacja księgowa; countersign = kontrasygnata; "
    "approve = zatwierdzenie do wypłaty.",
)
@click.option("--accounts", help="Account coding for --step coding (dekretacja księgowa).")
@click.option("--note", help="A short note for a cost-document step.")
@_errors
def accept_command(
    ref: str,
    actor: str,
    level: int | None,
    step: str | None,
    accounts: str | None,
    note: str | None,
) -> None:
    """Accept a draft (akceptacja) at a level, or record a cost-document step (--step)."""
    with _office() as office:
        if step is not None:
            if level is not None:
                raise MalformedError("give --level or --step, not both")
            recorded = office.cost_step(
                ref, _STEPS[step], actor=actor, accounts=accounts, note=note
            )
        else:
            recorded = office.accept(ref, actor=actor, level=level)
        _done(office, f"{recorded.event.record.type.value} in {ref}", recorded.event.hash)


@eod_group.command("reject")
@_ref
@_as
@click.option("--reason", required=True)
@_errors
def reject_command(ref: str, actor: str, reason: str) -> None:
    """Reject the pending draft (odrzucenie, zwrot do poprawy)."""
    with _office() as office:
        recorded = office.reject(ref, actor=actor, reason=reason)
        _done(office, f"rejected the draft in {ref}", recorded.event.hash)


@eod_group.command("sign")
@_ref
@click.argument("file")
@_as
@_errors
def sign_command(ref: str, file: str, actor: str) -> None:
    """Record the signature (podpis) of the accepted draft; FILE is the signed document."""
    with _office() as office:
        recorded = office.sign(ref, _hash_file(file), actor=actor)
        _done(office, f"signed in {ref}", recorded.event.hash)


@eod_group.command("dispatch")
@_ref
@_as
@click.option("--channel", required=True, help="e-doreczenia, epuap, post ...")
@click.option("--document", "file", help="The signed document (default: the last signed).")
@_errors
def dispatch_command(ref: str, actor: str, channel: str, file: str | None) -> None:
    """Dispatch the signed document (wysyłka) and give it an outgoing register number."""
    with _office() as office:
        register, recorded = office.dispatch(
            ref, actor=actor, channel=channel, document=_hash_file(file) if file else None
        )
        _done(office, f"dispatched {ref} as {register}", recorded.event.hash)


@eod_group.command("record-receipt")
@_ref
@click.argument("file")
@_as
@click.option("--kind", required=True, type=click.Choice(["UPP", "UPO", "UPD"]))
@_errors
def record_receipt_command(ref: str, file: str, actor: str, kind: str) -> None:
    """Record an official receipt FILE (UPP: poświadczenie przedłożenia; UPO: odbioru; UPD:
    doręczenia) by the hash of its signed XML, byte-exact."""
    with _office() as office:
        recorded = office.record_receipt(ref, _hash_file(file), actor=actor, kind=kind)
        _done(office, f"recorded {kind} in {ref}", recorded.event.hash)


@eod_group.command("deliver")
@_ref
@_as
@click.option("--deemed", is_flag=True, help="Deemed delivered (doręczenie zastępcze).")
@click.option("--notice", metavar="TIME", help="Time of the first notice (awizo), ISO 8601.")
@_errors
def deliver_command(ref: str, actor: str, deemed: bool, notice: str | None) -> None:
    """Record the delivery (doręczenie), or the deemed delivery 14 days after the notice."""
    with _office() as office:
        when = _parse_time(notice, what="--notice") if notice is not None else None
        recorded = office.deliver(ref, actor=actor, deemed=deemed, notice=when)
        _done(office, f"delivered {ref}", recorded.event.hash)


@eod_group.command("close")
@_ref
@_as
@_errors
def close_command(ref: str, actor: str) -> None:
    """Close the case (zakończenie sprawy)."""
    with _office() as office:
        _done(office, f"closed {ref}", office.close(ref, actor=actor).event.hash)


@eod_group.command("archive")
@_ref
@_as
@_errors
def archive_command(ref: str, actor: str) -> None:
    """Transfer the closed case to the office archive (archiwum zakładowe)."""
    with _office() as office:
        _done(office, f"archived {ref}", office.archive(ref, actor=actor).event.hash)


@eod_group.command("destroy")
@_ref
@_as
@click.option("--consent", required=True, help="The state archive director's consent reference.")
@_errors
def destroy_command(ref: str, actor: str, consent: str) -> None:
    """Record the lawful destruction (brakowanie) after the retention period; never category A.
    The trail is kept: the case stays provably 'existed, and was lawfully destroyed'."""
    with _office() as office:
        recorded = office.destroy(ref, actor=actor, consent=consent)
        _done(office, f"destroyed {ref}", recorded.event.hash)


# ----------------------------------------------------------------- status and trails


@eod_group.command("status")
@_ref
@_errors
def status_command(ref: str) -> None:
    """Print the course of a case or item (przebieg sprawy), verified from the local store."""
    with _office() as office:
        bundle = office.trail(ref)
    data = json.dumps(bundle, ensure_ascii=False).encode("utf-8")
    click.echo(render_timeline(verify_trail(data)), nl=False)


@eod_group.command("trail")
@_ref
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@_errors
def trail_command(ref: str, out: Path) -> None:
    """Export the self-contained audit trail of a case (metryka sprawy) for an auditor."""
    with _office() as office:
        bundle = office.trail(ref)
    _write_json(out, bundle)
    click.echo(f"wrote {out}: {len(bundle['events'])} events of {bundle['case']}")


@eod_group.command("verify-trail")
@click.argument("bundle")
@click.option("--document", "file", help="A document that must belong to the case.")
@click.option("--policy", "policy_path", metavar="FILE", help="Pin the ledger's trust policy.")
@click.option("--office-key", metavar="SHA256:...", help="Pin the office CA key (fingerprint).")
@_errors
def verify_trail_command(
    bundle: str, file: str | None, policy_path: str | None, office_key: str | None
) -> None:
    """Verify an audit trail offline (kontrola metryki sprawy) and print its timeline.

    Exit 0 if valid, 1 with the reason if not, 2 if unreadable.
    """
    trail = verify_trail(
        _read(bundle, limit=MAX_BUNDLE_SIZE),
        policy=_pinned_policy(policy_path),
        office_key=office_key,
        document=_hash_file(file) if file is not None else None,
    )
    click.echo(render_timeline(trail), nl=False)


@eod_group.command("verify-receipt")
@click.argument("receipt")
@click.option("--document", "file", help="The document the sender sent.")
@click.option("--policy", "policy_path", metavar="FILE", help="Pin the ledger's trust policy.")
@click.option("--office-key", metavar="SHA256:...", help="Pin the office CA key (fingerprint).")
@_errors
def verify_receipt_command(
    receipt: str, file: str | None, policy_path: str | None, office_key: str | None
) -> None:
    """Verify an official registration receipt offline (poświadczenie rejestracji)."""
    result = verify_official(
        _read(receipt, limit=MAX_BUNDLE_SIZE),
        policy=_pinned_policy(policy_path),
        office_key=office_key,
        document=_hash_file(file) if file is not None else None,
    )
    stamp = datetime.fromtimestamp(result.document_receipt.time_bound, tz=UTC)
    click.echo(f"valid: {result.office} ({result.office_name}) registered {result.register}")
    click.echo(f"  case:       {result.case or '-'}")
    click.echo(f"  document:   {result.document.hex()}")
    click.echo(f"  received:   no later than {stamp:%Y-%m-%d %H:%M:%S} UTC (ledger time bound)")
    click.echo(f"  office key: {fingerprint(result.ca_public_key)}")
