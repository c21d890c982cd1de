"""The error responses the REST API documents in its OpenAPI schema.

Every error under /api/v1 has one body, :meth:`hongyan.errors.HongyanError.body`: a stable
``code``, the message in Chinese and English, and sometimes ``details``. The routers document
which statuses an operation answers with: every router of the API is made by
:func:`hongyan.api.routing.api_router`, which documents :data:`TENANT` on each of its operations
and 404 on those with a path parameter; a route adds with ``responses=errors(...)`` what only it
can answer (a 409, a 404 for an id in the body). A client generated from the schema can then
parse every error, and tests/api/test_openapi_fuzz.py holds the API to it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorMessage(BaseModel):
    zh: str = Field(description="The message in Chinese")
    en: str = Field(description="The message in English")


class ErrorBody(BaseModel):
    code: str = Field(description="Stable, machine-readable: validation_failed, not_found, …")
    message: ErrorMessage
    details: dict[str, Any] | None = Field(
        default=None,
        description="What exactly was wrong, when known: for validation_failed, `problems` "
        "lists each bad field as {location, problem}",
    )


_DESCRIPTIONS = {
    401: "No API key or session, or one that is not valid (authentication_failed)",
    403: "The caller's role may not do this, or a session's CSRF token is missing",
    404: "The resource does not exist, or belongs to another tenant",
    409: "Conflicts with the resource's current state or with existing data",
    422: "The body or parameters are not valid (validation_failed, with `details.problems`), "
    "or the request cannot be carried out as asked",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each with the bilingual error body."""
    return {s: {"model": ErrorBody, "description": _DESCRIPTIONS[s]} for s in statuses}


#: What any operation of the API can answer: no or a bad key, a role that may not, and
#: input that is not valid (FastAPI's own 422 schema does not describe our body).
TENANT = errors(401, 403, 422)
#: The 200 of an export that answers a CSV file (not the JSON FastAPI would document).
CSV_FILE: dict[int | str, dict[str, Any]] = {
    200: {"description": "CSV (UTF-8)", "content": {"text/csv": {"schema": {"type": "string"}}}}
}
