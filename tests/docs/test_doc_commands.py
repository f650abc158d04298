"""Every shell block of README.md and docs/*.md runs as written, against a real devnet.

The convention is in tests/docs/harness.py: ```sh blocks run in order, one bash per document,
in a fresh directory holding `devnet/`; `<!-- not-run: reason -->` before a fence skips it;
`<!-- file: NAME -->` writes the block to NAME. One devnet serves the whole session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli.devnets import RunningDevnet, detached_devnet
from docs.harness import DocRun, parse_blocks, rewrite_ports, run_document

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])


def _name(path: Path) -> str:
    return str(path.relative_to(REPO))


RUNNABLE = [d for d in DOCUMENTS if any(b.runs for b in parse_blocks(d.read_text("utf-8")))]


@pytest.fixture(scope="session")
def docs_devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDevnet]:
    with detached_devnet(tmp_path_factory.mktemp("docs-devnet")) as net:
        yield net


def _run(name: str, text: str, net: RunningDevnet, tmp_path: Path) -> DocRun:
    return run_document(
        name, text, workdir=tmp_path / "work", devnet=net.directory, base_port=net.base_port
    )


@pytest.mark.slow
@pytest.mark.xdist_group("docs-devnet")
@pytest.mark.timeout(600)
@pytest.mark.parametrize("document", RUNNABLE, ids=_name)
def test_every_shell_block_runs_as_written(
    document: Path, docs_devnet: RunningDevnet, tmp_path: Path
) -> None:
    text = document.read_text("utf-8")
    result = _run(_name(document), text, docs_devnet, tmp_path)
    assert result.failure is None, result.failure
    assert result.ran == [b.number for b in parse_blocks(text) if b.runs]


def test_the_documents_show_enough_runnable_blocks() -> None:
    # Guards against a parser (or a wave of not-run markers) that makes the test above vacuous.
    counts = {_name(d): sum(b.runs for b in parse_blocks(d.read_text("utf-8"))) for d in DOCUMENTS}
    assert sum(counts.values()) >= 25, counts
    for name in ("README.md", "docs/api.md", "docs/auditors.md", "docs/operators.md"):
        assert counts[name] >= 3, counts


@pytest.mark.slow
@pytest.mark.xdist_group("docs-devnet")
@pytest.mark.timeout(600)
def test_a_planted_broken_command_fails_with_the_document_block_and_command(
    docs_devnet: RunningDevnet, tmp_path: Path
) -> None:
    text = (REPO / "README.md").read_text("utf-8")
    blocks = [b for b in parse_blocks(text) if b.runs]
    assert len(blocks) >= 3
    target = blocks[1]
    lines = text.splitlines(keepends=True)
    broken = "ledger anchor --no-such-option contract.pdf\n"
    # Plant the broken command as the first line of the second runnable block.
    planted = "".join(lines[: target.line - 1]) + broken + "".join(lines[target.line - 1 :])
    result = _run("README.md (planted)", planted, docs_devnet, tmp_path)
    assert result.failure is not None
    assert result.failure.startswith(
        f"README.md (planted): block {target.number} (line {target.line}): command failed with "
        "exit status 2: ledger anchor --no-such-option contract.pdf"
    ), result.failure
    assert result.ran == [blocks[0].number, target.number]  # stopped there: nothing after ran
    # And the copy without the plant passes, so the failure is the planted line's.
    assert _run("README.md", text, docs_devnet, tmp_path / "clean").failure is None


@pytest.mark.slow
@pytest.mark.xdist_group("docs-devnet")
@pytest.mark.timeout(300)
def test_markers_ports_and_shared_state_between_blocks(
    docs_devnet: RunningDevnet, tmp_path: Path
) -> None:
    doc = (
        "# Example\n\n```sh\nexport GREETING=dzien-dobry\necho one > one.txt\n```\n\n"
        "<!-- not-run: shows a failure -->\n```sh\nfalse\n```\n\n"
        "<!-- file: check.sh -->\n```sh\necho \"checked $1\"\nexit 3\n```\n\n"
        "```text\nledger frobnicate   # output, not run\n```\n\n"
        "- a list item:\n\n  ```sh\n  test \"$GREETING\" = dzien-dobry\n  ```\n\n"
        "```sh\ntest \"$(cat one.txt)\" = one\nsh check.sh x || test $? = 3\n"
        "test -s devnet/client-token && test -s devnet/trust-policy\n"
        "ledger status --node http://127.0.0.1:7101 | grep -q 'ready:      yes'\n"
        "curl -sf http://127.0.0.1:7100/readyz > /dev/null\n```\n"
    )
    result = _run("example.md", doc, docs_devnet, tmp_path)
    assert result.failure is None, result.failure
    assert result.ran == [1, 5, 6]
    assert (tmp_path / "work" / "check.sh").read_text() == 'echo "checked $1"\nexit 3\n'


def test_parse_blocks_reads_languages_markers_and_indentation() -> None:
    doc = (
        "text\n<!-- not-run: needs a real HSM -->\n```sh\nledger x\n```\n"
        "<!-- not-run: not immediately before -->\n\n```sh\nledger y\n```\n"
        "  ```sh\n  ledger z \\\n    --flag\n  ```\n~~~python\nprint(1)\n~~~\n```\nplain\n```\n"
    )
    blocks = parse_blocks(doc)
    assert [(b.language, b.runs, b.line) for b in blocks] == [
        ("sh", False, 4), ("sh", True, 9), ("sh", True, 12), ("python", False, 16),
        ("", False, 19),
    ]
    assert blocks[0].not_run == "needs a real HSM"
    assert blocks[2].text == "ledger z \\\n  --flag\n"


def test_rewrite_ports_touches_only_the_devnet_ports() -> None:
    text = "http://127.0.0.1:7100 :7103 ports 7100-7103, 17100, 71000, 7104"
    assert rewrite_ports(text, 40000) == (
        "http://127.0.0.1:40000 :40003 ports 40000-40003, 17100, 71000, 7104"
    )
