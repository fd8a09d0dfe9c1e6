"""``docnum verify``: walk every hash chain and every checkpoint, and name each row that was
edited, deleted, inserted or reordered (docs/verification.md#docnum-verify).

The ledger, the audit archive and the live audit trail are each read once, in id order, as a
stream; each chain keeps only its next expected position and the previous row's hash, and a row
that arrives out of position waits until its predecessors have come. Every row is checked
against the stored hash of the row before it, so one edited row is named alone and the rows
after it still verify. Then each chain's end is compared with the head its counter holds and
with every head the signed log recorded, the log's leaves with their hashes and every
checkpoint's root and signature, and the audit trail with the ledger (every number an audit row
names is there, in the state the audit trail says), collected on the same walk.
"""
from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Table, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from docnum.shared import chain, checkpoints, merkle
from docnum.shared.db import transaction
from docnum.shared.models import (
    AuditArchiveRow,
    AuditRow,
    ChainHead,
    Checkpoint,
    Counter,
    IssuedNumber,
)

LEDGER_TABLE = "document_numbers"
ISSUING = frozenset({"GENERATE", "RESERVE", "REPLACE", "MANUAL_OVERRIDE", "IMPORT"})
TERMINAL = {"VOID": "VOID", "CANCEL": "CANCELLED", "EXPIRE": "EXPIRED"}
CROSS_CHECKED = ISSUING | {"CONFIRM"} | set(TERMINAL)
_STREAM = {"stream_results": True, "yield_per": 10_000}


@dataclass
class Finding:
    """One thing wrong, with the row it concerns as precisely as it can be named."""

    kind: str          # edited, deleted, inserted, reordered, head, checkpoint, signature, state
    table: str
    detail: str
    counter_key: str | None = None
    document_number: str | None = None
    position: int | None = None
    row_id: int | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def line(self) -> str:
        where = [self.table]
        if self.row_id is not None:
            where.append(f"id {self.row_id}")
        if self.document_number:
            where.append(self.document_number)
        if self.counter_key:
            where.append(f"counter {self.counter_key}")
        if self.position is not None:
            where.append(f"position {self.position}")
        return f"{self.kind.upper():10} {' · '.join(where)}: {self.detail}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    ledger_rows: int = 0
    audit_rows: int = 0
    chains: int = 0
    checkpoints: int = 0
    leaves: int = 0
    signatures_checked: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict:
        return {"ok": self.ok, "ledger_rows": self.ledger_rows, "audit_rows": self.audit_rows,
                "chains": self.chains, "checkpoints": self.checkpoints, "leaves": self.leaves,
                "signatures_checked": self.signatures_checked,
                "seconds": round(self.seconds, 3),
                "findings": [f.to_dict() for f in self.findings]}


# --------------------------------------------------------------------------- chain walk

class _State:
    __slots__ = ("expect", "previous", "pending", "last_row", "leaves", "leaf_at")

    def __init__(self, leaves: list[tuple[int, bytes, int]]) -> None:
        self.expect = 1
        self.previous: bytes | None = chain.GENESIS
        self.pending: dict[int, tuple[str, tuple]] = {}
        self.last_row: tuple[str, tuple] | None = None
        self.leaves = leaves            # (length, head, checkpoint id), by length
        self.leaf_at = 0


class _Walker:
    """The chains of one kind, fed rows in any order.

    A row is a tuple: ``id``, ``row_hash``, the extra columns of ``EXTRA[kind]``, then the
    encoded columns in the encoding's order (``chain.ENCODERS[kind].columns``), so each row is
    encoded straight from the driver's tuple.
    """

    EXTRA = {chain.LEDGER: ("state", "source"), chain.AUDIT: ()}

    def __init__(self, kind: str, leaves: dict[str | None, list[tuple[int, bytes, int]]],
                 report: Report, cross: _CrossCheck) -> None:
        self.kind = kind
        self.encode = chain.ENCODERS[kind]
        self.leaves = leaves
        self.report = report
        self.cross = cross
        self.chains: dict[str | None, _State] = {}
        # Rows that failed their hash, per chain: (finding, row, hash of the row before it).
        self.failed: dict[str | None, list[tuple[Finding, tuple, bytes]]] = {}
        self.start = 2 + len(self.EXTRA[kind])
        index = {name: self.start + i for i, name in enumerate(self.encode.columns)}
        self.at = index
        self.i_key, self.i_pos = index["counter_key"], index["chain_pos"]
        self.i_number = index["document_number"]

    def columns(self, table: Table) -> list:
        names = ("id", "row_hash", *self.EXTRA[self.kind], *self.encode.columns)
        return [table.c[name] for name in names]

    def _finding(self, kind: str, table: str, row: tuple | None, detail: str,
                 key: str | None = None, position: int | None = None) -> None:
        if row is not None:
            key, position = row[self.i_key], row[self.i_pos]
            if self.kind == chain.AUDIT:
                detail = f"{row[self.at['operation']]} audit row: {detail}"
            self.report.findings.append(Finding(kind, table, detail, key, row[self.i_number],
                                                position, row[0]))
        else:
            self.report.findings.append(Finding(kind, table, detail, key, None, position))

    def feed(self, table: str, rows: Iterable[tuple]) -> int:
        count = 0
        chains, values, link, start = self.chains, self.encode.values, chain.link, self.start
        i_key, i_pos = self.i_key, self.i_pos
        note = self.cross.ledger if self.kind == chain.LEDGER else self.cross.audit
        for row in rows:
            count += 1
            note(table, row, self.at)
            key, position, stored = row[i_key], row[i_pos], row[1]
            if position is None or stored is None:
                self._finding("inserted", table, row, "the row has no place on a hash chain: "
                                                      "it was written outside docnum")
                continue
            state = chains.get(key)
            if state is None:
                state = chains[key] = _State(self.leaves.get(key, []))
            if position == state.expect:
                stored = bytes(stored)
                if state.previous is not None and link(state.previous,
                                                       values(row[start:])) != stored:
                    self._edited(state, table, row)
                self._accept(state, table, row, stored)
                while state.expect in state.pending:
                    waiting_table, waiting = state.pending.pop(state.expect)
                    self._check_and_accept(state, waiting_table, waiting)
            elif position < state.expect or position in state.pending:
                self._finding("inserted", table, row, f"a second row at position {position}")
            else:
                state.pending[position] = (table, row)
        return count

    def _check_and_accept(self, state: _State, table: str, row: tuple) -> None:
        stored = bytes(row[1])
        if state.previous is not None and chain.link(
                state.previous, self.encode.values(row[self.start:])) != stored:
            self._edited(state, table, row)
        self._accept(state, table, row, stored)

    def _edited(self, state: _State, table: str, row: tuple) -> None:
        self._finding("edited", table, row, "the row does not hash to its stored row_hash: "
                                            "changed since it was written")
        assert state.previous is not None
        self.failed.setdefault(row[self.i_key], []).append(
            (self.report.findings[-1], row, state.previous))

    def _hashes_at(self, row: tuple, position: int, previous: bytes) -> bool:
        values = list(row[self.start:])
        values[self.i_pos - self.start] = position
        return chain.link(previous, self.encode.values(values)) == bytes(row[1])

    def _reordered(self, failures: list[tuple[Finding, tuple, bytes]]) -> None:
        """Two rows that fail where they are but hash in each other's place were swapped; the
        rows right after them then fail only because their predecessor moved: not blamed."""
        by_position = {row[self.i_pos]: (finding, row) for finding, row, _ in failures}
        for i, (fx, x, x_prev) in enumerate(failures[:50]):
            for fy, y, y_prev in failures[i + 1:50]:
                p, q = x[self.i_pos], y[self.i_pos]
                x_then = bytes(y[1]) if q - 1 == p else y_prev
                y_then = bytes(x[1]) if p - 1 == q else x_prev
                if not (self._hashes_at(x, q, x_then) and self._hashes_at(y, p, y_then)):
                    continue
                for finding, now, then in ((fx, p, q), (fy, q, p)):
                    finding.kind = "reordered"
                    finding.detail = (f"the row was at position {then} and is now at {now}: "
                                      "its place on the chain was changed")
                for after, predecessor in ((p + 1, bytes(y[1])), (q + 1, bytes(x[1]))):
                    follower = by_position.get(after)
                    if follower and follower[1] not in (x, y) and self._hashes_at(
                            follower[1], after, predecessor) \
                            and follower[0] in self.report.findings:
                        self.report.findings.remove(follower[0])

    def _accept(self, state: _State, table: str, row: tuple, stored: bytes) -> None:
        position = row[self.i_pos]
        state.previous, state.expect, state.last_row = stored, position + 1, (table, row)
        leaves = state.leaves
        while state.leaf_at < len(leaves) and leaves[state.leaf_at][0] <= position:
            length, head, checkpoint_id = leaves[state.leaf_at]
            if length == position and head != stored:
                self._finding("checkpoint", table, row,
                              f"checkpoint {checkpoint_id} signed a different hash at this "
                              "position: the chain was rewritten up to here")
            state.leaf_at += 1

    def finish(self, heads: dict[str | None, chain.Head]) -> None:
        table_of = LEDGER_TABLE if self.kind == chain.LEDGER else "audit_log"
        for key in set(heads) | set(self.leaves):
            if key not in self.chains:
                self.chains[key] = _State(self.leaves.get(key, []))
        for key, state in self.chains.items():
            while state.pending:
                gap_end = min(state.pending)
                after = self._name(state.last_row)
                table, row = state.pending.pop(gap_end)
                self._finding("deleted", table, None,
                              f"positions {state.expect}–{gap_end - 1} are missing between "
                              f"{after} and {self._name((table, row))}", key, state.expect)
                state.previous = None  # the link across a gap cannot be checked
                self._check_and_accept(state, table, row)
                while state.expect in state.pending:
                    self._check_and_accept(state, *state.pending.pop(state.expect))
            last = state.expect - 1
            head = heads.get(key)
            length = head.length if head else 0
            if last < length:
                self._finding("deleted", table_of, None,
                              f"the chain's head says {length} rows, the last present is "
                              f"position {last} ({self._name(state.last_row)}): rows at the "
                              "end were removed", key, last + 1)
            elif last > length:
                self._finding("inserted", table_of, None,
                              f"rows at positions {length + 1}–{last} are beyond the head the "
                              f"counter holds (length {length}): added outside docnum, or the "
                              "counter was rolled back", key, length + 1)
            elif head is not None and last and state.previous is not None \
                    and state.previous != head.hash:
                self._finding("head", "counters" if key else "chain_heads", None,
                              "the stored chain head is not the hash of the chain's last row",
                              key, last)
            for length_, _head, checkpoint_id in state.leaves[state.leaf_at:]:
                self._finding("deleted", table_of, None,
                              f"checkpoint {checkpoint_id} signed this chain at length "
                              f"{length_}; it now ends at {last}", key, last + 1)
                break
        for failures in self.failed.values():
            if len(failures) > 1:
                self._reordered(failures)
        self.report.chains += len(self.chains)

    def _name(self, entry: tuple[str, tuple] | None) -> str:
        if entry is None:
            return "the start of the chain"
        _table, row = entry
        label = row[self.i_number] or f"audit row {row[0]}"
        return f"{label} (position {row[self.i_pos]})"


class _CrossCheck:
    """The audit trail against the ledger, collected while both are walked: every number an
    audit row issued or changed is in the ledger, issued when its audit row says, in the final
    state its audit rows gave it; and every number was issued by an audited operation."""

    def __init__(self, report: Report) -> None:
        self.report = report
        # counter key -> number -> [id, issued_at, state, source, issued?, final op seen?]
        self.numbers: dict[str | None, dict[str, list]] = {}

    def ledger(self, _table: str, row: tuple, at: dict[str, int]) -> None:
        by_number = self.numbers.get(row[at["counter_key"]])
        if by_number is None:
            by_number = self.numbers[row[at["counter_key"]]] = {}
        by_number[row[at["document_number"]]] = [row[0], row[at["issued_at"]],
                                                 sys.intern(row[2]), sys.intern(row[3]),
                                                 False, False]

    def audit(self, table: str, row: tuple, at: dict[str, int]) -> None:
        operation, number = row[at["operation"]], row[at["document_number"]]
        if number is None or not row[at["success"]] or operation not in CROSS_CHECKED:
            return
        key = row[at["counter_key"]]
        entry = self.numbers.get(key, {}).get(number)
        if entry is None:
            self.report.findings.append(Finding(
                "deleted", LEDGER_TABLE, f"{operation} audit row {row[0]} ({table}) names "
                                         f"{number}, which is no longer in the ledger", key,
                number, row_id=row[0]))
            return
        if operation in ISSUING:
            entry[4] = True
            if entry[1] != row[at["created_at"]]:
                self.report.findings.append(Finding(
                    "edited", LEDGER_TABLE, f"issued_at differs from the time of its "
                                            f"{operation} audit row {row[0]}", key, number,
                    row_id=entry[0]))
        elif operation in TERMINAL:
            entry[5] = True
            if entry[2] != TERMINAL[operation]:
                self.report.findings.append(Finding(
                    "state", LEDGER_TABLE, f"state is {entry[2]}, but {operation} audit row "
                                           f"{row[0]} made it {TERMINAL[operation]}", key,
                    number, row_id=entry[0]))

    def finish(self) -> None:
        final = {state: operation for operation, state in TERMINAL.items()}
        for key, by_number in self.numbers.items():
            for number, (row_id, _at, state, source, issued, ended) in by_number.items():
                if not issued:
                    self.report.findings.append(Finding(
                        "inserted", LEDGER_TABLE, "no audit row issued this number: it was "
                                                  "added outside docnum", key, number,
                        row_id=row_id))
                if state in final and not ended and source != "IMPORT":
                    self.report.findings.append(Finding(
                        "state", LEDGER_TABLE, f"state is {state}, but no {final[state]} audit "
                                               "row records it", key, number, row_id=row_id))


def _rows(session: Session, walker: _Walker, table: Table) -> Iterable[tuple]:
    return session.connection().execution_options(**_STREAM).execute(
        select(*walker.columns(table)).order_by(table.c.id))


def _heads(session: Session) -> tuple[dict[str | None, chain.Head], dict[str | None, chain.Head]]:
    ledger: dict[str | None, chain.Head] = {}
    audit: dict[str | None, chain.Head] = {}
    for key, ll, lh, al, ah in session.execute(select(
            Counter.counter_key, Counter.ledger_length, Counter.ledger_head,
            Counter.audit_length, Counter.audit_head)):
        if ll:
            ledger[key] = chain.Head.of(ll, lh)
        if al:
            audit[key] = chain.Head.of(al, ah)
    for kind, length, head in session.execute(select(ChainHead.kind, ChainHead.length,
                                                     ChainHead.head)):
        if length:
            (ledger if kind == chain.LEDGER else audit)[None] = chain.Head.of(length, head)
    return ledger, audit


# --------------------------------------------------------------------------- the log

def _check_log(session: Session, public: Ed25519PublicKey | None, report: Report
               ) -> dict[str, dict[str | None, list[tuple[int, bytes, int]]]]:
    """Signatures, leaf hashes and every checkpoint's root; returns the recorded heads of each
    chain (by kind, then counter key) for the chain walk."""
    rows = list(session.scalars(select(Checkpoint).order_by(Checkpoint.id)))
    report.checkpoints = len(rows)
    report.signatures_checked = public is not None
    documents = [checkpoints.checkpoint_dict(r) for r in rows]
    for position, document in enumerate(documents, start=1):
        if document["checkpoint"] != position:
            report.findings.append(Finding("checkpoint", "checkpoints",
                                           f"checkpoint {position} is missing", row_id=position))
        if public is not None:
            bad = checkpoints.check_signature(document, public)
            if bad:
                report.findings.append(Finding("signature", "checkpoints", bad,
                                               row_id=document["checkpoint"]))
    by_size: dict[int, list[dict]] = {}
    for document in documents:
        by_size.setdefault(document["tree_size"], []).append(document)
    recorded: dict[str, dict[str | None, list[tuple[int, bytes, int]]]] = {
        chain.LEDGER: {}, chain.AUDIT: {}}
    tree = merkle.CompactRange()
    owner = iter(documents)
    current = next(owner, None)

    def check_roots() -> None:
        for document in by_size.get(tree.size, []):
            if tree.root().hex() != document["root_hash"]:
                report.findings.append(Finding(
                    "checkpoint", "checkpoint_leaves",
                    f"the stored log does not give checkpoint {document['checkpoint']}'s signed "
                    f"root over {document['tree_size']} leaves: leaves were changed",
                    row_id=document["checkpoint"]))

    check_roots()
    for leaf, stored in checkpoints.iter_leaves(session):
        report.leaves += 1
        if leaf.index != tree.size:
            report.findings.append(Finding("checkpoint", "checkpoint_leaves",
                                           f"leaf {tree.size} is missing", position=tree.size))
        digest = merkle.leaf_hash(leaf.encoding())
        if digest != stored:
            report.findings.append(Finding(
                "checkpoint", "checkpoint_leaves",
                f"leaf {leaf.index} ({chain.chain_name(leaf.kind, leaf.counter_key)}, length "
                f"{leaf.length}) does not hash to its stored leaf hash", leaf.counter_key,
                position=leaf.length))
        tree.append(digest)
        while current is not None and current["tree_size"] < tree.size:
            current = next(owner, None)
        checkpoint_id = current["checkpoint"] if current else 0
        recorded.setdefault(leaf.kind, {}).setdefault(leaf.counter_key, []).append(
            (leaf.length, leaf.head, checkpoint_id))
        check_roots()
    if documents and documents[-1]["tree_size"] > tree.size:
        report.findings.append(Finding(
            "checkpoint", "checkpoint_leaves",
            f"checkpoint {documents[-1]['checkpoint']} signed {documents[-1]['tree_size']} "
            f"leaves; the log holds {tree.size}: leaves were removed"))
    for kind in recorded.values():
        for leaves in kind.values():
            leaves.sort(key=lambda item: item[0])
    return recorded


# --------------------------------------------------------------------------- entry point

def verify(engine: Engine, public: Ed25519PublicKey | None, jobs: int = 1) -> Report:
    """Everything above, on one consistent snapshot of the database; with ``jobs`` 2, the
    ledger and the audit trail are walked by two processes at once (each on its own snapshot,
    which holds everything it compares)."""
    started = time.perf_counter()
    if jobs > 1:
        url = engine.url.render_as_string(hide_password=False)
        raw = checkpoints.raw_public(public) if public is not None else None
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = [pool.submit(_part, url, raw, part) for part in (chain.LEDGER, chain.AUDIT)]
            report = _merge([part.result() for part in parts])
    else:
        report = Report()
        with transaction(engine) as session:
            recorded = _check_log(session, public, report)
            cross = _CrossCheck(report)
            _walk_ledger(session, recorded, report, cross)
            _walk_audit(session, recorded, report, cross)
            cross.finish()
    report.seconds = time.perf_counter() - started
    return report


def _walk_ledger(session: Session, recorded: dict, report: Report, cross: _CrossCheck) -> None:
    ledger = _Walker(chain.LEDGER, recorded[chain.LEDGER], report, cross)
    report.ledger_rows = ledger.feed(LEDGER_TABLE, _rows(session, ledger, IssuedNumber.__table__))
    ledger.finish(_heads(session)[0])


def _walk_audit(session: Session, recorded: dict, report: Report, cross: _CrossCheck) -> None:
    audit = _Walker(chain.AUDIT, recorded[chain.AUDIT], report, cross)
    for model in (AuditArchiveRow, AuditRow):
        report.audit_rows += audit.feed(model.__tablename__,
                                        _rows(session, audit, model.__table__))
    audit.finish(_heads(session)[1])


class _LedgerOnly(_CrossCheck):
    """The ledger's process leaves the comparison with the audit trail to the other one."""

    def ledger(self, _table: str, _row: tuple, _at: dict[str, int]) -> None:
        return None


_LIGHT = {"counter_key": 4, "document_number": 5, "issued_at": 6}


def _part(url: str, raw_public: bytes | None, part: str) -> Report:
    """One process's half of ``verify(jobs=2)``."""
    from docnum.shared.db import get_engine

    public = Ed25519PublicKey.from_public_bytes(raw_public) if raw_public else None
    report = Report()
    with transaction(get_engine(url)) as session:
        if part == chain.LEDGER:
            recorded = _check_log(session, public, report)
            _walk_ledger(session, recorded, report, _LedgerOnly(report))
        else:
            recorded = _check_log(session, None, Report())  # reported by the ledger's half
            cross = _CrossCheck(report)
            ledger = IssuedNumber.__table__
            for row in session.connection().execution_options(**_STREAM).execute(select(
                    ledger.c.id, ledger.c.id, ledger.c.state, ledger.c.source,
                    ledger.c.counter_key, ledger.c.document_number, ledger.c.issued_at)):
                cross.ledger(LEDGER_TABLE, row, _LIGHT)
            _walk_audit(session, recorded, report, cross)
            cross.finish()
    return report


def _merge(parts: list[Report]) -> Report:
    first, second = parts
    first.findings += second.findings
    first.audit_rows += second.audit_rows
    first.chains += second.chains
    return first


__all__ = ["Finding", "Report", "verify"]
