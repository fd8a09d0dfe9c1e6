"""Typed settings, read from ``DOCNUM_*`` environment variables in this one place
(docs/reference.md#configuration).

With nothing set, docnum runs on an embedded default that needs no server set up: a SQLite
database, a private Redis that ``docnum up`` starts on a unix socket (shared/embedded_redis.py) and
a JWT secret generated once, all under ``./var/``. Without a Redis server binary the broker and
result backend fall back to SQLite files there too (workers/embedded.py).
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from docnum.shared import redis_urls
from docnum.shared.embedded_redis import EmbeddedRedis, embedded_redis


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    var_dir: Path
    database_url: str
    database_replica_url: str | None
    broker_url: str
    result_backend: str
    redis_sentinel_master: str | None
    jwt_secret: str
    jwt_public_key: str | None
    jwt_issuer: str | None
    timezone: str
    host: str
    port: int
    queue_shards: int
    reservation_ttl: int
    idempotency_ttl: int
    rate_limit_user: str
    rate_limit_ip: str
    flower_basic_auth: str | None
    flower_address: str
    flower_port: int
    visibility_timeout: int = 45
    proxy_hops: int = 0
    coalesce_inflight: int = 0
    coalesce_linger_ms: int = 20
    # Seconds a shard worker's ownership lock outlives its last heartbeat (workers/ownership.py).
    shard_owner_ttl: int = 30
    # Seconds a shard consumer's batch may make no progress before its worker stands down and
    # another worker adopts its shards (workers/ownership.py).
    shard_stall_timeout: int = 6
    # The private Redis of the embedded default when it runs one (no DOCNUM_BROKER_URL and a
    # server binary found); broker_url and result_backend then name its socket.
    embedded_redis: EmbeddedRedis | None = None
    # The Ed25519 key that signs checkpoints (shared/checkpoints.py, docs/verification.md).
    # None in production until DOCNUM_SIGNING_KEY_FILE names one: checkpointing then refuses to
    # run. On the embedded default it is ./var/signing_key.pem, generated on first use.
    signing_key_file: Path | None = None
    signing_key_generate: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def embedded(self) -> bool:
        """True when running on the embedded default's database (SQLite)."""
        return self.database_url.startswith("sqlite")

    @property
    def uses_redis(self) -> bool:
        return redis_urls.is_redis_url(self.broker_url)

    @property
    def sql_broker_fallback(self) -> bool:
        """The embedded default without a Redis server binary: kombu's SQL transport."""
        return self.broker_url.startswith("sqla+")

    def with_overrides(self, **changes: Any) -> Settings:  # any field, with that field's type
        return replace(self, **changes)


def create_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, readable by its owner only, unless ``path`` exists.

    Written under a name of this process, then hard-linked into place: an atomic "create if
    absent", so processes starting together agree on one content (the one linked first) and
    none reads a half-written file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o600)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def _jwt_secret(env: dict[str, str], var_dir: Path) -> str:
    if env.get("DOCNUM_JWT_SECRET"):
        return env["DOCNUM_JWT_SECRET"]
    # Generated once so that `docnum token` and the API agree without any setup.
    path = var_dir / "jwt_secret"
    if not path.exists():
        create_private_file(path, secrets.token_urlsafe(48).encode("ascii"))
    return path.read_text().strip()


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    var_dir = Path(env.get("DOCNUM_VAR_DIR") or "var").resolve()
    db_url = env.get("DOCNUM_DATABASE_URL") or f"sqlite:///{var_dir / 'docnum.sqlite'}"
    private_redis = None
    broker = env.get("DOCNUM_BROKER_URL")
    if not broker:
        # PATH as this process will see it (a test may hand an environment without the server).
        private_redis = embedded_redis(var_dir, env.get("PATH"),
                                       env.get("DOCNUM_REDIS_SERVER") or None)
        broker = private_redis.url if private_redis else \
            f"sqla+sqlite:///{var_dir / 'broker.sqlite'}"
    backend = env.get("DOCNUM_RESULT_BACKEND") or (
        broker if broker.startswith(("redis://", "sentinel://", redis_urls.SOCKET_SCHEME)) else
        f"db+sqlite:///{var_dir / 'results.sqlite'}"
    )
    if db_url.startswith("sqlite") or broker.startswith("sqla+") or private_redis:
        var_dir.mkdir(parents=True, exist_ok=True)
    sentinel_master = env.get("DOCNUM_REDIS_SENTINEL_MASTER") or None
    if not sentinel_master and "sentinel://" in broker + backend:
        raise ValueError("sentinel:// URLs need the master's name in "
                         "DOCNUM_REDIS_SENTINEL_MASTER")
    shards = _int(env, "DOCNUM_QUEUE_SHARDS", 8)
    if not 1 <= shards <= 256:
        raise ValueError("DOCNUM_QUEUE_SHARDS must be between 1 and 256")
    shard_owner_ttl = _int(env, "DOCNUM_SHARD_OWNER_TTL", 30)
    if shard_owner_ttl < 3:
        raise ValueError("DOCNUM_SHARD_OWNER_TTL must be at least 3 seconds")
    shard_stall_timeout = _int(env, "DOCNUM_SHARD_STALL_TIMEOUT", 6)
    if shard_stall_timeout < 1:
        raise ValueError("DOCNUM_SHARD_STALL_TIMEOUT must be at least 1 second")
    signing_key = env.get("DOCNUM_SIGNING_KEY_FILE") or None
    # A key file that is named must exist (a missing mount must not quietly become a new key);
    # only the embedded default makes its own.
    generate_key = signing_key is None and db_url.startswith("sqlite")
    return Settings(
        var_dir=var_dir,
        database_url=db_url,
        database_replica_url=env.get("DOCNUM_DATABASE_REPLICA_URL") or None,
        broker_url=broker,
        result_backend=backend,
        redis_sentinel_master=sentinel_master,
        jwt_secret=_jwt_secret(env, var_dir),
        jwt_public_key=env.get("DOCNUM_JWT_PUBLIC_KEY") or None,
        jwt_issuer=env.get("DOCNUM_JWT_ISSUER") or None,
        timezone=env.get("DOCNUM_TIMEZONE") or "Asia/Bangkok",
        host=env.get("DOCNUM_HOST") or "127.0.0.1",
        port=_int(env, "DOCNUM_PORT", 8000),
        queue_shards=shards,
        reservation_ttl=_int(env, "DOCNUM_RESERVATION_TTL", 300),
        idempotency_ttl=_int(env, "DOCNUM_IDEMPOTENCY_TTL", 86400),
        rate_limit_user=env.get("DOCNUM_RATE_LIMIT_USER") or "10/minute",
        rate_limit_ip=env.get("DOCNUM_RATE_LIMIT_IP") or "50/minute",
        flower_basic_auth=env.get("DOCNUM_FLOWER_BASIC_AUTH") or None,
        flower_address=env.get("DOCNUM_FLOWER_ADDRESS") or "127.0.0.1",
        flower_port=_int(env, "DOCNUM_FLOWER_PORT", 5555),
        visibility_timeout=_int(env, "DOCNUM_VISIBILITY_TIMEOUT", 45),
        # Reverse proxies in front of the API whose X-Forwarded-For is trusted (nginx: 1).
        proxy_hops=_int(env, "DOCNUM_PROXY_HOPS", 0),
        # Messages in flight per shard per API process before requests are held back to
        # coalesce (api/frontdoor/coalescer.py); 0 publishes every request at once.
        # docs/benchmarks.md has the measurements behind the default.
        coalesce_inflight=_int(env, "DOCNUM_COALESCE_INFLIGHT", 0),
        # After an answer, how long a shard's next batch may wait to fill (busy shards only).
        coalesce_linger_ms=_int(env, "DOCNUM_COALESCE_LINGER_MS", 20),
        shard_owner_ttl=shard_owner_ttl,
        shard_stall_timeout=shard_stall_timeout,
        embedded_redis=private_redis,
        signing_key_file=(Path(signing_key).resolve() if signing_key else
                          var_dir / "signing_key.pem" if generate_key else None),
        signing_key_generate=generate_key,
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
