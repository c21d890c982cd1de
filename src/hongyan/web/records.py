"""Console pages for what was sent and what came back: send records, one message's timeline,
the replies inbox and the suppression list.

Each page is a GET with its filters in the query string, so a filtered view can be bookmarked
and works without JavaScript; with htmx, the filter form and the pager swap only the ``#records``
panel and push the URL. Filters are parsed by :mod:`hongyan.reports.messages`; input it cannot
read is shown back in the form with the problem next to it (422 for a full page, 200 for an
htmx swap, because htmx does not swap error responses). Numbers are masked in every row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, tzinfo
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.engine import Connection

from hongyan.contacts import number_status_jobs
from hongyan.errors import NotFound, PermissionDenied
from hongyan.reports import messages as reports
from hongyan.security.roles import Permission, can
from hongyan.security.sessions import SessionPrincipal
from hongyan.tenants import service
from hongyan.web.console import _lang, _render, _require, _runtime
from hongyan.web.i18n import MESSAGES, translate

PAGE_SIZE = 50
PANEL = "records"  # the id of the element the filter form and the pager swap


def _allow(principal: SessionPrincipal, permission: Permission) -> None:
    if not can(principal.role, permission):
        raise PermissionDenied()


def _partial(request: Request) -> bool:
    """An htmx swap of the panel (a history restore wants the whole page)."""
    h = request.headers
    return (
        h.get("hx-request") == "true"
        and h.get("hx-target") == PANEL
        and h.get("hx-history-restore-request") != "true"
    )


def labeller(lang: str) -> Callable[[str, Any], str]:
    """``label("state", "delivered")`` → 已送达; a value with no translation shows as it is."""

    def label(prefix: str, value: Any) -> str:
        if value is None or value == "":
            return "—"
        key = f"{prefix}.{value}"
        return translate(lang, key) if key in MESSAGES else str(value)

    return label


def local_time(tz: tzinfo) -> Callable[[datetime | None], str]:
    def local(value: datetime | None) -> str:
        if value is None:
            return "—"
        return value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")

    return local


def _url(path: str, params: Sequence[tuple[str, str]], **extra: str | int) -> str:
    pairs = [(k, v) for k, v in params if k not in extra and v != ""]
    pairs += [(k, str(v)) for k, v in extra.items() if v != ""]
    return path + ("?" + urlencode(pairs) if pairs else "")


class _Page:
    """What every list page needs: who, the tenant, the filter echo and the render helpers."""

    def __init__(self, request: Request, permission: Permission) -> None:
        self.request = request
        self.principal = _require(request)
        _allow(self.principal, permission)
        self.runtime = _runtime(request)
        self.lang = _lang(request, self.principal)
        self.query = request.query_params
        self._tenant: service.Tenant | None = None

    def tenant(self, conn: Connection) -> service.Tenant:
        if self._tenant is None:
            self._tenant = service.get_tenant_by_id(conn, self.principal.tenant_id)
        return self._tenant

    def tz(self, conn: Connection) -> ZoneInfo:
        return ZoneInfo(self.tenant(conn).timezone)

    def text(self, name: str) -> str:
        value = self.query.get(name, "")
        return value[:200]

    def respond(
        self,
        conn: Connection,
        template: str,
        *,
        active: str,
        error: reports.BadFilter | None,
        **context: Any,
    ) -> HTMLResponse:
        tenant = self.tenant(conn)
        partial = _partial(self.request)
        return _render(
            self.request,
            f"{template}_panel.html" if partial else f"{template}.html",
            lang=self.lang,
            principal=self.principal,
            tenant_name=tenant.name,
            status=422 if error is not None and not partial else 200,
            active=active,
            error=error,
            bad={p.field for p in error.problems} if error else set(),
            label=labeller(self.lang),
            local=local_time(ZoneInfo(tenant.timezone)),
            timezone=tenant.timezone,
            panel=PANEL,
            **context,
        )


def messages_page(request: Request) -> Response:
    """Send records: filters, counts by state, one page of messages."""
    view = _Page(request, Permission.READ_REPORTS)
    tid = view.principal.tenant_id
    chosen = [s for s in view.query.getlist("state") if s][:20]
    form = {
        "category": view.text("category"),
        "source": view.text("source"),
        "since": view.text("since"),
        "until": view.text("until"),
        "number": view.text("number"),
    }
    params = [("state", s) for s in chosen] + list(form.items())
    page: reports.Page | None = None
    counts: dict[str, int] | None = None
    error: reports.BadFilter | None = None
    number = 1
    with view.runtime.engine.begin() as conn:
        try:
            flt = reports.message_filter(view.tz(conn), states=chosen, **form)
            number = reports.parse_page(view.text("page"))
            page = reports.list_messages(
                conn,
                view.runtime.keyring,
                tid,
                flt,
                limit=PAGE_SIZE,
                offset=(number - 1) * PAGE_SIZE,
            )
            counts = reports.state_counts(conn, view.runtime.keyring, tid, flt)
        except reports.BadFilter as exc:
            error = exc
        return view.respond(
            conn,
            "messages",
            active="messages",
            error=error,
            page=page,
            counts=counts,
            page_no=number,
            pages=max(1, -(-page.total // PAGE_SIZE)) if page else 1,
            form=form,
            chosen=chosen,
            states=reports.STATES,
            categories=reports.CATEGORIES,
            sources=reports.SOURCES,
            page_url=lambda n: _url("/console/messages", params, page=n),
            state_url=lambda s: _url(
                "/console/messages", [p for p in params if p[0] != "state"], state=s
            ),
        )


def message_page(request: Request, message_id: str) -> Response:
    """One message: its masked number, text, parts and timeline."""
    view = _Page(request, Permission.READ_REPORTS)
    if not (message_id.isascii() and message_id.isdigit() and len(message_id) <= 19):
        raise NotFound("No such message", "找不到该短信")
    with view.runtime.engine.begin() as conn:
        timeline = reports.message_timeline(conn, view.principal.tenant_id, int(message_id))
        return view.respond(
            conn,
            "message",
            active="messages",
            error=None,
            m=timeline.message,
            parts=timeline.parts,
            replies=timeline.replies,
            events=timeline.events,
        )


def inbox_page(request: Request) -> Response:
    """Replies and opt-outs from recipients, newest first."""
    view = _Page(request, Permission.READ_REPORTS)
    tid = view.principal.tenant_id
    form = {"kind": view.text("kind"), "number": view.text("number")}
    params = list(form.items())
    page: reports.Page | None = None
    counts: dict[str, int] | None = None
    error: reports.BadFilter | None = None
    number = 1
    with view.runtime.engine.begin() as conn:
        try:
            flt = reports.inbox_filter(**form)
            number = reports.parse_page(view.text("page"))
            page = reports.list_inbox(
                conn,
                view.runtime.keyring,
                tid,
                flt,
                limit=PAGE_SIZE,
                offset=(number - 1) * PAGE_SIZE,
            )
            counts = reports.inbox_counts(conn, view.runtime.keyring, tid, flt)
        except reports.BadFilter as exc:
            error = exc
        return view.respond(
            conn,
            "inbox",
            active="inbox",
            error=error,
            page=page,
            counts=counts,
            page_no=number,
            pages=max(1, -(-page.total // PAGE_SIZE)) if page else 1,
            form=form,
            kinds=reports.INBOX_KINDS,
            page_url=lambda n: _url("/console/inbox", params, page=n),
            kind_url=lambda k: _url("/console/inbox", params, kind=k),
        )


def suppressions_page(request: Request) -> Response:
    """The tenant's suppression list: who must not get what, and why."""
    view = _Page(request, Permission.READ_CONTACTS)
    tid = view.principal.tenant_id
    form = {"reason": view.text("reason"), "number": view.text("number")}
    params = list(form.items())
    page: reports.Page | None = None
    error: reports.BadFilter | None = None
    number = 1
    with view.runtime.engine.begin() as conn:
        try:
            flt = reports.suppression_filter(**form)
            number = reports.parse_page(view.text("page"))
            page = reports.list_suppressions(
                conn,
                view.runtime.keyring,
                tid,
                flt,
                limit=PAGE_SIZE,
                offset=(number - 1) * PAGE_SIZE,
            )
        except reports.BadFilter as exc:
            error = exc
        return view.respond(
            conn,
            "suppressions",
            active="suppressions",
            error=error,
            page=page,
            page_no=number,
            pages=max(1, -(-page.total // PAGE_SIZE)) if page else 1,
            form=form,
            reasons=reports.SUPPRESSION_REASONS,
            page_url=lambda n: _url("/console/suppressions", params, page=n),
            checks=number_status_jobs.recent(conn, tid, limit=5),
            can_check=can(view.principal.role, Permission.MANAGE_CONTACTS),
            provider=view.runtime.settings.number_status_provider,
        )


def install(app: FastAPI) -> None:
    """Add the pages; call before the console's catch-all ``/console/{name}`` route."""
    for path, endpoint in (
        ("/console/messages", messages_page),
        ("/console/messages/{message_id}", message_page),
        ("/console/inbox", inbox_page),
        ("/console/suppressions", suppressions_page),
    ):
        app.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False)
