"""JWT bearer tokens: verification for the API, minting for ``docnum token``."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import jwt

from docnum.shared.errors import DocnumError
from docnum.shared.settings import Settings

PERMISSIONS = (
    "correspondence.read",
    "correspondence.create",
    "system.manage_settings",
    "system.view_logs",
)
SUPER_ADMIN = "SUPER_ADMIN"


@dataclass(frozen=True)
class Principal:
    sub: str
    perms: frozenset[str] = field(default_factory=frozenset)
    roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_super_admin(self) -> bool:
        return SUPER_ADMIN in self.roles

    def has(self, perm: str) -> bool:
        # SUPER_ADMIN is the top role: it may do everything a permission allows.
        return self.is_super_admin or perm in self.perms


def _unauthenticated(detail: str) -> DocnumError:
    return DocnumError("UNAUTHENTICATED", detail)


# Verified tokens, per process: a client sends the same token with every request, and decoding
# it (base64, JSON, HMAC or RSA) twice per request (rate limit key, then authentication) is a
# measurable share of the issuing path's CPU. Only successes are kept, with their expiry, which
# is checked again on every hit; a changed key or issuer misses (they are part of the cache key).
_VERIFIED: dict[tuple[str, str | None, str], tuple[Principal, float]] = {}
_VERIFIED_MAX = 4096
LEEWAY_S = 5


def verify_token(settings: Settings, token: str) -> Principal:
    cache_key = (settings.jwt_public_key or settings.jwt_secret, settings.jwt_issuer, token)
    hit = _VERIFIED.get(cache_key)
    if hit is not None and time.time() < hit[1] + LEEWAY_S:
        return hit[0]
    principal, expires_at = _decode(settings, token)
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()  # crude but bounded; a steady client set refills it at once
    _VERIFIED[cache_key] = (principal, expires_at)
    return principal


def _decode(settings: Settings, token: str) -> tuple[Principal, float]:
    # The algorithm list is fixed by configuration, never taken from the token header, so
    # "alg: none" and HS/RS confusion are refused by PyJWT.
    if settings.jwt_public_key:
        key, algorithms = settings.jwt_public_key, ["RS256"]
    else:
        key, algorithms = settings.jwt_secret, ["HS256"]
    options = {"require": ["exp", "sub"]}
    try:
        claims = jwt.decode(token, key, algorithms=algorithms, options=options,
                            issuer=settings.jwt_issuer, leeway=LEEWAY_S)
    except jwt.ExpiredSignatureError:
        raise _unauthenticated("the token has expired") from None
    except jwt.InvalidTokenError as exc:
        raise _unauthenticated(f"the token is not valid ({type(exc).__name__})") from None
    sub = claims.get("sub")
    perms = claims.get("perms") or []
    roles = claims.get("roles") or []
    if not isinstance(sub, str) or not sub or len(sub) > 255:
        raise _unauthenticated("the token's sub claim must be a non-empty string")
    if not isinstance(perms, list) or not isinstance(roles, list):
        raise _unauthenticated("perms and roles must be lists")
    return (Principal(sub=sub, perms=frozenset(map(str, perms)), roles=frozenset(map(str, roles))),
            float(int(claims["exp"])))  # PyJWT has checked that int() takes it


def mint_token(settings: Settings, sub: str, perms: list[str], roles: list[str] | None = None,
               ttl_seconds: int = 3600, private_key: str | None = None) -> str:
    now = int(time.time())
    claims = {"sub": sub, "perms": list(perms), "roles": list(roles or []), "iat": now,
              "exp": now + ttl_seconds}
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if private_key:
        return jwt.encode(claims, private_key, algorithm="RS256")
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
