"""The public preference page (``/p/{token}``): a contact chooses how often marketing may reach
them (weekly, monthly, important only, none). No login: the signed token is the permission.
Chinese by default, ``?lang=en`` for English."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

from hongyan.campaigns import caps, preferences
from hongyan.web.console import _render, _runtime
from hongyan.web.i18n import DEFAULT_LANG, LANGS


def _lang(request: Request) -> str:
    chosen = request.query_params.get("lang", "")
    return chosen if chosen in LANGS else DEFAULT_LANG


def _page(request: Request, token: str, *, saved: bool = False) -> Response:
    runtime = _runtime(request)
    tenant_id, contact_id = preferences.parse(runtime.settings.session_secret, token)
    with runtime.engine.begin() as conn:
        s = preferences.state(conn, tenant_id, contact_id)
    return _render(
        request, "preference.html", lang=_lang(request), s=s, token=token, saved=saved,
        choices=list(caps.PREFERENCE_NAMES.items()),
    )  # fmt: skip


def show(request: Request, token: str) -> Response:
    return _page(request, token)


async def save(request: Request, token: str) -> Response:
    runtime = _runtime(request)
    tenant_id, contact_id = preferences.parse(runtime.settings.session_secret, token)
    form = await request.form()
    with runtime.engine.begin() as conn:
        preferences.choose(
            conn, runtime.clock, tenant_id, contact_id, str(form.get("frequency") or "")
        )
    return _page(request, token, saved=True)


def install(app: FastAPI) -> None:
    app.add_api_route("/p/{token}", show, methods=["GET"], include_in_schema=False)
    app.add_api_route("/p/{token}", save, methods=["POST"], include_in_schema=False)
