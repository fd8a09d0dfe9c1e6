"""Small request/response helpers shared by the views."""
from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from flask import Response, current_app, g, request

from docnum.api.security import current_principal
from docnum.shared.audit import Actor
from docnum.shared.schemas import encode_cursor


def services() -> Any:  # api.app.Services (import cycle otherwise)
    return current_app.extensions["docnum"]


def json_response(data: object, status: int = 200, headers: dict | None = None) -> Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return Response(body, status=status, headers=headers or {},
                    content_type="application/json; charset=utf-8")


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


def page(items: list, limit: int, key: Callable[[dict], object]) -> dict:
    """A list answer: ``{items, next_cursor}`` (fetch limit + 1 rows to know if more exist)."""
    more = len(items) > limit
    items = [i if isinstance(i, dict) else i.to_dict() for i in items[:limit]]
    return {"items": items,
            "next_cursor": encode_cursor(key(items[-1])) if more and items else None}
