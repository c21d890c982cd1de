"""Request-scoped dependencies: the runtime, a transaction, and who is asking."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

from fastapi import Depends, Request
from sqlalchemy.engine import Connection

from hongyan.errors import AuthenticationFailed, PermissionDenied
from hongyan.runtime import Runtime
from hongyan.security import apikeys, sessions
from hongyan.security.roles import Permission, Role, can

SESSION_COOKIE = "hongyan_session"


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_conn(runtime: Runtime = Depends(get_runtime)) -> Iterator[Connection]:
    """One transaction per request: committed when the handler returns, rolled back on error."""
    with runtime.engine.begin() as conn:
        yield conn


# scope="function": commit before the response is sent, so a failed commit is a 5xx, never a
# 2xx for something that was not stored. Use this everywhere instead of Depends(get_conn).
CONN = Depends(get_conn, scope="function")


@dataclass(frozen=True)
class Principal:
    tenant_id: int
    role: Role
    actor: str  # "user:12" or "apikey:3", for the audit log
    user_id: int | None = None
    session: sessions.SessionPrincipal | None = None

    def require(self, permission: Permission) -> None:
        if not can(self.role, permission):
            raise PermissionDenied()


def bearer_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


def get_principal(
    request: Request,
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> Principal:
    key = bearer_key(request)
    if key:
        api = apikeys.authenticate(conn, runtime.clock, key)
        return Principal(api.tenant_id, api.role, f"apikey:{api.key_id}")
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        sess = sessions.resolve(conn, runtime.clock, token)
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            sent = request.headers.get("x-csrf-token", "")
            if not sent or not secrets.compare_digest(sent, sess.csrf_token):
                raise PermissionDenied("Missing or wrong CSRF token", "CSRF 校验失败")
        return Principal(sess.tenant_id, sess.role, f"user:{sess.user_id}", sess.user_id, sess)
    raise AuthenticationFailed(
        "Send an API key (Authorization: Bearer …) or log in",
        "请提供 API 密钥（Authorization: Bearer …）或先登录",
    )
