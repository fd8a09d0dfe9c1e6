"""How a number is allocated: the one function the shard workers and the DB-only path both call.

``serve_requests`` takes a batch of requests (any counter keys) and serves it in ONE
transaction (``allocate_many``), waiting out a short database outage:

1. lock the counter rows in key order (``SELECT … FOR UPDATE``; created by upsert on first
   use, so the first-use race cannot fail),
2. find requests already served (a redelivered message or a retried Idempotency-Key) and
   answer them with the number they already have,
3. give every other request the next sequence, refusing those over the ``{SEQ:n}`` capacity,
   too long, or colliding with a number another template of the project already rendered —
   a refused request consumes nothing,
4. insert the ledger rows and one audit row per request, advance the counter, commit.

Correctness lives here, in the database: the row lock serialises a counter even if two
consumers ever serve one queue, and the unique keys (number per project, counter+sequence,
request id) make a duplicate impossible rather than unlikely.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from docnum.shared import chain, chain_store, metrics, sqlbatch, templates
from docnum.shared.clock import Clock, SystemClock, iso, to_db
from docnum.shared.db import (
    allocation_engine,
    is_retryable,
    is_unreachable,
    service_busy,
    takes_multi_statements,
    transaction,
)
from docnum.shared.errors import DocnumError
from docnum.shared.issuing import AllocationRequest
from docnum.shared.models import AuditRow, Counter, IssuedNumber
from docnum.shared.settings import Settings

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5

# The hot path's statements, built once. A shard worker runs them for every batch; building
# them per call (and the ORM layer around them) cost more CPU than the round trips themselves.
# Executed on the session's connection as Core statements, they hit SQLAlchemy's compiled
# cache directly; expanding ``IN`` parameters take a list.
_counters = Counter.__table__
_ledger = IssuedNumber.__table__
_audit = AuditRow.__table__
# The chain heads travel with the counter row: the batch stamps its rows from them and the
# counter upsert writes them back (shared/chain.py), no extra statement.
_LOCK_COUNTERS = (select(_counters.c.counter_key, _counters.c.last_sequence,
                         _counters.c.ledger_length, _counters.c.ledger_head,
                         _counters.c.audit_length, _counters.c.audit_head)
                  .where(_counters.c.counter_key.in_(bindparam("keys", expanding=True)))
                  .order_by(_counters.c.counter_key).with_for_update())
_SERVED = select(_ledger).where(_ledger.c.request_id.in_(bindparam("ids", expanding=True)))
_TAKEN = select(_ledger.c.document_number).where(
    _ledger.c.project == bindparam("project"),
    _ledger.c.document_number.in_(bindparam("numbers", expanding=True)))
_ADVANCE_COUNTER = (update(_counters).where(_counters.c.counter_key == bindparam("key"))
                    .values(last_sequence=bindparam("new_last"),
                            capacity=bindparam("new_capacity"),
                            updated_at=bindparam("now"),
                            ledger_length=bindparam("new_ledger_length"),
                            ledger_head=bindparam("new_ledger_head"),
                            audit_length=bindparam("new_audit_length"),
                            audit_head=bindparam("new_audit_head")))


@dataclass
class Outcome:
    """What became of one request: a number, or an error with a stable code."""

    request_id: str
    number: dict | None = None
    error: DocnumError | None = None
    replayed: bool = False          # the number was issued by an earlier delivery of this request
    lock_wait_ms: int = 0
    retry_count: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_result(self) -> dict:
        if self.error is None:
            return {"ok": True, "number": self.number}
        return {"ok": False, "error": self.error.to_dict()}


@dataclass
class _Plan:
    request: AllocationRequest
    sequence: int | None = None
    number: str | None = None
    error: DocnumError | None = None
    existing: object | None = None  # the ledger row (a Core row) that already answers it
    duplicate_of: _Plan | None = None
    extra: dict = field(default_factory=dict)


def allocate_many(engine: Engine, groups: dict[str, list[AllocationRequest]], *, clock: Clock,
                  reservation_ttl: int = 300,
                  fallback_used: str = "NONE") -> dict[str, list[Outcome]]:
    """Allocate numbers for requests on several counter keys in ONE transaction.

    Returns, per key, one Outcome per request, in order. Raises ``DocnumError(SERVICE_BUSY)``
    only when the database cannot be reached (nothing was written); every other failure is per
    request.

    A shard worker's batch usually spans several keys: one commit for all of them is the group
    commit, and the statements are per batch, not per key (one lock, one insert each for ledger
    and audit, one counter update). Counter rows are locked in key order, so two transactions
    can never wait on each other in a cycle. A conflict or deadlock retries the whole batch.

    On an engine that takes multi-statement queries (``allocation_engine``) the first attempt
    costs two round trips: the lock, then every write and the COMMIT in one query. Under
    database latency the round trips, not the CPU, bound how many batches a worker serves.
    """
    groups = {key: reqs for key, reqs in groups.items() if reqs}
    if not groups:
        return {}
    labels = metrics.counter_labels(groups)
    started = time.perf_counter()
    attempt = 0
    optimistic = True
    two_round_trips = takes_multi_statements(engine)
    while True:
        metrics.count_lock_attempts(labels)
        options = dict(clock=clock, reservation_ttl=reservation_ttl,
                       fallback_used=fallback_used, retry_count=attempt, started=started)
        try:
            if optimistic and two_round_trips:
                served = _allocate_in_two_round_trips(engine, groups, **options)
            else:
                with transaction(engine) as session:
                    served = allocate_in_session(session, groups, optimistic=optimistic,
                                                 **options)
            metrics.observe_batch_retries(labels, attempt)
            return served
        except IntegrityError as exc:
            if optimistic:
                # A request served before (a redelivery) or a number another template already
                # rendered: serve the batch again at once, with the look-ups that sort it out.
                optimistic = False
                continue
            # Another counter key of the project committed the same text between our check
            # and our insert (or a second consumer served the same request): look again.
            reason = "conflict"
            error: Exception = exc
        except DBAPIError as exc:
            if is_unreachable(exc):
                metrics.count_lock_failures(labels, "db_unavailable")
                raise service_busy() from exc
            if not is_retryable(exc):
                raise
            reason = "deadlock" if "1213" in str(exc.orig) else "timeout"
            error = exc
        metrics.count_lock_failures(labels, reason)
        attempt += 1
        if attempt >= MAX_ATTEMPTS:
            metrics.observe_batch_retries(labels, attempt - 1)
            log.error("allocation on %s failed after %d attempts: %s", sorted(groups), attempt,
                      error)
            raise DocnumError("SERVICE_BUSY", "the counter is too contended; try again shortly",
                              retry_after=2) from error
        time.sleep(min(0.05 * 2 ** attempt, 1.0))


def _allocate_in_two_round_trips(engine: Engine, groups: dict[str, list[AllocationRequest]], *,
                                 clock: Clock, reservation_ttl: int, fallback_used: str,
                                 retry_count: int, started: float) -> dict[str, list[Outcome]]:
    """``allocate_in_session(optimistic=True)`` in two round trips on MariaDB: lock the
    counters, then every write and the COMMIT in one multi-statement query (shared/sqlbatch.py).
    A counter used for the first time costs two more (create it, lock it)."""
    now = clock.now()
    new_rows = _counter_rows(groups, to_db(now))
    columns = [column.name for column in _LOCK_COUNTERS.selected_columns]
    with sqlbatch.raw_transaction(engine) as cursor:
        lock_started = time.perf_counter()
        keys = sorted(new_rows)
        locked = {row[0]: dict(zip(columns, row, strict=True)) for row in
                  cursor.rows(*sqlbatch.lock_sql(_counters, columns, "counter_key", keys))}
        missing = [key for key in keys if key not in locked]
        if missing:
            rows = [new_rows[key] for key in missing]
            cursor.execute(*sqlbatch.upsert_sql(_counters, rows, ["counter_key"]))
            locked.update({row[0]: dict(zip(columns, row, strict=True)) for row in
                           cursor.rows(*sqlbatch.lock_sql(_counters, columns, "counter_key",
                                                          missing))})
        lock_wait_ms = _observe_lock_wait(groups, lock_started)
        batch = _plan(groups, locked, {}, None, now=now, reservation_ttl=reservation_ttl,
                      fallback_used=fallback_used, retry_count=retry_count,
                      lock_wait_ms=lock_wait_ms, started=started)
        statements = []
        if batch.ledger_rows:
            statements.append(sqlbatch.insert_sql(_ledger, batch.ledger_rows))
        if batch.audit_rows:
            statements.append(sqlbatch.insert_sql(_audit, batch.audit_rows))
        statements.append(sqlbatch.upsert_sql(_counters, batch.counters,
                                              _counter_update_columns(batch.counters)))
        cursor.execute_and_commit(statements)
    return batch.outcomes


def _is_mysql(session: Session) -> bool:
    return session.get_bind().dialect.name in ("mysql", "mariadb")


def _create_counters(session: Session, rows: list[dict]) -> None:
    """Create counter rows on first use; a row another transaction created meanwhile stays."""
    if _is_mysql(session):
        stmt = mysql.insert(Counter)
        stmt = stmt.on_duplicate_key_update(counter_key=stmt.inserted.counter_key)
    else:
        stmt = sqlite.insert(Counter).on_conflict_do_nothing()
    session.connection().execute(stmt, rows)


def lock_counter(session: Session, counter_key: str, project: str, start: int,
                 capacity: int, now: datetime) -> int:
    """Lock the counter row and return its last sequence, creating the row on first use.

    Also used by the admin operations (override, import, reset) that move a counter.
    """
    return lock_counters(session, {counter_key: dict(
        counter_key=counter_key, project=project, last_sequence=start - 1, capacity=capacity,
        updated_at=now)})[counter_key]


def lock_counters(session: Session, new_rows: dict[str, dict]) -> dict[str, int]:
    """Lock the counter rows of ``new_rows``' keys in one statement and return their last
    sequences; a missing row is first created as given (``new_rows[key]``).

    ``IN (…) FOR UPDATE`` on the primary key locks the rows in key order, the same order for
    every transaction, so allocators cannot deadlock on each other.
    """
    return {key: row["last_sequence"] for key, row in lock_counter_rows(session, new_rows).items()}


def lock_counter_rows(session: Session, new_rows: dict[str, dict]) -> dict[str, dict]:
    """``lock_counters``, answering each locked row (last sequence and chain heads) as a dict."""
    connection = session.connection()
    rows = {row.counter_key: row._asdict() for row in
            connection.execute(_LOCK_COUNTERS, {"keys": sorted(new_rows)})}
    missing = [key for key in sorted(new_rows) if key not in rows]
    if missing:
        _create_counters(session, [new_rows[key] for key in missing])
        rows.update({row.counter_key: row._asdict() for row in
                     connection.execute(_LOCK_COUNTERS, {"keys": missing})})
    return rows


def allocate_in_session(session: Session, groups: dict[str, list[AllocationRequest]], *,
                        clock: Clock, reservation_ttl: int = 300, fallback_used: str = "NONE",
                        retry_count: int = 0, started: float | None = None,
                        optimistic: bool = False) -> dict[str, list[Outcome]]:
    """The allocation itself, inside a transaction the caller owns (and commits or rolls back).

    ``allocate_many`` wraps it in its own transaction with retries; void-and-replace calls it
    inside the void's transaction so that both happen or neither. A request may carry
    ``extra={"source": "REPLACE", "replaces": number, "audit_request_id": id}`` to issue a
    replacement (source and audit operation REPLACE, linked to the number it replaces).

    ``optimistic`` skips the two look-ups that almost never find anything (requests already
    served, numbers already taken by another template) and lets the ledger's unique keys
    (request id, number per project) catch those cases instead: the INSERT fails, the caller
    rolls back and serves the batch again with the look-ups (``allocate_many``'s retry). Only
    for callers that own the transaction.
    """
    if started is None:
        started = time.perf_counter()
    now = clock.now()
    lock_started = time.perf_counter()
    locked = lock_counter_rows(session, _counter_rows(groups, to_db(now)))
    lock_wait_ms = _observe_lock_wait(groups, lock_started)
    existing: dict[str, object] = {}
    taken = None
    if not optimistic:
        ids = list({r.request_id for reqs in groups.values() for r in reqs})
        existing = {row.request_id: row for row in session.connection().execute(
            _SERVED, {"ids": ids})}

        def taken(project: str, numbers: list[str]) -> set[str]:
            return set(session.connection().execute(
                _TAKEN, {"project": project, "numbers": numbers}).scalars())

    batch = _plan(groups, locked, existing, taken, now=now, reservation_ttl=reservation_ttl,
                  fallback_used=fallback_used, retry_count=retry_count,
                  lock_wait_ms=lock_wait_ms, started=started)
    connection = session.connection()
    if batch.ledger_rows:
        # Core executemany (one multi-row INSERT): the ORM bulk path costs more CPU than the
        # round trip it saves on the hot path.
        connection.execute(_ledger.insert(), batch.ledger_rows)
    if batch.audit_rows:
        connection.execute(_audit.insert(), batch.audit_rows)
    if _is_mysql(session):
        # Every row exists and is locked: the upsert always updates, in ONE multi-row statement.
        stmt = mysql.insert(Counter)
        stmt = stmt.on_duplicate_key_update(
            {name: stmt.inserted[name] for name in _counter_update_columns(batch.counters)})
        connection.execute(stmt, batch.counters)
    else:
        connection.execute(_ADVANCE_COUNTER, [
            {"key": row["counter_key"], "new_last": row["last_sequence"],
             "new_capacity": row["capacity"], "now": row["updated_at"],
             **{f"new_{name}": row[name] for name in chain.HEAD_COLUMNS}}
            for row in batch.counters])
    return batch.outcomes


def _counter_rows(groups: dict[str, list[AllocationRequest]], now_db: datetime) -> dict[str, dict]:
    """The counter row each key starts from if it does not exist yet."""
    rows = {}
    for key in sorted(groups):
        first = groups[key][0]
        rows[key] = dict(counter_key=key, project=first.context.project,
                         last_sequence=first.config.sequence_start - 1,
                         capacity=first.config.parsed.capacity, updated_at=now_db)
    return rows


def _observe_lock_wait(groups: dict[str, list[AllocationRequest]], lock_started: float) -> int:
    lock_wait_ms = int((time.perf_counter() - lock_started) * 1000)
    for key in sorted(groups):
        ctx = groups[key][0].context
        metrics.lock_acquisition_duration.labels(
            ctx.project, ctx.correspondence_type or "").observe(lock_wait_ms)
    return lock_wait_ms


@dataclass
class _Batch:
    """What one transaction writes, and what each request gets."""

    outcomes: dict[str, list[Outcome]]
    ledger_rows: list[dict]
    audit_rows: list[dict]
    counters: list[dict]        # every locked counter row with its new last sequence


def _plan(groups: dict[str, list[AllocationRequest]], locked: dict[str, dict],
          existing: dict[str, object], taken: Callable[[str, list[str]], set[str]] | None, *,
          now: datetime, reservation_ttl: int, fallback_used: str, retry_count: int,
          lock_wait_ms: int, started: float) -> _Batch:
    """Number every request of the batch against the locked counters (no database access but
    ``taken``, the optional look-up of numbers another template already rendered). ``locked``:
    each key's locked counter row, its last sequence and chain heads (shared/chain.py)."""
    keys = sorted(groups)
    plans: dict[str, list[_Plan]] = {}
    for key in keys:
        plans[key] = []
        seen: dict[str, _Plan] = {}
        for request in groups[key]:
            plan = _Plan(request)
            if request.request_id in seen:             # the same request twice in one batch
                plan.duplicate_of = seen[request.request_id]
            elif request.request_id in existing:
                row = existing[request.request_id]
                if request.fingerprint and row.idempotency_fingerprint not in (
                        None, request.fingerprint):
                    plan.error = DocnumError(
                        "IDEMPOTENCY_KEY_REUSED",
                        "this Idempotency-Key was used with a different body")
                else:
                    plan.existing = row
            seen.setdefault(request.request_id, plan)
            plans[key].append(plan)

    new_lasts = _assign_sequences(plans, {key: row["last_sequence"]
                                          for key, row in locked.items()}, taken)

    ledger_rows: list[dict] = []
    audit_rows: list[dict] = []
    outcomes = {key: _write(key, plans[key], ledger_rows, audit_rows, now=now,
                            reservation_ttl=reservation_ttl, fallback_used=fallback_used,
                            retry_count=retry_count, lock_wait_ms=lock_wait_ms)
                for key in keys}
    duration_ms = int((time.perf_counter() - started) * 1000)
    for audit in audit_rows:
        audit["duration_ms"] = duration_ms
    # Every field is final: chain the rows on their counters' heads (no extra statement: the
    # heads came with the lock and go back with the counter upsert).
    heads = chain.stamp_batch(ledger_rows, audit_rows, locked)
    _add_row_hashes(outcomes, ledger_rows)
    now_db = to_db(now)
    counters = [dict(counter_key=key, project=groups[key][0].context.project,
                     last_sequence=new_lasts[key],
                     capacity=groups[key][0].config.parsed.capacity, updated_at=now_db,
                     **heads[key])
                for key in keys]
    return _Batch(outcomes, ledger_rows, audit_rows, counters)


def _add_row_hashes(outcomes: dict[str, list[Outcome]], ledger_rows: list[dict]) -> None:
    """Each new number's answer carries its row hash, known once the batch is chained."""
    hashes = {(row["counter_key"], row["document_number"]): row["row_hash"]
              for row in ledger_rows}
    for key_outcomes in outcomes.values():
        for outcome in key_outcomes:
            if outcome.number is not None and not outcome.replayed:
                row_hash = hashes.get((outcome.number["counter_key"],
                                       outcome.number["document_number"]))
                if row_hash is not None:
                    outcome.number["row_hash"] = row_hash.hex()


def _counter_update_columns(rows: list[dict]) -> list[str]:
    return [name for name in rows[0] if name != "counter_key"]


def _assign_sequences(plans: dict[str, list[_Plan]], lasts: dict[str, int],
                      taken: Callable[[str, list[str]], set[str]] | None) -> dict[str, int]:
    """Give each new request the next sequence of its counter; returns the new last sequences.

    A request that cannot be numbered (capacity, length, collision) is refused and its
    sequence goes to the next request, so the counter stays contiguous.
    """
    todo = {key: [p for p in key_plans
                  if p.duplicate_of is None and p.existing is None and p.error is None]
            for key, key_plans in plans.items()}
    while True:
        new_lasts = {key: _render(key_todo, lasts[key]) for key, key_todo in todo.items()}
        collided = _first_collision([p for key_todo in todo.values()
                                     for p in key_todo if p.number], taken)
        if collided is None:
            return new_lasts
        project = collided.request.context.project
        metrics.duplicate_collisions.labels(project).inc()
        log.warning("DUPLICATE_NUMBER: %s already exists in project %s (counter %s); refused",
                    collided.number, project, collided.request.counter_key)
        collided.error = DocnumError(
            "DUPLICATE_NUMBER", f"{collided.number} was already issued in project {project} "
                                "by another template; the counter did not advance")


def _render(todo: list[_Plan], last: int) -> int:
    sequence = last
    for plan in todo:
        plan.sequence = plan.number = None
        if plan.error is not None and plan.error.code == "DUPLICATE_NUMBER":
            continue  # refused for good; other refusals are re-judged at the new sequence
        plan.error = None
        request = plan.request
        parsed = request.config.parsed
        candidate = sequence + 1
        if candidate > parsed.capacity:
            plan.error = DocnumError(
                "SEQUENCE_EXHAUSTED",
                f"counter {request.counter_key} has reached {parsed.capacity}, the most "
                f"{request.config.template} can render; nothing was consumed")
            continue
        try:
            number = templates.render_number(parsed, request.context, candidate, request.day,
                                             request.config.fiscal_year_start_month)
            templates.check_number_length(number)
        except DocnumError as exc:
            plan.error = exc
            continue
        plan.sequence, plan.number = candidate, number
        sequence = candidate
    return sequence


def _first_collision(plans: list[_Plan],
                     taken: Callable[[str, list[str]], set[str]] | None) -> _Plan | None:
    """The first plan whose number exists in its project already, or twice in this batch.

    Without ``taken`` only the batch itself is checked: the ledger's unique key on (project,
    number) then refuses the INSERT, and the batch is served again with the look-up.
    """
    by_project: dict[str, list[_Plan]] = {}
    for plan in plans:
        by_project.setdefault(plan.request.context.project, []).append(plan)
    for project, project_plans in by_project.items():
        already = taken(project, [p.number for p in project_plans]) if taken else set()
        in_batch: set[str] = set()
        for plan in project_plans:
            if plan.number in already or plan.number in in_batch:
                return plan
            in_batch.add(plan.number)
    return None


def _write(counter_key: str, plans: list[_Plan], ledger_rows: list[dict],
           audit_rows: list[dict], *, now: datetime, reservation_ttl: int, fallback_used: str,
           retry_count: int, lock_wait_ms: int) -> list[Outcome]:
    """Outcomes of one key's plans; appends the rows to insert to ``ledger_rows``/``audit_rows``."""
    from docnum.shared.ledger import issued_number

    now_db = to_db(now)
    outcomes: dict[int, Outcome] = {}
    for index, plan in enumerate(plans):
        if plan.duplicate_of is not None:
            continue
        request = plan.request
        outcome = Outcome(request.request_id, lock_wait_ms=lock_wait_ms, retry_count=retry_count)
        outcomes[index] = outcome
        if plan.existing is not None:
            outcome.number, outcome.replayed = issued_number(plan.existing), True
            continue
        reserve = request.mode == "reserve"
        source = request.extra.get("source") or ("RESERVE" if reserve else "GENERATE")
        operation = source
        audit = dict(operation=operation, actor=request.actor, client_ip=request.client_ip,
                     user_agent=request.user_agent,
                     request_id=request.extra.get("audit_request_id") or request.request_id,
                     counter_key=counter_key, lock_wait_ms=lock_wait_ms,
                     retry_count=retry_count, fallback_used=fallback_used, created_at=now_db)
        if plan.error is not None:
            outcome.error = plan.error
            audit_rows.append(dict(audit, document_number=plan.number, before=None,
                                   after={"context": request.context.to_dict()},
                                   success=False, error_code=plan.error.code))
            continue
        ctx = request.context
        token = uuid.uuid4().hex if reserve else None
        expires = now + timedelta(seconds=reservation_ttl) if reserve else None
        row = dict(
            document_number=plan.number, project=ctx.project, counter_key=counter_key,
            sequence=plan.sequence, state="RESERVED" if reserve else "CONFIRMED",
            source=source, config_id=request.config.id,
            config_version=request.config.version, template=request.config.template,
            correspondence_type=ctx.correspondence_type, originator=ctx.originator,
            recipient=ctx.recipient, sub_type=ctx.sub_type, rfa_type=ctx.rfa_type,
            discipline=ctx.discipline, revision=ctx.revision, document_date=ctx.document_date,
            document_ref=ctx.document_ref, request_id=request.request_id,
            idempotency_client=request.actor if request.idempotency_key else None,
            idempotency_key=request.idempotency_key,
            idempotency_fingerprint=request.fingerprint, issued_by=request.actor,
            issued_at=now_db, reservation_token=token,
            reservation_expires_at=to_db(expires) if expires else None,
            replaces=request.extra.get("replaces"))
        ledger_rows.append(row)
        outcome.number = issued_number(SimpleNamespace(**row))
        after = {"last_sequence": plan.sequence, "state": row["state"], "context": ctx.to_dict(),
                 "config_version": request.config.version}
        if row["replaces"]:
            after["replaces"] = row["replaces"]
        audit_rows.append(dict(audit, document_number=plan.number,
                               before={"last_sequence": plan.sequence - 1}, after=after,
                               success=True, error_code=None))
    result: list[Outcome] = []
    first_for: dict[str, Outcome] = {}
    for index, plan in enumerate(plans):
        if plan.duplicate_of is None:
            result.append(outcomes[index])
            first_for.setdefault(plan.request.request_id, outcomes[index])
        else:
            result.append(first_for[plan.request.request_id])
    return result


# While the database is unreachable a batch waits and tries again, up to this long, before it
# fails its requests with SERVICE_BUSY (a queued message is only acknowledged after that).
DB_OUTAGE_PATIENCE_S = 20.0


def serve_requests(settings: Settings, requests: list[AllocationRequest], *,
                   fallback_used: str = "NONE") -> list[Outcome]:
    """Allocate a batch: grouped by counter key, all keys in one transaction; keeps order."""
    engine = allocation_engine(settings.database_url)
    clock = SystemClock()
    groups: dict[str, list[AllocationRequest]] = {}
    for request in requests:
        groups.setdefault(request.counter_key, []).append(request)
    served = _allocate_patiently(settings, engine, groups, clock, fallback_used)
    position = {key: 0 for key in served}
    outcomes = []
    for request in requests:
        outcomes.append(served[request.counter_key][position[request.counter_key]])
        position[request.counter_key] += 1
    return outcomes


def _allocate_patiently(settings: Settings, engine: Engine,
                        groups: dict[str, list[AllocationRequest]], clock: Clock,
                        fallback_used: str) -> dict[str, list[Outcome]]:
    deadline = time.monotonic() + DB_OUTAGE_PATIENCE_S
    delay = 0.25
    everyone = [r for group in groups.values() for r in group]
    while True:
        try:
            return allocate_many(engine, groups, clock=clock,
                                 reservation_ttl=settings.reservation_ttl,
                                 fallback_used=fallback_used)
        except DocnumError as exc:
            if exc.code != "SERVICE_BUSY" or time.monotonic() + delay > deadline:
                record_failures(engine, everyone, exc, clock=clock, fallback_used=fallback_used)
                return {key: [Outcome(r.request_id, error=exc) for r in group]
                        for key, group in groups.items()}
            log.warning("database unavailable for %d keys; retrying in %.2fs", len(groups), delay)
            time.sleep(delay)
            # At most 1 s between attempts (one connect attempt each): the queue moves again
            # within about a second of the database's return.
            delay = min(delay * 2, 1.0)
        except Exception:  # every request must get an answer, never a silent loss
            log.exception("allocation failed on %s", sorted(groups))
            error = DocnumError("INTERNAL_ERROR", "the allocation failed; the request can be "
                                                  "retried with the same Idempotency-Key")
            record_failures(engine, everyone, error, clock=clock, fallback_used=fallback_used)
            return {key: [Outcome(r.request_id, error=error) for r in group]
                    for key, group in groups.items()}


def observe_generation(request: AllocationRequest, outcome: Outcome) -> None:
    """docnum_generation_duration_ms: from acceptance at the front door to the answer."""
    started = request.submitted_at
    if not started:
        return
    try:
        began = datetime.fromisoformat(started.replace("Z", "+00:00"))
    except ValueError:
        return
    elapsed_ms = (SystemClock().now() - began).total_seconds() * 1000
    status = "success" if outcome.ok else outcome.error.code.lower()
    ctx = request.context
    metrics.generation_duration.labels(ctx.project, ctx.correspondence_type or "",
                                       status).observe(max(elapsed_ms, 0))


def record_failures(engine: Engine, requests: list[AllocationRequest], error: DocnumError, *,
                    clock: Clock, fallback_used: str = "NONE") -> None:
    """Best effort: an audit row for requests that failed outside the allocation transaction."""
    now_db = to_db(clock.now())
    rows = [dict(operation="RESERVE" if r.mode == "reserve" else "GENERATE", actor=r.actor,
                 client_ip=r.client_ip, user_agent=r.user_agent, request_id=r.request_id,
                 counter_key=r.counter_key, document_number=None, before=None,
                 after={"context": r.context.to_dict()}, retry_count=0,
                 fallback_used=fallback_used, success=False, error_code=error.code,
                 created_at=now_db, lock_wait_ms=None, duration_ms=None) for r in requests]
    try:
        with transaction(engine) as session:
            # The rows go onto their counters' audit chains: lock (and on first use create) the
            # counter rows that hold the heads, as the allocation would have.
            lock_counters(session, {r.counter_key: dict(
                counter_key=r.counter_key, project=r.context.project,
                last_sequence=r.config.sequence_start - 1, capacity=r.config.parsed.capacity,
                updated_at=now_db) for r in requests})
            chain_store.append(session, audit=rows)
    except DBAPIError:
        log.warning("could not record %d failed requests (%s)", len(rows), error.code)


__all__ = ["DB_OUTAGE_PATIENCE_S", "Outcome", "allocate_in_session", "allocate_many", "iso",
           "lock_counter", "lock_counters", "observe_generation", "record_failures",
           "serve_requests"]
