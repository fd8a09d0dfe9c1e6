"""redis-py clients for the URLs docnum accepts: ``redis://``/``rediss://``, or Sentinel.

A Sentinel URL is kombu's and Celery's format, one ``sentinel://`` per Sentinel joined by ``;``:
``sentinel://:password@host1:26379/0;sentinel://:password@host2:26379/0``, with the master's
name in ``DOCNUM_REDIS_SENTINEL_MASTER``. The password, user name and database number are the
Redis master's (``requirepass``); the Sentinels themselves are asked without a password, as
kombu and Celery do.

``master_for`` gives a client whose connections ask the Sentinels for the master every time
they (re)connect. After a failover the old connections fail (reset, or ``READONLY`` from a
demoted master, which redis-py turns into a ``ConnectionError``), the pool drops its idle
connections, and the next command connects to the promoted replica. While the Sentinels still
agree that the old master is down but have not promoted anyone yet, connecting raises
``MasterNotFoundError`` (a ``redis.ConnectionError``).

A unix socket is kombu's and Celery's ``redis+socket:///path/to/redis.sock`` (the embedded
default's private Redis, shared/embedded_redis.py); the database number, when not 0, goes in
``?virtual_host=N`` as Celery reads it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

# redis-py is imported where a client is made: settings reads the schemes below, and a command
# that needs no Redis does not pay for importing it.
if TYPE_CHECKING:
    import redis

SOCKET_SCHEME = "redis+socket://"
REDIS_URL_SCHEMES = ("redis://", "rediss://", "sentinel://", SOCKET_SCHEME)
SENTINEL_DEFAULT_PORT = 26379
# Asking a Sentinel is one small round trip; a Sentinel that does not answer is skipped quickly
# in favour of the next one (Celery's result backend would otherwise wait without a limit).
SENTINEL_SOCKET_TIMEOUT_S = 2.0


def is_redis_url(url: str) -> bool:
    return url.startswith(REDIS_URL_SCHEMES)


def is_sentinel_url(url: str) -> bool:
    return url.startswith("sentinel://")


def is_socket_url(url: str) -> bool:
    return url.startswith(SOCKET_SCHEME)


def parse_socket_url(url: str) -> tuple[str, int]:
    """``redis+socket:///path/to/redis.sock[?virtual_host=N]`` → (socket path, database)."""
    path, _, query = url[len(SOCKET_SCHEME):].partition("?")
    if not path.startswith("/"):
        raise ValueError("a redis+socket:// URL names the socket's absolute path, "
                         "redis+socket:///path/to/redis.sock")
    db = parse_qs(query).get("virtual_host", ["0"])[0]
    if not db.isdigit():
        raise ValueError(f"the database in a redis+socket:// URL is a number, got {db!r}")
    return unquote(path), int(db)


@dataclass(frozen=True)
class SentinelURL:
    hosts: tuple[tuple[str, int], ...]
    db: int
    password: str | None
    username: str | None


def parse_sentinel_url(url: str) -> SentinelURL:
    """``sentinel://[[user]:pw@]host:port[/db];sentinel://…`` → Sentinel addresses + master
    credentials. The first part that names a password or a database gives it (kombu reads the
    first part; a list where they differ is a configuration mistake)."""
    hosts: list[tuple[str, int]] = []
    password = username = None
    db: int | None = None
    for part in filter(None, (p.strip() for p in url.split(";"))):
        if not part.startswith("sentinel://"):
            raise ValueError(f"every part of a Sentinel URL starts with sentinel://, got "
                             f"{part.split('://')[0]}://")
        parts = urlsplit(part)
        try:
            port = parts.port or SENTINEL_DEFAULT_PORT
        except ValueError:
            raise ValueError("a Sentinel URL part has an invalid port") from None
        hosts.append((parts.hostname or "localhost", port))
        if password is None and parts.password:
            password = unquote(parts.password)
        if username is None and parts.username:
            username = unquote(parts.username)
        path = parts.path.strip("/")
        if db is None and path:
            if not path.isdigit():
                raise ValueError(f"the database in a Sentinel URL is a number, got {path!r}")
            db = int(path)
    if not hosts:
        raise ValueError("a Sentinel URL names at least one sentinel://host:port")
    return SentinelURL(tuple(hosts), db or 0, password, username)


def sentinel_kwargs() -> dict:
    """Options for the connections to the Sentinels (not to the master): short timeouts."""
    return {"socket_timeout": SENTINEL_SOCKET_TIMEOUT_S,
            "socket_connect_timeout": SENTINEL_SOCKET_TIMEOUT_S}


def redis_client(url: str, *, master_name: str | None = None, socket_timeout: float = 5.0,
                 socket_connect_timeout: float = 2.0,
                 health_check_interval: int = 30) -> redis.Redis:
    """A client of the Redis that ``url`` names; for a Sentinel URL, of the current master."""
    import redis

    if is_socket_url(url):
        path, db = parse_socket_url(url)
        return redis.Redis(unix_socket_path=path, db=db, socket_timeout=socket_timeout,
                           socket_connect_timeout=socket_connect_timeout,
                           health_check_interval=health_check_interval)
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, socket_connect_timeout=socket_connect_timeout,
                                    socket_timeout=socket_timeout,
                                    health_check_interval=health_check_interval)
    from redis.sentinel import Sentinel

    if not master_name:
        raise ValueError("a sentinel:// URL needs the master's name "
                         "(DOCNUM_REDIS_SENTINEL_MASTER)")
    parsed = parse_sentinel_url(url)
    sentinel = Sentinel(list(parsed.hosts), sentinel_kwargs=sentinel_kwargs())
    return sentinel.master_for(master_name, password=parsed.password,
                               username=parsed.username, db=parsed.db,
                               socket_connect_timeout=socket_connect_timeout,
                               socket_timeout=socket_timeout,
                               health_check_interval=health_check_interval)
