"""Prometheus metrics, named exactly as the operations guide (§3.1) names them.

Multiprocess-safe: when ``PROMETHEUS_MULTIPROC_DIR`` is set (by ``docnum up``/``docnum api`` and
the worker start-up, never by the code that imports this), every gunicorn worker and every Celery
worker process writes its samples there and the API's ``/metrics`` sums them.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LOCK_BUCKETS = (1, 5, 10, 50, 100, 200, 500, 1000, 2000, 5000)
GENERATION_BUCKETS = (5, 10, 25, 50, 100, 200, 500, 1000, 2000, 5000)

lock_acquisition_duration = Histogram(
    "docnum_lock_acquisition_duration_ms",
    "Counter-row lock acquisition time in milliseconds (inside the allocation transaction)",
    ["project", "type"], buckets=LOCK_BUCKETS)
lock_acquisition_failures = Counter(
    "docnum_lock_acquisition_failures_total",
    "Total number of counter-row lock acquisition failures",
    ["project", "type", "reason"])
lock_acquisition_total = Counter(
    "docnum_lock_acquisition_total",
    "Total number of counter-row lock acquisitions attempted",
    ["project", "type"])
generation_duration = Histogram(
    "docnum_generation_duration_ms",
    "Document number generation time, request to response, in milliseconds",
    ["project", "type", "status"], buckets=GENERATION_BUCKETS)
retry_count = Histogram(
    "docnum_retry_count", "Number of transaction retries per generation",
    ["project", "type"], buckets=(0, 1, 2, 3, 5, 10))
redis_connection_status = Gauge(
    "docnum_redis_connection_status", "Redis connection status (1=up, 0=down)",
    multiprocess_mode="mostrecent")
db_connection_pool_usage = Gauge(
    "docnum_db_connection_pool_usage", "Database connection pool usage percentage",
    multiprocess_mode="max")
sequence_utilization = Gauge(
    "docnum_sequence_utilization", "last_sequence / capacity of a counter key (0..1)",
    ["counter_key"], multiprocess_mode="mostrecent")
reservations_expired = Counter(
    "docnum_reservations_expired_total", "Reservations marked EXPIRED by the sweeper")
duplicate_collisions = Counter(
    "docnum_duplicate_number_collisions_total",
    "Requests refused because another template of the project rendered the same number",
    ["project"])
