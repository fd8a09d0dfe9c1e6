"""The console's import stash: Redis first, a private directory without (or despite) Redis."""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import NoReturn

from docnum.api.console.queries import utilization_level
from docnum.api.console.stash import ImportStash


class DeadRedis:
    def __getattr__(self, name: str) -> Callable[..., NoReturn]:
        def fail(*args: object, **kwargs: object) -> NoReturn:
            raise ConnectionError("redis is down")
        return fail


class DictRedis:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def set(self, key: str, value: bytes, ex: int) -> None:
        self.data[key] = value

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


def test_directory_stash_keeps_a_private_file_for_an_hour(tmp_path) -> None:
    stash = ImportStash(tmp_path / "imports", None, ttl=3600)
    stash_id = stash.put(b"document_number\n")
    path = tmp_path / "imports" / stash_id
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert stash.get(stash_id) == b"document_number\n"
    assert stash.get("../../etc/passwd") is None and stash.get("short") is None
    old = time.time() - 7200
    os.utime(path, (old, old))
    assert stash.get(stash_id) is None and not path.exists()
    other = stash.put(b"x")
    stash.drop(other)
    assert stash.get(other) is None


def test_redis_stash_and_the_fallback_when_redis_is_down(tmp_path) -> None:
    redis = DictRedis()
    stash = ImportStash(tmp_path / "imports", redis)
    stash_id = stash.put(b"abc")
    assert list(redis.data.values()) == [b"abc"] and not (tmp_path / "imports").exists()
    assert stash.get(stash_id) == b"abc"
    stash.drop(stash_id)
    assert redis.data == {}

    down = ImportStash(tmp_path / "imports", DeadRedis())
    kept = down.put(b"on disk")
    assert (tmp_path / "imports" / kept).read_bytes() == b"on disk"
    assert down.get(kept) == b"on disk"


def test_utilization_levels() -> None:
    assert utilization_level(0.90) == "ok"
    assert utilization_level(0.9001) == "amber"
    assert utilization_level(0.95) == "amber"
    assert utilization_level(0.9501) == "red"
