"""The numbering context: what a request says about the document it wants a number for."""
from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date

# The counter-key dimensions, in the fixed order of docs/reference.md#counter-keys-and-periods,
# with the context field each reads.
DIMENSIONS: tuple[tuple[str, str], ...] = (
    ("PROJECT", "project"),
    ("CORR_TYPE", "correspondence_type"),
    ("ORIGINATOR", "originator"),
    ("RECIPIENT", "recipient"),
    ("SUB_TYPE", "sub_type"),
    ("RFA_TYPE", "rfa_type"),
    ("DISCIPLINE", "discipline"),
)
DIMENSION_FIELD: dict[str, str] = dict(DIMENSIONS)

# Catalog kind of each code-carrying context field (docs/reference.md#reference-catalog).
# Originator and recipient are organizations.
FIELD_KIND: dict[str, str] = {
    "project": "project",
    "correspondence_type": "correspondence_type",
    "originator": "organization",
    "recipient": "organization",
    "sub_type": "sub_type",
    "rfa_type": "rfa_type",
    "discipline": "discipline",
}


@dataclass(frozen=True)
class NumberingContext:
    project: str
    correspondence_type: str | None = None
    originator: str | None = None
    recipient: str | None = None
    sub_type: str | None = None
    rfa_type: str | None = None
    discipline: str | None = None
    revision: str | None = None
    document_date: date | None = None
    document_ref: str | None = None

    def code_for(self, dimension: str) -> str | None:
        return getattr(self, DIMENSION_FIELD[dimension])

    def to_dict(self) -> dict:
        # Plain getattr, not dataclasses.asdict (a deep copy): this runs for every request at
        # the front door and for every audit row in the workers.
        out = {name: getattr(self, name) for name in _FIELD_NAMES}
        out["document_date"] = self.document_date.isoformat() if self.document_date else None
        return out

    @classmethod
    def from_dict(cls, data: dict) -> NumberingContext:
        values = {k: v for k, v in data.items() if k in _FIELD_NAMES}
        if isinstance(values.get("document_date"), str):
            values["document_date"] = date.fromisoformat(values["document_date"])
        return cls(**values)


_FIELD_NAMES = tuple(f.name for f in fields(NumberingContext))
