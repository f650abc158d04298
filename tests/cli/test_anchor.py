"""`ledger anchor` and `ledger proof` on a real devnet: receipt files are never silently
weakened, many files go in batches with resume, the node and token come from the environment."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.devnets import LEDGER, RunningDevnet, clean_env, detached_devnet, ledger

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cli-devnet"), pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDevnet]:
    with detached_devnet(tmp_path_factory.mktemp("anchor-devnet")) as running:
        yield running


def env_for(net: RunningDevnet) -> dict[str, str]:
    """The documented way to say where the node is and which token to use."""
    return clean_env(LEDGER_NODE=net.url, LEDGER_TOKEN_FILE=str(net.token_file))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def verify(net: RunningDevnet, document: Path) -> subprocess.CompletedProcess[str]:
    return ledger("verify", "--policy", str(net.policy_file), str(document))


def test_anchoring_twice_keeps_the_first_receipt_byte_for_byte(
    net: RunningDevnet, tmp_path: Path
) -> None:
    doc = write(tmp_path / "umowa.pdf", f"umowa {tmp_path.name}\n")
    first = ledger("anchor", "--policy", str(net.policy_file), str(doc), env=env_for(net))
    assert first.returncode == 0, first.stderr
    receipt = Path(f"{doc}.tlog-proof")
    original = receipt.read_bytes()
    # Grow the tree, so that a receipt cut now would be against a later checkpoint.
    other = write(tmp_path / "other.pdf", f"other {tmp_path.name}\n")
    assert ledger("anchor", str(other), env=env_for(net)).returncode == 0
    again = ledger("anchor", "--policy", str(net.policy_file), str(doc), env=env_for(net))
    assert again.returncode == 0, again.stderr
    assert receipt.read_bytes() == original
    assert f"kept {receipt}: a valid receipt of {doc}" in again.stdout
    # `ledger proof --out` onto the same file keeps it too (equal or earlier moment).
    digest = hashlib.sha256(doc.read_bytes()).hexdigest()
    fetched = ledger("proof", digest, "--out", str(receipt), "--policy", str(net.policy_file),
                     env=env_for(net))
    assert fetched.returncode == 0, fetched.stderr
    assert receipt.read_bytes() == original and f"kept {receipt}" in fetched.stderr
    assert verify(net, doc).returncode == 0


def test_proof_latest_carries_the_first_checkpoint_and_proves_the_same_moment(
    net: RunningDevnet, tmp_path: Path
) -> None:
    doc = write(tmp_path / "pismo.pdf", f"pismo {tmp_path.name}\n")
    assert ledger("anchor", str(doc), env=env_for(net)).returncode == 0
    first = Path(f"{doc}.tlog-proof").read_bytes()
    other = write(tmp_path / "later.pdf", f"later {tmp_path.name}\n")
    assert ledger("anchor", str(other), env=env_for(net)).returncode == 0  # the tree grows
    digest = hashlib.sha256(doc.read_bytes()).hexdigest()
    latest = tmp_path / "latest.tlog-proof"
    got = ledger("proof", digest, "--latest", "--out", str(latest), env=env_for(net))
    assert got.returncode == 0, got.stderr
    assert latest.read_bytes() != first  # a later checkpoint, with the first as a bridge
    shown = ledger("verify", "--policy", str(net.policy_file), "--proof", str(latest), str(doc))
    assert shown.returncode == 0, shown.stderr
    assert "the receipt's checkpoint extends the first" in shown.stdout, shown.stdout
    # The same moment as the first receipt: `ledger proof --latest` onto it keeps it.
    kept = ledger("proof", digest, "--latest", "--policy", str(net.policy_file), "--out",
                  f"{doc}.tlog-proof", env=env_for(net))
    assert kept.returncode == 0, kept.stderr
    assert f"kept {doc}.tlog-proof" in kept.stderr
    assert Path(f"{doc}.tlog-proof").read_bytes() == first


def test_a_corrupt_or_foreign_receipt_is_reported_and_kept_unless_force(
    net: RunningDevnet, tmp_path: Path
) -> None:
    a = write(tmp_path / "a.txt", f"a {tmp_path.name}\n")
    b = write(tmp_path / "b.txt", f"b {tmp_path.name}\n")
    assert ledger("anchor", str(a), env=env_for(net)).returncode == 0
    corrupt = Path(f"{b}.tlog-proof")
    corrupt.write_text("c2sp.org/tlog-proof@v1\nindex x\n")
    result = ledger("anchor", str(b), env=env_for(net))
    assert result.returncode == 2
    assert corrupt.read_text() == "c2sp.org/tlog-proof@v1\nindex x\n"
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {corrupt} is kept as it is and {b} was not anchored: not a")
    assert "--force replaces it" in line
    # Another document's receipt: a well-formed receipt that does not verify for b (exit 1).
    foreign = Path(f"{a}.tlog-proof").read_text()
    corrupt.write_text(foreign)
    result = ledger("anchor", "--policy", str(net.policy_file), str(b), env=env_for(net))
    assert result.returncode == 1 and corrupt.read_text() == foreign
    assert "does not match leaf" in result.stderr
    forced = ledger("anchor", "--force", str(b), env=env_for(net))
    assert forced.returncode == 0, forced.stderr
    assert f"replaced {corrupt} (--force)" in forced.stdout
    assert verify(net, b).returncode == 0
    # --force never replaces a valid receipt.
    kept = corrupt.read_bytes()
    assert ledger("anchor", "--force", str(b), env=env_for(net)).returncode == 0
    assert corrupt.read_bytes() == kept


def test_a_directory_and_a_pattern_are_anchored_in_batches_and_an_interrupted_run_resumes(
    net: RunningDevnet, tmp_path: Path
) -> None:
    root = tmp_path / "scans"
    files = [write(root / f"box{i % 3}" / f"scan-{i:03d}.txt", f"scan {i} {tmp_path.name}\n")
             for i in range(240)]
    write(root / ".hidden", "not a document\n")
    # Interrupt a run with small batches once its first receipts are on disk.
    run = subprocess.Popen(
        [*LEDGER, "anchor", "--batch", "2", str(root)], env=env_for(net),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not any(Path(f"{f}.tlog-proof").exists() for f in files):
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert "Traceback" not in err
    done = {f: Path(f"{f}.tlog-proof").read_bytes()
            for f in files if Path(f"{f}.tlog-proof").exists()}
    assert run.returncode in (0, 130), err
    if run.returncode == 130:  # stopped part way: not every file has its receipt yet
        assert err.strip().splitlines()[-1] == "interrupted"
        assert 0 < len(done) < len(files)
    # The same files again, now through a quoted pattern: only the rest is sent.
    again = ledger("anchor", "--policy", str(net.policy_file), str(root / "**" / "*.txt"),
                   env=env_for(net))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == (
        f"anchored {len(files) - len(done)} files (receipts written as FILE.tlog-proof); "
        f"kept {len(done)} existing receipts"
    )
    assert "anchoring" in again.stderr or len(done) == len(files)  # the progress bar's label
    for f, receipt in done.items():
        assert Path(f"{f}.tlog-proof").read_bytes() == receipt
    assert not (root / ".hidden.tlog-proof").exists()
    for f in files[::37]:
        assert verify(net, f).returncode == 0
    # Every file is in the ledger exactly once: the leaf indices are distinct.
    indices = {Path(f"{f}.tlog-proof").read_text().split("\n")[1] for f in files}
    assert len(indices) == len(files)


def test_node_and_token_come_from_the_environment_and_are_documented(
    net: RunningDevnet, tmp_path: Path
) -> None:
    doc = write(tmp_path / "pismo.txt", f"pismo {tmp_path.name}\n")
    token = net.token_file.read_text().strip()
    by_value = ledger("anchor", str(doc), env=clean_env(LEDGER_NODE=net.url, LEDGER_TOKEN=token))
    assert by_value.returncode == 0, by_value.stderr
    digest = hashlib.sha256(doc.read_bytes()).hexdigest()
    proof = ledger("proof", digest, env=clean_env(LEDGER_NODE=net.urls[1]))
    assert proof.returncode == 0 and proof.stdout.startswith("c2sp.org/tlog-proof@v1\n")
    no_node = ledger("anchor", str(doc))
    assert no_node.returncode == 2
    assert no_node.stderr == "error: which node? give --node URL or set LEDGER_NODE=URL\n"
    no_token = ledger("anchor", "--node", net.url, str(write(tmp_path / "n.txt", "n\n")))
    assert no_token.returncode == 2
    assert "a token is needed: --token-file FILE, or $LEDGER_TOKEN_FILE, or $LEDGER_TOKEN" in (
        no_token.stderr
    )
    for command in (["anchor"], ["proof"], ["status"], ["validators", "propose"],
                    ["validators", "submit"], ["validators", "policy-chain"]):
        shown = ledger(*command, "--help", env={**os.environ, "COLUMNS": "200"}).stdout
        assert "LEDGER_NODE" in shown, command
    anchor_help = ledger("anchor", "--help", env={**os.environ, "COLUMNS": "200"}).stdout
    assert "LEDGER_TOKEN_FILE" in anchor_help and "$LEDGER_TOKEN" in anchor_help
    submit_help = ledger("validators", "submit", "--help").stdout
    assert "--token " not in submit_help and "LEDGER_ADMIN_TOKEN" in submit_help


def test_an_unreachable_node_says_so_with_its_url(tmp_path: Path) -> None:
    from ledger.devnet import free_base_port

    url = f"http://127.0.0.1:{free_base_port(1)}"
    doc = write(tmp_path / "x.txt", "x\n")
    for args in (["anchor", str(doc)], ["status"], ["proof", "00" * 32],
                 ["validators", "policy-chain", "--out", str(tmp_path / "c")]):
        result = ledger(*args, env=clean_env(LEDGER_NODE=url, LEDGER_TOKEN="t"))
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr == f"error: cannot reach the node at {url}: connection refused\n"
    assert not Path(f"{doc}.tlog-proof").exists()
