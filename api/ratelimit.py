"""Rate limits on the issuing routes (SPEC §5): per user and per client IP, on Redis.

``/requests``, ``/generate`` and ``/reserve`` share one budget per user (``sub`` of the bearer
token, ``DOCNUM_RATE_LIMIT_USER``, default 10/minute) and one per IP address
(``DOCNUM_RATE_LIMIT_IP``, default 50/minute): a client cannot multiply its budget by switching
routes. Over either budget the answer is ``429 RATE_LIMITED`` (problem+json) with
``Retry-After``. Counters live in Redis (the result backend) so every API process shares them;
the embedded default (no Redis) counts in memory. Redis trouble never turns into a 5xx: the
storage uses short timeouts, errors are swallowed, and once Redis fails the limiter counts in
this process's memory (so the budgets still hold, per process, while issuing runs on the
DB-only path) and probes Redis again with exponential back-off, switching back when it answers.
No request waits on a dead Redis more than once per probe.
"""
from __future__ import annotations

import time

from flask import Flask, request
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded

from api.problems import problem_response
from shared import redis_urls
from shared.auth import verify_token
from shared.errors import DocnumError
from shared.settings import Settings

ISSUING_ENDPOINTS = ("issuing.submit_request", "issuing.generate", "issuing.reserve")
KEY_PREFIX = "docnum-rl"
# Redis must answer fast or be ignored: a slow limiter would slow every issuing request.
STORAGE_OPTIONS = {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}


def storage_uri(settings: Settings) -> str:
    """The Redis of the result backend (``redis+sentinel://`` behind Sentinel), else memory."""
    backend = settings.result_backend
    if backend.startswith(("redis://", "rediss://")):
        return backend
    if backend.startswith("sentinel://") and settings.redis_sentinel_master:
        # Only the Sentinels' addresses: limits would also send the URL's password to the
        # Sentinels, which have none (AUTH fails, and swallow_errors would silently disable
        # the limits). The master's password and database go in ``storage_options``.
        hosts = redis_urls.parse_sentinel_url(backend).hosts
        return (f"redis+sentinel://{','.join(f'{h}:{p}' for h, p in hosts)}"
                f"/{settings.redis_sentinel_master}")
    return "memory://"


def storage_options(settings: Settings, uri: str) -> dict:
    if uri == "memory://":
        return {}
    options = dict(STORAGE_OPTIONS)
    if uri.startswith("redis+sentinel://"):
        master = redis_urls.parse_sentinel_url(settings.result_backend)
        options.update(db=master.db, use_replicas=False,  # counts from the master only
                       sentinel_kwargs=dict(STORAGE_OPTIONS, password=None))
        if master.password:
            options["password"] = master.password
        if master.username:
            options["username"] = master.username
    return options


def _client_ip() -> str:
    return request.remote_addr or "unknown"


def _user_key() -> str:
    """The token's ``sub``; an absent or bad token is counted by IP (and then refused 401)."""
    from flask import current_app

    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        try:
            principal = verify_token(current_app.config["DOCNUM_SETTINGS"], token.strip())
            return f"user:{principal.sub}"
        except DocnumError:
            pass
    return f"anonymous:{_client_ip()}"


def _ip_key() -> str:
    return f"ip:{_client_ip()}"


def init_rate_limits(app: Flask, settings: Settings) -> Limiter:
    uri = storage_uri(settings)
    limiter = Limiter(
        key_func=_ip_key,
        app=app,
        storage_uri=uri,
        storage_options=storage_options(settings, uri),
        strategy="moving-window",
        swallow_errors=True,
        in_memory_fallback_enabled=True,
        headers_enabled=False,
        key_prefix=KEY_PREFIX,
    )
    per_user = limiter.shared_limit(settings.rate_limit_user, scope="issuing-user",
                                    key_func=_user_key)
    per_ip = limiter.shared_limit(settings.rate_limit_ip, scope="issuing-ip", key_func=_ip_key)
    for endpoint in ISSUING_ENDPOINTS:
        # Decorated limits are checked when the view runs, i.e. before authentication.
        app.view_functions[endpoint] = per_ip(per_user(app.view_functions[endpoint]))

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(error: RateLimitExceeded):  # noqa: ANN202
        retry_after = 60
        current = limiter.current_limit
        try:
            if current is not None:
                # reset_at is already rounded up to the next whole second
                retry_after = max(1, int(current.reset_at - time.time()))
        except Exception:  # noqa: BLE001 - storage trouble: fall back to a minute
            pass
        which = "per user" if "issuing-user" in str(getattr(current, "key", "")) else "per IP"
        return problem_response(DocnumError(
            "RATE_LIMITED", f"more than {error.description} issuing requests {which}; "
                            f"try again in {retry_after} s", retry_after=retry_after), request)

    app.extensions["docnum_limiter"] = limiter
    return limiter
