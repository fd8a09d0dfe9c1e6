"""Reference data (catalog codes and active configs) for the front door, with a cached variant.

Every issuing request checks its codes and resolves its config. ``DbReference`` asks the
database each time; ``ReferenceCache`` keeps one snapshot per process and reloads it when the
*reference generation* changes — a random token in Redis that the catalog and config services
replace after each commit (``bump_generation``) — and at least every ``MAX_AGE_S`` even if a
bump was missed (an operator's manual SQL, say). Both answer with the same errors as the
services they stand for.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from redis import Redis, RedisError
from sqlalchemy import select
from sqlalchemy.orm import Session

from docnum.shared import redis_urls
from docnum.shared.catalog import check_context_codes, check_found_codes
from docnum.shared.configs import ConfigView, _view, resolve_config
from docnum.shared.context import FIELD_KIND, NumberingContext
from docnum.shared.errors import DocnumError
from docnum.shared.models import CatalogEntry, NumberingConfig
from docnum.shared.settings import Settings

log = logging.getLogger(__name__)

GENERATION_KEY = "docnum:reference-generation"
MAX_AGE_S = 30.0


class Reference(Protocol):
    def check_codes(self, ctx: NumberingContext) -> None: ...

    def resolve(self, project: str, correspondence_type: str | None) -> ConfigView: ...


class DbReference:
    """Straight from the database, inside the caller's session."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def check_codes(self, ctx: NumberingContext) -> None:
        check_context_codes(self.session, ctx)

    def resolve(self, project: str, correspondence_type: str | None) -> ConfigView:
        return resolve_config(self.session, project, correspondence_type)


@dataclass(frozen=True)
class Snapshot:
    codes: dict[tuple[str, str], bool]                # (kind, code) -> active
    configs: dict[tuple[str, str], ConfigView]        # (project, type or '') -> active config

    def check_codes(self, ctx: NumberingContext) -> None:
        wanted = {(FIELD_KIND[f], getattr(ctx, f)): f for f in FIELD_KIND if getattr(ctx, f)}
        check_found_codes(wanted, {k: self.codes[k] for k in wanted if k in self.codes})

    def resolve(self, project: str, correspondence_type: str | None) -> ConfigView:
        for type_key in ([correspondence_type, ""] if correspondence_type else [""]):
            config = self.configs.get((project, type_key))
            if config is not None:
                return config
        raise DocnumError("NO_CONFIG", f"no active numbering config for project {project!r} "
                                       f"and correspondence type {correspondence_type!r}, and "
                                       "no project default")


def load_snapshot(session: Session) -> Snapshot:
    codes = {(r.kind, r.code): bool(r.active) for r in session.execute(
        select(CatalogEntry.kind, CatalogEntry.code, CatalogEntry.active))}
    configs = {(row.project, row.type_key): _view(row) for row in session.scalars(
        select(NumberingConfig).where(NumberingConfig.active.is_(True)))}
    return Snapshot(codes, configs)


class ReferenceCache:
    def __init__(self, load: Callable[[], Snapshot], max_age_s: float = MAX_AGE_S) -> None:
        self._load = load
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._generation: object = None
        self._loaded_at = 0.0

    def get(self, generation: object) -> Snapshot:
        snapshot = self._snapshot
        if (snapshot is not None and generation == self._generation
                and time.monotonic() - self._loaded_at < self._max_age_s):
            return snapshot
        with self._lock:  # one reload per process, however many threads noticed
            if (self._snapshot is None or generation != self._generation
                    or time.monotonic() - self._loaded_at >= self._max_age_s):
                self._snapshot = self._load()
                self._generation = generation
                self._loaded_at = time.monotonic()
            return self._snapshot


def bump_generation(redis: Redis | None) -> None:
    """Tell every API process that the catalog or the configs changed: they reload their snapshot.

    The catalog and config services call this after their write has committed. ``redis`` holds
    the generation (the result backend's Redis); None where there is none: the embedded default
    keeps no cache and reads the database every time. A fresh random value, not a counter:
    after a Redis restart a counter could climb back to a value some process still holds and
    make it trust a stale snapshot. A failure is only logged, since the write has committed and
    every cache reloads within ``MAX_AGE_S`` anyway.
    """
    if redis is None:
        return
    try:
        redis.set(GENERATION_KEY, uuid.uuid4().hex)
    except (RedisError, OSError) as exc:
        log.warning("could not bump the reference generation (%s); running APIs reload "
                    "within %.0f s", exc, MAX_AGE_S)


def generation_redis(settings: Settings) -> Redis | None:
    """The Redis that holds the reference generation, for writers outside the API (the CLI):
    the result backend when it is Redis, else None."""
    if not redis_urls.is_redis_url(settings.result_backend):
        return None
    return redis_urls.redis_client(settings.result_backend,
                                   master_name=settings.redis_sentinel_master)
