"""Previewing numbers without consuming any: what ``POST /preview`` and the console's template
editor show ("the first RFI of 2569").

The counter row is read, never locked or written: the preview is the number the next request
on that counter would get if nothing else were issued first.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from docnum.shared import issuing, templates
from docnum.shared.configs import ConfigView, resolve_config
from docnum.shared.context import NumberingContext
from docnum.shared.errors import DocnumError
from docnum.shared.models import Counter
from docnum.shared.schemas import TemplateTrial, as_model


@dataclass(frozen=True)
class Preview:
    config: ConfigView
    counter_key: str
    numbers: tuple[tuple[int, str], ...]  # (sequence, document number), next first

    @property
    def config_version(self) -> int | None:
        return self.config.version if self.config.id else None


def preview_config(session: Session, ctx: NumberingContext,
                   body: TemplateTrial | Mapping[str, Any],
                   base: ConfigView | None = None) -> ConfigView:
    """The saved config (``base``, else the one the context resolves to), or an unsaved
    ``template`` (with optional ``reset`` and ``counter_scope``) laid over it — or over
    defaults when there is no config yet — to try it out."""
    trial = as_model(TemplateTrial, body)
    template = trial.template
    if template is None:
        return base or resolve_config(session, ctx.project, ctx.correspondence_type)
    if base is None:
        try:
            base = resolve_config(session, ctx.project, ctx.correspondence_type)
        except DocnumError as exc:
            if exc.code != "NO_CONFIG":
                raise
            base = ConfigView(id=0, project=ctx.project,
                              correspondence_type=ctx.correspondence_type, template=template,
                              reset="YEARLY", fiscal_year_start_month=10, sequence_start=1,
                              counter_scope=None, version=0, active=True)
    reset = trial.reset or base.reset
    scope = trial.counter_scope if "counter_scope" in trial.model_fields_set else \
        (list(base.counter_scope) if base.counter_scope is not None else None)
    templates.validate_template(template, reset, scope)
    return ConfigView(id=base.id, project=base.project,
                      correspondence_type=base.correspondence_type, template=template,
                      reset=reset, fiscal_year_start_month=base.fiscal_year_start_month,
                      sequence_start=base.sequence_start,
                      counter_scope=tuple(scope) if scope is not None else None,
                      version=base.version, active=True)


def preview_numbers(session: Session, ctx: NumberingContext,
                    body: TemplateTrial | Mapping[str, Any], *, now: datetime,
                    timezone: str, count: int = 1, base: ConfigView | None = None) -> Preview:
    """The next ``count`` numbers of the context's counter, consuming nothing.

    The first number raises what issuing would (``SEQUENCE_EXHAUSTED``, ``NUMBER_LENGTH``);
    later ones stop quietly at the counter's capacity.
    """
    config = preview_config(session, ctx, body, base)
    config, counter_key, day = issuing.prepare(session, ctx, now=now, timezone=timezone,
                                               config=config)
    last = session.get(Counter, counter_key)
    first = (last.last_sequence if last else config.sequence_start - 1) + 1
    numbers: list[tuple[int, str]] = []
    for sequence in range(first, first + max(1, count)):
        if numbers and sequence > config.parsed.capacity:
            break
        number = templates.render_number(config.parsed, ctx, sequence, day,
                                         config.fiscal_year_start_month)
        templates.check_number_length(number)
        numbers.append((sequence, number))
    return Preview(config, counter_key, tuple(numbers))


__all__ = ["Preview", "preview_config", "preview_numbers"]
