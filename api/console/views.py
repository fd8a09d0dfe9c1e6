"""The console's pages. Each view parses the form, calls the same service function as the API
route (so the same checks and the same audit rows), and renders the answer."""
from __future__ import annotations

import hmac
from datetime import UTC, datetime

from flask import (
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    stream_with_context,
    url_for,
)
from flask.typing import ResponseReturnValue

from docnum.api.console import bp, i18n, queries, safe_next, sign_in
from docnum.api.console.stash import ImportStash
from docnum.api.http import request_actor, services
from docnum.api.refusals import audits_refusals, refusal_audited
from docnum.api.routes_proofs import public_key
from docnum.api.security import requires
from docnum.shared import configs, issuing, lifecycle, proofs, reports, templates
from docnum.shared.audit import OPERATIONS
from docnum.shared.auth import SUPER_ADMIN, verify_token
from docnum.shared.bulk_import import bulk_import
from docnum.shared.db import transaction
from docnum.shared.errors import DocnumError, TemplateInvalid, validation_failed
from docnum.shared.lookup import number_details
from docnum.shared.override import manual_override, override_plan
from docnum.shared.preview import preview_numbers
from docnum.shared.resets import approve_reset, request_reset
from docnum.shared.schemas import VoidAndReplace, parse

MANAGE = "system.manage_settings"
PREVIEW_COUNT = 3
PAGE = 50
# Context fields the template editor's preview and the override form ask for.
CONTEXT_FIELDS = ("correspondence_type", "originator", "recipient", "sub_type", "rfa_type",
                  "discipline", "revision")


def _lang() -> str:
    return g.get("lang", "en")


def _problem(error: DocnumError) -> dict:
    """An error as the pages show it: localized title, the service's detail, the rule."""
    out = {"code": error.code, "title": error.title(_lang()), "detail": error.detail,
           "errors": [e.as_dict() for e in error.errors]}
    if isinstance(error, TemplateInvalid) or error.extra.get("rule"):
        out["rule"] = error.extra.get("rule")
        out["position"] = error.extra.get("position")
    return out


def _int_arg(raw: str | None, name: str) -> int | None:
    if raw is None or raw.strip() == "":
        return None
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 18:
        raise validation_failed(name, "must be a whole number")
    return int(raw)


# --------------------------------------------------------------------------- sign-in

@bp.get("/")
def home() -> ResponseReturnValue:
    return render_template("console/home.html", section="home")


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    error = None
    if request.args.get("expired"):
        error = i18n.t("login.expired", _lang())
    if request.method == "POST":
        token = (request.form.get("token") or "").strip()
        if token.lower().startswith("bearer "):
            token = token[7:].strip()
        try:
            principal = verify_token(services().settings, token)
        except DocnumError as exc:
            error = f"{exc.title(_lang())}: {exc.detail}"
        else:
            sign_in(token)
            flash(i18n.t("login.welcome", _lang(), sub=principal.sub), "ok")
            return redirect(safe_next(request.form.get("next")))
    status = 401 if request.method == "POST" else 200
    return render_template("console/login.html", section="login", error=error,
                           next=request.values.get("next", "")), status


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
    flash(i18n.t("login.signed_out", _lang()), "ok")
    return redirect(url_for("console.login"))


# --------------------------------------------------------------------------- templates

@bp.get("/templates")
@requires(MANAGE)
def templates_list() -> ResponseReturnValue:
    project = request.args.get("project") or None
    with transaction(services().read_engine) as session_:
        grouped = queries.configs_by_project(session_, project)
    return render_template("console/templates_list.html", section="templates",
                           grouped=grouped, project=project or "")


def _editor_form(config: configs.ConfigView, defaults: dict) -> dict:
    """The editor's fields: the posted form, else the saved config and sample codes."""
    source = request.form if request.method == "POST" else {}
    form = {"template": source.get("template", config.template),
            "reset": source.get("reset", config.reset),
            "change_reason": source.get("change_reason", ""),
            "document_date": source.get("document_date",
                                        request.args.get("document_date", ""))}
    for name in CONTEXT_FIELDS:
        form[name] = source.get(name, request.args.get(name, defaults.get(name, "")))
    if config.correspondence_type:
        form["correspondence_type"] = config.correspondence_type
    return form


def check_template(config: configs.ConfigView, form: dict) -> dict:
    """Validate an edited template with the API's validator and preview the next numbers of
    the chosen context and date on the real counter (nothing consumed)."""
    result = {"valid": True, "rule": None, "position": None, "message": None, "numbers": [],
              "counter_key": None, "preview_error": None, "template": form["template"],
              "period": None}
    try:
        templates.validate_template(form["template"], form["reset"],
                                    list(config.counter_scope)
                                    if config.counter_scope is not None else None)
    except TemplateInvalid as exc:
        result.update(valid=False, rule=exc.rule, position=exc.position,
                      message=exc.errors[0].message if exc.errors else exc.detail)
        return result
    body = {name: (form.get(name) or None) for name in CONTEXT_FIELDS}
    body.update(project=config.project, document_date=form.get("document_date") or None)
    svc = services()
    try:
        ctx = issuing.parse_context(body)
        with transaction(svc.read_engine) as session_:
            preview = preview_numbers(session_, ctx, {"template": form["template"],
                                                      "reset": form["reset"]},
                                      now=svc.clock.now(), timezone=svc.settings.timezone,
                                      count=PREVIEW_COUNT, base=config)
    except DocnumError as exc:
        result["preview_error"] = _problem(exc)
        return result
    result["numbers"] = [{"sequence": s, "document_number": n} for s, n in preview.numbers]
    result["counter_key"] = preview.counter_key
    result["period"] = preview.counter_key.rsplit("|", 1)[-1]
    return result


def _load_config(config_id: int) -> tuple[configs.ConfigView, dict, dict]:
    with transaction(services().read_engine) as session_:
        config = configs.get_config(session_, config_id)
        return config, queries.sample_context(session_, config), queries.catalog_codes(session_)


@bp.route("/templates/<int:config_id>", methods=["GET", "POST"])
@audits_refusals("CONFIG_UPDATE")
@requires(MANAGE)
def template_edit(config_id: int) -> ResponseReturnValue:
    config, defaults, codes = _load_config(config_id)
    form = _editor_form(config, defaults)
    save_error = None
    if request.method == "POST" and request.form.get("action") == "save":
        svc = services()
        body = {"template": form["template"], "reset": form["reset"],
                "change_reason": form["change_reason"]}
        version = _int_arg(request.form.get("version"), "version")
        if version is not None:
            body["version"] = version
        try:
            with refusal_audited("CONFIG_UPDATE"):
                _, after = configs.update_config(svc.engine, config_id, body, request_actor(),
                                                 svc.clock, redis=svc.redis)
        except DocnumError as exc:
            save_error = _problem(exc)
        else:
            flash(i18n.t("editor.saved", _lang(), version=after.version), "ok")
            return redirect(url_for("console.template_history", config_id=config_id))
    check = check_template(config, form)
    return render_template("console/template_edit.html", section="templates", config=config,
                           form=form, check=check, codes=codes, save_error=save_error,
                           resets=templates.RESETS, context_fields=CONTEXT_FIELDS)


@bp.post("/templates/<int:config_id>/check")
@requires(MANAGE)
def template_check(config_id: int) -> ResponseReturnValue:
    """Validate-as-you-type: the editor's script posts the form here and swaps in the HTML."""
    config, defaults, _ = _load_config(config_id)
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        abort(400)
    form = {"template": str(data.get("template") or ""),
            "reset": str(data.get("reset") or config.reset),
            "document_date": str(data.get("document_date") or "")}
    for name in CONTEXT_FIELDS:
        form[name] = str(data.get(name) or "")
    if config.correspondence_type:
        form["correspondence_type"] = config.correspondence_type
    check = check_template(config, form)
    return {"valid": check["valid"], "rule": check["rule"], "position": check["position"],
            "numbers": check["numbers"], "counter_key": check["counter_key"],
            "preview_error": check["preview_error"],
            "validation_html": render_template("console/_validation.html", check=check),
            "preview_html": render_template("console/_preview.html", check=check)}


@bp.get("/templates/<int:config_id>/history")
@requires(MANAGE)
def template_history(config_id: int) -> ResponseReturnValue:
    with transaction(services().read_engine) as session_:
        config = configs.get_config(session_, config_id)
        versions = queries.version_diffs(session_, config_id)
    return render_template("console/template_history.html", section="templates",
                           config=config, versions=versions)


# --------------------------------------------------------------------------- counters

@bp.get("/counters")
@requires(MANAGE)
def counters() -> ResponseReturnValue:
    project = request.args.get("project") or None
    after = request.args.get("after") or None
    with transaction(services().read_engine) as session_:
        rows, next_key = queries.counters_page(session_, project=project, after_key=after,
                                               limit=PAGE)
    return render_template("console/counters.html", section="counters", rows=rows,
                           next_key=next_key, project=project or "", after=after)


@bp.get("/counters/gaps")
@requires("system.view_logs")
def gaps() -> ResponseReturnValue:
    key = request.args.get("counter_key") or ""
    after = _int_arg(request.args.get("after"), "after")
    items: list[dict] = []
    if key:
        with transaction(services().read_engine) as session_:
            items = reports.gaps_report(session_, project=None, correspondence_type=None,
                                        period=None, counter_key=key,
                                        after=(key, after) if after is not None else None,
                                        limit=PAGE + 1)
    more = len(items) > PAGE
    items = items[:PAGE]
    return render_template("console/gaps.html", section="counters", counter_key=key,
                           items=items, next_after=items[-1]["sequence"] if more else None)


# --------------------------------------------------------------------------- number lookup

@bp.get("/numbers")
@requires("correspondence.read")
def lookup() -> ResponseReturnValue:
    number = (request.args.get("number") or "").strip()
    project = (request.args.get("project") or "").strip() or None
    details, chain, error, verification = None, [], None, None
    if number:
        try:
            with transaction(services().read_engine) as session_:
                details = number_details(session_, number, project)
                chain = queries.replacement_chain(session_, details["project"], number)
                verification = proofs.verification_state(
                    session_, proofs.find_row(session_, number, details["project"]),
                    public_key())
        except DocnumError as exc:
            error = _problem(exc)
    return render_template("console/lookup.html", section="lookup", number=number,
                           project=project or "", details=details, chain=chain, error=error,
                           verification=verification)


# --------------------------------------------------------------------------- admin actions

@bp.get("/admin")
@requires(MANAGE)
def admin_page() -> ResponseReturnValue:
    return _admin(None, {})


def _admin(section_error: tuple[str, dict] | None, values: dict,
           status: int = 200) -> tuple[str, int]:
    errors = {section_error[0]: section_error[1]} if section_error else {}
    return render_template("console/admin.html", section="admin", errors=errors,
                           values=values, context_fields=CONTEXT_FIELDS), status


def _void_body() -> dict:
    form = request.form
    body = {"document_number": (form.get("document_number") or "").strip(),
            "reason": form.get("reason") or "",
            "replace": form.get("replace") in ("1", "on", "true", "yes")}
    if (form.get("project") or "").strip():
        body["project"] = form["project"].strip()
    return body


@bp.post("/admin/void")
@audits_refusals("VOID")
@requires(MANAGE)
def void() -> ResponseReturnValue:
    body = _void_body()
    svc = services()
    values = {"void": dict(request.form)}
    if request.form.get("confirm") != "yes":
        try:
            parse(VoidAndReplace, body)
            with transaction(svc.read_engine) as session_:
                details = number_details(session_, body["document_number"], body.get("project"))
            if details["state"] != "CONFIRMED":
                raise DocnumError("INVALID_STATE", f"{body['document_number']} is "
                                                   f"{details['state']}; only a CONFIRMED "
                                                   "number can be voided")
        except DocnumError as exc:
            return _admin(("void", _problem(exc)), values, exc.status)
        return render_template("console/admin_confirm.html", section="admin", action="void",
                               body=body, details=details)
    try:
        with refusal_audited("VOID"):
            result = lifecycle.void_and_replace(svc.engine, body, request_actor(), svc.clock,
                                                svc.settings.timezone)
    except DocnumError as exc:
        return _admin(("void", _problem(exc)), values, exc.status)
    return render_template("console/admin_result.html", section="admin", action="void",
                           result=result)


def _override_body() -> dict:
    form = request.form
    body: dict = {"project": (form.get("project") or "").strip() or None}
    for name in CONTEXT_FIELDS + ("document_date", "document_ref"):
        value = (form.get(name) or "").strip()
        body[name] = value or None
    body["document_number"] = (form.get("document_number") or "").strip()
    body["reason"] = form.get("reason") or ""
    return {k: v for k, v in body.items() if v is not None}


@bp.post("/admin/override")
@audits_refusals("MANUAL_OVERRIDE")
@requires(MANAGE)
def override() -> ResponseReturnValue:
    body = _override_body()
    svc = services()
    values = {"override": dict(request.form)}
    if request.form.get("confirm") != "yes":
        try:
            with transaction(svc.read_engine) as session_:
                plan = override_plan(session_, body)
        except DocnumError as exc:
            return _admin(("override", _problem(exc)), values, exc.status)
        return render_template("console/admin_confirm.html", section="admin",
                               action="override", body=body, plan=plan)
    try:
        with refusal_audited("MANUAL_OVERRIDE"):
            number = manual_override(svc.engine, body, request_actor(), svc.clock,
                                     svc.settings.timezone)
    except DocnumError as exc:
        return _admin(("override", _problem(exc)), values, exc.status)
    return render_template("console/admin_result.html", section="admin", action="override",
                           result=number)


def _stash() -> ImportStash:
    svc = services()
    return ImportStash(svc.settings.var_dir / "console-imports", svc.redis)


@bp.post("/admin/import")
@audits_refusals("IMPORT")
@requires(MANAGE)
def import_upload() -> ResponseReturnValue:
    """Dry run of an uploaded file; the file is stashed for the commit button."""
    svc = services()
    upload = request.files.get("file")  # over 32 MiB: 413 while the CSRF check parsed it
    if upload is None or not upload.filename:
        return _admin(("import", _problem(validation_failed("file", "is required: a CSV or "
                                                                    "XLSX file"))), {}, 422)
    content = upload.read()
    filename = upload.filename
    try:
        report = bulk_import(svc.engine, filename, content, request_actor(), svc.clock,
                             dry_run=True)
    except DocnumError as exc:
        return _admin(("import", _problem(exc)), {}, exc.status)
    previous = session.get("import")
    stash = _stash()
    if previous:
        stash.drop(previous.get("id", ""))
    stash_id = stash.put(content)
    session["import"] = {"id": stash_id, "filename": filename}
    return render_template("console/import_report.html", section="admin",
                           report=report.to_dict(), filename=filename, stash_id=stash_id,
                           committed=False)


@bp.post("/admin/import/commit")
@audits_refusals("IMPORT")
@requires(MANAGE)
def import_commit() -> ResponseReturnValue:
    svc = services()
    pending = session.get("import") or {}
    sent = request.form.get("import_id") or ""
    stash = _stash()
    content = None
    if pending.get("id") and hmac.compare_digest(sent.encode(), pending["id"].encode()):
        content = stash.get(pending["id"])
    if content is None:
        session.pop("import", None)
        return _admin(("import", {"code": "NOT_FOUND", "title": i18n.t("import.gone", _lang()),
                                  "detail": "", "errors": []}), {}, 409)
    filename = pending.get("filename") or "upload.csv"
    try:
        with refusal_audited("IMPORT"):
            report = bulk_import(svc.engine, filename, content, request_actor(), svc.clock,
                                 dry_run=False).to_dict()
    except DocnumError as exc:
        if "errors" not in exc.extra:
            return _admin(("import", _problem(exc)), {}, exc.status)
        return render_template("console/import_report.html", section="admin",
                               report=exc.extra, filename=filename, stash_id=None,
                               committed=False, refused=_problem(exc)), exc.status
    stash.drop(pending["id"])
    session.pop("import", None)
    return render_template("console/import_report.html", section="admin", report=report,
                           filename=filename, stash_id=None, committed=True)


# --------------------------------------------------------------------------- resets

@bp.get("/resets")
@requires(role=SUPER_ADMIN)
def resets() -> ResponseReturnValue:
    return _resets_page(request.args.get("counter_key") or "", {})


def _resets_page(counter_key: str, values: dict, error: dict | None = None,
                 status: int = 200) -> tuple[str, int]:
    with transaction(services().read_engine) as session_:
        overview = queries.resets_overview(session_)
        floor = queries.floor_check(session_, counter_key) if counter_key else None
        owners = queries.configs_of_counter(session_, counter_key) if counter_key else []
    return render_template("console/resets.html", section="resets", overview=overview,
                           counter_key=counter_key, floor=floor, owners=owners, values=values,
                           error=error, me=g.principal.sub), status


@bp.post("/resets")
@audits_refusals("RESET_REQUEST")
@requires(role=SUPER_ADMIN)
def reset_file() -> ResponseReturnValue:
    svc = services()
    form = request.form
    key = (form.get("counter_key") or "").strip()
    try:
        with refusal_audited("RESET_REQUEST"):
            new_last = _int_arg(form.get("new_last_sequence"), "new_last_sequence")
            if new_last is None:
                raise validation_failed("new_last_sequence", "must be a whole number >= 0")
            config_id = _int_arg(form.get("config_id"), "config_id")
            if config_id is None:
                with transaction(svc.read_engine) as session_:
                    owners = queries.configs_of_counter(session_, key)
                if not owners:
                    raise validation_failed("counter_key", f"no numbering config numbers on {key}")
                config_id = owners[0].id
            result = request_reset(svc.engine, config_id,
                                   {"counter_key": key, "new_last_sequence": new_last,
                                    "reason": form.get("reason") or ""},
                                   request_actor(), svc.clock)
    except DocnumError as exc:
        return _resets_page(key, dict(form), _problem(exc), exc.status)
    flash(i18n.t("resets.filed", _lang(), id=result["reset_request_id"]), "ok")
    return redirect(url_for("console.resets"))


@bp.post("/resets/<int:reset_id>/approve")
@audits_refusals("RESET_APPROVE")
@requires(role=SUPER_ADMIN)
def reset_approve(reset_id: int) -> ResponseReturnValue:
    svc = services()
    try:
        with refusal_audited("RESET_APPROVE"):
            result, error = approve_reset(svc.engine, reset_id, request_actor(), svc.clock)
    except DocnumError as exc:
        return _resets_page("", {}, _problem(exc), exc.status)
    if error is not None:
        return _resets_page("", {}, _problem(error), error.status)
    key = "resets.executed" if result["status"] == "EXECUTED" else "resets.approved"
    flash(i18n.t(key, _lang(), id=reset_id), "ok")
    return redirect(url_for("console.resets"))


# --------------------------------------------------------------------------- audit

@bp.get("/audit")
@requires("system.view_logs")
def audit() -> ResponseReturnValue:
    args = request.args
    error, rows, next_before = None, [], None
    try:
        filters = reports.audit_filter(args)
        before = _int_arg(args.get("before"), "before")
        with transaction(services().read_engine) as session_:
            rows = reports.query_audit(session_, filters, before, PAGE + 1)
        if len(rows) > PAGE:
            rows = rows[:PAGE]
            next_before = rows[-1]["id"]
    except DocnumError as exc:
        error = _problem(exc)
    filters_args = {k: v for k, v in args.items() if k in AUDIT_FILTERS and v}
    return render_template("console/audit.html", section="audit", rows=rows, error=error,
                           next_before=next_before, filters=filters_args,
                           operations=OPERATIONS)


AUDIT_FILTERS = ("document_number", "operation", "actor", "counter_key", "request_id",
                 "success", "from", "to")


@bp.get("/audit.csv")
@requires("system.view_logs")
def audit_csv() -> ResponseReturnValue:
    filters = reports.audit_filter(request.args)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    chunks = queries.audit_csv(services().read_engine, filters)
    return Response(stream_with_context(chunks), mimetype="text/csv",
                    headers={"Content-Disposition":
                             f'attachment; filename="docnum-audit-{stamp}.csv"',
                             "Cache-Control": "no-store"})


__all__ = ["check_template"]
