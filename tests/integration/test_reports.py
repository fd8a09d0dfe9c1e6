"""The read side: GET /audit (archive included), GET /counters, GET /reports/gaps, and the
config history (a change needs a reason and never touches issued numbers).
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, select, update

from docnum.shared.db import transaction
from docnum.shared.models import AuditArchiveRow, AuditRow, IssuedNumber
from tests.conftest import BASE, generated, letter, reserve

LETTER_KEY = "LCBP3|ORIGINATOR=คคง.|RECIPIENT=สคฉ.3|Y2025"
RFI_KEY = "LCBP3|CORR_TYPE=RFI|ORIGINATOR=คคง.|RECIPIENT=สคฉ.3|Y2025"


def pages(client, url: str, headers: dict) -> list[list[dict]]:
    out, cursor = [], None
    while True:
        sep = "&" if "?" in url else "?"
        response = client.get(url + (f"{sep}cursor={cursor}" if cursor else ""), headers=headers)
        assert response.status_code == 200, response.json
        out.append(response.json["items"])
        cursor = response.json["next_cursor"]
        if cursor is None:
            return out


# --------------------------------------------------------------------------- audit

def archive(engine, ids: list[int]) -> None:
    """Move audit rows to the archive as maintenance does: same ids, same content."""
    columns = [c.name for c in AuditRow.__table__.columns]
    with transaction(engine) as session:
        rows = [dict(r._mapping) for r in session.execute(
            select(*[AuditRow.__table__.c[c] for c in columns]).where(AuditRow.id.in_(ids)))]
        session.execute(insert(AuditArchiveRow), rows)
        session.execute(delete(AuditRow).where(AuditRow.id.in_(ids)))


def test_audit_filters_and_pages_through_live_and_archive(client, auth, seed, engine):
    seed()
    numbers = [generated(client, auth, letter(), sub=s)["document_number"]
               for s in ("alice", "bob", "alice", "carol", "alice")]
    with transaction(engine) as session:
        ids = list(session.scalars(select(AuditRow.id).where(AuditRow.operation == "GENERATE")
                                   .order_by(AuditRow.id)))
    archive(engine, ids[:2])  # the two oldest issues are now in the archive
    viewer = auth("auditor", perms=["system.view_logs"])

    everything = pages(client, f"{BASE}/audit?operation=GENERATE&limit=2", viewer)
    assert [len(p) for p in everything] == [2, 2, 1]
    flat = [row for page in everything for row in page]
    assert [r["id"] for r in flat] == sorted(ids, reverse=True)  # newest first, no repeats
    assert [r["document_number"] for r in flat] == list(reversed(numbers))
    assert flat[-1]["actor"] == "alice" and flat[-1]["operation"] == "GENERATE"

    by_actor = client.get(f"{BASE}/audit?actor=alice", headers=viewer).json["items"]
    assert [r["document_number"] for r in by_actor] == [numbers[4], numbers[2], numbers[0]]
    by_number = client.get(f"{BASE}/audit?document_number={numbers[1]}", headers=viewer).json
    assert [r["actor"] for r in by_number["items"]] == ["bob"]  # found in the archive
    assert by_number["next_cursor"] is None

    # Time window: push the archived rows three years back.
    old = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=3 * 365)
    with transaction(engine) as session:
        session.execute(update(AuditArchiveRow).values(created_at=old))
    recent = client.get(f"{BASE}/audit?from={(old + timedelta(days=1)).date()}",
                        headers=viewer).json["items"]
    assert {r["id"] for r in recent} == set(ids[2:])
    early = client.get(f"{BASE}/audit?to={(old + timedelta(days=1)).date()}",
                       headers=viewer).json["items"]
    assert {r["id"] for r in early} == set(ids[:2])
    iso_window = client.get(f"{BASE}/audit?from=2000-01-01T00:00:00Z"
                            "&to=2000-01-02T00:00:00%2B07:00", headers=viewer).json["items"]
    assert iso_window == []

    bad = client.get(f"{BASE}/audit?operation=DELETE", headers=viewer)
    assert bad.status_code == 422 and bad.json["errors"][0]["field"] == "operation"
    assert client.get(f"{BASE}/audit?from=yesterday", headers=viewer).status_code == 422
    assert client.get(f"{BASE}/audit?cursor=@@@", headers=viewer).status_code == 422
    clerk = auth("clerk", perms=["correspondence.read", "system.manage_settings"])
    assert client.get(f"{BASE}/audit", headers=clerk).status_code == 403


def test_audit_covers_every_operation_with_who_where_and_what(client, auth, seed, engine):
    """Every operation of SPEC §4 this service performs writes a row with actor, ip, request id
    and before/after (GENERATE/RESERVE/EXPIRE by their own paths)."""
    ids = seed()
    headers = {"X-Request-ID": "trace-all"}
    first = generated(client, auth, letter(), **headers)
    reserved = reserve(client, auth, letter())
    client.post(f"{BASE}/confirm", json={"token": reserved["reservation"]["token"]},
                headers=auth(**headers))
    cancelled = reserve(client, auth, letter())
    client.post(f"{BASE}/cancel", json={"token": cancelled["reservation"]["token"],
                                        "reason": "withdrawn"}, headers=auth(**headers))
    client.post(f"{BASE}/admin/void-and-replace", json={
        "document_number": first["document_number"], "reason": "typo in subject",
        "replace": True}, headers=auth(**headers))
    client.post(f"{BASE}/admin/manual-override", json=dict(
        letter(recipient="ผรม.1"), document_number="คคง.-ผรม.1-0100-2568",
        reason="legacy register entry"), headers=auth(**headers))
    client.put(f"{BASE}/catalog/discipline/ARC", json={"name": "Architecture"},
               headers=auth(**headers))
    client.put(f"{BASE}/configs/{ids['MEMO']}", json={"sequence_start": 1,
                                                     "change_reason": "confirm the start"},
               headers=auth(**headers))
    viewer = auth("auditor", perms=["system.view_logs"])
    rows = client.get(f"{BASE}/audit?request_id=trace-all&limit=500", headers=viewer).json
    operations = {r["operation"] for r in rows["items"]}
    assert operations == {"CONFIRM", "CANCEL", "VOID", "REPLACE", "MANUAL_OVERRIDE",
                          "CATALOG_CHANGE", "CONFIG_UPDATE"}
    # Issuing rows carry the issuing request's id (the one GET /requests/{id} knows).
    issued = client.get(f"{BASE}/audit?request_id={first['request_id']}", headers=viewer).json
    assert [r["operation"] for r in issued["items"]] == ["GENERATE"]
    assert {r["operation"] for r in client.get(
        f"{BASE}/audit?request_id={reserved['request_id']}", headers=viewer).json["items"]} \
        == {"RESERVE"}
    for row in rows["items"] + issued["items"]:
        assert row["actor"] == "alice" and row["client_ip"] == "127.0.0.1", row
        assert row["after"] is not None and row["success"], row
        if row["operation"] != "CATALOG_CHANGE":  # creating an entry has no "before"
            assert row["before"] is not None, row


# --------------------------------------------------------------------------- counters

def test_counters_with_capacity_utilization_and_type_filter(client, auth, seed):
    seed()
    for _ in range(3):
        generated(client, auth, letter())
    generated(client, auth, letter(correspondence_type="MEMO"))
    generated(client, auth, letter(correspondence_type="RFI"))
    generated(client, auth, letter(recipient="ผรม.1", document_date="2024-02-01"))
    admin = auth("admin", perms=["system.manage_settings"])
    listed = client.get(f"{BASE}/counters?project=LCBP3", headers=admin).json
    by_key = {c["counter_key"]: c for c in listed["items"]}
    assert set(by_key) == {LETTER_KEY, RFI_KEY, "LCBP3|ORIGINATOR=คคง.|RECIPIENT=ผรม.1|Y2024"}
    letter_counter = by_key[LETTER_KEY]
    assert letter_counter["last_sequence"] == 4 and letter_counter["capacity"] == 9999
    assert abs(letter_counter["utilization"] - 4 / 9999) < 1e-6
    assert listed["next_cursor"] is None

    rfi = client.get(f"{BASE}/counters?project=LCBP3&correspondence_type=RFI",
                     headers=admin).json["items"]
    assert [c["counter_key"] for c in rfi] == [RFI_KEY]
    memo = client.get(f"{BASE}/counters?project=LCBP3&correspondence_type=MEMO",
                      headers=admin).json["items"]  # MEMO shares LETTER's template: its keys
    assert {c["counter_key"] for c in memo} == set(by_key) - {RFI_KEY}
    paged = pages(client, f"{BASE}/counters?limit=1", admin)
    assert [p[0]["counter_key"] for p in paged] == sorted(by_key, key=lambda k: k.encode())
    assert client.get(f"{BASE}/counters?correspondence_type=RFI",
                      headers=admin).status_code == 422
    viewer = auth("auditor", perms=["system.view_logs"])
    assert client.get(f"{BASE}/counters", headers=viewer).status_code == 403


# --------------------------------------------------------------------------- gaps

def test_gaps_list_every_sequence_that_is_not_confirmed(client, auth, seed, engine):
    from docnum.shared import lifecycle
    from docnum.shared.clock import FixedClock

    seed()
    generated(client, auth, letter())                                          # 1 confirmed
    cancelled = reserve(client, auth, letter())                               # 2 cancelled
    client.post(f"{BASE}/cancel", json={"token": cancelled["reservation"]["token"],
                                        "reason": "withdrawn draft"}, headers=auth())
    expired = reserve(client, auth, letter())                                 # 3 expired
    voided = generated(client, auth, letter())                                 # 4 void -> 5
    pending = reserve(client, auth, letter())                                 # 5 reserved
    with transaction(engine) as session:  # expire only sequence 3
        session.execute(update(IssuedNumber).where(
            IssuedNumber.document_number == expired["document_number"])
            .values(reservation_expires_at=datetime(2025, 1, 1)))
    assert lifecycle.expire_overdue(engine, FixedClock(datetime(2025, 6, 1,
                                                                tzinfo=UTC))) == {
        "expired": 1}
    replaced = client.post(f"{BASE}/admin/void-and-replace", json={
        "document_number": voided["document_number"], "reason": "wrong subject",
        "replace": True}, headers=auth("admin1")).json["replacement"]      # 6 replacement
    client.post(f"{BASE}/admin/manual-override", json=dict(
        letter(), document_number="คคง.-สคฉ.3-0009-2568",
        reason="legacy register entry"), headers=auth("admin2"))           # 7, 8 missing; 9
    generated(client, auth, letter(correspondence_type="RFI"))                 # other counter

    viewer = auth("auditor", perms=["system.view_logs"])
    report = client.get(f"{BASE}/reports/gaps?project=LCBP3&correspondence_type=LETTER",
                        headers=viewer).json
    items = {g["sequence"]: g for g in report["items"]}
    assert sorted(items) == [2, 3, 4, 5, 7, 8]
    assert {g["counter_key"] for g in report["items"]} == {LETTER_KEY}
    assert items[2]["state"] == "CANCELLED" and "withdrawn draft" in items[2]["reason"]
    assert items[2]["document_number"] == cancelled["document_number"]
    assert items[3]["state"] == "EXPIRED" and "expired" in items[3]["reason"]
    assert items[4]["state"] == "VOID" and "wrong subject" in items[4]["reason"]
    assert replaced["document_number"] in items[4]["reason"]
    assert items[5]["state"] == "RESERVED" and items[5]["document_number"] == \
        pending["document_number"]
    for sequence in (7, 8):
        assert items[sequence]["state"] == "MISSING"
        assert items[sequence]["document_number"] is None
        assert "MANUAL_OVERRIDE by admin2" in items[sequence]["reason"]
        assert "from 6 to 9" in items[sequence]["reason"]

    paged = pages(client, f"{BASE}/reports/gaps?project=LCBP3&limit=4", viewer)
    assert [len(p) for p in paged] == [4, 2]
    assert [g["sequence"] for p in paged for g in p] == [2, 3, 4, 5, 7, 8]
    assert client.get(f"{BASE}/reports/gaps?project=LCBP3&period=Y2024",
                      headers=viewer).json["items"] == []
    assert len(client.get(f"{BASE}/reports/gaps?period=Y2025",
                          headers=viewer).json["items"]) == 6
    rfi = client.get(f"{BASE}/reports/gaps?project=LCBP3&correspondence_type=RFI",
                     headers=viewer).json
    assert rfi == {"items": [], "next_cursor": None}
    assert client.get(f"{BASE}/reports/gaps?period=2025",
                      headers=viewer).status_code == 422
    clerk = auth("clerk", perms=["correspondence.read", "system.manage_settings"])
    assert client.get(f"{BASE}/reports/gaps", headers=clerk).status_code == 403


# --------------------------------------------------------------------------- config history

def test_config_changes_need_a_reason_and_never_touch_issued_numbers(client, auth, seed,
                                                                      engine):
    ids = seed()
    issued = generated(client, auth, letter())
    url = f"{BASE}/configs/{ids['LETTER']}"
    change = {"template": "{ORIGINATOR}/{RECIPIENT}/{SEQ:4}/{YEAR:B.E.}"}
    no_reason = client.put(url, json=change, headers=auth())
    assert no_reason.status_code == 422
    assert no_reason.json["errors"][0]["field"] == "change_reason"
    changed = client.put(url, json=dict(change, change_reason="the client wants slashes"),
                         headers=auth("admin1", perms=["system.manage_settings"]))
    assert changed.status_code == 200 and changed.json["version"] == 2

    history = client.get(f"{url}/history", headers=auth()).json["items"]
    assert [(h["version"], h["template"]) for h in history] == [
        (1, "{ORIGINATOR}-{RECIPIENT}-{SEQ:4}-{YEAR:B.E.}"),
        (2, "{ORIGINATOR}/{RECIPIENT}/{SEQ:4}/{YEAR:B.E.}")]
    assert history[1]["changed_by"] == "admin1"
    assert history[1]["change_reason"] == "the client wants slashes"

    old = client.get(f"{BASE}/numbers/{issued['document_number']}", headers=auth()).json
    assert old["document_number"] == "คคง.-สคฉ.3-0001-2568" and old["config_version"] == 1
    with transaction(engine) as session:
        row = session.scalar(select(IssuedNumber))
    assert row.template == "{ORIGINATOR}-{RECIPIENT}-{SEQ:4}-{YEAR:B.E.}"
    following = generated(client, auth, letter())
    assert following["document_number"] == "คคง./สคฉ.3/0002/2568"
    assert following["config_version"] == 2
