"""The reference catalog (docs/reference.md#reference-catalog): projects, organizations, types
and disciplines, named by code."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import yaml
from sqlalchemy import select, tuple_
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from docnum.shared.audit import Actor, write_audit
from docnum.shared.clock import Clock
from docnum.shared.context import FIELD_KIND, NumberingContext
from docnum.shared.db import transaction
from docnum.shared.errors import DocnumError, FieldError, validation_failed
from docnum.shared.models import CatalogEntry
from docnum.shared.schemas import KINDS, CatalogEntryWrite, parse
from docnum.shared.templates import code_problem

if TYPE_CHECKING:
    from redis import Redis


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise DocnumError("NOT_FOUND",
                          f"unknown catalog kind {kind!r}; kinds are {', '.join(KINDS)}")


@dataclass(frozen=True)
class Entry:
    kind: str
    code: str
    name: str
    active: bool

    def to_dict(self) -> dict:
        return {"kind": self.kind, "code": self.code, "name": self.name, "active": self.active}


def _entry(row: CatalogEntry) -> Entry:
    return Entry(row.kind, row.code, row.name, bool(row.active))


def get_entry(session: Session, kind: str, code: str) -> Entry:
    check_kind(kind)
    row = session.scalar(select(CatalogEntry).where(CatalogEntry.kind == kind,
                                                    CatalogEntry.code == code))
    if row is None:
        raise DocnumError("NOT_FOUND", f"no {kind} with code {code!r}")
    return _entry(row)


def list_entries(session: Session, kind: str, after: str | None, limit: int) -> list[Entry]:
    check_kind(kind)
    query = select(CatalogEntry).where(CatalogEntry.kind == kind)
    if after is not None:
        query = query.where(CatalogEntry.code > after)
    rows = session.scalars(query.order_by(CatalogEntry.code).limit(limit))
    return [_entry(r) for r in rows]


def upsert_entry(session: Session, kind: str, code: str, name: object, active: object,
                 now: datetime) -> tuple[Entry | None, Entry]:
    """Create or update one entry inside the caller's transaction; (before, after), before None
    for a new entry.

    No audit row, and the running APIs are not told: writers go through ``put_entry`` or
    ``load_entries``. Fixtures that build reference data in one transaction (the tests,
    ``docnum loadtest``) use this and call ``refcache.bump_generation`` themselves when done.
    """
    check_kind(kind)
    problem = code_problem(code)
    if problem:
        raise validation_failed("code", problem)
    entry = parse(CatalogEntryWrite, {"name": name, "active": active})
    name, active = entry.name, entry.active
    row = session.scalar(select(CatalogEntry).where(CatalogEntry.kind == kind,
                                                    CatalogEntry.code == code).with_for_update())
    before = _entry(row) if row else None
    if row is None:
        row = CatalogEntry(kind=kind, code=code, name=name, active=active, updated_at=now)
        session.add(row)
    else:
        row.name, row.active, row.updated_at = name, active, now
    session.flush()
    return before, _entry(row)


def _audit_change(session: Session, actor: Actor, now: datetime, before: Entry | None,
                  after: Entry) -> None:
    write_audit(session, "CATALOG_CHANGE", actor, now,
                before=before.to_dict() if before else None, after=after.to_dict())


def put_entry(engine: Engine, kind: str, code: str, name: object, active: object, actor: Actor,
              clock: Clock, *, redis: Redis | None) -> tuple[Entry | None, Entry]:
    """Create or update one entry (``PUT /catalog/{kind}/{code}``) with its ``CATALOG_CHANGE``
    audit row, then tell the running APIs (``redis``: see ``refcache.bump_generation``).

    (before, after), before None for a new entry. The audit row is written even when nothing
    changed: the caller asked for this state.
    """
    now = clock.now()
    with transaction(engine) as session:
        before, after = upsert_entry(session, kind, code, name, active, now)
        _audit_change(session, actor, now, before, after)
    _reference_changed(redis)
    return before, after


def load_entries(engine: Engine, entries: list[dict[str, Any]], actor: Actor, clock: Clock, *,
                 redis: Redis | None) -> int:
    """Create or update many entries (``docnum catalog load``) in one transaction: all or none.

    Only entries that change get a ``CATALOG_CHANGE`` row, and the running APIs are told only
    when something changed, so loading the same file again writes nothing. Returns how many
    entries were created or changed.
    """
    now = clock.now()
    changed = 0
    with transaction(engine) as session:
        for entry in entries:
            before, after = upsert_entry(session, entry["kind"], entry["code"], entry["name"],
                                         entry["active"], now)
            if before != after:
                changed += 1
                _audit_change(session, actor, now, before, after)
    if changed:
        _reference_changed(redis)
    return changed


def _reference_changed(redis: Redis | None) -> None:
    # refcache reads the catalog through this module, so it is imported once a write has
    # committed rather than while this module loads.
    from docnum.shared.refcache import bump_generation

    bump_generation(redis)


def check_context_codes(session: Session, ctx: NumberingContext) -> None:
    """Every code the request names must exist and be active (422 UNKNOWN_CODE / CODE_INACTIVE)."""
    wanted = {(FIELD_KIND[f], getattr(ctx, f)): f for f in FIELD_KIND if getattr(ctx, f)}
    if not wanted:
        return
    rows = session.execute(
        select(CatalogEntry.kind, CatalogEntry.code, CatalogEntry.active)
        .where(tuple_(CatalogEntry.kind, CatalogEntry.code).in_(list(wanted)))
    ).all()
    found = {(r.kind, r.code): bool(r.active) for r in rows}
    check_found_codes(wanted, found)


def check_found_codes(wanted: dict[tuple[str, str], str],
                      found: dict[tuple[str, str], bool]) -> None:
    unknown = [(k, f) for k, f in wanted.items() if k not in found]
    if unknown:
        raise DocnumError("UNKNOWN_CODE", "; ".join(f"{f}: unknown {k[0]} code {k[1]!r}"
                                                    for k, f in unknown),
                          errors=[FieldError(f, f"unknown {k[0]} code {k[1]!r}")
                                  for k, f in unknown])
    inactive = [(k, f) for k, f in wanted.items() if not found[k]]
    if inactive:
        raise DocnumError("CODE_INACTIVE", "; ".join(f"{f}: {k[0]} code {k[1]!r} is inactive"
                                                     for k, f in inactive),
                          errors=[FieldError(f, f"{k[0]} code {k[1]!r} is inactive")
                                  for k, f in inactive])


def parse_catalog_file(name: str, content: bytes) -> list[dict]:
    """Entries from YAML (``{kind: [{code, name, active?}]}`` or a list) or CSV
    (kind,code,name,active)."""
    text = content.decode("utf-8-sig")
    if name.lower().endswith(".csv"):
        rows = list(csv.DictReader(io.StringIO(text)))
        return [{"kind": r["kind"].strip(), "code": r["code"].strip(), "name": r["name"].strip(),
                 "active": (r.get("active") or "true").strip().lower() in ("1", "true", "yes")}
                for r in rows]
    data = yaml.safe_load(text) or {}
    if isinstance(data, dict):
        return [{"kind": kind, "code": str(e["code"]), "name": str(e.get("name", e["code"])),
                 "active": bool(e.get("active", True))}
                for kind, entries in data.items() for e in entries or []]
    return [{"kind": e["kind"], "code": str(e["code"]), "name": str(e.get("name", e["code"])),
             "active": bool(e.get("active", True))} for e in data]
