"""Numbering configs: one per (project, correspondence type), versioned, with a change history."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from docnum.shared.audit import Actor, write_audit
from docnum.shared.catalog import check_found_codes
from docnum.shared.clock import Clock, from_db, iso
from docnum.shared.db import transaction
from docnum.shared.errors import DocnumError, validation_failed
from docnum.shared.models import CatalogEntry, ConfigHistory, NumberingConfig
from docnum.shared.schemas import ConfigCreate, ConfigUpdate, as_model
from docnum.shared.templates import ParsedTemplate, validate_template

if TYPE_CHECKING:
    from redis import Redis

EDITABLE = ("template", "reset", "fiscal_year_start_month", "sequence_start", "counter_scope",
            "active")


@dataclass(frozen=True)
class ConfigView:
    """An immutable snapshot of a config version: what a request is numbered with."""

    id: int
    project: str
    correspondence_type: str | None
    template: str
    reset: str
    fiscal_year_start_month: int
    sequence_start: int
    counter_scope: tuple[str, ...] | None
    version: int
    active: bool
    created_by: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def parsed(self) -> ParsedTemplate:
        return parsed_template(self.template, self.reset, self.counter_scope)

    def to_dict(self) -> dict:
        return {
            "id": self.id, "project": self.project,
            "correspondence_type": self.correspondence_type, "template": self.template,
            "reset": self.reset, "fiscal_year_start_month": self.fiscal_year_start_month,
            "sequence_start": self.sequence_start,
            "counter_scope": list(self.counter_scope) if self.counter_scope is not None else None,
            "version": self.version, "active": self.active, "created_by": self.created_by,
            "created_at": iso(self.created_at), "updated_at": iso(self.updated_at),
        }

    def snapshot(self) -> dict:
        """The part of a config a queued request carries to the worker."""
        return {"id": self.id, "version": self.version, "template": self.template,
                "reset": self.reset, "fiscal_year_start_month": self.fiscal_year_start_month,
                "sequence_start": self.sequence_start,
                "counter_scope": (list(self.counter_scope)
                                  if self.counter_scope is not None else None),
                "project": self.project, "correspondence_type": self.correspondence_type}

    @classmethod
    def from_snapshot(cls, data: dict) -> ConfigView:
        scope = data.get("counter_scope")
        return cls(id=data["id"], project=data["project"],
                   correspondence_type=data.get("correspondence_type"),
                   template=data["template"], reset=data["reset"],
                   fiscal_year_start_month=data["fiscal_year_start_month"],
                   sequence_start=data["sequence_start"],
                   counter_scope=tuple(scope) if scope is not None else None,
                   version=data["version"],
                   active=True)


@lru_cache(maxsize=1024)
def parsed_template(template: str, reset: str,
                    counter_scope: tuple[str, ...] | None) -> ParsedTemplate:
    """Parsing is pure, so each (template, reset, scope) is parsed once per process."""
    return validate_template(template, reset,
                             list(counter_scope) if counter_scope is not None else None)


def _view(row: NumberingConfig) -> ConfigView:
    return ConfigView(
        id=row.id, project=row.project, correspondence_type=row.correspondence_type,
        template=row.template, reset=row.reset,
        fiscal_year_start_month=row.fiscal_year_start_month, sequence_start=row.sequence_start,
        counter_scope=tuple(row.counter_scope) if row.counter_scope is not None else None,
        version=row.version, active=bool(row.active), created_by=row.created_by,
        created_at=from_db(row.created_at), updated_at=from_db(row.updated_at))


def _check_fields(values: dict) -> dict:
    """The template rules (the template engine's) and the sequence start against the
    template's capacity; ``values`` are a validated config's fields."""
    parsed = validate_template(values["template"], values["reset"], values["counter_scope"])
    if values["sequence_start"] > parsed.capacity:
        raise validation_failed("sequence_start",
                                f"exceeds the template's capacity {parsed.capacity}")
    return values


def _check_owner_codes(session: Session, project: str, ctype: str | None) -> None:
    wanted = {("project", project): "project"}
    if ctype is not None:
        wanted[("correspondence_type", ctype)] = "correspondence_type"
    rows = session.execute(select(CatalogEntry.kind, CatalogEntry.code, CatalogEntry.active).where(
        or_(*[(CatalogEntry.kind == k) & (CatalogEntry.code == c) for k, c in wanted]))).all()
    check_found_codes(wanted, {(r.kind, r.code): bool(r.active) for r in rows})


def _history(row: NumberingConfig, by: str, at: datetime, reason: str | None) -> ConfigHistory:
    return ConfigHistory(config_id=row.id, version=row.version, template=row.template,
                         reset=row.reset, fiscal_year_start_month=row.fiscal_year_start_month,
                         sequence_start=row.sequence_start, counter_scope=row.counter_scope,
                         active=row.active, changed_by=by, changed_at=at, change_reason=reason)


def insert_config(session: Session, body: ConfigCreate | Mapping[str, Any], created_by: str,
                  now: datetime) -> ConfigView:
    """Create a config (version 1, with its first history row) inside the caller's transaction.

    No audit row, and the running APIs are not told: writers go through ``create_config``.
    Fixtures that build reference data in one transaction (the tests, ``docnum loadtest``) use
    this and call ``refcache.bump_generation`` themselves when done.
    """
    request = as_model(ConfigCreate, body)
    project, ctype = request.project, request.correspondence_type
    _check_owner_codes(session, project, ctype)
    values = _check_fields({k: getattr(request, k) for k in EDITABLE})
    row = NumberingConfig(project=project, correspondence_type=ctype, type_key=ctype or "",
                          version=1, created_by=created_by, created_at=now, updated_at=now,
                          **values)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise DocnumError("CONFLICT", f"a config for project {project!r} and correspondence type "
                                      f"{ctype!r} already exists") from None
    session.add(_history(row, created_by, now, request.change_reason or "created"))
    return _view(row)


def create_config(engine: Engine, body: ConfigCreate | Mapping[str, Any], actor: Actor,
                  clock: Clock, *, redis: Redis | None) -> ConfigView:
    """Create a config (``POST /configs``) with its ``CONFIG_CREATE`` audit row, then tell the
    running APIs (``redis``: see ``refcache.bump_generation``)."""
    now = clock.now()
    with transaction(engine) as session:
        config = insert_config(session, body, actor.sub, now)
        write_audit(session, "CONFIG_CREATE", actor, now, after=config.to_dict())
    _reference_changed(redis)
    return config


def _apply_update(session: Session, config_id: int, request: ConfigUpdate, changed_by: str,
                  now: datetime) -> tuple[ConfigView, ConfigView]:
    """Apply changes, raise the version, record history. Issued numbers are never touched."""
    row = session.scalar(select(NumberingConfig).where(NumberingConfig.id == config_id)
                         .with_for_update())
    if row is None:
        raise DocnumError("NOT_FOUND", f"no config {config_id}")
    before = _view(row)
    for owner_field in ("project", "correspondence_type"):
        sent = getattr(request, owner_field)
        if owner_field in request.model_fields_set and sent != getattr(row, owner_field):
            raise validation_failed(owner_field, "cannot be changed; create a new config instead")
    if request.version is not None and request.version != row.version:
        raise DocnumError("CONFLICT", f"config {config_id} is at version {row.version}, "
                                      f"not {request.version}")
    current = {k: getattr(row, k) for k in EDITABLE}
    current.update(request.changes())
    values = _check_fields(current)
    for key, value in values.items():
        setattr(row, key, value)
    row.version += 1
    row.updated_at = now
    session.flush()
    session.add(_history(row, changed_by, now, request.change_reason))
    return before, _view(row)


def update_config(engine: Engine, config_id: int, body: ConfigUpdate | Mapping[str, Any],
                  actor: Actor, clock: Clock, *, redis: Redis | None
                  ) -> tuple[ConfigView, ConfigView]:
    """Change a config (``PUT /configs/{id}``, the console's template editor) with its
    ``CONFIG_UPDATE`` audit row, then tell the running APIs (``redis``: see
    ``refcache.bump_generation``). (before, after)."""
    request = as_model(ConfigUpdate, body)
    now = clock.now()
    with transaction(engine) as session:
        before, after = _apply_update(session, config_id, request, actor.sub, now)
        write_audit(session, "CONFIG_UPDATE", actor, now, before=before.to_dict(),
                    after=dict(after.to_dict(), change_reason=request.change_reason))
    _reference_changed(redis)
    return before, after


def _reference_changed(redis: Redis | None) -> None:
    # refcache reads the configs through this module, so it is imported once a write has
    # committed rather than while this module loads.
    from docnum.shared.refcache import bump_generation

    bump_generation(redis)


def get_config(session: Session, config_id: int) -> ConfigView:
    row = session.get(NumberingConfig, config_id)
    if row is None:
        raise DocnumError("NOT_FOUND", f"no config {config_id}")
    return _view(row)


def list_configs(session: Session, project: str | None, after_id: int | None,
                 limit: int) -> list[ConfigView]:
    query = select(NumberingConfig)
    if project:
        query = query.where(NumberingConfig.project == project)
    if after_id is not None:
        query = query.where(NumberingConfig.id > after_id)
    return [_view(r) for r in session.scalars(query.order_by(NumberingConfig.id).limit(limit))]


def config_history(session: Session, config_id: int, after_version: int | None,
                   limit: int) -> list[dict]:
    get_config(session, config_id)
    query = select(ConfigHistory).where(ConfigHistory.config_id == config_id)
    if after_version is not None:
        query = query.where(ConfigHistory.version > after_version)
    rows = session.scalars(query.order_by(ConfigHistory.version).limit(limit))
    return [{"config_id": r.config_id, "version": r.version, "template": r.template,
             "reset": r.reset, "fiscal_year_start_month": r.fiscal_year_start_month,
             "sequence_start": r.sequence_start, "counter_scope": r.counter_scope,
             "active": bool(r.active), "changed_by": r.changed_by,
             "changed_at": iso(r.changed_at), "change_reason": r.change_reason} for r in rows]


def resolve_config(session: Session, project: str, correspondence_type: str | None) -> ConfigView:
    """Exact (project, type), else the project default, else 422 NO_CONFIG — never a silent
    guess."""
    keys = [correspondence_type or "", ""] if correspondence_type else [""]
    rows = {r.type_key: r for r in session.scalars(
        select(NumberingConfig).where(NumberingConfig.project == project,
                                      NumberingConfig.type_key.in_(keys),
                                      NumberingConfig.active.is_(True)))}
    for key in keys:
        if key in rows:
            return _view(rows[key])
    raise DocnumError("NO_CONFIG", f"no active numbering config for project {project!r} and "
                                   f"correspondence type {correspondence_type!r}, and no project "
                                   "default")
