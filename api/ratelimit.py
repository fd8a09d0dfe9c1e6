"""Rate limits on the issuing routes (docs/reference.md#http-api): per user and per client IP,
on Redis.

``/requests``, ``/generate`` and ``/reserve`` share one budget per user (``sub`` of the bearer
token, ``DOCNUM_RATE_LIMIT_USER``, default 10/minute) and one per IP address
(``DOCNUM_RATE_LIMIT_IP``, default 50/minute): a client cannot multiply its budget by switching
routes. Over either budget the answer is ``429 RATE_LIMITED`` (problem+json) with
``Retry-After``. Counters live in Redis (the result backend) so every API process shares them;
the embedded default's SQL fallback (no Redis) counts in memory. Redis trouble never turns into
a 5xx: the storage uses short timeouts, errors are swallowed, and once Redis fails the limiter
counts in this process's memory (so the budgets still hold, per process, while issuing runs on
the DB-only path) and probes Redis again with exponential back-off, switching back when it
answers. No request waits on a dead Redis more than once per probe.

The counting is the ``limits`` library's moving window (the engine of Flask-Limiter). An issuing
request that reaches the front door is counted there, in the same Redis round trip as its claim
(``Admission``: the same window, keys and Lua logic as ``limits``); one that is refused before
(a bad token, an invalid body) is counted when its error is answered, and turned into a 429 if
it is over budget (``settle``); without the shared Redis, ``before_request`` counts it at once.
Flask-Limiter itself costs 0.74 ms of CPU per issuing request here (measured: its middleware
pass plus one decorator pass per budget, resolving, filtering and exemption checks around two
Redis calls), a quarter of the front door's whole cost per request; the two ``hit`` calls alone
cost about 0.3 ms (docs/benchmarks.md).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

from flask import Flask, Response, g, request
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from docnum.api.problems import problem_response
from docnum.shared import redis_urls
from docnum.shared.auth import verify_token
from docnum.shared.errors import DocnumError
from docnum.shared.settings import Settings

log = logging.getLogger(__name__)

ISSUING_ENDPOINTS = frozenset({"issuing.submit_request", "issuing.generate", "issuing.reserve"})
KEY_PREFIX = "docnum-rl"
# Redis must answer fast or be ignored: a slow limiter would slow every issuing request.
STORAGE_OPTIONS = {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}
PROBE_BACKOFF_S = (1.0, 60.0)  # first and longest wait before asking a failed Redis again


def storage_uri(settings: Settings) -> str:
    """The Redis of the result backend (``redis+sentinel://`` behind Sentinel, ``redis+unix://``
    on a socket), else memory."""
    backend = settings.result_backend
    if backend.startswith(("redis://", "rediss://")):
        return backend
    if redis_urls.is_socket_url(backend):  # the embedded default's private Redis
        path, db = redis_urls.parse_socket_url(backend)
        return f"redis+unix://{path}?db={db}"
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


Budget = tuple[RateLimitItem, str, str, str]   # limit, scope, key, words for the 429 detail

@dataclass
class Admission:
    """An issuing request's budgets, counted by the front door together with its claim."""

    limits: IssuingRateLimits
    budgets: list[Budget]
    counted: bool = False

    def script_keys_and_args(self, now: float) -> tuple[list[str], list[object]]:
        storage = self.limits.shared.storage
        keys = [storage.prefixed_key(limit.key_for(scope, key))
                for limit, scope, key, _ in self.budgets]
        args: list[object] = [now, len(self.budgets)]
        for limit, _, _, _ in self.budgets:
            args += [limit.amount, limit.get_expiry()]
        return keys, args

    def refused(self, index: int) -> DocnumError:
        """The 429 for the budget the script found exhausted (1-based)."""
        self.counted = True
        limit, scope, key, which = self.budgets[index - 1]
        return self.limits.rate_limited(self.limits.shared, limit, scope, key, which)

    def count_now(self) -> None:
        """Count the budgets on their own (the request will not reach the claim); raise the
        429 when over budget."""
        if not self.counted:
            self.counted = True
            self.limits.enforce(self.budgets)


class IssuingRateLimits:
    """The two budgets of the issuing routes, counted in Redis or (fallback) in memory."""

    def __init__(self, settings: Settings) -> None:
        self.user_limit: RateLimitItem = parse(settings.rate_limit_user)
        self.ip_limit: RateLimitItem = parse(settings.rate_limit_ip)
        uri = storage_uri(settings)
        self.memory = MovingWindowRateLimiter(MemoryStorage())
        self.shared = None if uri == "memory://" else MovingWindowRateLimiter(
            storage_from_string(uri, key_prefix=KEY_PREFIX, **storage_options(settings, uri)))
        self._lock = threading.Lock()
        self._probe_at = 0.0       # while in the future, Redis is considered down
        self._backoff = PROBE_BACKOFF_S[0]
        # Both budgets in ONE round trip: the storage's own moving-window script, twice in a
        # pipeline (exactly what ``hit`` runs, once per call). Only where the storage offers
        # it (limits' RedisStorage and RedisSentinelStorage); otherwise two ``hit`` calls.
        storage = self.shared.storage if self.shared is not None else None
        self._pipelined = all(hasattr(storage, name) for name in (
            "lua_acquire_moving_window", "get_connection", "prefixed_key"))

    def _limiter(self) -> MovingWindowRateLimiter:
        if self.shared is not None and time.monotonic() >= self._probe_at:
            return self.shared
        return self.memory

    def _storage_failed(self, exc: Exception) -> None:
        with self._lock:
            if time.monotonic() < self._probe_at:
                return
            log.warning("rate limit storage unreachable (%s): counting in memory, asking it "
                        "again in %.0f s", type(exc).__name__, self._backoff)
            self._probe_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, PROBE_BACKOFF_S[1])

    def _hit(self, limit: RateLimitItem, scope: str, key: str) -> MovingWindowRateLimiter | None:
        """Count one request; the limiter that refused it, or None when within budget."""
        limiter = self._limiter()
        try:
            allowed = limiter.hit(limit, scope, key)
            if limiter is self.shared and self._backoff != PROBE_BACKOFF_S[0]:
                self._backoff = PROBE_BACKOFF_S[0]  # Redis answers again
        except Exception as exc:  # limiter trouble must never become a 5xx
            if limiter is not self.shared:
                return None
            self._storage_failed(exc)
            limiter = self.memory
            allowed = limiter.hit(limit, scope, key)
        return None if allowed else limiter

    def _hit_both(self, budgets: list[tuple[RateLimitItem, str, str, str]]) -> list:
        """``_hit`` for every budget, in one pipeline when the storage allows."""
        if not self._pipelined or self._limiter() is not self.shared:
            return [self._hit(limit, scope, key) for limit, scope, key, _ in budgets]
        storage = self.shared.storage
        try:
            pipe = storage.get_connection().pipeline(transaction=False)
            now = time.time()
            for limit, scope, key, _ in budgets:
                storage.lua_acquire_moving_window(
                    [storage.prefixed_key(limit.key_for(scope, key))],
                    [now, limit.amount, limit.get_expiry(), 1], client=pipe)
            allowed = pipe.execute()
        except Exception as exc:  # limiter trouble must never become a 5xx
            self._storage_failed(exc)
            return [self._hit(limit, scope, key) for limit, scope, key, _ in budgets]
        self._backoff = PROBE_BACKOFF_S[0]  # Redis answers (again)
        return [None if ok else self.shared for ok in allowed]

    def _budgets(self) -> list[Budget]:
        return [(self.ip_limit, "issuing-ip", f"ip:{_client_ip()}", "per IP"),
                (self.user_limit, "issuing-user", _user_key(), "per user")]

    def check(self) -> None:
        """``before_request``: every issuing request is counted, bad tokens included. With the
        shared Redis up, the counting travels with the front door's claim (``admission``)."""
        if request.endpoint not in ISSUING_ENDPOINTS:
            return
        budgets = self._budgets()
        if self._pipelined and self._limiter() is self.shared:
            g.docnum_admission = Admission(self, budgets)
            return
        self.enforce(budgets)

    def enforce(self, budgets: list[Budget]) -> None:
        """Count ``budgets`` now; raise the 429 of the first one over its limit."""
        for (limit, scope, key, which), refused_by in zip(budgets, self._hit_both(budgets),
                                                          strict=True):
            if refused_by is not None:
                raise self.rate_limited(refused_by, limit, scope, key, which)

    def rate_limited(self, limiter: MovingWindowRateLimiter, limit: RateLimitItem, scope: str,
                     key: str, which: str) -> DocnumError:
        retry_after = self._retry_after(limiter, limit, scope, key)
        return DocnumError("RATE_LIMITED", f"more than {limit} issuing requests {which}; try "
                                           f"again in {retry_after} s", retry_after=retry_after)

    @staticmethod
    def admission() -> Admission | None:
        """This request's budgets, for the front door to count with its claim (None when they
        were counted already)."""
        admission = g.get("docnum_admission")
        return admission if admission is not None and not admission.counted else None

    def settle(self, response: Response) -> Response:
        """``after_request``: an issuing request answered before the front door counted it
        (a bad token, an invalid body) is counted now, and answered 429 instead when it is over
        budget: a flood of bad requests is limited like a flood of good ones."""
        admission = self.admission()
        if admission is None:
            return response
        try:
            admission.count_now()
        except DocnumError as refused:
            if response.status_code >= 400:
                return problem_response(refused, request)
        return response

    @staticmethod
    def _retry_after(limiter: MovingWindowRateLimiter, limit: RateLimitItem, scope: str,
                     key: str) -> int:
        try:
            reset_at = limiter.get_window_stats(limit, scope, key).reset_time
            return max(1, math.ceil(reset_at - time.time()))
        except Exception:  # storage trouble: fall back to the whole window
            return limit.get_expiry()


def init_rate_limits(app: Flask, settings: Settings) -> IssuingRateLimits:
    limits = IssuingRateLimits(settings)
    app.before_request(limits.check)
    app.after_request(limits.settle)
    app.extensions["docnum_rate_limits"] = limits
    return limits
