"""The HTTP contract from one source: each route declares its request models, answers and
problem statuses once (``@contract.validate(...)``); spectree validates requests with them and
builds the OpenAPI 3.1 document (``GET /api/v1/document-numbering/openapi.json``) from the same
declarations and the models of ``shared/schemas.py``. Why spectree: docs/architecture.md.

spectree is extended at its documented seams only:

- ``ContractPlugin`` (its Flask backend) parses the JSON body itself, the way the contract
  wants it (415 for another content type; 400 for bytes that are not UTF-8 JSON or that escape
  an unpaired surrogate; 422 for anything but an object), turns a failed validation into the
  problem document of ``shared.schemas.parse``, documents the path converters below, and does
  not re-validate answers at run time (the test suite checks every answer against the
  document; a check per answer would cost CPU on the hot path).
- ``Answers`` (its ``Response``) adds what an answer carries besides a body model: problem
  statuses as ``application/problem+json``, the ``Location``/``Retry-After`` headers, a text
  body (metrics).
"""
from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from flask import Flask, Request, current_app
from flask import request as flask_request
from pydantic_core import from_json
from spectree import SecurityScheme, SpecTree
from spectree.models import SecureType, SecuritySchemeData, Server
from spectree.plugins.flask_plugin import FlaskPlugin
from spectree.plugins.werkzeug_utils import werkzeug_parse_rule
from spectree.response import Response
from spectree.utils import get_multidict_items
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import BaseConverter, PathConverter

from docnum.shared.catalog import KINDS
from docnum.shared.errors import CATALOG, DocnumError, ProblemCode
from docnum.shared.schemas import NUMBER_EXAMPLE, Problem, parse
from docnum.shared.templates import MAX_CODE_LENGTH

BASE = "/api/v1/document-numbering"
VERSION = "1.0.0"

# --------------------------------------------------------------------------- path parameters
#
# A path segment that names nothing (a malformed id, an unknown kind) is still routed to its
# view: authentication and permissions answer first (401, 403), as for any other request, and
# the contract's validation then refuses the segment with 404 (``check_path``).


@dataclass(frozen=True)
class NoSuchName:
    """A path segment its parameter's rule does not accept."""

    value: str
    hint: str = ""


class NamingConverter(BaseConverter):
    """Routes any one segment; ``accept`` turns it into the parameter's value or refuses it."""

    hint = ""

    def to_python(self, value: str) -> Any:
        return self.accept(value) if self.accepts(value) else NoSuchName(value, self.hint)

    def accepts(self, value: str) -> bool:
        return True

    def accept(self, value: str) -> Any:
        return value

    def to_url(self, value: object) -> str:
        return str(value)


DIGITS = re.compile(r"\d{1,18}")


class IdConverter(NamingConverter):
    """A database id: digits, at most 18 (anything else names nothing: 404)."""

    openapi: Mapping[str, Any] = {"schema": {"type": "integer", "minimum": 0,
                                             "maximum": 10 ** 18 - 1}, "example": 1}

    def accepts(self, value: str) -> bool:
        return DIGITS.fullmatch(value) is not None

    def accept(self, value: str) -> int:
        return int(value)


class RequestIdConverter(NamingConverter):
    """A request id: at most 64 characters (longer names nothing: 404)."""

    openapi: Mapping[str, Any] = {"schema": {"type": "string", "minLength": 1, "maxLength": 64},
                                  "example": "0b6f0c1e-8a61-5b7e-9d3c-2f4a1e6b7c80"}

    def accepts(self, value: str) -> bool:
        return len(value) <= 64


class KindConverter(NamingConverter):
    """A catalog kind (another word names nothing: 404)."""

    hint = f"; kinds are {', '.join(KINDS)}"
    openapi: Mapping[str, Any] = {"schema": {"type": "string", "enum": list(KINDS)},
                                  "example": "organization"}

    def accepts(self, value: str) -> bool:
        return value in KINDS


class CodeConverter(BaseConverter):
    """A catalog code (its rules: ``shared.templates.code_problem``, 422 on a write)."""

    openapi: Mapping[str, Any] = {"schema": {"type": "string", "minLength": 1,
                                             "maxLength": MAX_CODE_LENGTH},
                                  "example": "คคง."}


class NumberConverter(PathConverter):
    """A document number; it may contain '/' (a template may render one)."""

    openapi: Mapping[str, Any] = {"schema": {"type": "string", "minLength": 1},
                                  "example": NUMBER_EXAMPLE}


CONVERTERS: dict[str, type[BaseConverter]] = {
    "id": IdConverter, "reqid": RequestIdConverter, "kind": KindConverter,
    "code": CodeConverter, "number": NumberConverter}


def check_path(view_args: Mapping[str, Any] | None) -> None:
    """404 for a path segment that names nothing (after authentication: see above)."""
    for name, value in (view_args or {}).items():
        if isinstance(value, NoSuchName):
            what = name.removesuffix("_id").replace("_", " ")
            shown = value.value if len(value.value) <= 64 else value.value[:64] + "…"
            raise DocnumError(ProblemCode.NOT_FOUND, f"no {what} {shown!r}{value.hint}")


# --------------------------------------------------------------------------- request bodies

def json_object(request: Request) -> dict[str, Any]:
    """The request's JSON object (pydantic-core's parser: it refuses bytes that are not UTF-8
    and escapes of unpaired surrogates, which no database column could store)."""
    if request.mimetype != "application/json":
        raise DocnumError(ProblemCode.UNSUPPORTED_MEDIA_TYPE, "send Content-Type: "
                                                              "application/json")
    try:
        data = from_json(request.get_data(cache=True))
    except ValueError as exc:
        reason = str(exc)
        if "unicode code point" in reason:
            detail = "the body is not valid UTF-8"
        elif "surrogate" in reason or "hex escape" in reason:
            detail = ("the body contains an unpaired UTF-16 surrogate escape (\\uD800-\\uDFFF) "
                      "or a broken \\u escape: not valid Unicode text")
        else:
            detail = f"the body is not valid JSON ({reason})"
        raise DocnumError(ProblemCode.BAD_REQUEST, detail) from None
    if not isinstance(data, dict):
        raise DocnumError(ProblemCode.VALIDATION_FAILED, "the body must be a JSON object")
    return data


class Validated(NamedTuple):
    """``request.context``: spectree's models, and the JSON body as sent."""

    query: Any
    json: Any
    form: Any
    headers: Any
    cookies: Any
    body: dict[str, Any] | None


def sent_body() -> dict[str, Any]:
    """The request's JSON object as sent (every member, known or not)."""
    body = flask_request.context.body
    assert body is not None, "the route declares no JSON body"
    return body


class ContractPlugin(FlaskPlugin):
    def request_validation(self, request: Request, query: Any, json: Any, form: Any,
                           headers: Any, cookies: Any) -> None:
        # In the order a client fixes them: parameters, then the Idempotency-Key, then the body.
        check_path(request.view_args)
        parameters = parse(query, get_multidict_items(request.args, query)) if query else None
        sent_headers = parse(headers, dict(request.headers.items())) if headers else None
        body = json_object(request) if json else None
        request.context = Validated(
            parameters, parse(json, body) if json else None,
            parse(form, self.form_fields(request, form)) if form else None, sent_headers,
            None, body)

    def form_fields(self, request: Request, form: Any) -> dict[str, Any]:
        """A multipart form's fields and files (a route may allow a larger body than the
        app's ``MAX_CONTENT_LENGTH``: ``request.max_content_length``)."""
        if request.mimetype != "multipart/form-data":
            raise DocnumError(ProblemCode.UNSUPPORTED_MEDIA_TYPE, "send multipart/form-data")
        try:
            return self.fill_form(request)
        except RequestEntityTooLarge:
            raise DocnumError(ProblemCode.PAYLOAD_TOO_LARGE,
                              f"the body may be at most {request.max_content_length} bytes; "
                              "split it") from None

    def validate_response(self, resp: Any, resp_model: Any, skip_validation: bool,
                          force_resp_serialize: bool) -> tuple[Any, None]:
        return self.get_current_app().make_response(resp), None

    def parse_path(self, route: Any, path_parameter_descriptions: Mapping[str, str] | None
                   ) -> tuple[str, list]:
        path, parameters = super().parse_path(route, path_parameter_descriptions)
        converters = current_app.url_map.converters
        named = {variable: converter for converter, _, variable
                 in werkzeug_parse_rule(str(route)) if converter}
        for parameter in parameters:
            spec = getattr(converters.get(named.get(parameter["name"], "")), "openapi", None)
            if spec:
                parameter.update(copy.deepcopy(dict(spec)))
        return path, parameters


# --------------------------------------------------------------------------- answers

HEADERS: dict[str, dict[str, Any]] = {
    "Location": {"description": "Where the request's status (and its number) can be read",
                 "required": True, "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait before asking again",
                    "required": True, "schema": {"type": "integer", "minimum": 0}},
}
RETRYABLE = (429, 503)  # a problem with these statuses always says when to come back

# The problem statuses of each kind of route; an operation lists the union of its kinds.
SIGNED_IN = (401, 403, 500, 503)     # bearer token, permission; any database read
JSON_BODY = (400, 413, 415, 422)     # body parsing and validation
PARAMETERS = (422,)                  # query parameters that can be refused
ISSUING = (*SIGNED_IN, *JSON_BODY, 409, 429)


def _problem_description(status: int) -> str:
    codes = [code for code, (code_status, _, _) in CATALOG.items() if code_status == status]
    return f"Problem ({', '.join(codes)})" if codes else "Problem"


class Answers(Response):
    """The answers of one operation.

    ``Answers(HTTP_201=IssuedNumber, problems=ISSUING, headers={201: ["Location"]})``: success
    bodies by status, the problem statuses the operation can return, and the headers of each
    status (problems with 429 and 503 always carry Retry-After); ``text`` names statuses whose
    body is plain text.
    """

    def __init__(self, *, problems: Iterable[int] = (),
                 headers: Mapping[int, Sequence[str]] | None = None,
                 text: Mapping[int, str] | None = None, **code_models: Any) -> None:
        self.problem_statuses = sorted(set(problems))
        self.header_names = dict(headers or {})
        self.text = dict(text or {})
        problems_by_code = {f"HTTP_{status}": (Problem, _problem_description(status))
                            for status in self.problem_statuses}
        super().__init__(*(f"HTTP_{status}" for status in self.text),
                         **code_models, **problems_by_code)

    def add_model(self, code: int, model: Any, replace: bool = True,
                  description: str | None = None) -> None:
        """spectree adds its validation-error model to every operation; here each operation
        lists its own problem statuses, so nothing is added."""

    def generate_spec(self, naming_strategy: Callable[[Any], str] = lambda m: m.__name__
                      ) -> dict[str, Any]:
        spec = super().generate_spec(naming_strategy)
        for code, answer in spec.items():
            status = int(code)
            names = list(self.header_names.get(status, ()))
            if status in self.problem_statuses:
                answer["content"] = {"application/problem+json":
                                     answer["content"]["application/json"]}
                if status in RETRYABLE and "Retry-After" not in names:
                    names.append("Retry-After")
            elif status in self.text:
                answer["description"] = self.text[status]
                answer["content"] = {"text/plain": {"schema": {"type": "string"}}}
            if names:
                answer["headers"] = {name: HEADERS[name] for name in names}
        return dict(sorted(spec.items()))


# --------------------------------------------------------------------------- the document

DESCRIPTION = """Document numbers for construction correspondence (docs/reference.md#http-api).

Errors are RFC 9457 problem documents (`application/problem+json`) whose `code` is stable and
whose `title` follows `Accept-Language` (`th` or `en`). Every path answers a method it does not
list with 405 `METHOD_NOT_ALLOWED` and an `Allow` header. Issuing routes need an
`Idempotency-Key`: the same client and key always name the same request."""

contract = SpecTree(
    "flask", backend=ContractPlugin, mode="strict", annotations=True,
    title="docnum — document numbering", version=VERSION, description=DESCRIPTION,
    servers=[Server(url="/", description="The host that serves this document")],
    security_schemes=[SecurityScheme(name="bearer", data=SecuritySchemeData(
        type=SecureType.HTTP, scheme="bearer", bearer_format="JWT"))],
    security={"bearer": []},
    naming_strategy=lambda model: model.__name__,
    nested_naming_strategy=lambda _parent, child: child)

PUBLIC: dict[str, Any] = {}  # security of the routes that need no token (an empty list)


def init_contract(app: Flask) -> None:
    """The path converters the routes use; called before any blueprint is registered."""
    app.url_map.converters.update(CONVERTERS)


def _drop_unused_schemas(document: dict[str, Any]) -> None:
    """spectree also lists the query and header models, which the document shows as
    parameters: keep only the schemas the paths reach."""
    schemas = document["components"]["schemas"]
    reached: set[str] = set()
    pending: list[Any] = [document["paths"]]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in reached:
                    reached.add(name)
                    pending.append(schemas[name])
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    for name in set(schemas) - reached:
        del schemas[name]


def openapi_document() -> dict[str, Any]:
    """The document of the current app's routes (built once per process)."""
    document = current_app.extensions.get("docnum.openapi")
    if document is None:
        document = copy.deepcopy(contract.spec)
        for rule in current_app.url_map.iter_rules():
            view = current_app.view_functions[rule.endpoint]
            permission = getattr(view, "required_permission", None)
            path = "".join(f"{{{variable}}}" if converter else variable for converter, _, variable
                           in werkzeug_parse_rule(str(rule)))
            operations = document["paths"].get(path, {})
            for method in rule.methods or ():
                if permission and method.lower() in operations:
                    operations[method.lower()]["x-permission"] = permission
        _drop_unused_schemas(document)
        current_app.extensions["docnum.openapi"] = document
    return document


__all__ = ["BASE", "Answers", "CONVERTERS", "contract", "init_contract", "json_object",
           "openapi_document", "sent_body"]
