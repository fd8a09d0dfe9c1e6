"""Administration that writes: manual override, bulk import and the two-person counter reset.

Real MariaDB, real Redis, the real Celery worker (in a thread) and the Flask app.
"""
from __future__ import annotations

import csv
import io
import time
from datetime import datetime

import pytest
from sqlalchemy import select

from docnum.shared.db import transaction
from docnum.shared.models import AuditRow, Counter, IssuedNumber, ResetRequest
from tests.conftest import BASE, count, generate, letter

LETTER_KEY_ผรม = "LCBP3|ORIGINATOR=คคง.|RECIPIENT=ผรม.1|Y2025"
LETTER_KEY = "LCBP3|ORIGINATOR=คคง.|RECIPIENT=สคฉ.3|Y2025"
COLUMNS = ["document_number", "project", "correspondence_type", "originator", "recipient",
           "sub_type", "rfa_type", "discipline", "document_date", "state"]


def last_sequence(engine, key: str) -> int | None:
    with transaction(engine) as session:
        return session.scalar(select(Counter.last_sequence).where(Counter.counter_key == key))


def audits(engine, operation: str, success: bool | None = None) -> list[AuditRow]:
    stmt = select(AuditRow).where(AuditRow.operation == operation)
    if success is not None:
        stmt = stmt.where(AuditRow.success.is_(success))
    with transaction(engine) as session:
        return list(session.scalars(stmt.order_by(AuditRow.id)))


# --------------------------------------------------------------------------- manual override

def override(client, auth, number, reason="legacy letter from the paper register",
             headers=None, **context: str | None):
    body = dict(letter(recipient="ผรม.1", document_date="2025-03-01"), **context)
    body = {k: v for k, v in body.items() if v is not None}
    body.update(document_number=number, reason=reason)
    return client.post(f"{BASE}/admin/manual-override", json=body, headers=headers or auth())


def test_override_raises_the_counter_and_refuses_a_duplicate(client, auth, seed, engine):
    seed()
    headers = auth("admin1", perms=["system.manage_settings"],
                   **{"X-Request-ID": "override-1"})
    created = override(client, auth, "คคง.-ผรม.1-0500-2568", headers=headers)
    assert created.status_code == 201, created.json
    assert created.json["source"] == "MANUAL" and created.json["state"] == "CONFIRMED"
    assert created.json["sequence"] == 500 and created.json["counter_key"] == LETTER_KEY_ผรม
    assert last_sequence(engine, LETTER_KEY_ผรม) == 500

    following = generate(client, auth, letter(recipient="ผรม.1"))
    assert following.status_code == 201
    assert following.json["document_number"] == "คคง.-ผรม.1-0501-2568"

    again = override(client, auth, "คคง.-ผรม.1-0500-2568")
    assert again.status_code == 409 and again.json["code"] == "DUPLICATE_NUMBER"
    [audit, refused] = audits(engine, "MANUAL_OVERRIDE")
    # The refused second attempt is on the record too (the operation it attempted, failed).
    assert (refused.actor, refused.success, refused.error_code) == (
        "alice", False, "DUPLICATE_NUMBER")
    assert refused.document_number == "คคง.-ผรม.1-0500-2568" and refused.request_id
    assert refused.after["attempt"]["route"] == f"POST {BASE}/admin/manual-override"
    assert refused.after["attempt"]["input"]["reason"] == "legacy letter from the paper register"
    assert audit.actor == "admin1" and audit.request_id == "override-1"
    assert audit.client_ip == "127.0.0.1" and audit.document_number == "คคง.-ผรม.1-0500-2568"
    assert audit.before == {"last_sequence": 0}
    assert audit.after["counter_raise"] == {"from": 0, "to": 500}
    assert audit.after["reason"] == "legacy letter from the paper register"
    details = client.get(f"{BASE}/numbers/คคง.-ผรม.1-0500-2568", headers=auth()).json
    assert details["source"] == "MANUAL" and details["history"][0]["operation"] == "MANUAL_OVERRIDE"


def test_override_below_the_counter_never_lowers_it(client, auth, seed, engine):
    seed()
    assert override(client, auth, "คคง.-ผรม.1-0500-2568").status_code == 201
    lower = override(client, auth, "คคง.-ผรม.1-0300-2568")
    assert lower.status_code == 201 and lower.json["sequence"] == 300
    assert last_sequence(engine, LETTER_KEY_ผรม) == 500


def test_override_of_a_legacy_number_that_fits_no_template(client, auth, seed, engine):
    seed()
    legacy = override(client, auth, "OLD/2010/0017")
    assert legacy.status_code == 201, legacy.json
    assert legacy.json["sequence"] is None and legacy.json["counter_key"] is None
    assert count(engine, Counter) == 0


@pytest.mark.parametrize("number,change,code,field", [
    ("คคง.-ผรม.1-0500-2568", {"reason": "too short"}, "VALIDATION_FAILED", "reason"),
    ("คคง. ผรม.1 0500", {}, "VALIDATION_FAILED", "document_number"),
    ("X" * 51, {}, "NUMBER_LENGTH", "document_number"),
    # The number reads as recipient ผรม.1: registering it under สคฉ.3 would let a future
    # ผรม.1 letter collide with it.
    ("คคง.-ผรม.1-0500-2568", {"recipient": "สคฉ.3"}, "VALIDATION_FAILED", "document_number"),
    ("คคง.-ผรม.1-0500-2568", {"document_date": "2024-12-31"}, "VALIDATION_FAILED",
     "document_date"),
    ("คคง.-ผรม.1-0500-2568", {"originator": "NOPE"}, "UNKNOWN_CODE", "originator"),
])
def test_bad_overrides_write_nothing(client, auth, seed, engine, number, change, code,
                                     field):
    seed()
    reason = change.pop("reason", "legacy letter from the paper register")
    response = override(client, auth, number, reason=reason, **change)
    assert response.status_code in (409, 422), response.json
    assert response.json["code"] == code
    assert field in {e["field"] for e in response.json.get("errors", [])}
    assert count(engine, IssuedNumber) == 0 and count(engine, Counter) == 0
    # Only the refused attempt is on the record.
    assert [(a.operation, a.success, a.error_code) for a in audits(engine, "MANUAL_OVERRIDE")
            ] == [("MANUAL_OVERRIDE", False, code)]
    assert count(engine, AuditRow) == 1


def test_override_refuses_a_sequence_held_under_an_older_template(client, auth, seed,
                                                                  engine):
    ids = seed()
    generate(client, auth, letter())  # คคง.-สคฉ.3-0001-2568 on LETTER_KEY
    changed = client.put(f"{BASE}/configs/{ids['LETTER']}", json={
        "template": "{ORIGINATOR}/{RECIPIENT}/{SEQ:4}/{YEAR:B.E.}",
        "change_reason": "slashes requested by the client"}, headers=auth())
    assert changed.status_code == 200
    # Same counter key and sequence 1, rendered differently: still the same slot.
    response = override(client, auth, "คคง./สคฉ.3/0001/2568", recipient="สคฉ.3")
    assert response.status_code == 409 and response.json["code"] == "DUPLICATE_NUMBER"
    assert "held by คคง.-สคฉ.3-0001-2568" in response.json["detail"]


def test_override_needs_manage_settings(client, auth, seed, engine):
    seed()
    clerk = auth("clerk", perms=["correspondence.create", "correspondence.read"])
    response = override(client, auth, "คคง.-ผรม.1-0500-2568", headers=clerk)
    assert response.status_code == 403
    assert count(engine, IssuedNumber) == 0


# --------------------------------------------------------------------------- bulk import

def csv_bytes(rows: list[dict], extra_columns: tuple[str, ...] = ()) -> bytes:
    columns = COLUMNS + list(extra_columns)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return out.getvalue().encode("utf-8")


def letter_row(sequence: int, originator: str = "คคง.", recipient: str = "สคฉ.3",
               **extra: str) -> dict:
    row = {"document_number": f"{originator}-{recipient}-{sequence:04d}-2568",
           "project": "LCBP3", "correspondence_type": "LETTER", "originator": originator,
           "recipient": recipient, "document_date": "2025-05-01", "state": "CONFIRMED"}
    row.update(extra)
    return row


def upload(client, auth, content: bytes, *, dry_run: bool, name: str = "legacy.csv",
           headers=None):
    query = "?dry_run=true" if dry_run else ""
    return client.post(f"{BASE}/admin/bulk-import{query}",
                       data={"file": (io.BytesIO(content), name)},
                       content_type="multipart/form-data", headers=headers or auth())


def test_import_dry_run_then_real_then_again(client, auth, seed, engine):
    seed()
    rows = [letter_row(s) for s in (1, 2, 3, 4)] + [letter_row(2)]  # row 6 repeats row 3
    bad = csv_bytes(rows)

    dry = upload(client, auth, bad, dry_run=True)
    assert dry.status_code == 200, dry.json
    assert dry.json["rows"] == 5 and dry.json["imported"] == 0
    assert [(e["row"], e["code"]) for e in dry.json["errors"]] == [(6, "DUPLICATE_NUMBER")]
    assert "row 3" in dry.json["errors"][0]["message"]
    assert count(engine, IssuedNumber) == 0 and count(engine, Counter) == 0
    assert count(engine, AuditRow) == 0

    # A real run of the bad file is refused whole: 422 with the same report, nothing written.
    refused = upload(client, auth, bad, dry_run=False)
    assert refused.status_code == 422 and refused.json["code"] == "VALIDATION_FAILED"
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert [(e["row"], e["code"]) for e in refused.json["errors"]] == [(6, "DUPLICATE_NUMBER")]
    assert refused.json["imported"] == 0
    assert count(engine, IssuedNumber) == 0
    [attempt] = audits(engine, "IMPORT")  # the refused attempt, not its rows
    assert (attempt.success, attempt.error_code) == (False, "VALIDATION_FAILED")
    assert attempt.after["attempt"]["input"]["file"] == "file 'legacy.csv'"
    assert count(engine, AuditRow) == 1

    good = csv_bytes(rows[:4])
    check = upload(client, auth, good, dry_run=True)
    assert check.json["errors"] == [] and check.json["imported"] == 4
    assert check.json["counter_raises"] == [{"counter_key": LETTER_KEY, "from": 0, "to": 4}]
    assert count(engine, IssuedNumber) == 0

    headers = auth("importer", perms=["system.manage_settings"],
                   **{"X-Request-ID": "import-1"})
    done = upload(client, auth, good, dry_run=False, headers=headers)
    assert done.status_code == 200, done.json
    assert done.json["imported"] == 4 and done.json["already_imported"] == 0
    assert done.json["counter_raises"] == [{"counter_key": LETTER_KEY, "from": 0, "to": 4}]
    assert last_sequence(engine, LETTER_KEY) == 4
    with transaction(engine) as session:
        ledger = list(session.scalars(select(IssuedNumber).order_by(IssuedNumber.sequence)))
    assert [r.sequence for r in ledger] == [1, 2, 3, 4]
    assert {r.source for r in ledger} == {"IMPORT"} and {r.state for r in ledger} == {"CONFIRMED"}
    assert {r.issued_by for r in ledger} == {"importer"}
    imports = audits(engine, "IMPORT", success=True)
    assert len(imports) == 4
    assert {(a.actor, a.request_id, a.client_ip) for a in imports} == {
        ("importer", "import-1", "127.0.0.1")}
    assert imports[-1].after["counter_raise"] == {"from": 0, "to": 4}
    assert {a.before["last_sequence"] for a in imports} == {0}
    assert [a.after["row"] for a in imports] == [2, 3, 4, 5]

    following = generate(client, auth, letter())
    assert following.json["document_number"] == "คคง.-สคฉ.3-0005-2568"

    again = upload(client, auth, good, dry_run=False)
    assert again.status_code == 200
    assert again.json["imported"] == 0 and again.json["already_imported"] == 4
    assert again.json["counter_raises"] == [] and again.json["errors"] == []
    assert count(engine, IssuedNumber) == 5
    assert len(audits(engine, "IMPORT", success=True)) == 4


def test_import_dry_run_reports_every_bad_row(client, auth, seed, engine):
    seed()
    taken = generate(client, auth, letter()).json["document_number"]  # sequence 1
    rows = [
        letter_row(2),                                                   # row 2: fine
        letter_row(3, recipient="NOPE"),                                 # row 3: unknown code
        letter_row(4, document_date="2025-02-30"),                       # row 4: bad date
        letter_row(5, state="DRAFT"),                                    # row 5: bad state
        dict(letter_row(1), document_number=taken),                      # row 6: in the ledger
        letter_row(2),                                                   # row 7: twice in file
        letter_row(6, document_number="X" * 60),                         # row 8: too long
        letter_row(7, recipient="ผรม.1",
                   document_number="คคง.-สคฉ.3-0007-2568"),              # row 9: codes disagree
        letter_row(8, project=""),                                       # row 10: no project
        letter_row(9, project="P2"),                                     # row 11: no config
        letter_row(10, document_date="2024-05-01"),                      # row 12: wrong period
    ]
    report = upload(client, auth, csv_bytes(rows), dry_run=True)
    assert report.status_code == 200, report.json
    got = {(e["row"], e["code"]) for e in report.json["errors"]}
    assert got >= {(3, "UNKNOWN_CODE"), (4, "VALIDATION_FAILED"), (5, "VALIDATION_FAILED"),
                   (6, "DUPLICATE_NUMBER"), (7, "DUPLICATE_NUMBER"), (8, "NUMBER_LENGTH"),
                   (9, "VALIDATION_FAILED"), (10, "VALIDATION_FAILED"), (11, "NO_CONFIG"),
                   (12, "VALIDATION_FAILED")}
    assert 2 not in {e["row"] for e in report.json["errors"]}
    assert {e["row"] for e in report.json["errors"]} == set(range(3, 13))
    assert report.json["rows"] == 11 and report.json["imported"] == 0
    assert count(engine, IssuedNumber) == 1


def test_import_xlsx_with_dates_numbers_and_states(client, auth, seed, engine):
    from openpyxl import Workbook

    seed()
    book = Workbook()
    sheet = book.active
    sheet.append(COLUMNS + ["document_ref"])
    sheet.append(["คคง.-สคฉ.3-21-0007-2568", "LCBP3", "TRANSMITTAL", "คคง.", "สคฉ.3", 21, None,
                  None, datetime(2025, 4, 2), "CONFIRMED", "PAPER-7"])
    sheet.append(["คคง.-สคฉ.3-21-0003-2568", "LCBP3", "TRANSMITTAL", "คคง.", "สคฉ.3", "21",
                  None, None, "2025-04-01", "void"])
    sheet.append([None] * 11)  # blank rows are ignored
    out = io.BytesIO()
    book.save(out)
    response = upload(client, auth, out.getvalue(), dry_run=False, name="legacy.xlsx")
    assert response.status_code == 200, response.json
    assert response.json["imported"] == 2 and response.json["rows"] == 2
    key = "LCBP3|ORIGINATOR=คคง.|RECIPIENT=สคฉ.3|SUB_TYPE=21|Y2025"
    assert response.json["counter_raises"] == [{"counter_key": key, "from": 0, "to": 7}]
    with transaction(engine) as session:
        rows = {r.sequence: r for r in session.scalars(select(IssuedNumber))}
    assert rows[7].document_ref == "PAPER-7" and rows[7].sub_type == "21"
    assert str(rows[7].document_date) == "2025-04-02"
    assert rows[3].state == "VOID"
    following = generate(client, auth, letter(correspondence_type="TRANSMITTAL", sub_type="21"))
    assert following.json["document_number"] == "คคง.-สคฉ.3-21-0008-2568"


def test_import_file_problems(client, auth, seed, monkeypatch):
    seed()
    no_state = b"document_number,project,correspondence_type\nA-1,LCBP3,LETTER\n"
    missing = upload(client, auth, no_state, dry_run=True)
    assert missing.status_code == 422
    assert "missing column state" in missing.json["detail"]
    not_utf8 = upload(client, auth, "document_number\n\u0e01".encode("cp874"), dry_run=True)
    assert not_utf8.status_code == 422
    from docnum.api import routes_admin

    monkeypatch.setattr(routes_admin, "MAX_IMPORT_BYTES", 200)
    too_big = upload(client, auth, csv_bytes([letter_row(s) for s in range(1, 10)]),
                     dry_run=True)
    assert too_big.status_code == 413 and too_big.json["code"] == "PAYLOAD_TOO_LARGE"
    monkeypatch.undo()
    no_file = client.post(f"{BASE}/admin/bulk-import", data={},
                          content_type="multipart/form-data", headers=auth())
    assert no_file.status_code == 422 and no_file.json["errors"][0]["field"] == "file"
    as_json = client.post(f"{BASE}/admin/bulk-import", json={}, headers=auth())
    assert as_json.status_code == 415
    clerk = auth("clerk", perms=["correspondence.create"])
    assert upload(client, auth, csv_bytes([letter_row(1)]), dry_run=True,
                  headers=clerk).status_code == 403


def test_import_10000_rows(client, auth, seed, engine, capsys):
    """10,000 rows over five counters: dry run, real run and re-import, each timed."""
    seed()
    pairs = [("คคง.", "สคฉ.3"), ("คคง.", "ผรม.1"), ("สคฉ.3", "คคง."), ("TEAM-A", "TEAM-B"),
             ("ผรม.1", "TEAM-A")]
    rows = [letter_row(s, o, r, document_ref=f"PAPER-REGISTER/2568/{o}{r}/{s:05d}")
            for o, r in pairs for s in range(1, 2001)]
    content = csv_bytes(rows, ("document_ref",))
    assert len(content) > 1024 * 1024  # over the 1 MiB JSON limit: imports may be larger
    timings = {}
    started = time.perf_counter()
    dry = upload(client, auth, content, dry_run=True)
    timings["dry run"] = time.perf_counter() - started
    assert dry.status_code == 200 and dry.json["errors"] == []
    assert dry.json["imported"] == 10_000 and count(engine, IssuedNumber) == 0

    started = time.perf_counter()
    real = upload(client, auth, content, dry_run=False)
    timings["import"] = time.perf_counter() - started
    assert real.status_code == 200, real.json
    assert real.json["imported"] == 10_000
    assert sorted((r["from"], r["to"]) for r in real.json["counter_raises"]) == [(0, 2000)] * 5
    assert count(engine, IssuedNumber) == 10_000
    assert count(engine, AuditRow, AuditRow.operation == "IMPORT") == 10_000
    assert count(engine, IssuedNumber, IssuedNumber.document_ref
                 == "PAPER-REGISTER/2568/TEAM-ATEAM-B/01999") == 1

    started = time.perf_counter()
    again = upload(client, auth, content, dry_run=False)
    timings["re-import"] = time.perf_counter() - started
    assert again.json["imported"] == 0 and again.json["already_imported"] == 10_000
    assert count(engine, IssuedNumber) == 10_000
    with capsys.disabled():
        print(f"\n10,000-row import ({len(content) / 1e6:.2f} MB CSV): "
              + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    assert all(v < 30 for v in timings.values()), timings


# --------------------------------------------------------------------------- counter reset

def root(auth, sub: str, **extra: str):
    return auth(sub, perms=[], roles=["SUPER_ADMIN"], **extra)


REASON = "counter restarted after the paper register was closed"


def request_reset(client, auth, config_id, new_last, sub="root1", key=LETTER_KEY,
                  reason=REASON):
    return client.post(f"{BASE}/configs/{config_id}/reset-counter",
                       json={"counter_key": key, "new_last_sequence": new_last,
                             "reason": reason}, headers=root(auth, sub))


def approve(client, auth, reset_id, sub):
    return client.post(f"{BASE}/reset-requests/{reset_id}/approve", headers=root(auth, sub))


def test_reset_needs_two_other_approvers_then_executes(client, auth, seed, engine):
    ids = seed()
    for _ in range(3):
        generate(client, auth, letter())
    filed = request_reset(client, auth, ids["LETTER"], 10)
    assert filed.status_code == 202, filed.json
    assert filed.json["status"] == "PENDING_APPROVAL" and filed.json["approvals"] == []
    reset_id = filed.json["reset_request_id"]

    own = approve(client, auth, reset_id, "root1")
    assert own.status_code == 409 and own.json["code"] == "SELF_APPROVAL"
    first = approve(client, auth, reset_id, "root2")
    assert first.status_code == 200 and first.json["status"] == "PENDING_APPROVAL"
    assert [a["approver"] for a in first.json["approvals"]] == ["root2"]
    twice = approve(client, auth, reset_id, "root2")
    assert twice.status_code == 409 and twice.json["code"] == "ALREADY_APPROVED"
    assert last_sequence(engine, LETTER_KEY) == 3  # one approval is not enough

    second = approve(client, auth, reset_id, "root3")
    assert second.status_code == 200, second.json
    assert second.json["status"] == "EXECUTED" and second.json["executed_at"]
    assert [a["approver"] for a in second.json["approvals"]] == ["root2", "root3"]
    assert last_sequence(engine, LETTER_KEY) == 10
    assert generate(client, auth, letter()).json["document_number"] == "คคง.-สคฉ.3-0011-2568"
    late = approve(client, auth, reset_id, "root4")
    assert late.status_code == 409 and late.json["code"] == "INVALID_STATE"

    [req] = audits(engine, "RESET_REQUEST")
    assert req.actor == "root1" and req.counter_key == LETTER_KEY
    assert req.before == {"last_sequence": 3, "floor": 3}
    assert req.after["new_last_sequence"] == 10 and req.after["reset_request_id"] == reset_id
    approvals = audits(engine, "RESET_APPROVE")
    # Refused approvals are recorded as the operation they attempted, with success = false.
    assert [(a.actor, a.success, a.error_code) for a in approvals] == [
        ("root1", False, "SELF_APPROVAL"), ("root2", True, None),
        ("root2", False, "ALREADY_APPROVED"), ("root3", True, None),
        ("root4", False, "INVALID_STATE")]
    assert {a.counter_key for a in approvals} == {LETTER_KEY}
    assert approvals[0].after["attempt"]["route"] == (
        f"POST {BASE}/reset-requests/{reset_id}/approve")
    [execute] = audits(engine, "RESET_EXECUTE")
    assert execute.actor == "root3" and execute.success
    assert execute.before == {"last_sequence": 3, "floor": 3}
    assert execute.after["last_sequence"] == 10
    assert execute.after["approvers"] == ["root2", "root3"]
    for row in [req, execute, *approvals]:
        assert row.client_ip == "127.0.0.1" and row.request_id

    listed = client.get(f"{BASE}/reset-requests?status=EXECUTED", headers=root(auth, "root9"))
    assert [r["reset_request_id"] for r in listed.json["items"]] == [reset_id]
    pending = client.get(f"{BASE}/reset-requests?status=PENDING_APPROVAL",
                         headers=root(auth, "root9"))
    assert pending.json["items"] == []


def test_reset_floor_is_the_highest_sequence_ever_issued(client, auth, seed, engine):
    ids = seed()
    for _ in range(3):
        generate(client, auth, letter())
    reserved = client.post(f"{BASE}/reserve", json=letter(), headers=auth()).json
    client.post(f"{BASE}/cancel", json={"token": reserved["reservation"]["token"],
                                        "reason": "not needed"}, headers=auth())
    below = request_reset(client, auth, ids["LETTER"], 3)  # sequence 4 is cancelled, not free
    assert below.status_code == 409 and below.json["code"] == "COUNTER_FLOOR"
    assert below.json["floor"] == 4
    assert count(engine, ResetRequest) == 0
    [refused] = audits(engine, "RESET_REQUEST")  # nothing filed; the attempt is on the record
    assert (refused.actor, refused.success, refused.error_code) == (
        "root1", False, "COUNTER_FLOOR")
    assert refused.counter_key == LETTER_KEY
    assert refused.after["attempt"]["input"]["new_last_sequence"] == 3

    # Raise to 20, then lower back to the floor: allowed, sequences 5-20 were never issued.
    up = request_reset(client, auth, ids["LETTER"], 20).json["reset_request_id"]
    approve(client, auth, up, "root2")
    approve(client, auth, up, "root3")
    assert last_sequence(engine, LETTER_KEY) == 20
    down = request_reset(client, auth, ids["LETTER"], 4).json["reset_request_id"]
    approve(client, auth, down, "root2")
    assert approve(client, auth, down, "root3").json["status"] == "EXECUTED"
    assert generate(client, auth, letter()).json["document_number"] == "คคง.-สคฉ.3-0005-2568"


def test_reset_rechecks_the_floor_when_it_executes(client, auth, seed, engine):
    ids = seed()
    generate(client, auth, letter())
    reset_id = request_reset(client, auth, ids["LETTER"], 2).json["reset_request_id"]
    for _ in range(4):  # meanwhile the counter moves on to 5
        generate(client, auth, letter())
    approve(client, auth, reset_id, "root2")
    refused = approve(client, auth, reset_id, "root3")
    assert refused.status_code == 409 and refused.json["code"] == "COUNTER_FLOOR"
    assert last_sequence(engine, LETTER_KEY) == 5
    with transaction(engine) as session:
        assert session.get(ResetRequest, reset_id).status == "FAILED"
    [execute] = audits(engine, "RESET_EXECUTE")
    assert not execute.success and execute.error_code == "COUNTER_FLOOR"
    assert len(audits(engine, "RESET_APPROVE")) == 2


def test_reset_validation_and_permissions(client, auth, seed, engine):
    ids = seed()
    generate(client, auth, letter())
    everything = auth("boss")  # every permission, but not the SUPER_ADMIN role
    forbidden = client.post(f"{BASE}/configs/{ids['LETTER']}/reset-counter",
                            json={"counter_key": LETTER_KEY, "new_last_sequence": 9,
                                  "reason": REASON}, headers=everything)
    assert forbidden.status_code == 403
    short = request_reset(client, auth, ids["LETTER"], 9, reason="too short a reason")
    assert short.status_code == 422 and short.json["errors"][0]["field"] == "reason"
    other_config = request_reset(client, auth, ids["RFI"], 9)
    assert other_config.status_code == 422
    unused = request_reset(client, auth, ids["LETTER"], 9, key=LETTER_KEY_ผรม)
    assert unused.status_code == 422
    negative = request_reset(client, auth, ids["LETTER"], -1)
    assert negative.status_code == 422
    over = request_reset(client, auth, ids["LETTER"], 10_000)
    assert over.status_code == 422
    assert request_reset(client, auth, 999999, 9).status_code == 404

    reset_id = request_reset(client, auth, ids["LETTER"], 9).json["reset_request_id"]
    second = request_reset(client, auth, ids["LETTER"], 12, sub="root2")
    assert second.status_code == 409 and second.json["code"] == "CONFLICT"
    assert client.post(f"{BASE}/reset-requests/{reset_id}/approve",
                       headers=everything).status_code == 403
    assert client.get(f"{BASE}/reset-requests", headers=everything).status_code == 403
    assert approve(client, auth, 999999, "root2").status_code == 404
    shown = client.get(f"{BASE}/reset-requests/{reset_id}", headers=root(auth, "root2"))
    assert shown.json["status"] == "PENDING_APPROVAL" and shown.json["new_last_sequence"] == 9
