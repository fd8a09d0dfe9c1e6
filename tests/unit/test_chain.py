"""Canonical encodings and hash chains (docs/verification.md): the worked example of the docs,
the fast encoders against the definition, and what a change to a row does to its chain."""
from __future__ import annotations

import json
from datetime import UTC, date, datetime

from hypothesis import given
from hypothesis import strategies as st

from docnum.shared import chain, merkle

# The worked example of docs/verification.md, byte for byte.
EXAMPLE = dict(
    chain_pos=1, document_number="คคง.-สคฉ.3-0001-2568", project="LCBP3",
    counter_key="LCBP3|ORIGINATOR=คคง.|RECIPIENT=สคฉ.3|Y2025", sequence=1, source="GENERATE",
    config_id=1, config_version=1, template="{ORIGINATOR}-{RECIPIENT}-{SEQ:4}-{YEAR:B.E.}",
    correspondence_type="LETTER", originator="คคง.", recipient="สคฉ.3", sub_type=None,
    rfa_type=None, discipline=None, revision=None, document_date=date(2025, 6, 15),
    request_id="3f1c2a9e-8b7d-4c6a-9e8b-7d4c6a3f1c2a", issued_by="alice",
    issued_at=datetime(2025, 6, 15, 2, 30, 0, 123456), replaces=None)
EXAMPLE_ENCODING = (
    '{"chain_pos":1,"config_id":1,"config_version":1,"correspondence_type":"LETTER",'
    '"counter_key":"LCBP3|ORIGINATOR=คคง.|RECIPIENT=สคฉ.3|Y2025","discipline":null,'
    '"document_date":"2025-06-15","document_number":"คคง.-สคฉ.3-0001-2568",'
    '"issued_at":"2025-06-15T02:30:00.123456Z","issued_by":"alice","originator":"คคง.",'
    '"project":"LCBP3","recipient":"สคฉ.3","replaces":null,'
    '"request_id":"3f1c2a9e-8b7d-4c6a-9e8b-7d4c6a3f1c2a","revision":null,"rfa_type":null,'
    '"sequence":1,"source":"GENERATE","sub_type":null,'
    '"template":"{ORIGINATOR}-{RECIPIENT}-{SEQ:4}-{YEAR:B.E.}","type":"docnum.ledger.v1"}')
EXAMPLE_HASH = "791b2b9d26ee478870e1792a1952235c7d84abe9d16664c201bce51b84ff8c3d"
SECOND = dict(EXAMPLE, chain_pos=2, document_number="คคง.-สคฉ.3-0002-2568", sequence=2,
              request_id="0b9f8e7d-6c5b-4a39-8877-665544332211",
              issued_at=datetime(2025, 6, 15, 2, 31, 5))
SECOND_HASH = "46612c837bea8dc150613749f5d16c721d4993bce6706bf62b56d26f22dfff63"
LEAF_HASH = "64afb222115fa81299ab0caed63899d377996aa85ea62538552a368b1b9a326e"


def test_the_worked_example_of_the_docs():
    encoding = chain.ledger_encoding(EXAMPLE)
    assert encoding == EXAMPLE_ENCODING.encode() and len(encoding) == 616
    assert encoding[:12].hex() == "7b22636861696e5f706f7322"  # {"chain_pos"
    first = chain.link(chain.GENESIS, encoding)
    assert first.hex() == EXAMPLE_HASH
    second = chain.link(first, chain.ledger_encoding(SECOND))
    assert second.hex() == SECOND_HASH
    leaf = chain.leaf_encoding(chain.LEDGER, EXAMPLE["counter_key"], 2, second)
    assert merkle.leaf_hash(leaf).hex() == LEAF_HASH


def test_stamp_numbers_and_links_rows_per_counter():
    rows = [dict(EXAMPLE), dict(SECOND), dict(EXAMPLE, counter_key="OTHER", chain_pos=None)]
    heads = {EXAMPLE["counter_key"]: chain.Head(), "OTHER": chain.Head()}
    chain.stamp(rows, chain.LEDGER, heads)
    assert [r["chain_pos"] for r in rows] == [1, 2, 1]
    assert rows[1]["row_hash"].hex() == SECOND_HASH
    assert heads[EXAMPLE["counter_key"]] == chain.Head(2, bytes.fromhex(SECOND_HASH))
    assert heads["OTHER"].length == 1 and chain.Head().stored() is None


texts = st.one_of(st.none(), st.text(max_size=12))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**53, 2**53), st.text(max_size=8)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(alphabet="abcdefghij_", max_size=6), inner, max_size=3), max_leaves=8)
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1))


@st.composite
def ledger_rows(draw: st.DrawFn) -> dict:
    row = {name: draw(texts) for name in chain.LEDGER_FIELDS}
    for name in ("chain_pos", "sequence", "config_id", "config_version"):
        row[name] = draw(st.one_of(st.none(), st.integers(0, 10**12)))
    row["document_date"] = draw(st.one_of(st.none(), st.dates()))
    row["issued_at"] = draw(moments)
    return row


@st.composite
def audit_rows(draw: st.DrawFn) -> dict:
    row = {name: draw(texts) for name in chain.AUDIT_FIELDS}
    for name in ("chain_pos", "lock_wait_ms", "duration_ms", "retry_count"):
        row[name] = draw(st.one_of(st.none(), st.integers(0, 10**9)))
    row["before"], row["after"] = draw(json_values), draw(json_values)
    row["success"] = draw(st.sampled_from([True, False, 0, 1]))
    row["created_at"] = draw(moments)
    return row


@given(ledger_rows())
def test_fast_ledger_encoding_is_the_canonical_json_of_the_row(row):
    encoding = chain.ledger_encoding(row)
    assert encoding == chain.reference_encoding(row, chain.LEDGER)
    parsed = json.loads(encoding)
    assert list(parsed) == sorted(parsed) and parsed["type"] == chain.LEDGER_TYPE
    assert parsed["issued_at"].endswith("Z") and len(parsed["issued_at"]) == 27


@given(audit_rows())
def test_fast_audit_encoding_is_the_canonical_json_of_the_row(row):
    assert chain.audit_encoding(row) == chain.reference_encoding(row, chain.AUDIT)
    assert json.loads(chain.audit_encoding(row))["success"] is bool(row["success"])


@given(ledger_rows(), st.sampled_from(chain.LEDGER_FIELDS), st.data())
def test_any_change_to_a_covered_field_changes_the_hash(row, name, data):
    changed = dict(row)
    if name in ("issued_at",):
        changed[name] = row[name].replace(year=row[name].year % 2000 + 2001)
    elif name == "document_date":
        changed[name] = date(1999, 1, 1) if row[name] != date(1999, 1, 1) else None
    elif name in ("chain_pos", "sequence", "config_id", "config_version"):
        changed[name] = (row[name] or 0) + 1
    else:
        changed[name] = (row[name] or "") + data.draw(st.text(min_size=1, max_size=3))
    before = chain.link(chain.GENESIS, chain.ledger_encoding(row))
    assert chain.link(chain.GENESIS, chain.ledger_encoding(changed)) != before


def test_aware_datetimes_are_encoded_in_utc():
    aware = datetime(2025, 6, 15, 9, 30, 0, 123456, tzinfo=UTC)
    naive = aware.replace(tzinfo=None)
    assert chain.ledger_encoding(dict(EXAMPLE, issued_at=aware)) == \
        chain.ledger_encoding(dict(EXAMPLE, issued_at=naive))
