"""A shop with contacts, consent, a segment and approved templates, for campaign tests."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from hongyan.audience import segments
from hongyan.channels import service as channels
from hongyan.contacts import importer, suppression
from hongyan.contacts import service as contacts
from hongyan.runtime import Runtime
from hongyan.tenants import service as tenants
from tests.content.support import approved_version

ALL = {"field": "country", "op": "eq", "value": "CN"}
BODY_A = "【鸿雁茶饮】{name|您好}，会员日第二杯半价，今晚21点前有效，回T退订"
BODY_B = "【鸿雁茶饮】{name|您好}，{city|本地}门店满50减15，本周末有效，回T退订"
BODY_C = "【鸿雁茶饮】好久不见，送您满30减10，7天内有效，回T退订"


def phone(i: int) -> str:
    return f"+86139{i:08d}"


@dataclass
class Shop:
    tenant_id: int
    segment_id: int
    versions: list[int]
    phones: list[str] = field(default_factory=list)


def make_shop(
    runtime: Runtime,
    n: int = 40,
    *,
    slug: str = "tea",
    opted_out: int = 1,
    without_consent: int = 1,
    price: str = "0.05",
) -> Shop:
    """``n`` contacts with names and cities; all but the last ``without_consent`` granted
    marketing consent; the first ``opted_out`` on the suppression list."""
    clock = runtime.clock
    with runtime.engine.begin() as conn:
        tid = tenants.create_tenant(conn, clock, slug=slug, name="鸿雁茶饮").id
    phones = [phone(i) for i in range(n)]
    granted = phones[: n - without_consent]
    rows = "\n".join(
        f"{p[3:]},{'李' + str(i) if i % 2 == 0 else ''},{'杭州' if i % 3 == 0 else ''}"
        for i, p in enumerate(granted)
    )
    data = ("手机号,姓名,城市\n" + rows + "\n").encode()
    contacts.import_stream(
        runtime, tid, io.BytesIO(data), "c.csv",
        importer.ImportOptions(consent_source="shop", consent_proof="勾选同意"),
    )  # fmt: skip
    if without_consent:
        rest = "\n".join(p[3:] for p in phones[n - without_consent :])
        contacts.import_stream(
            runtime, tid, io.BytesIO(("手机号\n" + rest + "\n").encode()), "d.csv",
            importer.ImportOptions(),
        )  # fmt: skip
    with runtime.engine.begin() as conn:
        if opted_out:
            out = [
                suppression.NewSuppression(tid, p, "opt_out", "reply") for p in phones[:opted_out]
            ]
            suppression.add(conn, clock, runtime.keyring, out)
        seg = segments.create(conn, clock, tid, name="全部", rule=ALL, actor="t")
        if not any(c["name"] == "sandbox-test" for c in channels.list_channels(conn)):
            channels.add_channel(
                conn, clock, runtime.keyring, name="sandbox-test", kind="smpp",
                config={"host": "127.0.0.1", "port": 2775, "system_id": "t"},
                secrets={"password": "pw"}, rate=50.0, price_per_part=price,
            )  # fmt: skip
    versions = [approved_version(runtime, tid, b) for b in (BODY_A, BODY_B, BODY_C)]
    return Shop(tid, int(seg["id"]), versions, phones)


def launched_ab_test(runtime: Runtime, shop: Shop, conn: Connection) -> dict[str, Any]:
    """A two-variant A/B test of the whole shop (a fifth tested, decided from five trials on),
    created and launched in ``conn``'s transaction."""
    from hongyan.campaigns import service as campaigns

    camp = campaigns.create(
        conn, runtime.clock, runtime.keyring, shop.tenant_id, name="二选一",
        segment=shop.segment_id,
        variants=[{"template_version_id": v} for v in shop.versions[:2]],
        ab={"share": 0.2, "wait_hours": 2, "min_trials": 5}, actor="t",
    )  # fmt: skip
    campaigns.launch(conn, runtime.clock, runtime.keyring, shop.tenant_id, camp["id"], actor="t")
    return camp
