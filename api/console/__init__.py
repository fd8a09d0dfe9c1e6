"""The admin console: server-rendered pages under ``/console/`` for document controllers.
Same services, same permission rules and same audit rows as the API.

This module is the plumbing — the blueprint, sign-in state, CSRF, language, error pages; the
pages are in ``api/console/views.py`` and every word they show is in ``api/console/i18n.py``.

**Session.** Flask's signed session cookie (``docnum_console``, path ``/console``, HttpOnly,
SameSite=Strict, Secure when the request came over https — directly or, behind
``DOCNUM_PROXY_HOPS`` trusted proxies, per ``X-Forwarded-Proto``). It holds the bearer token the
user pasted, re-verified on every request (an expired token signs the user out), a CSRF token,
the language and the id of a pending import. ``SECRET_KEY`` is derived from the JWT secret with
HMAC-SHA256, so no new setting is needed; rotating ``DOCNUM_JWT_SECRET`` signs everyone out.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.blueprints import BlueprintSetupState
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask.typing import ResponseReturnValue
from markupsafe import Markup
from werkzeug.exceptions import HTTPException

from docnum.api.console import i18n
from docnum.shared.auth import verify_token
from docnum.shared.errors import DocnumError
from docnum.shared.settings import Settings

bp = Blueprint("console", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static")

COOKIE_NAME = "docnum_console"
COOKIE_PATH = "/console"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
PUBLIC_ENDPOINTS = frozenset({"console.login", "console.static"})
JSON_ENDPOINTS = frozenset({"console.template_check"})
_SESSION_SALT = b"docnum console session key v1"


def session_secret(jwt_secret: str) -> str:
    """The Flask ``SECRET_KEY``: HMAC-SHA256 of a fixed label under the JWT secret."""
    return hmac.new(jwt_secret.encode("utf-8"), _SESSION_SALT, hashlib.sha256).hexdigest()


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, with the Secure flag set per request (https only).

    Only the console has a session: the API authenticates every call by its bearer token, so
    its requests get Flask's null session and skip the cookie's signature check (the cookie's
    path is /console anyway).
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if not request.path.startswith(COOKIE_PATH):
            return self.make_null_session(app)
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        if request.is_secure:
            return True
        settings = app.config["DOCNUM_SETTINGS"]
        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        return bool(settings.proxy_hops) and forwarded == "https"


@bp.record_once
def _configure(state: BlueprintSetupState) -> None:
    app = state.app
    settings = app.config["DOCNUM_SETTINGS"]
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = session_secret(settings.jwt_secret)
    app.config.update(SESSION_COOKIE_NAME=COOKIE_NAME, SESSION_COOKIE_PATH=COOKIE_PATH,
                      SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict")
    app.session_interface = ConsoleSessionInterface()
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True


# --------------------------------------------------------------------------- helpers

def settings() -> Settings:
    return current_app.config["DOCNUM_SETTINGS"]


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    expected = session.get("csrf")
    sent = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    if not expected or not hmac.compare_digest(sent.encode("utf-8"), expected.encode("utf-8")):
        abort(400, description=i18n.t("csrf_failed", g.get("lang", "en")))


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path of this site, never another host."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and parts.path.startswith("/console/") \
                and "\\" not in target:
            return target
    return url_for("console.home")


def choose_language() -> str:
    asked = request.args.get("lang")
    if asked in i18n.LANGUAGES:
        session["lang"] = asked
    lang = session.get("lang")
    if lang not in i18n.LANGUAGES:
        lang = request.accept_languages.best_match(i18n.LANGUAGES, default="en")
    return lang


def sign_in(token: str) -> None:
    """A fresh session for the user: keeps the language, new CSRF token (no fixation)."""
    lang = session.get("lang")
    session.clear()
    session["token"] = token
    session["csrf"] = secrets.token_urlsafe(32)
    if lang:
        session["lang"] = lang


@bp.before_request
def _before() -> object:
    g.lang = choose_language()
    if request.endpoint == "console.import_upload":
        from docnum.api.routes_admin import MAX_IMPORT_BYTES

        request.max_content_length = MAX_IMPORT_BYTES  # before the form is parsed below
    if request.endpoint in PUBLIC_ENDPOINTS:
        if request.method == "POST":
            check_csrf()
        return None
    token = session.get("token")
    principal = None
    if token:
        try:
            principal = verify_token(settings(), token)
        except DocnumError as exc:
            session.pop("token", None)
            g.signin_problem = exc.detail
    if principal is None:
        if request.endpoint in JSON_ENDPOINTS:
            return jsonify({"error": "UNAUTHENTICATED"}), 401
        expired = "signin_problem" in g
        target = request.full_path.rstrip("?") if request.method == "GET" else None
        return redirect(url_for("console.login", next=target, expired=1 if expired else None))
    g.principal = principal
    if request.method == "POST":
        check_csrf()
    return None


# Only this site's own script, styles and forms; no framing. Style attributes are allowed for the
# utilization bars' widths.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
       "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "object-src 'none'")


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"  # pages show ledger and audit data
    return response


# --------------------------------------------------------------------------- templates

def _lang_url(lang: str) -> str:
    if request.method == "GET" and request.endpoint and request.endpoint != "console.static":
        args = request.args.to_dict()
        args["lang"] = lang
        return url_for(request.endpoint, **(request.view_args or {}), **args)
    return url_for("console.home", lang=lang)


def _nav() -> list[tuple[str, str, str]]:
    """(endpoint, label key, section) of each page the signed-in user may open."""
    principal = g.get("principal")
    if principal is None:
        return []
    items = []
    if principal.has("system.manage_settings"):
        items += [("console.templates_list", "nav.templates", "templates"),
                  ("console.counters", "nav.counters", "counters")]
    if principal.has("correspondence.read"):
        items.append(("console.lookup", "nav.lookup", "lookup"))
    if principal.has("system.manage_settings"):
        items.append(("console.admin_page", "nav.admin", "admin"))
    if principal.is_super_admin:
        items.append(("console.resets", "nav.resets", "resets"))
    if principal.has("system.view_logs"):
        items.append(("console.audit", "nav.audit", "audit"))
    return items


TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def local_time(value: str | datetime | None, css_class: str = "") -> Markup:
    """A time as the users read it: in the deployment's zone (``DOCNUM_TIMEZONE``, the zone of
    their periods and office hours), with the UTC time the API and the database use on hover
    and in the ``datetime`` attribute."""
    if value is None or value == "":
        return Markup("")
    moment = value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return Markup("{}").format(value)
    if moment.tzinfo is None:  # the database's columns are naive UTC
        moment = moment.replace(tzinfo=UTC)
    utc = moment.astimezone(UTC)
    local = utc.astimezone(ZoneInfo(settings().timezone))
    return Markup('<time datetime="{}" title="{} UTC" class="{}">{}</time>').format(
        utc.isoformat().replace("+00:00", "Z"), utc.strftime(TIME_FORMAT), css_class,
        local.strftime(TIME_FORMAT))


@bp.context_processor
def _context() -> dict:
    lang = g.get("lang", "en")

    def translate(key: str, /, **values: object) -> str:
        return i18n.t(key, lang, **values)

    return {"lang": lang, "t": translate,
            "csrf_token": csrf_token, "principal": g.get("principal"), "nav": _nav(),
            "lang_url": _lang_url, "when": local_time, "zone": settings().timezone}


# --------------------------------------------------------------------------- errors

def error_page(status: int, title: str, detail: str = "") -> tuple[str, int]:
    return render_template("console/error.html", status=status, title=title,
                           detail=detail), status


@bp.errorhandler(DocnumError)
def _docnum_error(error: DocnumError) -> ResponseReturnValue:
    lang = g.get("lang", "en")
    if request.endpoint in JSON_ENDPOINTS:
        return jsonify({"error": error.code, "title": error.title(lang),
                        "detail": error.detail}), error.status
    if error.code == "UNAUTHENTICATED":
        return redirect(url_for("console.login"))
    return error_page(error.status, error.title(lang), error.detail)


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> ResponseReturnValue:
    status = error.code or 500
    if request.endpoint in JSON_ENDPOINTS:
        return jsonify({"error": status, "detail": error.description}), status
    lang = g.get("lang", "en")
    title = i18n.t(f"http.{status}", lang) if i18n.has(f"http.{status}") else error.name
    detail = error.description if status in (400, 413) else ""
    return error_page(status, title, detail)


# --------------------------------------------------------------------------- mounting

def register(app: Flask, url_prefix: str) -> None:
    """Mount the console on ``app``. ``views`` declares the pages on ``bp`` when it is imported;
    it imports this module's plumbing, so it is imported here, once the plumbing exists."""
    from docnum.api.console import views

    app.register_blueprint(views.bp, url_prefix=url_prefix)
