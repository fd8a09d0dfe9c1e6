"""The hash-chain migration (0003) on a database with history: the rows written before hash
chains get their chains, verification holds, and the first checkpoint says the chains were
computed later."""
from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from docnum.shared import checkpoints
from docnum.shared.clock import SystemClock
from docnum.shared.db import dispose_engines, get_engine
from docnum.shared.migrate import downgrade, upgrade
from docnum.shared.verify import verify
from tests.conftest import throwaway_database

KEY = "LCBP3|ORIGINATOR=คคง.|RECIPIENT=สคฉ.3|Y2025"
T = datetime(2025, 6, 15, 2, 30, 0, 123456)


@contextmanager
def database_at_0001(server_db_url: str, backend: str, tmp_path):
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.sqlite'}"
        upgrade(url, "0001")
        yield url
        dispose_engines(url)
        return
    with throwaway_database(server_db_url, "docnum_mig", revision="0001") as url:
        yield url


LEDGER = ("INSERT INTO document_numbers (document_number, project, counter_key, sequence, state,"
          " source, config_id, config_version, template, correspondence_type, originator,"
          " recipient, document_date, request_id, issued_by, issued_at) VALUES (:n, 'LCBP3',"
          " :k, :s, :state, :source, 1, 1, 'T', 'LETTER', 'คคง.', 'สคฉ.3', '2025-06-15', :r,"
          " 'alice', :t)")
AUDIT = ("INSERT INTO {table} (id, operation, actor, request_id, counter_key, document_number,"
         " `before`, `after`, retry_count, fallback_used, success, created_at) VALUES (:id, :op,"
         " 'alice', :r, :k, :n, :b, :a, 0, 'NONE', :ok, :t)")


def history(url: str) -> None:
    with get_engine(url).begin() as conn:
        conn.execute(text("INSERT INTO counters (counter_key, project, last_sequence, capacity,"
                          " updated_at) VALUES (:k, 'LCBP3', 2, 9999, :t)"), {"k": KEY, "t": T})
        for seq, source in ((1, "GENERATE"), (2, "GENERATE")):
            conn.execute(text(LEDGER), {"n": f"คคง.-สคฉ.3-000{seq}-2568", "k": KEY, "s": seq,
                                        "state": "CONFIRMED", "source": source,
                                        "r": f"req-{seq}", "t": T})
        conn.execute(text(LEDGER), {"n": "OLD/2019/001", "k": None, "s": None,
                                    "state": "CONFIRMED", "source": "MANUAL", "r": "req-3",
                                    "t": T})
        rows = [
            ("audit_log_archive", 1, "GENERATE", "req-1", KEY, "คคง.-สคฉ.3-0001-2568", True),
            ("audit_log", 2, "GENERATE", "req-2", KEY, "คคง.-สคฉ.3-0002-2568", True),
            ("audit_log", 3, "MANUAL_OVERRIDE", "req-3", None, "OLD/2019/001", True),
            ("audit_log", 4, "CONFIG_CREATE", "req-4", None, None, True),
            # A failure on a counter that never issued anything: no counter row holds it.
            ("audit_log", 5, "GENERATE", "req-5", "LCBP3|ORIGINATOR=TEAM-A|Y2025", None, False),
        ]
        for table, id_, op, rid, key, number, ok in rows:
            conn.execute(text(AUDIT.format(table=table)), {
                "id": id_, "op": op, "r": rid, "k": key, "n": number, "ok": ok, "t": T,
                "b": '{"last_sequence": 0}', "a": '{"state": "CONFIRMED", "note": "ไทย"}'})


@pytest.mark.parametrize("backend", ["mariadb", "sqlite"])
def test_existing_rows_are_chained_and_the_first_checkpoint_says_so(server_db_url, backend,
                                                                    tmp_path):
    with database_at_0001(server_db_url, backend, tmp_path) as url:
        history(url)
        upgrade(url)
        engine = get_engine(url)
        with engine.begin() as conn:
            chained = conn.execute(text("SELECT counter_key, chain_pos FROM document_numbers "
                                        "ORDER BY id")).all()
            heads = conn.execute(text("SELECT ledger_length, audit_length FROM counters "
                                      "ORDER BY counter_key")).all()
        assert [tuple(r) for r in chained] == [(KEY, 1), (KEY, 2), (None, 1)]
        assert [tuple(r) for r in heads] == [(0, 1), (2, 2)]  # TEAM-A: made for its failure
        key = Ed25519PrivateKey.generate()
        assert verify(engine, key.public_key()).findings == []
        first = checkpoints.make_checkpoint(engine, key, SystemClock())
        [note] = first["note"]["backfilled"]
        assert (note["ledger_rows"], note["audit_rows"]) == (3, 5)
        assert "computed when the database was migrated" in note["statement"]
        report = verify(engine, key.public_key())
        assert report.ok and report.checkpoints == 1 and report.signatures_checked
        # Said once: the next checkpoint has nothing to add.
        assert checkpoints.make_checkpoint(engine, key, SystemClock()) is None
        downgrade(url, "0001")
        upgrade(url)  # and back: the backfill is repeatable
        assert verify(engine, None).findings == []
