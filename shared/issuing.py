"""From an HTTP body to a request the allocator can serve: validate, resolve, key, fingerprint.

Everything that can be refused is refused here, at the front door, before anything is queued:
codes, config, template fields. What is left for the allocator are the rules that depend on the
counter (capacity, collisions).
"""
from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from docnum.shared import templates
from docnum.shared.clock import iso
from docnum.shared.configs import ConfigView
from docnum.shared.context import FIELD_KIND, NumberingContext
from docnum.shared.errors import DocnumError, FieldError
from docnum.shared.schemas import NumberingContextBody, as_model

if TYPE_CHECKING:
    from docnum.shared.refcache import Reference

_REQUEST_NAMESPACE = uuid.UUID("6f1d8f0e-4d2a-5a43-9d1b-2f6e3c7b9a10")


@dataclass
class AllocationRequest:
    """One number wanted on one counter key: the message a shard worker receives."""

    request_id: str
    mode: str                       # generate | reserve
    context: NumberingContext
    config: ConfigView
    counter_key: str
    day: date                       # the date that decides the period and the rendered year
    actor: str
    client_ip: str | None = None
    user_agent: str | None = None
    idempotency_key: str | None = None
    fingerprint: str | None = None
    submitted_at: str | None = None
    extra: dict = field(default_factory=dict)

    def to_message(self) -> dict:
        return {"request_id": self.request_id, "mode": self.mode,
                "context": self.context.to_dict(), "config": self.config.snapshot(),
                "counter_key": self.counter_key, "day": self.day.isoformat(),
                "actor": self.actor, "client_ip": self.client_ip, "user_agent": self.user_agent,
                "idempotency_key": self.idempotency_key, "fingerprint": self.fingerprint,
                "submitted_at": self.submitted_at}

    @classmethod
    def from_message(cls, data: dict) -> AllocationRequest:
        return cls(request_id=data["request_id"], mode=data["mode"],
                   context=NumberingContext.from_dict(data["context"]),
                   config=ConfigView.from_snapshot(data["config"]),
                   counter_key=data["counter_key"], day=date.fromisoformat(data["day"]),
                   actor=data["actor"], client_ip=data.get("client_ip"),
                   user_agent=data.get("user_agent"),
                   idempotency_key=data.get("idempotency_key"),
                   fingerprint=data.get("fingerprint"), submitted_at=data.get("submitted_at"))


def parse_context(body: NumberingContextBody | Mapping[str, Any]) -> NumberingContext:
    """The numbering context of a request body (docs/reference.md#http-api): its rules are the
    ``NumberingContextBody`` model's; a broken one is a clear field error."""
    return as_model(NumberingContextBody, body).to_context()


def request_id_for(client: str, idempotency_key: str) -> str:
    """The same client and key always name the same request: redelivery and retries join it."""
    return str(uuid.uuid5(_REQUEST_NAMESPACE, f"{client}\x00{idempotency_key}"))


def fingerprint(route: str, body: object) -> str:
    canonical = json.dumps({"route": route, "body": body}, sort_keys=True, ensure_ascii=False,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def period_day(ctx: NumberingContext, now: datetime, timezone: str) -> date:
    """The request's document_date, else today where the project works (DOCNUM_TIMEZONE)."""
    return ctx.document_date or templates.local_date(now, timezone)


def key_and_check(config: ConfigView, ctx: NumberingContext, day: date) -> str:
    """The counter key; also proves every code the template needs is present."""
    parsed = config.parsed
    missing = [f for f in parsed.needed_fields() if not getattr(ctx, f)]
    if missing:
        raise DocnumError("VALIDATION_FAILED",
                          "; ".join(f"{f}: is required by the template {config.template}"
                                    for f in missing),
                          errors=[FieldError(f, f"is required by the template {config.template}")
                                  for f in missing])
    scope = list(config.counter_scope) if config.counter_scope is not None else None
    return templates.counter_key(parsed, ctx, config.reset, day, config.fiscal_year_start_month,
                                 scope)


def prepare(source: Session | Reference, ctx: NumberingContext, *, now: datetime, timezone: str,
            mode: str = "generate",
            config: ConfigView | None = None) -> tuple[ConfigView, str, date]:
    """Check codes, resolve the config and compute the counter key and period day.

    ``source`` is a Session (read the database) or a ``shared.refcache.Reference`` (e.g. the
    front door's cached snapshot).
    """
    from docnum.shared.refcache import DbReference

    reference = DbReference(source) if isinstance(source, Session) else source
    reference.check_codes(ctx)
    config = config or reference.resolve(ctx.project, ctx.correspondence_type)
    day = period_day(ctx, now, timezone)
    return config, key_and_check(config, ctx, day), day


def build_request(*, request_id: str, mode: str, ctx: NumberingContext, config: ConfigView,
                  counter_key: str, day: date, actor: str, now: datetime,
                  client_ip: str | None = None, user_agent: str | None = None,
                  idempotency_key: str | None = None,
                  fingerprint_: str | None = None) -> AllocationRequest:
    return AllocationRequest(request_id=request_id, mode=mode, context=ctx, config=config,
                             counter_key=counter_key, day=day, actor=actor, client_ip=client_ip,
                             user_agent=(user_agent or "")[:255] or None,
                             idempotency_key=idempotency_key, fingerprint=fingerprint_,
                             submitted_at=iso(now))


__all__ = ["AllocationRequest", "FIELD_KIND", "build_request", "fingerprint", "parse_context",
           "prepare", "request_id_for"]
