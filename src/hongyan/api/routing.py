"""The routers of the REST API: what every operation under /api/v1 shares.

Every router is made by :func:`api_router`. Its operations document the error responses any of
them can give (:data:`hongyan.api.responses.TENANT`, and 404 with a path parameter), and refuse
text that no database column can hold before the handler runs (:func:`refuse_nul`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request, params
from fastapi.routing import APIRoute

from hongyan.api.responses import TENANT, errors
from hongyan.errors import ValidationFailed

NUL = "\x00"
FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


class ApiRoute(APIRoute):
    """A route of the API: with a path parameter, it documents 404 as well (an id that does not
    exist, or is another tenant's, is answered with 404)."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        responses: dict[int | str, dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        if "{" in path:
            responses = {**errors(404), **(responses or {})}
        super().__init__(path, endpoint, responses=responses, **kwargs)


def _nul_in(value: Any, at: list[str]) -> list[str] | None:
    """Where in a parsed JSON value a string (or a key) holds U+0000, if anywhere."""
    if isinstance(value, str):
        return at if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = [*at, key] if NUL in key else _nul_in(item, [*at, key])
            if found:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _nul_in(item, [*at, str(i)])
            if found:
                return found
    return None


async def refuse_nul(request: Request) -> None:
    """Refuse U+0000 anywhere in a request's text: PostgreSQL cannot store it in a text column
    (a DataError, which was a 500), SQLite can. Both now answer the same validation_failed 422,
    naming where it was: in the path, the query, a JSON body or a form's fields."""
    found: list[str] | None = None
    for name, value in request.path_params.items():
        if NUL in str(value):
            found = found or ["path", name]
    for name, value in request.query_params.multi_items():
        if NUL in name or NUL in value:
            found = found or ["query", name]
    route = request.scope.get("route")
    body = getattr(route, "body_field", None)
    if found is None and body is not None:
        if isinstance(body.field_info, params.Form):  # (File is a Form)
            # Only a form's own parse, which FastAPI made already for the handler (the same
            # object): a body of another type is refused by the handler's validation unread,
            # never buffered here before authentication.
            if request.headers.get("content-type", "").lower().startswith(FORMS):
                form = await request.form()
                found = next(
                    (
                        ["body", k]
                        for k, v in form.multi_items()
                        if NUL in k or (isinstance(v, str) and NUL in v)
                        or (not isinstance(v, str) and NUL in (v.filename or ""))
                    ),
                    None,
                )  # fmt: skip
        else:  # JSON, which FastAPI reads whole for the handler anyway
            raw = await request.body()
            # In UTF-8, JSON can write U+0000 only as the escape \u0000 (a raw control
            # character is not JSON); a UTF-16/32 body has zero bytes throughout. A byte search
            # spares every other body (a batch of events, a send) a second parse, which finds
            # where it is only when it may be there.
            if b"\\u0000" in raw or b"\x00" in raw:
                with contextlib.suppress(ValueError):  # not JSON: the handler refuses it
                    found = _nul_in(json.loads(raw), ["body"])
    if found is not None:
        raise ValidationFailed(
            "Text may not contain the NUL character (U+0000)",
            "文本不能包含 NUL 字符（U+0000）",
            details={"problems": [{"location": found, "problem": "contains U+0000"}]},
        )


def api_router(tag: str) -> APIRouter:
    """The router of one part of the API, its errors documented and its text checked."""
    return APIRouter(
        tags=[tag], responses=TENANT, route_class=ApiRoute, dependencies=[Depends(refuse_nul)]
    )
