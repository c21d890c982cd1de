"""The FastAPI application: the REST API under /api/v1 and the console, in one app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from hongyan import __version__
from hongyan.db.migrate import require_migrated
from hongyan.errors import HongyanError, ValidationFailed
from hongyan.runtime import Runtime

log = logging.getLogger("hongyan.api")
# SQLSTATEs of values a request can carry that the database refuses: a number out of its
# column's range, text its encoding cannot hold, a NUL byte (psycopg refuses that one itself).
_INPUT_STATES = frozenset({"22003", "22021", "22P05"})


def _refused_input(exc: Any) -> bool:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) in _INPUT_STATES or "NUL (0x00)" in str(orig)


def _error(status: int, code: str, en: str, zh: str, **extra: object) -> JSONResponse:
    body: dict[str, object] = {"code": code, "message": {"zh": zh, "en": en}}
    body.update(extra)
    return JSONResponse(body, status_code=status)


Background = Callable[[asyncio.Event], Coroutine[Any, Any, None]]

#: Paths that never open a transaction: they need not wait their turn on SQLite.
_NO_TRANSACTION = ("/static/", "/api/v1/health")


class _TakeTurnsOnSqlite:
    """On SQLite, requests take turns on the event loop before they take a worker thread.

    SQLite has one writer, and every request's transaction begins IMMEDIATE (it takes the write
    lock at its start, see :mod:`hongyan.db.engine`). Without this, a burst of requests filled
    the worker threads with transactions waiting at BEGIN for the lock, while the request that
    held it waited for a free thread to run its handler: after busy_timeout, "database is
    locked" and a 500. Waiting here costs no thread, and requests run one after another as
    they would have anyway. PostgreSQL needs none of this and is not wrapped.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.turn = asyncio.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        # Short-link clicks take turns too: a path shaped like a code is not always one
        # (/console is seven letters), and on SQLite a click's commit waits for the lock anyway.
        if not path or path.startswith(_NO_TRANSACTION):
            await self.app(scope, receive, send)
            return
        async with self.turn:
            await self.app(scope, receive, send)


def create_app(runtime: Runtime, background: Sequence[Background] = ()) -> FastAPI:
    """The app; ``background`` tasks (dispatcher, sandbox) run for the server's lifetime."""
    from hongyan.api.routers import (
        account,
        calendar,
        callbacks,
        health,
        messages,
        suppressions,
        webhooks,
    )
    from hongyan.web import console

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(job(stop)) for job in background]
        yield
        stop.set()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=10)
            for task in pending:
                task.cancel()

    app = FastAPI(
        lifespan=lifespan,
        title="hongyan (鸿雁) API",
        version=__version__,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.migrated = False

    @app.middleware("http")
    async def require_schema(request: Request, call_next):  # type: ignore[no-untyped-def]
        if not app.state.migrated and not request.url.path.startswith("/static/"):
            try:
                require_migrated(runtime.engine)
                app.state.migrated = True
            except HongyanError as exc:
                if request.url.path != "/api/v1/health":
                    return JSONResponse(exc.body(), status_code=exc.status)
        response: Response = await call_next(request)
        return response

    @app.exception_handler(HongyanError)
    async def typed_error(request: Request, exc: HongyanError) -> Response:
        log.info("%s %s -> %s", request.method, request.url.path, exc.code)
        if not request.url.path.startswith("/api/"):
            return await console.error_page(request, exc)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(sa_exc.DataError)
    async def unstorable(request: Request, exc: sa_exc.DataError) -> Response:
        if not _refused_input(exc):
            raise exc  # a bug (division by zero, an overflowing sum): the 500 it is
        # A value the database refuses (U+0000 in text on PostgreSQL, a number past its
        # column) that no check before it caught: the API's routers refuse NUL themselves, the
        # console's forms, the provider callbacks and anything added later meet this instead of
        # a 500. The statement failed, so its transaction is rolled back with nothing written.
        log.warning("%s %s -> database refused a value: %s", request.method, request.url.path,
                    str(exc.orig).splitlines()[0] if exc.orig else exc)  # fmt: skip
        return await typed_error(
            request,
            ValidationFailed(
                "A value in the request cannot be stored or looked up (a NUL character, a "
                "number out of range)",
                "请求中的某个值无法保存或查询（例如 NUL 字符、超出范围的数字）",
            ),
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            {"location": [str(p) for p in err.get("loc", ())], "problem": err.get("msg", "")}
            for err in exc.errors()
        ]
        err = ValidationFailed(
            "The request body or parameters are not valid",
            "请求内容或参数不正确",
            details={"problems": problems},
        )
        return JSONResponse(err.body(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return _error(404, "not_found", "Not found", "找不到该资源")
        if exc.status_code == 405:
            return _error(405, "method_not_allowed", "Method not allowed", "不支持该请求方法")
        if exc.status_code == 400:
            # FastAPI and Starlette answer 400 when they cannot read the body at all (bytes that
            # are not UTF-8 under application/json, a broken multipart body): the same typed 422
            # as a body that is not JSON, rather than an untranslated 400.
            err = ValidationFailed(
                "The request body could not be read",
                "无法读取请求内容",
                details={"problems": [{"location": ["body"], "problem": str(exc.detail)}]},
            )
            return JSONResponse(err.body(), status_code=422)
        return _error(exc.status_code, "http_error", str(exc.detail), str(exc.detail))

    app.include_router(health.router, prefix="/api/v1")
    app.include_router(account.router, prefix="/api/v1")
    app.include_router(messages.router, prefix="/api/v1")
    app.include_router(callbacks.router, prefix="/api/v1")
    app.include_router(suppressions.router, prefix="/api/v1")
    app.include_router(webhooks.router, prefix="/api/v1")
    app.include_router(calendar.router, prefix="/api/v1")
    # content: the lint, templates, signatures, words; the platform's review queue (staff)
    from hongyan.api.routers import content, review

    app.include_router(content.router, prefix="/api/v1")
    app.include_router(review.router, prefix="/api/v1")
    from hongyan.api.routers import contacts  # contacts, imports, events (issue 4)

    app.include_router(contacts.router, prefix="/api/v1")
    from hongyan.api.routers import segments  # segments, audiences, RFM, lifecycle (issue 6)

    app.include_router(segments.router, prefix="/api/v1")
    from hongyan.api.routers import reports  # campaign reports and exports (issue 8)

    app.include_router(reports.router, prefix="/api/v1")
    from hongyan.api.routers import campaigns  # campaigns, caps, journeys (issue 7)

    app.include_router(campaigns.router, prefix="/api/v1")
    console.install(app)
    from hongyan.tracking import redirector  # short links: GET /{code}, after every other route

    redirector.install(app, runtime)
    if runtime.engine.dialect.name == "sqlite":
        app.add_middleware(_TakeTurnsOnSqlite)
    return app
