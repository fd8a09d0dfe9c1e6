"""The database ceiling for one number per transaction on one hot counter (``scripts/db_ceiling``).

N threads, each with its own connection, loop: BEGIN; SELECT … FOR UPDATE the counter row;
UPDATE it; INSERT one ledger row; COMMIT. Runs on the real schema in a fresh project so it
competes with nothing; prints commits per second.
"""
from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from datetime import UTC, datetime

from sqlalchemy import insert, select, update

from docnum.shared.db import get_engine
from docnum.shared.models import Counter, IssuedNumber
from docnum.shared.settings import get_settings


def measure(database_url: str, connections: int, seconds: float) -> dict:
    engine = get_engine(database_url)
    project = f"DC{uuid.uuid4().hex[:8].upper()}"
    key = f"{project}|ALL"
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(insert(Counter).values(counter_key=key, project=project, last_sequence=0,
                                            capacity=10**9 - 1, updated_at=now))
    done = [0] * connections
    stop = time.perf_counter() + seconds

    def loop(slot: int) -> None:
        with engine.connect() as conn:
            while time.perf_counter() < stop:
                with conn.begin():
                    last = conn.execute(select(Counter.last_sequence)
                                        .where(Counter.counter_key == key)
                                        .with_for_update()).scalar_one()
                    conn.execute(update(Counter).where(Counter.counter_key == key)
                                 .values(last_sequence=last + 1))
                    conn.execute(insert(IssuedNumber).values(
                        document_number=f"{project}-{last + 1:09d}", project=project,
                        counter_key=key, sequence=last + 1, state="CONFIRMED",
                        source="GENERATE", request_id=str(uuid.uuid4()), issued_by="ceiling",
                        issued_at=now))
                done[slot] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return {"connections": connections, "seconds": round(elapsed, 2), "commits": sum(done),
            "commits_per_s": round(sum(done) / elapsed, 1), "project": project}


def main(argv: list[str]) -> int:
    connections = int(argv[0]) if argv else 4
    seconds = float(argv[1]) if len(argv) > 1 else 10.0
    print(json.dumps(measure(get_settings().database_url, connections, min(seconds, 120))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
