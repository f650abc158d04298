"""Webhooks and e-mail of the service, with real receivers: an HTTP server that goes down and
comes back, and an in-process SMTP server (aiosmtpd) whose mailbox the test reads."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from eod.service_harness import free_port, invoice_flow, running_service
from ledger.eod.notify import MailConfig
from ledger.eod.service import ServiceConfig
from ledger.eod.webhooks import WebhookSink

SECRET = b"webhook secret of the ERP"


class Receiver:
    """An HTTP receiver on a fixed port that can be stopped and started again."""

    def __init__(self, port: int, *, status: int = 200) -> None:
        self.port = port
        self.status = status
        self.got: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
                if self.headers.get("X-Ledger-Signature") != expected:
                    receiver.bad_signatures += 1
                if receiver.status == 200:
                    receiver.got.append(json.loads(body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        self._server = None


def _wait(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _with_hooks(*sinks: WebhookSink) -> Any:
    def tweak(config: ServiceConfig) -> None:
        config.offices[0].webhooks = list(sinks)

    return tweak


def test_a_receiver_down_for_a_while_gets_every_event_in_order(tmp_path: Path) -> None:
    port = free_port()
    receiver = Receiver(port)
    receiver.start()
    sink = WebhookSink(name="erp", url=f"http://127.0.0.1:{port}/hook", secret=SECRET,
                       attempts=1000, base_delay=0.05, max_delay=0.4, timeout=2)
    with running_service(tmp_path, tweak=_with_hooks(sink)) as svc:
        first = svc.step("register", {"as": "kanc-1", "document": "aa" * 32, "channel": "post"})
        _wait(lambda: len(receiver.got) == 1)
        receiver.stop()  # down: connections refused
        invoice_flow(svc, 1)
        time.sleep(1.0)  # several failed tries meanwhile
        receiver.start()
        _wait(lambda: len(receiver.got) == 10)
        deliveries = [m["delivery"] for m in receiver.got]
        assert deliveries == sorted(deliveries) == list(range(1, 11))
        assert receiver.got[0]["hash"] == first["event"]
        assert [m["event"]["event"]["type"] for m in receiver.got[1:3]] == [
            "registered", "assigned"]
        assert receiver.bad_signatures == 0
        _, metrics, _ = svc.call("GET", "/metrics", token=None)
        text = metrics.decode()
        assert 'outcome="failed",sink="erp"' in text or 'sink="erp"' in text
        _, dead, _ = svc.call("GET", "/v1/offices/cuw/admin/deadletters", token="cuw-admin")
        assert dead["deadletters"] == []


def test_dead_letters_are_kept_and_an_admin_replays_them(tmp_path: Path) -> None:
    port = free_port()
    receiver = Receiver(port, status=500)
    receiver.start()
    sink = WebhookSink(name="erp", url=f"http://127.0.0.1:{port}/hook", secret=SECRET,
                       attempts=2, base_delay=0.01, max_delay=0.02, timeout=2)
    with running_service(tmp_path, tweak=_with_hooks(sink)) as svc:
        for n in range(3):
            svc.step("register", {"as": "kanc-1", "document": f"{n:064x}", "channel": "post"})

        def dead() -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = svc.call(
                "GET", "/v1/offices/cuw/admin/deadletters", token="cuw-admin")[1]["deadletters"]
            return rows

        _wait(lambda: len(dead()) == 3)
        assert [d["delivery"] for d in dead()] == [1, 2, 3]
        assert all(d["attempts"] == 2 and d["error"] == "HTTP 500" for d in dead())
        receiver.status = 200
        status, replay, _ = svc.call("POST", "/v1/offices/cuw/admin/deadletters/replay",
                                     {"sink": "erp"}, token="cuw-admin")
        assert status == 200 and replay == {"delivered": 3, "still_dead": 0}
        assert [m["delivery"] for m in receiver.got] == [1, 2, 3]
        assert dead() == []
        assert svc.call("POST", "/v1/offices/cuw/admin/deadletters/replay", {"sink": "erp"},
                        token="cuw")[0] == 403


@contextmanager
def smtp_server(port: int) -> Iterator[list[Any]]:
    from aiosmtpd.controller import Controller

    received: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield received
    finally:
        controller.stop()


ADDRESSES = {"ref-fk": "referent@cuw.example", "kier-sp": "gospodarczy@sp7.example",
             "ksieg-1": "ksiegowa1@cuw.example", "ksieg-2": "ksiegowa2@cuw.example",
             "dyr": "dyrektor@cuw.example", "gk": "glowna@cuw.example"}


def _with_mail(port: int, **extra: Any) -> Any:
    def tweak(config: ServiceConfig) -> None:
        config.offices[0].mail = MailConfig(host="127.0.0.1", port=port,
                                            sender="eod@cuw.example", addresses=ADDRESSES,
                                            base_delay=0.05, max_delay=0.2, **extra)

    return tweak


def test_assignment_and_awaited_steps_are_mailed_through_smtp(tmp_path: Path) -> None:
    port = free_port()
    with smtp_server(port) as mailbox, running_service(tmp_path,
                                                       tweak=_with_mail(port)) as svc:
        reg = svc.step("register", {"as": "kanc-1", "document": "bb" * 32, "channel": "ksef",
                                    "kind": "invoice", "attachments": 1})
        svc.step("assign", {"as": "dyr", "ref": reg["register"], "to": "ref-fk",
                            "deadline": "2024-03-20"})
        _wait(lambda: len(mailbox) >= 1)
        rcpts, message = mailbox[0]
        assert rcpts == ["referent@cuw.example"]
        assert reg["register"] in message["Subject"] and "ref-fk" in message["Subject"]
        assert "termin 2024-03-20" in message.get_payload()
        case = svc.step("open-case", {"as": "ref-fk", "ref": reg["register"], "unit": "FK",
                                      "class": "3026", "kind": "cost"})["case"]
        svc.step("attach", {"as": "ref-fk", "ref": case, "document": "cc" * 32,
                            "kind": "order"})
        # The substantive check (role substantive, any unit) awaits kier-sp.
        _wait(lambda: any(r == ["gospodarczy@sp7.example"] for r, _ in mailbox))
        svc.step("accept", {"as": "kier-sp", "ref": case, "step": "substantive"})
        # The formal check (accounts, unit FK) awaits ksieg-1 and ksieg-2.
        _wait(lambda: {"ksiegowa1@cuw.example", "ksiegowa2@cuw.example"}
              <= {r[0] for r, _ in mailbox})
        time.sleep(0.3)
        keys = [m["key"] for m in svc.call("GET", "/v1/offices/cuw/admin/mail",
                                           token="cuw-admin")[1]["mail"]]
        assert len(keys) == len(set(keys)) == len(mailbox)


def test_an_smtp_server_that_is_down_never_breaks_a_step_and_failures_show(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there at first
    with running_service(tmp_path, tweak=_with_mail(port, attempts=3)) as svc:
        reg = svc.step("register", {"as": "kanc-1", "document": "dd" * 32, "channel": "post"})
        started = time.monotonic()
        svc.step("assign", {"as": "dyr", "ref": reg["register"], "to": "ref-fk"})
        assert time.monotonic() - started < 5  # the step did not wait for the mail

        def mail() -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = svc.call("GET", "/v1/offices/cuw/admin/mail",
                                                  token="cuw-admin")[1]["mail"]
            return rows

        _wait(lambda: mail() and mail()[0]["status"] == "failed")
        [row] = mail()
        assert row["attempts"] == 3 and "Connection refused" in row["error"]
        _, metrics, _ = svc.call("GET", "/metrics", token=None)
        assert 'outcome="failed"' in metrics.decode()


def test_a_retried_mail_arrives_once_the_server_is_up(tmp_path: Path) -> None:
    port = free_port()
    with running_service(tmp_path, tweak=_with_mail(port, attempts=50)) as svc:
        reg = svc.step("register", {"as": "kanc-1", "document": "ee" * 32, "channel": "post"})
        svc.step("assign", {"as": "dyr", "ref": reg["register"], "to": "ref-fk"})
        time.sleep(0.5)
        with smtp_server(port) as mailbox:
            _wait(lambda: len(mailbox) == 1)
        [row] = svc.call("GET", "/v1/offices/cuw/admin/mail", token="cuw-admin")[1]["mail"]
        assert row["status"] == "sent" and row["attempts"] > 1

