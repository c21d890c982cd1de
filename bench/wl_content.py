"""Content: render + lint + count parts for 1,000,000 personalised marketing messages.

Twenty approved-style marketing templates (signature, a contact's name with a default, city,
tags, a per-recipient coupon code and tracked link, an unsubscribe line), each compiled once
(:class:`hongyan.content.compiled.CompiledTemplate`: the template's lint, a positional format
string, cached per-value verdicts), then checked for every recipient as a campaign does it, in
batches of 5,000 (``check_many``): the text rendered, its encoding, units and parts counted
exactly as the SMPP channel splits it, and the words its values bring in found. Each template
sends to 50,000 recipients (a campaign, or an A/B variant), 1,000,000 in all. Recipients are
generated like a real customer list: common surnames weighted Zipf-like, given names of one or
two characters, four in ten addressed as 李女士 / 王先生, one in ten without a name (the
template's default applies), a few dozen cities, and 0.1 % with a sensitive or forbidden word in
a field (those messages report problems).

Anchor, measured in the same run on the same recipients: a bare loop of ``str.format`` of the
same texts (each template as a plain format string, the values already complete, defaults
filled in beforehand and not timed), collected in a list as ours are. The two run interleaved,
template by template, so machine noise hits both alike; times are CPU seconds of this process
(``time.process_time``: one core, not counting time the machine gave to others), wall-clock
rates are reported beside them; the texts are compared.

Goal: at least 200,000 messages a second on one core, within 3x of the bare loop.
"""

from __future__ import annotations

import random
import time
from typing import Any

from hongyan.content.compiled import CompiledTemplate
from hongyan.content.lint import LintContext
from hongyan.content.placeholders import Slot, parse

N = 1_000_000
CHUNK = 50_000  # recipients of one template
BATCH = 5_000  # recipients checked at once, as a campaign materialises them
SIG = "【鸿雁茶饮】"
TEMPLATES = [
    f"{SIG}{{name|您好}}，会员日第二杯半价，今晚21点前有效，回T退订",
    f"{SIG}{{name|亲爱的会员}}，您在{{city}}的门店上新春季限定，凭券{{coupon}}立减10元，3月31日截止，回T退订",
    f"{SIG}{{name|您好}}，您的专属7折券已到账，点击{{link}} 领取，本周日24点前有效，回T退订",
    f"{SIG}{{city|本地}}门店周末满50减15，{{name|您好}}快来尝鲜，仅限本周末，回T退订",
    f"{SIG}{{name|您好}}，您喜欢的{{tags|招牌奶茶}}今日买一送一，"
    "点击{link} 查看，今日有效，回T退订",
    f"{SIG}生日快乐！{{name|您好}}，生日当天到店享免单一杯，券码{{coupon}}，当天有效，回T退订",
    f"{SIG}{{name|您好}}，您有30积分即将过期，点击{{link}} 兑换好礼，月底前有效，回T退订",
    f"{SIG}{{name|您好}}，好久不见！送您满30减10券{{coupon}}，7天内有效，回T退订",
    f"{SIG}{{city}}新店开业，前100名到店立减8元，{{name|您好}}欢迎光临，3月1日截止，回T退订",
    f"{SIG}{{name|您好}}，下午茶时段第二杯半价，点击{{link}} 预订，今日14-17点有效，回T退订",
    f"{SIG}{{name|您好}}，会员日全场8折，另赠小料一份，{{city|本地}}门店今晚21点前有效，回T退订",
    f"{SIG}{{name|您好}}，您去年购买过的桂花乌龙返场啦，专属7折券{{coupon}}已到账，3天内有效，回T退订",
    f"{SIG}寒潮来袭，{{name|您好}}，热饮立减5元，{{city|本地}}门店今日有效，点击{{link}}，回T退订",
    f"{SIG}{{name|您好}}，邀请好友得20元券，点击{{link}} 参与，本月底截止，回T退订",
    f"{SIG}{{name|您好}}，您的外卖专享满40减12券{{coupon}}，今晚24点前有效，回T退订",
    f"{SIG}{{name|您好}}，{{tags|新品}}爱好者专享：新品尝鲜价9.9元，仅限今日，回T退订",
    f"{SIG}{{name|您好}}，端午安康！粽子礼盒立减30元，点击{{link}}，6月10日截止，回T退订",
    f"{SIG}{{city|本地}}门店周三会员日，{{name|您好}}凭券{{coupon}}享第二杯0元，当日有效，回T退订",
    f"{SIG}{{name|您好}}，您的储值卡余额可抵扣，满100减20，本周五前有效，回T退订",
    f"{SIG}{{name|您好}}，夏日冰饮第二杯半价，点击{{link}} 下单，今日20点前有效，回T退订",
]
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡"
    "余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯"
    "龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
GIVEN = (
    "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超霞平刚桂华建文辉玉兰萍红鹏飞燕丹宇浩凯婷雪"
    "琳晨欣怡佳思雨子轩梓涵一诺嘉欣博文俊杰"
)
CITIES = [
    f"{c}"
    for c in [
        "杭州",
        "上海",
        "北京",
        "广州",
        "深圳",
        "成都",
        "南京",
        "武汉",
        "西安",
        "苏州",
        "重庆",
        "天津",
        "长沙",
        "郑州",
        "青岛",
        "宁波",
        "厦门",
        "合肥",
        "福州",
        "昆明",
    ]
]
CITIES += [f"{a}{b}市" for a in "东西南北中" for b in "阳宁安平江山海川"]
TAGS = ["奶茶爱好者", "果茶控", "低糖人群", "新品尝鲜", "咖啡党", "甜品控"]
BAD = ["免费", "赌博", "最好", "中奖"]
CODE = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def _anchor_format(template: str) -> str:
    """The same text as a plain str.format template: defaults dropped, attr. keys renamed."""
    out: list[str] = []
    for piece in parse(template):
        if isinstance(piece, Slot):
            out.append("{" + piece.key.replace(".", "_") + "}")
        else:
            out.append(piece.replace("{", "{{").replace("}", "}}"))
    return "".join(out)


def _defaults(template: str) -> dict[str, str]:
    return {p.key: p.default for p in parse(template) if isinstance(p, Slot) and p.default}


def _recipients(rnd: random.Random, start: int, count: int) -> list[dict[str, str]]:
    weights = [1 / (i + 1) for i in range(len(SURNAMES))]
    surnames = rnd.choices(SURNAMES, weights=weights, k=count)
    rows: list[dict[str, str]] = []
    for i in range(count):
        n = start + i
        row = {
            "city": rnd.choice(CITIES),
            "tags": rnd.choice(TAGS),
            "coupon": "".join(rnd.choices(CODE, k=8)),
            "link": "https://hy.cx/" + "".join(rnd.choices(CODE, k=7)),
        }
        roll = rnd.random()
        if roll < 0.4:
            row["name"] = surnames[i] + rnd.choice(("女士", "先生"))
        elif roll < 0.9:
            row["name"] = surnames[i] + "".join(rnd.choices(GIVEN, k=rnd.choice((1, 2))))
        if rnd.random() < 0.001:
            row["tags"] = rnd.choice(BAD)
        if n % 97 == 0:
            row["name"] = ""  # an empty value also takes the default
        rows.append(row)
    return rows


def run() -> dict[str, Any]:
    ctx = LintContext(approved_signatures=(SIG,), default_signature=SIG)
    t0 = time.perf_counter()
    compiled = [CompiledTemplate(src, ctx) for src in TEMPLATES]
    compile_s = time.perf_counter() - t0
    assert all(c.lint.ok for c in compiled), [c.lint.findings for c in compiled if not c.lint.ok]
    anchors = [_anchor_format(src).format for src in TEMPLATES]
    defaults = [_defaults(src) for src in TEMPLATES]
    k = len(TEMPLATES)

    rnd = random.Random(5)
    anchor_s = ours_s = anchor_wall = ours_wall = 0.0
    total_parts = total_units = with_problems = checked = 0
    names: set[str] = set()
    for chunk, start in enumerate(range(0, N, CHUNK)):
        t = chunk % k
        rows = _recipients(rnd, start, CHUNK)
        names.update(r.get("name", "") for r in rows)
        # the anchor's input: the same values, defaults filled beforehand (not timed)
        full = [{**defaults[t], **{key: v for key, v in r.items() if v}} for r in rows]
        fmt, check_many = anchors[t], compiled[t].check_many

        w0, c0 = time.perf_counter(), time.process_time()
        texts = [fmt(**values) for values in full]
        anchor_s += time.process_time() - c0
        anchor_wall += time.perf_counter() - w0

        w0, c0 = time.perf_counter(), time.process_time()
        batches = [check_many(rows[b : b + BATCH]) for b in range(0, CHUNK, BATCH)]
        ours_s += time.process_time() - c0
        ours_wall += time.perf_counter() - w0

        ours_texts = [text for batch in batches for text in batch.texts]
        total_parts += sum(sum(batch.parts) for batch in batches)
        total_units += sum(sum(batch.units) for batch in batches)
        with_problems += sum(len(batch.problems) for batch in batches)
        for i in range(0, CHUNK, 997):  # the same texts
            assert ours_texts[i] == texts[i], (rows[i], full[i])
            checked += 1
    per_s = N / ours_s
    anchor_per_s = N / anchor_s
    return {
        "messages": N,
        "templates": k,
        "batch": BATCH,
        "unique_names": len(names),
        "compile_ms_per_template": round(compile_s / k * 1000, 2),
        "anchor_str_format_per_s": round(anchor_per_s),
        "render_lint_count_per_s": round(per_s),
        "ratio_to_anchor": round(ours_s / anchor_s, 2),
        "wall_anchor_per_s": round(N / anchor_wall),
        "wall_render_lint_count_per_s": round(N / ours_wall),
        "wall_ratio_to_anchor": round(ours_wall / anchor_wall, 2),
        "goal_200k_per_s": per_s >= 200_000,
        "goal_within_3x": ours_s / anchor_s <= 3.0,
        "avg_parts": round(total_parts / N, 3),
        "avg_units": round(total_units / N, 1),
        "messages_with_problems": with_problems,
        "texts_compared": checked,
    }
