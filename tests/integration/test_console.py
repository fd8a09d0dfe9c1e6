"""The admin console through Flask's test client: sign-in, CSRF, permissions, and each
page doing its work through the same services (and audit rows) as the API.

Real MariaDB, real Redis, the real Celery worker (in a thread) and the Flask app.
"""
from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
from sqlalchemy import func, select

from docnum.shared.auth import SUPER_ADMIN
from docnum.shared.db import transaction
from docnum.shared.models import (
    AuditRow,
    ConfigHistory,
    Counter,
    IssuedNumber,
    NumberingConfig,
    ResetRequest,
)
from tests.conftest import BASE, count, generated, letter

LETTER_KEY = "LCBP3|ORIGINATOR=คคง.|RECIPIENT=สคฉ.3|Y2025"
ADMIN_PERMS = ["correspondence.read", "correspondence.create", "system.manage_settings",
               "system.view_logs"]
CLERK_PERMS = ["correspondence.read", "correspondence.create", "system.view_logs"]
IMPORT_COLUMNS = ["document_number", "project", "correspondence_type", "originator",
                  "recipient", "sub_type", "rfa_type", "discipline", "document_date", "state"]


# --------------------------------------------------------------------------- helpers

def csrf(client) -> str:
    with client.session_transaction("/console/") as session:
        return session["csrf"]


def sign_in(client, token: str) -> str:
    page = client.get("/console/login")
    assert page.status_code == 200
    response = client.post("/console/login", data={"token": token, "csrf_token": csrf(client)})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return csrf(client)


def console_client(app, token, sub: str = "admin1", perms=None, roles=None):
    client = app.test_client()
    sign_in(client, token(sub, ADMIN_PERMS if perms is None else perms, roles))
    return client


def post(client, path: str, data: dict | None = None, **kwargs: Any):
    body = dict(data or {})
    body.setdefault("csrf_token", csrf(client))
    return client.post(path, data=body, **kwargs)


def text(response) -> str:
    return response.get_data(as_text=True)


def audits(engine, operation: str) -> list[AuditRow]:
    with transaction(engine) as session:
        return list(session.scalars(select(AuditRow).where(AuditRow.operation == operation)
                                    .order_by(AuditRow.id)))


# --------------------------------------------------------------------------- sign-in

def test_sign_in_keeps_the_token_in_a_strict_httponly_cookie_and_signs_out(app, token):
    client = app.test_client()
    first = client.get("/console/templates")
    assert first.status_code == 302 and "/console/login" in first.headers["Location"]
    assert "next=/console/templates" in first.headers["Location"]

    client.get("/console/login")
    bad = client.post("/console/login", data={"token": "not-a-jwt", "csrf_token": csrf(client)})
    assert bad.status_code == 401 and 'id="login-error"' in text(bad)

    response = client.post("/console/login", data={
        "token": "Bearer " + token("ann", ADMIN_PERMS), "csrf_token": csrf(client),
        "next": "/console/templates"})
    assert response.status_code == 302 and response.headers["Location"] == "/console/templates"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("docnum_console=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http here; https below
    page = client.get("/console/templates")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["X-Frame-Options"] == "DENY"
    home = client.get("/console/")
    assert home.status_code == 200 and 'id="signed-in-as"' in text(home) and "ann" in text(home)

    signed_out = post(client, "/console/logout")
    assert signed_out.status_code == 302
    assert client.get("/console/").status_code == 302

    over_tls = app.test_client()
    over_tls.get("/console/login", base_url="https://localhost")
    answer = over_tls.post("/console/login", base_url="https://localhost",
                           data={"token": token("ann", ADMIN_PERMS),
                                 "csrf_token": csrf(over_tls)})
    assert "Secure" in answer.headers["Set-Cookie"]


def test_an_open_redirect_after_sign_in_is_refused(app, token):
    client = app.test_client()
    client.get("/console/login")
    response = client.post("/console/login", data={"token": token("ann", ADMIN_PERMS),
                                                   "csrf_token": csrf(client),
                                                   "next": "https://evil.example/console/"})
    assert response.headers["Location"] == "/console/"


def test_the_token_is_checked_again_on_every_request(app, token):
    client = console_client(app, token)
    assert client.get("/console/templates").status_code == 200
    with client.session_transaction("/console/") as session:
        session["token"] = token("admin1", ADMIN_PERMS, ttl=-60)  # expired since a minute
    response = client.get("/console/templates")
    assert response.status_code == 302 and "expired=1" in response.headers["Location"]
    with client.session_transaction("/console/") as session:
        assert "token" not in session
    login = client.get(response.headers["Location"])
    assert "expired" in text(login).lower()


def test_posts_without_the_csrf_token_are_refused(app, token, seed, engine):
    ids = seed()
    client = console_client(app, token)
    form = {"action": "save", "template": "{ORIGINATOR}/{RECIPIENT}/{SEQ:4}/{YEAR:B.E.}",
            "reset": "YEARLY", "change_reason": "slashes asked for by the client"}
    missing = client.post(f"/console/templates/{ids['LETTER']}", data=form)
    assert missing.status_code == 400
    wrong = client.post(f"/console/templates/{ids['LETTER']}",
                        data=dict(form, csrf_token="x" * 43))
    assert wrong.status_code == 400
    assert client.post("/console/logout").status_code == 400
    check = client.post(f"/console/templates/{ids['LETTER']}/check",
                        json={"template": "{SEQ:4}"})
    assert check.status_code == 400
    assert count(engine, ConfigHistory) == len(ids)  # only the seeded versions
    anonymous = app.test_client()
    anonymous.get("/console/login")
    assert anonymous.post("/console/login", data={"token": token()}).status_code == 400


# --------------------------------------------------------------------------- permissions

ADMIN_PAGES = ["/console/templates", "/console/templates/{id}",
               "/console/templates/{id}/history", "/console/counters", "/console/admin",
               "/console/resets"]
ADMIN_POSTS = [
    ("/console/templates/{id}", {"action": "save", "template": "{ORIGINATOR}/{SEQ:4}/{YYYY}",
                                 "reset": "YEARLY", "change_reason": "a long enough reason"}),
    ("/console/templates/{id}/check", None),
    ("/console/admin/void", {"document_number": "คคง.-สคฉ.3-0001-2568", "reason": "mistake",
                             "confirm": "yes", "replace": "1"}),
    ("/console/admin/override", {"document_number": "คคง.-สคฉ.3-0500-2568",
                                 "project": "LCBP3", "correspondence_type": "LETTER",
                                 "originator": "คคง.", "recipient": "สคฉ.3",
                                 "reason": "legacy letter from paper", "confirm": "yes"}),
    ("/console/admin/import", "file"),
    ("/console/admin/import/commit", {"import_id": "A" * 32}),
    ("/console/resets", {"counter_key": LETTER_KEY, "new_last_sequence": "5",
                         "reason": "a reason that is long enough for a reset"}),
    ("/console/resets/1/approve", {}),
]


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_admin_pages_are_403_without_manage_settings(app, token, seed, path):
    ids = seed()
    clerk = console_client(app, token, "clerk", CLERK_PERMS)
    response = clerk.get(path.format(id=ids["LETTER"]))
    assert response.status_code == 403, path
    assert 'data-status="403"' in text(response)


@pytest.mark.parametrize("path,data", ADMIN_POSTS, ids=[p for p, _ in ADMIN_POSTS])
def test_admin_posts_are_403_without_manage_settings(app, token, auth, seed, engine, client,
                                                     path, data):
    ids = seed()
    generated(client, auth, letter())
    clerk = console_client(app, token, "clerk", CLERK_PERMS)
    target = path.format(id=ids["LETTER"])
    if data is None:
        response = clerk.post(target, json={"template": "{SEQ:4}"},
                              headers={"X-CSRF-Token": csrf(clerk)})
    elif data == "file":
        response = post(clerk, target, {"file": (io.BytesIO(b"document_number\n"), "a.csv")},
                        content_type="multipart/form-data")
    else:
        response = post(clerk, target, data)
    assert response.status_code == 403, (path, text(response)[:300])
    with transaction(engine) as session:
        assert session.get(NumberingConfig, ids["LETTER"]).version == 1
        assert session.scalar(select(IssuedNumber.state)) == "CONFIRMED"
    assert count(engine, IssuedNumber) == 1 and count(engine, ResetRequest) == 0
    # The refused attempt is on the record: the operation it attempted, by whom, 403. The
    # validate-as-you-type check attempts nothing.
    with transaction(engine) as session:
        refused = [(a.operation, a.actor, a.success, a.error_code) for a in session.scalars(
            select(AuditRow).where(AuditRow.operation != "GENERATE"))]
    expected = ATTEMPTED[path]
    assert refused == ([(expected, "clerk", False, "FORBIDDEN")] if expected else []), path


ATTEMPTED = {"/console/templates/{id}": "CONFIG_UPDATE", "/console/templates/{id}/check": None,
             "/console/admin/void": "VOID", "/console/admin/override": "MANUAL_OVERRIDE",
             "/console/admin/import": "IMPORT", "/console/admin/import/commit": "IMPORT",
             "/console/resets": "RESET_REQUEST", "/console/resets/1/approve": "RESET_APPROVE"}


def test_the_api_refuses_the_same_user_too(client, auth, seed):
    ids = seed()
    clerk = auth("clerk", perms=CLERK_PERMS)
    response = client.put(f"{BASE}/configs/{ids['LETTER']}", json={
        "template": "{ORIGINATOR}/{SEQ:4}/{YYYY}", "change_reason": "a long enough reason"},
        headers=clerk)
    assert response.status_code == 403


def test_navigation_shows_only_what_the_token_allows(app, token, seed):
    seed()
    clerk = console_client(app, token, "clerk", ["correspondence.read"])
    page = text(clerk.get("/console/"))
    assert 'data-nav="lookup"' in page
    for hidden in ("templates", "counters", "admin", "resets", "audit"):
        assert f'data-nav="{hidden}"' not in page
    assert clerk.get("/console/audit").status_code == 403
    assert clerk.get("/console/numbers").status_code == 200

    manager = console_client(app, token, "manager", ADMIN_PERMS)
    page = text(manager.get("/console/"))
    for shown in ("templates", "counters", "lookup", "admin", "audit"):
        assert f'data-nav="{shown}"' in page
    assert 'data-nav="resets"' not in page  # SUPER_ADMIN only
    assert manager.get("/console/resets").status_code == 403

    boss = console_client(app, token, "boss", [], [SUPER_ADMIN])
    assert 'data-nav="resets"' in text(boss.get("/console/"))
    assert boss.get("/console/templates").status_code == 200  # SUPER_ADMIN has every perm


# --------------------------------------------------------------------------- language

def test_language_from_accept_language_and_the_switch(app, token, seed):
    seed()
    client = app.test_client()
    thai = client.get("/console/login", headers={"Accept-Language": "th-TH,th;q=0.9,en;q=0.5"})
    assert '<html lang="th">' in text(thai) and "เข้าสู่ระบบ" in text(thai)
    english = client.get("/console/login?lang=en", headers={"Accept-Language": "th"})
    assert '<html lang="en">' in text(english) and "Sign in" in text(english)
    # The choice is kept in the session.
    again = client.get("/console/login", headers={"Accept-Language": "th"})
    assert '<html lang="en">' in text(again)
    sign_in(client, token("ann", ADMIN_PERMS))
    page = text(client.get("/console/templates?lang=th"))
    assert "รูปแบบเลขที่เอกสาร" in page and "ค่าเริ่มต้นของโครงการ" not in page


# --------------------------------------------------------------------------- templates

def test_templates_page_lists_configs_per_project(app, token, seed):
    ids = seed()
    seed({"LETTER": ("{ORIGINATOR}-{SEQ:5}-{YYYY}", "YEARLY")}, project="P2")
    client = console_client(app, token)
    page = text(client.get("/console/templates"))
    assert 'data-project="LCBP3"' in page and 'data-project="P2"' in page
    assert f'data-config="{ids["RFI"]}"' in page
    only_p2 = text(client.get("/console/templates?project=P2"))
    assert 'data-project="LCBP3"' not in only_p2 and "{ORIGINATOR}-{SEQ:5}-{YYYY}" in only_p2


def test_validation_error_shows_the_rule_and_position(app, token, seed):
    ids = seed()
    client = console_client(app, token)
    page = post(client, f"/console/templates/{ids['LETTER']}",
                {"action": "check", "template": "{SEQ:4}{SEQ:3}", "reset": "NONE"})
    assert page.status_code == 200
    body = text(page)
    assert 'data-rule="seq_repeated"' in body and 'data-position="7"' in body
    assert "<mark>{</mark>" in body  # the offending character is marked

    answer = client.post(f"/console/templates/{ids['LETTER']}/check",
                         json={"template": "{SEQ:4}{SEQ:3}", "reset": "NONE"},
                         headers={"X-CSRF-Token": csrf(client)})
    assert answer.status_code == 200
    assert answer.json["valid"] is False
    assert answer.json["rule"] == "seq_repeated" and answer.json["position"] == 7
    assert "seq_repeated" in answer.json["validation_html"]
    thai = client.post(f"/console/templates/{ids['LETTER']}/check?lang=th",
                       json={"template": "{SEQ:4}{SEQ:3}", "reset": "NONE"},
                       headers={"X-CSRF-Token": csrf(client)})
    assert "มี {SEQ:n} มากกว่าหนึ่งตัว" in thai.json["validation_html"]


def test_preview_reads_the_real_counter_and_consumes_nothing(app, token, auth, client, seed,
                                                             engine):
    ids = seed()
    generated(client, auth, letter())
    generated(client, auth, letter())
    console = console_client(app, token)
    editor = text(console.get(f"/console/templates/{ids['LETTER']}?document_date=2025-06-15"))
    assert "คคง.-สคฉ.3-0003-2568" in editor  # sample codes are the last number's

    # "The first RFI of 2569": a date in 2026 A.D. on a counter nobody has used yet.
    rfi = console.post(f"/console/templates/{ids['RFI']}/check", json={
        "template": "{PROJECT}-{ORIGINATOR}-{RECIPIENT}-{CORR_TYPE}-{SEQ:4}-{YY:B.E.}",
        "reset": "YEARLY", "originator": "คคง.", "recipient": "สคฉ.3",
        "document_date": "2026-01-15"}, headers={"X-CSRF-Token": csrf(console)})
    assert rfi.json["valid"] is True
    assert [n["document_number"] for n in rfi.json["numbers"]] == [
        "LCBP3-คคง.-สคฉ.3-RFI-0001-69", "LCBP3-คคง.-สคฉ.3-RFI-0002-69",
        "LCBP3-คคง.-สคฉ.3-RFI-0003-69"]
    assert rfi.json["counter_key"] == "LCBP3|CORR_TYPE=RFI|ORIGINATOR=คคง.|RECIPIENT=สคฉ.3|Y2026"

    # An unsaved template on the letter counter: same counter, next sequence 3.
    edited = console.post(f"/console/templates/{ids['LETTER']}/check", json={
        "template": "{ORIGINATOR}/{RECIPIENT}/{SEQ:5}/{YEAR:B.E.}", "reset": "YEARLY",
        "originator": "คคง.", "recipient": "สคฉ.3", "document_date": "2025-06-15"},
        headers={"X-CSRF-Token": csrf(console)})
    assert edited.json["numbers"][0] == {"sequence": 3,
                                         "document_number": "คคง./สคฉ.3/00003/2568"}
    missing_code = console.post(f"/console/templates/{ids['LETTER']}/check", json={
        "template": "{ORIGINATOR}-{RECIPIENT}-{SEQ:4}-{YEAR:B.E.}", "reset": "YEARLY",
        "originator": "คคง.", "recipient": "", "document_date": "2025-06-15"},
        headers={"X-CSRF-Token": csrf(console)})
    assert missing_code.json["valid"] is True
    assert missing_code.json["preview_error"]["code"] == "VALIDATION_FAILED"

    with transaction(engine) as session:
        assert session.get(Counter, LETTER_KEY).last_sequence == 2
        assert session.scalar(select(func.count()).select_from(Counter)) == 1
    assert count(engine, IssuedNumber) == 2


def test_save_with_a_reason_appears_in_history_with_a_diff(app, token, seed, engine, client,
                                                           auth):
    ids = seed()
    console = console_client(app, token, "ann")
    short = post(console, f"/console/templates/{ids['LETTER']}", {
        "action": "save", "template": "{ORIGINATOR}/{RECIPIENT}/{SEQ:4}/{YEAR:B.E.}",
        "reset": "YEARLY", "change_reason": "short", "version": "1"})
    assert short.status_code == 200 and "change_reason" in text(short)
    saved = post(console, f"/console/templates/{ids['LETTER']}", {
        "action": "save", "template": "{ORIGINATOR}/{RECIPIENT}/{SEQ:4}/{YEAR:B.E.}",
        "reset": "YEARLY", "change_reason": "slashes requested by the client", "version": "1"})
    assert saved.status_code == 302
    assert saved.headers["Location"] == f"/console/templates/{ids['LETTER']}/history"
    history = text(console.get(saved.headers["Location"]))
    assert "slashes requested by the client" in history and 'data-version="2"' in history
    assert '<span class="ddel">- template: {ORIGINATOR}-{RECIPIENT}-{SEQ:4}-{YEAR:B.E.}' \
        in history
    assert '<span class="dadd">+ template: {ORIGINATOR}/{RECIPIENT}/{SEQ:4}/{YEAR:B.E.}' \
        in history
    # A stale form (version 1 again) is refused rather than overwriting version 2.
    stale = post(console, f"/console/templates/{ids['LETTER']}", {
        "action": "save", "template": "{ORIGINATOR}_{RECIPIENT}_{SEQ:4}_{YEAR:B.E.}",
        "reset": "YEARLY", "change_reason": "another change from an old tab", "version": "1"})
    assert stale.status_code == 200 and "CONFLICT" in text(stale)

    [short_refused, audit, stale_refused] = audits(engine, "CONFIG_UPDATE")
    assert (short_refused.success, short_refused.error_code) == (False, "VALIDATION_FAILED")
    assert (stale_refused.success, stale_refused.error_code) == (False, "CONFLICT")
    assert stale_refused.actor == "ann" and stale_refused.after["attempt"]["input"][
        "template"] == "{ORIGINATOR}_{RECIPIENT}_{SEQ:4}_{YEAR:B.E.}"
    assert "csrf_token" not in stale_refused.after["attempt"]["input"]
    assert audit.actor == "ann" and audit.success and audit.before["version"] == 1
    assert audit.after["version"] == 2
    assert audit.after["change_reason"] == "slashes requested by the client"
    # The API's answer (and its issuing) follow the new version at once.
    number = generated(client, auth, letter())
    assert number["document_number"] == "คคง./สคฉ.3/0001/2568"


# --------------------------------------------------------------------------- counters

def test_counters_show_utilization_levels_and_link_to_gaps(app, token, seed, engine, client,
                                                           auth):
    seed()
    generated(client, auth, letter())
    from docnum.shared.clock import SystemClock, to_db

    now = to_db(SystemClock().now())
    with transaction(engine) as session:
        session.add_all([
            Counter(counter_key="LCBP3|ORIGINATOR=TEAM-A|RECIPIENT=TEAM-B|Y2025",
                    project="LCBP3", last_sequence=9100, capacity=9999, updated_at=now),
            Counter(counter_key="LCBP3|ORIGINATOR=TEAM-B|RECIPIENT=TEAM-A|Y2025",
                    project="LCBP3", last_sequence=9600, capacity=9999, updated_at=now)])
    console = console_client(app, token)
    page = text(console.get("/console/counters"))
    assert f'data-counter="{LETTER_KEY}" data-level="ok"' in page
    assert 'data-counter="LCBP3|ORIGINATOR=TEAM-A|RECIPIENT=TEAM-B|Y2025" data-level="amber"' \
        in page
    assert 'data-counter="LCBP3|ORIGINATOR=TEAM-B|RECIPIENT=TEAM-A|Y2025" data-level="red"' \
        in page
    assert 'class="bar red"' in page and 'class="bar amber"' in page
    amber_key = "LCBP3|ORIGINATOR=TEAM-A|RECIPIENT=TEAM-B|Y2025"
    gaps = console.get("/console/counters/gaps", query_string={"counter_key": amber_key})
    assert gaps.status_code == 200 and 'data-state="MISSING"' in text(gaps)


# --------------------------------------------------------------------------- lookup, void

def test_void_with_confirmation_and_the_replacement_chain(app, token, seed, engine, client,
                                                          auth):
    seed()
    original = generated(client, auth, letter(document_ref="DMS-42"))["document_number"]
    console = console_client(app, token, "ann")
    form = {"document_number": original, "reason": "sent to the wrong recipient",
            "replace": "1"}
    confirm = post(console, "/console/admin/void", form)
    assert confirm.status_code == 200 and 'id="confirm-void"' in text(confirm)
    with transaction(engine) as session:
        assert session.scalar(select(IssuedNumber.state)) == "CONFIRMED"  # not yet

    done = post(console, "/console/admin/void", dict(form, confirm="yes"))
    assert done.status_code == 200
    replacement = re.search(r'id="replacement-link"><code>([^<]+)</code>', text(done)).group(1)
    assert replacement == "คคง.-สคฉ.3-0002-2568"

    voided = text(console.get("/console/numbers", query_string={"number": original}))
    assert 'data-state="VOID"' in voided and "sent to the wrong recipient" in voided
    link = re.search(r'id="replaced-by-link" href="([^"]+)"', voided).group(1)
    assert "DMS-42" in voided
    followed = text(console.get(link.replace("&amp;", "&")))
    assert f'data-number="{replacement}"' in followed and 'data-state="CONFIRMED"' in followed
    assert 'id="replaces-link"' in followed and original in followed
    assert 'class="chain"' in followed

    [void_row] = audits(engine, "VOID")
    [replace_row] = audits(engine, "REPLACE")
    assert void_row.actor == replace_row.actor == "ann"
    assert void_row.request_id == replace_row.request_id

    again = post(console, "/console/admin/void", dict(form, confirm="yes"))
    assert again.status_code == 409 and "INVALID_STATE" in text(again)


def test_lookup_of_an_unknown_number(app, token, seed):
    seed()
    console = console_client(app, token, "reader", ["correspondence.read"])
    page = console.get("/console/numbers", query_string={"number": "NOPE-0001-2568"})
    assert page.status_code == 200 and 'data-code="NOT_FOUND"' in text(page)


def test_manual_override_with_confirmation(app, token, seed, engine):
    seed()
    console = console_client(app, token, "ann")
    form = {"document_number": "คคง.-ผรม.1-0500-2568", "project": "LCBP3",
            "correspondence_type": "LETTER", "originator": "คคง.", "recipient": "ผรม.1",
            "document_date": "2025-03-01", "reason": "legacy letter from the paper register"}
    confirm = post(console, "/console/admin/override", form)
    assert confirm.status_code == 200, text(confirm)[:2000]
    assert "LCBP3|ORIGINATOR=คคง.|RECIPIENT=ผรม.1|Y2025" in text(confirm)
    assert count(engine, IssuedNumber) == 0
    done = post(console, "/console/admin/override", dict(form, confirm="yes"))
    assert done.status_code == 200 and 'id="override-link"' in text(done)
    with transaction(engine) as session:
        row = session.scalar(select(IssuedNumber))
        assert row.source == "MANUAL" and row.sequence == 500 and row.issued_by == "ann"
    [audit] = audits(engine, "MANUAL_OVERRIDE")
    assert audit.after["counter_raise"] == {"from": 0, "to": 500}
    short = post(console, "/console/admin/override", dict(form, reason="short"))
    assert short.status_code == 422 and "reason" in text(short)


# --------------------------------------------------------------------------- import

def csv_file(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(IMPORT_COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def test_import_dry_run_then_commit(app, token, seed, engine):
    seed()
    content = csv_file([
        ["คคง.-สคฉ.3-0007-2568", "LCBP3", "LETTER", "คคง.", "สคฉ.3", "", "", "", "2025-02-01",
         "CONFIRMED"],
        ["OLD/2010/0017", "LCBP3", "LETTER", "คคง.", "สคฉ.3", "", "", "", "2010-05-01",
         "VOID"]])
    console = console_client(app, token, "ann")
    dry = post(console, "/console/admin/import",
               {"file": (io.BytesIO(content), "register.csv")},
               content_type="multipart/form-data")
    assert dry.status_code == 200, text(dry)[:1000]
    page = text(dry)
    assert 'id="import-rows">2<' in page and 'id="import-imported">2<' in page
    assert LETTER_KEY in page  # the counter raise to 7
    import_id = re.search(r'name="import_id" value="([^"]+)"', page).group(1)
    assert count(engine, IssuedNumber) == 0  # a dry run writes nothing

    done = post(console, "/console/admin/import/commit", {"import_id": import_id})
    assert done.status_code == 200 and 'id="import-done"' in text(done)
    with transaction(engine) as session:
        assert sorted(session.scalars(select(IssuedNumber.source))) == ["IMPORT", "IMPORT"]
        assert session.get(Counter, LETTER_KEY).last_sequence == 7
    assert [a.actor for a in audits(engine, "IMPORT")] == ["ann", "ann"]
    # The stashed file is gone: committing again imports nothing twice.
    again = post(console, "/console/admin/import/commit", {"import_id": import_id})
    assert again.status_code == 409
    assert count(engine, IssuedNumber) == 2

    # Re-uploading the same file: everything already imported, nothing to commit.
    redo = text(post(console, "/console/admin/import",
                     {"file": (io.BytesIO(content), "register.csv")},
                     content_type="multipart/form-data"))
    assert 'id="import-already">2<' in redo and 'id="commit-form"' not in redo


def test_import_dry_run_with_errors_offers_no_commit(app, token, seed, engine):
    seed()
    content = csv_file([["คคง.-สคฉ.3-0007-2568", "LCBP3", "LETTER", "NOPE", "สคฉ.3", "", "",
                         "", "2025-02-01", "CONFIRMED"]])
    console = console_client(app, token)
    dry = post(console, "/console/admin/import",
               {"file": (io.BytesIO(content), "bad.csv")}, content_type="multipart/form-data")
    page = text(dry)
    assert "UNKNOWN_CODE" in page and 'id="commit-form"' not in page
    no_columns = post(console, "/console/admin/import",
                      {"file": (io.BytesIO(b"number\nX\n"), "bad.csv")},
                      content_type="multipart/form-data")
    assert no_columns.status_code == 422 and "missing column" in text(no_columns)
    assert count(engine, IssuedNumber) == 0


# --------------------------------------------------------------------------- resets

def test_reset_filed_and_approved_by_three_super_admins(app, token, seed, engine, client,
                                                        auth):
    seed()
    for _ in range(3):
        generated(client, auth, letter())
    alice = console_client(app, token, "alice", [], [SUPER_ADMIN])
    bob = console_client(app, token, "bob", [], [SUPER_ADMIN])
    carol = console_client(app, token, "carol", [], [SUPER_ADMIN])

    floor_page = text(alice.get("/console/resets", query_string={"counter_key": LETTER_KEY}))
    assert 'id="floor-check" data-floor="3"' in floor_page

    below = post(alice, "/console/resets", {"counter_key": LETTER_KEY, "new_last_sequence": "1",
                                            "reason": "restart the register after the audit"})
    assert below.status_code == 409 and "COUNTER_FLOOR" in text(below)

    filed = post(alice, "/console/resets", {"counter_key": LETTER_KEY,
                                            "new_last_sequence": "10",
                                            "reason": "skip ahead to match the paper register"})
    assert filed.status_code == 302
    [request_id] = [r.id for r in _resets(engine)]
    own = text(alice.get("/console/resets"))
    assert f'data-reset="{request_id}"' in own and "skip ahead to match the paper register" in own
    assert f"/console/resets/{request_id}/approve" not in own  # the requester cannot approve
    self_approval = post(alice, f"/console/resets/{request_id}/approve")
    assert self_approval.status_code == 409 and "SELF_APPROVAL" in text(self_approval)

    assert post(bob, f"/console/resets/{request_id}/approve").status_code == 302
    pending = text(bob.get("/console/resets"))
    assert "bob" in pending and "1 / 2" in pending
    twice = post(bob, f"/console/resets/{request_id}/approve")
    assert twice.status_code == 409 and "ALREADY_APPROVED" in text(twice)

    executed = post(carol, f"/console/resets/{request_id}/approve")
    assert executed.status_code == 302
    finished = text(carol.get("/console/resets"))
    assert f'data-reset="{request_id}" data-status="EXECUTED"' in finished
    with transaction(engine) as session:
        assert session.get(Counter, LETTER_KEY).last_sequence == 10
    # The refusals are on the record as the operation attempted, success = false.
    assert [(a.actor, a.error_code) for a in audits(engine, "RESET_APPROVE")] == [
        ("alice", "SELF_APPROVAL"), ("bob", None), ("bob", "ALREADY_APPROVED"),
        ("carol", None)]
    assert [(a.actor, a.error_code, a.counter_key) for a in audits(engine, "RESET_REQUEST")] \
        == [("alice", "COUNTER_FLOOR", LETTER_KEY), ("alice", None, LETTER_KEY)]
    assert [a.actor for a in audits(engine, "RESET_EXECUTE")] == ["carol"]
    assert generated(client, auth, letter())["sequence"] == 11


def _resets(engine) -> list[ResetRequest]:
    with transaction(engine) as session:
        return list(session.scalars(select(ResetRequest)))


# --------------------------------------------------------------------------- audit

def test_audit_page_filters_pages_and_exports_csv(app, token, seed, engine, client, auth,
                                                   monkeypatch):
    from docnum.api.console import views

    seed()
    numbers = [generated(client, auth, letter())["document_number"] for _ in range(3)]
    console = console_client(app, token)
    page = text(console.get("/console/audit", query_string={"operation": "GENERATE"}))
    assert page.count('data-operation="GENERATE"') == 3
    one = text(console.get("/console/audit", query_string={"document_number": numbers[1]}))
    assert one.count('data-operation="GENERATE"') == 1

    monkeypatch.setattr(views, "PAGE", 2)
    first = text(console.get("/console/audit", query_string={"operation": "GENERATE"}))
    assert first.count('data-operation="GENERATE"') == 2
    next_link = re.search(r'class="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    second = text(console.get(next_link))
    assert second.count('data-operation="GENERATE"') == 1

    bad = console.get("/console/audit", query_string={"from": "yesterday"})
    assert bad.status_code == 200 and "VALIDATION_FAILED" in text(bad)

    export = console.get("/console/audit.csv", query_string={"operation": "GENERATE"})
    assert export.status_code == 200
    assert export.mimetype == "text/csv" and "attachment" in export.headers["Content-Disposition"]
    body = export.get_data().decode("utf-8")
    assert body.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(body.lstrip("\ufeff"))))
    assert sorted(r["document_number"] for r in rows) == sorted(numbers)
    assert {r["operation"] for r in rows} == {"GENERATE"}
    assert all(r["success"] == "true" for r in rows)

    reader = console_client(app, token, "reader", ["correspondence.read"])
    assert reader.get("/console/audit.csv").status_code == 403
