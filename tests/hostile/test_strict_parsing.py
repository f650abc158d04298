"""Strict parsing of every untrusted field, and every route fed arbitrary bytes.

The fields (``ledger.inputs``): only ASCII decimal and hex of the exact length pass; Unicode
digits (``²``, ``①``, Arabic-Indic ``١``) and duplicate JSON keys are 400, never 500 and never
read as something else. Then a Hypothesis property over raw HTTP requests (paths, query
strings, headers and bodies of arbitrary Unicode and bytes) to every route of a running node:
no 5xx and no traceback in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from node.harness import TOKEN, auth, client_session, digest, make_cluster

from ledger.inputs import (
    InputError,
    parse_decimal,
    parse_flag,
    parse_hex,
    parse_json_object,
    single_query_value,
)
from ledger.node.app import ROUTES

UNICODE_DIGITS = ["²", "³", "①", "١", "٣", "۳", "७", "１", "𝟙", "⁹"]


@pytest.mark.parametrize("text", [*UNICODE_DIGITS, "1²", "+1", " 1", "1 ", "1_0", "01", "-1",
                                  "", "1" * 21, "0x10", "1e3", "1.0"])
def test_only_canonical_ascii_decimal_is_a_number(text: str) -> None:
    with pytest.raises(InputError):
        parse_decimal(text, what="n")


def test_decimal_bounds_and_canonical_forms() -> None:
    assert parse_decimal("0", what="n") == 0
    assert parse_decimal("9223372036854775807", what="n") == 2**63 - 1
    with pytest.raises(InputError):
        parse_decimal("9223372036854775808", what="n")
    with pytest.raises(InputError):
        parse_decimal("5", what="n", low=6)


@given(st.text(max_size=24))
def test_decimal_parser_accepts_exactly_str_of_an_int(text: str) -> None:
    try:
        value = parse_decimal(text, what="n")
    except InputError:
        return
    assert str(value) == text  # one spelling per number


def test_hex_of_exact_length_either_case() -> None:
    raw = bytes(range(32))
    assert parse_hex(raw.hex(), what="d", size=32) == raw
    assert parse_hex(raw.hex().upper(), what="d", size=32) == raw
    for bad, code in [(raw.hex()[:-2], "invalid_length"), (raw.hex() + "00", "invalid_length"),
                      (" " + raw.hex()[1:], "invalid_hex"), ("٣" * 64, "invalid_hex"),
                      (raw.hex()[:-1], "invalid_hex"), (7, "invalid_request")]:
        with pytest.raises(InputError) as info:
            parse_hex(bad, what="d", size=32)
        assert info.value.code == code


@pytest.mark.parametrize("body", [
    b'{"digests":[],"digests":["x"]}', b'{"a":{"b":1,"b":2}}', b'[{"a":1,"a":1}]',
    b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}', b"[" * 100_000, b"\xff{}",
    b'{"a": 1' + b"0" * 5000 + b"}", b"", b"null", b"[]", b'"x"',
])
def test_json_objects_refuse_duplicates_constants_depth_and_non_objects(body: bytes) -> None:
    with pytest.raises(InputError):
        parse_json_object(body)


def test_flags_and_repeated_query_values() -> None:
    assert parse_flag(None, what="w") is False
    assert parse_flag("1", what="w") is True
    for bad in ("yes", "TRUE", "１", ""):
        with pytest.raises(InputError):
            parse_flag(bad, what="w")
    with pytest.raises(InputError):
        single_query_value(["true", "false"], what="wait")


# -------------------------------------------------------------------------- a running node


class LogCapture(logging.Handler):
    """Every record of the node's process, for the no-traceback check."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, LogCapture]]:
    """A one-validator node with a few anchors, served from its own thread; the log of every
    logger is captured."""
    tmp: Path = tmp_path_factory.mktemp("strict")
    cluster = make_cluster(tmp, n=1, lmdb=False)
    capture = LogCapture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        await cluster.start(0)
        async with client_session() as http:
            body = {"digests": [digest(i, "strict").hex() for i in range(3)]}
            async with http.post(cluster.url(0) + "/v1/anchors?wait=true", json=body,
                                 headers=auth()) as r:
                assert r.status == 200
        ready.set()
        await stop.wait()
        await cluster.stop_all()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(60), "the node did not start"
    try:
        yield "127.0.0.1", cluster.configs[0].listen_port, capture
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        root.removeHandler(capture)
        root.setLevel(old_level)


def raw_request(host: str, port: int, data: bytes) -> int | None:
    """Send ``data`` as is; the status of the answer (``None``: the node closed without one)."""
    with socket.create_connection((host, port), timeout=10) as sock:
        with contextlib.suppress(OSError):  # refused early and closed: read what it said
            sock.sendall(data)
        answer = b""
        while b"\r\n\r\n" not in answer:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
    if not answer.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")):
        return None
    return int(answer[9:12])


def request(method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
            ) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
             f"Content-Length: {len(body)}", f"Authorization: Bearer {TOKEN}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def tracebacks(capture: LogCapture) -> list[str]:
    return [r.getMessage() for r in capture.records if r.exc_info]


@pytest.mark.parametrize("target", [
    "/v1/blocks/%C2%B2", "/v1/blocks/%E2%91%A0", "/v1/blocks/%D9%A1", "/v1/blocks/1%C2%B2",
    "/v1/blocks/99999999999999999999999", "/v1/consistency?from=1&to=%C2%B3",
    "/v1/consistency?from=%D9%A1&to=2", "/v1/consistency?from=1&to=2&to=3",
    "/v1/consistency?from=1&to=%E2%91%A0", "/v1/proofs/%D9%A3" + "0" * 62,
    "/v1/anchors?wait=%C2%B9", "/v1/anchors?wait=true&wait=false", "/v1/blocks/%FF",
])
def test_unicode_digits_and_repeated_parameters_are_400(node: tuple[str, int, LogCapture],
                                                       target: str) -> None:
    host, port, capture = node
    method = "POST" if target.startswith("/v1/anchors") else "GET"
    body = json.dumps({"digests": [digest(0, "x").hex()]}).encode() if method == "POST" else b""
    assert raw_request(host, port, request(method, target, body)) == 400
    assert not tracebacks(capture)


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/anchors", b'{"digests":[],"digests":["' + digest(1).hex().encode() + b'"]}'),
    ("/v1/anchors", b'{"digests":["' + digest(1).hex().encode() + b'"],"digests":[]}'),
    ("/v1/admin/validator-changes", b'{"change":"AA==","change":"AA=="}'),
])
def test_duplicate_json_keys_are_400(node: tuple[str, int, LogCapture], path: str,
                                     body: bytes) -> None:
    host, port, _ = node
    assert raw_request(host, port, request("POST", path, body)) in (400, 403)


# Every path of the route table, with each {parameter} to be filled by the strategy.
TEMPLATES = sorted({(r.method, r.path) for r in ROUTES} | {("GET", "/verify")})
_byte_text = st.binary(max_size=60).map(lambda b: b.decode("utf-8", "surrogateescape"))
_segment = st.one_of(st.text(max_size=40), _byte_text,
                     st.sampled_from([*UNICODE_DIGITS, "0", "1", "%", "%C2%B2", "..", "%00"]))
_header_value = st.text(alphabet=st.characters(blacklist_characters="\r\n",
                                               blacklist_categories=("Cs",)), max_size=60)


def _quote_some(text: str) -> str:
    # Bytes a request line cannot hold raw are percent-encoded; the rest (Unicode included)
    # goes as UTF-8, as a careless or hostile client sends it.
    out = []
    for ch in text:
        if ch in " \r\n\t#?" or (ord(ch) < 0x20) or ch == "\x7f":
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogateescape")))
        else:
            out.append(ch)
    return "".join(out)


@st.composite
def hostile_requests(draw: st.DrawFn) -> bytes:
    method, template = draw(st.sampled_from(TEMPLATES))
    method = draw(st.sampled_from([method, method, "GET", "POST", "PUT", "DELETE", "G\xe9T"]))
    # Each {parameter} of the template, filled in one pass (a drawn segment may hold braces).
    path = re.sub(r"\{[^}]*\}", lambda _: _quote_some(draw(_segment)), template)
    query_items = draw(st.lists(st.tuples(st.sampled_from(["wait", "from", "to", "x", "é"]),
                                          _segment), max_size=4))
    if query_items:
        path += "?" + "&".join(f"{_quote_some(k)}={_quote_some(v)}" for k, v in query_items)
    body = draw(st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogateescape")),
        st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(
            st.sampled_from(["digests", "change", "x"]),
            st.one_of(st.lists(st.text(max_size=70), max_size=3), st.text(max_size=70),
                      st.integers(), st.none()), max_size=3)),
        st.just(b'{"digests":[],"digests":["' + digest(2).hex().encode() + b'"]}'),
    ))
    headers = draw(st.dictionaries(
        st.sampled_from(["X-Request-Id", "Accept", "Content-Type", "X-Forwarded-For",
                         "Authorization", "X-\u00e9"]), _header_value, max_size=3))
    return request(method, path, body, headers)


@pytest.mark.slow
def test_every_route_fed_arbitrary_unicode_and_bytes_answers_without_5xx_or_traceback(
        node: tuple[str, int, LogCapture]) -> None:
    host, port, capture = node
    statuses: list[int | None] = []

    @settings(max_examples=600, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=hostile_requests())
    def check(data: bytes) -> None:
        status = raw_request(host, port, data)
        statuses.append(status)
        assert status is None or status < 500, data[:300]

    check()
    print(f"{len(statuses)} requests: " + ", ".join(
        f"{s}: {statuses.count(s)}" for s in sorted(set(statuses), key=str)))
    assert len(statuses) >= 600
    assert sum(1 for s in statuses if s is not None) > 500  # the node answered (4xx mostly)
    assert not tracebacks(capture), tracebacks(capture)[:3]
    assert not [r for r in capture.records if r.levelno >= logging.ERROR], [
        r.getMessage() for r in capture.records if r.levelno >= logging.ERROR][:5]
