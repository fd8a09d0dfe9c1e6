"""The admin console in a real browser: Debian's headless Chromium driven by Selenium through
the system chromedriver (no browser download), against the app on a real loopback server with
the in-thread Celery worker (``live_server``).

Screenshots of every page, in English and Thai, go to ``$DOCNUM_CONSOLE_SCREENSHOTS`` when it is
set (``scripts/console_screenshots`` sets it to ``docs/console``), else to a temp directory.
"""
from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from docnum.shared.auth import SUPER_ADMIN
from tests.conftest import BASE, generated, letter

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
LETTER_KEY = "LCBP3|ORIGINATOR=คคง.|RECIPIENT=สคฉ.3|Y2025"
ADMIN_PERMS = ["correspondence.read", "correspondence.create", "system.manage_settings",
               "system.view_logs"]
IMPORT_COLUMNS = ["document_number", "project", "correspondence_type", "originator",
                  "recipient", "sub_type", "rfa_type", "discipline", "document_date", "state"]
WAIT_S = 15


def _missing_browser() -> str | None:
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e '.[test]')"
    if not (shutil.which("chromium") or os.path.exists(CHROMIUM)) \
            or not os.path.exists(CHROMEDRIVER):
        return ("Debian's chromium and chromium-driver are not installed (scripts/bootstrap --test "
                "installs them: apt-get install chromium chromium-driver)")
    return None


@pytest.fixture(scope="module")
def driver() -> Iterator[object]:
    reason = _missing_browser()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")
    profile = tempfile.mkdtemp(prefix="docnum-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-extensions",
                "--window-size=1280,900", "--lang=en-US", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def shots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("DOCNUM_CONSOLE_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("console-shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Console:
    """A small page-object over the Selenium driver."""

    def __init__(self, driver, base: str, token, shots: Path) -> None:
        self.d = driver
        self.base = base
        self.token = token
        self.shots = shots
        driver.delete_all_cookies()

    # -- navigation
    def open(self, path: str) -> None:
        self.d.get(self.base + path)

    def css(self, selector: str):
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list:
        from selenium.webdriver.common.by import By

        return self.d.find_elements(By.CSS_SELECTOR, selector)

    def wait(self, predicate, message: str = "condition"):
        from selenium.common.exceptions import (
            NoSuchElementException,
            StaleElementReferenceException,
        )
        from selenium.webdriver.support.ui import WebDriverWait

        # The page may still be the previous one, or be replaced while it is read: try again.
        ignored = (NoSuchElementException, StaleElementReferenceException)
        return WebDriverWait(self.d, WAIT_S, ignored_exceptions=ignored).until(
            lambda _: predicate(), message=message)

    def wait_css(self, selector: str):
        return self.wait(lambda: (self.all(selector) or [None])[0], selector)

    def click(self, selector: str) -> None:
        self.wait_css(selector).click()

    def text(self) -> str:
        return self.css("body").text

    def fill(self, selector: str, value: str) -> None:
        element = self.css(selector)
        element.clear()
        element.send_keys(value)

    def set_value(self, selector: str, value: str) -> None:
        """Set a field (a date input, say) the way a picker would, firing input and change."""
        self.d.execute_script(
            "var e = document.querySelector(arguments[0]); e.value = arguments[1];"
            "e.dispatchEvent(new Event('input', {bubbles: true}));"
            "e.dispatchEvent(new Event('change', {bubbles: true}));", selector, value)

    # -- session
    def sign_in(self, sub: str, perms: list[str] | None = None,
                roles: list[str] | None = None) -> None:
        self.open("/console/login")
        self.css("#token").send_keys(self.token(sub, ADMIN_PERMS if perms is None else perms,
                                                roles))
        self.click("#sign-in")
        self.wait(lambda: self.all("#signed-in-as"), "signed in")
        assert self.css("#signed-in-as").text == sub

    def sign_out(self) -> None:
        self.click("#sign-out")
        self.wait(lambda: self.all("#login-form"), "signed out")

    def shot(self, name: str) -> Path:
        """A PNG of the whole page (not only the viewport), through the DevTools protocol."""
        import base64

        metrics = self.d.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        clip = {"x": 0, "y": 0, "width": max(1280, int(size["width"])),
                "height": min(int(size["height"]), 6000), "scale": 1}
        image = self.d.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True, "clip": clip})
        path = self.shots / f"{name}.png"
        path.write_bytes(base64.b64decode(image["data"]))
        return path


@pytest.fixture
def console(driver, live_server, token, shots_dir) -> Console:
    return Console(driver, live_server, token, shots_dir)


# --------------------------------------------------------------------------- flows

def test_edit_a_template_preview_validate_save_and_find_it_in_history(console, seed, client,
                                                                      auth):
    ids = seed()
    generated(client, auth, letter())  # คคง.-สคฉ.3-0001-2568: the counter is at 1
    console.sign_in("somchai")
    console.click('[data-nav="templates"]')
    console.click(f'tr[data-config="{ids["LETTER"]}"] .edit-link')
    console.wait_css("#template")
    console.set_value("#document_date", "2025-06-15")
    console.wait(lambda: "คคง.-สคฉ.3-0002-2568" in console.css("#preview").text,
                 "the preview of the next letter")

    console.fill("#template", "{ORIGINATOR}/{RECIPIENT}/{SEQ:5}/{YEAR:B.E.}")
    console.wait(lambda: "คคง./สคฉ.3/00002/2568" in console.css("#preview").text,
                 "the preview to follow the edited template")

    console.fill("#template", "{SEQ:4}{SEQ:3}")
    problem = console.wait_css('#validation [data-rule="seq_repeated"]')
    assert problem.get_attribute("data-position") == "7"
    assert "seq_repeated" in console.css("#validation").text

    console.fill("#template", "{ORIGINATOR}/{RECIPIENT}/{SEQ:4}/{YEAR:B.E.}")
    console.wait(lambda: console.all('#validation [data-valid="true"]'), "valid again")
    console.fill("#change_reason", "slashes requested by the client")
    console.click("#save-button")
    console.wait(lambda: console.all("table.history"), "the history page")
    row = console.css('tr[data-version="2"]')
    assert "slashes requested by the client" in row.text
    assert "somchai" in row.text
    assert "{ORIGINATOR}/{RECIPIENT}/{SEQ:4}/{YEAR:B.E.}" in row.find_element(
        "css selector", ".dadd").text


def test_import_dry_run_then_commit(console, seed, engine, tmp_path):
    seed()
    path = tmp_path / "register.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(IMPORT_COLUMNS)
        writer.writerow(["คคง.-สคฉ.3-0007-2568", "LCBP3", "LETTER", "คคง.", "สคฉ.3", "", "",
                         "", "2025-02-01", "CONFIRMED"])
        writer.writerow(["คคง.-สคฉ.3-0008-2568", "LCBP3", "LETTER", "คคง.", "สคฉ.3", "", "",
                         "", "2025-02-03", "VOID"])
    console.sign_in("somchai")
    console.click('[data-nav="admin"]')
    console.css("#import-file").send_keys(str(path))
    console.click("#dry-run-button")
    console.wait_css("#import-summary")
    assert console.css("#import-rows").text == "2"
    assert console.css("#import-imported").text == "2"
    assert LETTER_KEY in console.text()
    console.click("#commit-button")
    done = console.wait_css("#import-done")
    assert "2" in done.text
    console.open("/console/numbers?number=" + "คคง.-สคฉ.3-0008-2568")
    assert console.css(".number-card").get_attribute("data-state") == "VOID"


def test_reset_filed_and_approved_by_three_super_admins(console, seed, client, auth):
    seed()
    for _ in range(3):
        generated(client, auth, letter())
    console.sign_in("alice", [], [SUPER_ADMIN])
    console.click('[data-nav="counters"]')
    console.wait_css(f'tr[data-counter="{LETTER_KEY}"]').find_element(
        "partial link text", "Reset").click()
    floor = console.wait_css("#floor-check")
    assert floor.get_attribute("data-floor") == "3"
    console.fill('#reset-form [name="new_last_sequence"]', "10")
    console.fill('#reset-form [name="reason"]', "skip ahead to match the paper register")
    console.click("#file-reset-button")
    row = console.wait_css("#pending-resets tr[data-reset]")
    reset_id = row.get_attribute("data-reset")
    assert "alice" in row.text and not row.find_elements("css selector", ".approve-button")
    console.sign_out()

    console.sign_in("bob", [], [SUPER_ADMIN])
    console.click('[data-nav="resets"]')
    console.click(f'#pending-resets tr[data-reset="{reset_id}"] .approve-button')
    console.wait(lambda: "1 / 2" in console.css(
        f'#pending-resets tr[data-reset="{reset_id}"]').text, "bob's approval")
    console.sign_out()

    console.sign_in("carol", [], [SUPER_ADMIN])
    console.click('[data-nav="resets"]')
    console.click(f'#pending-resets tr[data-reset="{reset_id}"] .approve-button')
    done = console.wait_css(f'#done-resets tr[data-reset="{reset_id}"]')
    assert done.get_attribute("data-status") == "EXECUTED"
    assert "bob, carol" in done.text
    assert generated(client, auth, letter())["sequence"] == 11


def test_look_up_a_voided_number_and_follow_its_replacement(console, seed, client,
                                                             auth):
    seed()
    original = generated(client, auth, letter(document_ref="DMS-42"))["document_number"]
    console.sign_in("somchai")
    console.click('[data-nav="admin"]')
    console.fill('#void-form [name="document_number"]', original)
    console.fill('#void-form [name="reason"]', "sent to the wrong recipient")
    console.click('#void-form [name="replace"]')
    console.css("#void-form button").click()
    console.wait_css("#confirm-void")
    console.click("#confirm-button")
    replacement = console.wait_css("#replacement-link").text

    console.click('[data-nav="lookup"]')
    console.fill("#number", original)
    console.click("#lookup-button")
    console.wait_css(".number-card")
    assert console.css("#number-state").text == "Void"
    assert console.css("#document-ref").text == "DMS-42"
    console.click("#replaced-by-link")
    card = console.wait_css(f'.number-card[data-number="{replacement}"]')
    assert card.get_attribute("data-state") == "CONFIRMED"
    assert console.css("#replaces-link").text == original


def test_a_reservation_that_was_not_confirmed_does_not_say_confirmed(console, seed, client,
                                                                     auth):
    """The page that says whether a number is genuine names how far its reservation got."""
    seed()
    held = client.post(f"{BASE}/reserve?timeout=10", json=letter(), headers=auth())
    assert held.status_code == 201, held.json
    dropped = client.post(f"{BASE}/reserve?timeout=10", json=letter(), headers=auth())
    assert client.post(f"{BASE}/cancel", json={"token": dropped.json["reservation"]["token"],
                                                "reason": "draft withdrawn"},
                       headers=auth()).status_code == 200
    kept = client.post(f"{BASE}/reserve?timeout=10", json=letter(), headers=auth())
    assert client.post(f"{BASE}/confirm", json={"token": kept.json["reservation"]["token"]},
                       headers=auth()).status_code == 200
    console.sign_in("somchai")
    expected = {held.json["document_number"]: ("Reserved", "Reserved, not confirmed yet"),
                dropped.json["document_number"]: ("Cancelled", "Reserved, then cancelled"),
                kept.json["document_number"]: ("Confirmed", "Reserved, then confirmed")}
    for number, (state, source) in expected.items():
        console.open("/console/numbers?number=" + number)
        console.wait_css(f'.number-card[data-number="{number}"]')
        assert console.css("#number-state").text == state
        shown = console.css("#number-source").text
        assert shown.startswith(source) and "RESERVE" in shown, (number, shown)
        if state != "Confirmed":
            assert "confirmed" not in shown.replace("not confirmed", ""), shown


def test_times_are_shown_in_bangkok_with_utc_on_hover(console, seed, client, auth):
    from datetime import datetime, timedelta

    seed()
    number = generated(client, auth, letter())
    console.sign_in("somchai")
    console.open("/console/numbers?number=" + number["document_number"])
    console.wait_css(".number-card")
    shown = console.css(".number-card dl time")
    utc = datetime.fromisoformat(shown.get_attribute("datetime").replace("Z", "+00:00"))
    assert shown.get_attribute("datetime") == number["issued_at"]
    bangkok = (utc + timedelta(hours=7)).strftime("%Y-%m-%d %H:%M:%S")
    assert shown.text == bangkok
    assert shown.get_attribute("title") == utc.strftime("%Y-%m-%d %H:%M:%S") + " UTC"
    assert "Asia/Bangkok" in console.css("#times-zone").text
    # The audit page too: every row's time in Bangkok, UTC on hover.
    console.click('[data-nav="audit"]')
    first = console.wait_css("table.audit tbody tr time")
    at = datetime.fromisoformat(first.get_attribute("datetime").replace("Z", "+00:00"))
    assert first.text == (at + timedelta(hours=7)).strftime("%Y-%m-%d %H:%M:%S")
    assert first.get_attribute("title").endswith(" UTC")


def test_a_refused_save_then_the_live_check_never_disagree(console, seed):
    """After a save refused for an invalid template, editing it to a valid one leaves no red
    box saying otherwise; the refusal is on the audit page."""
    ids = seed()
    console.sign_in("somchai")
    console.open(f"/console/templates/{ids['LETTER']}")
    console.wait_css("#template")
    console.fill("#template", "{SEQ:4}{SEQ:3}")
    console.wait_css('#validation [data-rule="seq_repeated"]')
    console.fill("#change_reason", "try two sequence tokens")
    console.click("#save-button")
    refused = console.wait_css('#save-error [data-code="TEMPLATE_INVALID"]')
    assert refused.is_displayed()
    # The page as answered agrees with itself: the check of the posted template is invalid too.
    assert console.all('#validation [data-valid="false"]')

    console.fill("#template", "{ORIGINATOR}/{RECIPIENT}/{SEQ:4}/{YEAR:B.E.}")
    console.wait(lambda: console.all('#validation [data-valid="true"]'), "valid again")
    console.wait(lambda: not console.all("#save-error"), "the stale save error to go")
    assert not [p for p in console.all(".problem") if p.is_displayed()]

    console.click('[data-nav="audit"]')
    row = console.wait_css('table.audit tr[data-operation="CONFIG_UPDATE"][data-refused="true"]')
    assert "TEMPLATE_INVALID" in row.text and "somchai" in row.text


def test_the_reset_page_has_one_counter_key_field(console, seed, client, auth):
    seed()
    generated(client, auth, letter())

    def visible_key_fields() -> list:
        return [f for f in console.all('input[name="counter_key"]') if f.is_displayed()]

    console.sign_in("alice", [], [SUPER_ADMIN])
    console.click('[data-nav="resets"]')
    console.wait_css("#reset-file")
    assert len(visible_key_fields()) == 1
    assert not console.all("#reset-form")  # the floor comes first
    console.fill("#floor-key", LETTER_KEY)
    console.click("#check-floor-button")
    console.wait_css("#floor-check")
    assert len(visible_key_fields()) == 1
    assert console.css('#reset-form input[name="counter_key"]').get_attribute("value") \
        == LETTER_KEY
    assert console.css("#floor-key").get_attribute("value") == LETTER_KEY


# --------------------------------------------------------------------------- screenshots

PAGES = ("login", "home", "templates", "editor", "editor-error", "history", "counters", "gaps",
         "lookup", "admin", "confirm-void", "import-report", "resets", "audit")


def test_screenshots_of_every_page_in_english_and_thai(console, seed, client, auth, engine,
                                                       token, tmp_path):
    ids = seed()
    for _ in range(3):
        generated(client, auth, letter())
    generated(client, auth, letter(correspondence_type="RFI", document_date="2025-07-01"))
    changed = client.put(f"{BASE}/configs/{ids['LETTER']}", json={
        "template": "{ORIGINATOR}-{RECIPIENT}-{SEQ:4}/{YEAR:B.E.}",
        "change_reason": "ใช้ / ก่อนปี ตามหนังสือสั่งการ"}, headers=auth("napat"))
    assert changed.status_code == 200
    cancel = client.post(f"{BASE}/reserve?timeout=10", json=letter(), headers=auth())
    assert client.post(f"{BASE}/cancel", json={"token": cancel.json["reservation"]["token"],
                                                "reason": "ร่างเอกสารถูกยกเลิก"},
                       headers=auth()).status_code == 200
    voided = client.post(f"{BASE}/admin/void-and-replace", json={
        "document_number": "คคง.-สคฉ.3-0002-2568", "reason": "ส่งผิดผู้รับ ออกเลขใหม่แทน",
        "replace": True}, headers=auth("napat"))
    assert voided.status_code == 200, voided.json
    from docnum.shared.clock import SystemClock, to_db
    from docnum.shared.db import transaction
    from docnum.shared.models import Counter

    now = to_db(SystemClock().now())
    with transaction(engine) as session:
        session.add_all([
            Counter(counter_key="LCBP3|ORIGINATOR=TEAM-A|RECIPIENT=TEAM-B|Y2025",
                    project="LCBP3", last_sequence=9140, capacity=9999, updated_at=now),
            Counter(counter_key="LCBP3|ORIGINATOR=ผรม.1|RECIPIENT=คคง.|Y2025",
                    project="LCBP3", last_sequence=9650, capacity=9999, updated_at=now)])
    boss = {"Authorization": f"Bearer {token('boss', [], [SUPER_ADMIN])}"}
    filed = client.post(f"{BASE}/configs/{ids['LETTER']}/reset-counter", json={
        "counter_key": LETTER_KEY, "new_last_sequence": 100,
        "reason": "ข้ามไปเลข 100 ให้ตรงกับทะเบียนกระดาษของโครงการ"}, headers=boss)
    assert filed.status_code == 202, filed.json
    approve = {"Authorization": f"Bearer {token('kanya', [], [SUPER_ADMIN])}"}
    assert client.post(f"{BASE}/reset-requests/{filed.json['reset_request_id']}/approve",
                       headers=approve).status_code == 200
    register = tmp_path / "register.csv"
    with register.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(IMPORT_COLUMNS)
        writer.writerow(["คคง.-ผรม.1-0041/2568", "LCBP3", "LETTER", "คคง.", "ผรม.1", "", "", "",
                         "2025-01-10", "CONFIRMED"])
        writer.writerow(["คคง.-ผรม.1-0042/2568", "LCBP3", "LETTER", "คคง.", "ผรม.1", "", "", "",
                         "2025-01-12", "VOID"])

    saved: list[Path] = []
    for lang in ("en", "th"):
        console.open(f"/console/login?lang={lang}")
        saved.append(console.shot(f"login-{lang}"))
        console.sign_in("somchai", ADMIN_PERMS, [SUPER_ADMIN])
        console.open(f"/console/?lang={lang}")
        saved.append(console.shot(f"home-{lang}"))
        console.click('[data-nav="templates"]')
        saved.append(console.shot(f"templates-{lang}"))
        console.click(f'tr[data-config="{ids["RFI"]}"] .edit-link')
        console.set_value("#document_date", "2026-01-15")  # the first RFI of 2569
        console.wait(lambda: "LCBP3-คคง.-สคฉ.3-RFI-0001-69" in console.css("#preview").text,
                     "RFI preview")
        saved.append(console.shot(f"editor-{lang}"))
        console.fill("#template", "{SEQ:4}{SEQ:3}")
        console.wait_css('#validation [data-rule="seq_repeated"]')
        saved.append(console.shot(f"editor-error-{lang}"))
        console.open(f"/console/templates/{ids['LETTER']}/history")
        saved.append(console.shot(f"history-{lang}"))
        console.click('[data-nav="counters"]')
        saved.append(console.shot(f"counters-{lang}"))
        console.click(f'tr[data-counter="{LETTER_KEY}"] .gaps-link')
        console.wait_css("table.gaps")
        saved.append(console.shot(f"gaps-{lang}"))
        console.open("/console/numbers?number=คคง.-สคฉ.3-0002-2568")
        console.wait_css(".number-card")
        saved.append(console.shot(f"lookup-{lang}"))
        console.click('[data-nav="admin"]')
        saved.append(console.shot(f"admin-{lang}"))
        console.fill('#void-form [name="document_number"]', "คคง.-สคฉ.3-0003-2568")
        console.fill('#void-form [name="reason"]', "เอกสารซ้ำกับฉบับก่อนหน้า")
        console.click('#void-form [name="replace"]')
        console.css("#void-form button").click()
        console.wait_css("#confirm-void")
        saved.append(console.shot(f"confirm-void-{lang}"))
        console.click('[data-nav="admin"]')
        console.css("#import-file").send_keys(str(register))
        console.click("#dry-run-button")
        console.wait_css("#import-summary")
        saved.append(console.shot(f"import-report-{lang}"))
        console.click('[data-nav="resets"]')
        console.open(f"/console/resets?counter_key={LETTER_KEY}")
        console.wait_css("#floor-check")
        saved.append(console.shot(f"resets-{lang}"))
        console.click('[data-nav="audit"]')
        saved.append(console.shot(f"audit-{lang}"))
        console.sign_out()

    assert [p.name for p in saved] == [f"{page}-{lang}.png" for lang in ("en", "th")
                                       for page in PAGES]
    for path in saved:
        assert path.stat().st_size > 10_000, path
