"""Two-phase issue and the lifecycle after it: confirm, cancel, expire, void and replace.

Real MariaDB, real Redis, the real Celery worker (in a thread) and the Flask app.
"""
from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from docnum.shared import issuing, lifecycle
from docnum.shared.allocation import allocate_many
from docnum.shared.audit import Actor
from docnum.shared.clock import FixedClock, SystemClock
from docnum.shared.db import transaction
from docnum.shared.errors import DocnumError
from docnum.shared.models import AuditRow, IssuedNumber
from tests.conftest import BASE, generate, letter, reserve, wait_for


def reserve_direct(engine, settings, *, body=None, ttl=300, clock=None) -> dict:
    """A reservation straight through the allocator (so a test can choose TTL and clock)."""
    clock = clock or SystemClock()
    ctx = issuing.parse_context(body or letter())
    with transaction(engine) as session:
        config, key, day = issuing.prepare(session, ctx, now=clock.now(),
                                           timezone=settings.timezone)
    request = issuing.build_request(request_id=str(uuid.uuid4()), mode="reserve", ctx=ctx,
                                    config=config, counter_key=key, day=day, actor="alice",
                                    now=clock.now())
    outcome = allocate_many(engine, {key: [request]}, clock=clock, reservation_ttl=ttl)[key][0]
    assert outcome.ok, outcome.error
    return outcome.number


def ledger_row(engine, number: str) -> IssuedNumber:
    with transaction(engine) as session:
        return session.scalar(select(IssuedNumber).where(IssuedNumber.document_number == number))


def audit_rows(engine, number: str, operation: str | None = None) -> list[AuditRow]:
    with transaction(engine) as session:
        query = select(AuditRow).where(AuditRow.document_number == number)
        if operation:
            query = query.where(AuditRow.operation == operation)
        return list(session.scalars(query.order_by(AuditRow.id)))


def test_reserve_0012_cancel_then_next_issue_is_0013(client, auth, seed, engine):
    seed()
    for _ in range(11):
        assert generate(client, auth, letter()).status_code == 201
    reserved = reserve(client, auth, letter())
    assert reserved["document_number"] == "คคง.-สคฉ.3-0012-2568"
    assert reserved["state"] == "RESERVED" and reserved["source"] == "RESERVE"
    token = reserved["reservation"]["token"]

    headers = auth(**{"X-Request-ID": "cancel-trace-1", "User-Agent": "dms/2.0"})
    cancelled = client.post(f"{BASE}/cancel", json={"token": token, "reason": "draft withdrawn"},
                            headers=headers)
    assert cancelled.status_code == 200, cancelled.json
    assert cancelled.json["state"] == "CANCELLED"
    assert cancelled.json["document_number"] == reserved["document_number"]

    following = generate(client, auth, letter())
    assert following.json["document_number"] == "คคง.-สคฉ.3-0013-2568"

    row = ledger_row(engine, reserved["document_number"])
    assert row.state == "CANCELLED" and row.state_reason == "draft withdrawn"
    assert row.state_changed_by == "alice"
    [audit] = audit_rows(engine, reserved["document_number"], "CANCEL")
    assert audit.actor == "alice" and audit.client_ip == "127.0.0.1"
    assert audit.request_id == "cancel-trace-1" and audit.user_agent == "dms/2.0"
    assert audit.before == {"state": "RESERVED"}
    assert audit.after == {"state": "CANCELLED", "reason": "draft withdrawn"}
    assert audit.counter_key == reserved["counter_key"] and audit.success

    # Cancelling again is the same answer and no second transition.
    again = client.post(f"{BASE}/cancel", json={"token": token, "reason": "again"},
                        headers=auth())
    assert again.status_code == 200 and again.json == cancelled.json
    assert len(audit_rows(engine, reserved["document_number"], "CANCEL")) == 1
    assert ledger_row(engine, reserved["document_number"]).state_reason == "draft withdrawn"

    # A cancelled reservation cannot be confirmed; its number explains itself.
    confirm = client.post(f"{BASE}/confirm", json={"token": token}, headers=auth())
    assert confirm.status_code == 409 and confirm.json["code"] == "INVALID_STATE"
    details = client.get(f"{BASE}/numbers/{reserved['document_number']}", headers=auth())
    assert details.json["state"] == "CANCELLED"
    assert details.json["state_reason"] == "draft withdrawn"
    assert [h["operation"] for h in details.json["history"]] == ["RESERVE", "CANCEL"]


def test_confirm_is_idempotent_and_guards_states(client, auth, seed, engine):
    seed()
    reserved = reserve(client, auth, letter())
    token = reserved["reservation"]["token"]
    first = client.post(f"{BASE}/confirm", json={"token": token, "document_ref": "DMS-77"},
                        headers=auth(**{"X-Request-ID": "confirm-1"}))
    assert first.status_code == 200, first.json
    assert first.json["state"] == "CONFIRMED" and first.json["document_ref"] == "DMS-77"
    assert first.json["document_number"] == reserved["document_number"]
    again = client.post(f"{BASE}/confirm", json={"token": token}, headers=auth())
    same_ref = client.post(f"{BASE}/confirm", json={"token": token, "document_ref": "DMS-77"},
                           headers=auth())
    assert again.status_code == same_ref.status_code == 200
    assert again.json == first.json == same_ref.json
    [audit] = audit_rows(engine, reserved["document_number"], "CONFIRM")
    assert audit.request_id == "confirm-1" and audit.actor == "alice"
    assert audit.before == {"state": "RESERVED", "document_ref": None}
    assert audit.after == {"state": "CONFIRMED", "document_ref": "DMS-77"}

    other_ref = client.post(f"{BASE}/confirm", json={"token": token, "document_ref": "DMS-78"},
                            headers=auth())
    assert other_ref.status_code == 409 and other_ref.json["code"] == "CONFLICT"
    cancel = client.post(f"{BASE}/cancel", json={"token": token, "reason": "too late"},
                         headers=auth())
    assert cancel.status_code == 409 and cancel.json["code"] == "INVALID_STATE"
    assert ledger_row(engine, reserved["document_number"]).state == "CONFIRMED"

    unknown = client.post(f"{BASE}/confirm", json={"token": "f" * 32}, headers=auth())
    assert unknown.status_code == 404 and unknown.json["code"] == "NOT_FOUND"
    missing = client.post(f"{BASE}/confirm", json={}, headers=auth())
    assert missing.status_code == 422 and missing.json["errors"][0]["field"] == "token"
    no_reason = client.post(f"{BASE}/cancel", json={"token": token}, headers=auth())
    assert no_reason.status_code == 422 and no_reason.json["errors"][0]["field"] == "reason"
    reader = auth("rita", perms=["correspondence.read"])
    assert client.post(f"{BASE}/confirm", json={"token": token},
                       headers=reader).status_code == 403


def test_reservation_left_alone_expires_and_confirm_answers_410(client, auth, seed, engine,
                                                                 settings, celery_session_app):
    from docnum.api.app import create_app

    seed()
    reserved = reserve(client, auth, letter())
    token = reserved["reservation"]["token"]
    later = SystemClock().now() + timedelta(seconds=settings.reservation_ttl + 1)
    future_app = create_app(settings, celery=celery_session_app, clock=FixedClock(later))
    future = future_app.test_client()

    # Before the sweeper ran: the expiry time alone decides.
    confirm = future.post(f"{BASE}/confirm", json={"token": token}, headers=auth())
    assert confirm.status_code == 410 and confirm.json["code"] == "RESERVATION_EXPIRED"
    cancel = future.post(f"{BASE}/cancel", json={"token": token, "reason": "late"},
                         headers=auth())
    assert cancel.status_code == 410
    assert ledger_row(engine, reserved["document_number"]).state == "RESERVED"

    before = REGISTRY.get_sample_value("docnum_reservations_expired_total") or 0.0
    assert lifecycle.expire_overdue(engine, FixedClock(later)) == {"expired": 1}
    assert REGISTRY.get_sample_value("docnum_reservations_expired_total") == before + 1
    row = ledger_row(engine, reserved["document_number"])
    assert row.state == "EXPIRED" and row.state_changed_by == "system:maintenance"
    [audit] = audit_rows(engine, reserved["document_number"], "EXPIRE")
    assert audit.actor == "system:maintenance" and audit.success
    assert audit.before["state"] == "RESERVED" and audit.after == {"state": "EXPIRED"}
    assert audit.request_id == reserved["request_id"]

    # After the sweeper: still 410, with the real clock too; the number is never reused.
    assert client.post(f"{BASE}/confirm", json={"token": token},
                       headers=auth()).status_code == 410
    assert lifecycle.expire_overdue(engine, FixedClock(later)) == {"expired": 0}
    following = generate(client, auth, letter())
    assert following.json["sequence"] == reserved["sequence"] + 1


def test_short_ttl_expires_in_real_time_and_the_beat_task_sweeps_it(client, auth, seed, engine,
                                                                    settings,
                                                                    celery_session_app):
    from docnum.shared.routing import MAINTENANCE_QUEUE

    seed()
    reserved = reserve_direct(engine, settings, ttl=1)
    time.sleep(1.2)
    confirm = client.post(f"{BASE}/confirm", json={"token": reserved["reservation"]["token"]},
                          headers=auth())
    assert confirm.status_code == 410, confirm.json
    # The scheduled task, run by the real worker on the maintenance queue.
    celery_session_app.send_task("docnum.maintenance.expire_reservations",
                                 queue=MAINTENANCE_QUEUE)
    wait_for(lambda: ledger_row(engine, reserved["document_number"]).state == "EXPIRED",
             message="the beat task to expire the reservation")
    assert len(audit_rows(engine, reserved["document_number"], "EXPIRE")) == 1


def test_sweeper_leaves_confirmed_and_fresh_reservations_alone(seed, engine, settings):
    seed()
    now = SystemClock().now()
    overdue = [reserve_direct(engine, settings, ttl=60) for _ in range(3)]
    confirmed = reserve_direct(engine, settings, ttl=60)
    lifecycle.confirm(engine, confirmed["reservation"]["token"], None, Actor("alice"),
                      FixedClock(now))
    fresh = reserve_direct(engine, settings, ttl=600)
    result = lifecycle.expire_overdue(engine, FixedClock(now + timedelta(seconds=120)), batch=2)
    assert result == {"expired": 3}  # two batches of 2 and 1
    states = {n["document_number"]: ledger_row(engine, n["document_number"]).state
              for n in overdue + [confirmed, fresh]}
    assert [states[n["document_number"]] for n in overdue] == ["EXPIRED"] * 3
    assert states[confirmed["document_number"]] == "CONFIRMED"
    assert states[fresh["document_number"]] == "RESERVED"
    with transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(AuditRow)
                              .where(AuditRow.operation == "EXPIRE")) == 3


def race_once(engine, settings) -> tuple[str, dict[str, object]]:
    """One reservation hit at once by two confirms, two cancels and the sweeper: its number
    and what each call answered (its result, or the code of its refusal)."""
    now = SystemClock().now()
    reserved = reserve_direct(engine, settings, ttl=300)
    token = reserved["reservation"]["token"]
    before_expiry = FixedClock(now + timedelta(seconds=5))
    after_expiry = FixedClock(now + timedelta(seconds=400))
    barrier = threading.Barrier(5)
    results: dict[str, object] = {}

    def run(name: str, call) -> None:
        barrier.wait()
        try:
            results[name] = call()
        except DocnumError as exc:
            results[name] = exc.code

    calls = {
        "confirm1": lambda: lifecycle.confirm(engine, token, None, Actor("u1"),
                                              before_expiry)["state"],
        "confirm2": lambda: lifecycle.confirm(engine, token, None, Actor("u2"),
                                              before_expiry)["state"],
        "cancel1": lambda: lifecycle.cancel(engine, token, "race", Actor("u3"),
                                            before_expiry)["state"],
        "cancel2": lambda: lifecycle.cancel(engine, token, "race", Actor("u4"),
                                            before_expiry)["state"],
        "expire": lambda: lifecycle.expire_overdue(engine, after_expiry)["expired"],
    }
    threads = [threading.Thread(target=run, args=(n, c)) for n, c in calls.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return reserved["document_number"], results


def test_confirm_cancel_expire_racing_leave_one_final_state(seed, engine, settings):
    """Two confirms, two cancels and the sweeper hit one reservation at once, 12 times over."""
    seed()
    winners = []
    for _ in range(12):
        number, results = race_once(engine, settings)
        final = ledger_row(engine, number).state
        transitions = [a.operation for a in audit_rows(engine, number)
                       if a.operation != "RESERVE"]
        winners.append(final)
        assert final in ("CONFIRMED", "CANCELLED", "EXPIRED")
        assert transitions == [{"CONFIRMED": "CONFIRM", "CANCELLED": "CANCEL",
                                "EXPIRED": "EXPIRE"}[final]], (final, transitions)
        confirms = [results["confirm1"], results["confirm2"]]
        cancels = [results["cancel1"], results["cancel2"]]
        if final == "CONFIRMED":
            assert confirms == ["CONFIRMED"] * 2 and cancels == ["INVALID_STATE"] * 2
            assert results["expire"] == 0
        elif final == "CANCELLED":
            assert cancels == ["CANCELLED"] * 2 and confirms == ["INVALID_STATE"] * 2
            assert results["expire"] == 0
        else:
            assert confirms + cancels == ["RESERVATION_EXPIRED"] * 4
            assert results["expire"] == 1
    print("race winners:", winners)


def test_void_and_replace_links_both(client, auth, seed, engine):
    seed()
    original = generate(client, auth, letter()).json
    headers = auth("admin1", perms=["system.manage_settings", "correspondence.read"],
                   **{"X-Request-ID": "void-trace-1"})
    response = client.post(f"{BASE}/admin/void-and-replace",
                           json={"document_number": original["document_number"],
                                 "reason": "wrong recipient on the letter", "replace": True},
                           headers=headers)
    assert response.status_code == 200, response.json
    voided, replacement = response.json["voided"], response.json["replacement"]
    assert voided["state"] == "VOID" and voided["replaced_by"] == replacement["document_number"]
    assert voided["void"]["reason"] == "wrong recipient on the letter"
    assert voided["void"]["by"] == "admin1"
    assert replacement["document_number"] == "คคง.-สคฉ.3-0002-2568"
    assert replacement["state"] == "CONFIRMED" and replacement["source"] == "REPLACE"
    assert replacement["counter_key"] == original["counter_key"]
    assert replacement["document_date"] == original["document_date"]
    assert replacement["replaces"] == original["document_number"]

    shown = client.get(f"{BASE}/numbers/{original['document_number']}", headers=auth()).json
    assert shown["state"] == "VOID" and shown["replaced_by"] == replacement["document_number"]
    assert shown["void"] == voided["void"]
    back = client.get(f"{BASE}/numbers/{replacement['document_number']}", headers=auth()).json
    assert back["replaces"] == original["document_number"] and back["source"] == "REPLACE"

    [void] = audit_rows(engine, original["document_number"], "VOID")
    [replace] = audit_rows(engine, replacement["document_number"], "REPLACE")
    for row in (void, replace):
        assert row.actor == "admin1" and row.client_ip == "127.0.0.1"
        assert row.request_id == "void-trace-1" and row.success
    assert void.before == {"state": "CONFIRMED"}
    assert void.after == {"state": "VOID", "reason": "wrong recipient on the letter",
                          "replaced_by": replacement["document_number"]}
    assert replace.before == {"last_sequence": 1}
    assert replace.after["replaces"] == original["document_number"]

    twice = client.post(f"{BASE}/admin/void-and-replace",
                        json={"document_number": original["document_number"],
                              "reason": "again", "replace": True}, headers=headers)
    assert twice.status_code == 409 and twice.json["code"] == "INVALID_STATE"
    assert "replaced by" in twice.json["detail"]
    with transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(IssuedNumber)) == 2


def test_void_needs_manage_settings_and_a_confirmed_number(client, auth, seed, engine):
    seed()
    number = generate(client, auth, letter()).json["document_number"]
    clerk = auth("clerk", perms=["correspondence.create", "correspondence.read",
                                 "system.view_logs"])
    body = {"document_number": number, "reason": "typo", "replace": False}
    forbidden = client.post(f"{BASE}/admin/void-and-replace", json=body, headers=clerk)
    assert forbidden.status_code == 403 and forbidden.json["code"] == "FORBIDDEN"
    assert ledger_row(engine, number).state == "CONFIRMED"

    reserved = reserve(client, auth, letter())
    not_confirmed = client.post(f"{BASE}/admin/void-and-replace",
                                json=dict(body, document_number=reserved["document_number"]),
                                headers=auth())
    assert not_confirmed.status_code == 409 and not_confirmed.json["code"] == "INVALID_STATE"
    unknown = client.post(f"{BASE}/admin/void-and-replace",
                          json=dict(body, document_number="NOPE-0001-2568"), headers=auth())
    assert unknown.status_code == 404
    no_reason = client.post(f"{BASE}/admin/void-and-replace",
                            json={"document_number": number}, headers=auth())
    assert no_reason.status_code == 422

    plain = client.post(f"{BASE}/admin/void-and-replace", json=body, headers=auth())
    assert plain.status_code == 200 and "replacement" not in plain.json
    assert plain.json["voided"]["state"] == "VOID" and "replaced_by" not in plain.json["voided"]
    # The clerk's 403 and the missing reason are refused VOID attempts on the record.
    assert [(a.operation, a.actor, a.error_code) for a in audit_rows(engine, number)] == [
        ("GENERATE", "alice", None), ("VOID", "clerk", "FORBIDDEN"),
        ("VOID", "alice", "VALIDATION_FAILED"), ("VOID", "alice", None)]


def test_replacement_with_a_changed_context_goes_to_that_counter(client, auth, seed):
    seed()
    original = generate(client, auth, letter()).json
    response = client.post(f"{BASE}/admin/void-and-replace", json={
        "document_number": original["document_number"], "reason": "sent to the wrong party",
        "replace": True, "context": letter(recipient="ผรม.1")}, headers=auth())
    assert response.status_code == 200, response.json
    replacement = response.json["replacement"]
    assert replacement["document_number"] == "คคง.-ผรม.1-0001-2568"
    assert replacement["counter_key"] == "LCBP3|ORIGINATOR=คคง.|RECIPIENT=ผรม.1|Y2025"
    other_project = client.post(f"{BASE}/admin/void-and-replace", json={
        "document_number": replacement["document_number"], "reason": "x", "replace": True,
        "context": letter(project="P2")}, headers=auth())
    assert other_project.status_code == 422


@pytest.mark.parametrize("template", ["{ORIGINATOR}-{RECIPIENT}-{SEQ:1}-{YEAR:B.E.}"])
def test_failed_replacement_leaves_the_number_untouched(client, auth, seed, engine,
                                                         template):
    seed({"LETTER": (template, "YEARLY")})
    numbers = [generate(client, auth, letter()).json["document_number"] for _ in range(9)]
    response = client.post(f"{BASE}/admin/void-and-replace", json={
        "document_number": numbers[0], "reason": "needs a new number", "replace": True},
        headers=auth())
    assert response.status_code == 409 and response.json["code"] == "SEQUENCE_EXHAUSTED"
    row = ledger_row(engine, numbers[0])
    assert row.state == "CONFIRMED" and row.replaced_by is None
    # Nothing voided: only the refused attempt is on the record.
    [refused] = audit_rows(engine, numbers[0], "VOID")
    assert (refused.success, refused.error_code) == (False, "SEQUENCE_EXHAUSTED")
    assert refused.after["attempt"]["input"]["replace"] is True
    with transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(IssuedNumber)) == 9
