"""schemathesis against a running node's ``/openapi.json``: no 5xx, every response conforms.

A one-validator node (it commits alone) serves on 127.0.0.1 from a thread with its own event
loop; schemathesis loads the document from the node itself, generates valid and invalid
requests for every operation (authenticated with the client token of the test config) and runs
its default checks on each response: not a server error, a documented status code, content
type and headers, the response body against its schema, invalid data refused, and so on.

The example count per operation is bounded and derandomized, so a run is reproducible and takes
well under a minute.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from node.harness import TOKEN, auth, client_session, digest, make_cluster
from schemathesis import GenerationMode, checks

#: Hypothesis examples per operation and generation mode.
EXAMPLES = 30


@pytest.fixture(scope="module")
def node_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running node with a few anchors (so proofs, blocks and checkpoints exist)."""
    tmp: Path = tmp_path_factory.mktemp("openapi")
    cluster = make_cluster(tmp, n=1, lmdb=False)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        await cluster.start(0)
        async with client_session() as http:
            body = {"digests": [digest(i, "openapi").hex() for i in range(3)]}
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
        yield cluster.url(0)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)


def operations(url: str) -> list[Any]:
    """Every operation of the document the node serves (schemathesis ``APIOperation``)."""
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]


#: In negative mode only the response-side checks: a negated case may drop the Authorization
#: header, which the test adds back to every request (so "invalid data accepted" would be a
#: false alarm), and the node ignores unknown query parameters by design.
NEGATIVE_CHECKS = [
    checks.not_a_server_error, checks.status_code_conformance,
    checks.content_type_conformance, checks.response_headers_conformance,
    checks.response_schema_conformance,
]
#: Operations whose valid requests the schema cannot describe: a consistency proof needs
#: from <= to (OpenAPI has no constraint between two parameters); an add-checkpoint body and a
#: peer envelope are valid only with the right signatures, and the peer stream only as a
#: websocket upgrade (headers OpenAPI does not describe). Schema-valid requests to them may be
#: refused with 400/403/422, so ``positive_data_acceptance`` does not apply.
NOT_DESCRIBABLE = {("GET", "/v1/consistency"), ("POST", "/add-checkpoint"),
                   ("POST", "/peer/v1/messages"), ("GET", "/peer/v1/stream")}


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["positive", "negative"])
def test_every_operation_answers_by_its_schema(node_url: str, mode: GenerationMode) -> None:
    failures: list[str] = []
    ops = operations(node_url)
    assert len(ops) >= 15
    tried = 0
    for op in ops:
        options: dict[str, Any] = {}  # read by check() below, within this iteration only
        if mode is GenerationMode.NEGATIVE:
            options["checks"] = NEGATIVE_CHECKS
        elif (op.method.upper(), op.path) in NOT_DESCRIBABLE:
            options["excluded_checks"] = [checks.positive_data_acceptance]

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck),
                  phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
        def check(case: Any) -> None:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            case.call_and_validate(base_url=node_url, headers=headers, timeout=30,
                                   **options)  # noqa: B023 (called before the next iteration)

        try:
            check()
            tried += 1
        except hypothesis.errors.Unsatisfiable:
            # No parameters and no body: nothing to negate (negative mode only).
            assert mode is GenerationMode.NEGATIVE, op.path
        except (Exception, BaseExceptionGroup) as exc:  # every operation's failure, then all
            failures.append(f"{op.method.upper()} {op.path}: {exc}")
    assert not failures, "\n\n".join(failures)
    assert tried >= (15 if mode is GenerationMode.POSITIVE else 4)
