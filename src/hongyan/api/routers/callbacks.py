"""Provider pushes: delivery reports and replies from HTTP providers, into the same path as SMPP.

``POST /api/v1/callbacks/{channel}/{token}/{kind}`` (Alibaba Cloud, Tencent Cloud: the providers
do not sign their pushes, so an unguessable token in the URL configured in their console is the
check) and ``POST /api/v1/callbacks/{channel}/{kind}`` (Twilio: every request is signed), where
``kind`` is ``status`` or ``reply``. The channel's kind parses the push
(:func:`hongyan.channels.registry.callback_parser`); its reports go to
:func:`hongyan.dispatch.receipts.apply_reports` and its replies to
:func:`hongyan.dispatch.replies.apply_inbound` in the request's one transaction, and the provider
gets the answer it expects only after that transaction committed (so it retries otherwise).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.engine import Connection

from hongyan.api.deps import CONN, get_runtime
from hongyan.channels import registry
from hongyan.channels import service as channel_store
from hongyan.channels.base import CallbackRejected
from hongyan.dispatch import receipts, replies
from hongyan.runtime import Runtime

router = APIRouter(tags=["provider callbacks"], include_in_schema=False)
log = logging.getLogger("hongyan.api.callbacks")
KINDS = ("status", "reply")


def _public_url(request: Request, runtime: Runtime) -> str:
    """The URL the provider called (behind a proxy: HONGYAN_PUBLIC_URL + path + query)."""
    base = runtime.settings.public_url.rstrip("/")
    if not base:
        return str(request.url)
    query = f"?{request.url.query}" if request.url.query else ""
    return f"{base}{request.url.path}{query}"


async def _handle(
    request: Request, channel: str, kind: str, conn: Connection, runtime: Runtime
) -> Response:
    if kind not in KINDS:
        return JSONResponse({"code": "not_found"}, status_code=404)
    spec = channel_store.get_spec(conn, runtime.keyring, channel)  # 404 unknown_channel
    parser = registry.callback_parser(spec.kind)
    if parser is None:
        return JSONResponse({"code": "no_callbacks_for_kind"}, status_code=404)
    body = await request.body()
    try:
        result = parser(
            spec,
            kind=kind,
            url=_public_url(request, runtime),
            headers=dict(request.headers),
            body=body,
        )
    except CallbackRejected as exc:
        log.warning("callback for channel %s refused: %s", channel, exc)
        return JSONResponse(
            {"code": "callback_rejected", "message": str(exc)}, status_code=exc.status_code
        )
    if result.reports:
        receipts.apply_reports(conn, runtime.clock, spec.name, result.reports)
    if result.inbounds:
        replies.apply_inbound(conn, runtime.clock, runtime.keyring, spec, result.inbounds)
    return Response(result.body, status_code=result.status_code, media_type=result.media_type)


@router.post("/callbacks/{channel}/{token}/{kind}")
async def with_token(
    request: Request,
    channel: str,
    token: str,
    kind: str,
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> Response:
    del token  # checked by the channel's parser, which reads it from the URL
    return await _handle(request, channel, kind, conn, runtime)


@router.post("/callbacks/{channel}/{kind}")
async def signed(
    request: Request,
    channel: str,
    kind: str,
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> Response:
    return await _handle(request, channel, kind, conn, runtime)
