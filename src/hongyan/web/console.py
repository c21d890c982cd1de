"""The console: server-rendered pages (Jinja2 + htmx) for people who log in with a password.

The console shares the app with the REST API. A console session is a random token in an
HttpOnly cookie (``hongyan.security.sessions``); every console form carries the session's CSRF
token, and the login form uses a signed double-submit token because there is no session yet.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from itsdangerous import BadSignature, URLSafeSerializer, URLSafeTimedSerializer
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from hongyan.api.deps import SESSION_COOKIE
from hongyan.errors import AuthenticationFailed, HongyanError, NotFound, PermissionDenied
from hongyan.runtime import Runtime
from hongyan.security import sessions
from hongyan.security.sessions import SessionPrincipal
from hongyan.tenants import service
from hongyan.web.i18n import DEFAULT_LANG, LANGS, MESSAGES, translate, translator

HERE = Path(__file__).parent
LANG_COOKIE = "hongyan_lang"
FLASH_COOKIE = "hongyan_flash"
LOGIN_CSRF_COOKIE = "hongyan_login_csrf"
LOGIN_CSRF_MAX_AGE = 2 * 3600
CSRF_FIELD = "csrf_token"

# (section, nav key); the dashboard is /console, the others /console/<section>.
NAV: list[tuple[str, str]] = [
    ("dashboard", "nav.dashboard"),
    ("contacts", "nav.contacts"),
    ("audiences", "nav.audiences"),
    ("content", "nav.content"),
    ("campaigns", "nav.campaigns"),
    ("messages", "nav.messages"),
    ("inbox", "nav.inbox"),
    ("suppressions", "nav.suppressions"),
    ("reports", "nav.reports"),
    ("settings", "nav.settings"),
]
BUILT = {
    "dashboard", "messages", "inbox", "suppressions", "content", "contacts", "audiences",
    "campaigns",
}  # fmt: skip

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_env = Environment(
    loader=FileSystemLoader(str(HERE / "templates")),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


# ---------------------------------------------------------------- helpers


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def safe_next(value: str | None, default: str = "/console") -> str:
    """Only local paths: start with one "/" and carry no scheme, host or backslash tricks."""
    if not value or not value.startswith("/") or value.startswith("//"):
        return default
    if "\\" in value or any(ord(c) < 32 for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


def _lang(request: Request, principal: SessionPrincipal | None = None) -> str:
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in LANGS:
        return chosen
    if principal is not None and principal.locale in LANGS:
        return principal.locale
    return DEFAULT_LANG


def _flash_serializer(runtime: Runtime) -> URLSafeSerializer:
    return URLSafeSerializer(runtime.settings.session_secret, salt="console-flash")


def _login_serializer(runtime: Runtime) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(runtime.settings.session_secret, salt="login-csrf")


def _set_flash(request: Request, response: Response, zh: str, en: str, kind: str = "error") -> None:
    value = _flash_serializer(_runtime(request)).dumps({"zh-CN": zh, "en": en, "kind": kind})
    response.set_cookie(
        FLASH_COOKIE, value, httponly=True, samesite="lax", secure=_secure(request), path="/"
    )


def _read_flash(request: Request, lang: str) -> tuple[str, str] | None:
    """(text, kind) of the one-time message left by a redirect, if any."""
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        data = _flash_serializer(_runtime(request)).loads(raw)
    except BadSignature:
        return None
    if not isinstance(data, dict):
        return None
    text = data.get(lang) or data.get(DEFAULT_LANG)
    kind = "info" if data.get("kind") == "info" else "error"
    return (str(text), kind) if text else None


def _current(request: Request) -> SessionPrincipal | None:
    """The logged-in person, or None; never raises."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    runtime = _runtime(request)
    try:
        with runtime.engine.begin() as conn:
            return sessions.resolve(conn, runtime.clock, token)
    except HongyanError:
        return None


def _require(request: Request) -> SessionPrincipal:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        msg = MESSAGES["login.required"]
        raise AuthenticationFailed(msg["en"], msg["zh-CN"])
    runtime = _runtime(request)
    with runtime.engine.connect() as conn:  # a read: never waits for SQLite's writer
        return sessions.resolve(conn, runtime.clock, token)


async def _check_csrf(request: Request, principal: SessionPrincipal) -> None:
    sent = request.headers.get("x-csrf-token", "")
    if not sent:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else ""
    if not sent or not secrets.compare_digest(sent, principal.csrf_token):
        msg = MESSAGES["error.csrf"]
        raise PermissionDenied(msg["en"], msg["zh-CN"])


def _render(
    request: Request,
    template: str,
    *,
    lang: str,
    principal: SessionPrincipal | None = None,
    tenant_name: str | None = None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    t = translator(lang)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    ctx: dict[str, Any] = {
        "t": t,
        "lang": lang,
        "other_lang": "en" if lang == "zh-CN" else "zh-CN",
        "here": quote(safe_next(here, "/console"), safe="/"),
        "principal": principal,
        "tenant_name": tenant_name,
        "csrf_token": principal.csrf_token if principal else "",
        "nav": NAV,
        "built": BUILT,
        "active": context.pop("active", None),
        "flash": _read_flash(request, lang),
    }
    ctx.update(context)
    body = _env.get_template(template).render(ctx)
    response = HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)
    if request.cookies.get(FLASH_COOKIE):
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def _tenant_name(request: Request, principal: SessionPrincipal) -> str:
    runtime = _runtime(request)
    with runtime.engine.begin() as conn:
        return service.get_tenant_by_id(conn, principal.tenant_id).name


def _redirect(url: str, status: int = 303) -> RedirectResponse:
    return RedirectResponse(url, status_code=status, headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------- error page


async def error_page(request: Request, exc: HongyanError) -> Response:
    """How a typed error looks in the console: a login redirect for 401, else a page."""
    runtime = _runtime(request)
    if exc.status == 401:
        if request.method in ("GET", "HEAD"):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        else:
            target = "/console"
        url = "/login?next=" + quote(safe_next(target), safe="/")
        cookie = SESSION_COOKIE
        if request.url.path.startswith("/staff"):  # platform staff log in on their own page
            url, cookie = "/staff/login", "hongyan_staff_session"
        response: Response
        if request.headers.get("hx-request"):
            response = Response(status_code=204, headers={"HX-Redirect": url})
        else:
            response = _redirect(url)
        _set_flash(request, response, exc.message_zh, exc.message_en)
        if request.cookies.get(cookie):
            response.delete_cookie(cookie, path="/")
        return response
    principal = _current(request)
    lang = _lang(request, principal)
    tenant_name = None
    if principal is not None:
        with runtime.engine.begin() as conn:
            tenant_name = service.get_tenant_by_id(conn, principal.tenant_id).name
    message = exc.message_en if lang == "en" else exc.message_zh
    return _render(
        request,
        "error.html",
        lang=lang,
        principal=principal,
        tenant_name=tenant_name,
        status=exc.status,
        message=message,
        code=exc.code,
        status_code=exc.status,
    )


# ---------------------------------------------------------------- routes


async def root(request: Request) -> Response:
    return _redirect("/console" if _current(request) else "/login")


def _login_form(
    request: Request,
    *,
    status: int = 200,
    error: str | None = None,
    next_url: str,
    email: str = "",
    **extra: Any,
) -> HTMLResponse:
    """The login page with a fresh signed form token (``extra``: another login's action and
    texts, as the staff login uses)."""
    runtime = _runtime(request)
    token = secrets.token_urlsafe(24)
    response = _render(
        request,
        "login.html",
        lang=_lang(request),
        status=status,
        error=error,
        next_url=next_url,
        email=email,
        login_csrf=token,
        **extra,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        _login_serializer(runtime).dumps(token),
        max_age=LOGIN_CSRF_MAX_AGE,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path="/",
    )
    return response


def login_token_valid(request: Request, sent: str) -> bool:
    """The login form's double-submit check: the posted token matches the signed cookie."""
    expected: str | None = None
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE)
    if cookie:
        try:
            expected = _login_serializer(_runtime(request)).loads(
                cookie, max_age=LOGIN_CSRF_MAX_AGE
            )
        except BadSignature:
            expected = None
    return bool(sent) and isinstance(expected, str) and secrets.compare_digest(sent, expected)


def logged_in(request: Request, url: str, cookie: str, token: str) -> Response:
    """The redirect after a login, carrying the new session cookie."""
    response = _redirect(url)
    response.set_cookie(
        cookie,
        token,
        max_age=_runtime(request).settings.session_max_age,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


async def login_page(request: Request) -> Response:
    next_url = safe_next(request.query_params.get("next"))
    if _current(request) is not None:
        return _redirect(next_url)
    return _login_form(request, next_url=next_url)


async def login_submit(request: Request) -> Response:
    runtime = _runtime(request)
    form = await request.form()

    def field(name: str) -> str:
        value = form.get(name)
        return value if isinstance(value, str) else ""

    next_url = safe_next(field("next"))
    email = field("email").strip()
    lang = _lang(request)

    if not login_token_valid(request, field(CSRF_FIELD)):
        return _login_form(
            request,
            status=403,
            error=translate(lang, "login.form_expired"),
            next_url=next_url,
            email=email,
        )

    try:
        with runtime.engine.begin() as conn:
            user = service.authenticate_user(conn, runtime.clock, email, field("password"))
            token, _csrf = sessions.start(
                conn,
                runtime.clock,
                tenant_id=user.tenant_id,
                user_id=user.id,
                max_age=runtime.settings.session_max_age,
                ip=request.client.host if request.client else None,
            )
    except AuthenticationFailed as exc:
        message = exc.message_en if lang == "en" else exc.message_zh
        return _login_form(request, status=401, error=message, next_url=next_url, email=email)

    return logged_in(request, next_url, SESSION_COOKIE, token)


async def logout(request: Request) -> Response:
    principal = _require(request)
    await _check_csrf(request, principal)
    runtime = _runtime(request)
    with runtime.engine.begin() as conn:
        sessions.end(conn, runtime.clock, principal)
    response = _redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    msg = MESSAGES["login.logged_out"]
    _set_flash(request, response, msg["zh-CN"], msg["en"], kind="info")
    return response


async def switch_language(request: Request, code: str) -> Response:
    if code not in LANGS:
        raise NotFound(f"Unknown language {code!r}", f"不支持的语言 {code!r}")
    target = request.query_params.get("next")
    if not target:
        referer = request.headers.get("referer", "")
        parts = urlsplit(referer)
        if parts.netloc and parts.netloc == request.url.netloc:
            target = parts.path + (f"?{parts.query}" if parts.query else "")
    response = _redirect(safe_next(target, "/"))
    response.set_cookie(
        LANG_COOKIE,
        code,
        max_age=365 * 24 * 3600,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path="/",
    )
    return response


async def dashboard(request: Request) -> Response:
    principal = _require(request)
    runtime = _runtime(request)
    with runtime.engine.begin() as conn:
        tenant = service.get_tenant_by_id(conn, principal.tenant_id)
        signatures = [
            s for s in service.signatures_of(conn, principal.tenant_id) if s["status"] == "approved"
        ]
        policy = service.policy_of(conn, principal.tenant_id)
    return _render(
        request,
        "dashboard.html",
        lang=_lang(request, principal),
        principal=principal,
        tenant_name=tenant.name,
        active="dashboard",
        tenant=tenant,
        signatures=signatures,
        policy=policy,
    )


async def section(request: Request, name: str) -> Response:
    principal = _require(request)
    keys = dict(NAV)
    if name not in keys or name in BUILT:
        raise NotFound()
    return _render(
        request,
        "later.html",
        lang=_lang(request, principal),
        principal=principal,
        tenant_name=_tenant_name(request, principal),
        active=name,
        section_key=keys[name],
    )


def install(app: FastAPI) -> None:
    """Mount the static files and add the console's routes to ``app``."""
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.add_api_route("/", root, methods=["GET"], include_in_schema=False)
    app.add_api_route("/login", login_page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/login", login_submit, methods=["POST"], include_in_schema=False)
    app.add_api_route("/logout", logout, methods=["POST"], include_in_schema=False)
    app.add_api_route("/lang/{code}", switch_language, methods=["GET"], include_in_schema=False)
    app.add_api_route("/console", dashboard, methods=["GET"], include_in_schema=False)
    from hongyan.web import records  # send records, inbox, suppressions; before the catch-all

    records.install(app)
    from hongyan.web import content, review  # content pages; the staff's review console

    content.install(app)
    review.install(app)
    from hongyan.web import contacts  # contacts list and imports (issue 4)

    contacts.install(app)
    from hongyan.web import audience  # segments, RFM, lifecycle (issue 6)

    audience.install(app)
    from hongyan.web import reports  # campaign reports and charts (issue 8)

    reports.install(app)
    from hongyan.web import campaigns  # campaigns: list, wizard, status (issue 7)

    campaigns.install(app)
    from hongyan.web import journeys  # the form that makes a journey (issue 8: links, coupons)

    journeys.install(app)
    from hongyan.web import preferences  # the public preference page /p/{token} (issue 7)

    preferences.install(app)
    app.add_api_route("/console/{name}", section, methods=["GET"], include_in_schema=False)
