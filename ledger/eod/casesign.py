"""Case signs (znak sprawy): generated as ``UNIT.CLASS.N.YEAR``, parsed tolerantly.

The office instruction (instrukcja kancelaryjna) builds a case sign from the organisational
unit's symbol, the JRWA class (symbol klasyfikacyjny z jednolitego rzeczowego wykazu akt), the
running number of the case in that class's yearly case list (spis spraw), and the four-digit
year: ``OR.0012.1.2024`` is case 1 of 2024 in class 0012 of unit OR. Real signs vary, and a
parser must accept what offices actually write:

* unit symbols with hyphens, digits and Roman numerals: ``KSr-V.6220.1.135.2023``;
* a sub-folder (teczka podrzędna) number between the class and the case number: in
  ``KSr-V.6220.1.135.2023`` sub-folder 1 of class 6220 holds case 135; the case list is then kept
  per sub-folder, so the sub-folder is part of the uniqueness key;
* the case officer's initials after the year: ``DTWI.7021.451.2024.ASO``.

We never re-spell a sign: :class:`CaseSign` keeps the ``original`` string for display and for
every record, and uses the parsed parts only for uniqueness, (unit, class, sub-folder, year,
number), and ordering. New signs are always generated in the plain form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from ledger.errors import MalformedError

__all__ = ["MAX_CASE_NUMBER", "CaseSign", "format_case_sign", "parse_case_sign"]

MAX_CASE_NUMBER: Final = 10**9
_MAX_SIGN_LENGTH: Final = 100

# A unit symbol: letters (Polish ones too), digits and inner hyphens, starting with a letter.
_UNIT: Final = re.compile(r"[^\W\d_](?:[^\W_]|-(?=[^\W_]))*")
# A JRWA class: one to four digits (the JRWA has four levels; 0012 keeps its leading zeros).
_CLASS: Final = re.compile(r"[0-9]{1,4}")
_NUMBER: Final = re.compile(r"[1-9][0-9]{0,8}")
_YEAR: Final = re.compile(r"(?:19|20|21)[0-9]{2}")
_INITIALS: Final = re.compile(r"[^\W\d_]{1,10}")


@dataclass(frozen=True, kw_only=True)
class CaseSign:
    """A parsed case sign. ``original`` is the sign exactly as written."""

    original: str
    unit: str
    jrwa_class: str
    subfolder: int | None
    number: int
    year: int
    initials: str | None = None

    @property
    def list_key(self) -> tuple[str, str, int, int, int]:
        """The uniqueness key: the case list (spis spraw) and the number in it.

        Sub-folder 0 stands for "no sub-folder" (real sub-folders are numbered from 1).
        """
        return (self.unit, self.jrwa_class, self.subfolder or 0, self.year, self.number)

    def __str__(self) -> str:
        return self.original


def format_case_sign(*, unit: str, jrwa_class: str, number: int, year: int) -> CaseSign:
    """Generate the plain sign ``UNIT.CLASS.N.YEAR``.

    Raises:
        MalformedError: a part is not valid (see :func:`parse_case_sign`).
    """
    return parse_case_sign(f"{unit}.{jrwa_class}.{number}.{year}")


def parse_case_sign(text: str) -> CaseSign:
    """Parse a case sign tolerantly (see the module docstring).

    Accepted shape: ``UNIT.CLASS[.SUBFOLDER].NUMBER.YEAR[.INITIALS]``, with surrounding
    whitespace ignored.

    Raises:
        MalformedError: the text does not have that shape, naming the part that is wrong.
    """
    original = text.strip()
    if not original or len(original) > _MAX_SIGN_LENGTH:
        raise MalformedError("a case sign must be 1 to 100 characters")
    parts = original.split(".")
    if len(parts) < 4 or len(parts) > 6:
        raise MalformedError(
            f"case sign {original!r} must look like UNIT.CLASS.NUMBER.YEAR (e.g. OR.0012.1.2024)"
        )
    initials: str | None = None
    if not _YEAR.fullmatch(parts[-1]):
        if not _INITIALS.fullmatch(parts[-1]):
            raise MalformedError(
                f"case sign {original!r}: {parts[-1]!r} is neither a year nor initials"
            )
        initials = parts[-1]
        parts = parts[:-1]
    if len(parts) not in (4, 5):
        raise MalformedError(f"case sign {original!r} has the wrong number of parts")
    unit, jrwa_class, *numbers, year = parts
    if not _UNIT.fullmatch(unit):
        raise MalformedError(f"case sign {original!r}: {unit!r} is not a unit symbol")
    if not _CLASS.fullmatch(jrwa_class):
        raise MalformedError(f"case sign {original!r}: {jrwa_class!r} is not a JRWA class")
    if not _YEAR.fullmatch(year):
        raise MalformedError(f"case sign {original!r}: {year!r} is not a four-digit year")
    for number in numbers:
        if not _NUMBER.fullmatch(number):
            raise MalformedError(f"case sign {original!r}: {number!r} is not a case number")
    subfolder = int(numbers[0]) if len(numbers) == 2 else None
    return CaseSign(
        original=original,
        unit=unit,
        jrwa_class=jrwa_class,
        subfolder=subfolder,
        number=int(numbers[-1]),
        year=int(year),
        initials=initials,
    )
