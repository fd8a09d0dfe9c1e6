"""Refused privileged attempts on the audit trail (docs/lifecycle.md#refused-attempts): which
refusals are recorded, with what, and which are not."""
from __future__ import annotations

from sqlalchemy import select

from docnum.shared.auth import SUPER_ADMIN
from docnum.shared.db import transaction
from docnum.shared.models import AuditRow
from tests.conftest import BASE, generated, letter

LETTER_KEY = "LCBP3|ORIGINATOR=คคง.|RECIPIENT=สคฉ.3|Y2025"


def rows(engine) -> list[AuditRow]:
    with transaction(engine) as session:
        return list(session.scalars(select(AuditRow).where(AuditRow.operation.not_in(
            ("GENERATE", "RESERVE"))).order_by(AuditRow.id)))


def test_a_403_on_an_admin_route_is_recorded_with_actor_ip_and_request_id(client, auth, seed,
                                                                         engine):
    ids = seed()
    generated(client, auth, letter())  # the counter exists: the refusal joins its audit chain
    headers = auth("mallory", perms=["system.manage_settings"],
                   **{"X-Request-ID": "try-reset-1", "User-Agent": "curl/8"})
    body = {"counter_key": LETTER_KEY, "new_last_sequence": 0,
            "reason": "let me reset this counter without the role"}
    refused = client.post(f"{BASE}/configs/{ids['LETTER']}/reset-counter", json=body,
                          headers=headers)
    assert refused.status_code == 403 and refused.json["code"] == "FORBIDDEN"
    [row] = rows(engine)
    assert (row.operation, row.actor, row.success, row.error_code) == (
        "RESET_REQUEST", "mallory", False, "FORBIDDEN")
    assert (row.client_ip, row.request_id, row.user_agent) == ("127.0.0.1", "try-reset-1",
                                                               "curl/8")
    assert row.counter_key == LETTER_KEY and row.before is None
    assert row.after == {"attempt": {
        "route": f"POST {BASE}/configs/{ids['LETTER']}/reset-counter",
        "detail": "this action needs SUPER_ADMIN", "input": body}}

    # GET /audit shows it; success=false finds exactly the refusals.
    listed = client.get(f"{BASE}/audit?success=false&operation=RESET_REQUEST", headers=auth())
    assert listed.status_code == 200
    [item] = listed.json["items"]
    assert item["actor"] == "mallory" and item["error_code"] == "FORBIDDEN"
    assert item["success"] is False and item["after"]["attempt"]["input"] == body


def test_a_refusal_naming_a_counter_that_does_not_exist_is_kept_without_one(client, auth, seed,
                                                                            engine):
    """No counter row, so no counter chain to join: the refusal goes on the chain without a
    counter, the key it named kept in the attempt (docs/lifecycle.md#refused-attempts)."""
    ids = seed()
    body = {"counter_key": LETTER_KEY, "new_last_sequence": 0,
            "reason": "let me reset this counter without the role"}
    refused = client.post(f"{BASE}/configs/{ids['LETTER']}/reset-counter", json=body,
                          headers=auth("mallory", perms=["system.manage_settings"]))
    assert refused.status_code == 403
    [row] = rows(engine)
    assert row.counter_key is None and row.error_code == "FORBIDDEN"
    assert row.after["attempt"]["counter_key"] == LETTER_KEY
    assert row.after["attempt"]["input"] == body


def test_an_invalid_template_save_is_recorded(client, auth, seed, engine):
    ids = seed()
    response = client.put(f"{BASE}/configs/{ids['LETTER']}", json={
        "template": "{SEQ:4}{SEQ:3}", "change_reason": "try a second sequence"},
        headers=auth("napat"))
    assert response.status_code == 422 and response.json["code"] == "TEMPLATE_INVALID"
    [row] = rows(engine)
    assert (row.operation, row.actor, row.success, row.error_code) == (
        "CONFIG_UPDATE", "napat", False, "TEMPLATE_INVALID")
    assert row.after["attempt"]["input"]["template"] == "{SEQ:4}{SEQ:3}"
    assert row.after["attempt"]["errors"] == [
        {"field": "template", "message": response.json["errors"][0]["message"]}]


def test_what_is_not_recorded(client, auth, seed, engine, token):
    ids = seed()
    # A plain validation error of an issuing request: a metric, not an audit row (the
    # allocator records refusals it judged, as GENERATE or RESERVE).
    bad = client.post(f"{BASE}/generate", json=letter(originator=""), headers=auth())
    assert bad.status_code == 422
    # Nobody to attribute: no token.
    anonymous = client.post(f"{BASE}/admin/manual-override", json={})
    assert anonymous.status_code == 401
    # A read is not an attempt.
    reader = client.get(f"{BASE}/audit", headers=auth("clerk", perms=["correspondence.read"]))
    assert reader.status_code == 403
    # Malformed transport on an admin route.
    garbled = client.put(f"{BASE}/configs/{ids['LETTER']}", data=b"{not json",
                         headers={**auth(), "Content-Type": "application/json"})
    assert garbled.status_code == 400
    assert rows(engine) == []
    with transaction(engine) as session:
        assert session.scalars(select(AuditRow)).all() == []


def test_one_row_per_refusal_and_none_for_a_failed_execution(client, auth, seed, engine,
                                                             token):
    """The second approval that runs into a risen floor is an approval that stands and an
    execution that failed (RESET_EXECUTE, success = false): not a refused attempt."""
    ids = seed()
    client.post(f"{BASE}/generate", json=letter(), headers=auth())
    root = {f"r{i}": {"Authorization": f"Bearer {token(f'r{i}', [], [SUPER_ADMIN])}"}
            for i in range(1, 4)}
    filed = client.post(f"{BASE}/configs/{ids['LETTER']}/reset-counter", json={
        "counter_key": LETTER_KEY, "new_last_sequence": 1,
        "reason": "lower it back to the one issued number"}, headers=root["r1"])
    reset_id = filed.json["reset_request_id"]
    client.post(f"{BASE}/generate", json=letter(), headers=auth())  # the floor rises to 2
    assert client.post(f"{BASE}/reset-requests/{reset_id}/approve",
                       headers=root["r2"]).status_code == 200
    failed = client.post(f"{BASE}/reset-requests/{reset_id}/approve", headers=root["r3"])
    assert failed.status_code == 409 and failed.json["code"] == "COUNTER_FLOOR"
    assert [(r.operation, r.actor, r.success, r.error_code) for r in rows(engine)] == [
        ("RESET_REQUEST", "r1", True, None), ("RESET_APPROVE", "r2", True, None),
        ("RESET_APPROVE", "r3", True, None), ("RESET_EXECUTE", "r3", False, "COUNTER_FLOOR")]
