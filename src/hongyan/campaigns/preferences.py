"""The preference page's link: a signed token naming a tenant's contact, and what the page
reads and writes (the contact's own choice of how often marketing may reach them).

The token is ``itsdangerous``-signed with the platform's session secret (salt ``preference``):
it cannot be forged or altered, it names nothing readable but two ids, and it does not expire
(a link in a message must keep working). A token for a contact that was erased is "not found".
"""

from __future__ import annotations

from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.engine import Connection

from hongyan.campaigns import caps
from hongyan.clock import Clock
from hongyan.db.scope import TenantScope
from hongyan.db.tables import contacts
from hongyan.errors import NotFound
from hongyan.security import audit


class PreferenceLinkInvalid(NotFound):
    code = "preference_link_invalid"
    message_zh = "该链接无效或已失效"
    message_en = "This link is not valid"


def _serializer(secret: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt="preference")


def token(secret: str, tenant_id: int, contact_id: int) -> str:
    return str(_serializer(secret).dumps([tenant_id, contact_id]))


def parse(secret: str, value: str) -> tuple[int, int]:
    try:
        data = _serializer(secret).loads(value)
    except BadSignature:
        raise PreferenceLinkInvalid() from None
    if not (isinstance(data, list) and len(data) == 2 and all(isinstance(x, int) for x in data)):
        raise PreferenceLinkInvalid()
    return int(data[0]), int(data[1])


def link(public_url: str, secret: str, tenant_id: int, contact_id: int) -> str:
    return f"{public_url.rstrip('/')}/p/{token(secret, tenant_id, contact_id)}"


def state(conn: Connection, tenant_id: int, contact_id: int) -> dict[str, Any]:
    """The contact's masked number and current choice (None: the tenant's policy only)."""
    masked = conn.execute(
        TenantScope(tenant_id)
        .select(contacts, contacts.c.phone_masked)
        .where(contacts.c.id == contact_id)
    ).scalar_one_or_none()
    if masked is None:
        raise PreferenceLinkInvalid()
    return {"phone_masked": masked, "frequency": caps.preference_of(conn, tenant_id, contact_id)}


def choose(
    conn: Connection, clock: Clock, tenant_id: int, contact_id: int, frequency: str
) -> dict[str, Any]:
    state(conn, tenant_id, contact_id)  # the contact exists
    caps.set_preference(conn, clock, tenant_id, contact_id, frequency, "page")
    audit.record(
        conn, clock, tenant_id=tenant_id, actor=f"contact:{contact_id}",
        action="preference.set", target=f"contact:{contact_id}", detail={"frequency": frequency},
    )  # fmt: skip
    return state(conn, tenant_id, contact_id)


def contact_ids(conn: Connection, tenant_id: int, indexes: list[bytes]) -> list[int]:
    return [
        int(i)
        for i in conn.execute(
            TenantScope(tenant_id)
            .select(contacts, contacts.c.id)
            .where(contacts.c.phone_index.in_(indexes))
            .order_by(contacts.c.id)
        ).scalars()
    ]


__all__ = ["choose", "contact_ids", "link", "parse", "state", "token"]
