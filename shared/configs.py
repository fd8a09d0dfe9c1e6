"""Numbering configs: one per (project, correspondence type), versioned, with a change history."""
from __future__ import annotations

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
from docnum.shared.templates import RESETS, ParsedTemplate, validate_template

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
    """Type and range checks for config fields; the template rules come from the template engine."""
    out = dict(values)
    if not isinstance(out.get("template"), str):
        raise validation_failed("template", "must be a string")
    if out.get("reset") not in RESETS:
        raise validation_failed("reset", f"must be one of {', '.join(RESETS)}")
    month = out.get("fiscal_year_start_month", 10)
    if isinstance(month, bool) or not isinstance(month, int) or not 1 <= month <= 12:
        raise validation_failed("fiscal_year_start_month", "must be an integer 1-12")
    start = out.get("sequence_start", 1)
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= 999_999_999:
        raise validation_failed("sequence_start", "must be an integer 0-999999999")
    scope = out.get("counter_scope")
    if scope is not None and (not isinstance(scope, list)
                              or not all(isinstance(s, str) for s in scope)):
        raise validation_failed("counter_scope", "must be a list of dimension names or null")
    active = out.get("active", True)
    if not isinstance(active, bool):
        raise validation_failed("active", "must be true or false")
    parsed = validate_template(out["template"], out["reset"], scope)
    if start > parsed.capacity:
        raise validation_failed("sequence_start",
                                f"exceeds the template's capacity {parsed.capacity}")
    out.update(fiscal_year_start_month=month, sequence_start=start, active=active,
               counter_scope=scope)
    return out


def _check_owner_codes(session: Session, project: object, ctype: object) -> None:
    if not isinstance(project, str) or not project:
        raise validation_failed("project", "is required")
    if ctype is not None and not isinstance(ctype, str):
        raise validation_failed("correspondence_type", "must be a code or null")
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


def insert_config(session: Session, body: dict[str, Any], created_by: str,
                  now: datetime) -> ConfigView:
    """Create a config (version 1, with its first history row) inside the caller's transaction.

    No audit row, and the running APIs are not told: writers go through ``create_config``.
    Fixtures that build reference data in one transaction (the tests, ``docnum loadtest``) use
    this and call ``refcache.bump_generation`` themselves when done.
    """
    project, ctype = body.get("project"), body.get("correspondence_type")
    _check_owner_codes(session, project, ctype)
    values = _check_fields({k: body[k] for k in EDITABLE if k in body})
    row = NumberingConfig(project=project, correspondence_type=ctype, type_key=ctype or "",
                          version=1, created_by=created_by, created_at=now, updated_at=now,
                          **values)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise DocnumError("CONFLICT", f"a config for project {project!r} and correspondence type "
                                      f"{ctype!r} already exists") from None
    reason = body.get("change_reason")
    if reason is not None:
        _check_change_reason(reason)
    session.add(_history(row, created_by, now, reason or "created"))
    return _view(row)


def create_config(engine: Engine, body: dict[str, Any], actor: Actor, clock: Clock, *,
                  redis: Redis | None) -> ConfigView:
    """Create a config (``POST /configs``) with its ``CONFIG_CREATE`` audit row, then tell the
    running APIs (``redis``: see ``refcache.bump_generation``)."""
    now = clock.now()
    with transaction(engine) as session:
        config = insert_config(session, body, actor.sub, now)
        write_audit(session, "CONFIG_CREATE", actor, now, after=config.to_dict())
    _reference_changed(redis)
    return config


MAX_CHANGE_REASON = 1000


def _check_change_reason(reason: object) -> None:
    # Printable text only (no control, bidi-override or unpaired surrogate characters), and a
    # length the history column can always hold.
    if not isinstance(reason, str) or len(reason) > MAX_CHANGE_REASON or not reason.isprintable():
        raise validation_failed("change_reason", f"must be printable text of at most "
                                                 f"{MAX_CHANGE_REASON} characters")


def _apply_update(session: Session, config_id: int, body: dict[str, Any], changed_by: str,
                  now: datetime) -> tuple[ConfigView, ConfigView]:
    """Apply changes, raise the version, record history. Issued numbers are never touched."""
    reason = body.get("change_reason")
    if not isinstance(reason, str) or len(reason.strip()) < 10:
        raise validation_failed("change_reason", "is required, at least 10 characters")
    _check_change_reason(reason)
    unknown = set(body) - set(EDITABLE) - {"change_reason", "project", "correspondence_type", "id",
                                           "version"}
    if unknown:
        raise validation_failed(sorted(unknown)[0], "is not a field that can be changed")
    row = session.scalar(select(NumberingConfig).where(NumberingConfig.id == config_id)
                         .with_for_update())
    if row is None:
        raise DocnumError("NOT_FOUND", f"no config {config_id}")
    before = _view(row)
    for owner_field in ("project", "correspondence_type"):
        if owner_field in body and body[owner_field] != getattr(row, owner_field):
            raise validation_failed(owner_field, "cannot be changed; create a new config instead")
    if "version" in body and body["version"] != row.version:
        raise DocnumError("CONFLICT", f"config {config_id} is at version {row.version}, "
                                      f"not {body['version']}")
    current = {k: getattr(row, k) for k in EDITABLE}
    current.update({k: body[k] for k in EDITABLE if k in body})
    values = _check_fields(current)
    for key, value in values.items():
        setattr(row, key, value)
    row.version += 1
    row.updated_at = now
    session.flush()
    session.add(_history(row, changed_by, now, reason.strip()))
    return before, _view(row)


def update_config(engine: Engine, config_id: int, body: dict[str, Any], actor: Actor,
                  clock: Clock, *, redis: Redis | None) -> tuple[ConfigView, ConfigView]:
    """Change a config (``PUT /configs/{id}``, the console's template editor) with its
    ``CONFIG_UPDATE`` audit row, then tell the running APIs (``redis``: see
    ``refcache.bump_generation``). (before, after)."""
    now = clock.now()
    with transaction(engine) as session:
        before, after = _apply_update(session, config_id, body, actor.sub, now)
        write_audit(session, "CONFIG_UPDATE", actor, now, before=before.to_dict(),
                    after=dict(after.to_dict(), change_reason=body.get("change_reason")))
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
