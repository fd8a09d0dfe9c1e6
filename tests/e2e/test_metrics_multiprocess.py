"""The API's /metrics sums every process: two gunicorn workers and a Celery worker process, all
writing into one PROMETHEUS_MULTIPROC_DIR (what `docnum up` sets up)."""
from __future__ import annotations

import uuid

import pytest
import requests
from prometheus_client import multiprocess
from prometheus_client.parser import text_string_to_metric_families

from docnum.shared.auth import mint_token
from tests.conftest import ALL_PERMS, BASE, letter, make_settings, wait_for
from tests.e2e.service import RedisServer, Service, docnum_env, free_port
from tests.integration.test_metrics import GUIDE_METRICS

pytestmark = pytest.mark.e2e

N = 12


def generation_count(families) -> float:
    return sum(s.value for f in families if f.name == "docnum_generation_duration_ms"
               for s in f.samples if s.name == "docnum_generation_duration_ms_count")


def test_metrics_sum_gunicorn_and_worker_processes(database_url, seed, tmp_path):
    seed()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    with RedisServer(tmp_path / "redis") as redis:
        exporter_port = free_port()
        env = docnum_env(database_url, redis.url(0), redis.url(1), tmp_path / "var",
                         PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
                         DOCNUM_WORKER_METRICS_PORT=str(exporter_port))
        token = mint_token(make_settings(database_url, redis.url(0), redis.url(1),
                                         tmp_path / "var"), "alice", ALL_PERMS, [], 600)
        with Service(env, tmp_path / "logs", api_workers=2, workers=["0,1,2,3"]) as svc:
            numbers = []
            for _ in range(N):
                response = svc.post(f"{BASE}/generate?timeout=20", json=letter(), headers={
                    "Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex})
                assert response.status_code == 201, response.text
                numbers.append(response.json()["sequence"])
            assert numbers == list(range(1, N + 1))

            def scrape() -> list:
                scraped = svc.get("/metrics")
                assert scraped.status_code == 200, scraped.text
                return list(text_string_to_metric_families(scraped.text))

            # The worker observes each generation just after it published the answer.
            wait_for(lambda: generation_count(scrape()) >= N, timeout=10,
                     message=f"{N} generations in the API's /metrics")
            families = scrape()
            names = {f.name for f in families}
            assert not [m for m in GUIDE_METRICS if m not in names], sorted(names)

            # The generations were observed in the worker process, not in gunicorn: its own
            # file alone holds them, and the API's /metrics reported them.
            worker_pid = svc.processes["worker[0,1,2,3]"].popen.pid
            worker_file = metrics_dir / f"histogram_{worker_pid}.db"
            assert worker_file.exists(), sorted(p.name for p in metrics_dir.iterdir())
            assert generation_count(multiprocess.MultiProcessCollector.merge(
                [str(worker_file)])) >= N

            by_name = {f.name: f for f in families}
            assert by_name["docnum_redis_connection_status"].samples[0].value == 1
            depths = {s.labels["queue"]: s.value for s in by_name["docnum_queue_depth"].samples}
            assert depths == {**{f"docnum.shard.{i}": 0 for i in range(4)},
                              "docnum.maintenance": 0}
            usage = by_name["docnum_db_connection_pool_usage"].samples
            assert len(usage) == 1 and 0 <= usage[0].value <= 100
            # Lock metrics come from the same allocation in the worker.
            locks = sum(s.value for s in by_name["docnum_lock_acquisition"].samples
                        if s.name == "docnum_lock_acquisition_total")
            assert locks >= N
            # The worker's own exporter (for a worker that shares no directory with an API)
            # serves exactly its own samples: the generations, no queue depth, no API gauge.
            own = requests.get(f"http://127.0.0.1:{exporter_port}/metrics", timeout=5)
            own_families = list(text_string_to_metric_families(own.text))
            assert generation_count(own_families) == generation_count(
                multiprocess.MultiProcessCollector.merge([str(worker_file)]))
            assert "docnum_queue_depth" not in {f.name for f in own_families}
            assert not [s for f in own_families if f.name == "docnum_redis_connection_status"
                        for s in f.samples], "the worker never sets the Redis status"

            assert (metrics_dir / f"gauge_livemax_{worker_pid}.db").exists()
            codes = svc.stop()
    assert codes == {"api": 0, "worker[0,1,2,3]": 0}
    # A cleanly stopped worker drops its live gauge (pool usage) but keeps its counters.
    assert not (metrics_dir / f"gauge_livemax_{worker_pid}.db").exists()
    assert worker_file.exists()
