"""The stash that keeps an uploaded import file between the console's dry run and its commit."""
from __future__ import annotations

import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)

_STASH_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")


@dataclass
class ImportStash:
    """Uploaded import files kept between the dry run and the commit, for ``ttl`` seconds.

    In Redis (the result backend) when there is one, so the commit may land on any API
    replica; otherwise, or when Redis cannot be reached, in ``directory`` (files named by a
    random id, mode 0600, older ones swept on every upload). The id lives in the user's
    session; the commit imports exactly the bytes the dry run judged.
    """

    directory: Path
    redis: Redis | None = None
    ttl: int = 3600
    prefix: str = "docnum:console:import:"

    def put(self, content: bytes) -> str:
        stash_id = secrets.token_urlsafe(24)
        if self.redis is not None:
            try:
                self.redis.set(self.prefix + stash_id, content, ex=self.ttl)
                return stash_id
            except Exception as exc:  # any Redis failure: keep it on disk
                log.warning("import stash: Redis unavailable (%s); using %s",
                            type(exc).__name__, self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sweep()
        path = self.directory / stash_id
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        return stash_id

    def get(self, stash_id: str) -> bytes | None:
        if not isinstance(stash_id, str) or not _STASH_ID.fullmatch(stash_id):
            return None
        if self.redis is not None:
            try:
                content = self.redis.get(self.prefix + stash_id)
                if content is not None:
                    return content
            except Exception:
                pass
        path = self.directory / stash_id
        try:
            if time.time() - path.stat().st_mtime > self.ttl:
                path.unlink(missing_ok=True)
                return None
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def drop(self, stash_id: str) -> None:
        if not isinstance(stash_id, str) or not _STASH_ID.fullmatch(stash_id):
            return
        if self.redis is not None:
            try:
                self.redis.delete(self.prefix + stash_id)
            except Exception:
                pass
        (self.directory / stash_id).unlink(missing_ok=True)

    def _sweep(self) -> None:
        cutoff = time.time() - self.ttl
        for path in self.directory.iterdir():
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
            except OSError:
                continue


__all__ = ["ImportStash"]
