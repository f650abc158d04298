"""One strict parser for each kind of untrusted field: decimal numbers, hex strings, flags,
base64 and JSON objects, as they reach the node in paths, query strings and bodies.

Every route of the node (:mod:`ledger.node.api`, :mod:`ledger.node.admin_api`, the witness
endpoint, the peer endpoint and the answers peers send back) reads its fields through these
functions and nothing else, so each field has exactly one spelling that is accepted, and
anything else raises :class:`InputError` (a :class:`~ledger.errors.MalformedError`: the HTTP
layer answers 400 with its ``code``), never a ``ValueError`` from deep inside ``int()``.

Why not the obvious built-ins:

* ``str.isdigit()`` is true for ``²``, ``①`` and Arabic-Indic ``١``; ``int()`` then either fails
  (``²``, ``①``) or reads a number the sender never wrote in ASCII (``١`` is 1). ``int()`` also
  takes ``+7``, `` 7 ``, ``7_0``. Only ``0|[1-9][0-9]*`` over ASCII is a number here, with a
  length bound checked before the conversion (a 5,000-digit string costs nothing).
* ``bytes.fromhex`` skips spaces; a hex field here is exactly ``2 * size`` ASCII hex digits, in
  either case.
* ``json.loads`` keeps the last of two equal keys, so ``{"digests":[],"digests":[X]}`` would
  mean whatever the reader's library does with duplicates; it also takes ``NaN`` and
  ``Infinity``, and nesting that ends in a ``RecursionError``. :func:`parse_json_object`
  refuses all three.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Final

from ledger.errors import MalformedError

__all__ = [
    "MAX_DECIMAL_DIGITS",
    "MAX_JSON_DEPTH",
    "InputError",
    "parse_base64",
    "parse_decimal",
    "parse_flag",
    "parse_hex",
    "parse_json_object",
    "single_query_value",
]

#: Decimal fields are signed 64-bit at most (19 digits); longer strings are refused before
#: ``int()`` sees them.
MAX_DECIMAL_DIGITS: Final = 20
#: Arrays and objects nested deeper than this are refused (no body of the API needs more than 3).
MAX_JSON_DEPTH: Final = 32

_DECIMAL: Final = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_HEX: Final = re.compile(r"[0-9a-fA-F]*", re.ASCII)
_BASE64: Final = re.compile(r"[A-Za-z0-9+/]*={0,2}", re.ASCII)
_FLAGS: Final = {"true": True, "1": True, "false": False, "0": False}


class InputError(MalformedError):
    """An untrusted field that does not parse; ``code`` names the kind (``invalid_parameter``,
    ``invalid_hex``, ``invalid_length``, ``malformed_json``, ``invalid_request``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _shown(text: str) -> str:
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


def parse_decimal(text: str, *, what: str, low: int = 0, high: int = 2**63 - 1,
                  code: str = "invalid_parameter") -> int:
    """An ASCII decimal number without sign, spaces or leading zeroes, ``low <= n <= high``.

    Raises:
        InputError: any other spelling, or out of range.
    """
    if len(text) > MAX_DECIMAL_DIGITS or not _DECIMAL.fullmatch(text):
        raise InputError(code, f"{what} must be a decimal number (ASCII digits, no leading "
                         f"zeroes), got {_shown(text)}")
    value = int(text)
    if not low <= value <= high:
        raise InputError(code, f"{what} must be between {low} and {high}, got {value}")
    return value


def parse_hex(text: object, *, what: str, size: int) -> bytes:
    """Exactly ``size`` bytes given as ``2 * size`` ASCII hex digits (either case).

    Raises:
        InputError: ``invalid_request`` for a non-string, ``invalid_hex`` for other
            characters, ``invalid_length`` for another length.
    """
    if not isinstance(text, str):
        raise InputError("invalid_request", f"{what} must be a string of {2 * size} hex digits")
    if len(text) > 4 * size + 8 or not _HEX.fullmatch(text) or len(text) % 2:
        raise InputError("invalid_hex", f"{what} {_shown(text)} is not hexadecimal")
    if len(text) != 2 * size:
        raise InputError("invalid_length",
                         f"{what} must be {2 * size} hex digits, got {len(text)}")
    return bytes.fromhex(text)


def parse_base64(text: object, *, what: str, max_bytes: int) -> bytes:
    """Standard base64 with padding, decoding to at most ``max_bytes``.

    Raises:
        InputError: not a string, not canonical base64, or too long.
    """
    if not isinstance(text, str):
        raise InputError("invalid_request", f"{what} must be a base64 string")
    if len(text) > 4 * (max_bytes // 3 + 1):
        raise InputError("invalid_request", f"{what} is longer than {max_bytes} bytes")
    if len(text) % 4 or not _BASE64.fullmatch(text):
        raise InputError("invalid_request", f"{what} is not base64")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("invalid_request", f"{what} is not base64") from None


def parse_flag(value: str | None, *, what: str) -> bool:
    """A boolean query flag: absent, ``false`` or ``0`` is false; ``true`` or ``1`` is true.

    Raises:
        InputError: any other value.
    """
    if value is None:
        return False
    try:
        return _FLAGS[value]
    except KeyError:
        raise InputError("invalid_parameter", f"{what} must be true or false, got "
                         f"{_shown(value)}") from None


def single_query_value(values: list[str], *, what: str) -> str | None:
    """The one value of a query parameter (``None`` if absent).

    Raises:
        InputError: the parameter is given more than once (``?wait=true&wait=false`` has no
            meaning we could pick without guessing).
    """
    if not values:
        return None
    if len(values) > 1:
        raise InputError("invalid_parameter", f"{what} is given {len(values)} times")
    return values[0]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InputError("malformed_json", f"the JSON object has the key {_shown(key)} "
                             "twice")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise InputError("malformed_json", f"{name} is not a JSON number")


def _depth(value: Any, limit: int) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise InputError("malformed_json", f"JSON nested deeper than {limit} levels")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def parse_json_object(body: bytes, *, what: str = "the body",
                      max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """A JSON object in strict UTF-8 with no duplicate key at any level, no ``NaN`` or
    ``Infinity``, nested at most ``max_depth`` deep.

    Raises:
        InputError: ``malformed_json`` for anything that is not such a document,
            ``invalid_request`` for JSON that is not an object.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("malformed_json", f"{what} is not UTF-8") from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except InputError:
        raise
    except (ValueError, RecursionError):
        # ValueError: not JSON, or an integer longer than Python's digit limit.
        raise InputError("malformed_json", f"{what} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise InputError("invalid_request", f"{what} must be a JSON object")
    _depth(obj, max_depth)
    return obj
