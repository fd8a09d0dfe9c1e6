"""Administration that writes: manual override, bulk import, two-person counter reset.

The rule all three keep: a number is never issued twice. Every number they put in the ledger is
checked against the ledger (unique per project) and, when it fits the config's template, its
(counter key, sequence) is checked too and the counter is raised to at least that sequence so
that the allocator continues after it. Each operation is one transaction that first locks the
counter rows it may move, then checks, then writes ledger and audit rows: either everything is
written or nothing is.
"""
from __future__ import annotations

import csv
import io
import logging
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from docnum.shared import chain_store, issuing, templates
from docnum.shared.allocation import lock_counter
from docnum.shared.audit import Actor, write_audit
from docnum.shared.catalog import check_context_codes, code_problem
from docnum.shared.clock import Clock, iso, to_db
from docnum.shared.configs import ConfigView, get_config, resolve_config
from docnum.shared.context import FIELD_KIND, NumberingContext
from docnum.shared.db import transaction
from docnum.shared.errors import DocnumError, FieldError, validation_failed
from docnum.shared.ledger import issued_number
from docnum.shared.lifecycle import check_reason, write_transaction
from docnum.shared.models import (
    CatalogEntry,
    Counter,
    IssuedNumber,
    ResetApproval,
    ResetRequest,
)
from docnum.shared.reports import config_shapes, key_belongs_to

log = logging.getLogger(__name__)

MAX_NUMBER = templates.MAX_NUMBER_LENGTH
OVERRIDE_REASON_MIN = 10
RESET_REASON_MIN = 20
APPROVALS_NEEDED = 2
_IMPORT_NAMESPACE = uuid.UUID("1b0e5d5c-7c1e-5b6a-8f3e-6a0d2c9b4e21")


# --------------------------------------------------------------------------- numbers

def number_problem(value: object) -> DocnumError | None:
    """Why a number given by a person (override, import) cannot go in the ledger, or None.

    1-50 characters (the longest number a template may render), no spaces or control
    characters: what a rendered number could look like, so it prints and compares cleanly.
    """
    if not isinstance(value, str) or value == "":
        return validation_failed("document_number", "is required")
    if len(value) > MAX_NUMBER:
        return DocnumError("NUMBER_LENGTH",
                           f"document number is {len(value)} characters long; at most "
                           f"{MAX_NUMBER} are allowed",
                           errors=[FieldError("document_number", "too long")])
    for ch in value:
        if ch.isspace() or unicodedata.category(ch)[0] in "CZ":
            return validation_failed("document_number",
                                     f"character {ch!r} (U+{ord(ch):04X}) is not allowed")
    return None


def _period_day(config: ConfigView, parts: dict[str, Any], fallback: date | None) -> date:
    """A day inside the period the number itself shows (its year, month or fiscal year)."""
    if config.reset == "YEARLY":
        return date(parts["year"], 1, 1)
    if config.reset == "MONTHLY":
        return date(parts["year"], parts["month"], 1)
    if config.reset == "FISCAL_YEARLY":
        return date(parts["fiscal_year"], 1, 1)  # January always lies in the FY it ends
    return fallback or date(2000, 1, 1)          # NONE: one period, ALL


def fit_number(config: ConfigView, ctx: NumberingContext, number: str) -> tuple[str, int] | None:
    """(counter key, sequence) when ``number`` is what the template renders for ``ctx``;
    None when it does not fit the template at all (a legacy number: no counter to protect).

    A number that fits the template only with other codes is refused: registering it under
    these codes would leave a future issue of the other codes to collide with it.
    """
    parsed = config.parsed
    start_month = config.fiscal_year_start_month
    parts = templates.parse_number(parsed, number, start_month, ctx=ctx)
    if parts is None:
        loose = templates.parse_number(parsed, number, start_month)
        if loose is not None:
            shown = ", ".join(f"{k}={v}" for k, v in loose["codes"].items())
            raise validation_failed("document_number",
                                    f"{number} fits the template {config.template} with codes "
                                    f"{shown}, which differ from the codes given")
        return None
    day = _period_day(config, parts, ctx.document_date)
    if ctx.document_date is not None:
        given = templates.period_of(config.reset, ctx.document_date, start_month)
        shown = templates.period_of(config.reset, day, start_month)
        if given != shown:
            raise validation_failed("document_date",
                                    f"{ctx.document_date.isoformat()} is in period {given} but "
                                    f"{number} shows period {shown}")
    key = issuing.key_and_check(config, ctx, day)
    return key, int(parts["sequence"])


def _ledger_row(*, number: str, ctx: NumberingContext, config: ConfigView | None,
                fit: tuple[str, int] | None, state: str, source: str, request_id: str,
                actor: str, now_db: datetime, reason: str | None) -> dict:
    return dict(
        document_number=number, project=ctx.project,
        counter_key=fit[0] if fit else None, sequence=fit[1] if fit else None,
        state=state, source=source, config_id=config.id if config else None,
        config_version=config.version if config else None,
        template=config.template if (config and fit) else None,
        correspondence_type=ctx.correspondence_type, originator=ctx.originator,
        recipient=ctx.recipient, sub_type=ctx.sub_type, rfa_type=ctx.rfa_type,
        discipline=ctx.discipline, revision=ctx.revision, document_date=ctx.document_date,
        document_ref=ctx.document_ref, request_id=request_id, idempotency_client=None,
        idempotency_key=None, idempotency_fingerprint=None, issued_by=actor, issued_at=now_db,
        reservation_token=None, reservation_expires_at=None,
        state_reason=reason, state_changed_by=actor if reason else None,
        state_changed_at=now_db if reason else None, replaced_by=None, replaces=None)


def _holder_of(session: Session, counter_key: str, sequence: int) -> str | None:
    return session.scalar(select(IssuedNumber.document_number)
                          .where(IssuedNumber.counter_key == counter_key,
                                 IssuedNumber.sequence == sequence))


# --------------------------------------------------------------------------- manual override

@dataclass
class OverrideRequest:
    """A manual override checked for shape, codes and config (nothing written yet)."""

    ctx: NumberingContext
    number: str
    reason: str
    config: ConfigView
    fit: tuple[str, int] | None  # (counter key, sequence) when the number fits the template


def check_override(session: Session, body: dict,
                   minimum_reason: int = OVERRIDE_REASON_MIN) -> OverrideRequest:
    """The checks a manual override and the console's preview of one share."""
    ctx = issuing.parse_context(body)
    number = body.get("document_number")
    problem = number_problem(number)
    if problem:
        raise problem
    reason = check_reason(body.get("reason"), minimum=minimum_reason)
    check_context_codes(session, ctx)
    config = resolve_config(session, ctx.project, ctx.correspondence_type)
    return OverrideRequest(ctx, number, reason, config, fit_number(config, ctx, number))


def refuse_taken_number(session: Session, project: str, number: str) -> None:
    taken = session.scalar(select(IssuedNumber.state).where(
        IssuedNumber.project == project, IssuedNumber.document_number == number))
    if taken is not None:
        raise DocnumError("DUPLICATE_NUMBER", f"{number} is already in the ledger of "
                                              f"{project} ({taken})")


def refuse_held_sequence(session: Session, fit: tuple[str, int]) -> None:
    holder = _holder_of(session, *fit)
    if holder is not None:
        raise DocnumError("DUPLICATE_NUMBER", f"sequence {fit[1]} of {fit[0]} is already "
                                              f"held by {holder}")


def manual_override(engine: Engine, body: dict, actor: Actor, clock: Clock,
                    timezone: str) -> dict:
    """Register a legacy or corrected number as CONFIRMED, source MANUAL."""
    with transaction(engine) as session:
        checked = check_override(session, body)
    ctx, number, reason, config, fit = (checked.ctx, checked.number, checked.reason,
                                        checked.config, checked.fit)

    def work(session: Session) -> dict:
        now = clock.now()
        now_db = to_db(now)
        last = None
        if fit:  # lock first: the checks below then see everything committed on this counter
            last = lock_counter(session, fit[0], ctx.project, config.sequence_start,
                                config.parsed.capacity, now_db)
        refuse_taken_number(session, ctx.project, number)
        raised = None
        if fit:
            refuse_held_sequence(session, fit)
            if fit[1] > last:
                session.execute(update(Counter).where(Counter.counter_key == fit[0])
                                .values(last_sequence=fit[1], updated_at=now_db))
                raised = {"from": last, "to": fit[1]}
        row = _ledger_row(number=number, ctx=ctx, config=config, fit=fit, state="CONFIRMED",
                          source="MANUAL", request_id=str(uuid.uuid4()), actor=actor.sub,
                          now_db=now_db, reason=reason)
        chain_store.append(session, ledger=[row])
        after = {"state": "CONFIRMED", "source": "MANUAL", "reason": reason,
                 "context": ctx.to_dict(), "sequence": fit[1] if fit else None,
                 "fits_template": bool(fit), "config_version": config.version,
                 "last_sequence": max(last, fit[1]) if fit else None}
        if raised:
            after["counter_raise"] = raised
        write_audit(session, "MANUAL_OVERRIDE", actor, now, counter_key=row["counter_key"],
                    document_number=number,
                    before={"last_sequence": last} if fit else None, after=after)
        return issued_number(IssuedNumber(**row))

    return write_transaction(engine, work)


# --------------------------------------------------------------------------- bulk import

IMPORT_COLUMNS = ("document_number", "project", "correspondence_type", "originator",
                  "recipient", "sub_type", "rfa_type", "discipline", "document_date", "state")
OPTIONAL_COLUMNS = ("revision", "document_ref")
IMPORT_STATES = ("CONFIRMED", "VOID", "CANCELLED", "EXPIRED")
CODE_FIELDS = ("project", "correspondence_type", "originator", "recipient", "sub_type",
               "rfa_type", "discipline")
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
    values: dict[str, Any] = {}
    for name in CODE_FIELDS + ("revision",):
        value = get(name)
        if not value:
            continue
        problem_text = code_problem(value)
        if problem_text:
            report.error(line, "VALIDATION_FAILED", f"{name}: {problem_text}", name)
        else:
            values[name] = value
    for required in ("project", "correspondence_type"):
        if not get(required):
            report.error(line, "VALIDATION_FAILED", f"{required} is required", required)
    raw_date = get("document_date")
    if raw_date:
        try:
            if len(raw_date) != 10:
                raise ValueError
            values["document_date"] = date.fromisoformat(raw_date)
        except ValueError:
            report.error(line, "VALIDATION_FAILED",
                         f"document_date {raw_date!r} is not a date YYYY-MM-DD", "document_date")
    ref = get("document_ref")
    if ref:
        if len(ref) > 255 or not ref.isprintable():
            report.error(line, "VALIDATION_FAILED", "document_ref must be printable text of at "
                                                    "most 255 characters", "document_ref")
        else:
            values["document_ref"] = ref
    state = get("state").upper() or "CONFIRMED"
    if state not in IMPORT_STATES:
        report.error(line, "VALIDATION_FAILED",
                     f"state {get('state')!r} is not one of {', '.join(IMPORT_STATES)}", "state")
    if len(report.errors) > bad:
        return None
    return _Row(line, number, NumberingContext(**values), state)


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
            report.error(row.line, "DUPLICATE_NUMBER", f"{row.number} is also on row "
                                                       f"{by_number[key]}", "document_number")
            continue
        if row.fit and row.fit in by_sequence:
            report.error(row.line, "DUPLICATE_NUMBER",
                         f"sequence {row.fit[1]} of {row.fit[0]} is also on row "
                         f"{by_sequence[row.fit]}", "document_number")
            continue
        by_number[key] = row.line
        if row.fit:
            by_sequence[row.fit] = row.line
        out.append(row)
    return out


def _same_content(existing, row: _Row) -> bool:  # a ledger Row
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
                report.error(row.line, "DUPLICATE_NUMBER",
                             f"{row.number} is already in the ledger of {row.ctx.project} "
                             f"(source {found.source}, state {found.state})", "document_number")
            continue
        if row.fit and row.fit in held:
            report.error(row.line, "DUPLICATE_NUMBER",
                         f"sequence {row.fit[1]} of {row.fit[0]} is already held by "
                         f"{held[row.fit]}", "document_number")
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

    result = write_transaction(engine, work)
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
        ledger.append(_ledger_row(number=row.number, ctx=row.ctx, config=row.config,
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
    chain_store.append(session, ledger=ledger, audit=audit)
    for raised in raises:
        session.execute(update(Counter).where(Counter.counter_key == raised["counter_key"])
                        .values(last_sequence=raised["to"], updated_at=now_db))


def _log_import(report: ImportReport, filename: str, started: float) -> None:
    log.info("bulk import %s%s: %d rows, %d imported, %d already imported, %d errors in %.2fs",
             filename, " (dry run)" if report.dry_run else "", report.rows, report.imported,
             report.already_imported, len(report.errors), time.perf_counter() - started)


# --------------------------------------------------------------------------- counter reset

def _reset_dict(row: ResetRequest, approvals: list[ResetApproval]) -> dict:
    return {"reset_request_id": row.id, "status": row.status, "config_id": row.config_id,
            "counter_key": row.counter_key, "new_last_sequence": int(row.new_last_sequence),
            "reason": row.reason, "requested_by": row.requested_by,
            "requested_at": iso(row.requested_at), "executed_at": iso(row.executed_at),
            "approvals": [{"approver": a.approver, "approved_at": iso(a.approved_at)}
                          for a in sorted(approvals, key=lambda a: a.id)]}


def counter_floor(session: Session, counter_key: str, *, locking: bool = False) -> int:
    """The highest sequence ever issued on the key, whatever its state (0 when none): the
    lowest ``last_sequence`` a reset may set, since every sequence at or below it is taken."""
    stmt = (select(IssuedNumber.sequence).where(IssuedNumber.counter_key == counter_key)
            .order_by(IssuedNumber.sequence.desc()).limit(1))
    if locking:  # read the newest committed row, not this transaction's snapshot
        stmt = stmt.with_for_update(read=True)
    top = session.scalar(stmt)
    return int(top) if top is not None else 0


def _floor_error(counter_key: str, new_last: int, floor: int) -> DocnumError:
    return DocnumError("COUNTER_FLOOR",
                       f"new_last_sequence {new_last} is below {floor}, the highest sequence "
                       f"already issued on {counter_key}; numbers are never reused",
                       extra={"floor": floor})


def request_reset(engine: Engine, config_id: int, body: dict, actor: Actor,
                  clock: Clock) -> dict:
    key = body.get("counter_key")
    if not isinstance(key, str) or not key:
        raise validation_failed("counter_key", "is required")
    new_last = body.get("new_last_sequence")
    if isinstance(new_last, bool) or not isinstance(new_last, int) or new_last < 0:
        raise validation_failed("new_last_sequence", "must be a whole number >= 0")
    reason = check_reason(body.get("reason"), minimum=RESET_REASON_MIN)

    def work(session: Session) -> dict:
        config = get_config(session, config_id)
        if not key_belongs_to(key, config_shapes(session, config)):
            raise validation_failed("counter_key", f"{key} is not a counter of config "
                                                   f"{config_id} ({config.template})")
        counter = session.scalar(select(Counter).where(Counter.counter_key == key))
        if counter is None:
            raise validation_failed("counter_key", f"no counter {key} has been used yet")
        if new_last > counter.capacity:
            raise validation_failed("new_last_sequence",
                                    f"exceeds the counter's capacity {counter.capacity}")
        floor = counter_floor(session, key)
        if new_last < floor:
            raise _floor_error(key, new_last, floor)
        pending = session.scalar(select(ResetRequest.id).where(
            ResetRequest.counter_key == key, ResetRequest.status == "PENDING_APPROVAL"))
        if pending is not None:
            raise DocnumError("CONFLICT", f"reset request {pending} for {key} is still waiting "
                                          "for approval")
        now = clock.now()
        row = ResetRequest(config_id=config_id, counter_key=key, new_last_sequence=new_last,
                           reason=reason, status="PENDING_APPROVAL", requested_by=actor.sub,
                           requested_at=to_db(now))
        session.add(row)
        session.flush()
        write_audit(session, "RESET_REQUEST", actor, now, counter_key=key,
                    before={"last_sequence": int(counter.last_sequence), "floor": floor},
                    after={"reset_request_id": row.id, "new_last_sequence": new_last,
                           "reason": reason, "status": row.status})
        return _reset_dict(row, [])

    return write_transaction(engine, work)


def approve_reset(engine: Engine, reset_id: int, actor: Actor,
                  clock: Clock) -> tuple[dict, DocnumError | None]:
    """Record an approval; the second distinct approver (never the requester) executes it.

    Execution re-checks the floor under the counter's row lock. When the floor has risen past
    the target meanwhile, the request ends FAILED (committed, audited) and the error is
    returned for the caller to raise: 409 COUNTER_FLOOR.
    """
    def work(session: Session) -> tuple[dict, DocnumError | None]:
        row = session.scalar(select(ResetRequest).where(ResetRequest.id == reset_id)
                             .with_for_update())
        if row is None:
            raise DocnumError("NOT_FOUND", f"no reset request {reset_id}")
        if row.status != "PENDING_APPROVAL":
            raise DocnumError("INVALID_STATE", f"reset request {reset_id} is {row.status}")
        if row.requested_by == actor.sub:
            raise DocnumError("SELF_APPROVAL", "the requester cannot approve their own reset; "
                                               "two other SUPER_ADMINs must")
        approvals = list(session.scalars(select(ResetApproval).where(
            ResetApproval.reset_request_id == reset_id)))
        if any(a.approver == actor.sub for a in approvals):
            raise DocnumError("ALREADY_APPROVED", f"{actor.sub} already approved reset request "
                                                  f"{reset_id}; another SUPER_ADMIN must")
        now = clock.now()
        approval = ResetApproval(reset_request_id=reset_id, approver=actor.sub,
                                 approved_at=to_db(now))
        session.add(approval)
        session.flush()
        approvals.append(approval)
        write_audit(session, "RESET_APPROVE", actor, now, counter_key=row.counter_key,
                    before={"status": row.status, "approvals": len(approvals) - 1},
                    after={"reset_request_id": reset_id, "approvals": len(approvals)})
        error = None
        if len(approvals) >= APPROVALS_NEEDED:
            error = _execute(session, row, approvals, actor, now)
        return _reset_dict(row, approvals), error

    return write_transaction(engine, work)


def _execute(session: Session, row: ResetRequest, approvals: list[ResetApproval], actor: Actor,
             now: datetime) -> DocnumError | None:
    key = row.counter_key
    last = session.scalar(select(Counter.last_sequence).where(Counter.counter_key == key)
                          .with_for_update())
    floor = counter_floor(session, key, locking=True)
    new_last = int(row.new_last_sequence)
    approvers = [a.approver for a in approvals]
    error = None
    if last is None:
        error = DocnumError("NOT_FOUND", f"counter {key} no longer exists")
    elif new_last < floor:
        error = _floor_error(key, new_last, floor)
    row.executed_at = to_db(now)
    if error is not None:
        row.status = "FAILED"
        write_audit(session, "RESET_EXECUTE", actor, now, counter_key=key,
                    before={"last_sequence": last, "floor": floor},
                    after={"reset_request_id": row.id, "status": "FAILED",
                           "new_last_sequence": new_last, "approvers": approvers},
                    success=False, error_code=error.code)
        return error
    session.execute(update(Counter).where(Counter.counter_key == key)
                    .values(last_sequence=new_last, updated_at=to_db(now)))
    row.status = "EXECUTED"
    write_audit(session, "RESET_EXECUTE", actor, now, counter_key=key,
                before={"last_sequence": int(last), "floor": floor},
                after={"last_sequence": new_last, "reset_request_id": row.id,
                       "status": "EXECUTED", "requested_by": row.requested_by,
                       "approvers": approvers, "reason": row.reason})
    return None


RESET_STATUSES = ("PENDING_APPROVAL", "EXECUTED", "FAILED")


def list_resets(session: Session, status: str | None, after_id: int | None,
                limit: int) -> list[dict]:
    if status is not None and status not in RESET_STATUSES:
        raise validation_failed("status", f"must be one of {', '.join(RESET_STATUSES)}")
    stmt = select(ResetRequest)
    if status is not None:
        stmt = stmt.where(ResetRequest.status == status)
    if after_id is not None:
        stmt = stmt.where(ResetRequest.id > after_id)
    rows = list(session.scalars(stmt.order_by(ResetRequest.id).limit(limit)))
    approvals: dict[int, list[ResetApproval]] = {}
    if rows:
        for a in session.scalars(select(ResetApproval).where(
                ResetApproval.reset_request_id.in_([r.id for r in rows]))):
            approvals.setdefault(a.reset_request_id, []).append(a)
    return [_reset_dict(r, approvals.get(r.id, [])) for r in rows]


def get_reset(session: Session, reset_id: int) -> dict:
    row = session.get(ResetRequest, reset_id)
    if row is None:
        raise DocnumError("NOT_FOUND", f"no reset request {reset_id}")
    approvals = list(session.scalars(select(ResetApproval).where(
        ResetApproval.reset_request_id == reset_id)))
    return _reset_dict(row, approvals)


__all__ = ["ImportReport", "approve_reset", "bulk_import", "counter_floor", "fit_number",
           "get_reset", "list_resets", "manual_override", "number_problem", "read_table",
           "request_reset"]
