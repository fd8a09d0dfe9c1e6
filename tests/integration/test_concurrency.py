"""1,000 concurrent issuing requests over real HTTP: distinct numbers, contiguous counters."""
from __future__ import annotations

import uuid
from collections import Counter as Tally
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select

from docnum.shared.db import transaction
from docnum.shared.models import AuditRow, Counter, IssuedNumber
from tests.conftest import BASE, letter, wait_for

TOTAL = 1000


def _fire(live_server: str, token: str, bodies: list[dict]) -> list[dict]:
    """POST /generate from 32 threads; a 202 (still running at the timeout) is followed up by
    polling its Location, as a client would: every accepted request must end with a number."""

    def one(body: dict) -> dict:
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex}
        with requests.Session() as http:
            response = http.post(f"{live_server}{BASE}/generate?timeout=10", json=body,
                                 headers=headers, timeout=60)
            if response.status_code == 202:
                location = live_server + response.headers["Location"]
                status = wait_for(lambda: (r := http.get(location, headers=headers,
                                                         timeout=30).json())["status"]
                                  != "queued" and r, timeout=120, interval=0.2,
                                  message="a queued request")
                assert status["status"] == "succeeded", status
                return {"status": 202, "number": status["result"]["document_number"]}
            assert response.status_code == 201, response.text
            return {"status": 201, "number": response.json()["document_number"]}

    with ThreadPoolExecutor(max_workers=32) as pool:
        return list(pool.map(one, bodies))


def _assert_contiguous_and_audited(engine, expected_per_key: dict[str, int]) -> None:
    with transaction(engine) as session:
        rows = session.execute(select(IssuedNumber.counter_key, IssuedNumber.sequence,
                                      IssuedNumber.document_number)).all()
        counters = {c.counter_key: c.last_sequence for c in session.scalars(select(Counter))}
        audits = session.scalar(select(func.count()).select_from(AuditRow).where(
            AuditRow.operation == "GENERATE", AuditRow.success.is_(True)))
        audit_requests = session.scalar(select(func.count(func.distinct(AuditRow.request_id)))
                                        .where(AuditRow.operation == "GENERATE"))
    assert len({r.document_number for r in rows}) == len(rows) == TOTAL
    by_key: dict[str, list[int]] = {}
    for row in rows:
        by_key.setdefault(row.counter_key, []).append(row.sequence)
    assert {k: len(v) for k, v in by_key.items()} == expected_per_key
    for key, sequences in by_key.items():
        assert sorted(sequences) == list(range(1, len(sequences) + 1)), key
        assert counters[key] == len(sequences)
    assert audits == audit_requests == TOTAL


@pytest.mark.parametrize("spread", [1, 25], ids=["hot-key", "25-keys"])
def test_thousand_concurrent_requests(live_server, token, seed, engine, spread):
    seed()
    recipients = [f"R{i:02d}" for i in range(spread)]
    if spread > 1:
        from docnum.shared.catalog import upsert_entry
        from docnum.shared.clock import SystemClock

        with transaction(engine) as session:
            for code in recipients:
                upsert_entry(session, "organization", code, code, True, SystemClock().now())
    else:
        recipients = ["สคฉ.3"]
    bodies = [letter(recipient=recipients[i % len(recipients)]) for i in range(TOTAL)]
    answers = _fire(live_server, token("loader", ["correspondence.create", "correspondence.read"]),
                    bodies)
    statuses = Tally(a["status"] for a in answers)
    assert sum(statuses.values()) == TOTAL, statuses
    numbers = [a["number"] for a in answers]
    assert len(set(numbers)) == TOTAL
    expected = {f"LCBP3|ORIGINATOR=คคง.|RECIPIENT={r}|Y2025": TOTAL // len(recipients)
                for r in recipients}
    _assert_contiguous_and_audited(engine, expected)
