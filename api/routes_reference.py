"""Reference data: the catalog (docs/reference.md#reference-catalog) and numbering configs
(docs/reference.md#numbering-configs)."""
from __future__ import annotations

from flask import Blueprint, Response

from docnum.api.contract import JSON_BODY, PARAMETERS, SIGNED_IN, Answers, contract
from docnum.api.http import json_response, page, request_actor, services
from docnum.api.refusals import audits_refusals
from docnum.api.security import requires
from docnum.shared import catalog, configs
from docnum.shared.db import transaction
from docnum.shared.schemas import (
    CatalogEntry,
    CatalogEntryWrite,
    CatalogPage,
    Config,
    ConfigCreate,
    ConfigHistoryPage,
    ConfigListQuery,
    ConfigPage,
    ConfigUpdate,
    IdPage,
    Page,
)

bp = Blueprint("reference", __name__)

LIST = (*SIGNED_IN, *PARAMETERS)


@bp.get("/catalog/<kind:kind>")
@requires("correspondence.read")
@contract.validate(resp=Answers(HTTP_200=(CatalogPage, "Entries in code order"),
                                problems=(*LIST, 404)),
                   operation_id="listCatalog", tags=["reference"])
def list_catalog(kind: str, query: Page) -> Response:
    """List the catalog entries of a kind."""
    with transaction(services().read_engine) as session:
        entries = catalog.list_entries(session, kind, query.cursor, query.limit + 1)
    return json_response(page(entries, query.limit, key=lambda e: e["code"]))


@bp.get("/catalog/<kind:kind>/<code:code>")
@requires("correspondence.read")
@contract.validate(resp=Answers(HTTP_200=CatalogEntry, problems=(*SIGNED_IN, 404)),
                   operation_id="getCatalogEntry", tags=["reference"])
def get_catalog_entry(kind: str, code: str) -> Response:
    """Get a catalog entry."""
    with transaction(services().read_engine) as session:
        return json_response(catalog.get_entry(session, kind, code).to_dict())


@bp.put("/catalog/<kind:kind>/<code:code>")
@audits_refusals("CATALOG_CHANGE")
@requires("system.manage_settings")
@contract.validate(resp=Answers(HTTP_200=(CatalogEntry, "Updated"),
                                HTTP_201=(CatalogEntry, "Created"),
                                problems=(*SIGNED_IN, *JSON_BODY, 404)),
                   operation_id="putCatalogEntry", tags=["reference"])
def put_catalog_entry(kind: str, code: str, json: CatalogEntryWrite) -> Response:
    """Create or update a catalog entry."""
    svc = services()
    before, after = catalog.put_entry(svc.engine, kind, code, json.name, json.active,
                                      request_actor(), svc.clock, redis=svc.redis)
    return json_response(after.to_dict(), 200 if before else 201)


@bp.post("/configs")
@audits_refusals("CONFIG_CREATE")
@requires("system.manage_settings")
@contract.validate(resp=Answers(HTTP_201=(Config, "Created at version 1"),
                                problems=(*SIGNED_IN, *JSON_BODY, 409)),
                   operation_id="createConfig", tags=["reference"])
def create_config(json: ConfigCreate) -> Response:
    """Create a numbering config for a project (and optionally a correspondence type)."""
    svc = services()
    config = configs.create_config(svc.engine, json, request_actor(), svc.clock,
                                   redis=svc.redis)
    return json_response(config.to_dict(), 201)


@bp.get("/configs")
@requires("system.manage_settings")
@contract.validate(resp=Answers(HTTP_200=(ConfigPage, "Configs in id order"), problems=LIST),
                   operation_id="listConfigs", tags=["reference"])
def list_configs(query: ConfigListQuery) -> Response:
    """List numbering configs."""
    with transaction(services().read_engine) as session:
        items = configs.list_configs(session, query.project, query.after_id(), query.limit + 1)
    return json_response(page(items, query.limit, key=lambda c: c["id"]))


@bp.get("/configs/<id:config_id>")
@requires("system.manage_settings")
@contract.validate(resp=Answers(HTTP_200=Config, problems=(*SIGNED_IN, 404)),
                   operation_id="getConfig", tags=["reference"])
def get_config(config_id: int) -> Response:
    """Get a numbering config."""
    with transaction(services().read_engine) as session:
        return json_response(configs.get_config(session, config_id).to_dict())


@bp.put("/configs/<id:config_id>")
@audits_refusals("CONFIG_UPDATE")
@requires("system.manage_settings")
@contract.validate(resp=Answers(HTTP_200=(Config, "Changed: version + 1"),
                                problems=(*SIGNED_IN, *JSON_BODY, 404, 409)),
                   operation_id="updateConfig", tags=["reference"])
def update_config(config_id: int, json: ConfigUpdate) -> Response:
    """Change a config (version + 1); numbers already issued are never touched."""
    svc = services()
    _, after = configs.update_config(svc.engine, config_id, json, request_actor(), svc.clock,
                                     redis=svc.redis)
    return json_response(after.to_dict())


@bp.get("/configs/<id:config_id>/history")
@requires("system.manage_settings")
@contract.validate(resp=Answers(HTTP_200=(ConfigHistoryPage, "Versions, oldest first"),
                                problems=(*LIST, 404)),
                   operation_id="configHistory", tags=["reference"])
def config_history(config_id: int, query: IdPage) -> Response:
    """Versions of a config."""
    with transaction(services().read_engine) as session:
        items = configs.config_history(session, config_id, query.after_id(), query.limit + 1)
    return json_response(page(items, query.limit, key=lambda h: h["version"]))
