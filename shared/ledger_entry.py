"""Numbers a person brings to the ledger (manual override, bulk import) rather than the allocator.

The rule both keep: a number is never issued twice. A given number is checked against the
ledger (unique per project) and, when it fits the config's template, its (counter key,
sequence) is checked too and the counter is raised to at least that sequence, so that the
allocator continues after it. This module holds what both features share: which counter sequence a
number occupies (``fit_number``) and the ledger row written for it (``ledger_row``); whether the
text can be a number at all is ``schemas.number_problem``, the request models' rule.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Any

from docnum.shared import issuing, templates
from docnum.shared.configs import ConfigView
from docnum.shared.context import NumberingContext
from docnum.shared.errors import validation_failed


def _period_day(config: ConfigView, parts: dict[str, Any], fallback: date | None) -> date:
    """A day inside the period the number itself shows (its year, month or fiscal year)."""
    if config.reset == "YEARLY":
        return date(parts["year"], 1, 1)
    if config.reset == "MONTHLY":
        return date(parts["year"], parts["month"], 1)
    if config.reset == "FISCAL_YEARLY":
        return date(parts["fiscal_year"], 1, 1)  # January always lies in the FY it ends
    return fallback or date(2000, 1, 1)          # NONE: one period, ALL


def fit_number(config: ConfigView, ctx: NumberingContext, number: str) -> tuple[str, int] | None:
    """(counter key, sequence) when ``number`` is what the template renders for ``ctx``;
    None when it does not fit the template at all (a legacy number: no counter to protect).

    A number that fits the template only with other codes is refused: registering it under
    these codes would leave a future issue of the other codes to collide with it.
    """
    parsed = config.parsed
    start_month = config.fiscal_year_start_month
    parts = templates.parse_number(parsed, number, start_month, ctx=ctx)
    if parts is None:
        loose = templates.parse_number(parsed, number, start_month)
        if loose is not None:
            shown = ", ".join(f"{k}={v}" for k, v in loose["codes"].items())
            raise validation_failed("document_number",
                                    f"{number} fits the template {config.template} with codes "
                                    f"{shown}, which differ from the codes given")
        return None
    day = _period_day(config, parts, ctx.document_date)
    if ctx.document_date is not None:
        given = templates.period_of(config.reset, ctx.document_date, start_month)
        shown = templates.period_of(config.reset, day, start_month)
        if given != shown:
            raise validation_failed("document_date",
                                    f"{ctx.document_date.isoformat()} is in period {given} but "
                                    f"{number} shows period {shown}")
    key = issuing.key_and_check(config, ctx, day)
    return key, int(parts["sequence"])


def ledger_row(*, number: str, ctx: NumberingContext, config: ConfigView | None,
               fit: tuple[str, int] | None, state: str, source: str, request_id: str,
               actor: str, now_db: datetime, reason: str | None) -> dict[str, Any]:
    """The ``document_numbers`` row of a given number: its counter and sequence only when it
    fits the template, no idempotency key or reservation (no client request produced it)."""
    return dict(
        document_number=number, project=ctx.project,
        counter_key=fit[0] if fit else None, sequence=fit[1] if fit else None,
        state=state, source=source, config_id=config.id if config else None,
        config_version=config.version if config else None,
        template=config.template if (config and fit) else None,
        correspondence_type=ctx.correspondence_type, originator=ctx.originator,
        recipient=ctx.recipient, sub_type=ctx.sub_type, rfa_type=ctx.rfa_type,
        discipline=ctx.discipline, revision=ctx.revision, document_date=ctx.document_date,
        document_ref=ctx.document_ref, request_id=request_id, idempotency_client=None,
        idempotency_key=None, idempotency_fingerprint=None, issued_by=actor, issued_at=now_db,
        reservation_token=None, reservation_expires_at=None,
        state_reason=reason, state_changed_by=actor if reason else None,
        state_changed_at=now_db if reason else None, replaced_by=None, replaces=None)


__all__ = ["fit_number", "ledger_row"]
