"""gunicorn settings for the docnum API in production (containers and systemd).

Layered on the package's own settings, ``api/gunicorn_conf.py`` (what ``docnum api`` loads by
default): wsgi_app ``docnum.api.wsgi:app``, bind from DOCNUM_HOST/DOCNUM_PORT, gthread workers from
DOCNUM_API_WORKERS (default 2), timeout 40, keepalive 5, and the ``child_exit`` hook that calls
prometheus_client's ``mark_process_dead`` when PROMETHEUS_MULTIPROC_DIR is set. This file only
sets what a deployment wants differently and imports the rest by name, so the two cannot
drift apart (scripts/check_compose fails when the package adds a setting this file does not
import or set).

Use: ``gunicorn -c deploy/gunicorn.conf.py`` (or ``docnum api`` once it takes its config path
from DOCNUM_GUNICORN_CONFIG, which deploy/Dockerfile and docnum-api.service set).

Plain module-level names computed from the environment: importing this file starts nothing,
opens nothing and imports only the standard library and that settings module, so tests can import
it and read the values.

Timeouts, from the client inwards (each layer outlasts the one inside it):
  /generate and /reserve wait up to 30 s for the worker      (docs/reference.md#http-api,
                                                              ?timeout=0..30)
  nginx proxy_read_timeout 35 s                               (deploy/nginx/conf.d/docnum.conf)
  gunicorn timeout 40 s: kills a worker silent for longer     (api/gunicorn_conf.py)
"""
import os

# The package's settings this file keeps as they are: gunicorn reads them as names of this module
# (``name as name`` re-exports them).
from docnum.api.gunicorn_conf import bind as bind
from docnum.api.gunicorn_conf import child_exit as child_exit
from docnum.api.gunicorn_conf import keepalive as keepalive
from docnum.api.gunicorn_conf import loglevel as loglevel
from docnum.api.gunicorn_conf import timeout as timeout
from docnum.api.gunicorn_conf import worker_class as worker_class
from docnum.api.gunicorn_conf import workers as workers
from docnum.api.gunicorn_conf import wsgi_app as wsgi_app


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


# 2 processes x 8 threads = 16 requests in flight per replica, 48 behind nginx with 3 replicas.
# A thread blocked on a 30 s /generate wait costs a thread, not a process. Celery's result
# backend keeps one pub/sub connection per thread, and the fixed pool bounds them.
threads = _int("DOCNUM_API_THREADS", 8)

# On SIGTERM (rolling restart) let in-flight waits (<= 30 s) finish before workers are killed;
# the container's stop_grace_period / the unit's TimeoutStopSec (45 s) leave room for it.
graceful_timeout = 35
assert graceful_timeout < timeout

# Recycle workers now and then (bounded memory growth); the jitter keeps the workers of one
# replica from restarting together.
max_requests = _int("DOCNUM_API_MAX_REQUESTS", 10000)
max_requests_jitter = 1000

# The heartbeat file lives in memory: on an overlay or network filesystem its writes can stall and
# get healthy workers killed.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# X-Forwarded-Proto is trusted from these addresses only. In the compose network nginx is the only
# client ("*" is set there); systemd installs keep gunicorn's loopback default.
forwarded_allow_ips = os.environ.get("DOCNUM_FORWARDED_ALLOW_IPS") or "127.0.0.1,::1"

proc_name = "docnum-api"
accesslog = os.environ.get("DOCNUM_ACCESS_LOG") or "-"
errorlog = "-"
# Client address as nginx saw it (X-Real-IP), the proxy hop, request line, status, size, referer,
# user agent, nginx's request id and the request time in seconds.
access_log_format = (
    '%({x-real-ip}i)s %(h)s - %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" '
    'rid=%({x-request-id}i)s %(L)s'
)
