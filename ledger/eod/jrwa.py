"""The office's subject file list (jednolity rzeczowy wykaz akt, JRWA) as a dictionary.

Every case is opened in a class of the list, and the class fixes its archival category
(eod-domain.md, "The subject file list"). The dictionary is a TOML file (format in the header
of ``ledger/eod/data/jrwa-gmina.toml``, the seed shipped with the package); an office loads its
own at ``ledger eod init --jrwa FILE``. ``open-case`` is validated against it: the class must be
in the list, and the case's category is the class's unless the officer overrides it with a
reason, which the opening event records next to the dictionary's category.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from ledger.eod.model import Category, parse_category
from ledger.errors import MalformedError, NotFoundError

__all__ = ["JrwaClass", "JrwaDictionary", "default_jrwa_text"]

_CLASS: Final = re.compile(r"[0-9]{1,4}")
_MAX_CLASSES: Final = 10_000


@dataclass(frozen=True, kw_only=True)
class JrwaClass:
    """A class of the list: symbol, title, category (in the substantive unit) and the category
    in other units, if the list gives one."""

    symbol: str
    title: str
    category: Category
    other: Category | None = None

    def to_json(self) -> dict[str, Any]:
        return {"class": self.symbol, "title": self.title, "category": self.category.text}


@dataclass(frozen=True, kw_only=True)
class JrwaDictionary:
    name: str
    classes: Mapping[str, JrwaClass]

    @classmethod
    def from_toml(cls, text: str) -> JrwaDictionary:
        """Parse a JRWA file.

        Raises:
            MalformedError: not TOML, or a class without a valid symbol, title or category.
        """
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise MalformedError(f"the JRWA file is not TOML: {exc}") from None
        name = doc.get("name")
        table = doc.get("classes")
        if set(doc) != {"name", "classes"} or not isinstance(name, str) or not name:
            raise MalformedError("the JRWA file holds a 'name' and a [classes] table")
        if not isinstance(table, Mapping) or not table or len(table) > _MAX_CLASSES:
            raise MalformedError("the JRWA file's [classes] table is empty or too large")
        classes: dict[str, JrwaClass] = {}
        for symbol, entry in table.items():
            where = f"JRWA class {symbol!r}"
            if not _CLASS.fullmatch(symbol):
                raise MalformedError(f"{where}: a class symbol is one to four digits")
            if (
                not isinstance(entry, Mapping)
                or not {"title", "category"} <= set(entry)
                or not (set(entry) <= {"title", "category", "other"})
            ):
                raise MalformedError(f"{where} has a title, a category and optionally 'other'")
            title = entry["title"]
            if not isinstance(title, str) or not title:
                raise MalformedError(f"{where}: the title must be a non-empty string")
            try:
                category = parse_category(str(entry["category"]))
                other = parse_category(str(entry["other"])) if "other" in entry else None
            except MalformedError as exc:
                raise MalformedError(f"{where}: {exc.diagnostics()}") from None
            classes[symbol] = JrwaClass(symbol=symbol, title=title, category=category, other=other)
        return cls(name=name, classes=classes)

    @classmethod
    def default(cls) -> JrwaDictionary:
        return cls.from_toml(default_jrwa_text())

    def lookup(self, symbol: str) -> JrwaClass:
        """The class ``symbol``.

        Raises:
            NotFoundError: it is not in the dictionary.
        """
        found = self.classes.get(symbol)
        if found is None:
            raise NotFoundError(
                f"JRWA class {symbol!r} is not in the office's subject file list ({self.name}); "
                "see 'ledger eod jrwa'"
            )
        return found


def default_jrwa_text() -> str:
    """The seed dictionary shipped with the package (``data/jrwa-gmina.toml``)."""
    return (
        resources.files("ledger.eod").joinpath("data/jrwa-gmina.toml").read_text(encoding="utf-8")
    )
