"""The demo tenant's audiences: two stores, a few saved segments a marketer would keep, and
scores computed once so the RFM and lifecycle views have something to show at first start."""

from __future__ import annotations

from typing import Any

from hongyan.audience import recompute, segments, service
from hongyan.runtime import Runtime

STORES = (("徐汇旗舰店", "上海市徐汇区"), ("西湖店", "杭州市西湖区"))
SEGMENTS: tuple[tuple[str, str, Any], ...] = (
    (
        "果茶爱好者（近60天）",
        "最近两个月对果茶有明显兴趣、且同意接收营销短信的客户",
        {
            "all": [
                {"field": "interest", "op": "has", "value": "果茶", "min_weight": 5,
                 "within_days": 60},
                {"field": "consent", "op": "granted", "value": "marketing"},
            ]
        },
    ),
    (
        "沉睡的重要客户",
        "消费额高但很久没来的客户：唤醒对象",
        {
            "all": [
                {"field": "rfm_group", "op": "in",
                 "value": ["important_keep", "important_retain"]},
                {"field": "lifecycle", "op": "in", "value": ["dormant", "lost"]},
            ]
        },
    ),
    (
        "门店周边会员",
        "徐汇旗舰店 10 公里内的金卡、钻石会员",
        {
            "all": [
                {"field": "location", "op": "within_km",
                 "value": {"km": 10, "store": "徐汇旗舰店"}},
                {"field": "attr.会员等级", "op": "in", "value": ["金卡", "钻石"]},
            ]
        },
    ),
)  # fmt: skip


def seed(runtime: Runtime, tenant_id: int) -> dict[str, Any]:
    """Stores and segments (those whose fields the tenant has), then one recompute."""
    made = 0
    with runtime.engine.begin() as conn:
        for name, address in STORES:
            service.add_store(conn, runtime.clock, tenant_id, name=name, address=address)
        schema = service.load_schema(conn, tenant_id)
        for name, description, rule in SEGMENTS:
            if "attr.会员等级" in str(rule) and "attr.会员等级" not in schema.fields:
                continue
            segments.create(
                conn, runtime.clock, tenant_id, name=name, rule=rule, description=description,
                actor="demo",
            )  # fmt: skip
            made += 1
    figures = recompute.recompute(runtime.engine, runtime.clock, tenant_id)
    return {"segments": made, "buyers": figures["buyers"]}
