"""Authentication, permissions and HTTP-level rules (body limit, content type, problem+json)."""
from __future__ import annotations

import time

import jwt
import pytest

from docnum.shared.auth import mint_token
from tests.conftest import BASE, JWT_SECRET, letter


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}", "Idempotency-Key": "k-1"}


def _claims(**overrides: object) -> dict:
    now = int(time.time())
    claims = {"sub": "mallory", "perms": ["correspondence.create", "correspondence.read"],
              "roles": [], "iat": now, "exp": now + 600}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _tampered(settings) -> str:
    header, payload, signature = mint_token(settings, "mallory", ["correspondence.read"]).split(".")
    forged = jwt.encode(_claims(perms=["system.manage_settings"]), "guess", algorithm="HS256")
    return ".".join([header, forged.split(".")[1], signature])


BAD_TOKENS = {
    "missing": lambda s: None,
    "garbage": lambda s: "not-a-jwt",
    "tampered": _tampered,
    "wrong-secret": lambda s: jwt.encode(_claims(), "another-secret-" + "y" * 40,
                                         algorithm="HS256"),
    "expired": lambda s: jwt.encode(_claims(exp=int(time.time()) - 60), JWT_SECRET,
                                    algorithm="HS256"),
    "alg-none": lambda s: jwt.encode(_claims(), None, algorithm="none"),
    "no-sub": lambda s: jwt.encode(_claims(sub=None), JWT_SECRET, algorithm="HS256"),
    "no-exp": lambda s: jwt.encode(_claims(exp=None), JWT_SECRET, algorithm="HS256"),
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
def test_bad_tokens_are_401(client, settings, seed, kind):
    seed()
    token = BAD_TOKENS[kind](settings)
    headers = {"Idempotency-Key": "k-1"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    response = client.post(f"{BASE}/generate", json=letter(), headers=headers)
    assert response.status_code == 401, response.json
    assert response.json["code"] == "UNAUTHENTICATED"
    assert response.headers["Content-Type"].startswith("application/problem+json")


@pytest.mark.parametrize("method,path,body,perm", [
    ("post", "/generate", letter(), "correspondence.create"),
    ("post", "/requests", letter(), "correspondence.create"),
    ("post", "/reserve", letter(), "correspondence.create"),
    ("post", "/preview", letter(), "correspondence.read"),
    ("get", "/catalog/project", None, "correspondence.read"),
    ("put", "/catalog/project/NEW", {"name": "x", "active": True}, "system.manage_settings"),
    ("get", "/configs", None, "system.manage_settings"),
    ("post", "/configs", {"project": "LCBP3", "template": "{SEQ:4}", "reset": "NONE"},
     "system.manage_settings"),
])
def test_missing_permission_is_403(client, token, seed, method, path, body, perm):
    seed()
    others = [p for p in ("correspondence.read", "correspondence.create",
                          "system.manage_settings", "system.view_logs") if p != perm]
    headers = _bearer(token("bob", others))
    response = getattr(client, method)(f"{BASE}{path}", json=body, headers=headers)
    assert response.status_code == 403, response.json
    assert response.json["code"] == "FORBIDDEN"
    allowed = getattr(client, method)(f"{BASE}{path}", json=body,
                                      headers=_bearer(token("bob", [perm])))
    assert allowed.status_code < 400, allowed.json


def test_super_admin_role_may_do_everything(client, token, seed):
    seed()
    headers = _bearer(token("root", [], ["SUPER_ADMIN"]))
    assert client.get(f"{BASE}/configs", headers=headers).status_code == 200


def test_body_over_one_mebibyte_is_413(client, auth, seed):
    seed()
    body = b'{"project": "' + b"x" * (1024 * 1024) + b'"}'
    response = client.post(f"{BASE}/generate", data=body, headers=auth(),
                           content_type="application/json")
    assert response.status_code == 413
    assert response.json["code"] == "PAYLOAD_TOO_LARGE"


def test_wrong_content_type_is_415_and_bad_json_400(client, auth, seed):
    seed()
    wrong = client.post(f"{BASE}/generate", data="project=LCBP3", headers=auth(),
                        content_type="application/x-www-form-urlencoded")
    assert wrong.status_code == 415 and wrong.json["code"] == "UNSUPPORTED_MEDIA_TYPE"
    broken = client.post(f"{BASE}/generate", data=b"{not json", headers=auth(),
                         content_type="application/json")
    assert broken.status_code == 400 and broken.json["code"] == "BAD_REQUEST"
    latin1 = client.post(f"{BASE}/generate", data='{"project": "é"}'.encode("latin-1"),
                         headers=auth(), content_type="application/json")
    assert latin1.status_code == 400
    nested = client.post(f"{BASE}/generate", data=b"[" * 100_000 + b"]" * 100_000,
                         headers=auth(), content_type="application/json")
    assert nested.status_code in (400, 422)


@pytest.mark.parametrize("key", ["", "x" * 256, "ключ", "tab\there"])
def test_bad_idempotency_keys(client, auth, seed, key):
    seed()
    headers = auth()
    headers["Idempotency-Key"] = key
    response = client.post(f"{BASE}/generate", json=letter(), headers=headers)
    assert response.status_code == 400
    assert response.json["code"] in ("IDEMPOTENCY_KEY_REQUIRED", "IDEMPOTENCY_KEY_INVALID")


def test_unknown_route_and_method_are_problems(client, auth):
    missing = client.get(f"{BASE}/nothing-here", headers=auth())
    assert missing.status_code == 404 and missing.json["code"] == "NOT_FOUND"
    wrong = client.delete(f"{BASE}/generate", headers=auth())
    assert wrong.status_code == 405 and wrong.json["code"] == "METHOD_NOT_ALLOWED"


@pytest.mark.parametrize("method,path,allowed", [
    ("get", "/configs/not-an-id", ["system.manage_settings"]),
    ("get", "/configs/1234567890123456789/history", ["system.manage_settings"]),
    ("get", "/catalog/planet", ["correspondence.read"]),
    ("put", "/catalog/planet/X", ["system.manage_settings"]),
    ("get", "/requests/" + "r" * 65, ["correspondence.read"]),
    ("get", "/checkpoints/first", ["correspondence.read"]),
])
def test_a_path_that_names_nothing_is_401_then_403_then_404(client, token, seed, method, path,
                                                            allowed):
    seed()
    call = getattr(client, method)
    body = {"name": "x", "active": True} if method == "put" else None
    anonymous = call(f"{BASE}{path}", json=body)
    assert anonymous.status_code == 401 and anonymous.json["code"] == "UNAUTHENTICATED"
    lacking = call(f"{BASE}{path}", json=body, headers=_bearer(token("bob", [])))
    assert lacking.status_code == 403 and lacking.json["code"] == "FORBIDDEN"
    missing = call(f"{BASE}{path}", json=body, headers=_bearer(token("bob", allowed)))
    assert missing.status_code == 404 and missing.json["code"] == "NOT_FOUND"
    assert missing.json["detail"].startswith("no ")


def test_static_routes_beside_an_id_still_answer(client, auth, seed):
    seed()
    latest = client.get(f"{BASE}/checkpoints/latest", headers=auth())
    assert latest.status_code == 404 and "no checkpoint has been signed" in latest.json["detail"]
    consistency = client.get(f"{BASE}/checkpoints/consistency", headers=auth())
    assert consistency.status_code == 422 and consistency.json["code"] == "VALIDATION_FAILED"


def test_health_and_openapi(client):
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json == {"database": "ok", "broker": "ok", "result_backend": "ok",
                          "mode": "queue"}
    document = client.get(f"{BASE}/openapi.json").json
    assert document["openapi"].startswith("3.")
    assert f"{BASE}/generate" in document["paths"]


def test_every_route_is_in_the_openapi_document(app, client):
    import re

    document = client.get(f"{BASE}/openapi.json").json
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.startswith("/console"):
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, f"{method} {path} is not documented"
