"""The reference catalog (docs/reference.md#reference-catalog): projects, organizations, types and disciplines, named by code."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime

import yaml
from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from docnum.shared.context import FIELD_KIND, NumberingContext
from docnum.shared.errors import DocnumError, FieldError, validation_failed
from docnum.shared.models import CatalogEntry
from docnum.shared.schemas import KINDS, CatalogEntryWrite, code_problem, parse


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise DocnumError("NOT_FOUND", f"unknown catalog kind {kind!r}; kinds are {', '.join(KINDS)}")


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


def put_entry(session: Session, kind: str, code: str, name: object, active: object,
              now: datetime) -> tuple[Entry | None, Entry]:
    """Create or update one entry; returns (before, after) for the audit row."""
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


def check_found_codes(wanted: dict[tuple[str, str], str], found: dict[tuple[str, str], bool]) -> None:
    unknown = [(k, f) for k, f in wanted.items() if k not in found]
    if unknown:
        raise DocnumError("UNKNOWN_CODE", "; ".join(f"{f}: unknown {k[0]} code {k[1]!r}"
                                                    for k, f in unknown),
                          errors=[FieldError(f, f"unknown {k[0]} code {k[1]!r}") for k, f in unknown])
    inactive = [(k, f) for k, f in wanted.items() if not found[k]]
    if inactive:
        raise DocnumError("CODE_INACTIVE", "; ".join(f"{f}: {k[0]} code {k[1]!r} is inactive"
                                                     for k, f in inactive),
                          errors=[FieldError(f, f"{k[0]} code {k[1]!r} is inactive")
                                  for k, f in inactive])


def parse_catalog_file(name: str, content: bytes) -> list[dict]:
    """Entries from YAML (``{kind: [{code, name, active?}]}`` or a list) or CSV (kind,code,name,active)."""
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
