#!/usr/bin/env python3
"""How long ``docnum verify`` takes on a large ledger (docs/benchmarks.md, "Verification").

Creates a throwaway MariaDB database, fills it with N ledger rows and their N GENERATE audit
rows, chained exactly as the allocator chains them (``shared/chain.py``), spread over K
counters; signs the first checkpoint (which walks every chain once); then runs the full
verification and prints one JSON line. The database is dropped afterwards.

Usage: .venv/bin/python scripts/bench_verify.py [--rows 1000000] [--counters 64]
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, text, update
from sqlalchemy.engine import make_url

from docnum.shared import chain, checkpoints
from docnum.shared.clock import SystemClock
from docnum.shared.db import dispose_engines, get_engine
from docnum.shared.migrate import upgrade
from docnum.shared.models import AuditRow, Counter, IssuedNumber
from docnum.shared.verify import verify

BATCH = 5000


def fill(url: str, rows: int, counters: int) -> float:
    engine = get_engine(url)
    started = time.perf_counter()
    base = datetime(2025, 6, 15, 1, 0, tzinfo=UTC).replace(tzinfo=None)
    keys = [f"LCBP3|ORIGINATOR=ORG{k:02d}|RECIPIENT=สคฉ.3|Y2025" for k in range(counters)]
    ledger_heads = {key: chain.Head() for key in keys}
    audit_heads = {key: chain.Head() for key in keys}
    sequences = dict.fromkeys(keys, 0)
    with engine.begin() as conn:
        conn.execute(Counter.__table__.insert(), [
            {"counter_key": key, "project": "LCBP3", "last_sequence": 0, "capacity": 999999,
             "updated_at": base} for key in keys])
    done = 0
    while done < rows:
        ledger, audit = [], []
        for i in range(done, min(done + BATCH, rows)):
            key = keys[i % counters]
            sequence = sequences[key] = sequences[key] + 1
            issued = base + timedelta(milliseconds=i)
            number = f"ORG{i % counters:02d}-สคฉ.3-{sequence:06d}-2568"
            request_id = str(uuid.UUID(int=i))
            context = {"project": "LCBP3", "correspondence_type": "LETTER",
                       "originator": f"ORG{i % counters:02d}", "recipient": "สคฉ.3",
                       "sub_type": None, "rfa_type": None, "discipline": None,
                       "revision": None, "document_date": "2025-06-15", "document_ref": None}
            ledger.append(dict(
                document_number=number, project="LCBP3", counter_key=key, sequence=sequence,
                state="CONFIRMED", source="GENERATE", config_id=1, config_version=1,
                template="{ORIGINATOR}-{RECIPIENT}-{SEQ:6}-{YEAR:B.E.}",
                correspondence_type="LETTER", originator=f"ORG{i % counters:02d}",
                recipient="สคฉ.3", sub_type=None, rfa_type=None, discipline=None,
                revision=None, document_date=date(2025, 6, 15), document_ref=None,
                request_id=request_id, idempotency_client=None, idempotency_key=None,
                idempotency_fingerprint=None, issued_by="bench", issued_at=issued,
                reservation_token=None, reservation_expires_at=None, replaces=None))
            audit.append(dict(
                operation="GENERATE", actor="bench", client_ip="127.0.0.1",
                user_agent="bench_verify", request_id=request_id, counter_key=key,
                document_number=number, before={"last_sequence": sequence - 1},
                after={"last_sequence": sequence, "state": "CONFIRMED", "context": context,
                       "config_version": 1},
                lock_wait_ms=1, duration_ms=3, retry_count=0, fallback_used="NONE",
                success=True, error_code=None, created_at=issued))
        chain.stamp(ledger, chain.LEDGER, ledger_heads)
        chain.stamp(audit, chain.AUDIT, audit_heads)
        with engine.begin() as conn:
            conn.execute(IssuedNumber.__table__.insert(), ledger)
            conn.execute(AuditRow.__table__.insert(), audit)
        done += len(ledger)
    with engine.begin() as conn:
        for key in keys:
            conn.execute(update(Counter).where(Counter.counter_key == key).values(
                last_sequence=sequences[key],
                **chain.head_columns(ledger_heads[key], audit_heads[key])))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--counters", type=int, default=64)
    parser.add_argument("--server", default="mysql+mysqldb://root@127.0.0.1:3306/mysql"
                                            "?charset=utf8mb4")
    args = parser.parse_args()
    name = f"docnum_bench_verify_{secrets.token_hex(3)}"
    admin = create_engine(args.server)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 "
                          "COLLATE utf8mb4_bin"))
    url = make_url(args.server).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        fill_s = fill(url, args.rows, args.counters)
        key = Ed25519PrivateKey.generate()
        started = time.perf_counter()
        made = checkpoints.make_checkpoint(get_engine(url), key, SystemClock())
        checkpoint_s = time.perf_counter() - started
        cpu = time.process_time()
        report = verify(get_engine(url), key.public_key())
        cpu = time.process_time() - cpu
        parallel = verify(get_engine(url), key.public_key(), jobs=2)
        print(json.dumps({
            "rows": args.rows, "counters": args.counters, "fill_s": round(fill_s, 1),
            "first_checkpoint_s": round(checkpoint_s, 1),
            "checkpoint_leaves": made["tree_size"] if made else 0,
            "verify_s": round(report.seconds, 1), "verify_cpu_s": round(cpu, 1),
            "verify_jobs2_s": round(parallel.seconds, 1),
            "load_average": os.getloadavg()[0],
            "ledger_rows_per_s": round(report.ledger_rows / report.seconds),
            "ledger_rows": report.ledger_rows, "audit_rows": report.audit_rows,
            "findings": len(report.findings)}))
        return 0 if report.ok and parallel.ok else 1
    finally:
        dispose_engines(url)
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))


if __name__ == "__main__":
    sys.exit(main())
