"""``ledger eod ...``: the EOD workflow client's commands, a thin click layer over
:class:`ledger.eod.office.Office` and :mod:`ledger.eod.trail`.

Global options select the office's data dir and the ledger: ``--node URL`` with
``--token-file FILE`` (a validator node's public API; env ``LEDGER_NODE``, ``LEDGER_TOKEN``) or
``--ground DIR`` (an offline demo ledger, ``ledger log init``, which the top-level CLI opens
and hands in through :func:`use_ground`). Exit status as for every ``ledger`` command: 0
success; 1 a trail or receipt that does not verify; 2 a refused step, bad input or any other
error, with one line on stderr.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, ParamSpec, TypeVar

import click

from ledger.eod.anchor import Anchorer, ClientAnchorer
from ledger.eod.calendar import DEFAULT_ZONE, OfficeCalendar
from ledger.eod.jrwa import JrwaDictionary, default_jrwa_text
from ledger.eod.model import ROLE_TERMS, EventType, Role
from ledger.eod.office import Office
from ledger.eod.paths import PathBook, default_paths_text
from ledger.eod.pki import SigningIdentity, fingerprint
from ledger.eod.records import OfficeRecord
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

__all__ = ["GroundOpener", "eod_group", "use_ground"]

_EXIT_INVALID: Final = 1
_EXIT_ERROR: Final = 2
_CHUNK: Final = 1 << 20
_MAX_TEXT_FILE: Final = 1 << 20

P = ParamSpec("P")
R = TypeVar("R")

#: Opens an offline demo ledger directory as an :class:`Anchorer` whose cosignatures use the
#: given clock. Provided by the top-level CLI (which may import the storage layer; this
#: package does not).
GroundOpener = Callable[[Path, Callable[[], int]], AbstractContextManager[Anchorer]]
_GROUND: list[GroundOpener] = []

_STEPS: Final = {
    "substantive": EventType.SUBSTANTIVE_CHECK,
    "formal": EventType.FORMAL_CHECK,
    "coding": EventType.ACCOUNT_CODING,
    "countersign": EventType.COUNTERSIGNED,
    "approve": EventType.APPROVED_FOR_PAYMENT,
}
_UNPINNED_POLICY: Final = (
    "WARNING: no --policy given: checked only against the trust policy inside the file, which "
    "anyone could have written; pin the ledger's published policy with --policy FILE"
)


def use_ground(opener: GroundOpener) -> None:
    """Give ``ledger eod --ground DIR`` its demo ledger (called once by ``ledger.cli``)."""
    _GROUND[:] = [opener]


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
    token_file: Path | None
    ground: Path | None
    at_text: str | None
    cacert: str | None = None

    def read_token(self) -> str | None:
        if self.token_file is None:
            return self.token
        try:
            text = self.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {self.token_file}: {exc.strerror}") from None
        if not text:
            raise ConfigError(f"{self.token_file} holds no token")
        return text


def _settings() -> _Settings:
    settings = click.get_current_context().find_object(_Settings)
    assert settings is not None
    return settings


def _clocks(settings: _Settings, calendar: OfficeCalendar) -> tuple[Callable[[], int], int | None]:
    """The office clock and the declared time: ``--at`` sets the clock of an offline demo
    ground; against a node it is a declared time, recorded next to the proven one."""
    if settings.at_text is None:
        return (lambda: int(time.time())), None
    at = calendar.parse_time(settings.at_text, what="--at")
    if settings.ground is not None:
        return (lambda: at), None
    return (lambda: int(time.time())), at


@contextmanager
def _anchorer(settings: _Settings, clock: Callable[[], int]) -> Iterator[Anchorer | None]:
    if settings.node is not None and settings.ground is not None:
        raise ConfigError("give --node or --ground, not both")
    if settings.ground is not None:
        if not _GROUND:
            raise ConfigError("--ground needs the ledger command line (ledger eod --ground DIR)")
        with _GROUND[0](settings.ground, clock) as anchorer:
            yield anchorer
    elif settings.node is not None:
        from ledger.client import LedgerClient, tls_context

        with LedgerClient(settings.node, token=settings.read_token(),
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
        probe = Office(store, None, clock=lambda: 0)
        clock, declared = _clocks(settings, probe.calendar)
        anchorer = stack.enter_context(_anchorer(settings, clock))
        yield Office(store, anchorer, clock=clock, declared=declared)


def _hash_file(path: str) -> bytes:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                h.update(chunk)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return h.digest()


def _read(path: str | Path, *, limit: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise MalformedError(f"{path} is larger than {limit} bytes")
    return data


def _read_text(path: str | Path) -> str:
    try:
        return _read(path, limit=_MAX_TEXT_FILE).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedError(f"{path} is not UTF-8 text") from None


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    """Write a new file; an existing one is never replaced silently."""
    text = json.dumps(obj, ensure_ascii=False, indent=1) + "\n"
    try:
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise ConfigError(f"{path} exists; choose another file or remove it first") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


def _free_name(stem: str, suffix: str) -> Path:
    """``stem + suffix``, or ``stem.2 + suffix`` ... if taken: an existing file is never
    replaced, and the step is already recorded when the name is chosen."""
    candidate, n = Path(stem + suffix), 1
    while candidate.exists():
        n += 1
        candidate = Path(f"{stem}.{n}{suffix}")
    return candidate


def _pinned_policy(path: str | None) -> Policy | None:
    return None if path is None else parse_policy(_read(path, limit=1 << 20))


def _done(what: str, hash_: bytes) -> None:
    click.echo(f"{what}; event {hash_.hex()[:16]} anchored")


_as = click.option(
    "--as",
    "actor",
    required=True,
    metavar="POSITION",
    help="The acting position (stanowisko), never a person.",
)
_ref = click.argument("ref", metavar="CASE")
_quiet = click.option(
    "--quiet", "-q", is_flag=True, help="Print only the new number (for scripts)."
)

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
@click.option(
    "--node", envvar="LEDGER_NODE", metavar="URL", help="A validator node's API; env LEDGER_NODE."
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the bearer token for anchoring at --node (or env LEDGER_TOKEN).",
)
@click.option("--token", envvar="LEDGER_TOKEN", hidden=True)
@click.option("--cacert", envvar="LEDGER_CACERT", metavar="FILE",
              help="CA bundle (PEM) to verify an https --node's certificate against.")
@click.option(
    "--ground",
    type=click.Path(file_okay=False, path_type=Path),
    help="An offline demo ledger (ledger log init DIR) instead of --node.",
)
@click.option(
    "--at",
    "at_text",
    metavar="TIME",
    help="With --ground: the demo's clock (ISO 8601; without an offset, office local time). "
    "With --node: a declared time of the step, kept next to the proven one and flagged in "
    "the trail when outside it.",
)
@click.pass_context
def eod_group(
    ctx: click.Context,
    data_dir: Path,
    node: str | None,
    token_file: Path | None,
    token: str | None,
    cacert: str | None,
    ground: Path | None,
    at_text: str | None,
) -> None:
    """Electronic document workflow (EOD/EZD) on the ledger: rejestracja przesyłki, dekretacja,
    założenie sprawy, akceptacja, podpis, wysyłka, archiwum, brakowanie; export and verify audit
    trails (metryka sprawy).

    Documents stay in the office: only SHA-256 digests of documents and of signed event
    records reach the ledger. Times are the office's (its time zone, set at init); the
    ledger proves each step's time from both sides.
    """
    ctx.obj = _Settings(
        data_dir=data_dir,
        node=node,
        token=token,
        token_file=token_file,
        ground=ground,
        at_text=at_text,
        cacert=cacert,
    )


@eod_group.command("init")
@click.option("--office", "office_id", required=True, help="Office id, e.g. cuw-gdansk.")
@click.option("--name", required=True, help="The office's name (nazwa urzędu, jednostki).")
@click.option(
    "--zone",
    default=DEFAULT_ZONE,
    show_default=True,
    help="The office's time zone (IANA name): register years, deadlines, retention.",
)
@click.option("--policy", "policy_path", metavar="FILE", help="The ledger's trust policy to pin.")
@click.option(
    "--paths", "paths_path", metavar="FILE", help="Acceptance paths (TOML); default: the seed's."
)
@click.option(
    "--jrwa", "jrwa_path", metavar="FILE", help="The office's JRWA (TOML); default: the seed list."
)
@_errors
def init_command(
    office_id: str,
    name: str,
    zone: str,
    policy_path: str | None,
    paths_path: str | None,
    jrwa_path: str | None,
) -> None:
    """Set up the office's data dir, its CA key (lokalne centrum certyfikacji) and its signed
    office record (id, name, time zone).

    The trust policy is pinned from --policy, else taken from --ground or --node.
    """
    settings = _settings()
    calendar = OfficeCalendar(zone)
    paths_text = _read_text(paths_path) if paths_path else default_paths_text()
    PathBook.from_toml(paths_text)
    jrwa_text = _read_text(jrwa_path) if jrwa_path else default_jrwa_text()
    JrwaDictionary.from_toml(jrwa_text)
    if policy_path is not None:
        policy_text = _read_text(policy_path)
    else:
        clock, _ = _clocks(settings, calendar)
        with _anchorer(settings, clock) as anchorer:
            if anchorer is None:
                raise ConfigError("give --policy FILE, --ground DIR or --node URL")
            policy_text = anchorer.policy()
    parse_policy(policy_text)
    ca = SigningIdentity.generate("ca")
    record = OfficeRecord.sign(office=office_id, name=name, zone=zone, ca=ca.key)
    OfficeStore.create(
        settings.data_dir,
        record=record,
        ca=ca,
        policy_text=policy_text,
        paths_text=paths_text,
        jrwa_text=jrwa_text,
    ).close()
    click.echo(f"office {office_id} set up in {settings.data_dir} (time zone {zone})")
    click.echo(f"office CA key: {fingerprint(ca.key.public_key)} (publish it for auditors)")


@eod_group.command("office-key")
@_errors
def office_key_command() -> None:
    """Print the office CA key's fingerprint (publish it; auditors pin it with --office-key)."""
    with _office() as office:
        click.echo(fingerprint(office.record.ca_public_key))


@eod_group.command("jrwa")
@click.option("--class", "jrwa_class", help="Show one class.")
@_errors
def jrwa_command(jrwa_class: str | None) -> None:
    """List the office's subject file list (jednolity rzeczowy wykaz akt) with categories."""
    with _office() as office:
        classes = (
            [office.jrwa.lookup(jrwa_class)]
            if jrwa_class
            else [office.jrwa.classes[k] for k in sorted(office.jrwa.classes)]
        )
        for c in classes:
            other = f" (inne komórki: {c.other.text})" if c.other is not None else ""
            click.echo(f"{c.symbol}  {c.category.text:<5} {c.title}{other}")


@eod_group.command("paths")
@_errors
def paths_command() -> None:
    """List the office's acceptance paths (ścieżki akceptacji) per document kind and unit."""
    from ledger.eod.model import EVENT_TERMS

    with _office() as office:
        for path in office.paths.paths:
            steps = " → ".join(
                f"{EVENT_TERMS[s.event][1]} [{s.role.value}"
                + (
                    f", {'unit of the case' if s.unit == 'case' else 'unit ' + s.unit}]"
                    if s.unit
                    else "]"
                )
                for s in path.steps
            )
            click.echo(f"{path.kind} (unit {path.unit}): {steps or '-'}")


@eod_group.command("backup")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@_errors
def backup_command(dest: Path) -> None:
    """Write a consistent copy of the office store into DEST (kopia zapasowa); DEST must not
    exist. Restore it with 'ledger eod --data-dir NEW restore DEST'."""
    settings = _settings()
    store = OfficeStore.open(settings.data_dir)
    try:
        store.backup(dest)
        cases = len(store.cases())
    finally:
        store.close()
    click.echo(f"backed up {settings.data_dir} to {dest}: {cases} cases")


@eod_group.command("restore")
@click.argument("source", type=click.Path(file_okay=False, path_type=Path))
@_errors
def restore_command(source: Path) -> None:
    """Restore a backup SOURCE into the (empty) --data-dir and check every case in it: each
    event's certificate, receipt, checkpoint and workflow rule."""
    settings = _settings()
    store = OfficeStore.restore(source, settings.data_dir)
    try:
        cases, events = Office(store, None, clock=lambda: 0).check_all()
    finally:
        store.close()
    click.echo(
        f"restored {source} into {settings.data_dir}: {cases} cases, {events} events check out"
    )


# ----------------------------------------------------------------------------- keys


@eod_group.group("keys")
def keys_group() -> None:
    """Positions' signing keys, certified by the office CA (lokalne centrum certyfikacji)."""


@keys_group.command("issue")
@click.argument("position")
@click.option("--unit", required=True, help="Unit symbol (symbol komórki organizacyjnej), e.g. FK.")
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
    help="incoming = przesyłka wpływająca (RPW); outgoing = wychodząca; internal = pismo "
    "wewnętrzne.",
)
@click.option("--kind", type=click.Choice(["letter", "invoice"]), default="letter")
@click.option("--attachments", type=click.IntRange(0, 10_000), default=0)
@click.option("--sender-ref", help="The letter's own reference (znak pisma nadawcy).")
@click.option("--case", "case", metavar="CASE", help="Register straight into an open case.")
@click.option("--receipt-out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--eform", is_flag=True,
              help="FILE is a signed e-form (XAdES, ePUAP): verify it against the office's "
              "trust anchors and record the outcome (signer, certificate, valid or why not).")
@_quiet
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
    eform: bool,
    quiet: bool,
) -> None:
    """Register an item FILE (rejestracja przesyłki, RPW) and write its official receipt
    (urzędowe poświadczenie rejestracji) for the sender (default RPW-N-YEAR.receipt.json)."""
    if receipt_out is not None and receipt_out.exists():
        raise ConfigError(f"{receipt_out} exists; choose another file or remove it first")
    with _office() as office:
        outcome = None
        if eform:
            from ledger.eod.eforms import MAX_EFORM

            outcome = office.verify_eform(_read(file, limit=MAX_EFORM))
            click.echo(
                f"e-form signature: {'valid' if outcome.valid else 'INVALID'}: "
                f"{outcome.signer or '-'} ({outcome.reason})",
                err=True,
            )
        register, _, receipt = office.register(
            _hash_file(file),
            eform=None if outcome is None else outcome.to_json(),
            actor=actor,
            direction=direction,
            channel=channel,
            kind=kind,
            attachments=attachments,
            sender_ref=sender_ref,
            case=case,
        )
    target = receipt_out or _free_name(register.replace("/", "-"), ".receipt.json")
    _write_json(target, receipt)
    click.echo(register if quiet else f"registered {register}; official receipt {target}")


@eod_group.command("assign")
@_ref
@_as
@click.option("--to", required=True, metavar="POSITION", help="The position made responsible.")
@click.option("--method", help="How to handle it (sposób załatwienia).")
@click.option("--deadline", metavar="YYYY-MM-DD", help="By when (termin): the end of that day.")
@_errors
def assign_command(ref: str, actor: str, to: str, method: str | None, deadline: str | None) -> None:
    """Assign an item or case (dekretacja). Only the original assigner may change the method
    or the deadline; an assignment further down (dekretacja wtórna) may set a deadline of its
    own, no later than the one above it."""
    with _office() as office:
        recorded = office.assign(ref, actor=actor, to=to, method=method, deadline=deadline)
        _done(f"assigned {ref} to {to}", recorded.event.hash)


@eod_group.command("open-case")
@click.argument("item", required=False, metavar="[ITEM]")
@_as
@click.option("--unit", required=True, help="Unit symbol (symbol komórki organizacyjnej).")
@click.option("--class", "jrwa_class", required=True, help="JRWA class (symbol z wykazu akt).")
@click.option(
    "--kind", default="letter", show_default=True, help="Document kind of the acceptance paths."
)
@click.option("--cost", is_flag=True, help="A cost document (dokument kosztowy): --kind cost.")
@click.option(
    "--category",
    help="Archival category if not the JRWA class's: A, Bc, B<n>, BE<n> (with --category-reason).",
)
@click.option("--category-reason", help="Why the category differs from the class's.")
@click.option("--sign", help="Use this existing case sign instead of the next number.")
@_quiet
@_errors
def open_case_command(
    item: str | None,
    actor: str,
    unit: str,
    jrwa_class: str,
    kind: str,
    cost: bool,
    category: str | None,
    category_reason: str | None,
    sign: str | None,
    quiet: bool,
) -> None:
    """Open a case (założenie sprawy) for ITEM (a register number) or on its own, in a class
    of the office's JRWA, and give it its case sign (znak sprawy) UNIT.CLASS.N.YEAR and its
    acceptance path (ścieżka akceptacji)."""
    with _office() as office:
        case, recorded = office.open_case(
            item,
            actor=actor,
            unit=unit,
            jrwa_class=jrwa_class,
            kind="cost" if cost else kind,
            category=category,
            category_reason=category_reason,
            sign=sign,
        )
        if quiet:
            click.echo(case)
        else:
            _done(f"opened case {case}", recorded.event.hash)


@eod_group.command("attach")
@_ref
@click.argument("file")
@_as
@click.option("--kind", default="attachment", show_default=True, help="contract, order, ...")
@_errors
def attach_command(ref: str, file: str, actor: str, kind: str) -> None:
    """Attach a document FILE to a case by its digest (dołączenie dokumentu, załącznik)."""
    with _office() as office:
        recorded = office.attach(ref, _hash_file(file), actor=actor, kind=kind)
        _done(f"attached {kind} to {ref}", recorded.event.hash)


@eod_group.command("submit")
@_ref
@click.argument("file")
@_as
@_errors
def submit_command(ref: str, file: str, actor: str) -> None:
    """Submit a draft FILE for acceptance (projekt do akceptacji), for the levels of the
    case's acceptance path."""
    with _office() as office:
        recorded = office.submit(ref, _hash_file(file), actor=actor)
        _done(f"submitted a draft in {ref}", recorded.event.hash)


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
        _done(f"{recorded.event.record.type.value} in {ref}", recorded.event.hash)


@eod_group.command("reject")
@_ref
@_as
@click.option("--reason", required=True)
@_errors
def reject_command(ref: str, actor: str, reason: str) -> None:
    """Reject the pending draft (odrzucenie, zwrot do poprawy)."""
    with _office() as office:
        recorded = office.reject(ref, actor=actor, reason=reason)
        _done(f"rejected the draft in {ref}", recorded.event.hash)


@eod_group.command("sign")
@_ref
@click.argument("file")
@_as
@_errors
def sign_command(ref: str, file: str, actor: str) -> None:
    """Record the signature (podpis) of the accepted draft; FILE is the signed document."""
    with _office() as office:
        recorded = office.sign(ref, _hash_file(file), actor=actor)
        _done(f"signed in {ref}", recorded.event.hash)


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
        _done(f"dispatched {ref} as {register}", recorded.event.hash)


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
        _done(f"recorded {kind} in {ref}", recorded.event.hash)


@eod_group.command("deliver")
@_ref
@_as
@click.option("--deemed", is_flag=True, help="Deemed delivered (doręczenie zastępcze).")
@click.option("--notice", metavar="YYYY-MM-DD", help="Day of the first notice (awizo).")
@click.option("--date", "on", metavar="YYYY-MM-DD", help="Day of delivery (default: today).")
@_errors
def deliver_command(ref: str, actor: str, deemed: bool, notice: str | None, on: str | None) -> None:
    """Record the delivery (doręczenie), or the deemed delivery with the lapse of the 14th day
    after the first notice (KPA art. 44); the timeline shows the 14-day appeal period."""
    with _office() as office:
        recorded = office.deliver(ref, actor=actor, deemed=deemed, notice=notice, on=on)
        _done(f"delivered {ref}", recorded.event.hash)


@eod_group.command("close")
@_ref
@_as
@_errors
def close_command(ref: str, actor: str) -> None:
    """Close the case (zakończenie sprawy); by the case officer (prowadzący sprawę)."""
    with _office() as office:
        _done(f"closed {ref}", office.close(ref, actor=actor).event.hash)


@eod_group.command("reopen")
@_ref
@_as
@click.option("--reason", required=True, help="Why the case is reopened.")
@_errors
def reopen_command(ref: str, actor: str, reason: str) -> None:
    """Reopen a closed case (wznowienie sprawy) before it goes to the office archive."""
    with _office() as office:
        _done(f"reopened {ref}", office.reopen(ref, actor=actor, reason=reason).event.hash)


@eod_group.command("archive")
@_ref
@_as
@_errors
def archive_command(ref: str, actor: str) -> None:
    """Transfer the closed case to the office archive (archiwum zakładowe); not category Bc."""
    with _office() as office:
        _done(f"archived {ref}", office.archive(ref, actor=actor).event.hash)


@eod_group.command("destroy")
@_ref
@_as
@click.option("--consent", required=True, help="The state archive director's consent reference.")
@_errors
def destroy_command(ref: str, actor: str, consent: str) -> None:
    """Record the lawful destruction (brakowanie) after the retention period, counted from the
    proven closing; never category A. Category Bc is destroyed in its own unit, every other
    from the office archive. The trail is kept: the case stays provably 'existed, and was
    lawfully destroyed'."""
    with _office() as office:
        recorded = office.destroy(ref, actor=actor, consent=consent)
        _done(f"destroyed {ref}", recorded.event.hash)


# ----------------------------------------------------------------- status and trails


@eod_group.command("status")
@_ref
@_errors
def status_command(ref: str) -> None:
    """Print the course of a case or item (przebieg sprawy), verified from the local store;
    refreshes its signed head (needs the ledger when the case has grown)."""
    with _office() as office:
        bundle = office.trail(ref)
    data = json.dumps(bundle, ensure_ascii=False).encode("utf-8")
    click.echo(render_timeline(verify_trail(data)), nl=False)


@eod_group.command("trail")
@_ref
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@_errors
def trail_command(ref: str, out: Path) -> None:
    """Export the self-contained audit trail of a case (metryka sprawy) for an auditor, ending
    with a fresh signed head, so a trail whose last events are dropped fails."""
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
    """Verify an audit trail offline (kontrola metryki sprawy) and print its timeline, with
    each step's proven interval.

    Exit 0 if valid, 1 with the reason if not, 2 if unreadable.
    """
    trail = verify_trail(
        _read(bundle, limit=MAX_BUNDLE_SIZE),
        policy=_pinned_policy(policy_path),
        office_key=office_key,
        document=_hash_file(file) if file is not None else None,
    )
    if policy_path is None:
        click.echo(_UNPINNED_POLICY, err=True)
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
    if policy_path is None:
        click.echo(_UNPINNED_POLICY, err=True)
    office = result.office
    fmt = office.calendar.format_time
    name = (
        office.name if result.ca_pinned else f"{office.name}; name not verified: pin --office-key"
    )
    click.echo(f"valid: {office.office} ({name}) registered {result.register}")
    click.echo(f"  case:       {result.case or '-'}")
    click.echo(f"  document:   {result.document.hex()}")
    click.echo(
        f"  received:   no later than {fmt(result.document_receipt.time_bound)} "
        f"(ledger time bound; office time zone {office.zone})"
    )
    click.echo(
        f"  office key: {fingerprint(office.ca_public_key)}"
        + ("" if result.ca_pinned else " (from the file: compare it with the published one)")
    )
    click.echo(
        f"  policy:     {'pinned' if result.policy_pinned else 'NOT pinned (see the warning)'}"
    )


# ------------------------------------------------------- citizens, deadlines, registers


@eod_group.command("lookup")
@click.argument("register")
@click.option("--code", required=True, help="The access code from the registration receipt.")
@_errors
def lookup_command(register: str, code: str) -> None:
    """The citizen's status lookup (sprawdzanie statusu sprawy): the stage of the matter
    registered as REGISTER and its proven dates, given its access code; a wrong code and an
    unknown number answer alike."""
    from ledger.eod.status import lookup

    with _office() as office:
        status = lookup(office.store, office.calendar, register, code)
    click.echo(json.dumps(status, ensure_ascii=False, indent=1))


@eod_group.command("deadlines")
@click.option("--unit", help="Only the matters of this unit.")
@click.option("--officer", metavar="POSITION", help="Only the matters of this case officer.")
@click.option("--soon", type=click.IntRange(0, 365), default=7, show_default=True,
              help="Days ahead that count as due soon.")
@click.option("--all", "include_ok", is_flag=True, help="List every open matter's deadline.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_errors
def deadlines_command(
    unit: str | None, officer: str | None, soon: int, include_ok: bool, as_json: bool
) -> None:
    """Overdue and due-soon matters (monitorowanie terminów) per unit and officer: the deadline
    set at assignment, else the statutory term of KPA art. 35 with the periods that do not
    count (art. 35 § 5, 'ledger eod pause') and art. 57 § 4."""
    from ledger.eod.deadlines import office_terms, watch

    with _office() as office:
        found = watch(
            office.store,
            office.calendar,
            office_terms(office.store),
            now=office.now(),
            soon=soon,
            unit=unit,
            officer=officer,
            include_ok=include_ok,
        )
    if as_json:
        for d in found:
            click.echo(json.dumps(d.to_json(), ensure_ascii=False))
        return
    if not found:
        click.echo("no overdue or due-soon matters")
        return
    for d in found:
        what = d.case or d.register or "-"
        basis = "assigned" if d.source == "assigned" else f"KPA art. 35, {d.term}"
        paused = f", {d.paused_days} day(s) not counted" if d.paused_days else ""
        click.echo(
            f"{d.state:<8}  due {d.due}  {what}  unit {d.unit or '-'}  officer "
            f"{d.officer or '-'}  ({basis}{paused}; {d.stage})"
        )


@eod_group.command("pause")
@_ref
@click.option("--from", "start", required=True, metavar="YYYY-MM-DD")
@click.option("--until", required=True, metavar="YYYY-MM-DD")
@click.option("--reason", required=True, help="Why the period does not count (art. 35 § 5).")
@_errors
def pause_command(ref: str, start: str, until: str, reason: str) -> None:
    """Record a period that does not count towards a matter's statutory term (KPA art. 35
    § 5: a term for a specific act, suspension, a delay by the party). Kept by the office."""
    from ledger.eod.deadlines import add_pause

    with _office() as office:
        add_pause(office.store, office.store.chain_of(ref), start=start, until=until,
                  reason=reason)
    click.echo(f"{ref}: {start} to {until} not counted ({reason})")


@eod_group.command("registers")
@click.argument("which", metavar="invoices|contracts")
@click.option("--unit", help="Only this unit.")
@click.option("--since", metavar="YYYY-MM-DD", help="From this day (office calendar).")
@click.option("--until", metavar="YYYY-MM-DD", help="Up to and including this day.")
@click.option("--stage", help="Only matters at this stage (registered, assigned, ...).")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the register as CSV to this new file.")
@_errors
def registers_command(
    which: str,
    unit: str | None,
    since: str | None,
    until: str | None,
    stage: str | None,
    csv_out: Path | None,
) -> None:
    """The invoice register (rejestr faktur) or the contract register (rejestr umów)."""
    from ledger.eod.registers import REGISTERS, register_csv, register_rows

    with _office() as office:
        rows = register_rows(office.store, office.calendar, which, unit=unit, since=since,
                             until=until, stage=stage)
    if csv_out is not None:
        try:
            with open(csv_out, "x", encoding="utf-8", newline="") as handle:
                handle.write(register_csv(rows, which))
        except FileExistsError:
            raise ConfigError(f"{csv_out} exists; choose another file") from None
        except OSError as exc:
            raise ConfigError(f"cannot write {csv_out}: {exc.strerror}") from None
        click.echo(f"wrote {csv_out}: {len(rows)} rows of the {which} register")
        return
    for row in rows:
        click.echo("  ".join("-" if row[k] is None else str(row[k]) for k in REGISTERS[which]))


# ------------------------------------------------------------------ the state archive


@eod_group.command("transfer")
@click.argument("cases", nargs=-1, metavar="[CASE]...")
@_as
@click.option("--archive", required=True, help="The state archive that takes the cases.")
@click.option("--all-due", is_flag=True,
              help="Every archived category A case whose office-archive period has run.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The transfer package to write (a new file).")
@_errors
def transfer_command(
    cases: tuple[str, ...], actor: str, archive: str, all_due: bool, out: Path
) -> None:
    """Transfer category A cases to the state archive (przekazanie do archiwum państwowego):
    record 'transferred' in each trail and write the package (handover list, spis
    zdawczo-odbiorczy, with each document's digest, and every case's trail)."""
    from ledger.eod.transfer import due_for_transfer, transfer

    if out.exists():
        raise ConfigError(f"{out} exists; choose another file or remove it first")
    with _office() as office:
        chosen = list(cases)
        if all_due:
            chosen += [c for c in due_for_transfer(office, now=office.now()) if c not in chosen]
        if not chosen:
            raise MalformedError("no case to transfer: name cases or give --all-due")
        data, recorded = transfer(office, chosen, actor=actor, archive=archive)
    try:
        with open(out, "xb") as handle:
            handle.write(data)
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}") from None
    click.echo(f"transferred {len(recorded)} case(s) to {archive}; package {out}")


@eod_group.command("verify-package")
@click.argument("package")
@click.option("--policy", "policy_path", metavar="FILE", help="Pin the ledger's trust policy.")
@click.option("--office-key", metavar="SHA256:...", help="Pin the office CA key (fingerprint).")
@_errors
def verify_package_command(package: str, policy_path: str | None, office_key: str | None) -> None:
    """Verify a transfer package offline (kontrola paczki archiwalnej): exit 0 if valid, 1 with
    the reason if not, 2 if unreadable."""
    from ledger.eod.transfer import verify_package

    result = verify_package(
        _read(package, limit=MAX_BUNDLE_SIZE),
        policy=_pinned_policy(policy_path),
        office_key=office_key,
    )
    if policy_path is None:
        click.echo(_UNPINNED_POLICY, err=True)
    click.echo(
        f"valid: {len(result.trails)} case(s) for {result.archive}, handover list "
        f"{result.list_digest.hex()[:16]}"
    )
    for trail in result.trails:
        click.echo(f"  {trail.case}: {len(trail.entries)} events, signed head verified")


@eod_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--batch", type=click.IntRange(1, 10_000), default=500, show_default=True,
              help="Matters anchored together.")
@click.option("--name", help="The import's name, for resuming (default: the file name).")
@_errors
def import_command(file: Path, batch: int, name: str | None) -> None:
    """Bulk import of historical matters (JSON Lines, one matter per line; see docs/eod.md),
    anchored in batches; run it again to resume after the last stored batch."""
    from ledger.eod.importer import count_matters, import_file, progress

    total = count_matters(file)
    with _office() as office:
        known = progress(office, name or file.name)
        done = 0 if known is None else min(known[1], total)
        with click.progressbar(length=total, label="importing", show_pos=True,
                               file=sys.stderr) as bar:
            bar.update(done)
            skipped, imported = import_file(office, file, name=name, batch=batch,
                                            report=bar.update)
    click.echo(f"imported {imported} matter(s) from {file}; {skipped} were imported before")


# -------------------------------------------------------------------------- the service


@eod_group.command("serve")
@click.option("--config", "config_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The service's TOML config (offices, clients, webhooks, mail).")
@_errors
def serve_command(config_path: Path) -> None:
    """Run the HTTP service for EOD backends and citizens (every workflow step as an endpoint,
    queries, webhooks, mail, the status page); stops on Ctrl-C or SIGTERM."""
    from ledger.eod.service import load_config, serve

    config = load_config(config_path)
    serve(config, ready=lambda url: click.echo(
        f"serving {', '.join(o.id for o in config.offices)} on {url}", err=True))


@eod_group.command("eform-anchors")
@click.argument("pem", type=click.Path(dir_okay=False, path_type=Path))
@_errors
def eform_anchors_command(pem: Path) -> None:
    """Set the trust anchors of incoming e-forms: the PEM certificates of the CAs whose
    certificates may sign them (the trusted profile, qualified trust service providers)."""
    with _office() as office:
        count = office.set_eform_anchors(_read_text(pem))
    click.echo(f"e-form trust anchors: {count} certificate(s) from {pem}")


@eod_group.command("reindex")
@_errors
def reindex_command() -> None:
    """Rebuild the office's query index (statuses, deadlines, registers) from the trails, e.g.
    for a store written before it existed; every chain is checked on the way."""
    with _office() as office:
        chains = office.reindex()
    click.echo(f"reindexed {chains} chain(s)")
