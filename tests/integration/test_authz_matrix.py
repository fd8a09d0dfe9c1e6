"""Authorization matrix: every route × every kind of credential → expected class.

``ROUTES`` has one row per route of the OpenAPI document: the permission (or role) it needs and
how to call it. ``test_every_route_has_a_row`` fails when a route is added to the document or
to the Flask app without a row here, so a new route cannot ship unchecked. The console
(``/console/...``) has its own session-based authentication (tests/integration/test_console.py):
excluded on purpose, see ``EXCLUDED_PREFIXES``.

Credentials: no token, a tampered signature, an expired token, ``alg: none``, a wrong or
missing issuer (on an app built with ``DOCNUM_JWT_ISSUER``), each single permission, no
permission, all permissions without the role, and SUPER_ADMIN. Expected: 401 for every bad
credential, 403 without the permission, and "allowed" (anything but 401/403) with it; public
routes answer 200 whatever is sent.
"""
from __future__ import annotations

import io
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

import jwt
import pytest

from docnum.shared.auth import PERMISSIONS, SUPER_ADMIN, mint_token
from tests.conftest import BASE, JWT_SECRET, letter, wait_for

SUB = "matrix"
# Routes that are not part of the API document and have their own authentication.
EXCLUDED_PREFIXES = ("/console",)  # the admin console (session cookie + CSRF)
PUBLIC = "public"


@dataclass
class Row:
    need: str                      # a permission, SUPER_ADMIN, or PUBLIC
    # (fixtures) -> (path, keyword arguments for the test client)
    call: Callable[[dict], tuple[str, dict]] = field(
        default=lambda fx: ("", {}))


def _json(body: dict, **extra: object) -> dict:
    return {"json": body, **extra}


def _issue(route: str) -> Callable[[dict], tuple[str, dict]]:
    return lambda fx: (f"{BASE}{route}", _json(letter(), headers={
        "Idempotency-Key": uuid.uuid4().hex}))


def _csv() -> dict:
    data = {"file": (io.BytesIO(b"document_number,project,correspondence_type,originator,"
                                b"recipient,sub_type,rfa_type,discipline,document_date,state\n"),
                     "empty.csv")}
    return {"data": data, "content_type": "multipart/form-data"}


ROUTES: dict[tuple[str, str], Row] = {
    ("post", f"{BASE}/requests"): Row("correspondence.create", _issue("/requests")),
    ("get", f"{BASE}/requests/{{request_id}}"): Row(
        "correspondence.read", lambda fx: (f"{BASE}/requests/{fx['request_id']}", {})),
    ("post", f"{BASE}/generate"): Row("correspondence.create", _issue("/generate?timeout=0")),
    ("post", f"{BASE}/reserve"): Row("correspondence.create", _issue("/reserve?timeout=0")),
    ("post", f"{BASE}/preview"): Row("correspondence.read",
                                     lambda fx: (f"{BASE}/preview", _json(letter()))),
    ("get", f"{BASE}/numbers/{{document_number}}"): Row(
        "correspondence.read",
        lambda fx: (f"{BASE}/numbers/{quote(fx['number'], safe='')}", {})),
    ("get", f"{BASE}/catalog/{{kind}}"): Row(
        "correspondence.read", lambda fx: (f"{BASE}/catalog/organization", {})),
    ("get", f"{BASE}/catalog/{{kind}}/{{code}}"): Row(
        "correspondence.read", lambda fx: (f"{BASE}/catalog/organization/{quote('คคง.')}", {})),
    ("put", f"{BASE}/catalog/{{kind}}/{{code}}"): Row(
        "system.manage_settings",
        lambda fx: (f"{BASE}/catalog/organization/TEAM-M", _json({"name": "Team M"}))),
    ("post", f"{BASE}/configs"): Row(
        "system.manage_settings",
        lambda fx: (f"{BASE}/configs", _json({"project": "P2", "correspondence_type": "RFI",
                                              "template": "{PROJECT}-{SEQ:4}-{YEAR:B.E.}",
                                              "reset": "YEARLY"}))),
    ("get", f"{BASE}/configs"): Row("system.manage_settings",
                                    lambda fx: (f"{BASE}/configs", {})),
    ("get", f"{BASE}/configs/{{config_id}}"): Row(
        "system.manage_settings", lambda fx: (f"{BASE}/configs/{fx['config_id']}", {})),
    ("put", f"{BASE}/configs/{{config_id}}"): Row(
        "system.manage_settings",
        lambda fx: (f"{BASE}/configs/{fx['config_id']}",
                    _json({"active": True, "change_reason": "authorization matrix check"}))),
    ("get", f"{BASE}/configs/{{config_id}}/history"): Row(
        "system.manage_settings", lambda fx: (f"{BASE}/configs/{fx['config_id']}/history", {})),
    ("get", "/healthz"): Row(PUBLIC, lambda fx: ("/healthz", {})),
    ("get", "/readyz"): Row(PUBLIC, lambda fx: ("/readyz", {})),
    ("get", "/metrics"): Row(PUBLIC, lambda fx: ("/metrics", {})),
    ("get", f"{BASE}/openapi.json"): Row(PUBLIC, lambda fx: (f"{BASE}/openapi.json", {})),
    ("post", f"{BASE}/confirm"): Row(
        "correspondence.create", lambda fx: (f"{BASE}/confirm", _json({"token": "unknown"}))),
    ("post", f"{BASE}/cancel"): Row(
        "correspondence.create",
        lambda fx: (f"{BASE}/cancel", _json({"token": "unknown", "reason": "matrix"}))),
    ("post", f"{BASE}/admin/void-and-replace"): Row(
        "system.manage_settings",
        lambda fx: (f"{BASE}/admin/void-and-replace",
                    _json({"document_number": "NO-SUCH-0001", "reason": "matrix check"}))),
    ("post", f"{BASE}/admin/manual-override"): Row(
        "system.manage_settings",
        lambda fx: (f"{BASE}/admin/manual-override",
                    _json({**letter(), "document_number": "คคง.-สคฉ.3-0777-2568",
                           "reason": "authorization matrix"}))),
    ("post", f"{BASE}/admin/bulk-import"): Row(
        "system.manage_settings", lambda fx: (f"{BASE}/admin/bulk-import?dry_run=true", _csv())),
    ("post", f"{BASE}/configs/{{config_id}}/reset-counter"): Row(
        SUPER_ADMIN,
        lambda fx: (f"{BASE}/configs/{fx['config_id']}/reset-counter",
                    _json({"counter_key": fx["counter_key"], "new_last_sequence": 500,
                           "reason": "authorization matrix: a pending request only"}))),
    ("get", f"{BASE}/reset-requests"): Row(SUPER_ADMIN,
                                           lambda fx: (f"{BASE}/reset-requests", {})),
    ("get", f"{BASE}/reset-requests/{{reset_id}}"): Row(
        SUPER_ADMIN, lambda fx: (f"{BASE}/reset-requests/{fx['reset_id']}", {})),
    ("post", f"{BASE}/reset-requests/{{reset_id}}/approve"): Row(
        SUPER_ADMIN, lambda fx: (f"{BASE}/reset-requests/{fx['reset_id']}/approve", {})),
    ("get", f"{BASE}/audit"): Row("system.view_logs", lambda fx: (f"{BASE}/audit", {})),
    ("get", f"{BASE}/counters"): Row("system.manage_settings",
                                     lambda fx: (f"{BASE}/counters", {})),
    ("get", f"{BASE}/reports/gaps"): Row("system.view_logs",
                                         lambda fx: (f"{BASE}/reports/gaps", {})),
    ("get", f"{BASE}/numbers/{{document_number}}/proof"): Row(
        "correspondence.read",
        lambda fx: (f"{BASE}/numbers/{quote(fx['number'], safe='')}/proof", {})),
    ("get", f"{BASE}/proofs"): Row(
        "correspondence.read",
        lambda fx: (f"{BASE}/proofs?document_number={quote(fx['number'], safe='')}", {})),
    ("get", f"{BASE}/checkpoints"): Row("correspondence.read",
                                        lambda fx: (f"{BASE}/checkpoints", {})),
    ("get", f"{BASE}/checkpoints/latest"): Row("correspondence.read",
                                               lambda fx: (f"{BASE}/checkpoints/latest", {})),
    ("get", f"{BASE}/checkpoints/{{checkpoint_id}}"): Row(
        "correspondence.read", lambda fx: (f"{BASE}/checkpoints/1", {})),
    ("get", f"{BASE}/checkpoints/consistency"): Row(
        "correspondence.read",
        lambda fx: (f"{BASE}/checkpoints/consistency?first=1&second=1", {})),
    ("get", f"{BASE}/checkpoints/public-key"): Row(
        PUBLIC, lambda fx: (f"{BASE}/checkpoints/public-key", {})),
}


# ------------------------------------------------------------------------- credentials

def _claims(**overrides: object) -> dict:
    now = int(time.time())
    claims = {"sub": SUB, "perms": list(PERMISSIONS), "roles": [SUPER_ADMIN], "iat": now,
              "exp": now + 600}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _tampered(settings) -> str:
    """A real token of a user with no permission whose payload claims SUPER_ADMIN."""
    header, _payload, signature = mint_token(settings, SUB, []).split(".")
    forged = jwt.encode(_claims(), "guess-" + "z" * 40, algorithm="HS256").split(".")[1]
    return ".".join([header, forged, signature])


BAD = {
    "no token": lambda s: None,
    "tampered signature": _tampered,
    "expired": lambda s: jwt.encode(_claims(exp=int(time.time()) - 60), JWT_SECRET,
                                    algorithm="HS256"),
    "alg none": lambda s: jwt.encode(_claims(), None, algorithm="none"),
}
PERM_SETS = {
    "no permission": ([], []),
    **{perm: ([perm], []) for perm in PERMISSIONS},
    "all permissions, no role": (list(PERMISSIONS), []),
    "SUPER_ADMIN": ([], [SUPER_ADMIN]),
}


def _allowed(row: Row, perms: list[str], roles: list[str]) -> bool:
    if SUPER_ADMIN in roles:
        return True
    if row.need == SUPER_ADMIN:
        return False
    return row.need in perms


def _documented(client) -> set[tuple[str, str]]:
    document = client.get(f"{BASE}/openapi.json").json
    return {(method, path) for path, ops in document["paths"].items() for method in ops}


def _call(client, row: Row, fx: dict, method: str, token: str | None):
    path, kwargs = row.call(fx)
    kwargs = dict(kwargs)
    headers = dict(kwargs.pop("headers", {}))
    if "data" in kwargs:  # a fresh file object for every call
        kwargs = {**kwargs, **_csv()}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    response = getattr(client, method)(path, headers=headers, **kwargs)
    if response.status_code == 202 and "request_id" in (response.json or {}):
        fx.setdefault("queued", []).append(response.json["request_id"])
    return response


def _drain(client, token, fx: dict) -> None:
    """Wait for every request this test queued: none may be served during the next test."""
    headers = {"Authorization": f"Bearer {token(SUB, list(PERMISSIONS), [SUPER_ADMIN])}"}
    pending = list(fx.get("queued", []))

    def served() -> bool:
        pending[:] = [rid for rid in pending if client.get(
            f"{BASE}/requests/{rid}", headers=headers).json.get("status") == "queued"]
        return not pending

    wait_for(served, timeout=30, interval=0.1, message="the queued requests to be served")


# ------------------------------------------------------------------------------ tests

def test_every_route_has_a_row(app, client):
    documented = _documented(client)
    missing = documented - set(ROUTES)
    assert not missing, f"routes in the OpenAPI document without a row in ROUTES: {missing}"
    stale = set(ROUTES) - documented
    assert not stale, f"rows for routes the document does not have: {stale}"
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.startswith(EXCLUDED_PREFIXES):
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        served |= {(m.lower(), path) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert not served - set(ROUTES), f"routes served without a row: {served - set(ROUTES)}"
    # The document and the code say the same about who may call what.
    document = client.get(f"{BASE}/openapi.json").json
    for (method, path), row in ROUTES.items():
        declared = document["paths"][path][method].get("x-permission")
        assert declared == (None if row.need == PUBLIC else row.need), (method, path, declared)


@pytest.fixture
def fixtures(app, client, seed, token) -> dict:
    ids = seed()
    everything = {"Authorization": f"Bearer {token(SUB, list(PERMISSIONS), [SUPER_ADMIN])}"}
    issued = client.post(f"{BASE}/generate?timeout=10", json=letter(),
                         headers={**everything, "Idempotency-Key": uuid.uuid4().hex})
    assert issued.status_code == 201, issued.json
    other = {"Authorization": f"Bearer {token('admin-1', [], [SUPER_ADMIN])}"}
    reset = client.post(f"{BASE}/configs/{ids['LETTER']}/reset-counter", headers=other,
                        json={"counter_key": issued.json["counter_key"],
                              "new_last_sequence": 100,
                              "reason": "authorization matrix: pending reset request"})
    assert reset.status_code == 202, reset.json
    return {"request_id": issued.json["request_id"], "number": issued.json["document_number"],
            "config_id": ids["LETTER"], "counter_key": issued.json["counter_key"],
            "reset_id": reset.json["reset_request_id"]}


def test_matrix(app, client, settings, token, fixtures):
    problems = []
    cells = 0
    for (method, _path), row in ROUTES.items():
        for name, make in BAD.items():
            response = _call(client, row, fixtures, method, make(settings))
            cells += 1
            expected = 200 if row.need == PUBLIC else 401
            if response.status_code != expected or (
                    expected == 401 and response.json.get("code") != "UNAUTHENTICATED"):
                problems.append((method, _path, name, response.status_code, expected))
        for name, (perms, roles) in PERM_SETS.items():
            response = _call(client, row, fixtures, method, token(SUB, perms, roles))
            cells += 1
            if row.need == PUBLIC:
                ok = response.status_code == 200
            elif _allowed(row, perms, roles):
                ok = response.status_code not in (401, 403)
            else:
                ok = response.status_code == 403 and response.json.get("code") == "FORBIDDEN"
            if not ok:
                problems.append((method, _path, name, response.status_code,
                                 "allowed" if _allowed(row, perms, roles) else 403))
    _drain(client, token, fixtures)
    assert not problems, "\n".join(map(str, problems))
    print(f"\nauthorization matrix: {len(ROUTES)} routes x {len(BAD) + len(PERM_SETS)} "
          f"credentials = {cells} cells")


def test_wrong_or_missing_issuer_is_401_everywhere(settings, celery_session_app, token,
                                                   fixtures):
    """On an app that requires ``iss`` (DOCNUM_JWT_ISSUER): another issuer's token, or one
    without ``iss``, is 401 on every protected route; the right issuer is allowed."""
    from docnum.api.app import create_app

    issuer = "https://sso.example/realms/docnum"
    strict = settings.with_overrides(jwt_issuer=issuer)
    client = create_app(strict, celery=celery_session_app).test_client()
    tokens = {
        "wrong issuer": jwt.encode(_claims(iss="https://evil.example"), JWT_SECRET,
                                   algorithm="HS256"),
        "no issuer": jwt.encode(_claims(), JWT_SECRET, algorithm="HS256"),
        "right issuer": mint_token(strict, SUB, list(PERMISSIONS), [SUPER_ADMIN]),
    }
    problems = []
    for (method, path), row in ROUTES.items():
        for name, value in tokens.items():
            response = _call(client, row, fixtures, method, value)
            if row.need == PUBLIC:
                ok = response.status_code == 200
            elif name == "right issuer":
                ok = response.status_code not in (401, 403)
            else:
                ok = response.status_code == 401
            if not ok:
                problems.append((method, path, name, response.status_code))
    _drain(client, lambda *a: mint_token(strict, *a), fixtures)
    assert not problems, "\n".join(map(str, problems))


def test_a_user_reads_only_their_own_requests(client, token, seed):
    seed()

    def bearer(sub: str, perms: list[str], roles: list[str] | None = None) -> dict:
        return {"Authorization": f"Bearer {token(sub, perms, roles or [])}"}

    alice = bearer("alice", ["correspondence.create", "correspondence.read"])
    queued = client.post(f"{BASE}/requests", json=letter(),
                         headers={**alice, "Idempotency-Key": "alice-1"})
    assert queued.status_code in (200, 202), queued.json
    url = queued.headers["Location"]
    wait_for(lambda: client.get(url, headers=alice).json["status"] == "succeeded",
             message="Alice's request")
    assert client.get(url, headers=alice).status_code == 200
    bob = client.get(url, headers=bearer("bob", ["correspondence.read",
                                                 "correspondence.create"]))
    assert bob.status_code == 403 and bob.json["code"] == "FORBIDDEN"
    # Bob's own key names a different request: the same key never reaches Alice's.
    bob_same_key = client.post(f"{BASE}/generate?timeout=10", json=letter(), headers={
        **bearer("bob", ["correspondence.create"]), "Idempotency-Key": "alice-1"})
    assert bob_same_key.status_code == 201, bob_same_key.json
    assert bob_same_key.json["request_id"] != queued.json["request_id"]
    auditor = bearer("carol", ["correspondence.read", "system.view_logs"])
    assert client.get(url, headers=auditor).status_code == 200
    assert client.get(url, headers=bearer("root", [], [SUPER_ADMIN])).status_code == 200
    # view_logs alone does not open the route (it needs correspondence.read first).
    assert client.get(url, headers=bearer("dave", ["system.view_logs"])).status_code == 403
