"""``ledger eod serve`` in-process over real stores and real receipts: every step as an
endpoint, queries, isolation between offices, the citizen's lookup, metrics, import."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

from eod.service_harness import invoice_flow, running_service
from ledger.eod.trail import verify_trail


def test_steps_queries_and_a_trail_through_the_service(tmp_path: Path) -> None:
    with running_service(tmp_path) as svc:
        case = invoice_flow(svc, 1)
        svc.step("close", {"as": "ref-fk", "ref": case})
        status, found, _ = svc.call("GET", "/v1/offices/cuw/cases?unit=FK&status=closed")
        assert status == 200
        assert [c["case"] for c in found["cases"]] == [case]
        status, course, _ = svc.call("GET", f"/v1/offices/cuw/case?ref={case}")
        assert status == 200 and len(course["events"]) == 10
        assert course["events"][0]["type"] == "registered"
        assert course["events"][-1]["proven_before"].endswith("+01:00")
        status, bundle, _ = svc.call("GET", f"/v1/offices/cuw/trail?ref={case}")
        assert status == 200
        import json

        trail = verify_trail(json.dumps(bundle).encode())
        assert trail.case == case and len(trail.entries) == 10
        status, text, headers = svc.call(
            "GET", "/v1/offices/cuw/registers/invoices?format=csv&unit=FK")
        assert status == 200 and headers["Content-Type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(text.decode())))
        assert rows[1][0] == "RPW/1/2024" and rows[1][1] == "FV/1"
        status, contracts, _ = svc.call("GET", "/v1/offices/cuw/registers/contracts")
        assert [r["case"] for r in contracts["rows"]] == [case]


def test_a_refused_step_is_409_and_stores_nothing(tmp_path: Path) -> None:
    with running_service(tmp_path) as svc:
        reg = svc.step("register", {"as": "kanc-1", "document": "ab" * 32, "channel": "post"})
        status, error, _ = svc.call("POST", "/v1/offices/cuw/steps/close",
                                    {"as": "ref-fk", "ref": reg["register"]})
        assert status == 409 and error["error"]["code"] == "workflow_refused"
        status, error, _ = svc.call("POST", "/v1/offices/cuw/steps/assign",
                                    {"as": "dyr", "ref": reg["register"], "to": "ref-fk",
                                     "colour": "red"})
        assert status == 400 and "colour" in error["error"]["message"]
        status, course, _ = svc.call("GET", f"/v1/offices/cuw/case?ref={reg['register']}")
        assert len(course["events"]) == 1


def test_a_token_of_one_office_never_reads_another(tmp_path: Path) -> None:
    with running_service(tmp_path) as svc:
        cuw_case = invoice_flow(svc, 1)
        sp7_case = invoice_flow(svc, 1, office="sp7", token="sp7")
        assert cuw_case == sp7_case  # same sign in two offices: the stores are apart
        for path in ("/cases", f"/case?ref={sp7_case}", f"/trail?ref={sp7_case}",
                     "/deadlines", "/registers/invoices"):
            foreign = svc.call("GET", "/v1/offices/sp7" + path, token="cuw")
            unknown = svc.call("GET", "/v1/offices/nowhere" + path, token="cuw")
            assert foreign[0] == 404 and unknown[0] == 404, path
            assert foreign[1]["error"]["code"] == unknown[1]["error"]["code"] == "not_found"
        status, _, _ = svc.call("POST", "/v1/offices/sp7/steps/close",
                                {"as": "ref-fk", "ref": sp7_case}, token="cuw")
        assert status == 404
        _, own, _ = svc.call("GET", "/v1/offices/sp7/cases", token="sp7")
        _, mine, _ = svc.call("GET", "/v1/offices/cuw/cases", token="cuw")
        assert len(own["cases"]) == len(mine["cases"]) == 1
        # No token, a wrong token, a position the client may not act as.
        assert svc.call("GET", "/v1/offices/cuw/cases", token=None)[0] == 401
        assert svc.call("GET", "/v1/offices/cuw/cases", token="forged")[0] == 401
        status, _error, _ = svc.call("POST", "/v1/offices/cuw/steps/register",
                                    {"as": "dyr", "document": "cd" * 32, "channel": "post"},
                                    token="cuw-kanc")
        assert status == 403
        assert svc.call("GET", "/v1/offices/cuw/admin/mail", token="cuw")[0] == 403


def _lookup(svc, register: str, code: str):  # type: ignore[no-untyped-def]
    return svc.call("POST", "/v1/offices/cuw/status", {"register": register, "code": code},
                    token=None)


def test_the_citizen_lookup_answers_a_wrong_code_as_an_unknown_number(tmp_path: Path) -> None:
    with running_service(tmp_path) as svc:
        reg = svc.step("register", {"as": "kanc-1", "document": "ef" * 32, "channel": "epuap"})
        number = reg["register"]
        code = reg["receipt"]["status_lookup"]["access_code"]
        svc.step("assign", {"as": "dyr", "ref": number, "to": "kier-or"})
        status, found, _ = _lookup(svc, number, code)
        assert status == 200 and found["stage"] == "assigned" and found["unit"] == "OR"
        assert "kier-or" not in str(found) and "dyr" not in str(found)
        wrong = _lookup(svc, number, "ZZZZZ-ZZZZZ-ZZZZZ-ZZZZZ")
        unknown = _lookup(svc, "RPW/77/2024", code)
        garbage = svc.call("POST", "/v1/offices/cuw/status", raw=b"\xff not json", token=None)
        for answer in (wrong, unknown, garbage):
            status, body, headers = answer
            headers.pop("Date", None)
            assert (status, body) == (404, wrong[1])
            assert headers == {k: v for k, v in wrong[2].items() if k != "Date"}
        # The page: same answer for both, and the status for the right pair.
        form = f"register={number}&code=ZZZZZ".encode()
        a = svc.call("POST", "/status/cuw", raw=form, token=None,
                     content_type="application/x-www-form-urlencoded")
        b = svc.call("POST", "/status/cuw", raw=b"register=RPW%2F77%2F2024&code=ZZZZZ",
                     token=None, content_type="application/x-www-form-urlencoded")
        assert a[0] == b[0] == 404
        assert a[1].replace(number.encode(), b"X") == b[1].replace(b"RPW/77/2024", b"X")
        ok = svc.call("POST", "/status/cuw", raw=f"register={number}&code={code}".encode(),
                      token=None, content_type="application/x-www-form-urlencoded")
        assert ok[0] == 200 and "przydzielona" in ok[1].decode()


def test_status_lookups_are_rate_limited(tmp_path: Path) -> None:
    with running_service(tmp_path) as svc:
        answers = [_lookup(svc, "RPW/1/2024", "x")[0] for _ in range(14)]
        assert answers[:10] == [404] * 10 and 429 in answers[10:]


def test_metrics_give_overdue_matters_per_unit(tmp_path: Path) -> None:
    with running_service(tmp_path) as svc:
        reg = svc.step("register", {"as": "kanc-1", "document": "01" * 32, "channel": "post"})
        svc.step("assign", {"as": "dyr", "ref": reg["register"], "to": "kier-or",
                            "deadline": "2024-03-04"})
        svc.clock.tick(10 * 86400)
        status, text, _ = svc.call("GET", "/metrics", token=None)
        assert status == 200
        lines = text.decode().splitlines()
        assert 'ledger_eod_deadlines_overdue{office="cuw",unit="OR"} 1.0' in lines
        assert any(line.startswith("ledger_eod_steps_total{") and 'step="assign"' in line
                   and 'outcome="stored"' in line for line in lines)
        _, deadlines, _ = svc.call("GET", "/v1/offices/cuw/deadlines?unit=OR")
        assert [(d["register"], d["state"]) for d in deadlines["deadlines"]] == [
            (reg["register"], "overdue")]


def test_an_import_through_the_service(tmp_path: Path) -> None:
    from eod.test_import import matter

    with running_service(tmp_path) as svc:
        status, result, _ = svc.call("POST", "/v1/offices/cuw/import",
                                     {"items": [matter(n) for n in range(5)]},
                                     token="cuw-admin")
        assert status == 201 and result["imported"] == 5
        assert svc.call("POST", "/v1/offices/cuw/import", {"items": [matter(9)]},
                        token="cuw")[0] == 403
        _, cases, _ = svc.call("GET", "/v1/offices/cuw/cases?status=closed")
        assert len(cases["cases"]) == 5
        digest = hashlib.sha256(b"x").hexdigest()
        assert digest
