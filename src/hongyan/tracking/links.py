"""Short links: the tenant's link settings and the set-based issuing of per-recipient links."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.db.bulk import fetch_in, insert_rows
from hongyan.db.scope import TenantScope
from hongyan.db.tables import contacts, links, tracking_settings
from hongyan.tracking import codes
from hongyan.tracking.errors import TrackingInvalid

DEFAULT_ATTRIBUTION_DAYS = 7
MAX_TARGET = 2000
PLACE = ("id", "number_province", "number_city", "carrier")


@dataclass(frozen=True)
class TrackingSettings:
    link_base: str
    attribution_days: int


def settings_of(conn: Connection, tenant_id: int) -> TrackingSettings:
    row = conn.execute(
        TenantScope(tenant_id).select(
            tracking_settings, tracking_settings.c.link_base, tracking_settings.c.attribution_days
        )
    ).first()
    if row is None:
        return TrackingSettings(codes.DEFAULT_LINK_BASE, DEFAULT_ATTRIBUTION_DAYS)
    return TrackingSettings(row.link_base or codes.DEFAULT_LINK_BASE, row.attribution_days)


def configure(
    conn: Connection,
    tenant_id: int,
    now: datetime,
    *,
    link_base: str | None = None,
    attribution_days: int | None = None,
) -> TrackingSettings:
    """Set the tenant's link base (``https://t.example``; "" for the platform's) and window."""
    current = settings_of(conn, tenant_id)
    base = current.link_base if link_base is None else (link_base or codes.DEFAULT_LINK_BASE)
    if (problem := codes.link_base_problem(base)) is not None:
        raise TrackingInvalid(
            f"Link base {base!r}: {problem}", f"短链接域名 {base!r} 不可用：需要 http(s)://域名"
        )
    days = current.attribution_days if attribution_days is None else attribution_days
    if not 1 <= days <= 90:
        raise TrackingInvalid(
            "The attribution window is 1 to 90 days", "归因窗口须在 1 到 90 天之间"
        )
    scope = TenantScope(tenant_id)
    values = {"link_base": base.rstrip("/"), "attribution_days": days, "updated_at": now}
    stmt = scope.dialect_insert(conn, tracking_settings).values(tenant_id=tenant_id, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=["tenant_id"], set_=values))
    return TrackingSettings(base.rstrip("/"), days)


def check_target(url: str) -> str:
    url = url.strip()
    if not url.startswith(("http://", "https://")) or len(url) > MAX_TARGET or " " in url:
        raise TrackingInvalid(
            f"A link target is an http(s) URL of at most {MAX_TARGET} characters",
            f"链接目标须为 http(s) 网址，最长 {MAX_TARGET} 个字符",
        )
    return url


def issue(
    conn: Connection,
    tenant_id: int,
    *,
    target: str,
    contact_ids: Sequence[int | None],
    now: datetime,
    expires_at: datetime | None,
    campaign_id: int | None = None,
    variant: str | None = None,
    journey_id: int | None = None,
) -> list[str]:
    """One link per recipient (in order), one bulk insert; returns the short URLs. A link names
    a campaign or a journey (its step as ``variant``); its clicks are attributed to that.

    Codes are random; should one collide with a stored code (about one chance in 3.5 million
    per link with a million links stored), the insert is refused in its savepoint and the whole
    batch is drawn again."""
    target = check_target(target)
    scope = TenantScope(tenant_id)
    base = settings_of(conn, tenant_id).link_base
    # The recipients' places go onto their links, and from a link onto its clicks (reports).
    place = {
        int(r[0]): r[1:]
        for r in fetch_in(
            conn, scope, contacts, PLACE, "id", [c for c in contact_ids if c is not None]
        )
    }
    nowhere = (None, None, None)

    def insert(code_list: list[str]) -> None:
        insert_rows(
            conn,
            scope,
            links,
            ("code", "contact_id", *PLACE[1:]),
            (
                (code, cid, *(place.get(cid, nowhere) if cid is not None else nowhere))
                for code, cid in zip(code_list, contact_ids, strict=True)
            ),
            {
                "campaign_id": campaign_id,
                "journey_id": journey_id,
                "variant": variant,
                "target": target,
                "created_at": now,
                "expires_at": expires_at,
            },
        )

    drawn = codes.insert_unique(conn, len(contact_ids), codes.new_link_code, insert, "link")
    return [codes.short_url(base, c) for c in drawn]


def lookup(conn: Connection, tenant_id: int, code: str) -> sa.Row[tuple[object, ...]] | None:
    return conn.execute(TenantScope(tenant_id).select(links).where(links.c.code == code)).first()
