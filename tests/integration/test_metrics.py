"""/metrics in one process: every metric of the guide, the scrape-time collectors, pool usage.

The cross-process summing (gunicorn + Celery worker processes) is in
tests/e2e/test_metrics_multiprocess.py.
"""
from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import redis as redis_lib
from kombu import Connection, Exchange, Producer, Queue
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, insert

from docnum.api.metrics_collectors import QueueDepthCollector, RedisQueueDepth
from docnum.shared import maintenance, metrics
from docnum.shared.clock import FixedClock
from docnum.shared.db import make_engine, transaction
from docnum.shared.models import Counter
from tests.conftest import BASE, letter, wait_for

#: Every metric the operations guide names (docs/operations.md#2-metrics; Prometheus family
#: names: counters without ``_total``).
GUIDE_METRICS = (
    "docnum_lock_acquisition_duration_ms", "docnum_lock_acquisition_failures",
    "docnum_lock_acquisition", "docnum_generation_duration_ms", "docnum_retry_count",
    "docnum_redis_connection_status", "docnum_db_connection_pool_usage", "docnum_queue_depth",
    "docnum_sequence_utilization", "docnum_reservations_expired",
)


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}


def samples(family, name: str | None = None, **labels: str) -> list:
    return [s for s in family.samples if (name is None or s.name == name)
            and all(s.labels.get(k) == v for k, v in labels.items())]


def test_metrics_lists_every_metric_after_issuing(client, auth, seed):
    seed()
    before = scrape(client)
    count_before = sum(s.value for s in samples(before["docnum_generation_duration_ms"],
                                                "docnum_generation_duration_ms_count"))
    for _ in range(3):
        response = client.post(f"{BASE}/generate?timeout=10", json=letter(), headers=auth())
        assert response.status_code == 201, response.get_data(as_text=True)
    def generations() -> float:
        family = scrape(client)["docnum_generation_duration_ms"]
        return sum(s.value for s in samples(family, "docnum_generation_duration_ms_count"))

    # The worker observes a generation right after it published the answer: wait for it.
    wait_for(lambda: generations() - count_before >= 3, timeout=10,
             message="the three generations in /metrics")
    families = scrape(client)
    missing = [name for name in GUIDE_METRICS if name not in families]
    assert not missing, missing
    assert samples(families["docnum_generation_duration_ms"], status="success")
    assert samples(families["docnum_lock_acquisition"], "docnum_lock_acquisition_total",
                   project="LCBP3", type="LETTER")
    assert samples(families["docnum_redis_connection_status"])[0].value == 1
    depths = {s.labels["queue"]: s.value for s in families["docnum_queue_depth"].samples}
    assert set(depths) == {f"docnum.shard.{i}" for i in range(4)} | {"docnum.maintenance"}
    usage = samples(families["docnum_db_connection_pool_usage"])[0].value
    assert 0 <= usage <= 100


def test_queue_depth_counts_every_priority_list_kombu_writes(redis_base_url):
    """Publish through kombu itself (with priorities) and read the depth back."""
    url = f"{redis_base_url}/12"
    name = f"docnum.test.{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name)
    client = redis_lib.Redis.from_url(url)
    try:
        with Connection(url) as conn:
            producer = Producer(conn)
            for priority in (None, 0, 2, 3, 5, 9, 9):
                options = {} if priority is None else {"priority": priority}
                producer.publish({"n": priority}, exchange=queue.exchange, routing_key=name,
                                 declare=[queue], **options)
        reader = RedisQueueDepth(client)
        stored = {key.decode() for key in client.keys(f"{name}*")}
        assert len(stored) > 1, "kombu should have spread the priorities over several lists"
        assert stored <= set(reader.keys(name))
        assert reader.depths([name, "docnum.absent"]) == {name: 7, "docnum.absent": 0}
        family = QueueDepthCollector(reader, [name]).collect()[0]
        assert [(s.labels, s.value) for s in family.samples] == [({"queue": name}, 7)]
    finally:
        for key in client.keys(f"{name}*") + client.keys(f"_kombu.binding*{name}*"):
            client.delete(key)


def test_queue_depth_without_broker_exports_no_samples():
    dead = RedisQueueDepth(redis_lib.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1))
    family = QueueDepthCollector(dead, ["docnum.shard.0"]).collect()[0]
    assert family.name == "docnum_queue_depth" and family.samples == []


def _counter(key: str, last: int, capacity: int) -> dict:
    return dict(counter_key=key, project=key.split("|")[0], last_sequence=last,
                capacity=capacity, updated_at=datetime(2025, 6, 1))


def test_utilization_reads_current_periods_only_and_caps_cardinality(engine):
    rows = [
        _counter("LCBP3|ORIGINATOR=A|Y2025", 9500, 9999),          # current year, 95 %
        _counter("LCBP3|ORIGINATOR=A|M2025-06", 10, 99),           # current month
        _counter("LCBP3|ORIGINATOR=A|FY2025", 1, 9999),            # fiscal year ending now
        _counter("LCBP3|ORIGINATOR=A|FY2026", 2, 9999),            # ... or next year
        _counter("LCBP3|CORR_TYPE=RFA|ALL", 50, 9999),             # never resets
        _counter("LCBP3|ORIGINATOR=A|Y2024", 9999, 9999),          # last year: ended
        _counter("LCBP3|ORIGINATOR=A|M2025-04", 99, 99),           # two months ago: ended
    ]
    with transaction(engine) as session:
        session.execute(insert(Counter), rows)
    clock = FixedClock(datetime(2025, 6, 15, 12, 0, tzinfo=UTC))
    result = maintenance.refresh_utilization(engine, clock)
    values = metrics.sequence_utilization.values()
    assert set(values) == {r["counter_key"] for r in rows[:5]}
    assert values["LCBP3|ORIGINATOR=A|Y2025"] == pytest.approx(9500 / 9999)
    assert result == {"counters": 5, "above_90": 1, "max": round(9500 / 9999, 4)}
    # The cap keeps the fullest ones.
    maintenance.refresh_utilization(engine, clock, limit=2)
    assert set(metrics.sequence_utilization.values()) == {"LCBP3|ORIGINATOR=A|Y2025",
                                                          "LCBP3|ORIGINATOR=A|M2025-06"}
    # A refresh replaces the whole set: a counter that is gone is no longer exported.
    with transaction(engine) as session:
        session.execute(delete(Counter).where(Counter.counter_key.like("%|M2025-06")))
    maintenance.refresh_utilization(engine, clock, limit=2)
    family = metrics.sequence_utilization.collect()[0]
    assert [s.labels["counter_key"] for s in family.samples] == [
        "LCBP3|CORR_TYPE=RFA|ALL", "LCBP3|ORIGINATOR=A|Y2025"]


def test_current_periods_cover_every_time_zone():
    from datetime import date

    periods = maintenance.current_periods(date(2025, 12, 31))
    assert {"Y2025", "Y2026", "M2025-12", "M2026-01", "FY2025", "FY2026", "FY2027",
            "ALL"} == set(periods)


def test_pool_usage_follows_checkouts(database_url):
    engine = make_engine(database_url, pool_size=2)  # capacity 2 + 10 overflow = 12
    try:
        metrics.track_pool(engine)
        gauge = metrics.db_connection_pool_usage
        held = [engine.connect() for _ in range(3)]
        assert gauge._value.get() == pytest.approx(100 * 3 / 12)
        for conn in held:
            conn.close()
        assert gauge._value.get() == 0
        assert metrics.refresh_pool_usage() == 0
    finally:
        engine.dispose()


def test_embedded_default_reads_queue_depth_from_the_sql_broker(tmp_path):
    """No Redis server binary: the queue lives in kombu's SQLAlchemy transport (SQLite), and the
    depth too. (Named outright: this machine has a redis-server, which the default would use.)"""
    from docnum.api.app import create_app
    from docnum.shared.migrate import upgrade
    from docnum.shared.settings import load_settings

    var = tmp_path / "var"
    settings = load_settings({"DOCNUM_VAR_DIR": str(var), "DOCNUM_JWT_SECRET": "x" * 40,
                              "DOCNUM_QUEUE_SHARDS": "2",
                              "DOCNUM_BROKER_URL": f"sqla+sqlite:///{var / 'broker.sqlite'}"})
    assert settings.sql_broker_fallback
    upgrade(settings.database_url)
    app = create_app(settings)
    client = app.test_client()
    depths = {s.labels["queue"]: s.value for s in scrape(client)["docnum_queue_depth"].samples}
    assert depths == {"docnum.shard.0": 0, "docnum.shard.1": 0, "docnum.maintenance": 0}
    celery = app.extensions["docnum"].celery
    for _ in range(2):
        celery.send_task("docnum.allocate", args=[[]], queue="docnum.shard.1")
    families = scrape(client)
    depths = {s.labels["queue"]: s.value for s in families["docnum_queue_depth"].samples}
    assert depths == {"docnum.shard.0": 0, "docnum.shard.1": 2, "docnum.maintenance": 0}
    assert samples(families["docnum_redis_connection_status"])[0].value == 1
