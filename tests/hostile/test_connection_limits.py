"""Connection limits, timeouts and logs a hostile client cannot turn against the node.

Each test opens raw sockets (from several 127.0.0.0/8 source addresses where a per-address cap
matters) against a node with small limits, and checks what the node does: closes, refuses,
evicts, answers, and how many lines it logs. Bounds on waiting are generous: what is tested is
that the node acts, not how fast.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from pathlib import Path

from node.harness import TOKEN, digest

from ledger.config import Limits

from .served import closed_by_node, connect, read_answer, served_node

FAST = Limits(header_timeout_ms=400, idle_timeout_ms=400, body_timeout_ms=400,
              max_connections=1000, max_connections_per_address=1000)


def get(path: str, extra: str = "") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n").encode()


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1."), answer[:100]
    return int(answer[9:12])


def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout(
        tmp_path: Path) -> None:
    with served_node(tmp_path, FAST) as served:
        sock = connect(served.port, timeout=20)
        assert closed_by_node(sock)
        assert served.node.faults.counts["header_timeout"] == 1  # no first head in time


def test_a_kept_alive_connection_is_closed_when_idle(tmp_path: Path) -> None:
    with served_node(tmp_path, FAST) as served:
        sock = connect(served.port, timeout=20)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in sock.recv(65536)
        assert closed_by_node(sock)
        assert served.node.faults.counts["idle_closed"] == 1


def test_slowloris_heads_are_closed_at_the_header_timeout_with_one_line(
        tmp_path: Path) -> None:
    with served_node(tmp_path, FAST) as served:
        socks = [connect(served.port, "127.0.0.2", timeout=0.05) for _ in range(20)]
        head = b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
        deadline = time.monotonic() + 20
        open_socks = list(socks)
        sent = 0
        while open_socks and time.monotonic() < deadline:
            for sock in list(open_socks):  # one byte each, every 50 ms: never a whole head
                try:
                    sock.sendall(head[sent % len(head):sent % len(head) + 1])
                    if sock.recv(1) == b"":
                        open_socks.remove(sock)
                except TimeoutError:
                    pass
                except OSError:
                    open_socks.remove(sock)
            sent += 1
        assert not open_socks, f"{len(open_socks)} slowloris connections still open"
        assert served.node.faults.counts["header_timeout"] == 20
        lines = [line for line in served.log.lines() if "no complete request head" in line]
        assert 1 <= len(lines) <= 2, lines  # rate-limited: not one line per connection
        assert not served.log.tracebacks()


def test_a_body_that_does_not_arrive_in_time_is_408(tmp_path: Path) -> None:
    with served_node(tmp_path, FAST) as served:
        sock = connect(served.port, timeout=20)
        sock.sendall(b"POST /v1/anchors HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n{\"dig")
        answer = read_answer(sock)
        assert status_of(answer) == 408
        assert b'"request_timeout"' in answer


def test_the_per_address_cap_refuses_one_address_only(tmp_path: Path) -> None:
    limits = Limits(max_connections_per_address=5)
    with served_node(tmp_path, limits) as served:
        held = [connect(served.port, "127.0.0.3") for _ in range(5)]
        extra = connect(served.port, "127.0.0.3")
        extra.sendall(get("/healthz"))
        answer = read_answer(extra)
        assert status_of(answer) == 503 and b"too_many_connections" in answer
        other = connect(served.port, "127.0.0.4")  # another address is served
        other.sendall(get("/healthz"))
        assert status_of(read_answer(other)) == 200
        assert served.node.faults.counts["refused_address"] == 1
        for sock in held:
            sock.close()


def test_at_the_cap_the_longest_idle_connection_makes_room(tmp_path: Path) -> None:
    limits = Limits(max_connections=10)
    with served_node(tmp_path, limits) as served:
        idle = [connect(served.port, f"127.0.1.{i + 1}", timeout=20) for i in range(10)]
        time.sleep(0.2)
        client = connect(served.port)
        client.sendall(get("/healthz"))
        assert status_of(read_answer(client)) == 200  # served at once, although at the cap
        assert closed_by_node(idle[0])  # the oldest idle connection gave way
        assert served.node.faults.counts["evicted"] >= 1


def test_at_the_cap_with_every_connection_busy_a_new_one_is_refused(tmp_path: Path) -> None:
    limits = Limits(max_connections=4, body_timeout_ms=20_000)
    with served_node(tmp_path, limits) as served:
        busy = []
        for i in range(4):  # each in its handler, waiting for a body that does not come
            sock = connect(served.port, f"127.0.2.{i + 1}")
            sock.sendall(b"POST /peer/v1/messages HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: 1000\r\n\r\n")
            busy.append(sock)
        time.sleep(0.3)
        refused = connect(served.port)
        refused.sendall(get("/healthz"))
        answer = read_answer(refused)
        assert status_of(answer) == 503 and b"too_many_connections" in answer
        assert served.node.faults.counts["refused_busy"] == 1
        for sock in busy:
            sock.close()


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(tmp_path: Path) -> None:
    """Requests in progress are counted per client address: behind a trusted proxy, the one
    X-Forwarded-For names (and the proxy's own connections are not capped per address)."""
    limits = Limits(max_requests_per_address=1, max_connections_per_address=2,
                    trusted_proxies=("127.0.0.1",), body_timeout_ms=20_000)

    def slow_post(forwarded: str) -> socket.socket:
        sock = connect(served.port)
        sock.sendall(b"POST /peer/v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                     b"X-Forwarded-For: " + forwarded.encode() + b"\r\n\r\n")
        return sock

    with served_node(tmp_path, limits) as served:
        first = slow_post("192.0.2.7")  # in progress, waiting for its body
        time.sleep(0.2)
        second = slow_post("198.51.100.1, 192.0.2.7")  # the same client, via another hop
        answer = read_answer(second)
        assert status_of(answer) == 429 and b"too_many_requests" in answer
        others = [slow_post(f"192.0.2.{i}") for i in range(10, 14)]  # 5 conns from the proxy
        time.sleep(0.2)
        assert served.node.faults.counts["requests_per_address"] == 1
        assert served.node.faults.counts["refused_address"] == 0
        for sock in [first, *others]:
            sock.close()


def test_a_hundred_aborted_peer_uploads_log_no_traceback_and_a_bounded_number_of_lines(
        tmp_path: Path) -> None:
    with served_node(tmp_path) as served:
        before = len(served.log.records)
        for i in range(100):
            sock = connect(served.port, f"127.0.3.{i % 50 + 1}")
            sock.sendall(b"POST /peer/v1/messages HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/octet-stream\r\n"
                         b"Content-Length: 100000\r\n\r\n" + b"\x93" * 5000)
            time.sleep(0.005)  # the handler is reading the body
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset, mid-upload
        deadline = time.monotonic() + 20
        while served.node.faults.counts["aborted"] < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert served.node.faults.counts["aborted"] == 100
        records = served.log.records[before:]
        assert not [r for r in records if r.exc_info], "a traceback was logged"
        written = [r for r in records if r.levelno >= 20]
        assert len(written) <= 3, [r.getMessage() for r in written]
        # The node is unharmed, and says what it held back.
        sock = connect(served.port)
        sock.sendall(get("/metrics"))
        metrics = read_answer(sock).decode()
        assert 'ledger_client_faults_total{kind="aborted"} 100.0' in metrics
        assert "ledger_log_lines_suppressed_total 99.0" in metrics


def test_malformed_heads_cost_a_line_per_interval_not_a_traceback_each(tmp_path: Path) -> None:
    with served_node(tmp_path) as served:
        for i in range(50):
            sock = connect(served.port)
            sock.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nBad Header\x01: y\r\n\r\n")
            assert status_of(read_answer(sock)) == 400, i
        assert not served.log.tracebacks()
        lines = [line for line in served.log.lines(level=20) if "refused" in line]
        assert len(lines) <= 2, lines
        anchor = connect(served.port)
        body = json.dumps({"digests": [digest(9, "after").hex()]}).encode()
        anchor.sendall(b"POST /v1/anchors?wait=true HTTP/1.1\r\nHost: x\r\nConnection: close"
                       b"\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
                       b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert status_of(read_answer(anchor)) == 200
