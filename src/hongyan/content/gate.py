"""The gate at the outbox: marketing is sent with approved templates only.

:func:`check_outbox` runs inside :func:`hongyan.dispatch.outbox.enqueue`, the one door every
message passes (API, CLI, campaigns, journeys), so no path can forget it:

- a **marketing** message names the approved template version it was rendered from, or it is
  refused (``template_required``); so is marketing from a tenant whose policy allows
  notifications only (``marketing_not_allowed``);
- a **notification** needs one only when the tenant's policy says so
  (``policies.notification_template_required``, off by default: transactional texts come
  from the business's own systems through the API; an operator whose carriers demand approved
  templates for everything turns it on);
- a **verification** code never needs one;
- a version that is named must be this tenant's, approved, of a template of the same category
  that is not archived (``template_not_approved``).

The caller renders the version's text (:mod:`hongyan.content.sending` does it for the API);
the outbox records the version on the message (``messages.template_version_id``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Connection

from hongyan.db.scope import TenantScope
from hongyan.db.tables import policies, template_versions, templates
from hongyan.dispatch.states import Lane
from hongyan.errors import PermissionDenied, ValidationFailed


class TemplateRequired(ValidationFailed):
    code = "template_required"
    message_zh = "营销短信只能使用已审核通过的模板发送（请提供 template_id）"
    message_en = "Marketing messages are sent with an approved template only (give template_id)"


class TemplateNotApproved(ValidationFailed):
    code = "template_not_approved"
    message_zh = "该模板没有已审核通过的版本，不能发送"
    message_en = "This template has no approved version to send with"


class MarketingNotAllowed(PermissionDenied):
    code = "marketing_not_allowed"
    message_zh = "该租户的策略不允许发送营销短信（仅限通知类短信）"
    message_en = "This tenant's policy allows notifications only, no marketing"


@dataclass(frozen=True)
class _Policy:
    marketing_allowed: bool = True  # the table's defaults, for a tenant without a policy row
    notification_template_required: bool = False


def _policy(conn: Connection, tenant_id: int) -> _Policy:
    row = conn.execute(
        TenantScope(tenant_id).select(
            policies, policies.c.marketing_allowed, policies.c.notification_template_required
        )
    ).first()
    if row is None:
        return _Policy()
    return _Policy(bool(row.marketing_allowed), bool(row.notification_template_required))


def check_outbox(
    conn: Connection, tenant_id: int, lane: Lane, template_version_id: int | None
) -> None:
    """Refuse a message that may not enter the outbox as it is (see the module doc)."""
    if lane is Lane.VERIFICATION and template_version_id is None:
        return
    if lane is Lane.MARKETING:
        if not _policy(conn, tenant_id).marketing_allowed:
            raise MarketingNotAllowed()
        if template_version_id is None:
            raise TemplateRequired()
    elif template_version_id is None:
        if _policy(conn, tenant_id).notification_template_required:
            raise TemplateRequired(
                "This tenant's policy sends notifications with approved templates only",
                "该租户的策略要求通知类短信也使用已审核通过的模板",
            )
        return
    v, t = template_versions, templates
    row = conn.execute(
        TenantScope(tenant_id)
        .select(v, v.c.status, t.c.category, t.c.archived_at)
        .join(t, t.c.id == v.c.template_id)
        .where(v.c.id == template_version_id, t.c.tenant_id == tenant_id)
    ).first()
    if row is None or row.status != "approved" or row.archived_at is not None:
        raise TemplateNotApproved(details={"template_version_id": template_version_id})
    if row.category != lane.name.lower():
        raise TemplateNotApproved(
            f"The template is for {row.category} messages, not {lane.name.lower()}",
            f"该模板用于{row.category}类短信，不能作为{lane.name.lower()}类发送",
            details={"template_version_id": template_version_id},
        )
