"""Group commit: a batch spanning several counter keys is served in ONE transaction with one
statement of each kind (shared/allocation.py, ``allocate_many``), on the real MariaDB."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from docnum.shared import issuing
from docnum.shared.allocation import allocate_many
from docnum.shared.clock import SystemClock
from docnum.shared.db import allocation_engine, transaction
from docnum.shared.models import AuditRow, Counter, IssuedNumber
from tests.conftest import LETTER_TEMPLATE, letter


def _request(engine, settings, body: dict, request_id: str | None = None):
    ctx = issuing.parse_context(body)
    now = SystemClock().now()
    with transaction(engine) as session:
        config, key, day = issuing.prepare(session, ctx, now=now, timezone=settings.timezone)
    return issuing.build_request(request_id=request_id or str(uuid.uuid4()), mode="generate",
                                 ctx=ctx, config=config, counter_key=key, day=day,
                                 actor="alice", now=now)


@pytest.fixture(params=["one statement per round trip", "two round trips"])
def alloc_engine(request, engine, database_url):
    """Both ways ``allocate_many`` talks to MariaDB: statement by statement through a Session,
    and the allocation engine's lock + one multi-statement write-and-commit."""
    return engine if request.param.startswith("one") else allocation_engine(database_url)


def _groups(requests) -> dict:
    groups: dict = {}
    for request in requests:
        groups.setdefault(request.counter_key, []).append(request)
    return groups


def test_several_keys_one_transaction_each_counter_contiguous(alloc_engine, engine, settings,
                                                              seed):
    seed(project="P2")
    parties = [("คคง.", "สคฉ.3"), ("คคง.", "ผรม.1"), ("TEAM-A", "TEAM-B")]
    project = "P2"
    requests = [_request(engine, settings, letter(project=project, originator=o, recipient=r))
                for o, r in parties for _ in range(3)]
    requests.append(requests[0])  # one request delivered twice within the batch
    groups = _groups(requests)
    assert len(groups) == 3
    served = allocate_many(alloc_engine, groups, clock=SystemClock())

    numbers = {}
    for key, outcomes in served.items():
        assert [o.ok for o in outcomes] == [True] * len(groups[key])
        sequences = [o.number["sequence"] for o in outcomes]
        assert sequences[:3] == [1, 2, 3], (key, sequences)
        for request, outcome in zip(groups[key], outcomes, strict=True):
            numbers.setdefault(request.request_id, set()).add(outcome.number["document_number"])
    assert all(len(texts) == 1 for texts in numbers.values())  # the twice-delivered one too
    with transaction(engine) as session:
        lasts = dict(session.execute(select(Counter.counter_key, Counter.last_sequence)
                                     .where(Counter.counter_key.in_(list(groups)))).all())
        rows = session.scalar(select(func.count()).select_from(IssuedNumber)
                              .where(IssuedNumber.project == project))
        audits = session.scalar(select(func.count()).select_from(AuditRow).where(
            AuditRow.counter_key.in_(list(groups)), AuditRow.success.is_(True)))
    assert lasts == {key: 3 for key in groups}
    assert rows == 9 and audits == 9

    # Redelivered whole (a worker died before acknowledging): every answer is replayed.
    again = allocate_many(alloc_engine, groups, clock=SystemClock())
    for key in groups:
        assert [o.number for o in again[key]] == [o.number for o in served[key]]
        assert all(o.replayed for o in again[key])
    with transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(IssuedNumber)
                              .where(IssuedNumber.project == project)) == 9
        assert dict(session.execute(select(Counter.counter_key, Counter.last_sequence).where(
            Counter.counter_key.in_(list(groups)))).all()) == lasts


def test_collision_between_keys_of_one_batch_is_refused_without_consuming(alloc_engine,
        engine, settings, seed):
    # MEMO's template fixes the originator: its counter differs from LETTER's, its first number
    # does not.
    seed({"LETTER": (LETTER_TEMPLATE, "YEARLY"),
          "MEMO": ("คคง.-{RECIPIENT}-{SEQ:4}-{YEAR:B.E.}", "YEARLY")}, project="P2")
    first = _request(engine, settings, letter(project="P2"))
    clash = _request(engine, settings, letter(project="P2", correspondence_type="MEMO"))
    assert first.counter_key != clash.counter_key
    served = allocate_many(alloc_engine, _groups([first, clash]), clock=SystemClock())
    winner, loser = served[first.counter_key][0], served[clash.counter_key][0]
    if first.counter_key > clash.counter_key:  # keys are served in sorted order
        winner, loser = loser, winner
    assert winner.ok and winner.number["sequence"] == 1
    assert loser.error is not None and loser.error.code == "DUPLICATE_NUMBER"
    with transaction(engine) as session:
        lasts = dict(session.execute(select(Counter.counter_key, Counter.last_sequence).where(
            Counter.counter_key.in_([first.counter_key, clash.counter_key]))).all())
    assert sorted(lasts.values()) == [0, 1]  # the refused request consumed nothing


def test_number_taken_earlier_is_refused_after_the_optimistic_insert_fails(alloc_engine,
        engine, settings, seed):
    # The first attempt skips the look-ups; the ledger's unique number per project stops the
    # insert, and the careful second attempt refuses just that request.
    seed({"LETTER": (LETTER_TEMPLATE, "YEARLY"),
          "MEMO": ("คคง.-{RECIPIENT}-{SEQ:4}-{YEAR:B.E.}", "YEARLY")}, project="P2")
    first = _request(engine, settings, letter(project="P2"))
    [issued] = allocate_many(alloc_engine, _groups([first]), clock=SystemClock())[first.counter_key]
    clash = _request(engine, settings, letter(project="P2", correspondence_type="MEMO"))
    fine = _request(engine, settings, letter(project="P2", recipient="ผรม.1",
                                             correspondence_type="MEMO"))
    served = allocate_many(alloc_engine, _groups([clash, fine]), clock=SystemClock())
    [refused] = served[clash.counter_key]
    assert refused.error is not None and refused.error.code == "DUPLICATE_NUMBER"
    assert issued.number["document_number"] in refused.error.detail
    [ok] = served[fine.counter_key]
    assert ok.ok and ok.number["document_number"] == "คคง.-ผรม.1-0001-2568"
    with transaction(engine) as session:
        last = session.scalar(select(Counter.last_sequence).where(
            Counter.counter_key == clash.counter_key))
        failures = session.scalar(select(func.count()).select_from(AuditRow).where(
            AuditRow.request_id == clash.request_id, AuditRow.success.is_(False)))
    assert last == 0 and failures == 1


def test_allocation_engine_takes_two_round_trips(engine, settings, seed, database_url,
                                                 monkeypatch):
    """Once its counters exist, a batch costs the lock and one write-and-commit query."""
    from docnum.shared import sqlbatch

    seed(project="P2")
    calls: list[str] = []
    rows, write = sqlbatch.RawCursor.rows, sqlbatch.RawCursor.execute_and_commit
    monkeypatch.setattr(sqlbatch.RawCursor, "rows",
                        lambda self, *a: calls.append("lock") or rows(self, *a))
    monkeypatch.setattr(sqlbatch.RawCursor, "execute_and_commit",
                        lambda self, *a: calls.append("write+commit") or write(self, *a))
    fast = allocation_engine(database_url)

    def fresh(*originators: str) -> list:
        return [_request(engine, settings, letter(project="P2", originator=o))
                for o in originators]

    allocate_many(fast, _groups(fresh("คคง.")), clock=SystemClock())  # creates one counter
    calls.clear()
    served = allocate_many(fast, _groups(fresh("คคง.", "คคง.", "TEAM-A")), clock=SystemClock())
    assert calls == ["lock", "lock", "write+commit"]  # TEAM-A's counter is new: created once
    calls.clear()
    served.update(allocate_many(fast, _groups(fresh("คคง.", "TEAM-A")), clock=SystemClock()))
    assert calls == ["lock", "write+commit"]
    assert all(o.ok and not o.replayed for outcomes in served.values() for o in outcomes)


def test_lock_and_retry_samples_carry_each_keys_own_labels(engine, settings, seed,
                                                           monkeypatch):
    """A batch over several keys: each key's lock attempt, failure and retry samples carry
    that key's project and type, and a retried batch is ONE retry observation per key, not
    one per request (shared/metrics.py, called from allocate_many)."""
    from prometheus_client import REGISTRY
    from sqlalchemy.exc import OperationalError

    from docnum.shared import allocation

    seed()
    seed(project="P2")
    requests = ([_request(engine, settings, letter()) for _ in range(3)]
                + [_request(engine, settings, letter(correspondence_type="RFI"))
                   for _ in range(2)]
                + [_request(engine, settings, letter(project="P2"))])
    groups = _groups(requests)
    labels = [("LCBP3", "LETTER"), ("LCBP3", "RFI"), ("P2", "LETTER")]
    assert len(groups) == 3

    def sample(name: str, project: str, ctype: str, **extra: str) -> float:
        return REGISTRY.get_sample_value(name, {"project": project, "type": ctype,
                                                **extra}) or 0.0

    names = ("docnum_lock_acquisition_total", "docnum_retry_count_count",
             "docnum_retry_count_sum", "docnum_lock_acquisition_duration_ms_count")
    before = {(n, lbl): sample(n, *lbl) for n in names for lbl in labels}
    failures_before = {lbl: sample("docnum_lock_acquisition_failures_total", *lbl,
                                   reason="deadlock") for lbl in labels}

    real = allocation.allocate_in_session
    calls = []

    def deadlock_once(*args: object, **kwargs: object) -> object:
        calls.append(kwargs["retry_count"])
        if len(calls) == 1:
            raise OperationalError("SELECT … FOR UPDATE", {},
                                   Exception(1213, "Deadlock found when trying to get lock"))
        return real(*args, **kwargs)

    monkeypatch.setattr(allocation, "allocate_in_session", deadlock_once)
    monkeypatch.setattr(allocation.time, "sleep", lambda _s: None)
    served = allocate_many(engine, groups, clock=SystemClock())
    assert calls == [0, 1]
    assert all(o.ok and o.retry_count == 1 for outcomes in served.values() for o in outcomes)

    def delta(name: str, lbl: tuple[str, str]) -> float:
        return sample(name, *lbl) - before[(name, lbl)]

    for lbl in labels:
        assert delta("docnum_lock_acquisition_total", lbl) == 2, lbl  # two attempts
        assert sample("docnum_lock_acquisition_failures_total", *lbl, reason="deadlock") \
            - failures_before[lbl] == 1, lbl
        assert delta("docnum_retry_count_count", lbl) == 1, lbl      # once per batch per key
        assert delta("docnum_retry_count_sum", lbl) == 1, lbl        # ... of one retry
        assert delta("docnum_lock_acquisition_duration_ms_count", lbl) == 1, lbl


def test_answering_a_batch_adds_no_retry_observation_per_request(engine, settings, seed):
    """The worker answers each request (``observe_generation``) after ``allocate_many`` has
    observed the batch's retries: still one docnum_retry_count observation per key."""
    from prometheus_client import REGISTRY

    from docnum.shared.allocation import observe_generation

    seed()
    requests = [_request(engine, settings, letter()) for _ in range(4)]
    assert all(r.submitted_at for r in requests)
    groups = _groups(requests)
    assert len(groups) == 1
    labels = {"project": "LCBP3", "type": "LETTER"}
    before = REGISTRY.get_sample_value("docnum_retry_count_count", labels) or 0.0
    served = allocate_many(engine, groups, clock=SystemClock())
    for request, outcome in zip(requests, served[requests[0].counter_key], strict=True):
        observe_generation(request, outcome)
    assert REGISTRY.get_sample_value("docnum_retry_count_count", labels) - before == 1
