"""The office's acceptance paths (TOML) and JRWA dictionary: the shipped defaults parse and say
what the seed says; malformed files are refused with a reason."""

from __future__ import annotations

import pytest

from ledger.eod.jrwa import JrwaDictionary
from ledger.eod.model import EventType, Role
from ledger.eod.paths import PathBook, default_path_book
from ledger.errors import MalformedError, NotFoundError


def test_the_default_cost_path_is_the_seeds_five_steps() -> None:
    path = default_path_book().resolve("cost", "FK")
    assert path.cost
    assert [(s.event, s.role, s.unit) for s in path.steps] == [
        (EventType.SUBSTANTIVE_CHECK, Role.SUBSTANTIVE, None),
        (EventType.FORMAL_CHECK, Role.ACCOUNTS, "FK"),
        (EventType.ACCOUNT_CODING, Role.ACCOUNTS, "FK"),
        (EventType.COUNTERSIGNED, Role.CHIEF_ACCOUNTANT, "FK"),
        (EventType.APPROVED_FOR_PAYMENT, Role.APPROVE_PAYMENT, None),
    ]
    letter = default_path_book().resolve("letter", "OR")
    assert not letter.cost and [s.unit for s in letter.steps] == ["OR"]
    with pytest.raises(NotFoundError, match="no acceptance path for document kind 'decision'"):
        default_path_book().resolve("decision", "OR")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("path = 1", "holds \\[\\[path\\]\\] tables only"),
        (
            "[[path]]\nkind='x'\nunit='*'\nsteps=[{event='teleported', role='accept'}]",
            "unknown event",
        ),
        ("[[path]]\nkind='x'\nunit='*'\nsteps=[{event='signed', role='sign'}]", "not a cost step"),
        ("[[path]]\nkind='x'\nunit='*'\nsteps=[{event='accepted', role='boss'}]", "unknown role"),
        (
            "[[path]]\nkind='x'\nunit='*'\nsteps=[{event='accepted', role='accept'},"
            "{event='formal-check', role='accounts'}]",
            "mixes cost-document steps",
        ),
        (
            "[[path]]\nkind='x'\nunit='*'\nsteps=[{event='formal-check', role='accounts'},"
            "{event='formal-check', role='accounts'}]",
            "names a cost-document step twice",
        ),
        (
            "[[path]]\nkind='x'\nunit='*'\nsteps=[]\n[[path]]\nkind='x'\nunit='*'\nsteps=[]",
            "a second path",
        ),
        ("[[path", "not TOML"),
    ],
)
def test_bad_paths_files_are_refused(text: str, reason: str) -> None:
    with pytest.raises(MalformedError, match=reason):
        PathBook.from_toml(text)


def test_the_seed_jrwa_and_bad_dictionaries() -> None:
    seed = JrwaDictionary.default()
    assert seed.lookup("3026").category.text == "B5"
    assert seed.lookup("0012").other is not None
    with pytest.raises(NotFoundError, match="JRWA class '9999' is not in"):
        seed.lookup("9999")
    for text, reason in [
        ("name='x'\n[classes]\n'30261' = {title='t', category='B5'}", "one to four digits"),
        ("name='x'\n[classes]\n'3026' = {title='t', category='B0'}", "archival category 'B0'"),
        ("name='x'\n[classes]\n'3026' = {title='', category='B5'}", "title"),
        ("name='x'\n[classes]", "empty"),
    ]:
        with pytest.raises(MalformedError, match=reason):
            JrwaDictionary.from_toml(text)
