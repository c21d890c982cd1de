"""Approved templates for tests that send marketing: made through the real review path."""

from __future__ import annotations

import hashlib
import re

from sqlalchemy.engine import Connection

from hongyan.clock import Clock
from hongyan.content import review, service, signatures, templates
from hongyan.errors import NotFound
from hongyan.runtime import Runtime
from hongyan.staff import service as staff
from hongyan.staff.service import StaffPrincipal

REVIEWER = "reviewer@platform.test"
REVIEWER_PASSWORD = "reviewer-password-1"


def reviewer(conn: Connection, clock: Clock) -> StaffPrincipal:
    try:
        member = staff.get_by_email(conn, REVIEWER)
    except NotFound:
        member = staff.create(
            conn, clock, email=REVIEWER, name="审核员", password=REVIEWER_PASSWORD
        )
    return staff.principal_of(member)


def approve_signature(conn: Connection, clock: Clock, tenant_id: int, text: str) -> None:
    """Submit ``text`` as the tenant's signature and approve it, unless it already is."""
    current = {s["text"]: s for s in signatures.listing(conn, tenant_id)}
    if text in current and current[text]["status"] == "approved":
        return
    sig = signatures.submit(conn, clock, tenant_id, text, note="test", actor="test")
    review.decide_signature(conn, clock, reviewer(conn, clock), sig["id"], approve=True)


def approved_version_in(
    conn: Connection, clock: Clock, tenant_id: int, body: str, *, category: str = "marketing"
) -> int:
    """The id of an approved version of a template with ``body`` (made once per body)."""
    name = f"t-{category[:3]}-{hashlib.sha256(body.encode()).hexdigest()[:12]}"
    existing = [t for t in templates.listing(conn, tenant_id) if t["name"] == name]
    if existing and existing[0]["live_version_id"]:
        return int(existing[0]["live_version_id"])
    sig = re.match(r"\s*(【[^【】]+】)", body)
    if sig:
        approve_signature(conn, clock, tenant_id, sig.group(1))
    made = templates.create(
        conn, clock, tenant_id, name=name, category=category, body=body, actor="test"
    )
    templates.submit(
        conn, clock, tenant_id, made["id"], service.context(conn, tenant_id, category), actor="test"
    )
    version_id = made["versions"][0]["id"]
    review.decide_template(conn, clock, reviewer(conn, clock), version_id, approve=True)
    return int(version_id)


def approved_version(
    runtime: Runtime, tenant_id: int, body: str, *, category: str = "marketing"
) -> int:
    with runtime.engine.begin() as conn:
        return approved_version_in(conn, runtime.clock, tenant_id, body, category=category)
