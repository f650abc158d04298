"""The citizen's status lookup (sprawdzanie statusu sprawy): by register number and access code.

The official receipt of a registration carries its register number (RPW/12/2026) and a random
access code (100 bits, :func:`ledger.eod.office.new_access_code`). Whoever holds both may see
the stage the matter has reached (:data:`ledger.eod.index.STAGES`), the unit it is assigned
to, and the proven date of each stage reached (its event's ledger time bound, in the office's
time zone), and nothing else: no names, no positions, no document, no case content.

No enumeration: the store keeps only a digest of each code (:func:`access_digest`); a lookup
computes the digest of the code it is given and compares it, in constant time, with the
stored one or, for an unknown register number, with a fixed digest that no code has. Both
paths do the same work (one indexed read, one SHA-256, one comparison) and raise the same
:class:`NoSuchMatter` with the same message; the service turns it into the same answer, byte
for byte. :class:`RateLimiter` bounds how many lookups one client may make (a token bucket).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any, Final

from ledger.eod.calendar import OfficeCalendar
from ledger.eod.index import STAGES
from ledger.eod.office import access_digest
from ledger.eod.store import OfficeStore
from ledger.errors import NotFoundError

__all__ = ["NOT_FOUND", "NoSuchMatter", "RateLimiter", "lookup"]

#: The one answer to a wrong code, an unknown number and a malformed request alike.
NOT_FOUND: Final = "no matter with this register number and access code"
_MAX_INPUT: Final = 64
#: What an unknown register number is compared with: the digest of no code.
_NO_CODE: Final = bytes(32)


class NoSuchMatter(NotFoundError):
    """Wrong code, unknown number, or malformed input: never said which."""

    code = "not_found"


def lookup(
    store: OfficeStore, calendar: OfficeCalendar, register: str, code: str
) -> dict[str, Any]:
    """The public status of the matter registered as ``register``, if ``code`` is its access
    code::

        {"register": "RPW/12/2026", "stage": "assigned", "unit": "OR",
         "milestones": [{"stage": "registered", "date": "2026-03-02",
                         "no_later_than": "2026-03-02 10:00:09 +01:00"}, ...]}

    Raises:
        NoSuchMatter: anything else (see the module docstring).
    """
    register = register.strip() if isinstance(register, str) else ""
    code = code if isinstance(code, str) else ""
    if len(register) > _MAX_INPUT or len(code) > _MAX_INPUT:
        register, code = "", ""
    rows = store.query("SELECT chain, code_hash FROM access WHERE register = ?", register)
    expected = bytes(rows[0][1]) if rows else _NO_CODE
    given = access_digest(store.office, register, code)
    if not hmac.compare_digest(expected, given) or not rows:
        raise NoSuchMatter(NOT_FOUND)
    chain = str(rows[0][0])
    matter = store.query("SELECT status, unit FROM matters WHERE chain = ?", chain)
    stones = store.query("SELECT stage, bound FROM milestones WHERE chain = ?", chain)
    order = {stage: i for i, stage in enumerate(STAGES)}
    milestones = [
        {
            "stage": str(stage),
            "date": calendar.date_of(int(bound)).isoformat(),
            "no_later_than": calendar.format_time(int(bound)),
        }
        for stage, bound in sorted(stones, key=lambda r: (int(r[1]), order.get(str(r[0]), 0)))
    ]
    stage = str(matter[0][0]) if matter else "registered"
    unit = matter[0][1] if matter and stage != "registered" else None
    return {"register": register, "stage": stage, "unit": unit, "milestones": milestones}


@dataclass
class RateLimiter:
    """A token bucket per client: ``burst`` lookups at once, refilled at ``rate`` per second.
    Times come from the caller (``now``, seconds), so tests need no sleeping. At most
    ``clients`` buckets are kept; when full, the oldest are dropped (they were idle)."""

    rate: float = 0.2
    burst: float = 10.0
    clients: int = 100_000
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def allow(self, client: str, now: float) -> bool:
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.clients:
            del self._buckets[next(iter(self._buckets))]
        return allowed
