"""The hook campaign materialisation calls: per-recipient links and coupons for a batch.

``per_recipient(conn, req)`` takes any object with the attributes of :class:`IssueRequest` and
returns ``{"link": [short URL per contact], "coupon": [code per contact]}`` in the order of
``req.contact_ids``, with only the keys asked for (``link_url`` set, ``coupon_pool_id`` set).
The links and coupons name the request's campaign, or its journey (``journey_id``; the variant
is then the journey's step): the one code path for both.
Set-based (one bulk insert of links; one update or insert of coupons) and all or nothing: an
exhausted pool raises :class:`~hongyan.tracking.errors.CouponPoolExhausted` and leaves no link
or coupon issued (a savepoint around both).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from sqlalchemy.engine import Connection

from hongyan.tracking import coupons, links


class IssueRequest(Protocol):
    @property
    def tenant_id(self) -> int: ...
    @property
    def campaign_id(self) -> int | None: ...
    @property
    def variant(self) -> str | None: ...
    @property
    def contact_ids(self) -> Sequence[int]: ...
    @property
    def link_url(self) -> str | None: ...
    @property
    def coupon_pool_id(self) -> int | None: ...
    @property
    def now(self) -> datetime: ...
    @property
    def expires_at(self) -> datetime | None: ...
    @property
    def journey_id(self) -> int | None: ...


def per_recipient(conn: Connection, req: IssueRequest) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    contact_ids = list(req.contact_ids)
    with conn.begin_nested():
        if req.link_url is not None:
            out["link"] = links.issue(
                conn,
                req.tenant_id,
                target=req.link_url,
                contact_ids=contact_ids,
                now=req.now,
                expires_at=req.expires_at,
                campaign_id=req.campaign_id,
                variant=req.variant,
                journey_id=req.journey_id,
            )
        if req.coupon_pool_id is not None:
            out["coupon"] = coupons.issue(
                conn,
                req.tenant_id,
                req.coupon_pool_id,
                contact_ids=contact_ids,
                now=req.now,
                expires_at=req.expires_at,
                campaign_id=req.campaign_id,
                variant=req.variant,
                journey_id=req.journey_id,
            )
    return out
