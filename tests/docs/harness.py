"""Run the shell examples of a Markdown document as written, as Rust runs its doc examples.

The convention (README.md and docs/*.md keep to it; tests/docs/test_doc_commands.py runs it):

* Every fenced block whose info string starts with ``sh`` runs, in the order of the document,
  in one ``bash`` process per document (so a variable set in one block is there in the next),
  with ``set -e -o pipefail``: the first command that fails stops the document and fails the
  test, naming the document, the block (its number and line) and the command.
* The line ``<!-- not-run: reason -->`` immediately before a fence marks the block as an
  illustration: it is skipped (the reason is for the reader of the Markdown source).
* The line ``<!-- file: NAME -->`` immediately before a fence (of any language) writes the
  block's text to the file NAME in the working directory instead of running it, for a script
  or program that a later block runs.
* Each document starts in a fresh temporary directory holding ``devnet/`` (a running 4-node
  devnet with ``devnet/client-token`` and ``devnet/trust-policy``) and ``.venv`` (the
  environment running the tests, so ``. .venv/bin/activate`` works as in a checkout) and
  ``bench/`` (the checkout's benchmark scripts), with that
  environment's ``bin`` first on PATH and no ``LEDGER_*`` variable set. The ports 7100-7103 in
  the text are rewritten to the devnet's actual ports.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Block", "DocRun", "parse_blocks", "rewrite_ports", "run_document"]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
#: The repository checkout the tests run from.
_CHECKOUT = Path(__file__).resolve().parents[2]
_NOT_RUN = re.compile(r"^\s*<!--\s*not-run:\s*(?P<reason>.+?)\s*-->\s*$")
_FILE = re.compile(r"^\s*<!--\s*file:\s*(?P<name>[A-Za-z0-9._/-]+)\s*-->\s*$")
_DEVNET_PORT = re.compile(r"(?<![0-9])710([0-3])(?![0-9])")
_EOF_MARK = "__LEDGER_DOC_EOF__"


@dataclass(frozen=True)
class Block:
    """One fenced block: where it starts (1-based line of its first content line), its
    language, its text (the fence's indentation removed) and how the harness treats it."""

    number: int
    line: int
    language: str
    text: str
    not_run: str | None = None
    file: str | None = None

    @property
    def runs(self) -> bool:
        return self.language == "sh" and self.not_run is None and self.file is None


def parse_blocks(markdown: str) -> list[Block]:
    """Every fenced code block of a Markdown text, numbered from 1 in document order."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, fence = match.group("indent"), match.group("fence")
        info = match.group("info").strip()
        before = lines[i - 1] if i > 0 else ""
        body: list[str] = []
        j = i + 1
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        while j < len(lines) and not closing.match(lines[j]):
            line = lines[j]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            j += 1
        not_run = _NOT_RUN.match(before)
        as_file = _FILE.match(before)
        blocks.append(
            Block(
                number=len(blocks) + 1,
                line=i + 2,
                language=info.split()[0].lower() if info else "",
                text="\n".join(body) + ("\n" if body else ""),
                not_run=not_run.group("reason") if not_run else None,
                file=as_file.group("name") if as_file else None,
            )
        )
        i = j + 1
    return blocks


def rewrite_ports(text: str, base_port: int) -> str:
    """The devnet's documented ports 7100-7103 replaced by ``base_port`` .. ``base_port + 3``."""
    return _DEVNET_PORT.sub(lambda m: str(base_port + int(m.group(1))), text)


@dataclass
class DocRun:
    """The outcome of one document: ``failure`` is None when every block ran."""

    name: str
    blocks_run: int
    output: str
    failure: str | None = None
    ran: list[int] = field(default_factory=list)


def _script(name: str, blocks: Sequence[Block], base_port: int) -> tuple[str, dict[int, Block]]:
    """The bash script of a document, and the block each of its lines comes from."""
    out: list[str] = [
        "set -eE -o pipefail",
        # On the first failing command: which block, which command, which status. Then stop.
        "trap 'echo \"__DOC_FAILED__ ${__doc_block:-0} $? ${BASH_COMMAND}\" >&2' ERR",
    ]
    owner: dict[int, Block] = {}
    for block in blocks:
        text = rewrite_ports(block.text, base_port)
        if block.file is not None:
            out.append(f"cat > {shlex.quote(block.file)} <<'{_EOF_MARK}'")
            out += text.rstrip("\n").split("\n")
            out.append(_EOF_MARK)
            continue
        if not block.runs:
            continue
        out.append(f"__doc_block={block.number}; echo '__DOC_BLOCK__ {block.number}' >&2")
        for line in text.rstrip("\n").split("\n"):
            out.append(line)
            owner[len(out)] = block
    out.append("echo '__DOC_DONE__' >&2")
    return "\n".join(out) + "\n", owner


def run_document(
    name: str,
    markdown: str,
    *,
    workdir: Path,
    devnet: Path,
    base_port: int,
    venv: Path | None = None,
    timeout: float = 300,
    extra_env: Mapping[str, str] | None = None,
) -> DocRun:
    """Run the document's blocks (see the module docstring) in ``workdir``, a fresh directory,
    against the running devnet in ``devnet`` whose first node listens on ``base_port``."""
    blocks = parse_blocks(markdown)
    script, _ = _script(name, blocks, base_port)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "devnet").symlink_to(devnet, target_is_directory=True)
    venv = venv if venv is not None else Path(sys.prefix)
    if (venv / "bin" / "activate").exists():
        (workdir / ".venv").symlink_to(venv, target_is_directory=True)
    for folder in ("bench",):  # the checkout's scripts a doc runs, as in a checkout
        if (_CHECKOUT / folder).is_dir():
            (workdir / folder).symlink_to(_CHECKOUT / folder, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra_env or {})
    script_path = workdir.parent / f"{workdir.name}.sh"
    script_path.write_text(script, encoding="utf-8")
    try:
        done = subprocess.run(
            ["bash", str(script_path)], cwd=workdir, env=env, capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )
        output, status = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        partial = (exc.stdout or b"") + (exc.stderr or b"")
        text = partial.decode(errors="replace") if isinstance(partial, bytes) else str(partial)
        output, status = text, -1
    ran = [int(n) for n in re.findall(r"^__DOC_BLOCK__ (\d+)$", output, re.M)]
    result = DocRun(name=name, blocks_run=len(ran), output=output, ran=ran)
    if status == 0 and "__DOC_DONE__" in output:
        return result
    by_number = {b.number: b for b in blocks}
    failed = re.findall(r"^__DOC_FAILED__ (\d+) (-?\d+) (.*)$", output, re.M)
    tail = "\n".join(
        line for line in output.splitlines()[-40:] if not line.startswith("__DOC_")
    )
    if status == -1:
        where = f"block {ran[-1]}" if ran else "before the first block"
        result.failure = f"{name}: timed out after {timeout:g} s in {where}\n{tail}"
    elif failed:
        number, code, command = failed[0]
        block = by_number.get(int(number))
        where = f"block {number} (line {block.line})" if block else "the set-up"
        result.failure = (
            f"{name}: {where}: command failed with exit status {code}: {command}\n{tail}"
        )
    else:
        result.failure = f"{name}: the script stopped with exit status {status}\n{tail}"
    return result
