"""Schema fuzzing: schemathesis against the live OpenAPI document.

Every operation of ``/api/v1/document-numbering/openapi.json`` is called in-process (WSGI) with
generated inputs, valid and invalid (schemathesis's examples, coverage and fuzzing phases,
positive and negative modes), as a SUPER_ADMIN. Two checks: ``not_a_server_error`` (no 5xx for
any input) and ``response_schema_conformance`` (every answer matches what the document declares
for its status: the document must tell the truth). Bounded: ``MAX_EXAMPLES`` fuzzed cases per
operation and mode, and a time budget for the whole run.

schemathesis 4's pytest integration (``schema.parametrize``/``from_fixture``) writes pytest's
private ``Function._nodeid``, which pytest 9 does not have; the same per-operation Hypothesis
tests are built with ``schemathesis.pytest.lazy.get_all_tests`` and run here one by one, so
that every operation's failure is reported, not only the first.
"""
from __future__ import annotations

import time
import uuid

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.pytest.lazy import get_all_tests
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.conftest import ALL_PERMS, BASE, wait_for

MAX_EXAMPLES = 20
BUDGET_S = 150.0


def test_no_server_error_and_every_answer_as_documented(app, seed, token):
    seed()  # a catalog and configs, so valid-looking requests reach the issuing code
    headers = {"Authorization": f"Bearer {token('fuzzer', ALL_PERMS, ['SUPER_ADMIN'])}"}
    schema = schemathesis.openapi.from_wsgi(f"{BASE}/openapi.json", app)
    schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True)
    calls = {"n": 0}
    queued: list[str] = []

    def check(case) -> None:
        calls["n"] += 1
        key = (case.headers or {}).get("Idempotency-Key")
        if isinstance(key, str) and 0 < len(key) <= 200 and key.isascii() and key.isprintable():
            # A valid generated key is made unique: otherwise most cases reuse one key with
            # another body (422 IDEMPOTENCY_KEY_REUSED) and never reach the issuing code.
            case.headers["Idempotency-Key"] = f"{key}-{uuid.uuid4().hex}"
        response = case.call_and_validate(
            headers=headers, checks=[not_a_server_error, response_schema_conformance])
        if response.status_code == 202:
            queued.append(response.json()["request_id"])

    hypothesis_settings = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                                   database=None, suppress_health_check=list(HealthCheck))
    started = time.monotonic()
    failures: dict[str, str] = {}
    operations = 0
    for result in get_all_tests(schema=schema, test_func=check, settings=hypothesis_settings,
                                given_kwargs=None):
        assert isinstance(result, Ok), f"the document is not valid OpenAPI: {result.err()}"
        operation, run = result.ok()
        operations += 1
        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # reported below
            # (schemathesis's FailureGroup is a BaseExceptionGroup, not an Exception)
            failures[operation.label] = f"{type(exc).__name__}: {exc}"[:4000]
        assert time.monotonic() - started < BUDGET_S, "schema fuzzing over its time budget"
    elapsed = time.monotonic() - started
    client = app.test_client()  # requests still queued must not be served in the next test
    wait_for(lambda: all(client.get(f"{BASE}/requests/{rid}", headers=headers).json["status"]
                         != "queued" for rid in queued), timeout=30, interval=0.2,
             message="the requests queued by the fuzzer to be served")
    print(f"\nschemathesis {schemathesis.__version__}: {operations} operations, {calls['n']} "
          f"calls in {elapsed:.1f}s, {len(failures)} failing")
    assert not failures, "\n\n".join(f"{label}\n{detail}" for label, detail in failures.items())
