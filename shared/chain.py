"""Hash chains over the ledger and the audit trail: the canonical encoding of a row and the link
from one row to the next (docs/verification.md says the same in words a third party can
reimplement).

Every counter key has two chains, one through its ledger rows and one through its audit rows;
rows without a counter key form one ledger chain and one audit chain of their own. A row's
``row_hash`` is ``SHA-256(previous row's hash ‖ canonical encoding of the row)``, the first row of
a chain following 32 zero bytes, and the chain's head (its length and last hash) is kept with
the counter row, so changing, removing, inserting or reordering a row breaks the chain.

Pure functions only; the database side is ``shared/chain_store.py`` (and, on the issuing path,
``shared/allocation.py``, which stamps a batch with ``stamp_batch``).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

GENESIS = bytes(32)
LEDGER = "ledger"
AUDIT = "audit"
KINDS = (LEDGER, AUDIT)

LEDGER_TYPE = "docnum.ledger.v1"
AUDIT_TYPE = "docnum.audit.v1"

#: The ledger columns a row's hash covers: everything fixed when the number is issued. State,
#: reason, document_ref and replaced_by change later and are covered by the audit rows instead.
LEDGER_FIELDS = ("chain_pos", "document_number", "project", "counter_key", "sequence", "source",
                 "config_id", "config_version", "template", "correspondence_type", "originator",
                 "recipient", "sub_type", "rfa_type", "discipline", "revision", "document_date",
                 "request_id", "issued_by", "issued_at", "replaces")
#: Audit rows are never changed: the hash covers every column but ``id`` and ``row_hash``.
AUDIT_FIELDS = ("chain_pos", "operation", "actor", "client_ip", "user_agent", "request_id",
                "counter_key", "document_number", "before", "after", "lock_wait_ms",
                "duration_ms", "retry_count", "fallback_used", "success", "error_code",
                "created_at")

_sha256 = hashlib.sha256
# Canonical JSON (RFC 8785 for the values docnum stores: strings, integers, booleans, null and
# objects with ASCII keys): sorted keys, no whitespace, UTF-8, minimal escaping. The C encoder
# does it in one call.
_canonical = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                              allow_nan=False).encode
# The same, for an object whose keys are in order already and whose values are scalars.
_in_order = json.JSONEncoder(ensure_ascii=False, sort_keys=False, separators=(",", ":"),
                             allow_nan=False).encode


def timestamp(value: datetime) -> str:
    """A stored DATETIME (naive UTC) as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, always 6 digits."""
    return value.isoformat(timespec="microseconds") + "Z"


def _value(value: object) -> object:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def canonical(obj: object) -> bytes:
    """Canonical JSON bytes of a JSON-able value (dates and datetimes must be strings already)."""
    return _canonical(obj).encode()


# The row encodings run for every row the allocator writes and every row ``docnum verify``
# reads: the values are taken in sorted key order (``docnum verify`` reads the columns in that
# order), the few that are not JSON already are converted by position, and the object is
# encoded in one call of the C encoder. The same bytes as ``reference_encoding`` (which
# tests/unit/test_chain.py checks), without converting and sorting field by field.
class _Encoding:
    def __init__(self, fields: tuple[str, ...], type_name: str,
                 convert: dict[str, Callable[[Any], object]], *, nested: bool) -> None:
        # Values that are JSON objects themselves (an audit row's before and after) need their
        # keys sorted too; a row of scalars is encoded as its keys come, sorted here once.
        self._encode = _canonical if nested else _in_order
        self.keys = sorted((*fields, "type"))
        self.columns = tuple(k for k in self.keys if k != "type")  # the values, in order
        self._type_at = self.keys.index("type")
        self._type_name = type_name
        self._convert = [(self.columns.index(name), fn) for name, fn in convert.items()]

    def values(self, values: Iterable[object]) -> bytes:
        """The encoding of a row given as its values in ``columns`` order."""
        values = list(values)
        for index, convert in self._convert:
            value = values[index]
            if value is not None:
                values[index] = convert(value)
        values.insert(self._type_at, self._type_name)
        return self._encode(dict(zip(self.keys, values, strict=True))).encode()

    def __call__(self, row: Mapping[str, object]) -> bytes:
        """The encoding of a row given as a mapping of column names."""
        return self.values([row[name] for name in self.columns])


def _timestamp_of(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return timestamp(value)


#: The canonical encoding of a ledger row (a dict or anything with the columns as keys).
ledger_encoding = _Encoding(LEDGER_FIELDS, LEDGER_TYPE,
                            {"issued_at": _timestamp_of, "document_date": date.isoformat},
                            nested=False)
#: ... and of an audit row (``success`` is a boolean whatever the driver returns).
audit_encoding = _Encoding(AUDIT_FIELDS, AUDIT_TYPE,
                           {"created_at": _timestamp_of, "success": bool}, nested=True)


def reference_encoding(row: Mapping[str, object], kind: str) -> bytes:
    """The definition the fast encoders must match: the row's object as canonical JSON."""
    obj = {name: _value(row[name]) for name in (LEDGER_FIELDS if kind == LEDGER
                                                 else AUDIT_FIELDS)}
    if kind == AUDIT:
        obj["success"] = bool(obj["success"])
    obj["type"] = LEDGER_TYPE if kind == LEDGER else AUDIT_TYPE
    return _canonical(obj).encode()


ENCODERS: dict[str, _Encoding] = {
    LEDGER: ledger_encoding, AUDIT: audit_encoding}


def link(previous: bytes, encoding: bytes) -> bytes:
    """The hash of a row: SHA-256 of the previous row's hash (32 bytes) and its encoding."""
    return _sha256(previous + encoding).digest()


@dataclass
class Head:
    """A chain's length (rows so far) and the hash of its last row (``GENESIS`` when empty)."""

    length: int = 0
    hash: bytes = GENESIS

    @classmethod
    def of(cls, length: int | None, head: bytes | None) -> Head:
        return cls(int(length or 0), bytes(head) if head else GENESIS)

    def stored(self) -> bytes | None:
        """The head as the database holds it (NULL for an empty chain)."""
        return self.hash if self.length else None


def stamp(rows: Iterable[dict], kind: str, heads: Mapping[str | None, Head]) -> None:
    """Give each row its ``chain_pos`` and ``row_hash`` on the chain of its ``counter_key``,
    advancing ``heads`` (keyed by counter key, None for the keyless chain) in place."""
    encode = ENCODERS[kind]
    for row in rows:
        head = heads[row["counter_key"]]
        head.length += 1
        row["chain_pos"] = head.length
        head.hash = row["row_hash"] = _sha256(head.hash + encode(row)).digest()


def stamp_batch(ledger_rows: list[dict], audit_rows: list[dict],
                counters: Mapping[str, Mapping[str, object]]) -> dict[str, dict[str, object]]:
    """Chain one allocation batch: every row's counter is in ``counters`` (locked rows with the
    four head columns). Returns, per counter key, the head columns to write back."""
    ledger = {key: Head.of(c["ledger_length"], c["ledger_head"]) for key, c in counters.items()}
    audit = {key: Head.of(c["audit_length"], c["audit_head"]) for key, c in counters.items()}
    stamp(ledger_rows, LEDGER, ledger)
    stamp(audit_rows, AUDIT, audit)
    return {key: head_columns(ledger[key], audit[key]) for key in counters}


# The counter row's columns that hold its two chains' heads.
HEAD_COLUMNS = ("ledger_length", "ledger_head", "audit_length", "audit_head")


def head_columns(ledger: Head, audit: Head) -> dict[str, object]:
    return {"ledger_length": ledger.length, "ledger_head": ledger.stored(),
            "audit_length": audit.length, "audit_head": audit.stored()}


def leaf_encoding(kind: str, counter_key: str | None, length: int, head: bytes) -> bytes:
    """What a leaf of the checkpoint log records: one chain's head at one length."""
    return canonical({"type": "docnum.leaf.v1", "chain": kind, "counter_key": counter_key,
                      "length": length, "head": head.hex()})


def chain_name(kind: str, counter_key: str | None) -> str:
    return f"{kind} chain of {counter_key}" if counter_key else f"{kind} chain without a counter"


__all__ = ["AUDIT", "AUDIT_FIELDS", "GENESIS", "HEAD_COLUMNS", "KINDS", "LEDGER",
           "LEDGER_FIELDS", "Head", "audit_encoding", "canonical", "chain_name", "head_columns",
           "leaf_encoding", "ledger_encoding", "link", "stamp", "stamp_batch", "timestamp"]
