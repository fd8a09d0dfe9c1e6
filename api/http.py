"""Small request/response helpers shared by the views."""
from __future__ import annotations

import base64
import json
import re
import uuid

from flask import Response, current_app, g, request

from docnum.api.security import current_principal
from docnum.shared.audit import Actor
from docnum.shared.errors import DocnumError, validation_failed

DEFAULT_LIMIT, MAX_LIMIT = 50, 500


def services():  # api.app.Services (import cycle otherwise)
    return current_app.extensions["docnum"]


def json_response(data: object, status: int = 200, headers: dict | None = None) -> Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return Response(body, status=status, headers=headers or {},
                    content_type="application/json; charset=utf-8")


def json_body() -> dict:
    """The request's JSON object: 415 for another content type, 400 when it does not parse."""
    if request.mimetype != "application/json":
        raise DocnumError("UNSUPPORTED_MEDIA_TYPE", "send Content-Type: application/json")
    raw = request.get_data(cache=True)
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise DocnumError("BAD_REQUEST", "the body is not valid UTF-8") from None
    except (ValueError, RecursionError):
        raise DocnumError("BAD_REQUEST", "the body is not valid JSON") from None
    if _SURROGATE_ESCAPE.search(raw) and _has_unpaired_surrogate(data):
        # "\ud800" is valid JSON but not Unicode text: no database column can store it.
        raise DocnumError("BAD_REQUEST", "the body contains an unpaired UTF-16 surrogate "
                                         "escape (\\uD800-\\uDFFF): not valid Unicode text")
    if not isinstance(data, dict):
        raise DocnumError("VALIDATION_FAILED", "the body must be a JSON object")
    return data


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_unpaired_surrogate(data: object) -> bool:
    """Any string (key or value) holding a lone surrogate; iterative: no recursion limit."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if any("\ud800" <= ch <= "\udfff" for ch in item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def request_actor() -> Actor:
    """Who asks, from where, and the request's id: ``X-Request-ID`` when it is usable, else one
    generated UUID shared by every audit row this request writes."""
    request_id = g.get("audit_request_id")
    if request_id is None:
        request_id = request.headers.get("X-Request-ID", "")
        if not (0 < len(request_id) <= 64 and request_id.isascii()
                and request_id.isprintable()):
            request_id = str(uuid.uuid4())
        g.audit_request_id = request_id
    return Actor(sub=current_principal().sub, client_ip=request.remote_addr,
                 user_agent=request.headers.get("User-Agent"), request_id=request_id)


def page_params() -> tuple[str | None, int]:
    """(cursor, limit) from the query string; ``limit`` defaults to 50, at most 500."""
    raw_limit = request.args.get("limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise validation_failed("limit", f"must be an integer 1-{MAX_LIMIT}")
        limit = int(raw_limit)
    cursor = request.args.get("cursor")
    if cursor is None or cursor == "":
        return None, limit
    try:
        return base64.urlsafe_b64decode(cursor.encode("ascii")).decode("utf-8"), limit
    except (ValueError, UnicodeError):
        raise validation_failed("cursor", "is not a cursor this service issued") from None


def encode_cursor(value: object) -> str:
    return base64.urlsafe_b64encode(str(value).encode("utf-8")).decode("ascii")


def page(items: list, limit: int, key) -> dict:
    """A list answer: ``{items, next_cursor}`` (fetch limit + 1 rows to know if more exist)."""
    more = len(items) > limit
    items = [i if isinstance(i, dict) else i.to_dict() for i in items[:limit]]
    return {"items": items,
            "next_cursor": encode_cursor(key(items[-1])) if more and items else None}


def int_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.lstrip("-").isdigit():
        raise validation_failed("cursor", "is not a cursor this service issued")
    return int(cursor)
