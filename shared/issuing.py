"""From an HTTP body to a request the allocator can serve: validate, resolve, key, fingerprint.

Everything that can be refused is refused here, at the front door, before anything is queued:
codes, config, template fields. What is left for the allocator are the rules that depend on the
counter (capacity, collisions).
"""
from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from docnum.shared import templates
from docnum.shared.clock import iso
from docnum.shared.configs import ConfigView
from docnum.shared.context import FIELD_KIND, NumberingContext
from docnum.shared.errors import DocnumError, FieldError, validation_failed

if TYPE_CHECKING:
    from docnum.shared.refcache import Reference

CONTEXT_FIELDS = ("project", "correspondence_type", "originator", "recipient", "sub_type",
                  "rfa_type", "discipline", "revision", "document_date", "document_ref")
MODES = ("generate", "reserve")
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


def parse_context(body: object) -> NumberingContext:
    """The numbering context of docs/reference.md#numbering-context, with a clear field error for
    anything malformed."""
    if not isinstance(body, dict):
        raise DocnumError("VALIDATION_FAILED", "the body must be a JSON object")
    errors: list[FieldError] = []
    values: dict = {}
    for name in CONTEXT_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if name == "document_date":
            try:
                if not isinstance(value, str) or len(value) != 10:
                    raise ValueError
                values[name] = date.fromisoformat(value)
            except ValueError:
                errors.append(FieldError(name, "must be a date YYYY-MM-DD"))
        elif name == "document_ref":
            if not isinstance(value, str) or len(value) > 255 or not value.isprintable():
                errors.append(FieldError(name, "must be printable text of at most 255 characters"))
            else:
                values[name] = value
        else:
            problem = templates.code_problem(value)
            if problem:
                errors.append(FieldError(name, problem))
            else:
                values[name] = value
    for required in ("project", "correspondence_type"):
        if required not in values and not any(e.field == required for e in errors):
            errors.append(FieldError(required, "is required"))
    if errors:
        raise DocnumError("VALIDATION_FAILED", "; ".join(f"{e.field}: {e.message}" for e in errors),
                          errors=errors)
    return NumberingContext(**values)


def request_id_for(client: str, idempotency_key: str) -> str:
    """The same client and key always name the same request: redelivery and retries join it."""
    return str(uuid.uuid5(_REQUEST_NAMESPACE, f"{client}\x00{idempotency_key}"))


def fingerprint(route: str, body: object) -> str:
    canonical = json.dumps({"route": route, "body": body}, sort_keys=True, ensure_ascii=False,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def check_idempotency_key(key: str | None) -> str:
    if key is None or key == "":
        raise DocnumError("IDEMPOTENCY_KEY_REQUIRED", "send an Idempotency-Key header")
    if len(key) > 255 or not all(" " <= c <= "~" for c in key):
        raise DocnumError("IDEMPOTENCY_KEY_INVALID",
                          "Idempotency-Key must be 1-255 printable ASCII characters")
    return key


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
    if mode not in MODES:
        raise validation_failed("mode", f"must be one of {', '.join(MODES)}")
    return AllocationRequest(request_id=request_id, mode=mode, context=ctx, config=config,
                             counter_key=counter_key, day=day, actor=actor, client_ip=client_ip,
                             user_agent=(user_agent or "")[:255] or None,
                             idempotency_key=idempotency_key, fingerprint=fingerprint_,
                             submitted_at=iso(now))


__all__ = ["AllocationRequest", "FIELD_KIND", "build_request", "check_idempotency_key",
           "fingerprint", "parse_context", "prepare", "request_id_for"]
