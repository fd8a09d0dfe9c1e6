"""Bearer-token authentication and the permission checks of docs/reference.md#http-api."""
from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from flask import current_app, g, request

from docnum.shared.auth import Principal, verify_token
from docnum.shared.errors import DocnumError

P = ParamSpec("P")
R = TypeVar("R")


def current_principal() -> Principal:
    principal = g.get("principal")
    if principal is None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise DocnumError("UNAUTHENTICATED", "send Authorization: Bearer <token>")
        principal = verify_token(current_app.config["DOCNUM_SETTINGS"], token.strip())
        g.principal = principal
    return principal


def requires(perm: str | None = None, *, role: str | None = None,
             any_of: tuple[str, ...] = ()) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Authenticate, then demand a permission, one of several, or a role."""

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            principal = current_principal()
            allowed = True
            if perm is not None:
                allowed = principal.has(perm)
            if any_of:
                allowed = allowed and any(principal.has(p) for p in any_of)
            if role is not None:
                allowed = allowed and role in principal.roles
            if not allowed:
                needed = role or perm or " or ".join(any_of)
                raise DocnumError("FORBIDDEN", f"this action needs {needed}")
            return view(*args, **kwargs)

        wrapper.required_permission = role or perm or (any_of[0] if any_of else None)
        return wrapper

    return decorate
