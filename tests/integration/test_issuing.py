"""Issuing through HTTP, real MariaDB, real Redis and the real Celery worker (in a thread)."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from docnum.shared.db import transaction
from docnum.shared.models import AuditRow, IssuedNumber
from tests.conftest import BASE, generate, letter


def test_letter_then_memo_share_one_counter(client, auth, seed):
    seed()
    first = generate(client, auth, letter())
    assert first.status_code == 201, first.get_data(as_text=True)
    assert first.json["document_number"] == "คคง.-สคฉ.3-0001-2568"
    assert first.json["state"] == "CONFIRMED" and first.json["source"] == "GENERATE"
    assert first.json["counter_key"] == "LCBP3|ORIGINATOR=คคง.|RECIPIENT=สคฉ.3|Y2025"
    memo = generate(client, auth, letter(correspondence_type="MEMO"))
    assert memo.status_code == 201
    assert memo.json["document_number"] == "คคง.-สคฉ.3-0002-2568"
    assert memo.json["counter_key"] == first.json["counter_key"]


@pytest.mark.parametrize("body,expected", [
    (letter(correspondence_type="RFI"), "LCBP3-คคง.-สคฉ.3-RFI-0001-68"),
    (letter(correspondence_type="RFA", originator=None, recipient=None, discipline="TER",
            rfa_type="RPT", revision="A"), "LCBP3-RFA-TER-RPT-0001-A"),
    (letter(correspondence_type="TRANSMITTAL", sub_type="21"), "คคง.-สคฉ.3-21-0001-2568"),
])
def test_spec_vectors(client, auth, seed, body, expected):
    seed()
    response = generate(client, auth, body)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.json["document_number"] == expected


def test_rfa_reset_none_continues_across_years(client, auth, seed):
    seed()
    body = letter(correspondence_type="RFA", originator=None, recipient=None, discipline="TER",
                  rfa_type="RPT", revision="A")
    numbers = [generate(client, auth, dict(body, document_date=day)).json["document_number"]
               for day in ("2025-12-31", "2026-01-01")]
    assert numbers == ["LCBP3-RFA-TER-RPT-0001-A", "LCBP3-RFA-TER-RPT-0002-A"]


def test_sequence_exhausted_consumes_nothing(client, auth, seed, engine):
    seed({"LETTER": ("{ORIGINATOR}-{RECIPIENT}-{SEQ:1}-{YEAR:B.E.}", "YEARLY")})
    numbers = [generate(client, auth, letter()) for _ in range(10)]
    assert [r.status_code for r in numbers] == [201] * 9 + [409]
    assert numbers[-1].json["code"] == "SEQUENCE_EXHAUSTED"
    assert numbers[-1].headers["Content-Type"].startswith("application/problem+json")
    with transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(IssuedNumber)) == 9


def test_async_submit_then_poll(client, auth, seed):
    seed()
    headers = auth()
    submitted = client.post(f"{BASE}/requests", json=letter(), headers=headers)
    assert submitted.status_code == 202
    assert submitted.json["status"] == "queued"
    location = submitted.headers["Location"]
    assert location == submitted.json["status_url"]
    assert submitted.headers["Retry-After"] == "1"
    from tests.conftest import wait_for

    done = wait_for(lambda: (r := client.get(location, headers=headers)).json["status"]
                    == "succeeded" and r, message="request to finish")
    assert done.json["result"]["document_number"] == "คคง.-สคฉ.3-0001-2568"
    # The same key and body again: the finished request, 200, same number.
    again = client.post(f"{BASE}/requests", json=letter(), headers=headers)
    assert again.status_code == 200
    assert again.json["result"]["document_number"] == "คคง.-สคฉ.3-0001-2568"


def test_poll_falls_back_to_ledger_when_backend_lost_it(client, auth, seed, app,
                                                        redis_dbs):
    import redis

    seed()
    headers = auth()
    issued = generate(client, auth, letter(), **{"key": headers["Idempotency-Key"]})
    request_id = issued.json["request_id"]
    redis.Redis.from_url(redis_dbs[1]).flushdb()  # the result backend forgets everything
    polled = client.get(f"{BASE}/requests/{request_id}", headers=headers)
    assert polled.status_code == 200
    assert polled.json["status"] == "succeeded"
    assert polled.json["result"]["document_number"] == issued.json["document_number"]
    unknown = client.get(f"{BASE}/requests/00000000-0000-0000-0000-000000000000",
                         headers=headers)
    assert unknown.status_code == 404 and unknown.json["code"] == "NOT_FOUND"


def test_other_users_request_needs_view_logs(client, auth, seed):
    seed()
    issued = generate(client, auth, letter())
    url = f"{BASE}/requests/{issued.json['request_id']}"
    bob = auth("bob", perms=["correspondence.read"])
    assert client.get(url, headers=bob).status_code == 403
    auditor = auth("carol", perms=["correspondence.read", "system.view_logs"])
    assert client.get(url, headers=auditor).status_code == 200


def test_idempotency_key_rules(client, auth, seed, engine):
    seed()
    headers = auth(key="order-42")
    first = client.post(f"{BASE}/generate", json=letter(), headers=headers)
    again = client.post(f"{BASE}/generate", json=letter(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json == again.json
    different = client.post(f"{BASE}/generate", json=letter(document_ref="X-1"), headers=headers)
    assert different.status_code == 422
    assert different.json["code"] == "IDEMPOTENCY_KEY_REUSED"
    missing = dict(headers)
    del missing["Idempotency-Key"]
    none = client.post(f"{BASE}/generate", json=letter(), headers=missing)
    assert none.status_code == 400 and none.json["code"] == "IDEMPOTENCY_KEY_REQUIRED"
    # Another user's identical key is another request.
    other = client.post(f"{BASE}/generate", json=letter(), headers=auth("bob", key="order-42"))
    assert other.json["document_number"] == "คคง.-สคฉ.3-0002-2568"
    with transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(IssuedNumber)) == 2


def test_every_issue_writes_one_audit_row(client, auth, seed, engine):
    seed()
    headers = auth(**{"User-Agent": "dms/1.0", "X-Request-ID": "trace-1"})
    response = client.post(f"{BASE}/generate", json=letter(), headers=headers)
    with transaction(engine) as session:
        rows = session.scalars(select(AuditRow).where(AuditRow.operation == "GENERATE")).all()
    assert len(rows) == 1
    row = rows[0]
    assert row.actor == "alice" and row.success and row.fallback_used == "NONE"
    assert row.document_number == response.json["document_number"]
    assert row.request_id == response.json["request_id"]
    assert row.user_agent == "dms/1.0" and row.client_ip == "127.0.0.1"
    assert row.before == {"last_sequence": 0} and row.after["last_sequence"] == 1


@pytest.mark.parametrize("change,code,field", [
    ({"originator": "NOPE"}, "UNKNOWN_CODE", "originator"),
    ({"project": "P9"}, "UNKNOWN_CODE", "project"),
    ({"recipient": None}, "VALIDATION_FAILED", "recipient"),
    ({"correspondence_type": "RFA"}, "VALIDATION_FAILED", "discipline"),
    ({"document_date": "2025-13-01"}, "VALIDATION_FAILED", "document_date"),
    ({"originator": "ค\u200bคง."}, "VALIDATION_FAILED", "originator"),
])
def test_bad_context_is_422_and_writes_nothing(client, auth, seed, engine, change, code,
                                               field):
    seed()
    response = generate(client, auth, letter(**change))
    assert response.status_code == 422, response.json
    assert response.json["code"] == code
    assert field in {e["field"] for e in response.json.get("errors", [])}
    with transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(IssuedNumber)) == 0


def test_inactive_code_and_missing_config(client, auth, seed):
    seed({"LETTER": ("{ORIGINATOR}-{RECIPIENT}-{SEQ:4}-{YEAR:B.E.}", "YEARLY")})
    no_config = generate(client, auth, letter(correspondence_type="RFI"))
    assert no_config.status_code == 422 and no_config.json["code"] == "NO_CONFIG"
    client.put(f"{BASE}/catalog/organization/TEAM-A", json={"name": "Team A", "active": False},
               headers=auth())
    inactive = generate(client, auth, letter(recipient="TEAM-A"))
    assert inactive.status_code == 422 and inactive.json["code"] == "CODE_INACTIVE"


def test_thai_problem_title(client, auth, seed):
    seed()
    response = client.post(f"{BASE}/generate", json=letter(originator="NOPE"),
                           headers=auth(**{"Accept-Language": "th-TH,th;q=0.9,en;q=0.5"}))
    assert response.json["title"] == "ไม่พบรหัสอ้างอิง"


def test_generate_timeout_zero_answers_202_and_loses_nothing(client, auth, seed):
    seed()
    headers = auth()
    response = client.post(f"{BASE}/generate?timeout=0", json=letter(), headers=headers)
    assert response.status_code in (201, 202)
    if response.status_code == 202:
        from tests.conftest import wait_for

        wait_for(lambda: client.get(response.headers["Location"], headers=headers)
                 .json["status"] == "succeeded", message="queued request to finish")
    polled = client.get(f"{BASE}/requests/{response.json['request_id']}", headers=headers)
    assert polled.json["result"]["document_number"] == "คคง.-สคฉ.3-0001-2568"


@pytest.mark.parametrize("raw", ["-1", "31", "abc", "nan", "inf", "1e309"])
def test_absurd_timeouts_are_422(client, auth, seed, raw):
    seed()
    response = client.post(f"{BASE}/generate?timeout={raw}", json=letter(), headers=auth())
    assert response.status_code == 422 and response.json["code"] == "VALIDATION_FAILED"


def test_preview_consumes_nothing(client, auth, seed):
    seed()
    generate(client, auth, letter())
    preview = client.post(f"{BASE}/preview", json=letter(), headers=auth())
    assert preview.status_code == 200
    assert preview.json["document_number"] == "คคง.-สคฉ.3-0002-2568"
    assert preview.json["sequence"] == 2
    unsaved = client.post(f"{BASE}/preview",
                          json=letter(template="{ORIGINATOR}/{SEQ:5}/{YEAR:A.D.}"),
                          headers=auth())
    assert unsaved.status_code == 200, unsaved.json
    assert unsaved.json["document_number"] == "คคง./00001/2025"
    bad = client.post(f"{BASE}/preview", json=letter(template="{SEQ:4}{SEQ:3}"), headers=auth())
    assert bad.status_code == 422 and bad.json["code"] == "TEMPLATE_INVALID"
    again = generate(client, auth, letter())
    assert again.json["document_number"] == "คคง.-สคฉ.3-0002-2568"


def test_number_lookup(client, auth, seed):
    seed()
    issued = generate(client, auth, letter(document_ref="DMS-7"))
    number = issued.json["document_number"]
    from urllib.parse import quote

    found = client.get(f"{BASE}/numbers/{quote(number)}", headers=auth())
    assert found.status_code == 200
    assert found.json["document_number"] == number and found.json["source"] == "GENERATE"
    assert found.json["document_ref"] == "DMS-7"
    assert [h["operation"] for h in found.json["history"]] == ["GENERATE"]
    slashed = client.get(f"{BASE}/numbers/{quote('A/B/0001', safe='')}", headers=auth())
    assert slashed.status_code == 404 and slashed.json["code"] == "NOT_FOUND"
