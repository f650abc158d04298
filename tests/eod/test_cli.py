"""``ledger eod ...`` end to end on a local proving ground (--ground), with fixed times (--at)."""

from __future__ import annotations

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

    def __call__(self, at: str, *args: str, status: int = 0) -> Result:
        result = CliRunner().invoke(
            main,
            ["eod", "--data-dir", str(self.data), "--ground", str(self.ground), "--at", at, *args],
        )
        assert result.exit_code == status, (args, result.output)
        return result

    def file(self, name: str, content: bytes) -> str:
        path = self.tmp / name
        path.write_bytes(content)
        return str(path)


@pytest.fixture
def eod(tmp_path: Path) -> Eod:
    run = Eod(tmp_path)
    run("2024-03-01T08:00:00Z", "init", "--office", "cuw", "--name", "CUW Gdańsk")
    for position, unit, roles in [
        ("kanc", "SEK", ["registry"]),
        ("dyr", "D", ["assign", "accept", "sign", "approve-payment"]),
        ("ref", "FK", ["officer"]),
        ("meryt", "SP7", ["substantive", "accept"]),
        ("ks1", "FK", ["accounts"]),
        ("ks2", "FK", ["accounts"]),
        ("gk", "FK", ["chief-accountant"]),
        ("arch", "AZ", ["archivist"]),
    ]:
        role_args = [a for r in roles for a in ("--role", r)]
        run(
            "2024-03-01T08:00:00Z",
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
        "2024-03-01T09:00:00Z",
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
    ok = eod("2024-03-01T09:00:00Z", "verify-receipt", str(receipt), "--document", invoice)
    assert "registered RPW/1/2024" in ok.output
    eod(
        "2024-03-01T09:05:00Z",
        "assign",
        "RPW/1/2024",
        "--as",
        "dyr",
        "--to",
        "ref",
        "--deadline",
        "2024-03-20",
    )
    out = eod(
        "2024-03-01T09:10:00Z",
        "open-case",
        "RPW/1/2024",
        "--as",
        "ref",
        "--unit",
        "FK",
        "--class",
        "3026",
        "--category",
        "B5",
        "--cost",
    )
    assert "opened case FK.3026.1.2024" in out.output
    case = "FK.3026.1.2024"
    eod("2024-03-01T09:11:00Z", "attach", case, contract, "--as", "ref", "--kind", "contract")
    eod("2024-03-01T10:00:00Z", "accept", case, "--as", "meryt", "--step", "substantive")
    eod("2024-03-01T11:00:00Z", "accept", case, "--as", "ks1", "--step", "formal")
    eod(
        "2024-03-01T11:30:00Z",
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
    bad = eod("2024-03-01T12:00:00Z", "accept", case, "--as", "dyr", "--step", "approve", status=2)
    assert bad.stderr.startswith("refused: approval for payment (zatwierdzenie do wypłaty)")
    eod("2024-03-01T12:00:00Z", "accept", case, "--as", "gk", "--step", "countersign")
    eod("2024-03-01T13:00:00Z", "accept", case, "--as", "dyr", "--step", "approve")
    eod("2024-03-01T14:00:00Z", "close", case, "--as", "ref")
    eod("2024-03-02T08:00:00Z", "archive", case, "--as", "arch")
    bad = eod("2024-03-03T08:00:00Z", "destroy", case, "--as", "arch", "--consent", "X", status=2)
    assert "retention period runs until 2030-01-01" in bad.stderr
    status = eod("2024-03-03T08:00:00Z", "status", case)
    assert "state: in the office archive" in status.output

    bundle = eod.tmp / "trail.json"
    eod("2024-03-03T08:00:00Z", "trail", case, "--out", str(bundle))
    policy = str(eod.ground / "trust-policy")
    good = eod(
        "2024-03-03T08:00:00Z",
        "verify-trail",
        str(bundle),
        "--policy",
        policy,
        "--document",
        contract,
    )
    assert "#7   2024-03-01 12:00:00 UTC  countersignature (kontrasygnata)" in good.output
    assert "existed no later than 2024-03-01 12:00:00 UTC" in good.output
    assert good.output.rstrip().endswith("workflow rule checks out")

    data = json.loads(bundle.read_text())
    data["events"][4], data["events"][5] = data["events"][5], data["events"][4]
    bundle.write_text(json.dumps(data))
    bad = eod("2024-03-03T08:00:00Z", "verify-trail", str(bundle), status=1)
    assert bad.stderr.startswith("invalid: event #4 (formal-check): event number 5 where 4")


def test_letter_path_commands(eod: Eod) -> None:
    draft = eod.file("draft.odt", b"projekt")
    signed = eod.file("signed.xml", b"<podpisany/>")
    upd = eod.file("upd.xml", b"<UPD/>")
    out = eod(
        "2024-03-01T09:00:00Z",
        "open-case",
        "--as",
        "ref",
        "--unit",
        "OR",
        "--class",
        "0012",
        "--category",
        "B2",
    )
    assert "OR.0012.1.2024" in out.output
    case = "OR.0012.1.2024"
    eod("2024-03-01T09:01:00Z", "submit", case, draft, "--as", "ref", "--levels", "1")
    bad = eod("2024-03-01T09:02:00Z", "sign", case, signed, "--as", "dyr", status=2)
    assert "signature (podpis) before acceptance" in bad.stderr
    eod("2024-03-01T09:03:00Z", "reject", case, "--as", "meryt", "--reason", "popraw datę")
    eod("2024-03-01T09:04:00Z", "submit", case, draft, "--as", "ref")
    eod("2024-03-01T09:05:00Z", "accept", case, "--as", "meryt", "--level", "1")
    eod("2024-03-01T09:06:00Z", "sign", case, signed, "--as", "dyr")
    out = eod("2024-03-01T09:07:00Z", "dispatch", case, "--as", "kanc", "--channel", "e-doreczenia")
    assert "RPWy/1/2024" in out.output
    eod("2024-03-01T10:00:00Z", "record-receipt", case, upd, "--as", "kanc", "--kind", "UPD")
    eod("2024-03-01T10:00:00Z", "deliver", case, "--as", "kanc")
    eod("2024-03-02T10:00:00Z", "close", case, "--as", "ref")
    eod("2024-03-03T10:00:00Z", "archive", case, "--as", "arch")
    eod("2027-01-02T10:00:00Z", "destroy", case, "--as", "arch", "--consent", "AP.4131.1.2026")
    status = eod("2027-01-02T10:00:00Z", "status", case)
    assert "state: destroyed (brakowanie)" in status.output


def test_help_names_the_polish_terms() -> None:
    for command, term in [
        ("assign", "dekretacja"),
        ("open-case", "znak sprawy"),
        ("destroy", "brakowanie"),
        ("accept", "kontrasygnata"),
        ("register", "rejestracja"),
        ("verify-trail", "offline"),
    ]:
        result = CliRunner().invoke(main, ["eod", command, "--help"])
        assert result.exit_code == 0
        assert term in result.output
