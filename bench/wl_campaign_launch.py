"""Campaign launch: materialise a campaign to 1,000,000 contacts on PostgreSQL.

Seeded directly (``COPY``): ``HONGYAN_BENCH_CONTACTS`` contacts (default 1,000,000) with
encrypted numbers and blind indexes, four in ten with an encrypted name, a city for most,
marketing consent for 99 % of them, 0.5 % on the suppression list, and 2 % with a marketing
message already planned this month (the frequency cap of one a month then stops them).

**Ours**: ``campaigns.service.launch`` of a campaign with three weighted variants
(``{name|您好}``, ``{city|本地}``, a plain text), quiet hours on, spread at 1,000 messages a
second: the audience snapshot (suppression and consent verdicts), the cap and preference
verdicts, the variant assignment, names decrypted, every text rendered and counted, the due
times, and the messages written by ``COPY``: one transaction.

**Anchor**, measured in the same run on the same audience: one ``INSERT … SELECT`` that copies
the snapshot's included members into ``messages`` with a fixed text and no rules (rolled back
afterwards). The ratio is ours / anchor.

Goal: within 3x of the anchor, under 30 s on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

CONTACTS = int(os.environ.get("HONGYAN_BENCH_CONTACTS", "1000000"))
# Share of contacts with a time zone of their own (New York, London, Tokyo): the launch then
# plans per zone. 0 by default (the seed's random stream is then as it always was).
ZONED = float(os.environ.get("HONGYAN_BENCH_ZONED", "0"))
ZONES = ("America/New_York", "Europe/London", "Asia/Tokyo")
NOW = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
CHUNK = 50_000
SIG = "【鸿雁茶饮】"
BODIES = (
    f"{SIG}{{name|您好}}，会员日第二杯半价，今晚21点前有效，回T退订",
    f"{SIG}{{name|您好}}，{{city|本地}}门店满50减15，本周末有效，回T退订",
    f"{SIG}好久不见，送您满30减10券，7天内有效，回T退订",
)
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
CITIES = ("杭州", "上海", "北京", "广州", "深圳", "成都", "南京", "武汉", "西安", "苏州")


def _approved(conn: Any, clock: Any, tenant_id: int) -> list[int]:
    """Three approved marketing templates, through the real review path."""
    from hongyan.content import review, service, signatures, templates
    from hongyan.staff import service as staff

    password = "bench-" + "reviewer"  # a throwaway account in a throwaway database
    member = staff.create(conn, clock, email="r@bench.test", name="审核", password=password)
    who = staff.principal_of(member)
    sig = signatures.submit(conn, clock, tenant_id, SIG, note="bench", actor="bench")
    review.decide_signature(conn, clock, who, sig["id"], approve=True)
    ids = []
    for i, body in enumerate(BODIES):
        made = templates.create(
            conn, clock, tenant_id, name=f"v{i}", category="marketing", body=body, actor="bench"
        )
        ctx = service.context(conn, tenant_id, "marketing")
        templates.submit(conn, clock, tenant_id, made["id"], ctx, actor="bench")
        review.decide_template(conn, clock, who, made["versions"][0]["id"], approve=True)
        ids.append(int(made["id"]))
    return ids


def seed(runtime: Any, tenant_id: int) -> dict[str, Any]:
    from hongyan.contacts.importer import name_context
    from hongyan.contacts.suppression import phone_context
    from hongyan.db import bulk
    from hongyan.db.scope import TenantScope
    from hongyan.db.tables import consent_records, contacts, messages, suppressions
    from hongyan.security.keyring import mask_phone

    rng = random.Random(7)
    keyring, scope = runtime.keyring, TenantScope(tenant_id)
    pctx, nctx = phone_context(tenant_id), name_context(tenant_id)
    t0 = time.perf_counter()
    for start in range(0, CONTACTS, CHUNK):
        rows, consent, supp, planted = [], [], [], []
        for i in range(start, min(CONTACTS, start + CHUNK)):
            phone = f"+86138{i:08d}"
            index = keyring.blind_index(phone, pctx)
            cipher = keyring.encrypt(phone, pctx)
            name = rng.choice(SURNAMES) + rng.choice("女士先生") if rng.random() < 0.4 else None
            if name and name.endswith("先"):
                name += "生"
            city = rng.choice(CITIES) if rng.random() < 0.8 else None
            zone = rng.choice(ZONES) if ZONED and rng.random() < ZONED else None
            rows.append(
                (
                    index,
                    cipher,
                    mask_phone(phone),
                    "CN",
                    "cmcc",
                    False,
                    keyring.encrypt(name, nctx) if name else None,
                    city,
                    {},
                    "import",
                    NOW,
                    NOW,
                    zone,
                )
            )
            if rng.random() < 0.99:
                consent.append((index, "marketing", "granted", "bench", "勾选", "bench", NOW))
            if rng.random() < 0.005:
                supp.append((index, mask_phone(phone), "opt_out", "reply", "marketing", NOW))
            if rng.random() < 0.02:
                planted.append((i, index, cipher, mask_phone(phone)))
        with runtime.engine.begin() as conn:
            bulk.insert_rows(
                conn, scope, contacts,
                ("phone_index", "phone_cipher", "phone_masked", "country", "carrier", "mvno",
                 "name_cipher", "city", "attrs", "source", "created_at", "updated_at",
                 "time_zone"),
                rows,
            )  # fmt: skip
            bulk.insert_rows(
                conn, scope, consent_records,
                ("phone_index", "purpose", "action", "source", "proof", "actor", "at"), consent,
            )  # fmt: skip
            bulk.insert_rows(
                conn, scope, suppressions,
                ("phone_index", "phone_masked", "reason", "source", "scope", "created_at"), supp,
            )  # fmt: skip
            ids = dict(
                bulk.fetch_in(
                    conn,
                    scope,
                    contacts,
                    ("phone_index", "id"),
                    "phone_index",
                    [p[1] for p in planted],
                )
            )
            bulk.insert_rows(
                conn, scope, messages,
                ("lane", "category", "source", "dest_cipher", "dest_index", "dest_masked", "body",
                 "encoding", "parts", "state", "due_at", "expires_at", "created_at", "contact_id"),
                [(2, "marketing", "campaign", c, ix, m, "earlier", "ucs2", 1, "delivered",
                  NOW - timedelta(days=3), NOW, NOW, ids[ix]) for _i, ix, c, m in planted],
            )  # fmt: skip
    return {"seconds": round(time.perf_counter() - t0, 1)}


def run() -> dict[str, Any]:
    import sqlalchemy as sa

    from bench.wl_audience import _vacuum, pg_runtime
    from hongyan.audience import segments
    from hongyan.campaigns import caps
    from hongyan.campaigns import service as campaigns
    from hongyan.channels import service as channels
    from hongyan.db.scope import TENANT_OPTION
    from hongyan.db.tables import audience_members, contacts, messages
    from hongyan.tenants import service as tenants

    out: dict[str, Any] = {"contacts": CONTACTS, "zoned_share": ZONED}
    with pg_runtime() as pg:
        if pg is None:
            return {**out, "skipped": "no PostgreSQL"}
        runtime, url = pg
        clock = runtime.clock
        with runtime.engine.begin() as conn:
            tid = tenants.create_tenant(conn, clock, slug="bench", name="鸿雁茶饮").id
            template_ids = _approved(conn, clock, tid)
            channels.add_channel(
                conn, clock, runtime.keyring, name="bench", kind="smpp",
                config={"host": "127.0.0.1", "port": 2775, "system_id": "b"},
                secrets={"password": "pw"}, rate=1000.0, price_per_part="0.045",
            )  # fmt: skip
            caps.set_policy(conn, clock, tid, {"default": [1, 30], "new": [1, 7]})
            seg = segments.create(
                conn, clock, tid, name="全部",
                rule={"field": "country", "op": "eq", "value": "CN"}, actor="bench",
            )  # fmt: skip
        out["seed"] = seed(runtime, tid)
        _vacuum(url)
        with runtime.engine.begin() as conn:
            camp = campaigns.create(
                conn, clock, runtime.keyring, tid, name="双十一", segment=seg["id"],
                variants=[
                    {"template_id": t, "weight": w}
                    for t, w in zip(template_ids, (2, 2, 1), strict=True)
                ],
                actor="bench",
            )  # fmt: skip
        t0 = time.perf_counter()
        with runtime.engine.begin() as conn:
            done = campaigns.launch(conn, clock, runtime.keyring, tid, camp["id"], actor="bench")
        ours = time.perf_counter() - t0
        counts = done["counts"]
        out["ours"] = {"seconds": round(ours, 2), "counts": counts}
        with runtime.engine.connect() as conn:
            st = campaigns.status(conn, clock, tid, camp["id"])
        # the anchor: the same included members copied with no rules, then rolled back
        with runtime.engine.connect() as conn:
            from hongyan.db.tables import campaign_runs

            audience_id = conn.execute(
                sa.select(campaign_runs.c.audience_id)
                .where(campaign_runs.c.tenant_id == tid)
                .execution_options(**{TENANT_OPTION: tid})
            ).scalar_one()
            m, c, am = messages.c, contacts.c, audience_members.c
            select = (
                sa.select(
                    sa.literal(tid), sa.literal(2), sa.literal("marketing"), sa.literal("campaign"),
                    c.phone_cipher, c.phone_index, c.phone_masked, c.carrier,
                    sa.literal(BODIES[2]), sa.literal("ucs2"), sa.literal(1), sa.literal("planned"),
                    sa.literal(NOW), sa.literal(NOW + timedelta(days=1)), sa.literal(NOW),
                    sa.literal(camp["id"]), sa.literal("A"), c.id,
                )
                .select_from(audience_members.join(contacts, c.id == am.contact_id))
                .where(
                    am.tenant_id == tid, am.audience_id == audience_id,
                    am.status == "included", c.tenant_id == tid,
                )
            )  # fmt: skip
            insert = sa.insert(messages).from_select(
                [m.tenant_id, m.lane, m.category, m.source, m.dest_cipher, m.dest_index,
                 m.dest_masked, m.carrier, m.body, m.encoding, m.parts, m.state, m.due_at,
                 m.expires_at, m.created_at, m.campaign_id, m.variant, m.contact_id],
                select,
            ).execution_options(**{TENANT_OPTION: tid})  # fmt: skip
            t0 = time.perf_counter()
            conn.execute(insert)
            anchor = time.perf_counter() - t0
            conn.rollback()
        out["anchor"] = {"seconds": round(anchor, 2), "rows": counts["planned"]}
        out["ratio"] = round(ours / anchor, 2)
        out["messages_per_second"] = round(counts["planned"] / ours)
        out["cost"] = st["cost"]
    out["goal"] = "within 3x of the anchor, under 30 s on PostgreSQL for 1,000,000 contacts"
    return out


if __name__ == "__main__":
    print(json.dumps(run(), ensure_ascii=False, indent=2, default=str))
