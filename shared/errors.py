"""One error hierarchy for the whole domain.

Every failure a client can see is a ``DocnumError`` with a stable ``code``; the API maps it to
RFC 9457 problem+json once (``api/problems.py``), workers store it as the request's error.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ProblemCode(StrEnum):
    """Every ``code`` a problem document can carry: the errors raise these, and the OpenAPI
    document's ``Problem.code`` is this enum (``api/contract.py``)."""

    VALIDATION_FAILED = "VALIDATION_FAILED"
    UNKNOWN_CODE = "UNKNOWN_CODE"
    CODE_INACTIVE = "CODE_INACTIVE"
    NO_CONFIG = "NO_CONFIG"
    TEMPLATE_INVALID = "TEMPLATE_INVALID"
    NUMBER_LENGTH = "NUMBER_LENGTH"
    IDEMPOTENCY_KEY_REQUIRED = "IDEMPOTENCY_KEY_REQUIRED"
    IDEMPOTENCY_KEY_INVALID = "IDEMPOTENCY_KEY_INVALID"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    SEQUENCE_EXHAUSTED = "SEQUENCE_EXHAUSTED"
    DUPLICATE_NUMBER = "DUPLICATE_NUMBER"
    INVALID_STATE = "INVALID_STATE"
    COUNTER_FLOOR = "COUNTER_FLOOR"
    SELF_APPROVAL = "SELF_APPROVAL"
    ALREADY_APPROVED = "ALREADY_APPROVED"
    CONFLICT = "CONFLICT"
    RESERVATION_EXPIRED = "RESERVATION_EXPIRED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    BAD_REQUEST = "BAD_REQUEST"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    RATE_LIMITED = "RATE_LIMITED"
    SERVICE_BUSY = "SERVICE_BUSY"
    MISROUTED = "MISROUTED"
    INTERNAL_ERROR = "INTERNAL_ERROR"


# code -> (HTTP status, English title, Thai title)
CATALOG: dict[ProblemCode, tuple[int, str, str]] = {
    ProblemCode.VALIDATION_FAILED: (422, "Validation failed", "ข้อมูลไม่ถูกต้อง"),
    ProblemCode.UNKNOWN_CODE: (422, "Unknown code", "ไม่พบรหัสอ้างอิง"),
    ProblemCode.CODE_INACTIVE: (422, "Code is inactive", "รหัสอ้างอิงถูกปิดใช้งาน"),
    ProblemCode.NO_CONFIG: (422, "No numbering configuration", "ไม่พบการตั้งค่าเลขที่เอกสาร"),
    ProblemCode.TEMPLATE_INVALID: (422, "Template is invalid", "รูปแบบเลขที่เอกสารไม่ถูกต้อง"),
    ProblemCode.NUMBER_LENGTH: (422, "Number length out of range", "ความยาวเลขที่เอกสารไม่ถูกต้อง"),
    ProblemCode.IDEMPOTENCY_KEY_REQUIRED: (400, "Idempotency-Key header required",
                                           "ต้องระบุ Idempotency-Key"),
    ProblemCode.IDEMPOTENCY_KEY_INVALID: (400, "Idempotency-Key is invalid",
                                          "Idempotency-Key ไม่ถูกต้อง"),
    ProblemCode.IDEMPOTENCY_KEY_REUSED: (422, "Idempotency-Key reused with a different body",
                                         "Idempotency-Key ถูกใช้กับคำขออื่นแล้ว"),
    ProblemCode.SEQUENCE_EXHAUSTED: (409, "Sequence exhausted", "เลขลำดับเต็มแล้ว"),
    ProblemCode.DUPLICATE_NUMBER: (409, "Duplicate number", "เลขที่เอกสารซ้ำ"),
    ProblemCode.INVALID_STATE: (409, "Invalid state", "สถานะไม่ถูกต้อง"),
    ProblemCode.COUNTER_FLOOR: (409, "Below the counter floor", "ต่ำกว่าเลขที่ออกไปแล้ว"),
    ProblemCode.SELF_APPROVAL: (409, "Requester cannot approve", "ผู้ขอไม่สามารถอนุมัติเองได้"),
    ProblemCode.ALREADY_APPROVED: (409, "Already approved by this user", "ผู้ใช้นี้อนุมัติแล้ว"),
    ProblemCode.CONFLICT: (409, "Conflict", "ข้อมูลขัดแย้ง"),
    ProblemCode.RESERVATION_EXPIRED: (410, "Reservation expired", "การจองหมดอายุแล้ว"),
    ProblemCode.UNAUTHENTICATED: (401, "Authentication required", "ต้องยืนยันตัวตน"),
    ProblemCode.FORBIDDEN: (403, "Forbidden", "ไม่มีสิทธิ์"),
    ProblemCode.NOT_FOUND: (404, "Not found", "ไม่พบข้อมูล"),
    ProblemCode.METHOD_NOT_ALLOWED: (405, "Method not allowed", "ไม่รองรับเมธอดนี้"),
    ProblemCode.BAD_REQUEST: (400, "Bad request", "คำขอไม่ถูกต้อง"),
    ProblemCode.PAYLOAD_TOO_LARGE: (413, "Payload too large", "ข้อมูลมีขนาดใหญ่เกินไป"),
    ProblemCode.UNSUPPORTED_MEDIA_TYPE: (415, "Unsupported media type", "ไม่รองรับชนิดข้อมูลนี้"),
    ProblemCode.RATE_LIMITED: (429, "Too many requests", "มีคำขอมากเกินไป"),
    ProblemCode.SERVICE_BUSY: (503, "Service busy", "ระบบกำลังยุ่ง"),
    ProblemCode.MISROUTED: (503, "Request reached another deployment", "คำขอถูกส่งไปยังระบบอื่น"),
    ProblemCode.INTERNAL_ERROR: (500, "Internal error", "เกิดข้อผิดพลาดภายในระบบ"),
}


@dataclass
class FieldError:
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


@dataclass(eq=False)
class DocnumError(Exception):
    """A failure with a stable code. ``detail`` is for humans; ``code`` is for programs."""

    code: str  # a ProblemCode (a plain string is converted)
    detail: str = ""
    errors: list[FieldError] = field(default_factory=list)
    retry_after: int | None = None
    # Extra machine-readable members for the problem document (e.g. the template rule).
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.code not in CATALOG:
            raise ValueError(f"unknown error code {self.code!r}")
        self.code = ProblemCode(self.code)
        super().__init__(f"{self.code}: {self.detail}")

    @property
    def status(self) -> int:
        return CATALOG[self.code][0]

    def title(self, lang: str = "en") -> str:
        _, en, th = CATALOG[self.code]
        return th if lang == "th" else en

    def to_dict(self) -> dict[str, Any]:
        """Serialisable form, stored in the result backend and rebuilt by ``from_dict``."""
        out: dict[str, Any] = {"code": self.code, "detail": self.detail}
        if self.errors:
            out["errors"] = [e.as_dict() for e in self.errors]
        if self.extra:
            out["extra"] = self.extra
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DocnumError:
        code = data.get("code") if data.get("code") in CATALOG else "INTERNAL_ERROR"
        return cls(
            code=code,
            detail=str(data.get("detail", "")),
            errors=[FieldError(e["field"], e["message"]) for e in data.get("errors", [])],
            extra=dict(data.get("extra", {})),
            retry_after=data.get("retry_after") if isinstance(data.get("retry_after"), int)
            else None,
        )


def validation_failed(field_name: str, message: str) -> DocnumError:
    return DocnumError("VALIDATION_FAILED", f"{field_name}: {message}",
                       errors=[FieldError(field_name, message)])


class TemplateInvalid(DocnumError):
    """A template broke a rule of docs/reference.md#template-validation; ``rule`` and
    ``position`` say which and where."""

    def __init__(self, rule: str, position: int | None, message: str) -> None:
        where = f" at position {position}" if position is not None else ""
        super().__init__(
            code="TEMPLATE_INVALID",
            detail=f"rule '{rule}'{where}: {message}",
            errors=[FieldError("template", message)],
            extra={"rule": rule, "position": position},
        )
        self.rule = rule
        self.position = position
