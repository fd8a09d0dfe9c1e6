"""Bulk import (docs/reference.md#post-adminbulk-import): a CSV or XLSX register of numbers
issued before docnum, written to the ledger as source IMPORT.

Every row is validated first (columns, codes, config, template fit, duplicates inside the file
and against the ledger); a dry run reports that and writes nothing. A real run writes every row
in one transaction or, when any row is bad, none. That transaction first locks (in key order)
every counter the rows fit, checks the ledger again under those locks, raises each counter to
the highest sequence imported on it, and writes one audit row per number. Rows already imported
with identical content are skipped, so a file can be imported again safely.
"""
from __future__ import annotations

import csv
import io
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine, Row
from sqlalchemy.orm import Session

from docnum.shared import chain_store
from docnum.shared.allocation import lock_counter
from docnum.shared.audit import Actor
from docnum.shared.clock import Clock, to_db
from docnum.shared.configs import ConfigView, resolve_config
from docnum.shared.context import FIELD_KIND, NumberingContext
from docnum.shared.db import run_in_transaction, transaction
from docnum.shared.errors import DocnumError, FieldError, validation_failed
from docnum.shared.ledger_entry import fit_number, ledger_row
from docnum.shared.models import CatalogEntry, Counter, IssuedNumber
from docnum.shared.schemas import NumberingContextBody, number_problem, parse

log = logging.getLogger(__name__)

# An imported number's request id derives from (project, number): the same row of a register
# always carries the same id, whichever run imported it.
_IMPORT_NAMESPACE = uuid.UUID("1b0e5d5c-7c1e-5b6a-8f3e-6a0d2c9b4e21")

IMPORT_COLUMNS = ("document_number", "project", "correspondence_type", "originator",
                  "recipient", "sub_type", "rfa_type", "discipline", "document_date", "state")
OPTIONAL_COLUMNS = ("revision", "document_ref")
IMPORT_STATES = ("CONFIRMED", "VOID", "CANCELLED", "EXPIRED")
CODE_FIELDS = ("project", "correspondence_type", "originator", "recipient", "sub_type",
               "rfa_type", "discipline")
CONTEXT_COLUMNS = (*CODE_FIELDS, "revision", "document_date", "document_ref")
MAX_IMPORT_ROWS = 200_000
_CHUNK = 1000


@dataclass
class _Row:
    line: int
    number: str
    ctx: NumberingContext
    state: str
    config: ConfigView | None = None
    fit: tuple[str, int] | None = None
    skip: bool = False            # already imported with identical content


@dataclass
class ImportReport:
    rows: int = 0
    imported: int = 0
    already_imported: int = 0
    errors: list[dict] = field(default_factory=list)
    counter_raises: list[dict] = field(default_factory=list)
    dry_run: bool = True

    def error(self, line: int, code: str, message: str, field_name: str | None = None) -> None:
        entry = {"row": line, "code": code, "message": message}
        if field_name:
            entry["field"] = field_name
        self.errors.append(entry)

    def duplicate(self, line: int, detail: str) -> None:
        """The row's number, or its counter sequence, is taken (in the file or the ledger)."""
        self.error(line, "DUPLICATE_NUMBER", detail, "document_number")

    def to_dict(self) -> dict:
        return {"rows": self.rows, "imported": self.imported,
                "already_imported": self.already_imported, "dry_run": self.dry_run,
                "errors": sorted(self.errors, key=lambda e: e["row"]),
                "counter_raises": self.counter_raises}


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def read_table(filename: str, content: bytes) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(spreadsheet row number, cells)]) from CSV (UTF-8) or XLSX (first sheet).

    Row numbers are what a spreadsheet shows: the header is row 1, the first data row 2.
    Entirely blank rows are skipped.
    """
    is_xlsx = content[:4] == b"PK\x03\x04" or filename.lower().endswith(".xlsx")
    if is_xlsx:
        rows = _xlsx_rows(content)
    else:
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise validation_failed("file", "a CSV file must be UTF-8 encoded") from None
        rows = [[c.strip() for c in r] for r in csv.reader(io.StringIO(text))]
    if not rows:
        raise validation_failed("file", "the file is empty; the first row must name the columns")
    header = [h.strip().lower() for h in rows[0]]
    body = [(i + 1, r) for i, r in enumerate(rows) if i > 0 and any(c for c in r)]
    return header, body


def _xlsx_rows(content: bytes) -> list[list[str]]:
    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a bad file
        raise validation_failed("file", f"not a readable XLSX workbook ({type(exc).__name__})") \
            from None
    try:
        sheet = book.worksheets[0]
        return [[_cell(v) for v in row] for row in sheet.iter_rows(values_only=True)]
    finally:
        book.close()


def _check_header(header: list[str]) -> dict[str, int]:
    missing = [c for c in IMPORT_COLUMNS if c not in header]
    unknown = [c for c in header if c and c not in IMPORT_COLUMNS + OPTIONAL_COLUMNS]
    duplicated = sorted({c for c in header if c and header.count(c) > 1})
    problems = [FieldError("file", f"missing column {c}") for c in missing]
    problems += [FieldError("file", f"unknown column {c}") for c in unknown]
    problems += [FieldError("file", f"column {c} appears twice") for c in duplicated]
    if problems:
        raise DocnumError("VALIDATION_FAILED",
                          "; ".join(p.message for p in problems) + f"; the columns are "
                          f"{', '.join(IMPORT_COLUMNS)} (optional: {', '.join(OPTIONAL_COLUMNS)})",
                          errors=problems)
    return {name: header.index(name) for name in IMPORT_COLUMNS + OPTIONAL_COLUMNS
            if name in header}


def _parse_row(line: int, cells: list[str], columns: dict[str, int],
               report: ImportReport) -> _Row | None:
    def get(name: str) -> str:
        index = columns.get(name)
        return cells[index].strip() if index is not None and index < len(cells) else ""

    bad = len(report.errors)
    number = get("document_number")
    problem = number_problem(number)
    if problem:
        report.error(line, problem.code, problem.detail, "document_number")
    try:  # the rules of a request's context (schemas.NumberingContextBody), cell by cell
        ctx = parse(NumberingContextBody,
                    {name: get(name) or None for name in CONTEXT_COLUMNS}).to_context()
    except DocnumError as exc:
        for error in exc.errors or [FieldError("", exc.detail)]:
            report.error(line, exc.code, f"{error.field}: {error.message}", error.field or None)
    state = get("state").upper() or "CONFIRMED"
    if state not in IMPORT_STATES:
        report.error(line, "VALIDATION_FAILED",
                     f"state {get('state')!r} is not one of {', '.join(IMPORT_STATES)}", "state")
    if len(report.errors) > bad:
        return None
    return _Row(line, number, ctx, state)


def _check_codes(rows: list[_Row], catalog: dict[tuple[str, str], bool],
                 report: ImportReport) -> list[_Row]:
    """Unknown codes are errors; inactive ones are accepted (history names retired codes)."""
    out = []
    for row in rows:
        unknown = [(f, getattr(row.ctx, f)) for f in FIELD_KIND
                   if getattr(row.ctx, f) and (FIELD_KIND[f], getattr(row.ctx, f)) not in catalog]
        for name, code in unknown:
            report.error(row.line, "UNKNOWN_CODE", f"{name}: unknown {FIELD_KIND[name]} code "
                                                   f"{code!r}", name)
        if not unknown:
            out.append(row)
    return out


def _resolve(session: Session, rows: list[_Row], report: ImportReport) -> list[_Row]:
    configs: dict[tuple[str, str | None], ConfigView | DocnumError] = {}
    out = []
    for row in rows:
        owner = (row.ctx.project, row.ctx.correspondence_type)
        if owner not in configs:
            try:
                configs[owner] = resolve_config(session, *owner)
            except DocnumError as exc:
                configs[owner] = exc
        config = configs[owner]
        if isinstance(config, DocnumError):
            report.error(row.line, config.code, config.detail, "correspondence_type")
            continue
        row.config = config
        try:
            row.fit = fit_number(config, row.ctx, row.number)
        except DocnumError as exc:
            field_name = exc.errors[0].field if exc.errors else None
            report.error(row.line, exc.code, exc.detail, field_name)
            continue
        out.append(row)
    return out


def _in_file_duplicates(rows: list[_Row], report: ImportReport) -> list[_Row]:
    by_number: dict[tuple[str, str], int] = {}
    by_sequence: dict[tuple[str, int], int] = {}
    out = []
    for row in rows:
        key = (row.ctx.project, row.number)
        if key in by_number:
            report.duplicate(row.line, f"{row.number} is also on row {by_number[key]}")
            continue
        if row.fit and row.fit in by_sequence:
            report.duplicate(row.line, f"sequence {row.fit[1]} of {row.fit[0]} is also on row "
                                       f"{by_sequence[row.fit]}")
            continue
        by_number[key] = row.line
        if row.fit:
            by_sequence[row.fit] = row.line
        out.append(row)
    return out


def _same_content(existing: Row[Any], row: _Row) -> bool:
    ctx = row.ctx
    state_ok = existing.state == row.state or (existing.state == "VOID"
                                                and row.state == "CONFIRMED")
    return (existing.source == "IMPORT" and state_ok
            and all(getattr(existing, f) == getattr(ctx, f) for f in CODE_FIELDS + ("revision",))
            and existing.document_date == ctx.document_date)


def _check_ledger(session: Session, rows: list[_Row], report: ImportReport) -> list[_Row]:
    """Numbers and (counter, sequence) pairs already in the ledger. A row imported before with
    the same content is skipped (re-import), anything else there is DUPLICATE_NUMBER."""
    columns = [IssuedNumber.project, IssuedNumber.document_number, IssuedNumber.state,
               IssuedNumber.source, IssuedNumber.document_date, IssuedNumber.counter_key,
               IssuedNumber.sequence] + [getattr(IssuedNumber, f) for f in CODE_FIELDS
                                         if f != "project"] + [IssuedNumber.revision]
    existing: dict[tuple[str, str], Any] = {}
    projects: dict[str, list[str]] = {}
    for row in rows:
        projects.setdefault(row.ctx.project, []).append(row.number)
    for project, numbers in projects.items():
        for i in range(0, len(numbers), _CHUNK):
            for found in session.execute(select(*columns).where(
                    IssuedNumber.project == project,
                    IssuedNumber.document_number.in_(numbers[i:i + _CHUNK]))):
                existing[(found.project, found.document_number)] = found
    held: dict[tuple[str, int], str] = {}
    by_key: dict[str, list[int]] = {}
    for row in rows:
        if row.fit:
            by_key.setdefault(row.fit[0], []).append(row.fit[1])
    for key, sequences in by_key.items():
        for i in range(0, len(sequences), _CHUNK):
            for found in session.execute(select(IssuedNumber.sequence,
                                                IssuedNumber.document_number)
                                         .where(IssuedNumber.counter_key == key,
                                                IssuedNumber.sequence.in_(
                                                    sequences[i:i + _CHUNK]))):
                held[(key, int(found.sequence))] = found.document_number
    out = []
    for row in rows:
        found = existing.get((row.ctx.project, row.number))
        if found is not None:
            if _same_content(found, row):
                row.skip = True
                report.already_imported += 1
                out.append(row)
            else:
                report.duplicate(row.line, f"{row.number} is already in the ledger of "
                                           f"{row.ctx.project} (source {found.source}, "
                                           f"state {found.state})")
            continue
        if row.fit and row.fit in held:
            report.duplicate(row.line, f"sequence {row.fit[1]} of {row.fit[0]} is already "
                                       f"held by {held[row.fit]}")
            continue
        out.append(row)
    return out


def _counter_state(session: Session, rows: list[_Row], *, lock: bool,
                   now_db: datetime) -> dict[str, int]:
    """The last sequence of every counter the rows fit; with ``lock`` the counter rows are
    locked (created on first use), in key order so that two imports cannot deadlock."""
    first: dict[str, _Row] = {}
    for row in rows:
        if row.fit:
            first.setdefault(row.fit[0], row)
    last_of: dict[str, int] = {}
    for key in sorted(first):
        config = first[key].config
        assert config is not None
        if lock:
            last = lock_counter(session, key, first[key].ctx.project, config.sequence_start,
                                config.parsed.capacity, now_db)
        else:
            last = session.scalar(select(Counter.last_sequence).where(Counter.counter_key == key))
            last = config.sequence_start - 1 if last is None else last
        last_of[key] = int(last)
    return last_of


def _counter_raises(rows: list[_Row], last_of: dict[str, int]) -> list[dict]:
    """Counters the new rows push up: from their last sequence to the highest one imported."""
    top: dict[str, int] = {}
    for row in rows:
        if row.fit and not row.skip:
            top[row.fit[0]] = max(top.get(row.fit[0], row.fit[1]), row.fit[1])
    return [{"counter_key": key, "from": last_of[key], "to": top[key]}
            for key in sorted(top) if top[key] > last_of[key]]


def _validate(session: Session, table: tuple[list[str], list[tuple[int, list[str]]]],
              report: ImportReport) -> list[_Row]:
    header, body = table
    columns = _check_header(header)
    if len(body) > MAX_IMPORT_ROWS:
        raise validation_failed("file", f"at most {MAX_IMPORT_ROWS} rows per file")
    report.rows = len(body)
    rows = [r for line, cells in body if (r := _parse_row(line, cells, columns, report))]
    catalog = {(k, c): bool(a) for k, c, a in session.execute(
        select(CatalogEntry.kind, CatalogEntry.code, CatalogEntry.active))}
    rows = _check_codes(rows, catalog, report)
    rows = _resolve(session, rows, report)
    return _in_file_duplicates(rows, report)


def bulk_import(engine: Engine, filename: str, content: bytes, actor: Actor, clock: Clock, *,
                dry_run: bool) -> ImportReport:
    """Validate every row; write them all in one transaction, or (errors, dry run) write none.

    A real run with any bad row raises 422 VALIDATION_FAILED whose problem document carries
    the same report (``extra``), and imports nothing. Rows already imported with identical
    content are skipped and counted as ``already_imported``, so a file can be imported again
    safely.
    """
    started = time.perf_counter()
    table = read_table(filename, content)
    report = ImportReport(dry_run=dry_run)
    with transaction(engine) as session:
        rows = _validate(session, table, report)
    if dry_run:
        with transaction(engine) as session:
            rows = _check_ledger(session, rows, report)
            last_of = _counter_state(session, rows, lock=False, now_db=to_db(clock.now()))
        report.counter_raises = _counter_raises(rows, last_of)
        # What a real run would import: all-or-nothing, so nothing while any row is bad.
        report.imported = 0 if report.errors else len([r for r in rows if not r.skip])
        _log_import(report, filename, started)
        return report
    if report.errors:
        raise _rejected(report)

    def work(session: Session) -> ImportReport:
        attempt = ImportReport(rows=report.rows, dry_run=False)
        now = clock.now()
        now_db = to_db(now)
        # Lock (and create) every counter the file touches before reading the ledger, so the
        # checks below see every number committed on those counters.
        last_of = _counter_state(session, rows, lock=True, now_db=now_db)
        checked = _check_ledger(session, [_unskipped(r) for r in rows], attempt)
        if attempt.errors:
            raise _rejected(attempt)
        attempt.counter_raises = _counter_raises(checked, last_of)
        new_rows = [r for r in checked if not r.skip]
        _write_import(session, new_rows, attempt.counter_raises, last_of, actor, now,
                      filename)
        attempt.imported = len(new_rows)
        return attempt

    result = run_in_transaction(engine, work)
    _log_import(result, filename, started)
    return result


def _unskipped(row: _Row) -> _Row:
    row.skip = False  # a retried transaction judges every row afresh
    return row


def _rejected(report: ImportReport) -> DocnumError:
    data = report.to_dict()
    data["imported"] = 0
    bad_rows = len({e["row"] for e in report.errors})
    return DocnumError("VALIDATION_FAILED",
                       f"{bad_rows} of {report.rows} rows have errors; nothing was imported",
                       extra=data)


def _write_import(session: Session, rows: list[_Row], raises: list[dict],
                  last_of: dict[str, int], actor: Actor, now: datetime, filename: str) -> None:
    now_db = to_db(now)
    raise_of = {r["counter_key"]: r for r in raises}
    ledger, audit = [], []
    for row in rows:
        request_id = str(uuid.uuid5(_IMPORT_NAMESPACE, f"{row.ctx.project}\x00{row.number}"))
        ledger.append(ledger_row(number=row.number, ctx=row.ctx, config=row.config,
                                 fit=row.fit, state=row.state, source="IMPORT",
                                 request_id=request_id, actor=actor.sub, now_db=now_db,
                                 reason=f"imported from {filename} row {row.line}"
                                 if row.state != "CONFIRMED" else None))
        after = {"state": row.state, "source": "IMPORT", "file": filename, "row": row.line,
                 "sequence": row.fit[1] if row.fit else None, "context": row.ctx.to_dict()}
        raised = raise_of.get(row.fit[0]) if row.fit else None
        if raised and raised["to"] == row.fit[1]:
            after["counter_raise"] = {"from": raised["from"], "to": raised["to"]}
        audit.append(dict(operation="IMPORT", actor=actor.sub, client_ip=actor.client_ip,
                          user_agent=(actor.user_agent or "")[:255] or None,
                          request_id=actor.request_id,
                          counter_key=row.fit[0] if row.fit else None,
                          document_number=row.number,
                          before={"last_sequence": last_of[row.fit[0]]} if row.fit else None,
                          after=after, lock_wait_ms=None, duration_ms=None,
                          retry_count=0, fallback_used="NONE", success=True, error_code=None,
                          created_at=now_db))
    # Onto the counters' hash chains (locked above), in chunks (shared/chain_store.py).
    chain_store.append(session, ledger=ledger, audit=audit)
    for raised in raises:
        session.execute(update(Counter).where(Counter.counter_key == raised["counter_key"])
                        .values(last_sequence=raised["to"], updated_at=now_db))


def _log_import(report: ImportReport, filename: str, started: float) -> None:
    log.info("bulk import %s%s: %d rows, %d imported, %d already imported, %d errors in %.2fs",
             filename, " (dry run)" if report.dry_run else "", report.rows, report.imported,
             report.already_imported, len(report.errors), time.perf_counter() - started)


__all__ = ["IMPORT_COLUMNS", "OPTIONAL_COLUMNS", "ImportReport", "bulk_import", "read_table"]
