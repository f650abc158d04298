"""Acceptance paths (ścieżki akceptacji): the steps a case goes through, per document kind and
unit, read from a small TOML file (``ledger/eod/data/paths.toml`` is the default; its comments
document the format).

A path is chosen when a case is opened (:meth:`PathBook.resolve`, by the case's kind and the
unit of its sign) and written, resolved, into the signed opening event (``data.path``), so the
rules, the office and an auditor's verifier all judge the case by the same path, whatever the
office's file says later. A resolved step names its event, its role, and the unit its position
must belong to (``null``: any unit); ``"case"`` in the file becomes the case's unit symbol.

There are two kinds of path:

* a **cost path**: steps among :data:`COST_STEPS` (kontrola merytoryczna, kontrola formalna i
  rachunkowa, dekretacja księgowa, kontrasygnata, zatwierdzenie do wypłaty), each at most once,
  done on the invoice in the listed order, each by a different position; the case closes only
  after the last;
* an **acceptance path** of a draft: ``accepted`` steps, one per level of acceptance, each by a
  different position (and not by the one who submitted the draft), before its signature.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from ledger.eod.model import EventType, Role
from ledger.errors import MalformedError, NotFoundError

__all__ = [
    "ANY_UNIT",
    "CASE_UNIT",
    "COST_STEPS",
    "MAX_STEPS",
    "AcceptancePath",
    "PathBook",
    "PathStep",
    "default_path_book",
    "default_paths_text",
    "parse_path_json",
    "path_json",
]

#: The steps of a cost document, in the order of the seed's default path.
COST_STEPS: Final = (
    EventType.SUBSTANTIVE_CHECK,
    EventType.FORMAL_CHECK,
    EventType.ACCOUNT_CODING,
    EventType.COUNTERSIGNED,
    EventType.APPROVED_FOR_PAYMENT,
)
ANY_UNIT: Final = "*"
CASE_UNIT: Final = "case"
MAX_STEPS: Final = 9
_MAX_TEXT: Final = 64


@dataclass(frozen=True, kw_only=True)
class PathStep:
    """One step: its event, the role it needs and the unit (``None``: any unit)."""

    event: EventType
    role: Role
    unit: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"event": self.event.value, "role": self.role.value, "unit": self.unit}


@dataclass(frozen=True, kw_only=True)
class AcceptancePath:
    """A path for cases of ``kind`` in ``unit`` (``"*"``: any unit)."""

    kind: str
    unit: str
    steps: tuple[PathStep, ...]

    @property
    def cost(self) -> bool:
        """A cost path (its steps are cost-document steps) rather than draft acceptance."""
        return bool(self.steps) and self.steps[0].event in COST_STEPS


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise MalformedError(f"{what} must be a non-empty string (at most {_MAX_TEXT})")
    return value


def _steps(raw: object, where: str, *, resolved: bool) -> tuple[PathStep, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_STEPS:
        raise MalformedError(f"{where}: steps must be a list of at most {MAX_STEPS} steps")
    steps: list[PathStep] = []
    for i, item in enumerate(raw):
        what = f"{where}, step {i + 1}"
        if not isinstance(item, Mapping):
            raise MalformedError(f"{what} must be a table {{event, role, unit}}")
        allowed = {"event", "role", "unit"}
        if (resolved and set(item) != allowed) or (not resolved and not set(item) <= allowed):
            raise MalformedError(f"{what} has exactly the fields event, role and unit")
        try:
            event = EventType(str(item.get("event")))
        except ValueError:
            raise MalformedError(f"{what}: unknown event {item.get('event')!r}") from None
        if event not in COST_STEPS and event is not EventType.ACCEPTED:
            raise MalformedError(f"{what}: {event.value!r} is not a cost step nor 'accepted'")
        try:
            role = Role(str(item.get("role")))
        except ValueError:
            raise MalformedError(f"{what}: unknown role {item.get('role')!r}") from None
        unit = item.get("unit")
        if unit is not None:
            unit = _text(unit, f"{what}: unit")
        steps.append(PathStep(event=event, role=role, unit=unit))
    kinds = {s.event in COST_STEPS for s in steps}
    if len(kinds) > 1:
        raise MalformedError(f"{where} mixes cost-document steps with draft acceptance")
    cost_events = [s.event for s in steps if s.event in COST_STEPS]
    if len(set(cost_events)) != len(cost_events):
        raise MalformedError(f"{where} names a cost-document step twice")
    return tuple(steps)


def parse_path_json(raw: object) -> tuple[PathStep, ...]:
    """A resolved path as the opening event carries it (``data.path``).

    Raises:
        MalformedError: not a list of ``{event, role, unit}`` steps as above.
    """
    return _steps(raw, "the case's acceptance path", resolved=True)


@dataclass(frozen=True, kw_only=True)
class PathBook:
    """The office's acceptance paths (see the module docstring)."""

    paths: tuple[AcceptancePath, ...]

    @classmethod
    def from_toml(cls, text: str) -> PathBook:
        """Parse a paths file.

        Raises:
            MalformedError: not TOML, or not the format of ``data/paths.toml``.
        """
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise MalformedError(f"the acceptance paths file is not TOML: {exc}") from None
        if set(doc) != {"path"} or not isinstance(doc["path"], list):
            raise MalformedError("the acceptance paths file holds [[path]] tables only")
        paths: list[AcceptancePath] = []
        seen: set[tuple[str, str]] = set()
        for i, item in enumerate(doc["path"]):
            where = f"path {i + 1}"
            if not isinstance(item, Mapping) or set(item) != {"kind", "unit", "steps"}:
                raise MalformedError(f"{where} must have exactly kind, unit and steps")
            kind = _text(item["kind"], f"{where}: kind")
            unit = _text(item["unit"], f"{where}: unit")
            if (kind, unit) in seen:
                raise MalformedError(f"{where}: a second path for kind {kind!r}, unit {unit!r}")
            seen.add((kind, unit))
            steps = _steps(item["steps"], f"{where} ({kind}, {unit})", resolved=False)
            paths.append(AcceptancePath(kind=kind, unit=unit, steps=steps))
        if not paths:
            raise MalformedError("the acceptance paths file defines no path")
        return cls(paths=tuple(paths))

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted({p.kind for p in self.paths}))

    def resolve(self, kind: str, unit: str) -> AcceptancePath:
        """The path for a case of ``kind`` opened in ``unit``, with ``"case"`` units resolved.

        Raises:
            NotFoundError: no path for the kind in that unit, nor for every unit.
        """
        chosen = next((p for p in self.paths if p.kind == kind and p.unit == unit), None)
        if chosen is None:
            chosen = next((p for p in self.paths if p.kind == kind and p.unit == ANY_UNIT), None)
        if chosen is None:
            known = ", ".join(self.kinds)
            raise NotFoundError(
                f"no acceptance path for document kind {kind!r} in unit {unit!r} "
                f"(the office's paths know: {known})"
            )
        steps = tuple(
            PathStep(event=s.event, role=s.role, unit=unit if s.unit == CASE_UNIT else s.unit)
            for s in chosen.steps
        )
        return AcceptancePath(kind=chosen.kind, unit=unit, steps=steps)


def default_paths_text() -> str:
    """The text of the default paths file shipped with the package."""
    return resources.files("ledger.eod").joinpath("data/paths.toml").read_text(encoding="utf-8")


def default_path_book() -> PathBook:
    """The default acceptance paths (``ledger/eod/data/paths.toml``)."""
    return PathBook.from_toml(default_paths_text())


def path_json(steps: Sequence[PathStep]) -> list[dict[str, Any]]:
    """The resolved steps as the opening event carries them."""
    return [s.to_json() for s in steps]
