"""The read side of administration: the audit trail, counters and the gaps report
(docs/reference.md#http-api).

Plain functions over a session; the views only parse the query string and page the answer.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Row, Select, func, select
from sqlalchemy.orm import Session

from docnum.shared.clock import iso, to_db
from docnum.shared.configs import ConfigView, resolve_config
from docnum.shared.context import DIMENSIONS
from docnum.shared.errors import DocnumError
from docnum.shared.ledger import audit_dict
from docnum.shared.models import AuditArchiveRow, AuditRow, ConfigHistory, Counter, IssuedNumber
from docnum.shared.schemas import AuditFilters, parse
from docnum.shared.templates import PERIOD_PATTERN

_DIMENSION_NAMES = tuple(name for name, _ in DIMENSIONS)
_PERIOD_PATTERNS = {
    "YEARLY": re.compile(r"Y\d{4}"),
    "MONTHLY": re.compile(r"M\d{4}-(0[1-9]|1[0-2])"),
    "FISCAL_YEARLY": re.compile(r"FY\d{4}"),
    "NONE": re.compile(r"ALL"),
}
_ANY_PERIOD = re.compile(PERIOD_PATTERN)
GAP_WINDOW = 2000


# --------------------------------------------------------------------------- counter keys

@dataclass(frozen=True)
class KeyParts:
    project: str
    dimensions: tuple[tuple[str, str], ...]   # (DIMENSION, code) in key order
    period: str


def parse_counter_key(key: str) -> KeyParts | None:
    """Split ``LCBP3|ORIGINATOR=คคง.|RECIPIENT=สคฉ.3|Y2025``; None if it is not a counter key."""
    if not isinstance(key, str):
        return None
    parts = key.split("|")
    if len(parts) < 2 or not parts[0] or not _ANY_PERIOD.fullmatch(parts[-1]):
        return None
    dims = []
    for part in parts[1:-1]:
        name, sep, code = part.partition("=")
        if not sep or name not in _DIMENSION_NAMES or name == "PROJECT" or not code:
            return None
        dims.append((name, code))
    order = [_DIMENSION_NAMES.index(n) for n, _ in dims]
    if order != sorted(set(order)):
        return None
    return KeyParts(parts[0], tuple(dims), parts[-1])


def _shape(template: str, reset: str, scope: Sequence[str] | None, project: str,
           correspondence_type: str | None) -> tuple:
    from docnum.shared.configs import parsed_template

    parsed = parsed_template(template, reset, tuple(scope) if scope is not None else None)
    dims = tuple(d for d in parsed.dimensions
                 if d != "PROJECT" and (scope is None or d in scope))
    # A key that shows CORR_TYPE names the type; a type-specific config owns only its own.
    pinned = correspondence_type if "CORR_TYPE" in dims else None
    return project, dims, reset, pinned


def key_fits_shape(parts: KeyParts, shape: tuple) -> bool:
    project, dims, reset, pinned = shape
    if parts.project != project or tuple(n for n, _ in parts.dimensions) != dims:
        return False
    if not _PERIOD_PATTERNS[reset].fullmatch(parts.period):
        return False
    return pinned is None or dict(parts.dimensions).get("CORR_TYPE") == pinned


def config_shapes(session: Session, config: ConfigView) -> set[tuple]:
    """Key shapes of every version of a config: counters it numbers (or numbered) on."""
    shapes = {_shape(config.template, config.reset, config.counter_scope, config.project,
                     config.correspondence_type)}
    for row in session.execute(select(ConfigHistory.template, ConfigHistory.reset,
                                      ConfigHistory.counter_scope)
                               .where(ConfigHistory.config_id == config.id)):
        try:
            shapes.add(_shape(row.template, row.reset, row.counter_scope, config.project,
                              config.correspondence_type))
        except DocnumError:
            continue  # an old version the current rules would refuse: it cannot match anyway
    return shapes


def key_belongs_to(key: str, shapes: set[tuple]) -> bool:
    parts = parse_counter_key(key)
    return parts is not None and any(key_fits_shape(parts, s) for s in shapes)


# --------------------------------------------------------------------------- audit

def audit_filter(args: Mapping[str, str]) -> AuditFilters:
    """The audit filter of a query string (``GET /audit`` and the console's audit page)."""
    return parse(AuditFilters, dict(args))


def query_audit(session: Session, filters: AuditFilters, before_id: int | None,
                limit: int) -> list[dict]:
    """Newest first, live table and archive together (archived rows keep their id).

    Returns up to ``limit`` rows; the caller asks for one more than a page to know whether
    another page exists. The cursor is the last id seen: ids only grow, so a page never shows
    a row twice or skips one while rows are added or archived.
    """
    def query(model: type[AuditRow] | type[AuditArchiveRow]) -> Select:
        stmt = select(model)
        if filters.document_number is not None:
            stmt = stmt.where(model.document_number == filters.document_number)
        if filters.operation is not None:
            stmt = stmt.where(model.operation == filters.operation)
        if filters.actor is not None:
            stmt = stmt.where(model.actor == filters.actor)
        if filters.counter_key is not None:
            stmt = stmt.where(model.counter_key == filters.counter_key)
        if filters.request_id is not None:
            stmt = stmt.where(model.request_id == filters.request_id)
        if filters.success is not None:
            stmt = stmt.where(model.success.is_(filters.success))
        if filters.start is not None:
            stmt = stmt.where(model.created_at >= to_db(filters.start))
        if filters.end is not None:
            stmt = stmt.where(model.created_at < to_db(filters.end))
        if before_id is not None:
            stmt = stmt.where(model.id < before_id)
        return stmt.order_by(model.id.desc()).limit(limit)

    rows = {r.id: r for r in session.scalars(query(AuditArchiveRow))}
    rows.update({r.id: r for r in session.scalars(query(AuditRow))})
    return [audit_dict(rows[i]) for i in sorted(rows, reverse=True)[:limit]]


# --------------------------------------------------------------------------- counters

def counter_dict(row: Counter) -> dict:
    capacity = int(row.capacity)
    utilization = max(0.0, min(1.0, row.last_sequence / capacity)) if capacity > 0 else 0.0
    return {"counter_key": row.counter_key, "project": row.project,
            "last_sequence": int(row.last_sequence), "capacity": capacity,
            "utilization": round(utilization, 6), "updated_at": iso(row.updated_at)}


def _type_shapes(session: Session, project: str | None,
                 correspondence_type: str | None) -> set[tuple] | None:
    if correspondence_type is None:
        return None
    assert project is not None, "schemas.CounterListQuery: correspondence_type needs project"
    return config_shapes(session, resolve_config(session, project, correspondence_type))


def _counters(session: Session, project: str | None, correspondence_type: str | None,
              period: str | None, counter_key: str | None, after_key: str | None,
              limit: int, *, inclusive: bool = False) -> list[Counter]:
    """Counters in key order after ``after_key`` (from it when ``inclusive``), filtered; scans
    in chunks when a type filter has to be checked key by key."""
    shapes = _type_shapes(session, project, correspondence_type)
    out: list[Counter] = []
    cursor = after_key
    chunk = max(limit * 4, 200)
    while len(out) < limit:
        stmt = select(Counter)
        if project is not None:
            stmt = stmt.where(Counter.project == project)
        if counter_key is not None:
            stmt = stmt.where(Counter.counter_key == counter_key)
        if period is not None:
            stmt = stmt.where(Counter.counter_key.endswith(f"|{period}", autoescape=True))
        if cursor is not None:
            stmt = stmt.where(Counter.counter_key >= cursor if inclusive
                              else Counter.counter_key > cursor)
        inclusive = False
        rows = list(session.scalars(stmt.order_by(Counter.counter_key).limit(chunk)))
        for row in rows:
            if shapes is None or key_belongs_to(row.counter_key, shapes):
                out.append(row)
                if len(out) == limit:
                    break
        if len(rows) < chunk:
            break
        cursor = rows[-1].counter_key
    return out


def list_counters(session: Session, *, project: str | None, correspondence_type: str | None,
                  after_key: str | None, limit: int) -> list[dict]:
    """``correspondence_type`` keeps the counters its numbering config draws from: keys of the
    shape any version of the resolved config produces (so LETTER and MEMO, which share a
    template, share their counters, exactly as issuing does)."""
    rows = _counters(session, project, correspondence_type, None, None, after_key, limit)
    return [counter_dict(r) for r in rows]


# --------------------------------------------------------------------------- gaps

def _start_of(session: Session, key: str) -> int:
    """The first sequence the counter was meant to issue: the sequence_start of the config that
    issued its lowest sequence (1 when nothing was ever issued on it)."""
    first = session.execute(select(IssuedNumber.sequence, IssuedNumber.config_id)
                            .where(IssuedNumber.counter_key == key,
                                   IssuedNumber.sequence.is_not(None))
                            .order_by(IssuedNumber.sequence).limit(1)).first()
    if first is None:
        return 1
    from docnum.shared.models import NumberingConfig

    start = session.scalar(select(NumberingConfig.sequence_start)
                           .where(NumberingConfig.id == first.config_id)) if first.config_id \
        else None
    return min(int(first.sequence), int(start) if start is not None else 1)


def _raise_events(session: Session, key: str) -> list[dict]:
    """Audit rows that moved the counter past sequences without issuing them."""
    events = []
    for model in (AuditArchiveRow, AuditRow):
        stmt = select(model).where(model.counter_key == key, model.success.is_(True),
                                   model.operation.in_(("RESET_EXECUTE", "MANUAL_OVERRIDE",
                                                        "IMPORT")))
        for row in session.scalars(stmt):
            after, before = row.after or {}, row.before or {}
            raised = after.get("counter_raise") or {}
            low = raised.get("from", before.get("last_sequence"))
            high = raised.get("to", after.get("last_sequence"))
            if isinstance(low, int) and isinstance(high, int) and high > low:
                events.append({"from": low, "to": high, "operation": row.operation,
                               "actor": row.actor, "at": iso(row.created_at)})
    return sorted(events, key=lambda e: e["at"] or "")


def _missing_reason(sequence: int, events: list[dict]) -> str:
    for event in reversed(events):
        if event["from"] < sequence <= event["to"]:
            return (f"never issued: {event['operation']} by {event['actor']} at {event['at']} "
                    f"moved the counter from {event['from']} to {event['to']}")
    return "never issued: no ledger row holds this sequence (the counter was moved past it)"


def _gap_reason(row: Row) -> str:
    by = row.state_changed_by or "unknown"
    if row.state == "RESERVED":
        return f"reserved until {iso(row.reservation_expires_at)}, not confirmed yet"
    if row.state == "EXPIRED":
        return f"reservation expired unconfirmed ({iso(row.reservation_expires_at)})"
    if row.state == "CANCELLED":
        return f"cancelled by {by}: {row.state_reason or ''}".rstrip(": ")
    if row.state == "VOID":
        reason = f"voided by {by}: {row.state_reason or ''}".rstrip(": ")
        return reason + (f"; replaced by {row.replaced_by}" if row.replaced_by else "")
    return row.state_reason or row.state


def gaps_report(session: Session, *, project: str | None, correspondence_type: str | None,
                period: str | None, counter_key: str | None, after: tuple[str, int] | None,
                limit: int) -> list[dict]:
    """Every sequence of the matching counters that is not CONFIRMED, in (counter, sequence)
    order: ledger rows RESERVED, CANCELLED, EXPIRED or VOID with their reason, and sequences
    with no ledger row at all (state MISSING: skipped by a counter raise or reset)."""
    items: list[dict] = []
    after_key, after_seq = after if after else (None, None)
    # The cursor's own counter may have more items after after_seq: start from it, inclusive.
    start_key, inclusive = after_key, after_key is not None
    while len(items) < limit:
        counters = _counters(session, project, correspondence_type, period, counter_key,
                             start_key, 50, inclusive=inclusive)
        if not counters:
            break
        for counter in counters:
            from_seq = after_seq + 1 if counter.counter_key == after_key else None
            items.extend(_gaps_of(session, counter, from_seq, limit - len(items)))
            if len(items) >= limit:
                break
        start_key, inclusive = counters[-1].counter_key, False
    return items[:limit]


def _gaps_of(session: Session, counter: Counter, from_seq: int | None, want: int) -> list[dict]:
    key = counter.counter_key
    top = session.scalar(select(func.max(IssuedNumber.sequence))
                         .where(IssuedNumber.counter_key == key))
    end = max(int(counter.last_sequence), int(top) if top is not None else 0)
    low = _start_of(session, key)
    if from_seq is not None:
        low = max(low, from_seq)
    out: list[dict] = []
    events: list[dict] | None = None
    while low <= end and len(out) < want:
        high = min(end, low + GAP_WINDOW - 1)
        rows = {r.sequence: r for r in session.execute(
            select(IssuedNumber.sequence, IssuedNumber.document_number, IssuedNumber.state,
                   IssuedNumber.state_reason, IssuedNumber.state_changed_by,
                   IssuedNumber.reservation_expires_at, IssuedNumber.replaced_by)
            .where(IssuedNumber.counter_key == key, IssuedNumber.sequence >= low,
                   IssuedNumber.sequence <= high))}
        for sequence in range(low, high + 1):
            row = rows.get(sequence)
            if row is None:
                if events is None:
                    events = _raise_events(session, key)
                out.append({"counter_key": key, "sequence": sequence, "document_number": None,
                            "state": "MISSING", "reason": _missing_reason(sequence, events)})
            elif row.state != "CONFIRMED":
                out.append({"counter_key": key, "sequence": sequence,
                            "document_number": row.document_number, "state": row.state,
                            "reason": _gap_reason(row)})
            if len(out) >= want:
                break
        low = high + 1
    return out


__all__ = ["audit_filter", "config_shapes", "gaps_report", "key_belongs_to", "list_counters",
           "parse_counter_key", "query_audit"]
