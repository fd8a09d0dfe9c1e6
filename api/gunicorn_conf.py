"""gunicorn settings for ``docnum api`` (``gunicorn -c python:docnum.api.gunicorn_conf``).

gthread workers: a synchronous ``/generate`` mostly waits on Redis pub/sub, so threads are
cheap and let two processes on two cores hold many waiting requests.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing this file loads only the standard library
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

wsgi_app = "docnum.api.wsgi:app"
bind = f"{os.environ.get('DOCNUM_HOST', '127.0.0.1')}:{os.environ.get('DOCNUM_PORT', '8000')}"
worker_class = "gthread"
workers = int(os.environ.get("DOCNUM_API_WORKERS", "2"))
threads = int(os.environ.get("DOCNUM_API_THREADS", "16"))
timeout = 40            # /generate waits at most 30 s
graceful_timeout = 20
keepalive = 5
max_requests = int(os.environ.get("DOCNUM_API_MAX_REQUESTS", "0"))
max_requests_jitter = 100
accesslog = os.environ.get("DOCNUM_ACCESS_LOG") or None
loglevel = os.environ.get("DOCNUM_LOG_LEVEL", "info")


def child_exit(_server: Arbiter, worker: Worker) -> None:
    # A dead worker's live gauges must stop counting in the summed /metrics.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
