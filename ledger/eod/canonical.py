"""Canonical JSON: the one stable byte encoding of EOD records (events, certificates, receipts).

Every EOD record is signed and hashed over its canonical encoding, so two honest programs must
produce the same bytes for the same record, and a verifier must refuse any other spelling of it
(otherwise one record would have many hashes, and the chain of previous-event hashes could be
forked without changing any field). The rules, close to RFC 8785 (JCS) restricted to the values
we use:

* values are objects, arrays, strings, integers, ``true``, ``false`` and ``null``; **no
  floating-point numbers** (their textual forms are where JSON encoders disagree);
* object keys are sorted by code point, no duplicate keys;
* no insignificant whitespace (separators ``,`` and ``:``);
* strings are UTF-8, non-ASCII characters written as themselves (``ensure_ascii=False``), so
  Polish letters in a title are stored as they are written; control characters escaped as JSON
  requires;
* integers are bounded to the signed 64-bit range, which every JSON reader represents exactly.

:func:`decode` parses untrusted bytes and accepts them only if re-encoding gives the same bytes:
non-canonical input raises :class:`~ledger.errors.MalformedError`, never a ``json`` exception.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

from ledger.errors import MalformedError

__all__ = ["MAX_RECORD_SIZE", "decode", "encode", "loads", "sha256"]

#: An event or certificate is a few hundred bytes; anything far larger is not one.
MAX_RECORD_SIZE: Final = 64 * 1024
_INT_MIN: Final = -(1 << 63)
_INT_MAX: Final = (1 << 63) - 1


def _check(value: object, where: str) -> None:
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise MalformedError(f"{where}: integer out of the 64-bit range")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise MalformedError(f"{where}: object keys must be strings")
            _check(item, f"{where}.{key}")
        return
    raise MalformedError(f"{where}: {type(value).__name__} has no canonical JSON form")


def encode(value: Mapping[str, Any]) -> bytes:
    """The canonical UTF-8 bytes of a JSON object (see the module docstring).

    Raises:
        MalformedError: a float, a non-string key, an out-of-range integer or another type.
    """
    _check(value, "record")
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise MalformedError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_float(text: str) -> Any:
    raise MalformedError("floating-point numbers are not allowed")


def _no_constant(text: str) -> Any:
    raise MalformedError(f"{text} is not allowed")


def decode(data: bytes, *, what: str = "record") -> dict[str, Any]:
    """Parse canonical JSON bytes of an object; refuse anything that is not canonical.

    Raises:
        MalformedError: oversize, not UTF-8, not JSON, not an object, duplicate keys, floats,
            or not in canonical form.
    """
    if len(data) > MAX_RECORD_SIZE:
        raise MalformedError(f"{what} is larger than {MAX_RECORD_SIZE} bytes")
    value = loads(data, what=what)
    if encode(value) != data:
        raise MalformedError(f"{what} is not in canonical JSON form")
    return value


def loads(data: bytes | str, *, what: str = "record") -> dict[str, Any]:
    """Parse JSON text of an object strictly (no duplicates, no floats, no NaN), not
    necessarily canonical: for files people may reformat, such as a trail bundle.

    Raises:
        MalformedError: not UTF-8, not JSON, not an object, duplicate keys or floats.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_float=_no_float,
            parse_constant=_no_constant,
        )
    except UnicodeDecodeError:
        raise MalformedError(f"{what} is not valid UTF-8") from None
    except (ValueError, RecursionError) as exc:
        # MalformedError raised inside a hook arrives here unchanged (it is not a ValueError).
        raise MalformedError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise MalformedError(f"{what} is not a JSON object")
    _check(value, what)
    return value


def sha256(data: bytes) -> bytes:
    """SHA-256 of ``data`` (the digest anchored for a record is the hash of its bytes)."""
    return hashlib.sha256(data).digest()
