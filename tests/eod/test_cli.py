"""``ledger eod ...`` end to end on an offline demo ground (--ground), with fixed times (--at,
office local time unless an offset is given)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ledger.cli import main


class Eod:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ground = tmp / "ground"
        self.data = tmp / "data"
        result = CliRunner().invoke(
            main, ["log", "init", str(self.ground), "--origin", "ledger.example.org/demo"]
        )
        assert result.exit_code == 0, result.output

    def __call__(self, at: str, *args: str, status: int = 0, data: Path | None = None) -> Result:
        result = CliRunner().invoke(
            main,
            [
                "eod",
                "--data-dir",
                str(data or self.data),
                "--ground",
                str(self.ground),
                "--at",
                at,
                *args,
            ],
        )
        assert result.exit_code == status, (args, result.output)
        return result

    def file(self, name: str, content: bytes) -> str:
        path = self.tmp / name
        path.write_bytes(content)
        return str(path)


POSITIONS = [
    ("kanc", "SEK", ["registry"]),
    ("dyr", "D", ["assign", "sign", "approve-payment"]),
    ("ref", "FK", ["officer"]),
    ("kier-or", "OR", ["officer", "accept"]),
    ("sekr", "OR", ["accept"]),
    ("meryt", "SP7", ["substantive", "accept"]),
    ("ks1", "FK", ["accounts"]),
    ("ks2", "FK", ["accounts"]),
    ("gk", "FK", ["chief-accountant"]),
    ("arch", "AZ", ["archivist"]),
]


@pytest.fixture
def eod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Eod:
    monkeypatch.chdir(tmp_path)  # default receipt files land here
    run = Eod(tmp_path)
    run("2024-03-01T08:00:00", "init", "--office", "cuw", "--name", "CUW Gdańsk")
    for position, unit, roles in POSITIONS:
        role_args = [a for r in roles for a in ("--role", r)]
        run(
            "2024-03-01T08:00:00",
            "keys",
            "issue",
            position,
            "--unit",
            unit,
            "--title",
            f"stanowisko {position}",
            *role_args,
        )
    return run


def test_cost_path_trail_and_tampering(eod: Eod) -> None:
    invoice = eod.file("fv.pdf", b"faktura")
    contract = eod.file("umowa.pdf", b"umowa")
    receipt = eod.tmp / "rpw.json"
    out = eod(
        "2024-03-01T10:00:00",
        "register",
        invoice,
        "--as",
        "kanc",
        "--channel",
        "ksef",
        "--kind",
        "invoice",
        "--attachments",
        "1",
        "--receipt-out",
        str(receipt),
    )
    assert "registered RPW/1/2024" in out.output
    ok = eod("2024-03-01T10:00:00", "verify-receipt", str(receipt), "--document", invoice)
    assert "registered RPW/1/2024" in ok.output
    assert "CUW Gdańsk; name not verified" in ok.output
    assert ok.stderr.startswith("WARNING: no --policy given")
    assert "no later than 2024-03-01 10:00:00 +01:00" in ok.output
    eod(
        "2024-03-01T10:05:00",
        "assign",
        "RPW/1/2024",
        "--as",
        "dyr",
        "--to",
        "ref",
        "--deadline",
        "2024-03-20",
    )
    case = eod(
        "2024-03-01T10:10:00",
        "open-case",
        "RPW/1/2024",
        "--as",
        "ref",
        "--unit",
        "FK",
        "--class",
        "3026",
        "--cost",
        "--quiet",
    ).output.strip()
    assert case == "FK.3026.1.2024"
    eod("2024-03-01T10:11:00", "attach", case, contract, "--as", "ref", "--kind", "contract")
    eod("2024-03-01T11:00:00", "accept", case, "--as", "meryt", "--step", "substantive")
    eod("2024-03-01T12:00:00", "accept", case, "--as", "ks1", "--step", "formal")
    eod(
        "2024-03-01T12:30:00",
        "accept",
        case,
        "--as",
        "ks2",
        "--step",
        "coding",
        "--accounts",
        "Wn 401 / Ma 201",
    )
    # Approval for payment before the countersignature: refused, exit 2, one line.
    bad = eod("2024-03-01T13:00:00", "accept", case, "--as", "dyr", "--step", "approve", status=2)
    assert bad.stderr.startswith("refused: approval for payment (zatwierdzenie do wypłaty)")
    assert bad.stderr.count("\n") == 1
    eod("2024-03-01T13:00:00", "accept", case, "--as", "gk", "--step", "countersign")
    eod("2024-03-01T14:00:00", "accept", case, "--as", "dyr", "--step", "approve")
    eod("2024-03-01T15:00:00", "close", case, "--as", "ref")
    eod("2024-03-02T09:00:00", "archive", case, "--as", "arch")
    bad = eod("2024-03-03T09:00:00", "destroy", case, "--as", "arch", "--consent", "X", status=2)
    assert "runs until 2030-01-01 00:00:00 +01:00" in bad.stderr
    status = eod("2024-03-03T09:00:00", "status", case)
    assert "state: in the office archive" in status.output

    bundle = eod.tmp / "trail.json"
    eod("2024-03-03T09:00:00", "trail", case, "--out", str(bundle))
    again = eod("2024-03-03T09:00:00", "trail", case, "--out", str(bundle), status=2)
    assert "exists" in again.stderr  # never replaced silently
    policy = str(eod.ground / "trust-policy")
    key = eod("2024-03-03T09:00:00", "office-key").output.strip()
    good = eod(
        "2024-03-03T09:00:00",
        "verify-trail",
        str(bundle),
        "--policy",
        policy,
        "--office-key",
        key,
        "--document",
        contract,
    )
    assert "#7   2024-03-01 13:00:00 +01:00  countersignature (kontrasygnata)" in good.output
    assert "office cuw (CUW Gdańsk)\n" in good.output
    assert good.stderr == ""
    assert good.output.rstrip().endswith("and the signed head check out")

    data = json.loads(bundle.read_text())
    data["events"][4], data["events"][5] = data["events"][5], data["events"][4]
    bundle.write_text(json.dumps(data))
    bad = eod("2024-03-03T09:00:00", "verify-trail", str(bundle), status=1)
    assert "invalid: event #4 (formal-check): event number 5 where 4" in bad.stderr


def test_letter_path_commands(eod: Eod) -> None:
    draft = eod.file("draft.odt", b"projekt")
    signed = eod.file("signed.xml", b"<podpisany/>")
    upd = eod.file("upd.xml", b"<UPD/>")
    case = eod(
        "2024-03-01T09:00:00",
        "open-case",
        "--as",
        "kier-or",
        "--unit",
        "OR",
        "--class",
        "0012",
        "--category",
        "B2",
        "--category-reason",
        "kopia planu pracy",
        "--quiet",
    ).output.strip()
    assert case == "OR.0012.1.2024"
    eod("2024-03-01T09:01:00", "submit", case, draft, "--as", "kier-or")
    bad = eod("2024-03-01T09:02:00", "sign", case, signed, "--as", "dyr", status=2)
    assert "signature (podpis) before acceptance" in bad.stderr
    bad = eod("2024-03-01T09:02:00", "accept", case, "--as", "meryt", status=2)
    assert "belongs to unit OR; position 'meryt' is in unit SP7" in bad.stderr
    eod("2024-03-01T09:03:00", "reject", case, "--as", "sekr", "--reason", "popraw datę")
    eod("2024-03-01T09:04:00", "submit", case, draft, "--as", "kier-or")
    eod("2024-03-01T09:05:00", "accept", case, "--as", "sekr", "--level", "1")
    eod("2024-03-01T09:06:00", "sign", case, signed, "--as", "dyr")
    out = eod("2024-03-01T09:07:00", "dispatch", case, "--as", "kanc", "--channel", "e-doreczenia")
    assert "RPWy/1/2024" in out.output
    eod("2024-03-01T10:00:00", "record-receipt", case, upd, "--as", "kanc", "--kind", "UPD")
    eod("2024-03-01T10:00:00", "deliver", case, "--as", "kanc", "--date", "2024-03-01")
    eod("2024-03-02T10:00:00", "close", case, "--as", "kier-or")
    eod("2024-03-02T11:00:00", "reopen", case, "--as", "kier-or", "--reason", "uzupełnienie")
    eod("2024-03-02T12:00:00", "close", case, "--as", "kier-or")
    eod("2024-03-03T10:00:00", "archive", case, "--as", "arch")
    eod("2027-01-02T10:00:00", "destroy", case, "--as", "arch", "--consent", "AP.4131.1.2026")
    status = eod("2027-01-02T10:00:00", "status", case)
    assert "state: destroyed (brakowanie)" in status.output
    assert "delivered on 2024-03-01; the 14-day appeal period ends 2024-03-15" in status.output


def _store_bytes(data: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["assign", "RPW/1/2024", "--as", "dyr", "--to", "kierownik"],
            "error: unknown position 'kierownik'; issue it with 'eod keys issue'",
        ),
        (
            ["assign", "RPW/1/2024", "--as", "dyr", "--to", "ref", "--deadline", "2024-02-30"],
            "error: deadline 2024-02-30 is not a day of the calendar",
        ),
        (
            ["open-case", "RPW/1/2024", "--as", "ref", "--unit", "FK", "--class", "3027x"],
            "error: JRWA class '3027x' is not in the office's subject file list",
        ),
        (
            ["open-case", "RPW/1/2024", "--as", "ref", "--unit", "FK", "--class", "9999"],
            "error: JRWA class '9999' is not in the office's subject file list",
        ),
        (
            [
                "open-case",
                "RPW/1/2024",
                "--as",
                "ref",
                "--unit",
                "FK",
                "--class",
                "3026",
                "--category",
                "B05",
                "--category-reason",
                "x",
            ],
            "error: archival category 'B05' is not A, Bc, B<n> or BE<n>",
        ),
        (
            [
                "open-case",
                "RPW/1/2024",
                "--as",
                "ref",
                "--unit",
                "FK",
                "--class",
                "3026",
                "--category",
                "BE",
                "--category-reason",
                "x",
            ],
            "error: archival category 'BE' is not A, Bc, B<n> or BE<n>",
        ),
    ],
    ids=["unknown-position", "no-such-day", "class-shape", "class-not-listed", "B05", "BE"],
)
def test_bad_input_gets_one_line_and_leaves_the_store_byte_identical(
    eod: Eod, args: list[str], message: str
) -> None:
    invoice = eod.file("fv.pdf", b"faktura")
    eod("2024-03-01T10:00:00", "register", invoice, "--as", "kanc", "--channel", "post")
    before = _store_bytes(eod.data)
    ground_before = _store_bytes(eod.ground)
    bad = eod("2024-03-01T10:05:00", *args, status=2)
    assert bad.stderr.startswith(message), bad.stderr
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.output
    assert _store_bytes(eod.data) == before
    assert _store_bytes(eod.ground) == ground_before


def test_backup_and_restore(eod: Eod) -> None:
    invoice = eod.file("fv.pdf", b"faktura")
    eod("2024-03-01T10:00:00", "register", invoice, "--as", "kanc", "--channel", "post")
    case = eod(
        "2024-03-01T10:01:00",
        "open-case",
        "RPW/1/2024",
        "--as",
        "ref",
        "--unit",
        "FK",
        "--class",
        "3026",
        "--cost",
        "-q",
    ).output.strip()
    copy = eod.tmp / "kopia"
    out = eod("2024-03-01T10:02:00", "backup", str(copy))
    assert "1 cases" in out.output
    assert "exists" in eod("2024-03-01T10:02:00", "backup", str(copy), status=2).stderr
    restored = eod.tmp / "restored"
    out = eod("2024-03-01T10:03:00", "restore", str(copy), data=restored)
    assert "1 cases, 2 events check out" in out.output
    assert "already holds" in eod("2024-03-01T10:03:00", "restore", str(copy), status=2).stderr
    # The restored office goes on where the original stood.
    contract = eod.file("umowa.pdf", b"umowa")
    eod("2024-03-01T10:04:00", "attach", case, contract, "--as", "ref", data=restored)
    assert (
        hashlib.sha256((restored / "keys" / "ca.key").read_bytes()).digest()
        == hashlib.sha256((eod.data / "keys" / "ca.key").read_bytes()).digest()
    )


def test_office_zone_and_dictionaries(eod: Eod, tmp_path: Path) -> None:
    listing = eod("2024-03-01T10:00:00", "jrwa", "--class", "3026").output
    assert listing.startswith("3026  B5    Dokumentacja księgowa")
    paths = eod("2024-03-01T10:00:00", "paths").output
    assert "cost (unit *): kontrola merytoryczna [substantive] → kontrola formalna" in paths
    bad = eod(
        "2024-03-01T10:00:00",
        "init",
        "--office",
        "x",
        "--name",
        "X",
        "--zone",
        "Europe/Gdansk",
        data=tmp_path / "other",
        status=2,
    )
    assert (
        bad.stderr
        == "error: unknown time zone 'Europe/Gdansk' (an IANA name, e.g. Europe/Warsaw)\n"
    )


def test_help_names_the_polish_terms_and_the_token_options() -> None:
    for command, term in [
        ("assign", "dekretacja"),
        ("open-case", "znak sprawy"),
        ("destroy", "brakowanie"),
        ("accept", "kontrasygnata"),
        ("register", "rejestracja"),
        ("reopen", "wznowienie"),
        ("verify-trail", "offline"),
        ("backup", "kopia zapasowa"),
    ]:
        result = CliRunner().invoke(main, ["eod", command, "--help"])
        assert result.exit_code == 0
        assert term in result.output
    group = CliRunner().invoke(main, ["eod", "--help"]).output
    assert "--token-file" in group and "LEDGER_TOKEN" in group and "LEDGER_NODE" in group
