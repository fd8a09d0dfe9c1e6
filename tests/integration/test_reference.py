"""Catalog and numbering configs through the API, and ``docnum catalog load``."""
from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import redis as redis_lib
from sqlalchemy import select

from docnum.shared.db import transaction
from docnum.shared.errors import DocnumError
from docnum.shared.models import AuditRow, CatalogEntry
from tests.conftest import BASE, LETTER_TEMPLATE, letter


def test_catalog_put_get_list(client, auth):
    headers = auth()
    created = client.put(f"{BASE}/catalog/organization/คคง.", json={"name": "คณะกรรมการ"},
                         headers=headers)
    assert created.status_code == 201
    updated = client.put(f"{BASE}/catalog/organization/คคง.",
                         json={"name": "คณะกรรมการ", "active": False}, headers=headers)
    assert updated.status_code == 200 and updated.json["active"] is False
    got = client.get(f"{BASE}/catalog/organization/คคง.", headers=headers)
    assert got.json == {"kind": "organization", "code": "คคง.", "name": "คณะกรรมการ",
                        "active": False}
    for code in ("A1", "A2", "A3"):
        client.put(f"{BASE}/catalog/organization/{code}", json={"name": code}, headers=headers)
    first = client.get(f"{BASE}/catalog/organization?limit=2", headers=headers).json
    assert [e["code"] for e in first["items"]] == ["A1", "A2"]
    rest = client.get(f"{BASE}/catalog/organization?limit=2&cursor={first['next_cursor']}",
                      headers=headers).json
    assert [e["code"] for e in rest["items"]] == ["A3", "คคง."] and rest["next_cursor"] is None


@pytest.mark.parametrize("kind,code,status", [
    ("colour", "RED", 404),
    ("organization", "has space", 422),
    ("organization", "x" * 31, 422),
    ("organization", "zero\u200bwidth", 422),
    ("organization", "bidi\u202eevil", 422),
])
def test_catalog_refuses_bad_codes(client, auth, engine, kind, code, status):
    response = client.put(f"{BASE}/catalog/{kind}/{code}", json={"name": "n"}, headers=auth())
    assert response.status_code == status, response.json
    with transaction(engine) as session:
        assert session.scalar(select(CatalogEntry)) is None


def test_config_lifecycle_and_history(client, auth, seed, engine):
    seed({})
    headers = auth("admin")
    created = client.post(f"{BASE}/configs", headers=headers, json={
        "project": "LCBP3", "correspondence_type": "LETTER",
        "template": "{ORIGINATOR}-{RECIPIENT}-{SEQ:4}-{YEAR:B.E.}", "reset": "YEARLY"})
    assert created.status_code == 201, created.json
    config = created.json
    assert config["version"] == 1 and config["fiscal_year_start_month"] == 10
    duplicate = client.post(f"{BASE}/configs", headers=headers, json={
        "project": "LCBP3", "correspondence_type": "LETTER", "template": "{SEQ:4}-{YYYY}-XX",
        "reset": "YEARLY"})
    assert duplicate.status_code == 409

    issued = client.post(f"{BASE}/generate", json=letter(), headers=auth()).json
    no_reason = client.put(f"{BASE}/configs/{config['id']}", headers=headers,
                           json={"template": "{ORIGINATOR}/{RECIPIENT}/{SEQ:5}/{YEAR:B.E.}"})
    assert no_reason.status_code == 422
    changed = client.put(f"{BASE}/configs/{config['id']}", headers=headers, json={
        "template": "{ORIGINATOR}/{RECIPIENT}/{SEQ:5}/{YEAR:B.E.}",
        "change_reason": "slashes requested by the client"})
    assert changed.status_code == 200 and changed.json["version"] == 2
    history = client.get(f"{BASE}/configs/{config['id']}/history", headers=headers).json
    assert [(h["version"], h["template"]) for h in history["items"]] == [
        (1, "{ORIGINATOR}-{RECIPIENT}-{SEQ:4}-{YEAR:B.E.}"),
        (2, "{ORIGINATOR}/{RECIPIENT}/{SEQ:5}/{YEAR:B.E.}")]
    assert history["items"][1]["change_reason"] == "slashes requested by the client"
    assert history["items"][1]["changed_by"] == "admin"
    # Issued numbers are untouched; new numbers use version 2. The counter key is made of the
    # project, dimensions and period (SPEC §3.3), not the literal text, so it continues.
    old = client.get(f"{BASE}/numbers/{issued['document_number']}", headers=auth()).json
    assert old["config_version"] == 1 and old["document_number"] == "คคง.-สคฉ.3-0001-2568"
    new = client.post(f"{BASE}/generate", json=letter(), headers=auth()).json
    assert new["document_number"] == "คคง./สคฉ.3/00002/2568" and new["config_version"] == 2
    listed = client.get(f"{BASE}/configs?project=LCBP3", headers=headers).json
    assert [c["id"] for c in listed["items"]] == [config["id"]]
    with transaction(engine) as session:
        operations = [(a.operation, a.error_code) for a in session.scalars(
            select(AuditRow).where(AuditRow.operation.like("CONFIG_%")).order_by(AuditRow.id))]
    # The refused duplicate and the change without a reason are on the record.
    assert operations == [("CONFIG_CREATE", None), ("CONFIG_CREATE", "CONFLICT"),
                          ("CONFIG_UPDATE", "VALIDATION_FAILED"), ("CONFIG_UPDATE", None)]


@pytest.mark.parametrize("template,reset,rule", [
    ("{SEQ:4}{SEQ:3}-2025-XX", "NONE", "seq_repeated"),
    ("LETTER {SEQ:4}", "NONE", "literal_character"),
    ("{ORIGINATOR}-{SEQ:4}", "YEARLY", "reset_needs_year"),
    ("{YYYY}-{SEQ:4}", "MONTHLY", "reset_needs_month"),
    ("{YYYY}-{SEQ:4}", "FISCAL_YEARLY", "reset_needs_fiscal_year"),
    ("{FOO}-{SEQ:4}", "NONE", "unknown_token"),
])
def test_invalid_templates_are_refused(client, auth, seed, template, reset, rule):
    seed({})
    response = client.post(f"{BASE}/configs", headers=auth(), json={
        "project": "LCBP3", "correspondence_type": "LETTER", "template": template,
        "reset": reset})
    assert response.status_code == 422
    assert response.json["code"] == "TEMPLATE_INVALID"
    assert response.json["rule"] == rule
    assert rule in response.json["detail"]


def test_project_default_config_is_used_when_no_exact_match(client, auth, seed):
    seed({})
    client.post(f"{BASE}/configs", headers=auth(), json={
        "project": "LCBP3", "correspondence_type": None,
        "template": "LCBP3-{CORR_TYPE}-{SEQ:5}-{YYYY}", "reset": "YEARLY"})
    response = client.post(f"{BASE}/generate", json=letter(correspondence_type="MEMO"),
                           headers=auth())
    assert response.status_code == 201, response.json
    assert response.json["document_number"] == "LCBP3-MEMO-00001-2025"


def test_catalog_load_cli(tmp_path, settings, engine):
    yaml_file = tmp_path / "catalog.yaml"
    yaml_file.write_text("project:\n  - {code: LCBP3, name: Laem Chabang 3}\n"
                         "organization:\n  - {code: คคง., name: คณะกรรมการ}\n"
                         "  - {code: OLD, name: Old org, active: false}\n", encoding="utf-8")
    csv_file = tmp_path / "catalog.csv"
    csv_file.write_text("kind,code,name,active\ndiscipline,STR,Structural,true\n",
                        encoding="utf-8")
    env = {"DOCNUM_DATABASE_URL": settings.database_url, "DOCNUM_JWT_SECRET": "x" * 40,
           "DOCNUM_VAR_DIR": str(tmp_path / "var"), "PATH": "/usr/bin:/bin"}
    for path in (yaml_file, csv_file, yaml_file):
        result = subprocess.run([sys.executable, "-m", "docnum.cli.main", "catalog", "load",
                                 str(path)], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    assert "3 entries read, 0 created or changed" in result.stdout  # loading again is a no-op
    with transaction(engine) as session:
        rows = {(r.kind, r.code): r.active for r in session.scalars(select(CatalogEntry))}
        changes = session.scalars(select(AuditRow).where(
            AuditRow.operation == "CATALOG_CHANGE")).all()
    assert rows == {("project", "LCBP3"): True, ("organization", "คคง."): True,
                    ("organization", "OLD"): False, ("discipline", "STR"): True}
    assert len(changes) == 4


def test_services_write_their_audit_rows_and_tell_the_caches(engine, redis_dbs):
    """Called directly (as the CLI and the console do), the catalog and config services audit
    every write and replace the reference generation after the commit; a refused write does
    neither, and a file loaded twice changes nothing the second time."""
    from docnum.shared import catalog, configs
    from docnum.shared.audit import Actor
    from docnum.shared.clock import SystemClock
    from docnum.shared.refcache import GENERATION_KEY

    cache = redis_lib.Redis.from_url(redis_dbs[1])
    actor, clock = Actor("services-test"), SystemClock()
    seen = [cache.get(GENERATION_KEY)]

    def bumped() -> bool:
        seen.append(cache.get(GENERATION_KEY))
        return seen[-1] != seen[-2]

    catalog.put_entry(engine, "project", "LCBP3", "Laem Chabang", True, actor, clock,
                      redis=cache)
    assert bumped()
    entries = [{"kind": "correspondence_type", "code": "LETTER", "name": "Letter", "active": True},
               {"kind": "organization", "code": "คคง.", "name": "คคง.", "active": True},
               {"kind": "organization", "code": "สคฉ.3", "name": "สคฉ.3", "active": True}]
    assert catalog.load_entries(engine, entries, actor, clock, redis=cache) == 3
    assert bumped()
    assert catalog.load_entries(engine, entries, actor, clock, redis=cache) == 0
    assert not bumped()
    config = configs.create_config(engine, {"project": "LCBP3", "correspondence_type": "LETTER",
                                            "template": LETTER_TEMPLATE, "reset": "YEARLY"},
                                   actor, clock, redis=cache)
    assert bumped()
    configs.update_config(engine, config.id, {"fiscal_year_start_month": 1,
                                              "change_reason": "fiscal year is the calendar year"},
                          actor, clock, redis=cache)
    assert bumped()
    with pytest.raises(DocnumError):
        configs.update_config(engine, config.id, {"change_reason": "too short"}, actor, clock,
                              redis=cache)
    assert not bumped()
    with transaction(engine) as session:
        operations = list(session.scalars(select(AuditRow.operation)
                                          .where(AuditRow.actor == "services-test")
                                          .order_by(AuditRow.id)))
    assert operations == ["CATALOG_CHANGE"] * 4 + ["CONFIG_CREATE", "CONFIG_UPDATE"]


def test_a_write_stands_when_redis_cannot_be_told(engine, caplog):
    from docnum.shared import catalog
    from docnum.shared.audit import Actor
    from docnum.shared.clock import SystemClock

    caplog.set_level(logging.WARNING, logger="docnum.shared.refcache")  # the worker sets ERROR
    nobody = redis_lib.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    before, after = catalog.put_entry(engine, "project", "P9", "P9", True, Actor("t"),
                                      SystemClock(), redis=nobody)
    assert before is None and after.code == "P9"
    assert "could not bump the reference generation" in caplog.text
    with transaction(engine) as session:
        assert session.scalar(select(CatalogEntry.code)) == "P9"
