"""`ledger devnet up --tls`: a 4-node devnet with TLS on every peer link and on the API, as a
user runs it: anchor with --cacert, verify, status and proof with $LEDGER_CACERT, and without
the CA one clear line (never a traceback)."""

from __future__ import annotations

import hashlib
import ssl
import tomllib
from pathlib import Path

import pytest

from ledger.devnet import free_base_port

from .devnets import clean_env, ledger


@pytest.mark.slow
def test_a_tls_devnet_anchors_and_verifies_with_the_devnet_ca(tmp_path: Path) -> None:
    directory = tmp_path / "devnet"
    base = free_base_port(4)
    up = ledger("devnet", "up", "--detach", "--tls", "--dir", str(directory),
                "--base-port", str(base))
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        assert f"https://127.0.0.1:{base}" in up.stdout
        assert "CA certificate" in up.stdout and "tls/ca.crt" in up.stdout
        ca = directory / "tls" / "ca.crt"
        assert (directory / "tls" / "validator-1.key").stat().st_mode & 0o077 == 0
        for i in range(1, 5):  # every link is https and verified against the devnet CA
            config = tomllib.loads((directory / "nodes" / f"validator-{i}.toml").read_text())
            assert config["node"]["public_url"].startswith("https://")
            assert all(url.startswith("https://") for url in config["peers"].values())
            assert config["tls"]["ca_file"].endswith("tls/ca.crt")
        node = f"https://127.0.0.1:{base + 1}"
        doc = tmp_path / "umowa.pdf"
        doc.write_bytes(b"Umowa nr 7/2026\n")
        anchored = ledger("anchor", "--node", node, "--cacert", str(ca), "--token-file",
                          str(directory / "client-token"), str(doc))
        assert anchored.returncode == 0, anchored.stdout + anchored.stderr
        verified = ledger("verify", "--policy", str(directory / "trust-policy"), str(doc))
        assert verified.returncode == 0, verified.stdout + verified.stderr
        env = clean_env(LEDGER_CACERT=str(ca), LEDGER_NODE=f"https://127.0.0.1:{base + 3}")
        status = ledger("status", env=env)
        assert status.returncode == 0 and "ready:      yes" in status.stdout, status.stdout
        digest = hashlib.sha256(doc.read_bytes()).hexdigest()
        proof = ledger("proof", digest, env=env)
        assert proof.returncode == 0, proof.stdout + proof.stderr
        saved = Path(f"{doc}.tlog-proof").read_text()
        # The same leaf and tree head (another node's receipt carries its own log signature).
        assert proof.stdout.split("\n\n")[0] == saved.split("\n\n")[0]
        # Without the devnet CA the certificate is not trusted: one line that says what to do.
        untrusted = ledger("status", "--node", node)
        assert untrusted.returncode != 0
        assert untrusted.stdout == "" and untrusted.stderr.count("\n") == 1, untrusted.stderr
        assert "its TLS certificate is not trusted" in untrusted.stderr
        assert "--cacert" in untrusted.stderr
        # Plain http to a TLS node gets no answer.
        assert ssl.get_server_certificate(("127.0.0.1", base))  # it speaks TLS
        log = (directory / "devnet.log").read_text()
        assert "Traceback" not in log
    finally:
        down = ledger("devnet", "down", "--dir", str(directory))
        assert down.returncode == 0, down.stdout + down.stderr
