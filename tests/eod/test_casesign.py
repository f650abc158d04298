"""Case signs (znak sprawy): generation, tolerant parsing of real variants, round trip."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.eod.casesign import format_case_sign, parse_case_sign
from ledger.errors import MalformedError


@pytest.mark.parametrize(
    ("text", "unit", "cls", "sub", "number", "year", "initials"),
    [
        ("OR.0012.1.2024", "OR", "0012", None, 1, 2024, None),
        ("KSr-V.6220.1.135.2023", "KSr-V", "6220", 1, 135, 2023, None),
        ("DTWI.7021.451.2024.ASO", "DTWI", "7021", None, 451, 2024, "ASO"),
        ("  GKŚ.6730.12.2022 ", "GKŚ", "6730", None, 12, 2022, None),
        ("WSO-II.3026.5.7.2024.jk", "WSO-II", "3026", 5, 7, 2024, "jk"),
    ],
)
def test_real_variants_parse_and_keep_the_original(
    text: str, unit: str, cls: str, sub: int | None, number: int, year: int, initials: str | None
) -> None:
    sign = parse_case_sign(text)
    assert (sign.unit, sign.jrwa_class, sign.subfolder, sign.number, sign.year) == (
        unit,
        cls,
        sub,
        number,
        year,
    )
    assert sign.initials == initials
    assert sign.original == text.strip()


def test_uniqueness_key_ignores_initials_but_not_subfolder() -> None:
    assert (
        parse_case_sign("DTWI.7021.451.2024.ASO").list_key
        == parse_case_sign("DTWI.7021.451.2024").list_key
    )
    assert (
        parse_case_sign("X.6220.1.135.2023").list_key
        != parse_case_sign("X.6220.2.135.2023").list_key
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "OR",
        "OR.0012.2024",
        "OR.12345.1.2024",
        "OR.0012.0.2024",
        "OR.0012.1.24",
        "-OR.0012.1.2024",
        "OR..0012.1.2024",
        "OR.0012.1.2024.ASO.X",
        "OR.0012.1.2.3.2024",
        "O R.0012.1.2024",
    ],
)
def test_garbage_is_refused(text: str) -> None:
    with pytest.raises(MalformedError):
        parse_case_sign(text)


units = st.from_regex(r"[A-Z][A-Za-z]{0,4}(-[IVX]{1,3})?", fullmatch=True)


@given(
    unit=units,
    cls=st.from_regex(r"[0-9]{1,4}", fullmatch=True),
    number=st.integers(1, 10**8),
    year=st.integers(1900, 2199),
)
def test_generated_signs_round_trip(unit: str, cls: str, number: int, year: int) -> None:
    sign = format_case_sign(unit=unit, jrwa_class=cls, number=number, year=year)
    assert sign.original == f"{unit}.{cls}.{number}.{year}"
    again = parse_case_sign(sign.original)
    assert again == sign
    assert (again.unit, again.jrwa_class, again.number, again.year) == (unit, cls, number, year)


@given(st.text(max_size=40))
def test_any_text_parses_or_raises_malformed(text: str) -> None:
    with contextlib.suppress(MalformedError):
        parse_case_sign(text)
