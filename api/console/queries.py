"""The console's read queries: what its pages show beyond what an API route answers (configs
grouped by project, version diffs, counter pages with utilization levels, replacement chains,
the resets overview, the audit trail as CSV).

Nothing here writes: the console writes through the very services the API calls
(``shared.configs``, ``shared.lifecycle``, ``shared.override``, ``shared.bulk_import``,
``shared.resets``).
"""
from __future__ import annotations

import csv
import difflib
import io
import json
from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from docnum.shared import reports
from docnum.shared.configs import ConfigView, config_history, list_configs
from docnum.shared.context import FIELD_KIND
from docnum.shared.db import transaction
from docnum.shared.models import CatalogEntry, Counter, IssuedNumber, ResetRequest
from docnum.shared.resets import counter_floor, get_reset, list_resets
from docnum.shared.schemas import AuditFilters

AMBER_ABOVE = 0.90
RED_ABOVE = 0.95
CHAIN_LIMIT = 50


# --------------------------------------------------------------------------- templates

def configs_by_project(session: Session, project: str | None = None,
                       limit: int = 500) -> dict[str, list[ConfigView]]:
    """Configs grouped by project (project default first, then by type)."""
    grouped: dict[str, list[ConfigView]] = {}
    for config in list_configs(session, project or None, None, limit):
        grouped.setdefault(config.project, []).append(config)
    for items in grouped.values():
        items.sort(key=lambda c: (c.correspondence_type is not None, c.correspondence_type or ""))
    return dict(sorted(grouped.items()))


def _version_lines(version: dict) -> list[str]:
    scope = version.get("counter_scope")
    return [f"template: {version['template']}",
            f"reset: {version['reset']}",
            f"fiscal_year_start_month: {version['fiscal_year_start_month']}",
            f"sequence_start: {version['sequence_start']}",
            f"counter_scope: {'-' if scope is None else ', '.join(scope) or '[]'}",
            f"active: {'yes' if version['active'] else 'no'}"]


def version_diffs(session: Session, config_id: int, limit: int = 500) -> list[dict]:
    """Every version of a config, newest first, each with a line diff against the one before.

    ``diff`` is a list of ``(op, text)``: op ``" "`` unchanged, ``"-"`` removed, ``"+"`` added.
    """
    history = config_history(session, config_id, None, limit)
    out: list[dict] = []
    previous: list[str] = []
    for version in history:
        lines = _version_lines(version)
        diff = []
        for line in difflib.ndiff(previous, lines):
            op = line[:1]
            if op in (" ", "-", "+"):
                diff.append((op, line[2:]))
        out.append(dict(version, diff=diff))
        previous = lines
    return list(reversed(out))


def sample_context(session: Session, config: ConfigView) -> dict[str, str]:
    """Codes to preview a config with: those of the newest number it issued, else the first
    active code of each kind (so the editor shows a real preview at once)."""
    row = session.scalar(select(IssuedNumber).where(IssuedNumber.config_id == config.id)
                         .order_by(IssuedNumber.id.desc()).limit(1))
    out: dict[str, str] = {"project": config.project}
    if row is not None:
        for name in FIELD_KIND:
            value = getattr(row, name)
            if value and name != "project":
                out[name] = value
        if row.revision:
            out["revision"] = row.revision
    for name, kind in FIELD_KIND.items():
        if name in out:
            continue
        if name == "correspondence_type" and config.correspondence_type:
            out[name] = config.correspondence_type
            continue
        code = session.scalar(select(CatalogEntry.code).where(
            CatalogEntry.kind == kind, CatalogEntry.active.is_(True))
            .order_by(CatalogEntry.code).limit(1))
        if code:
            out[name] = code
    out.setdefault("revision", "A")
    return out


def catalog_codes(session: Session) -> dict[str, list[str]]:
    """Active codes per context field, for the editor's pick lists."""
    by_kind: dict[str, list[str]] = {}
    for kind, code in session.execute(select(CatalogEntry.kind, CatalogEntry.code)
                                      .where(CatalogEntry.active.is_(True))
                                      .order_by(CatalogEntry.kind, CatalogEntry.code)):
        by_kind.setdefault(kind, []).append(code)
    return {name: by_kind.get(kind, []) for name, kind in FIELD_KIND.items()}


# --------------------------------------------------------------------------- counters

def utilization_level(utilization: float) -> str:
    """``red`` above 95 %, ``amber`` above 90 %, else ``ok``."""
    if utilization > RED_ABOVE:
        return "red"
    if utilization > AMBER_ABOVE:
        return "amber"
    return "ok"


def counters_page(session: Session, *, project: str | None, after_key: str | None,
                  limit: int) -> tuple[list[dict], str | None]:
    """A page of counters (with ``level`` and ``percent``) and the key to continue after."""
    rows = reports.list_counters(session, project=project or None, correspondence_type=None,
                                 after_key=after_key, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    for row in rows:
        row["percent"] = round(row["utilization"] * 100, 2)
        row["level"] = utilization_level(row["utilization"])
    return rows, rows[-1]["counter_key"] if more and rows else None


def configs_of_counter(session: Session, counter_key: str) -> list[ConfigView]:
    """The configs (any version) that number on ``counter_key``: who a reset request names."""
    parts = reports.parse_counter_key(counter_key)
    if parts is None:
        return []
    return [c for c in list_configs(session, parts.project, None, 500)
            if reports.key_belongs_to(counter_key, reports.config_shapes(session, c))]


# --------------------------------------------------------------------------- numbers

def replacement_chain(session: Session, project: str, number: str) -> list[dict]:
    """The void/replace chain through ``number``, oldest first: every number it replaces
    (back to the first) and every number that replaced it (to the current one)."""
    def row_of(text: str) -> IssuedNumber | None:
        return session.scalar(select(IssuedNumber).where(IssuedNumber.project == project,
                                                         IssuedNumber.document_number == text))

    def entry(row: IssuedNumber) -> dict:
        return {"document_number": row.document_number, "state": row.state,
                "source": row.source, "current": row.document_number == number}

    start = row_of(number)
    if start is None:
        return []
    chain = [entry(start)]
    seen = {start.document_number}

    def follow(link: str) -> Iterator[IssuedNumber]:
        """The rows that ``link`` (``replaces`` or ``replaced_by``) leads to from ``start``;
        a loop or a missing row ends the walk, and so does the chain's length limit."""
        row = start
        while getattr(row, link) and len(chain) < CHAIN_LIMIT:
            row = row_of(getattr(row, link))
            if row is None or row.document_number in seen:
                return
            seen.add(row.document_number)
            yield row

    for row in follow("replaces"):
        chain.insert(0, entry(row))
    for row in follow("replaced_by"):
        chain.append(entry(row))
    return chain if len(chain) > 1 else []


# --------------------------------------------------------------------------- resets

def resets_overview(session: Session, limit: int = 200) -> dict:
    """Pending requests (with the counter's current value and floor) and recent finished ones."""
    pending = list_resets(session, "PENDING_APPROVAL", None, limit)
    for item in pending:
        item["floor"] = counter_floor(session, item["counter_key"])
        item["last_sequence"] = session.scalar(select(Counter.last_sequence).where(
            Counter.counter_key == item["counter_key"]))
        item["floor_ok"] = item["new_last_sequence"] >= item["floor"]
    recent = session.scalars(select(ResetRequest.id)
                             .where(ResetRequest.status != "PENDING_APPROVAL")
                             .order_by(ResetRequest.id.desc()).limit(limit))
    done = [get_reset(session, reset_id) for reset_id in recent]
    return {"pending": pending, "done": done}


def floor_check(session: Session, counter_key: str) -> dict | None:
    """The counter's current value, capacity and floor (highest sequence ever issued)."""
    counter = session.get(Counter, counter_key)
    if counter is None:
        return None
    return {"counter_key": counter_key, "last_sequence": int(counter.last_sequence),
            "capacity": int(counter.capacity), "floor": counter_floor(session, counter_key)}


# --------------------------------------------------------------------------- audit export

AUDIT_CSV_COLUMNS = ("id", "created_at", "operation", "actor", "success", "error_code",
                     "document_number", "counter_key", "request_id", "client_ip", "user_agent",
                     "lock_wait_ms", "duration_ms", "retry_count", "fallback_used", "before",
                     "after")


def _csv_line(values: list) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(values)
    return buffer.getvalue()


def audit_csv(engine: Engine, filters: AuditFilters, *, page_size: int = 500,
              max_rows: int = 1_000_000) -> Iterator[str]:
    """The filtered audit trail as CSV text chunks (UTF-8 BOM first, for spreadsheet programs
    to read Thai), newest first, one short read transaction per page of ``page_size`` rows."""
    yield "\ufeff" + _csv_line(list(AUDIT_CSV_COLUMNS))
    before_id = None
    sent = 0
    while sent < max_rows:
        with transaction(engine) as session:
            rows = reports.query_audit(session, filters, before_id, page_size)
        if not rows:
            return
        chunk = []
        for row in rows:
            values = []
            for column in AUDIT_CSV_COLUMNS:
                value = row.get(column)
                if column in ("before", "after"):
                    value = "" if value is None else json.dumps(value, ensure_ascii=False,
                                                                sort_keys=True)
                elif isinstance(value, bool):
                    value = "true" if value else "false"
                values.append("" if value is None else value)
            chunk.append(_csv_line(values))
        sent += len(rows)
        yield "".join(chunk)
        if len(rows) < page_size:
            return
        before_id = rows[-1]["id"]


__all__ = ["AUDIT_CSV_COLUMNS", "audit_csv", "catalog_codes", "configs_by_project",
           "configs_of_counter", "counters_page", "floor_check", "replacement_chain",
           "resets_overview", "sample_context", "utilization_level", "version_diffs"]
