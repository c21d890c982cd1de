"""Health: is the process up, and does the database answer at the schema the code expects."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from hongyan import __version__
from hongyan.api.deps import get_runtime
from hongyan.db.migrate import current_revision, head_revision
from hongyan.runtime import Runtime

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness and database check")
def health(runtime: Runtime = Depends(get_runtime)) -> JSONResponse:
    body: dict[str, Any] = {"version": __version__, "database": runtime.engine.dialect.name}
    try:
        with runtime.engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        current = current_revision(runtime.engine)
    except Exception:  # the database does not answer
        body.update(status="error", code="database_unavailable")
        return JSONResponse(body, status_code=503)
    body["schema"] = {"current": current, "expected": head_revision()}
    if current != head_revision():
        body.update(status="error", code="database_not_migrated")
        return JSONResponse(body, status_code=503)
    body["status"] = "ok"
    return JSONResponse(body)
