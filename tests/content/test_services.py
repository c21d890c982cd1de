"""Content services on both backends: the outbox gate, template versions, staff sessions."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from hongyan.clock import FixedClock
from hongyan.content import review, service, templates
from hongyan.content.gate import MarketingNotAllowed, TemplateNotApproved, TemplateRequired
from hongyan.db import migrate
from hongyan.db.scope import TenantScope
from hongyan.db.tables import messages
from hongyan.dispatch import outbox
from hongyan.dispatch.outbox import NewMessage
from hongyan.dispatch.states import Lane
from hongyan.errors import AuthenticationFailed, Conflict, PermissionDenied, ValidationFailed
from hongyan.runtime import Runtime
from hongyan.staff import service as staff
from hongyan.tenants import service as tenants
from tests.content.support import approved_version_in, reviewer

SIG = "【鸿雁茶饮】"
PROMO = f"{SIG}{{name|您好}}，会员日第二杯半价，今晚21点前有效，回T退订"
NOTICE = f"{SIG}您的订单{{order}}已发货"
ME = "+8613812345678"


def tenant(runtime: Runtime, slug: str = "tea") -> int:
    with runtime.engine.begin() as conn:
        return tenants.create_tenant(conn, runtime.clock, slug=slug, name=slug, signature=SIG).id


def enqueue(runtime: Runtime, tid: int, new: NewMessage) -> int:
    with runtime.engine.begin() as conn:
        return outbox.enqueue(conn, runtime.clock, runtime.keyring, tid, new, max_parts=6)[0]


def test_the_gate_at_the_outbox(runtime: Runtime) -> None:
    tid = tenant(runtime)
    other = tenant(runtime, "other")
    with runtime.engine.begin() as conn:
        promo = approved_version_in(conn, runtime.clock, tid, PROMO)
        notice = approved_version_in(conn, runtime.clock, tid, NOTICE, category="notification")
        foreign = approved_version_in(conn, runtime.clock, other, PROMO)
    text = f"{SIG}李女士，会员日第二杯半价，今晚21点前有效，回T退订"
    with pytest.raises(TemplateRequired):
        enqueue(runtime, tid, NewMessage(ME, text, lane=Lane.MARKETING))
    mid = enqueue(
        runtime, tid, NewMessage(ME, text, lane=Lane.MARKETING, template_version_id=promo)
    )
    with runtime.engine.connect() as conn:
        stored = conn.execute(
            TenantScope(tid)
            .select(messages, messages.c.template_version_id)
            .where(messages.c.id == mid)
        ).scalar_one()
    assert stored == promo
    for version in (foreign, notice, 999_999):  # another tenant's, another category, none
        with pytest.raises(TemplateNotApproved):
            enqueue(
                runtime, tid, NewMessage(ME, text, lane=Lane.MARKETING, template_version_id=version)
            )
    # notifications and verification codes go without a template unless the policy says so
    enqueue(runtime, tid, NewMessage(ME, f"{SIG}您的订单已发货"))
    enqueue(runtime, tid, NewMessage(ME, "验证码 4821", lane=Lane.VERIFICATION))
    with runtime.engine.begin() as conn:
        tenants.update_policy(conn, runtime.clock, tid, notification_template_required=True)
    with pytest.raises(TemplateRequired):
        enqueue(runtime, tid, NewMessage(ME, f"{SIG}您的订单已发货"))
    enqueue(runtime, tid, NewMessage(ME, f"{SIG}您的订单A1已发货", template_version_id=notice))
    enqueue(runtime, tid, NewMessage(ME, "验证码 4821", lane=Lane.VERIFICATION))
    with runtime.engine.begin() as conn:
        tenants.update_policy(conn, runtime.clock, tid, marketing_allowed=False)
    with pytest.raises(MarketingNotAllowed):
        enqueue(runtime, tid, NewMessage(ME, text, lane=Lane.MARKETING, template_version_id=promo))
    # archiving stops a template from sending
    with runtime.engine.begin() as conn:
        tenants.update_policy(conn, runtime.clock, tid, marketing_allowed=True)
        template_id = next(
            t["id"] for t in templates.listing(conn, tid) if t["live_version_id"] == promo
        )
        templates.archive(conn, runtime.clock, tid, template_id, actor="test")
    with pytest.raises(TemplateNotApproved):
        enqueue(runtime, tid, NewMessage(ME, text, lane=Lane.MARKETING, template_version_id=promo))
    with runtime.engine.connect() as conn:  # nothing half-written by the refusals
        count = conn.execute(TenantScope(tid).select(messages, sa.func.count())).scalar_one()
    assert count == 5


def test_versions_review_and_conflicts(runtime: Runtime, clock: FixedClock) -> None:
    tid = tenant(runtime)
    with runtime.engine.begin() as conn:
        ctx = service.context(conn, tid, "marketing")
        made = templates.create(
            conn, clock, tid, name="会员日", category="marketing", body=PROMO, actor="user:1"
        )
        tpl = made["id"]
        with pytest.raises(Conflict):
            templates.create(
                conn, clock, tid, name="会员日", category="marketing", body=PROMO, actor="x"
            )
        with pytest.raises(ValidationFailed):
            templates.create(
                conn, clock, tid, name="坏", category="marketing", body="{a.b}", actor="x"
            )
        with pytest.raises(ValidationFailed):
            templates.create(conn, clock, tid, name="x", category="spam", body="hi", actor="x")
        pending = templates.submit(conn, clock, tid, tpl, ctx, actor="user:1")
        assert pending["status"] == "pending" and pending["versions"][0]["findings"] == []
        with pytest.raises(Conflict):  # under review: withdraw first
            templates.update(conn, clock, tid, tpl, body=PROMO + "！", actor="user:1")
        assert templates.withdraw(conn, clock, tid, tpl, actor="user:1")["status"] == "draft"
        templates.update(conn, clock, tid, tpl, body=PROMO.replace("半价", "8折"), actor="user:1")
        again = templates.submit(conn, clock, tid, tpl, ctx, actor="user:1")
        assert again["version"] == 1  # a draft is edited in place
        who = reviewer(conn, clock)
        review.decide_template(conn, clock, who, again["versions"][0]["id"], approve=True)
        edited = templates.update(conn, clock, tid, tpl, body=PROMO, actor="user:1")
        assert (edited["version"], edited["status"], edited["live_version"]) == (2, "draft", 1)
        # a reviewer cannot approve what waits under an unapproved signature
        other = templates.create(
            conn,
            clock,
            tid,
            name="新店",
            category="marketing",
            body=PROMO.replace(SIG, "【鸿雁新店】"),
            actor="user:1",
        )
        with pytest.raises(ValidationFailed):  # the lint refuses the submission itself
            templates.submit(conn, clock, tid, other["id"], ctx, actor="user:1")
        # a stale decision on a version no longer pending is a conflict
        with pytest.raises(review.ReviewConflict):
            review.decide_template(
                conn, clock, who, again["versions"][0]["id"], approve=False, reason="x"
            )
        # a rejection needs a reason
        with pytest.raises(ValidationFailed):
            review.decide_template(conn, clock, who, 1, approve=False, reason=" ")


def test_staff_sessions_keys_and_deactivation(runtime: Runtime, clock: FixedClock) -> None:
    tid = tenant(runtime)
    with runtime.engine.begin() as conn:
        tenants.create_user(
            conn,
            clock,
            runtime.keyring,
            tenant_id=tid,
            email="boss@tea.cn",
            name="x",
            role="owner",
            password="a-long-password",
        )
        with pytest.raises(Conflict):  # a tenant's user cannot also be staff
            staff.create(conn, clock, email="boss@tea.cn", name="x", password="a-long-password")
        member = staff.create(
            conn, clock, email="rev@platform.test", name="审核员", password="a-long-password"
        )
        with pytest.raises(AuthenticationFailed):
            staff.authenticate(conn, clock, "rev@platform.test", "wrong-password")
        token, csrf = staff.start_session(
            conn,
            clock,
            staff.authenticate(conn, clock, "rev@platform.test", "a-long-password"),
            max_age=60,
        )
        who = staff.resolve_session(conn, clock, token)
        assert who.actor == f"staff:{member.id}" and who.csrf_token == csrf
        _key_id, key = staff.create_key(conn, clock, member, "ci")
        assert staff.authenticate_key(conn, clock, key).staff_id == member.id
        with pytest.raises(AuthenticationFailed):
            staff.authenticate_key(conn, clock, key[:-2] + "xx")
    clock.advance(timedelta(seconds=61))
    with runtime.engine.begin() as conn, pytest.raises(AuthenticationFailed):
        staff.resolve_session(conn, clock, token)
    with runtime.engine.begin() as conn:
        staff.set_active(conn, clock, "rev@platform.test", False)
        with pytest.raises(AuthenticationFailed):
            staff.authenticate_key(conn, clock, key)
        with pytest.raises(AuthenticationFailed):
            staff.authenticate(conn, clock, "rev@platform.test", "a-long-password")
    with pytest.raises(PermissionDenied):
        staff.StaffPrincipal(1, "x", "x", "nobody", "zh-CN").require_reviewer()  # type: ignore[arg-type]


def test_the_migration_goes_down_and_up(runtime: Runtime) -> None:
    from alembic import command

    cfg = migrate._config()
    with runtime.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005")
    assert migrate.current_revision(runtime.engine) == "0005"
    assert "templates" not in sa.inspect(runtime.engine).get_table_names()
    assert migrate.upgrade(runtime.engine) == migrate.head_revision()
    assert "templates" in sa.inspect(runtime.engine).get_table_names()
