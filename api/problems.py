"""RFC 9457 problem+json: the one place a DocnumError becomes an HTTP response."""
from __future__ import annotations

import json

from flask import Request, Response

from docnum.shared.errors import DocnumError

PROBLEM_TYPE = "https://docnum.example/problems/"


def preferred_language(request: Request) -> str:
    """'th' when Accept-Language prefers Thai over English, else 'en'."""
    best = request.accept_languages.best_match(["en", "th"], default="en")
    return "th" if best == "th" else "en"


def problem_response(error: DocnumError, request: Request) -> Response:
    body = {
        "type": PROBLEM_TYPE + error.code.lower().replace("_", "-"),
        "title": error.title(preferred_language(request)),
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
    }
    if error.errors:
        body["errors"] = [e.as_dict() for e in error.errors]
    for key, value in error.extra.items():
        body.setdefault(key, value)
    response = Response(json.dumps(body, ensure_ascii=False), status=error.status,
                        content_type="application/problem+json; charset=utf-8")
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response
