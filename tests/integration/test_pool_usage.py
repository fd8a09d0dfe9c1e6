"""``docnum_db_connection_pool_usage`` covers every engine ``get_engine`` makes — the shard
workers' and the DB-only path's (``pre_ping=False``) as well as the API's — in every process,
combined as the busiest live process (docs/operations.md#2-metrics)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from prometheus_client import multiprocess

from docnum.shared import metrics
from docnum.shared.db import get_engine
from tests.conftest import wait_for

CAPACITY = 20  # pool_size 10 + max_overflow 10 (shared/db.py make_engine)

HOLDER = textwrap.dedent("""
    import sys
    from docnum.shared.db import get_engine
    engine = get_engine(sys.argv[1], pre_ping=False)   # the allocation path's engine
    held = [engine.connect() for _ in range(int(sys.argv[2]))]
    print("held", flush=True)
    sys.stdin.readline()
    for conn in held:
        conn.close()
    print("released", flush=True)
    sys.stdin.readline()
""")


def test_every_engine_get_engine_makes_is_counted(database_url):
    gauge = metrics.db_connection_pool_usage
    allocation = get_engine(database_url, pre_ping=False)
    api = get_engine(database_url)
    assert allocation is not api
    held = [allocation.connect() for _ in range(5)]
    try:
        assert gauge._value.get() == pytest.approx(100 * 5 / CAPACITY)
        more = [api.connect() for _ in range(2)]
        # The busiest pool of the process, not the last one touched.
        assert gauge._value.get() == pytest.approx(25.0)
        for conn in more:
            conn.close()
        assert gauge._value.get() == pytest.approx(25.0)
    finally:
        for conn in held:
            conn.close()
    assert gauge._value.get() == 0


def _usage(directory: str) -> list[float]:
    families = multiprocess.MultiProcessCollector.merge(
        [os.path.join(directory, name) for name in os.listdir(directory)])
    return [s.value for f in families if f.name == "docnum_db_connection_pool_usage"
            for s in f.samples]


def test_the_gauge_is_the_busiest_live_process(database_url, tmp_path):
    """Two processes (say a shard worker and an API process) with their own pools, writing
    into one PROMETHEUS_MULTIPROC_DIR: /metrics reports the busier one, and a process that
    ended (mark_process_dead) stops counting."""
    directory = str(tmp_path / "metrics")
    os.makedirs(directory)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
    procs = [subprocess.Popen([sys.executable, "-c", HOLDER, database_url, str(n)], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for n in (6, 2)]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "held"
        assert _usage(directory) == [pytest.approx(100 * 6 / CAPACITY)]
        busy, other = procs
        busy.stdin.write("\n")
        busy.stdin.flush()
        assert busy.stdout.readline().strip() == "released"
        assert _usage(directory) == [pytest.approx(100 * 2 / CAPACITY)]
        busy.stdin.write("\n")
        busy.stdin.flush()
        busy.wait(10)
        multiprocess.mark_process_dead(busy.pid, directory)
        assert _usage(directory) == [pytest.approx(100 * 2 / CAPACITY)]
        other.stdin.write("\n\n")
        other.stdin.flush()
        other.wait(10)
        multiprocess.mark_process_dead(other.pid, directory)
        wait_for(lambda: _usage(directory) == [], timeout=5, message="no live process left")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
