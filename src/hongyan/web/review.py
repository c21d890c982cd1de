"""The reviewer's console: log in as platform staff, read the queue, approve or reject.

Staff have their own login (``/staff/login``), session cookie (``hongyan_staff_session``) and
pages under ``/staff``; a tenant's session does not open them and a staff session does not open
a tenant's console. Each queued template is shown with its lint against the tenant's current
signatures and policy, its findings highlighted; a decision is a form post (htmx swaps the
item in place), and every decision lands in the tenant's audit log.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from hongyan.api.routers.review import STAFF_COOKIE
from hongyan.content import review, service
from hongyan.content.lint import lint
from hongyan.errors import AuthenticationFailed, HongyanError, PermissionDenied
from hongyan.staff import service as staff
from hongyan.staff.service import StaffPrincipal
from hongyan.web.console import (
    CSRF_FIELD,
    _lang,
    _redirect,
    _render,
    _runtime,
    _set_flash,
    logged_in,
    login_token_valid,
    safe_next,
)
from hongyan.web.console import _login_form as console_login_form
from hongyan.web.content import highlight
from hongyan.web.i18n import MESSAGES, translate

STAFF_NAV = [("review", "nav.review")]


def _current(request: Request) -> StaffPrincipal | None:
    token = request.cookies.get(STAFF_COOKIE)
    if not token:
        return None
    runtime = _runtime(request)
    try:
        with runtime.engine.begin() as conn:
            return staff.resolve_session(conn, runtime.clock, token)
    except HongyanError:
        return None


def _require_staff(request: Request) -> StaffPrincipal:
    who = _current(request)
    if who is None:
        msg = MESSAGES["login.required"]
        raise AuthenticationFailed(msg["en"], msg["zh-CN"])
    return who


async def _check_csrf(request: Request, who: StaffPrincipal) -> None:
    sent = request.headers.get("x-csrf-token", "")
    if not sent:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else ""
    if not sent or not secrets.compare_digest(sent, who.csrf_token):
        msg = MESSAGES["error.csrf"]
        raise PermissionDenied(msg["en"], msg["zh-CN"])


def _staff_render(request: Request, template: str, who: StaffPrincipal, **context: Any) -> Response:
    lang = _lang(request) if request.cookies.get("hongyan_lang") else who.locale
    return _render(
        request,
        template,
        lang=lang,
        principal=who,  # type: ignore[arg-type]  # a staff principal has what the page reads
        tenant_name=translate(lang, "staff.platform"),
        home="/staff/review",
        logout_action="/staff/logout",
        staff_nav=STAFF_NAV,
        **context,
    )


def _login_form(
    request: Request, *, status: int = 200, error: str | None = None, email: str = ""
) -> Response:
    return console_login_form(
        request,
        status=status,
        error=error,
        next_url="/staff/review",
        email=email,
        login_action="/staff/login",
        login_heading="staff.login.heading",
        login_hint="staff.login.hint",
    )


async def login_page(request: Request) -> Response:
    if _current(request) is not None:
        return _redirect("/staff/review")
    return _login_form(request)


async def login_submit(request: Request) -> Response:
    runtime = _runtime(request)
    form = await request.form()

    def field(name: str) -> str:
        value = form.get(name)
        return value if isinstance(value, str) else ""

    lang = _lang(request)
    email = field("email").strip()
    if not login_token_valid(request, field(CSRF_FIELD)):
        return _login_form(
            request, status=403, error=translate(lang, "login.form_expired"), email=email
        )
    try:
        with runtime.engine.begin() as conn:
            member = staff.authenticate(conn, runtime.clock, email, field("password"))
            token, _csrf = staff.start_session(
                conn,
                runtime.clock,
                member,
                max_age=runtime.settings.session_max_age,
                ip=request.client.host if request.client else None,
            )
    except AuthenticationFailed as exc:
        message = exc.message_en if lang == "en" else exc.message_zh
        return _login_form(request, status=401, error=message, email=email)
    return logged_in(request, safe_next(field("next"), "/staff/review"), STAFF_COOKIE, token)


async def logout(request: Request) -> Response:
    who = _require_staff(request)
    await _check_csrf(request, who)
    runtime = _runtime(request)
    with runtime.engine.begin() as conn:
        staff.end_session(conn, runtime.clock, who)
    response = _redirect("/staff/login")
    response.delete_cookie(STAFF_COOKIE, path="/")
    msg = MESSAGES["login.logged_out"]
    _set_flash(request, response, msg["zh-CN"], msg["en"], kind="info")
    return response


def _with_lint(conn: Any, item: dict[str, Any], lang: str) -> dict[str, Any]:
    """A queued template with its lint now (against the tenant's current signatures)."""
    if item["kind"] != "template":
        return item
    result = lint(item["body"], service.context(conn, item["tenant_id"], item["category"]))
    return {
        **item,
        "lint": result,
        "pieces": highlight(item["body"], result.findings, lang),
    }


async def queue_page(request: Request) -> Response:
    who = _require_staff(request)
    who.require_reviewer()
    runtime = _runtime(request)
    lang = who.locale if not request.cookies.get("hongyan_lang") else _lang(request)
    with runtime.engine.connect() as conn:
        items = [_with_lint(conn, i, lang) for i in review.queue(conn)]
        recent = review.recent(conn)
    return _staff_render(request, "review.html", who, active="review", items=items, recent=recent)


async def decide(request: Request, kind: str, item_id: str, verdict: str) -> Response:
    who = _require_staff(request)
    await _check_csrf(request, who)
    form = await request.form()
    reason = form.get("reason")
    runtime = _runtime(request)
    if kind not in ("signature", "template") or verdict not in ("approve", "reject"):
        raise PermissionDenied()
    if not (item_id.isascii() and item_id.isdigit() and len(item_id) <= 9):
        raise PermissionDenied()
    lang = who.locale if not request.cookies.get("hongyan_lang") else _lang(request)
    outcome: dict[str, Any] | None = None
    problem: str | None = None
    try:
        with runtime.engine.begin() as conn:
            outcome = review.decide(
                conn,
                runtime.clock,
                who,
                kind,
                int(item_id),
                approve=verdict == "approve",
                reason=reason if isinstance(reason, str) else None,
            )
    except HongyanError as exc:
        problem = exc.message_en if lang == "en" else exc.message_zh
    if request.headers.get("hx-request") == "true":
        return _staff_render(
            request,
            "_review_outcome.html",
            who,
            kind=kind,
            item_id=item_id,
            outcome=outcome,
            problem=problem,
        )
    response = _redirect("/staff/review")
    if problem:
        _set_flash(request, response, problem, problem)
    return response


def install(app: FastAPI) -> None:
    app.add_api_route(
        "/staff", lambda: _redirect("/staff/review"), methods=["GET"], include_in_schema=False
    )
    app.add_api_route("/staff/login", login_page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/staff/login", login_submit, methods=["POST"], include_in_schema=False)
    app.add_api_route("/staff/logout", logout, methods=["POST"], include_in_schema=False)
    app.add_api_route("/staff/review", queue_page, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        "/staff/review/{kind}/{item_id}/{verdict}",
        decide,
        methods=["POST"],
        include_in_schema=False,
    )
