"""The API's request and response bodies as Pydantic models: each request rule is stated here once.

The API validates every request with these models (``api/contract.py``) and generates its OpenAPI
document from them (docs/reference.md#http-api); the console and the domain services take the
validated models, so no rule is written twice. ``parse`` turns a failed validation into the
``DocnumError`` a client sees: 422 ``VALIDATION_FAILED`` with one ``{field, message}`` per
problem, or the more precise code a rule names (``NUMBER_LENGTH``, ``IDEMPOTENCY_KEY_*``).

Bodies are strict (``"5"`` is not a number, ``1`` is not ``true``); query parameters and
headers arrive as text and are converted. Response models describe what the views return; the
test suite checks every answer against the generated document.
"""
from __future__ import annotations

import base64
import json
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from docnum.shared.audit import OPERATIONS
from docnum.shared.context import NumberingContext
from docnum.shared.errors import DocnumError, FieldError, ProblemCode
from docnum.shared.ledger import SOURCES, STATES
from docnum.shared.templates import (
    MAX_CODE_LENGTH,
    MAX_NUMBER_LENGTH,
    PERIOD_PATTERN,
    RESETS,
    code_problem,
)

MAX_TEXT = 255            # document_ref, catalog names
MAX_REASON = 1000         # every reason and change_reason
OVERRIDE_REASON_MIN = 10
RESET_REASON_MIN = 20
CHANGE_REASON_MIN = 10
MAX_TOKEN = 64
MAX_IDEMPOTENCY_KEY = 255
DEFAULT_LIMIT, MAX_LIMIT = 50, 500
DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S = 5.0, 30.0
MAX_SEQUENCE_START = 999_999_999

# The reference's letter from คคง. to สคฉ.3: the examples of the document (and what
# schemathesis's examples phase sends first).
CONTEXT_EXAMPLE = {"project": "LCBP3", "correspondence_type": "LETTER", "originator": "คคง.",
                   "recipient": "สคฉ.3", "document_date": "2025-06-15"}
NUMBER_EXAMPLE = "คคง.-สคฉ.3-0001-2568"
COUNTER_KEY_EXAMPLE = "LCBP3|ORIGINATOR=คคง.|RECIPIENT=สคฉ.3|Y2025"
REQUEST_ID_EXAMPLE = "0b6f0c1e-8a61-5b7e-9d3c-2f4a1e6b7c80"
ISSUED_EXAMPLE = {
    "document_number": NUMBER_EXAMPLE, "sequence": 1, "state": "CONFIRMED", "source": "GENERATE",
    "counter_key": COUNTER_KEY_EXAMPLE, "config_id": 1, "config_version": 1,
    "document_date": "2025-06-15", "issued_at": "2025-06-15T03:12:45.120934Z",
    "request_id": REQUEST_ID_EXAMPLE}


# --------------------------------------------------------------------------- JSON Schema

class ContractJsonSchema(GenerateJsonSchema):
    """Pydantic's JSON Schema without a title on every property (the name says it), and
    without ``"default": null`` (an optional member's absence says it)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        out = super().default_schema(schema)
        if "default" in out and out["default"] is None:
            del out["default"]
        return out


class ParameterJsonSchema(ContractJsonSchema):
    """Query and header parameters: a parameter that is absent is ``None`` in the model, but a
    query string cannot carry ``null``, so the document shows only the real type."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])


class Schema(BaseModel):
    """Base of every model: documented with ``ContractJsonSchema``."""

    json_schema_generator: ClassVar[type[GenerateJsonSchema]] = ContractJsonSchema

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("schema_generator", cls.json_schema_generator)
        return super().model_json_schema(*args, **kwargs)


class Body(Schema):
    """A JSON request body: strict types, unknown members ignored."""

    model_config = ConfigDict(strict=True)
    # field name -> problem code for every failure of that field (instead of VALIDATION_FAILED)
    problem_codes: ClassVar[dict[str, ProblemCode]] = {}


class Params(Schema):
    """Query or header parameters: text, converted to the field's type."""

    json_schema_generator = ParameterJsonSchema
    problem_codes: ClassVar[dict[str, ProblemCode]] = {}


# --------------------------------------------------------------------------- errors

def _field_of(error: Any) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    return loc or str((error.get("ctx") or {}).get("field", "body"))


def problem_of(model: type[Schema], exc: ValidationError) -> DocnumError:
    """The problem a failed validation answers: the first error's own code when a rule names
    one (a custom error type that is a ``ProblemCode``, or the model's ``problem_codes``),
    else 422 ``VALIDATION_FAILED``; ``errors`` lists each field that failed."""
    codes: dict[str, ProblemCode] = getattr(model, "problem_codes", {})
    found: list[tuple[ProblemCode, FieldError]] = []
    for error in exc.errors(include_url=False):
        field = _field_of(error)
        kind = error["type"]
        code = ProblemCode(kind) if kind in ProblemCode.__members__ else \
            codes.get(field, ProblemCode.VALIDATION_FAILED)
        absent = kind == "missing" or (kind.endswith("_type") and error.get("input") is None)
        found.append((code, FieldError(field, "is required" if absent else error["msg"])))
    code = next((c for c, _ in found if c != ProblemCode.VALIDATION_FAILED),
                ProblemCode.VALIDATION_FAILED)
    errors = [e for c, e in found if c == code]
    return DocnumError(code, "; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors)


M = TypeVar("M", bound=Schema)


def parse(model: type[M], data: object) -> M:
    """``data`` validated by ``model``, or the ``DocnumError`` of its first broken rule."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise problem_of(model, exc) from None


def as_model(model: type[M], data: M | Mapping[str, Any]) -> M:
    """``data`` itself when it is a ``model`` already (the API validated it), else parsed:
    the console, the command line and the tests hand the services plain dicts."""
    return data if isinstance(data, model) else parse(model, data)


def _fail(message: str, kind: str = "value_error", **context: Any) -> PydanticCustomError:
    # Only {name} of a context key is substituted: a message quoting a "{" stays as it is.
    return PydanticCustomError(kind, message, context or None)


# --------------------------------------------------------------------------- field types

KINDS = ("project", "organization", "correspondence_type", "sub_type", "rfa_type", "discipline")


def _code(value: str) -> str:
    problem = code_problem(value)
    if problem:
        raise _fail(problem)
    return value


# The length is the one code rule's (``templates.code_problem``, whose words the errors use);
# the document states it too, for clients.
Code = Annotated[str, Field(description="A catalog code: letters, marks, digits and . - _",
                            examples=["คคง."],
                            json_schema_extra={"minLength": 1, "maxLength": MAX_CODE_LENGTH}),
                 AfterValidator(_code)]


def _printable(value: str) -> str:
    # No control, bidi-override or unpaired surrogate characters: text that prints as it reads.
    if not value.isprintable():
        raise _fail("must be printable text (no control or bidi characters)")
    return value


def _non_blank(value: str) -> str:
    if not value.strip():
        raise _fail("must not be blank")
    return value


Text = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_printable)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_TEXT), AfterValidator(_printable),
                 AfterValidator(_non_blank)]


def _reason(minimum: int) -> Any:
    def check(value: str) -> str:
        if len(value.strip()) < minimum:
            raise _fail("is required" if minimum <= 1 else
                        f"is required, at least {minimum} characters")
        return value.strip()

    return Annotated[str, Field(min_length=minimum, max_length=MAX_REASON,
                                description="Printable text; surrounding spaces are dropped."),
                     AfterValidator(_printable), AfterValidator(check)]


Reason = _reason(1)
OverrideReason = _reason(OVERRIDE_REASON_MIN)
ResetReason = _reason(RESET_REASON_MIN)
ChangeReason = _reason(CHANGE_REASON_MIN)


def _iso_date(value: object) -> object:
    if isinstance(value, str):
        try:
            if len(value) != 10:
                raise ValueError(value)
            return date.fromisoformat(value)
        except ValueError:
            raise _fail("must be a date YYYY-MM-DD") from None
    return value


DocumentDate = Annotated[date, BeforeValidator(_iso_date)]


def number_problem(value: str) -> DocnumError | None:
    """Why a number given by a person (override, import) cannot go in the ledger, or None.

    1-50 characters (the longest number a template may render), no spaces or control
    characters: what a rendered number could look like, so it prints and compares cleanly.
    """
    if value == "":
        return DocnumError(ProblemCode.VALIDATION_FAILED, "document_number: is required",
                           errors=[FieldError("document_number", "is required")])
    if len(value) > MAX_NUMBER_LENGTH:
        return DocnumError(ProblemCode.NUMBER_LENGTH,
                           f"document number is {len(value)} characters long; at most "
                           f"{MAX_NUMBER_LENGTH} are allowed",
                           errors=[FieldError("document_number", "too long")])
    for ch in value:
        if ch.isspace() or unicodedata.category(ch)[0] in "CZ":
            message = f"character {ch!r} (U+{ord(ch):04X}) is not allowed"
            return DocnumError(ProblemCode.VALIDATION_FAILED, f"document_number: {message}",
                               errors=[FieldError("document_number", message)])
    return None


def _person_number(value: str) -> str:
    problem = number_problem(value)
    if problem:
        raise _fail(problem.errors[0].message if problem.code == ProblemCode.VALIDATION_FAILED
                    else problem.detail, problem.code)
    return value


PersonNumber = Annotated[str, AfterValidator(_person_number),
                         Field(json_schema_extra={"minLength": 1,
                                                  "maxLength": MAX_NUMBER_LENGTH},
                               description="At most 50 characters, no spaces or control "
                                           "characters (longer: 422 NUMBER_LENGTH)",
                               examples=["คคง.-สคฉ.3-0900-2568"])]


def _blank_is_none(value: object) -> object:
    return None if value == "" else value


def _cursor(value: object) -> object:
    if value is None or value == "":
        return None
    try:
        return base64.urlsafe_b64decode(str(value).encode("ascii")).decode("utf-8")
    except (ValueError, UnicodeError):
        raise _fail("is not a cursor this service issued") from None


def encode_cursor(value: object) -> str:
    return base64.urlsafe_b64encode(str(value).encode("utf-8")).decode("ascii")


Cursor = Annotated[str | None, BeforeValidator(_cursor),
                   Field(description="next_cursor of the previous page")]


def _id_cursor(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.lstrip("-").isdigit():
        raise _fail("is not a cursor this service issued")
    return int(value)


def _gap_cursor(value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    try:
        key, sequence = json.loads(value)
        if not isinstance(key, str) or not isinstance(sequence, int):
            raise ValueError(value)
    except (ValueError, TypeError):
        raise _fail("is not a cursor this service issued") from None
    return key, sequence


Filter = Annotated[str | None, BeforeValidator(_blank_is_none),
                   Field(description="Empty or absent: not filtered")]
Period = Annotated[str, Field(pattern=f"^(?:{PERIOD_PATTERN})$", examples=["Y2025"])]
Reset = Literal[*RESETS]
Kind = Literal[*KINDS]
Mode = Literal["generate", "reserve"]
ResetStatus = Literal["PENDING_APPROVAL", "EXECUTED", "FAILED"]


def _instant(value: object) -> object:
    """``2025-06-15`` (midnight UTC) or an ISO 8601 date-time; naive means UTC."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        return value
    try:
        if len(value) == 10:
            instant = datetime.combine(date.fromisoformat(value), datetime.min.time())
        else:
            instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _fail("must be a date YYYY-MM-DD or an ISO 8601 date-time") from None
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


Instant = Annotated[datetime | None, BeforeValidator(_instant)]
Hex64 = Annotated[str, Field(pattern="^[0-9a-f]{64}$", description="SHA-256, hex")]


# --------------------------------------------------------------------------- parameters

class Page(Params):
    """One page of a list: ``limit`` items after ``cursor``."""

    cursor: Cursor = None
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)


class IdPage(Page):
    """A page of a list ordered by a numeric id (configs, history, audit, resets)."""

    def after_id(self) -> int | None:
        return _id_cursor(self.cursor)

    @model_validator(mode="after")
    def _numeric_cursor(self) -> IdPage:
        _id_cursor(self.cursor)
        return self


class ProjectFilter(Page):
    project: Filter = None


class ConfigListQuery(ProjectFilter, IdPage):
    pass


class CounterListQuery(ProjectFilter):
    correspondence_type: Filter = Field(None, description="Needs project; empty: not filtered")

    @model_validator(mode="after")
    def _type_needs_project(self) -> CounterListQuery:
        if self.correspondence_type is not None and self.project is None:
            raise _fail("is required when filtering by correspondence_type", field="project")
        return self


class GapQuery(CounterListQuery):
    period: Annotated[Period | None, BeforeValidator(_blank_is_none)] = None
    counter_key: Filter = None

    def after(self) -> tuple[str, int] | None:
        return _gap_cursor(self.cursor)

    @model_validator(mode="after")
    def _pair_cursor(self) -> GapQuery:
        _gap_cursor(self.cursor)
        return self


class ResetListQuery(IdPage):
    status: Annotated[ResetStatus | None, BeforeValidator(_blank_is_none)] = None


class AuditFilters(Params):
    """The audit trail's filters (``GET /audit`` and the console's audit page)."""

    document_number: Filter = None
    operation: Annotated[Literal[*OPERATIONS] | None, BeforeValidator(_blank_is_none)] = None
    actor: Filter = None
    counter_key: Filter = None
    request_id: Filter = None
    success: Annotated[bool | None, BeforeValidator(_blank_is_none)] = None
    start: Instant = Field(None, alias="from", description="Inclusive; a date YYYY-MM-DD "
                                                          "is midnight UTC")
    end: Instant = Field(None, alias="to", description="Exclusive; a date YYYY-MM-DD is "
                                                      "midnight UTC")

    @model_validator(mode="after")
    def _window(self) -> AuditFilters:
        if self.start and self.end and self.start >= self.end:
            raise _fail("must be after from", field="to")
        return self


class AuditQuery(AuditFilters, IdPage):
    pass


class LookupQuery(Params):
    project: str | None = Field(None, description="Only when the number exists in several "
                                                  "projects")


def _blank_is_false(value: object) -> object:
    return False if isinstance(value, str) and value.strip() == "" else value


class ImportQuery(Params):
    dry_run: Annotated[bool, BeforeValidator(_blank_is_false)] = Field(
        False, description="Validate and report without importing")


IMPORT_COLUMNS_HELP = ("CSV (UTF-8) or XLSX; columns document_number, project, "
                       "correspondence_type, originator, recipient, sub_type, rfa_type, "
                       "discipline, document_date, state (optional revision, document_ref)")


def _upload(value: object) -> object:
    if not (hasattr(value, "read") and hasattr(value, "filename")):
        raise _fail("is required: a CSV or XLSX file")
    return value


class ImportForm(Params):
    """The multipart form of a bulk import."""

    file: Annotated[Any, PlainValidator(_upload),
                    WithJsonSchema({"type": "string", "format": "binary",
                                    "description": IMPORT_COLUMNS_HELP})]


_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", re.ASCII)


def _plain_number(value: object) -> object:
    # A plain ASCII number (JSON's grammar, no sign): float() alone would also take "1_0",
    # "١" (Arabic-Indic one), " 5 " or "infinity".
    if value == "":
        return DEFAULT_TIMEOUT_S
    if isinstance(value, str) and (len(value) > 32 or not _DECIMAL.fullmatch(value)):
        raise _fail(f"must be a number of seconds 0-{MAX_TIMEOUT_S:g}")
    return value


class WaitQuery(Params):
    timeout: Annotated[float, BeforeValidator(_plain_number)] = Field(
        DEFAULT_TIMEOUT_S, ge=0, le=MAX_TIMEOUT_S, allow_inf_nan=False,
        description="Seconds to wait for the number; 0 answers 202 at once")


class IdempotencyHeaders(Params):
    """``Idempotency-Key``: the same client and key always name the same request."""

    idempotency_key: str = Field(alias="Idempotency-Key", min_length=1,
                                 max_length=MAX_IDEMPOTENCY_KEY, pattern=r"^[ -~]+$",
                                 description="1-255 printable ASCII characters",
                                 examples=["order-42"])
    problem_codes = {"Idempotency-Key": ProblemCode.IDEMPOTENCY_KEY_INVALID}

    @model_validator(mode="before")
    @classmethod
    def _present(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("Idempotency-Key"):
            raise _fail("send an Idempotency-Key header", ProblemCode.IDEMPOTENCY_KEY_REQUIRED,
                        field="Idempotency-Key")
        return data


# --------------------------------------------------------------------------- request bodies

class NumberingContextBody(Body):
    """What the document is: the codes and date a number is made of. A member that is null
    counts as absent."""

    model_config = ConfigDict(json_schema_extra={"examples": [CONTEXT_EXAMPLE]})

    project: Code
    correspondence_type: Code
    originator: Code | None = None
    recipient: Code | None = None
    sub_type: Code | None = None
    rfa_type: Code | None = None
    discipline: Code | None = None
    revision: Code | None = None
    document_date: DocumentDate | None = Field(None, description="Decides the period; "
                                                                 "default: today")
    document_ref: Text | None = Field(None, description="The caller's own reference")

    def to_context(self) -> NumberingContext:
        return NumberingContext(
            project=self.project, correspondence_type=self.correspondence_type,
            originator=self.originator, recipient=self.recipient, sub_type=self.sub_type,
            rfa_type=self.rfa_type, discipline=self.discipline, revision=self.revision,
            document_date=self.document_date, document_ref=self.document_ref)


class IssueRequest(NumberingContextBody):
    model_config = ConfigDict(json_schema_extra={
        "examples": [{**CONTEXT_EXAMPLE, "mode": "generate"}]})

    mode: Mode = "generate"


class TemplateTrial(Body):
    """An unsaved template to try on the real counter (``reset`` and ``counter_scope`` default
    to the saved config's)."""

    template: str | None = Field(None, description="An unsaved template to try")
    reset: Reset | None = None
    counter_scope: list[str] | None = None


class PreviewRequest(NumberingContextBody, TemplateTrial):
    """A context and, to try a template before saving it, an unsaved template."""


class Confirm(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"token": "3f1c2a9e8b7d4c6a", "document_ref": "DMS-2025-000123"}]})

    token: str = Field(min_length=1, max_length=MAX_TOKEN,
                       description="The reservation token from /reserve")
    document_ref: Text | None = None


class Cancel(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"token": "3f1c2a9e8b7d4c6a", "reason": "the letter was not sent"}]})

    token: str = Field(min_length=1, max_length=MAX_TOKEN)
    reason: Reason


class VoidAndReplace(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"document_number": NUMBER_EXAMPLE, "reason": "issued for the wrong recipient",
         "replace": True, "context": CONTEXT_EXAMPLE}]})

    document_number: str = Field(min_length=1, max_length=64)
    project: str | None = Field(None, description="Only when the number exists in several "
                                                  "projects")
    reason: Reason
    replace: bool = False
    context: NumberingContextBody | None = Field(
        None, description="Where the replacement goes (default: the original's context); "
                          "only with replace: true")

    @model_validator(mode="after")
    def _context_needs_replace(self) -> VoidAndReplace:
        if self.context is not None and not self.replace:
            raise _fail("context: is only used with replace: true", field="context")
        return self


class ManualOverride(NumberingContextBody):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {**CONTEXT_EXAMPLE, "document_number": "คคง.-สคฉ.3-0900-2568",
         "reason": "legacy number from the paper register"}]})

    document_number: PersonNumber
    reason: OverrideReason


class ResetCounter(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"counter_key": COUNTER_KEY_EXAMPLE, "new_last_sequence": 10,
         "reason": "numbers 11-40 were issued by a test run by mistake"}]})

    counter_key: str = Field(min_length=1, max_length=300)
    new_last_sequence: int = Field(ge=0)
    reason: ResetReason


class CatalogEntryWrite(Body):
    """The kind and the code are the path's; the same members in the body are ignored."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "Team C", "active": True}]})

    name: Name
    active: bool = True


class ConfigFields(Body):
    template: str = Field(description="docs/reference.md#template-validation; a broken rule "
                                      "is 422 TEMPLATE_INVALID")
    reset: Reset
    fiscal_year_start_month: int = Field(10, ge=1, le=12)
    sequence_start: int = Field(1, ge=0, le=MAX_SEQUENCE_START)
    counter_scope: list[str] | None = Field(None, description="Dimensions the counter is "
                                                              "kept per (default: all)")
    active: bool = True


class ConfigCreate(ConfigFields):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"project": "P2", "correspondence_type": "RFI",
         "template": "{PROJECT}-{CORR_TYPE}-{SEQ:4}-{YEAR:B.E.}", "reset": "YEARLY"}]})

    project: Code
    correspondence_type: Code | None = Field(None, description="None: the project default")
    change_reason: Annotated[str, Field(max_length=MAX_REASON),
                             AfterValidator(_printable)] | None = None


class ConfigUpdate(Body):
    """Only the members sent change; the version goes up by one."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"template": "{ORIGINATOR}-{RECIPIENT}-{SEQ:5}-{YEAR:B.E.}",
         "change_reason": "five digits from the 2026 policy"}]})

    # Absent: unchanged (null is refused, except for counter_scope).
    template: str = Field(None)
    reset: Reset = Field(None)
    fiscal_year_start_month: int = Field(None, ge=1, le=12)
    sequence_start: int = Field(None, ge=0, le=MAX_SEQUENCE_START)
    counter_scope: list[str] | None = None
    active: bool = Field(None)
    change_reason: ChangeReason
    project: str | None = Field(None, description="Must be the config's own (cannot change)")
    correspondence_type: str | None = Field(None, description="Must be the config's own")
    id: int | None = Field(None, description="Ignored")
    version: int | None = Field(None, description="When given, must be the current version "
                                                  "(else 409 CONFLICT)")

    def changes(self) -> dict[str, Any]:
        """The editable members sent (``counter_scope: null`` is a change too)."""
        return {k: getattr(self, k) for k in ConfigFields.model_fields
                if k in self.model_fields_set}


# --------------------------------------------------------------------------- responses

State = Literal[*STATES]
Source = Literal[*SOURCES]


class Reservation(Schema):
    token: str
    expires_at: datetime


class IssuedNumber(Schema):
    """An issued number, the same whether a worker or the database answers."""

    model_config = ConfigDict(json_schema_extra={"examples": [ISSUED_EXAMPLE]})

    document_number: str
    sequence: int | None
    state: State
    source: Source
    counter_key: str | None
    config_id: int | None
    config_version: int | None
    document_date: date | None
    issued_at: datetime
    request_id: str
    document_ref: str | None = None
    reservation: Reservation | None = Field(None, description="Only while RESERVED by "
                                                              "/reserve")
    replaces: str | None = Field(None, description="A replacement: the number it replaces")
    row_hash: Hex64 | None = Field(None, description="The row's hash on its counter's ledger "
                                                     "chain (docs/verification.md): keep it as "
                                                     "a receipt")


class Queued(Schema):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"request_id": REQUEST_ID_EXAMPLE, "status": "queued",
         "status_url": f"/api/v1/document-numbering/requests/{REQUEST_ID_EXAMPLE}"}]})

    request_id: str
    status: Literal["queued"]
    status_url: str


class RequestError(Schema):
    code: ProblemCode
    title: str
    status: int
    detail: str


class RequestStatus(Schema):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"request_id": REQUEST_ID_EXAMPLE, "status": "succeeded", "result": ISSUED_EXAMPLE}]})

    request_id: str
    status: Literal["queued", "running", "succeeded", "failed"]
    result: IssuedNumber | None = Field(None, description="When succeeded")
    error: RequestError | None = Field(None, description="When failed")


class Preview(Schema):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"document_number": NUMBER_EXAMPLE, "sequence": 1, "counter_key": COUNTER_KEY_EXAMPLE,
         "config_version": 1}]})

    document_number: str
    sequence: int
    counter_key: str
    config_version: int | None = Field(description="None for an unsaved template")


class AuditRow(Schema):
    id: int
    operation: Literal[*OPERATIONS]
    actor: str | None
    client_ip: str | None
    user_agent: str | None
    request_id: str | None
    counter_key: str | None
    document_number: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    lock_wait_ms: int | None
    duration_ms: int | None
    retry_count: int
    fallback_used: Literal["NONE", "DB_ONLY"]
    success: bool
    error_code: str | None
    created_at: datetime


class VoidDetails(Schema):
    reason: str | None
    by: str | None
    at: datetime | None


class VoidedNumber(IssuedNumber):
    void: VoidDetails
    replaced_by: str | None = None


class NumberDetails(IssuedNumber):
    """An issued number, what became of it, and every audit row that names it."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {**ISSUED_EXAMPLE, "project": "LCBP3", "issued_by": "alice", "history": []}]})

    project: str
    issued_by: str
    void: VoidDetails | None = None
    state_reason: str | None = None
    replaced_by: str | None = None
    history: list[AuditRow]


class VoidResult(Schema):
    voided: VoidedNumber
    replacement: IssuedNumber | None = None


class CatalogEntry(Schema):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"kind": "organization", "code": "คคง.", "name": "คณะกรรมการควบคุมงาน",
         "active": True}]})

    kind: Kind
    code: str
    name: str
    active: bool


class Config(Schema):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": 1, "project": "LCBP3", "correspondence_type": "LETTER",
         "template": "{ORIGINATOR}-{RECIPIENT}-{SEQ:4}-{YEAR:B.E.}", "reset": "YEARLY",
         "fiscal_year_start_month": 10, "sequence_start": 1, "counter_scope": None,
         "version": 1, "active": True, "created_by": "admin",
         "created_at": "2025-01-02T03:04:05.000000Z",
         "updated_at": "2025-01-02T03:04:05.000000Z"}]})

    id: int
    project: str
    correspondence_type: str | None
    template: str
    reset: Reset
    fiscal_year_start_month: int
    sequence_start: int
    counter_scope: list[str] | None
    version: int
    active: bool
    created_by: str
    created_at: datetime | None
    updated_at: datetime | None


class ConfigVersion(Schema):
    config_id: int
    version: int
    template: str
    reset: Reset
    fiscal_year_start_month: int
    sequence_start: int
    counter_scope: list[str] | None
    active: bool
    changed_by: str
    changed_at: datetime | None
    change_reason: str | None


class ImportRowError(Schema):
    row: int
    code: ProblemCode
    message: str
    field: str | None = None


class CounterRaise(Schema):
    model_config = ConfigDict(populate_by_name=True)

    counter_key: str
    from_: int = Field(alias="from")
    to: int


class ImportReport(Schema):
    rows: int
    imported: int
    already_imported: int
    dry_run: bool
    errors: list[ImportRowError]
    counter_raises: list[CounterRaise]


class ResetApproval(Schema):
    approver: str
    approved_at: datetime | None


class ResetRequest(Schema):
    reset_request_id: int
    status: ResetStatus
    config_id: int
    counter_key: str
    new_last_sequence: int
    reason: str
    requested_by: str
    requested_at: datetime | None
    executed_at: datetime | None
    approvals: list[ResetApproval]


class CounterRow(Schema):
    counter_key: str
    project: str
    last_sequence: int
    capacity: int
    utilization: float = Field(ge=0, le=1)
    updated_at: datetime | None


class Gap(Schema):
    counter_key: str
    sequence: int
    document_number: str | None
    state: Literal["RESERVED", "CANCELLED", "EXPIRED", "VOID", "MISSING"]
    reason: str


T = TypeVar("T")


class PageOf(Schema, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null: "
                                                "this was the last")


class CatalogPage(PageOf[CatalogEntry]):
    pass


class ConfigPage(PageOf[Config]):
    pass


class ConfigHistoryPage(PageOf[ConfigVersion]):
    pass


class ResetRequestPage(PageOf[ResetRequest]):
    pass


class AuditPage(PageOf[AuditRow]):
    pass


class CounterPage(PageOf[CounterRow]):
    pass


class GapPage(PageOf[Gap]):
    pass


# --------------------------------------------------------------------------- proofs
# docs/verification.md: what the receipt, checkpoint and consistency documents hold.

class Checkpoint(Schema):
    """Signed with Ed25519 over the canonical JSON of the other members
    (docs/verification.md#checkpoints)."""

    checkpoint: int
    tree_size: int
    root_hash: Hex64
    created_at: datetime
    key_id: str
    note: dict[str, Any]
    signature: str = Field(pattern="^[0-9a-f]{128}$")


class CheckpointPage(PageOf[Checkpoint]):
    pass


class PublicKey(Schema):
    algorithm: Literal["Ed25519"]
    key_id: str
    public_key: Hex64
    pem: str


class Consistency(Schema):
    """RFC 9162 §2.1.4: the proof that checkpoint ``second`` extends checkpoint ``first``."""

    first: Checkpoint
    second: Checkpoint
    proof: list[Hex64]


class ChainExtract(Schema):
    chain: str
    counter_key: str | None
    position: int
    previous_hash: Hex64
    entries: list[str]


class Receipt(Schema):
    """docnum-receipt/1 (docs/verification.md#receipts): ``pending`` until a checkpoint covers
    the row."""

    format: str
    document_number: str
    project: str
    row_hash: Hex64
    status: Literal["checkpointed", "pending"]
    detail: str | None = None
    chain: ChainExtract
    leaf: dict[str, Any] | None = None
    inclusion_proof: list[Hex64] | None = None
    checkpoint: Checkpoint | None = None
    public_key: PublicKey | None = None


class ProofQuery(LookupQuery):
    document_number: str = Field(min_length=1, max_length=64,
                                 description="Any number text, '/' included")


class ConsistencyQuery(Params):
    first: int = Field(ge=1, description="A checkpoint number")
    second: int = Field(ge=1, description="A later checkpoint number")


class Health(Schema):
    status: Literal["ok"]


class Readiness(Schema):
    database: Literal["ok", "down"]
    # degraded: Redis answers but refuses writes (out of memory, a read-only replica)
    broker: Literal["ok", "degraded", "down"]
    result_backend: Literal["ok", "degraded", "down"]
    mode: Literal["queue", "db-fallback"]


class OpenAPIDocument(Schema):
    model_config = ConfigDict(extra="allow")

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


class FieldProblem(Schema):
    field: str
    message: str


class Problem(Schema):
    """RFC 9457 problem details; ``title`` follows Accept-Language (th or en). Some codes add
    members (TEMPLATE_INVALID: rule, position; COUNTER_FLOOR: floor; a refused import: its
    report)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"type": "https://docnum.example/problems/validation-failed", "title": "ข้อมูลไม่ถูกต้อง",
         "status": 422, "detail": "originator: must be 1-30 characters",
         "code": "VALIDATION_FAILED",
         "errors": [{"field": "originator", "message": "must be 1-30 characters"}]}]})

    type: str
    title: str
    status: int
    detail: str
    code: ProblemCode
    errors: list[FieldProblem | ImportRowError] | None = Field(
        None, description="The fields that failed; a refused import lists its rows")


__all__ = ["AuditQuery", "Body", "Params", "Problem", "ProblemCode", "Schema", "encode_cursor",
           "number_problem", "parse", "problem_of"]
