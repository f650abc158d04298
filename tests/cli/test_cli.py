"""The ``ledger`` command line: hash, verify, keys, and the local proving ground."""

from __future__ import annotations

import hashlib
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from notes.ground import BASE_TIME, ORIGIN, make_ground, validator
from notes.tampering import INDEX, TAMPERINGS, drop_two_cosignatures

from ledger.cli import EXIT_ERROR, EXIT_INVALID, EXIT_OK, main
from ledger.crypto import ValidatorKeys
from ledger.note import Verifier
from ledger.prover import LocalLog, trust_policy
from ledger.storage.memory import MemoryStore

GROUND = make_ground()
DIGEST = GROUND.digests[INDEX]
RECEIPT = GROUND.log.prove(DIGEST)


def run(*args: str, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin)


def assert_clean_failure(result: Result, status: int) -> None:
    """Exit ``status`` with one line on stderr and no traceback."""
    assert result.exit_code == status, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    policy = tmp_path / "trust-policy"
    policy.write_text(GROUND.policy_text)
    proof = tmp_path / "doc.tlog-proof"
    proof.write_text(RECEIPT)
    return {"policy": policy, "proof": proof, "dir": tmp_path}


def verify(files: dict[str, Path], *extra: str) -> Result:
    return run("verify", "--policy", str(files["policy"]), "--proof", str(files["proof"]), *extra)


# ------------------------------------------------------------------------------------- hash


def test_hash_prints_sha256_like_sha256sum(tmp_path: Path) -> None:
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"hello\n")
    big.write_bytes(b"\x07" * (3 * 1024 * 1024 + 17))  # several streaming chunks
    result = run("hash", str(small), str(big))
    assert result.exit_code == EXIT_OK
    assert result.stdout.splitlines() == [
        f"{hashlib.sha256(small.read_bytes()).hexdigest()}  {small}",
        f"{hashlib.sha256(big.read_bytes()).hexdigest()}  {big}",
    ]


def test_hash_reads_stdin_for_dash() -> None:
    result = run("hash", "-", stdin=b"abc")
    assert result.stdout == f"{hashlib.sha256(b'abc').hexdigest()}  -\n"


def test_hash_reports_unreadable_files_and_goes_on(tmp_path: Path) -> None:
    ok = tmp_path / "ok"
    ok.write_bytes(b"x")
    result = run("hash", str(tmp_path / "missing"), str(ok))
    assert_clean_failure(result, EXIT_ERROR)
    assert str(ok) in result.stdout and "missing" in result.stderr


# ----------------------------------------------------------------------------------- verify


def test_verify_valid_receipt_prints_what_it_proves(files: dict[str, Path]) -> None:
    result = verify(files, "--digest", DIGEST.hex())
    assert result.exit_code == EXIT_OK, result.output
    out = result.stdout
    assert f"index:        {INDEX}" in out
    assert "tree size:    11" in out
    assert f"origin:       {ORIGIN}" in out
    assert "cosignatures: 4 validators" in out
    assert "anchored no later than 2023-11-14T22:13:21Z (" in out  # BASE_TIME + 1 in UTC


def test_verify_hashes_the_document_file(tmp_path: Path) -> None:
    document = tmp_path / "invoice.pdf"
    document.write_bytes(b"%PDF-1.7 invoice 2024/17")
    log = LocalLog(MemoryStore(), validators=[validator(i) for i in range(1, 5)])
    log.append([hashlib.sha256(document.read_bytes()).digest()])
    log.checkpoint(timestamp=BASE_TIME)
    (tmp_path / "p").write_text(log.trust_policy())
    (tmp_path / "r").write_text(log.prove(hashlib.sha256(document.read_bytes()).digest()))
    args = ["verify", "--policy", str(tmp_path / "p"), "--proof", str(tmp_path / "r")]
    assert run(*args, str(document)).exit_code == EXIT_OK
    document.write_bytes(b"%PDF-1.7 invoice 2024/18")
    assert_clean_failure(run(*args, str(document)), EXIT_INVALID)


@pytest.mark.parametrize(("tamper", "reason"), TAMPERINGS, ids=lambda x: getattr(x, "__name__", ""))
def test_verify_rejects_every_tampering_with_exit_1_and_a_reason(
    files: dict[str, Path], tamper: Callable[[str], str], reason: str
) -> None:
    files["proof"].write_text(tamper(RECEIPT))
    result = verify(files, "--digest", DIGEST.hex())
    assert_clean_failure(result, EXIT_INVALID)
    # The CLI words a failed inclusion proof for a person: the digest is not the leaf.
    if reason == "not in the checkpointed tree":
        reason = "does not match leaf"
    assert result.stderr.startswith("invalid: ") and reason in result.stderr


def test_verify_rejects_a_quorum_short_by_one(files: dict[str, Path]) -> None:
    short = make_ground(cosigners=[0, 2])
    files["proof"].write_text(short.log.prove(short.digests[0]))
    result = verify(files, "--digest", short.digests[0].hex())
    assert_clean_failure(result, EXIT_INVALID)
    assert "2 of 4 members witnessed, 3 required" in result.stderr


def test_verify_rejects_another_document(files: dict[str, Path]) -> None:
    result = verify(files, "--digest", GROUND.digests[0].hex())
    assert_clean_failure(result, EXIT_INVALID)
    assert f"digest {GROUND.digests[0].hex()} does not match leaf {INDEX}" in result.stderr
    assert "not the one anchored" in result.stderr


def test_verify_finds_file_tlog_proof_beside_the_document(tmp_path: Path) -> None:
    document = tmp_path / "contract.pdf"
    document.write_bytes(b"%PDF-1.7 umowa 3/2026")
    digest = hashlib.sha256(document.read_bytes()).digest()
    log = LocalLog(MemoryStore(), validators=[validator(i) for i in range(1, 5)])
    log.append([digest])
    log.checkpoint(timestamp=BASE_TIME)
    (tmp_path / "policy").write_text(log.trust_policy())
    result = run("verify", "--policy", str(tmp_path / "policy"), str(document))
    assert_clean_failure(result, EXIT_ERROR)  # no receipt yet: says which file it looked for
    assert f"cannot read receipt {document}.tlog-proof" in result.stderr
    Path(f"{document}.tlog-proof").write_text(log.prove(digest))
    result = run("verify", "--policy", str(tmp_path / "policy"), str(document))
    assert result.exit_code == EXIT_OK, result.output
    assert f"receipt:      {document}.tlog-proof" in result.stdout
    # With --digest there is no FILE to put .tlog-proof after.
    assert_clean_failure(
        run("verify", "--policy", str(tmp_path / "policy"), "--digest", digest.hex()), EXIT_ERROR
    )


def test_verify_against_another_ledgers_policy_names_the_keys_and_the_cause(
    files: dict[str, Path],
) -> None:
    other = [
        ValidatorKeys(
            name=f"elsewhere-{i}", origin="ledger.example.org/other", seed=bytes([i]) * 32
        )
        for i in range(1, 5)
    ]
    files["policy"].write_text(trust_policy(other))
    result = verify(files, "--digest", DIGEST.hex())
    assert_clean_failure(result, EXIT_INVALID)
    message = result.stderr
    assert "signed by none of the keys in this trust policy" in message
    assert "'ledger.example.org/other'" in message and "'elsewhere-1'" in message  # expected
    assert f"'{ORIGIN}'" in message  # found
    assert "Likely cause: the trust policy belongs to another ledger" in message


def test_verify_against_a_policy_with_the_same_names_but_other_keys(
    files: dict[str, Path],
) -> None:
    # A devnet initialised again: same origin and validator names, new keys.
    again = [validator(i, tag="initialised again") for i in range(1, 5)]
    files["policy"].write_text(trust_policy(again))
    result = verify(files, "--digest", DIGEST.hex())
    assert_clean_failure(result, EXIT_INVALID)
    assert "the names are the same but the keys differ" in result.stderr


@pytest.mark.parametrize(
    ("target", "content"),
    [
        ("proof", "not a receipt\n"),
        ("proof", RECEIPT.replace("index 5", "index five")),
        ("proof", b"\xff\xfe garbage"),
        ("policy", "quorum nobody\n"),
        ("policy", GROUND.policy_text.replace("log ", "log broken", 1)),
        ("policy", b"\x00\x01"),
    ],
)
def test_verify_malformed_inputs_exit_2(
    files: dict[str, Path], target: str, content: str | bytes
) -> None:
    if isinstance(content, bytes):
        files[target].write_bytes(content)
    else:
        files[target].write_text(content)
    result = verify(files, "--digest", DIGEST.hex())
    assert_clean_failure(result, EXIT_ERROR)
    assert result.stderr.startswith("error: malformed")


@pytest.mark.parametrize(
    "extra",
    [
        ("--digest", "abc"),
        ("--digest", "z" * 64),
        ("--digest", DIGEST.hex(), "also-a-file"),
        (),
        ("/nonexistent/document",),
    ],
)
def test_verify_bad_digest_arguments_exit_2(files: dict[str, Path], extra: tuple[str, ...]) -> None:
    assert_clean_failure(verify(files, *extra), EXIT_ERROR)


def test_usage_errors_are_one_line_naming_the_command(files: dict[str, Path]) -> None:
    for args in (["verify", "--no-such-option"], ["anchor"], ["keys", "generate"], ["nope"]):
        result = run(*args)
        assert_clean_failure(result, EXIT_ERROR)
        assert result.stderr.startswith("error: ledger"), result.stderr


def test_version_is_the_package_version() -> None:
    from ledger import __version__

    result = run("--version")
    assert result.exit_code == EXIT_OK and result.stdout == f"ledger {__version__}\n"


def test_verify_unreadable_policy_or_proof_exit_2(files: dict[str, Path]) -> None:
    files["policy"].unlink()
    result = verify(files, "--digest", DIGEST.hex())
    assert_clean_failure(result, EXIT_ERROR)
    assert "cannot read policy" in result.stderr


def test_verify_missing_option_is_a_usage_error(files: dict[str, Path]) -> None:
    result = run("verify", "--proof", str(files["proof"]), "--digest", DIGEST.hex())
    assert result.exit_code == EXIT_ERROR and "Traceback" not in result.output


# ------------------------------------------------------------------------------------- keys


def test_keys_generate_writes_0600_and_prints_vkeys(tmp_path: Path) -> None:
    out = tmp_path / "v1.key"
    result = run("keys", "generate", "--name", "v1.example", "--origin", ORIGIN, "--out", str(out))
    assert result.exit_code == EXIT_OK, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    vkeys = [line.split()[-1] for line in result.stdout.splitlines() if "vkey" in line]
    parsed = [Verifier.from_vkey(v) for v in vkeys]
    assert [v.name for v in parsed] == [ORIGIN, "v1.example"]
    shown = run("keys", "show", str(out))
    assert shown.exit_code == EXIT_OK and all(v in shown.stdout for v in vkeys)


def test_keys_generate_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "v1.key"
    args = ["keys", "generate", "--name", "v1", "--origin", ORIGIN, "--out", str(out)]
    assert run(*args).exit_code == EXIT_OK
    before = out.read_bytes()
    assert_clean_failure(run(*args), EXIT_ERROR)
    assert out.read_bytes() == before
    assert run(*args, "--force").exit_code == EXIT_OK
    assert out.read_bytes() != before


def test_keys_generate_rejects_invalid_names(tmp_path: Path) -> None:
    result = run(
        "keys", "generate", "--name", "a b", "--origin", ORIGIN, "--out", str(tmp_path / "k")
    )
    assert_clean_failure(result, EXIT_ERROR)


# -------------------------------------------------------------------------------------- log


def test_proving_ground_init_append_prove_verify(tmp_path: Path) -> None:
    ground = tmp_path / "ground"
    document = tmp_path / "letter.txt"
    document.write_bytes(b"Decision 17/2024\n")
    assert run("log", "init", str(ground), "--origin", ORIGIN, "--validators", "4").exit_code == 0
    assert_clean_failure(run("log", "init", str(ground), "--origin", ORIGIN), EXIT_ERROR)
    other = hashlib.sha256(b"other").hexdigest()
    appended = run("log", "append", str(ground), str(document), "--digest", other)
    assert appended.exit_code == EXIT_OK, appended.output
    assert appended.stdout.splitlines()[0] == f"0  {other}"
    receipt = tmp_path / "letter.tlog-proof"
    proved = run("log", "prove", str(ground), str(document), "--out", str(receipt))
    assert proved.exit_code == EXIT_OK, proved.output
    policy = ground / "trust-policy"
    result = run("verify", "--policy", str(policy), "--proof", str(receipt), str(document))
    assert result.exit_code == EXIT_OK, result.output
    assert "index:        1" in result.stdout and "cosignatures: 4 validators" in result.stdout
    unknown = run("log", "prove", str(ground), "--digest", "00" * 32, "--out", str(receipt))
    assert_clean_failure(unknown, EXIT_ERROR)


def test_log_commands_on_a_missing_ground_exit_2(tmp_path: Path) -> None:
    result = run("log", "append", str(tmp_path / "nowhere"), "--digest", "00" * 32)
    assert_clean_failure(result, EXIT_ERROR)


def test_installed_console_script_verifies_offline(files: dict[str, Path]) -> None:
    # One real process through the console script that auditors run.
    script = Path(sys.executable).parent / "ledger"
    if not script.exists():
        pytest.skip("the ledger console script is not installed in this environment")
    args = [str(script), "verify", "--policy", str(files["policy"]), "--proof", str(files["proof"])]
    ok = subprocess.run(
        [*args, "--digest", DIGEST.hex()], capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == EXIT_OK, ok.stderr
    assert f"origin:       {ORIGIN}" in ok.stdout
    files["proof"].write_text(drop_two_cosignatures(RECEIPT))
    bad = subprocess.run(
        [*args, "--digest", DIGEST.hex()], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == EXIT_INVALID
    assert bad.stderr.startswith("invalid: ") and "Traceback" not in bad.stderr


def test_receipt_files_are_never_replaced_by_a_later_receipt(tmp_path: Path) -> None:
    # Issue 11 item 3: a receipt proves the earliest moment; a later one never replaces it.
    from ledger.cli import _save_receipt
    from ledger.policy import parse_policy

    ground, document = tmp_path / "ground", tmp_path / "decyzja.txt"
    document.write_bytes(b"Decyzja 4/2026\n")
    assert run("log", "init", str(ground), "--origin", ORIGIN).exit_code == EXIT_OK
    assert run("log", "append", str(ground), str(document)).exit_code == EXIT_OK
    receipt = Path(f"{document}.tlog-proof")
    assert run("log", "prove", str(ground), str(document)).exit_code == EXIT_OK
    early = receipt.read_text()
    run("log", "append", str(ground), "--digest", "11" * 32)  # a later checkpoint, size 2
    again = run("log", "prove", str(ground), str(document))
    assert again.exit_code == EXIT_OK and receipt.read_text() == early
    assert again.stdout.startswith(f"kept {receipt}: it already proves this file (index 0, tree "
                                   "size 1, no later than ")
    late_path = tmp_path / "late.tlog-proof"
    assert run("log", "prove", str(ground), str(document), "--out", str(late_path)).exit_code == 0
    late = late_path.read_text()
    assert "\n2\n" in late and late != early
    # A later receipt on disk is replaced by an earlier one, and that is said.
    policy = parse_policy((ground / "trust-policy").read_text())
    digest = hashlib.sha256(document.read_bytes()).digest()
    outcome, message = _save_receipt(late_path, early, digest, policy, force=False)
    assert outcome == "replaced" and late_path.read_text() == early
    assert "with an earlier receipt (index 0, tree size 1" in message
    # Garbage on disk is kept, reported; --force replaces it.
    receipt.write_text("garbage\n")
    refused = run("log", "prove", str(ground), str(document))
    assert_clean_failure(refused, EXIT_ERROR)
    assert receipt.read_text() == "garbage\n" and "--force" in refused.stderr
    forced = run("log", "prove", str(ground), str(document), "--force")
    assert forced.exit_code == EXIT_OK and receipt.read_text().startswith("c2sp.org/tlog-proof")
