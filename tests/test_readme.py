"""The README opens with what the ledger proves and then exactly two set-up commands.

(Its shell blocks themselves run in tests/docs/test_doc_commands.py, against a devnet.)
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_opens_with_what_the_ledger_proves() -> None:
    headings = re.findall(r"^## (.+)$", README.read_text("utf-8"), re.M)
    assert headings[:2] == ["What the ledger proves", "Set up"]


def test_set_up_is_exactly_make_devnet_and_make_test() -> None:
    text = README.read_text("utf-8")
    section = text[text.index("## Set up") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    commands = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    assert [c for c in commands if c] == ["make devnet", "make test"]
    # The next runnable block starts from what those two created: the .venv they install into.
    after = section[block.end() :]
    assert re.search(r"```sh\n\. \.venv/bin/activate\n", after)
