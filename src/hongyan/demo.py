"""The demo tenant: what `make demo` shows a newcomer. Later capabilities add their part here."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable, Coroutine
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.channels import service as channel_store
from hongyan.content import review
from hongyan.content import service as content_service
from hongyan.content import signatures as content_signatures
from hongyan.content import templates as content_templates
from hongyan.content.placeholders import render
from hongyan.db import migrate
from hongyan.db.scope import TenantScope
from hongyan.db.tables import staff as staff_table
from hongyan.db.tables import template_versions, users
from hongyan.dispatch import outbox
from hongyan.dispatch.outbox import NewMessage
from hongyan.dispatch.states import Lane
from hongyan.errors import NotFound
from hongyan.runtime import Runtime
from hongyan.security import apikeys, audit
from hongyan.security.passwords import hash_password
from hongyan.security.roles import Role
from hongyan.staff import service as staff
from hongyan.staff.service import StaffPrincipal
from hongyan.tenants import service

SLUG = "demo"
EMAIL = "owner@demo.hongyan.local"
SHOPPER_KEY_NAME = "sandbox-shoppers"


def _login_password(runtime: Runtime) -> str:
    """A random owner password, made once and kept in var/demo-login.txt (0600)."""
    path = runtime.settings.var_dir / "demo-login.txt"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    password = secrets.token_urlsafe(12)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(password + "\n")
    return password


SANDBOX_ACCOUNT = ("hongyan", "demo-pw")
EMPTY_NUMBER = "+8613900000000"  # the sandbox answers 空号 for this one


SANDBOX_CHANNEL = "sandbox"
SENDER = "10690"  # the demo channel's sender number; the demo tenant's extension follows it
DEMO_EXT = "01"


def _sandbox_channel(conn: Connection, runtime: Runtime) -> None:
    """(Re)register the channel to the in-process sandbox, on the configured port."""
    system_id, password = SANDBOX_ACCOUNT
    config = {
        "host": "127.0.0.1",
        "port": runtime.settings.sandbox_port,
        "system_id": system_id,
        "source_addr": SENDER,
    }
    try:
        current = channel_store.get_spec(conn, runtime.keyring, SANDBOX_CHANNEL)
        if dict(current.config) == config:
            return
        channel_store.remove_channel(conn, SANDBOX_CHANNEL)
    except channel_store.UnknownChannel:
        pass
    channel_store.add_channel(
        conn,
        runtime.clock,
        runtime.keyring,
        name=SANDBOX_CHANNEL,
        kind="smpp",
        config=config,
        secrets={"password": password},
        rate=200,
        window=10,
        binds=2,
        price_per_part="0.04",
    )


def _shopper_key(runtime: Runtime) -> str:
    """A fresh operator API key for the sandbox's shoppers (the last run's is revoked)."""
    with runtime.engine.begin() as conn:
        tenant = service.get_tenant(conn, SLUG)
        for key in apikeys.listing(conn, tenant.id):
            if key["name"] == SHOPPER_KEY_NAME and key["revoked_at"] is None:
                apikeys.revoke(conn, runtime.clock, tenant.id, int(key["id"]))
        return apikeys.create(conn, runtime.clock, tenant.id, SHOPPER_KEY_NAME, Role.OPERATOR).key


def sandbox_jobs(
    runtime: Runtime, base_url: str | None = None
) -> list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]]:
    """The carrier sandbox and a dispatcher (on the channels, the sandbox's among them).

    With ``base_url`` (the platform's own address), the sandbox's recipients also shop: they
    open the short links of delivered messages and order with their coupons through the events
    API, at the rates of :data:`hongyan.campaigns.demo.SHOPPERS` (one variant planted better),
    so the demo campaign's report fills with a real funnel.
    """
    from hongyan.campaigns.demo import SHOPPERS
    from hongyan.channels.sandbox.shoppers import ShopperConfig
    from hongyan.channels.sandbox.smsc import SandboxConfig, SandboxSmsc
    from hongyan.dispatch import service as dispatch_service

    system_id, password = SANDBOX_ACCOUNT
    smsc_config = SandboxConfig(
        port=runtime.settings.sandbox_port,
        credentials={system_id: password},
        receipt_delay=2.0,
        delivered=0.93,
        undeliverable=0.03,
        expired=0.02,
        rejected=0.01,
        no_receipt=0.01,
        invalid_numbers={EMPTY_NUMBER.removeprefix("+")},
        # Some recipients answer: TD / 退订 (opt-outs) and free text land in the inbox.
        reply_rate=0.2,
        reply_delay=3.0,
        shoppers=(
            ShopperConfig(base_url=base_url, api_key=_shopper_key(runtime), rules=SHOPPERS)
            if base_url
            else None
        ),
    )

    async def run_sandbox(stop: asyncio.Event) -> None:
        smsc = SandboxSmsc(smsc_config)
        await smsc.start()
        try:
            await stop.wait()
        finally:
            await smsc.stop()

    async def run_dispatcher(stop: asyncio.Event) -> None:
        await dispatch_service.run(runtime, stop)

    return [run_sandbox, run_dispatcher]


def _demo_messages(conn: Connection, runtime: Runtime, tenant_id: int, member_day: int) -> None:
    samples: list[tuple[str, str, Lane, int | None]] = [
        ("+8613800138000", "【鸿雁茶饮】您的订单已发货，预计明天送达。", Lane.NOTIFICATION, None),
        (
            "+8613800138000",
            "【鸿雁茶饮】您的验证码是 482915，5 分钟内有效。",
            Lane.VERIFICATION,
            None,
        ),
        # A notice to a number that does not exist (空号): the sandbox's receipt says so, at
        # any hour (marketing would wait for the end of the quiet hours, 21:00–08:00).
        (EMPTY_NUMBER, "【鸿雁茶饮】您预约的门店自提订单已备好。", Lane.NOTIFICATION, None),
    ]
    # A small member-day send from the approved template, so receipts, failures and replies
    # show up in the console; during the quiet hours it waits for 08:00 in the tenant's zone,
    # as marketing must.
    body = _version_body(conn, tenant_id, member_day)
    names = ["李女士", "王先生", "", "张女士"]
    samples += [
        (
            f"+86135{7000 + i:08d}",
            render(body, {"name": names[i % len(names)]}),
            Lane.MARKETING,
            member_day,
        )
        for i in range(1, 21)
    ]
    for to, text, lane, version in samples:
        outbox.enqueue(
            conn,
            runtime.clock,
            runtime.keyring,
            tenant_id,
            NewMessage(to, text, lane=lane, source="demo", template_version_id=version),
            max_parts=6,
        )


# -- content: the demo's templates and a platform reviewer --------------------------------------

REVIEWER_EMAIL = "reviewer@demo.hongyan.local"
MEMBER_DAY = "【鸿雁茶饮】{name|您好}，会员日第二杯半价，今晚21点前有效，回T退订"
NEW_SEASON = "【鸿雁茶饮】{name|您好}，春季新品上市，凭券{coupon}立减10元，3月31日截止，回T退订"


def _version_body(conn: Connection, tenant_id: int, version_id: int) -> str:
    row = conn.execute(
        TenantScope(tenant_id)
        .select(template_versions, template_versions.c.body)
        .where(template_versions.c.id == version_id)
    ).scalar_one()
    return str(row)


def _demo_reviewer(conn: Connection, runtime: Runtime, password: str) -> StaffPrincipal:
    """The platform reviewer of the demo (same password as the owner), kept in step."""
    try:
        member = staff.get_by_email(conn, REVIEWER_EMAIL)
        conn.execute(
            sa.update(staff_table)
            .where(staff_table.c.id == member.id)
            .values(password_hash=hash_password(password), is_active=True)
        )
    except NotFound:
        member = staff.create(
            conn, runtime.clock, email=REVIEWER_EMAIL, name="平台审核员", password=password
        )
    return staff.principal_of(member)


def _demo_templates(
    conn: Connection, runtime: Runtime, tenant_id: int, reviewer: StaffPrincipal
) -> int:
    """One approved marketing template (the demo's sends use it), one waiting for review."""
    clock = runtime.clock
    ctx = content_service.context(conn, tenant_id, "marketing")
    approved = content_templates.create(
        conn, clock, tenant_id, name="会员日", category="marketing", body=MEMBER_DAY, actor="demo"
    )
    content_templates.submit(conn, clock, tenant_id, approved["id"], ctx, actor="demo")
    version_id = int(approved["versions"][0]["id"])
    review.decide_template(conn, clock, reviewer, version_id, approve=True)
    waiting = content_templates.create(
        conn, clock, tenant_id, name="春季新品", category="marketing", body=NEW_SEASON, actor="demo"
    )
    content_templates.submit(conn, clock, tenant_id, waiting["id"], ctx, actor="demo")
    content_signatures.submit(
        conn, clock, tenant_id, "【鸿雁茶饮旗舰店】", note="天猫旗舰店店铺名称", actor="demo"
    )
    return version_id


def prepare(runtime: Runtime) -> dict[str, Any]:
    migrate.upgrade(runtime.engine)
    password = _login_password(runtime)
    clock = runtime.clock
    with runtime.engine.begin() as conn:
        _sandbox_channel(conn, runtime)
        try:
            tenant = service.get_tenant(conn, SLUG)
            scope = TenantScope(tenant.id)
            # Keep the printed password true even if someone changed it.
            conn.execute(
                scope.update(users)
                .where(users.c.email == EMAIL)
                .values(password_hash=hash_password(password))
            )
            key_note = "created on first run (see `hongyan apikey create --tenant demo`)"
            _demo_reviewer(conn, runtime, password)
            created = False
        except NotFound:
            created = True
            tenant = service.create_tenant(
                conn, clock, slug=SLUG, name="鸿雁茶饮（演示）", signature="【鸿雁茶饮】"
            )
            service.create_user(
                conn,
                clock,
                runtime.keyring,
                tenant_id=tenant.id,
                email=EMAIL,
                name="演示店长",
                role=Role.OWNER,
                password=password,
                phone="+8613800138000",
            )
            service.set_sms_ext(conn, tenant.id, DEMO_EXT)
            new = apikeys.create(conn, clock, tenant.id, "demo", Role.OPERATOR)
            reviewer = _demo_reviewer(conn, runtime, password)
            member_day = _demo_templates(conn, runtime, tenant.id, reviewer)
            _demo_messages(conn, runtime, tenant.id, member_day)
            key_note = new.key
            audit.record(
                conn,
                clock,
                tenant_id=tenant.id,
                actor="demo",
                action="demo.prepare",
                target=f"tenant:{SLUG}",
            )
        count = conn.execute(TenantScope(tenant.id).select(users, sa.func.count())).scalar_one()
    # Contacts, consent and a year of behaviour (issue 4): loaded once, on the first run.
    if created:
        from hongyan.contacts import demo_data

        demo_data.seed(runtime, tenant.id)
        # Stores, saved segments and RFM / lifecycle scores (issue 6).
        from hongyan.audience import demo as audience_demo

        audience_demo.seed(runtime, tenant.id)
        # A scheduled A/B campaign to dormant customers and a cart-abandonment journey (issue 7).
        from hongyan.campaigns import demo as campaigns_demo

        with runtime.engine.begin() as conn:
            reviewer = _demo_reviewer(conn, runtime, password)
        campaigns_demo.seed(runtime, tenant.id, reviewer)
    return {
        "tenant": SLUG,
        "email": EMAIL,
        "password": password,
        "users": count,
        "api_key_note": key_note,
        "reviewer_email": REVIEWER_EMAIL,
    }
