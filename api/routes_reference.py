"""Reference data: the catalog (docs/reference.md#reference-catalog) and numbering configs
(docs/reference.md#numbering-configs)."""
from __future__ import annotations

from flask import Blueprint, Response, request
from flask.typing import ResponseReturnValue

from docnum.api.http import (
    int_cursor,
    json_body,
    json_response,
    page,
    page_params,
    request_actor,
    services,
)
from docnum.api.refusals import audits_refusals
from docnum.api.security import requires
from docnum.shared import catalog, configs
from docnum.shared.db import transaction
from docnum.shared.errors import DocnumError

bp = Blueprint("reference", __name__)


@bp.get("/catalog/<kind>")
@requires("correspondence.read")
def list_catalog(kind: str) -> Response:
    cursor, limit = page_params()
    with transaction(services().read_engine) as session:
        entries = catalog.list_entries(session, kind, cursor, limit + 1)
    return json_response(page(entries, limit, key=lambda e: e["code"]))


@bp.get("/catalog/<kind>/<code>")
@requires("correspondence.read")
def get_catalog_entry(kind: str, code: str) -> Response:
    with transaction(services().read_engine) as session:
        return json_response(catalog.get_entry(session, kind, code).to_dict())


@bp.put("/catalog/<kind>/<code>")
@audits_refusals("CATALOG_CHANGE")
@requires("system.manage_settings")
def put_catalog_entry(kind: str, code: str) -> ResponseReturnValue:
    body = json_body()
    svc = services()
    before, after = catalog.put_entry(svc.engine, kind, code, body.get("name"),
                                      body.get("active", True), request_actor(), svc.clock,
                                      redis=svc.redis)
    return json_response(after.to_dict(), 200 if before else 201)


@bp.post("/configs")
@audits_refusals("CONFIG_CREATE")
@requires("system.manage_settings")
def create_config() -> ResponseReturnValue:
    body = json_body()
    svc = services()
    config = configs.create_config(svc.engine, body, request_actor(), svc.clock,
                                   redis=svc.redis)
    return json_response(config.to_dict(), 201)


@bp.get("/configs")
@requires("system.manage_settings")
def list_configs() -> Response:
    cursor, limit = page_params()
    with transaction(services().read_engine) as session:
        items = configs.list_configs(session, request.args.get("project"), int_cursor(cursor),
                                     limit + 1)
    return json_response(page(items, limit, key=lambda c: c["id"]))


def _config_id(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 18:
        raise DocnumError("NOT_FOUND", f"no config {raw}")
    return int(raw)


@bp.get("/configs/<config_id>")
@requires("system.manage_settings")
def get_config(config_id: str) -> Response:
    with transaction(services().read_engine) as session:
        return json_response(configs.get_config(session, _config_id(config_id)).to_dict())


@bp.put("/configs/<config_id>")
@audits_refusals("CONFIG_UPDATE")
@requires("system.manage_settings")
def update_config(config_id: str) -> ResponseReturnValue:
    body = json_body()
    svc = services()
    _, after = configs.update_config(svc.engine, _config_id(config_id), body, request_actor(),
                                     svc.clock, redis=svc.redis)
    return json_response(after.to_dict())


@bp.get("/configs/<config_id>/history")
@requires("system.manage_settings")
def config_history(config_id: str) -> Response:
    cursor, limit = page_params()
    with transaction(services().read_engine) as session:
        items = configs.config_history(session, _config_id(config_id), int_cursor(cursor),
                                       limit + 1)
    return json_response(page(items, limit, key=lambda h: h["version"]))
